"""The live demo behind `make demo`: a canary of `web` shifted from v1 to v2 by editing a catalog file.

Theory of operation: everything the demo starts is real and talks over loopback only. Three upstream HTTP
servers (`web-v1`, `web-v2`, `api`) run in this process; the control plane runs as a child process serving
`.demo/catalog.yaml`; two Envoys in two node groups (`edge-1`, `edge-2`) bootstrap against it. Steady load
goes through both Envoys while the demo rewrites the catalog's route weights, exactly as an operator would
with an editor, and watches each Envoy's admin interface until it runs the new weights. The gap between the
file edit and the moment both Envoys hold the new route is the user-visible convergence time.

One thread (the caller's) does all the watching and drawing, in a single bounded loop of short ticks; the
harness's own threads send the load and serve the upstreams. Load runs in segments of at most `_SEGMENT_S`
seconds, each tallied into per-phase counts when it ends, so memory stays flat however long the demo runs.

The last line of output is always `DEMO-SUMMARY <json>`, so scripts and tests can read the outcome.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import functools
import http.client
import json
import math
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import grpc

from harness import (
    LOOPBACK,
    AdminError,
    ControlPlaneProcess,
    EnvoyProcess,
    ProcessExitedError,
    Sample,
    SteadyLoad,
    UpstreamPool,
    bootstrap_for,
    free_ports,
    unique_base_id,
    wait_until,
)
from xds.management.v1 import management_pb2 as pb
from xds.management.v1 import management_pb2_grpc
from xds.typeurls import ROUTE

Weights = tuple[int, int]  # (web v1, web v2), as written in the catalog

WORKDIR_NAME = ".demo"
CATALOG_NAME = "catalog.yaml"
SUMMARY_MARKER = "DEMO-SUMMARY"
UPSTREAMS = ("web-v1", "web-v2", "api")
WEB_ROUTE = "web"
BASELINE: Weights = (100, 0)
CANARY_STEPS: tuple[Weights, ...] = ((90, 10), (50, 50), (0, 100))

DEFAULT_PHASE_S = 12.0
DEFAULT_RATE = 40.0
# Mostly page views, some API calls: enough /api traffic to show the second route never moves.
_API_SHARE = 0.2
_WINDOW_S = 2.0
_FRAME_S = 0.25
_PLAIN_EVERY_S = 1.0
_TICK_S = 0.05
# While an edit is pending, Envoy is polled this often: the convergence time is accurate to about this much.
_CONVERGE_POLL_S = 0.02
_CONVERGENCE_TIMEOUT_S = 30.0
_SEGMENT_S = 30.0
# "Until Ctrl-C" still has an end: a forgotten terminal must not run load for days.
_MAX_RUN_S = 8 * 3600.0
_STARTUP_TIMEOUT_S = 60.0
_REQUEST_TIMEOUT_S = 2.0
_ADMIN_POLL_TIMEOUT_S = 1.0
_PORT_ATTEMPTS = 3
_BAR_WIDTH = 30
# SIGHUP too: closing the terminal must stop the Envoys, which run in their own sessions and would survive.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class Edge:
    """One Envoy: its node id, its node group (also its listener's name) and the port it serves on."""

    envoy: str
    group: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def weights_label(weights: Weights) -> str:
    return f"{weights[0]}/{weights[1]}"


# -- the catalog file ------------------------------------------------------------------------------


def render_catalog(*, upstream_ports: Mapping[str, int], edges: Sequence[Edge], weights: Weights) -> str:
    """The demo's catalog (format: docs/config.md): `web` v1/v2 and `api`, one listener per node group."""
    lines = [
        "# Written by `python -m harness.demo`, which rewrites the web weights below to shift the canary.",
        "# Edit them yourself while the demo runs: the control plane picks up every save within a second.",
        "version: 1",
        "",
        "services:",
        "  - name: web",
        "    connect_timeout: 250ms",
        "    endpoints:",
        f"      - address: {LOOPBACK}:{upstream_ports['web-v1']}",
        "        metadata: {version: v1}",
        f"      - address: {LOOPBACK}:{upstream_ports['web-v2']}",
        "        metadata: {version: v2}",
        "  - name: api",
        "    connect_timeout: 250ms",
        "    endpoints:",
        f"      - address: {LOOPBACK}:{upstream_ports['api']}",
        "",
        "listeners:",
    ]
    for edge in edges:
        lines += [
            f"  - name: {edge.group}",
            f"    address: {LOOPBACK}",
            f"    port: {edge.port}",
            f"    groups: [{edge.group}]  # only Envoys with node.cluster {edge.group} get this listener",
            "    routes:",
            "      - name: api",
            "        match: {prefix: /api}",
            "        backends: [{service: api}]",
            f"      - name: {WEB_ROUTE}",
            "        match: {prefix: /}",
            "        backends:",
            f"          - {{service: web, subset: {{version: v1}}, weight: {weights[0]}}}",
            f"          - {{service: web, subset: {{version: v2}}, weight: {weights[1]}}}",
        ]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` in one step, so the control plane never reads a half-written file."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


# -- reading what each side runs -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppliedRoute:
    """What an Envoy runs for the web route: its RDS version and the weights in catalog order."""

    version: str
    weights: tuple[int, ...]


def applied_route(envoy: EnvoyProcess) -> AppliedRoute | None:
    """The web route from Envoy's config dump; None before Envoy has one."""
    dump = envoy.admin_json("/config_dump?resource=dynamic_route_configs", timeout_s=_ADMIN_POLL_TIMEOUT_S)
    return find_web_route(dump)


def find_web_route(dump: Mapping[str, Any]) -> AppliedRoute | None:
    for entry in dump.get("configs", []):
        config = entry.get("route_config", {})
        for vhost in config.get("virtual_hosts", []):
            for route in vhost.get("routes", []):
                if route.get("name") != WEB_ROUTE:
                    continue
                action = route.get("route", {})
                clusters = action.get("weighted_clusters", {}).get("clusters", [])
                # proto3 JSON leaves out zero values; a cluster without `weight` has weight 0.
                weights = tuple(int(c.get("weight", 0)) for c in clusters) if clusters else (100,)
                return AppliedRoute(version=str(entry.get("version_info", "")), weights=weights)
    return None


class ControlPlaneView:
    """The RDS version the control plane serves each node group, read from its management API."""

    def __init__(self, management_address: str) -> None:
        self._channel = grpc.insecure_channel(management_address)
        self._stub = management_pb2_grpc.ManagementStub(self._channel)

    def route_version(self, group: str) -> str | None:
        try:
            request = pb.GetSnapshotRequest(group=group)
            response = self._stub.GetSnapshot(request, timeout=_ADMIN_POLL_TIMEOUT_S)
        except grpc.RpcError:
            return None
        for version in response.versions:
            if version.type_url == ROUTE:
                return str(version.version)
        return None

    def close(self) -> None:
        self._channel.close()


# -- load, in bounded segments ---------------------------------------------------------------------

# (monotonic time the request started, "web" or "api", the sample)
Hit = tuple[float, str, Sample]


class _Segment:
    """Load to `/` and `/api` of one Envoy for a while; sample times are turned into monotonic time."""

    def __init__(self, url: str, *, rate_per_s: float, max_duration_s: float) -> None:
        self._loads = {
            "web": SteadyLoad(f"{url}/", rate_per_s=rate_per_s * (1 - _API_SHARE), concurrency=4,
                              timeout_s=_REQUEST_TIMEOUT_S, max_duration_s=max_duration_s),
            "api": SteadyLoad(f"{url}/api", rate_per_s=rate_per_s * _API_SHARE, concurrency=2,
                              timeout_s=_REQUEST_TIMEOUT_S, max_duration_s=max_duration_s),
        }
        self._origins: dict[str, float] = {}
        self.started_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        for kind, load in self._loads.items():
            # Taken just before start(), which sets the load's own origin: times may read early by
            # microseconds, never late, so a request is never counted as after a convergence it preceded.
            self._origins[kind] = time.monotonic()
            load.start()

    def hits(self) -> list[Hit]:
        return self._collect({kind: load.snapshot().samples for kind, load in self._started()})

    def stop(self) -> list[Hit]:
        return self._collect({kind: load.stop().samples for kind, load in self._started()})

    def _started(self) -> Iterator[tuple[str, SteadyLoad]]:
        return ((kind, load) for kind, load in self._loads.items() if kind in self._origins)

    def _collect(self, samples: Mapping[str, Sequence[Sample]]) -> list[Hit]:
        return [(self._origins[kind] + s.started_s, kind, s) for kind, ss in samples.items() for s in ss]


class EnvoyTraffic:
    """Steady load through one Envoy. `rotate()` starts a fresh segment and hands back the finished one."""

    def __init__(self, edge: Edge, *, rate_per_s: float, phase_s: float) -> None:
        self.edge = edge
        self._rate_per_s = rate_per_s
        # A segment outlives _SEGMENT_S while an edit is pending (rotation waits for convergence).
        self._max_duration_s = max(_SEGMENT_S, phase_s) + _CONVERGENCE_TIMEOUT_S + 60.0
        self._current: _Segment | None = None
        self._recent: list[Hit] = []  # the end of the previous segment, for the sliding window

    def start(self) -> None:
        self._current = self._new_segment()
        self._current.start()

    @property
    def segment_age_s(self) -> float:
        return 0.0 if self._current is None else time.monotonic() - self._current.started_at

    def rotate(self) -> list[Hit]:
        old, self._current = self._current, self._new_segment()
        # Started after it is recorded as current: an interrupt mid-start still leaves it for stop().
        self._current.start()
        return self._finish(old)

    def stop(self) -> list[Hit]:
        old, self._current = self._current, None
        return self._finish(old)

    def current_hits(self) -> list[Hit]:
        return [] if self._current is None else self._current.hits()

    def window(self, now: float, current: list[Hit]) -> list[Hit]:
        since = now - _WINDOW_S
        return [h for h in self._recent if h[0] >= since] + [h for h in current if h[0] >= since]

    def _new_segment(self) -> _Segment:
        return _Segment(self.edge.url, rate_per_s=self._rate_per_s, max_duration_s=self._max_duration_s)

    def _finish(self, segment: _Segment | None) -> list[Hit]:
        if segment is None:
            return []
        hits = segment.stop()
        cutoff = time.monotonic() - _WINDOW_S
        self._recent = [h for h in hits if h[0] >= cutoff]
        return hits


# -- phases and their counts -----------------------------------------------------------------------


def _is_2xx(sample: Sample) -> bool:
    return sample.status is not None and 200 <= sample.status < 300


@dataclass
class Counts:
    upstreams: Counter[str] = field(default_factory=Counter)
    after_convergence: Counter[str] = field(default_factory=Counter)
    non_2xx: int = 0
    errors: int = 0

    def add(self, sample: Sample, *, converged: bool) -> None:
        if sample.status is None:
            self.errors += 1
            return
        if not _is_2xx(sample):
            self.non_2xx += 1
            return
        name = sample.upstream or "?"
        self.upstreams[name] += 1
        if converged:
            self.after_convergence[name] += 1


@dataclass
class Phase:
    name: str
    weights: Weights
    started_at: float  # the catalog edit (for the baseline: the start of load), monotonic
    edited: bool = True  # False for the baseline, which no edit started
    converged_at: float | None = None  # when both Envoys were seen running `weights`
    applied_s: dict[str, float] = field(default_factory=dict)  # envoy -> seconds from edit to applied
    by_envoy: dict[str, Counts] = field(default_factory=dict)

    @property
    def convergence_s(self) -> float | None:
        if not self.edited or self.converged_at is None:
            return None
        return self.converged_at - self.started_at

    def total(self) -> Counts:
        total = Counts()
        for counts in self.by_envoy.values():
            total.upstreams.update(counts.upstreams)
            total.after_convergence.update(counts.after_convergence)
            total.non_2xx += counts.non_2xx
            total.errors += counts.errors
        return total


class Ledger:
    """Every phase so far, and the requests of finished load segments filed under the phase they began in."""

    def __init__(self) -> None:
        self.phases: list[Phase] = []

    def begin(self, name: str, weights: Weights, *, at: float, edited: bool = True) -> Phase:
        # A phase no edit started (the baseline) runs its weights from the first request.
        phase = Phase(name, weights, started_at=at, edited=edited, converged_at=None if edited else at)
        self.phases.append(phase)
        return phase

    def file(self, envoy: str, hits: Sequence[Hit]) -> None:
        starts = [p.started_at for p in self.phases]
        for at, _, sample in hits:
            phase = self.phases[max(0, bisect.bisect_right(starts, at) - 1)]
            counts = phase.by_envoy.setdefault(envoy, Counts())
            converged = phase.converged_at is not None and at >= phase.converged_at
            counts.add(sample, converged=converged)

    def failed_requests(self, envoy: str) -> tuple[int, int]:
        """(non-2xx, errors) filed so far for `envoy`."""
        counts = [p.by_envoy[envoy] for p in self.phases if envoy in p.by_envoy]
        return sum(c.non_2xx for c in counts), sum(c.errors for c in counts)


# -- the screen ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvoyStatus:
    edge: Edge
    admin_url: str
    applied: AppliedRoute | None
    served_version: str | None  # the control plane's RDS version for the Envoy's group
    target: Weights
    web: Counter[str]  # upstream -> answered `/` requests in the window
    web_total: int
    api_ok: int
    api_total: int
    non_2xx: int  # whole run
    errors: int  # whole run


@dataclass(frozen=True, slots=True)
class Frame:
    elapsed_s: float
    phase_line: str
    status_line: str
    envoys: tuple[EnvoyStatus, ...]
    footer: tuple[str, ...]
    events: tuple[str, ...]


def _short(version: str | None) -> str:
    return "-" if not version else version[:8]


def _share(count: int, total: int) -> float:
    return 100.0 * count / total if total else 0.0


def _bar(percent: float, *, fill: str, empty: str) -> str:
    filled = round(_BAR_WIDTH * percent / 100.0)
    return fill * filled + empty * (_BAR_WIDTH - filled)


def _applied_version(status: EnvoyStatus) -> str:
    return _short(status.applied.version if status.applied else None)


def _sync_text(status: EnvoyStatus) -> str:
    applied = status.applied.version if status.applied else None
    if applied is None or status.served_version is None:
        return "?"
    return "in sync" if applied == status.served_version else "behind"


def format_frame(frame: Frame, *, unicode_ok: bool) -> list[str]:
    """The full-screen view: one block per Envoy, one bar per upstream; lines kept within 80 columns."""
    fill, empty = ("\u2588", "\u2591") if unicode_ok else ("#", ".")
    lines = [f"xds demo: canary of web v1 -> v2      t = {frame.elapsed_s:6.1f} s      Ctrl-C stops",
             frame.phase_line, ""]
    for s in frame.envoys:
        applied_w = "/".join(str(w) for w in s.applied.weights) if s.applied else "-"
        lines += [
            f"{s.edge.envoy}  group {s.edge.group}  serving {s.edge.url}/",
            f"  route version {_applied_version(s)}   control plane serves {_short(s.served_version)}"
            f"   {_sync_text(s)}",
            f"  web weights: target {weights_label(s.target)}, Envoy runs {applied_w}",
            f"  last {_WINDOW_S:g} s: {s.web_total + s.api_total} requests   "
            f"non-2xx {s.non_2xx}   errors {s.errors} (whole run)",
        ]
        for index, name in enumerate(("web-v1", "web-v2")):
            pct = _share(s.web[name], s.web_total)
            path = "/   " if index == 0 else "    "
            lines.append(f"  {path} {name:<7} {_bar(pct, fill=fill, empty=empty)} {pct:5.1f}%"
                         f"  target {s.target[index]:3d}%")
        pct = _share(s.api_ok, s.api_total)
        lines += [f"  /api {'api':<7} {_bar(pct, fill=fill, empty=empty)} {pct:5.1f}%", ""]
    lines += [f"status: {frame.status_line}", "", *frame.footer]
    if frame.events:
        lines += ["", "events:", *(f"  {e}" for e in frame.events)]
    return lines


def fit_to_terminal(lines: Sequence[str], size: os.terminal_size) -> list[str]:
    """Cut lines to the terminal: a wrapped or scrolled line would break redrawing in place."""
    return [line[: max(1, size.columns - 1)] for line in lines[: max(1, size.lines - 1)]]


def format_plain_status(frame: Frame) -> list[str]:
    """One line per Envoy, for logs and pipes."""
    lines = []
    for s in frame.envoys:
        v1, v2 = (_share(s.web[n], s.web_total) for n in ("web-v1", "web-v2"))
        lines.append(
            f"[{frame.elapsed_s:7.1f}s] {s.edge.envoy}  target {weights_label(s.target):>6}  "
            f"last {_WINDOW_S:g}s: web-v1 {v1:5.1f}% web-v2 {v2:5.1f}% ({s.web_total} req) "
            f"api {s.api_total} req  non-2xx {s.non_2xx}  errors {s.errors}  "
            f"rds {_applied_version(s)} cp {_short(s.served_version)} ({_sync_text(s)})")
    return lines


class Screen:
    """A live ANSI view redrawn in place, or plain lines (when asked, or when stdout is no terminal)."""

    def __init__(self, out: TextIO, *, plain: bool) -> None:
        self.out = out
        self.live = not plain and out.isatty()
        encoding = (getattr(out, "encoding", None) or "").lower()
        self._unicode_ok = encoding.replace("-", "") == "utf8"
        self._next_plain_at = 0.0
        self._events: list[str] = []
        self._started = False

    def message(self, text: str) -> None:
        """Something that happened: printed at once in plain mode, kept under the live view otherwise."""
        if self.live and self._started:
            self._events = [*self._events[-7:], text]
        else:
            self._write(text + "\n")

    @property
    def events(self) -> tuple[str, ...]:
        return tuple(self._events)

    def draw(self, frame: Frame) -> None:
        if self.live:
            if not self._started:
                # Clear once and hide the cursor; later frames overwrite in place, which does not flicker.
                self._write("\x1b[?25l\x1b[2J")
                self._started = True
            lines = fit_to_terminal(format_frame(frame, unicode_ok=self._unicode_ok),
                                    shutil.get_terminal_size())
            self._write("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
        elif time.monotonic() >= self._next_plain_at:
            self._next_plain_at = time.monotonic() + _PLAIN_EVERY_S
            self._write("".join(f"{line}\n" for line in format_plain_status(frame)))

    def close(self) -> None:
        if self.live and self._started:
            self._write("\x1b[?25h\n")
            self._started = False

    def _write(self, text: str) -> None:
        # A closed or broken stdout (the reader of a pipe went away) must not stop the cleanup.
        with contextlib.suppress(OSError, ValueError):
            self.out.write(text)
            self.out.flush()


# -- the demo --------------------------------------------------------------------------------------


class StopRequested(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True, slots=True)
class Options:
    phase_s: float = DEFAULT_PHASE_S
    rate_per_s: float = DEFAULT_RATE
    once: bool = False
    plain: bool = False


@dataclass
class _Transition:
    phase: Phase
    pending: set[str]


class Demo:
    """Owns every process and thread it starts; `run()` always stops them all before it returns."""

    def __init__(self, options: Options, *, workdir: Path, out: TextIO) -> None:
        self.options = options
        self.workdir = workdir
        self.catalog = workdir / CATALOG_NAME
        self.screen = Screen(out, plain=options.plain)
        self.ledger = Ledger()
        self.edges: tuple[Edge, ...] = ()
        self.upstreams = UpstreamPool(UPSTREAMS)
        self.control_plane: ControlPlaneProcess | None = None
        self.envoys: dict[str, EnvoyProcess] = {}
        self.traffic: dict[str, EnvoyTraffic] = {}
        self.view: ControlPlaneView | None = None
        self.target: Weights = BASELINE
        self.failures: list[str] = []
        self.outcome = "not started"
        self._applied: dict[str, AppliedRoute | None] = {}
        self._served: dict[str, str | None] = {}
        self._transition: _Transition | None = None
        self._polled_at = 0.0
        self._t0 = time.monotonic()
        self._status = ""

    # -- lifecycle ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, run the phases, stop everything; the exit code for the command line."""
        previous = {sig: signal.signal(sig, _raise_stop) for sig in _STOP_SIGNALS}
        code = 1
        try:
            self._prepare_workdir()
            self._start()
            self._loop()
            code = 0 if not self.failures else 1
        except StopRequested as stop:
            self.outcome = f"stopped by {stop}"
            code = 0 if not self.failures else 1
        except (OSError, RuntimeError) as exc:
            # Start-up failures: TimeoutError (an OSError), ProcessExitedError (a RuntimeError), bind errors.
            self.outcome = "failed"
            self.failures.append(str(exc))
            self.screen.close()
            self.screen.message(f"demo: {exc}\ndemo: the logs are in {self.workdir}")
        finally:
            # Cleanup must finish: a second Ctrl-C now is noted, not raised (every stop below is bounded).
            for sig in previous:
                signal.signal(sig, _note_signal)
            self._stop_all()
            self._print_summary()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _prepare_workdir(self) -> None:
        if self.workdir.is_symlink() or self.workdir.is_file():
            self.workdir.unlink()
        elif self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        self.screen.message(f"demo: work dir {self.workdir} (catalog, bootstraps and every log are here)")

    def _start(self) -> None:
        self.upstreams.start()
        ports = {server.name: server.port for server in self.upstreams}
        listener_ports = free_ports(2)
        self.edges = tuple(Edge(f"envoy-{i}", f"edge-{i}", port) for i, port in enumerate(listener_ports, 1))
        write_atomic(self.catalog, render_catalog(upstream_ports=ports, edges=self.edges, weights=BASELINE))
        self.screen.message(f"demo: starting the control plane on {self.catalog.name}")
        control_plane = self._start_control_plane()
        names = " and ".join(e.envoy for e in self.edges)
        self.screen.message(f"demo: starting {names}; waiting until both are LIVE and serving")
        for edge in self.edges:
            self._start_envoy(edge, xds_port=control_plane.xds_port)
        for edge in self.edges:
            self.envoys[edge.envoy].wait_live(_STARTUP_TIMEOUT_S)
            self._wait_serving(edge)
        self.view = ControlPlaneView(control_plane.management_address)
        self._print_addresses(ports)
        self.ledger.begin("baseline", BASELINE, at=time.monotonic(), edited=False)
        for edge in self.edges:
            traffic = EnvoyTraffic(edge, rate_per_s=self.options.rate_per_s, phase_s=self.options.phase_s)
            self.traffic[edge.envoy] = traffic
            traffic.start()
        self.outcome = "running"

    def _start_control_plane(self) -> ControlPlaneProcess:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            xds_port, admin_port = free_ports(2)
            self.control_plane = ControlPlaneProcess(
                self.catalog, workdir=self.workdir, xds_port=xds_port, admin_port=admin_port,
                extra_args=("--log-format", "text"))
            self.control_plane.start()
            try:
                self.control_plane.wait_ready(_STARTUP_TIMEOUT_S)
            except ProcessExitedError:
                # Another process may take a port between free_ports() and the child's bind: retry then.
                if attempt == _PORT_ATTEMPTS or not _lost_port_race(self.control_plane.tail(200)):
                    raise
                self.control_plane.stop()
                continue
            return self.control_plane
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _start_envoy(self, edge: Edge, *, xds_port: int) -> None:
        # Admin on port 0: Envoy picks a free port and reports it, so there is no race to lose.
        bootstrap = bootstrap_for(edge.envoy, edge.group, xds_port=xds_port, admin_port=0)
        envoy = EnvoyProcess(bootstrap, workdir=self.workdir, admin_port=0, base_id=unique_base_id(),
                             name=edge.envoy)
        self.envoys[edge.envoy] = envoy
        envoy.start(timeout_s=_STARTUP_TIMEOUT_S)

    def _wait_serving(self, edge: Edge) -> None:
        """Wait until the listener answers 200; its port comes from the catalog, so someone may hold it."""
        envoy = self.envoys[edge.envoy]

        def serving() -> bool:
            envoy.process.check_alive()
            return _http_status(edge.port, "/") == 200

        wait_until(serving, timeout_s=_STARTUP_TIMEOUT_S, interval_s=0.1,
                   ignore=(OSError, http.client.HTTPException),
                   message=lambda: (f"{edge.envoy} does not serve {edge.url}/ (port {edge.port} taken by "
                                    f"another process? run the demo again); see {envoy.app_log_path}"))

    def _print_addresses(self, ports: Mapping[str, int]) -> None:
        cp = self.control_plane
        assert cp is not None
        say = self.screen.message
        say(f"demo: control plane  xDS {cp.xds_address}   metrics http://{LOOPBACK}:{cp.admin_port}/metrics"
            f"   status http://{LOOPBACK}:{cp.admin_port}/status   log {cp.process.log_path}")
        for edge in self.edges:
            envoy = self.envoys[edge.envoy]
            say(f"demo: {edge.envoy} (group {edge.group})  traffic {edge.url}/   admin "
                f"http://{LOOPBACK}:{envoy.admin_port}/   access log {envoy.log_path}")
        say("demo: upstreams  " + "  ".join(f"{name} {LOOPBACK}:{port}" for name, port in ports.items()))
        steps = " -> ".join(weights_label(w) for w in (BASELINE, *CANARY_STEPS))
        say(f"demo: load {self.options.rate_per_s:g} req/s per Envoy ({100 - _API_SHARE * 100:g}% to /, "
            f"{_API_SHARE * 100:g}% to /api); web v1/v2 weights {steps}, "
            f"{self.options.phase_s:g} s each, by editing {self.catalog}")

    def _stop_all(self) -> None:
        self.screen.close()
        for envoy, traffic in self.traffic.items():
            _quietly(functools.partial(self._stop_traffic, envoy, traffic))
        if self.view is not None:
            _quietly(self.view.close)
        for process in self.envoys.values():
            _quietly(process.stop)
        if self.control_plane is not None:
            _quietly(self.control_plane.stop)
        _quietly(self.upstreams.stop)

    def _stop_traffic(self, envoy: str, traffic: EnvoyTraffic) -> None:
        self.ledger.file(envoy, traffic.stop())

    # -- the phases --------------------------------------------------------------------------------

    def _loop(self) -> None:
        phase_s = self.options.phase_s
        next_step_at = time.monotonic() + phase_s
        step = 0
        run_deadline = time.monotonic() + _MAX_RUN_S
        next_poll = next_frame = 0.0
        for _ in range(math.ceil(_MAX_RUN_S / _CONVERGE_POLL_S)):
            now = time.monotonic()
            if now >= run_deadline:
                self.screen.message(f"demo: ran for {_MAX_RUN_S / 3600:g} h, stopping")
                self.outcome = "ran for the maximum time"
                return
            if self._transition is not None or now >= next_poll:
                self._poll(control_plane=now >= next_poll)
                if now >= next_poll:
                    next_poll = now + _FRAME_S
            if self._transition is not None:
                self._check_convergence(now)
            elif now >= next_step_at:
                if step < len(CANARY_STEPS):
                    self._edit(CANARY_STEPS[step], number=step + 1)
                    step += 1
                    next_step_at = time.monotonic() + phase_s
                elif self.options.once:
                    self.outcome = "completed"
                    return
                else:
                    next_step_at = math.inf
            self._rotate_segments()
            self._status = self._describe(step, next_step_at)
            if now >= next_frame:
                self.screen.draw(self._frame())
                next_frame = now + _FRAME_S
            time.sleep(_CONVERGE_POLL_S if self._transition is not None else _TICK_S)
        self.outcome = "ran for the maximum number of ticks"

    def _edit(self, weights: Weights, *, number: int) -> None:
        cp = self.control_plane
        assert cp is not None
        text = render_catalog(upstream_ports={s.name: s.port for s in self.upstreams}, edges=self.edges,
                              weights=weights)
        write_atomic(self.catalog, text)
        edited_at = time.monotonic()
        self.target = weights
        phase = self.ledger.begin(weights_label(weights), weights, at=edited_at)
        self._transition = _Transition(phase, pending={e.envoy for e in self.edges})
        self.screen.message(f"[{edited_at - self._t0:7.1f}s] phase {number}/{len(CANARY_STEPS)} "
                            f"{phase.name}: edited {self.catalog.name}, web v1/v2 now {phase.name}")

    def _check_convergence(self, now: float) -> None:
        transition = self._transition
        assert transition is not None
        phase = transition.phase
        for envoy in sorted(transition.pending):
            applied = self._applied.get(envoy)
            if applied is not None and applied.weights == phase.weights:
                phase.applied_s[envoy] = self._polled_at - phase.started_at
                transition.pending.discard(envoy)
        if not transition.pending:
            phase.converged_at = phase.started_at + max(phase.applied_s.values())
            self._transition = None
            each = ", ".join(f"{e} {s:.2f} s" for e, s in sorted(phase.applied_s.items()))
            self.screen.message(f"[{now - self._t0:7.1f}s] {phase.name} applied: {each}; "
                                f"converged in {phase.convergence_s:.2f} s")
        elif now - phase.started_at > _CONVERGENCE_TIMEOUT_S:
            missing = ", ".join(sorted(transition.pending))
            message = (f"phase {phase.name}: {missing} did not apply the edit "
                       f"within {_CONVERGENCE_TIMEOUT_S:g} s")
            self.failures.append(message)
            self.screen.message(f"[{now - self._t0:7.1f}s] {message}; see {self.workdir}")
            self._transition = None

    def _poll(self, *, control_plane: bool) -> None:
        # The control plane first: then an Envoy can look behind it (an edit on its way), never ahead.
        if control_plane and self.view is not None:
            for edge in self.edges:
                self._served[edge.group] = self.view.route_version(edge.group)
        for edge in self.edges:
            try:
                self._applied[edge.envoy] = applied_route(self.envoys[edge.envoy])
            except (OSError, AdminError, ValueError, http.client.HTTPException):
                self._applied[edge.envoy] = None
        # Taken after the reads: a convergence time is an upper bound, by at most one poll.
        self._polled_at = time.monotonic()

    def _rotate_segments(self) -> None:
        # Only while no edit is pending: filing needs to know when the current phase converged.
        if self._transition is not None:
            return
        for envoy, traffic in self.traffic.items():
            if traffic.segment_age_s >= _SEGMENT_S:
                self.ledger.file(envoy, traffic.rotate())

    def _describe(self, step: int, next_step_at: float) -> str:
        if self._transition is not None:
            waiting = ", ".join(sorted(self._transition.pending))
            return (f"edited {self.catalog.name} to {self._transition.phase.name}; "
                    f"waiting for {waiting} to apply it")
        left = max(0.0, next_step_at - time.monotonic())
        current = weights_label(self.target)
        if step < len(CANARY_STEPS):
            return f"holding {current}; shifting to {weights_label(CANARY_STEPS[step])} in {left:4.1f} s"
        if self.options.once:
            return f"holding {current}; all phases done, exiting in {left:4.1f} s"
        return f"all phases done; holding {current} until Ctrl-C (edit {self.catalog} yourself meanwhile)"

    def _phase_line(self) -> str:
        phases = self.ledger.phases
        phase = phases[-1]
        if len(phases) == 1:
            return f"baseline {phase.name}: all web traffic on v1 before the canary starts"
        head = f"phase {len(phases) - 1}/{len(CANARY_STEPS)}: web v1/v2 {phase.name}"
        if phase.convergence_s is None:
            return f"{head}   catalog edited, Envoys converging..."
        return f"{head}   edit applied by both Envoys in {phase.convergence_s:.2f} s"

    def _frame(self) -> Frame:
        now = time.monotonic()
        statuses = []
        for edge in self.edges:
            traffic = self.traffic[edge.envoy]
            current = traffic.current_hits()
            window = traffic.window(now, current)
            web = Counter(s.upstream or "?" for _, kind, s in window if kind == "web" and _is_2xx(s))
            web_total = sum(1 for _, kind, _s in window if kind == "web")
            api = [s for _, kind, s in window if kind == "api"]
            non_2xx, errors = self.ledger.failed_requests(edge.envoy)
            non_2xx += sum(1 for _, _, s in current if s.status is not None and not _is_2xx(s))
            errors += sum(1 for _, _, s in current if s.status is None)
            statuses.append(EnvoyStatus(
                edge=edge, admin_url=f"http://{LOOPBACK}:{self.envoys[edge.envoy].admin_port}/",
                applied=self._applied.get(edge.envoy), served_version=self._served.get(edge.group),
                target=self.target, web=web, web_total=web_total,
                api_ok=sum(1 for s in api if _is_2xx(s)), api_total=len(api), non_2xx=non_2xx, errors=errors))
        cp = self.control_plane
        assert cp is not None
        footer = (f"catalog  {self.catalog}   (logs beside it)",
                  f"control plane  http://{LOOPBACK}:{cp.admin_port}/metrics  /status",
                  "Envoy admin    " + "  ".join(f"{s.edge.envoy} {s.admin_url}" for s in statuses))
        return Frame(elapsed_s=now - self._t0, phase_line=self._phase_line(), status_line=self._status,
                     envoys=tuple(statuses), footer=footer, events=self.screen.events)

    # -- the summary -------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        phases = []
        for phase in self.ledger.phases:
            total = phase.total()
            phases.append({
                "name": phase.name,
                "target": {"web-v1": phase.weights[0], "web-v2": phase.weights[1]},
                "convergence_s": _rounded(phase.convergence_s),
                "applied_s": {e: _rounded(s) for e, s in sorted(phase.applied_s.items())},
                "requests": dict(sorted(total.upstreams.items())),
                "requests_after_convergence": dict(sorted(total.after_convergence.items())),
                "non_2xx": total.non_2xx,
                "errors": total.errors,
                "by_envoy": {e: dict(sorted(c.upstreams.items())) for e, c in sorted(phase.by_envoy.items())},
            })
        pids = {name: pid for name, envoy in self.envoys.items() if (pid := _pid(envoy)) is not None}
        if self.control_plane is not None and self.control_plane.process.pid is not None:
            pids["control-plane"] = self.control_plane.process.pid
        return {
            "outcome": self.outcome,
            "completed": self.outcome == "completed",
            "phases": phases,
            "non_2xx": sum(p["non_2xx"] for p in phases),
            "errors": sum(p["errors"] for p in phases),
            "convergence_s": [_rounded(p.convergence_s) for p in self.ledger.phases if p.edited],
            "failures": self.failures,
            "pids": pids,
            "workdir": str(self.workdir),
        }

    def _print_summary(self) -> None:
        summary = self.summary()
        lines = [f"demo: {summary['outcome']}; every process it started is stopped. Logs: {self.workdir}"]
        if summary["phases"]:
            lines.append(f"  {'phase':<9} {'converged':>10} {'web-v1':>8} {'web-v2':>8} {'api':>8} "
                         f"{'non-2xx':>8} {'errors':>7}")
            for p in summary["phases"]:
                conv = "-" if p["convergence_s"] is None else f"{p['convergence_s']:.2f} s"
                req = p["requests"]
                counts = " ".join(f"{req.get(name, 0):>8}" for name in UPSTREAMS)
                lines.append(f"  {p['name']:<9} {conv:>10} {counts} {p['non_2xx']:>8} {p['errors']:>7}")
            lines.append(f"  non-2xx total {summary['non_2xx']}, errors total {summary['errors']}; "
                         "convergence = catalog edit -> both Envoys run the new weights")
        for failure in self.failures:
            lines.append(f"  failure: {failure}")
        lines.append(f"{SUMMARY_MARKER} {json.dumps(summary, sort_keys=True)}")
        self.screen.message("\n".join(lines))


def _pid(envoy: EnvoyProcess) -> int | None:
    try:
        return envoy.process.pid
    except RuntimeError:  # never started
        return None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _quietly(action: Callable[[], object]) -> None:
    """Run one cleanup step; a failure is reported and the remaining steps still run."""
    try:
        action()
    except Exception as exc:  # cleanup goes on whatever one step raised
        print(f"demo: cleanup step failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise StopRequested(signum)


def _note_signal(signum: int, frame: FrameType | None) -> None:
    print(f"demo: {signal.Signals(signum).name} received, still stopping processes", file=sys.stderr)


def _lost_port_race(log_text: str) -> bool:
    # errno 98 from Python's own sockets, "Failed to bind" from grpc's server.add_insecure_port.
    text = log_text.lower()
    return "address already in use" in text or "failed to bind" in text


def _http_status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=_REQUEST_TIMEOUT_S)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


# -- command line ----------------------------------------------------------------------------------


def _positive(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.demo",
        description="Live demo: a control plane, two Envoys and three upstreams on loopback; a canary "
                    "shifted by editing the catalog file, with the traffic split drawn live.")
    parser.add_argument("--phase-seconds", type=_positive, default=DEFAULT_PHASE_S,
                        help=f"how long each phase runs (default {DEFAULT_PHASE_S:g})")
    parser.add_argument("--once", action="store_true",
                        help="exit after the last phase instead of running until Ctrl-C")
    parser.add_argument("--plain", action="store_true",
                        help="plain lines instead of the live view (the default when stdout is no terminal)")
    parser.add_argument("--rate", type=_positive, default=DEFAULT_RATE,
                        help=f"requests per second through each Envoy (default {DEFAULT_RATE:g})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = Options(phase_s=args.phase_seconds, rate_per_s=args.rate, once=args.once, plain=args.plain)
    return Demo(options, workdir=Path.cwd() / WORKDIR_NAME, out=sys.stdout).run()


if __name__ == "__main__":
    raise SystemExit(main())
