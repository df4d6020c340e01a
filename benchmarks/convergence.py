"""Convergence: from an edit of the catalog file to a real Envoy having applied it.

    python -m benchmarks.convergence [--edits 20] [--timeout 10] [--poll-ms 5] [--seed 1] [--keep]

Theory of operation
-------------------
Real upstreams (alpha, beta, gamma, and alpha-2), the control plane as a process serving one catalog file
(`python -m xds serve --config catalog.yaml`, its default file poll and debounce), and one real Envoy
bootstrapped by the control plane's own `xds bootstrap`. The catalog has one listener whose route `split`
sends traffic to alpha/beta/gamma by weight.

Each edit rewrites the file atomically (temporary file + os.replace, as editors and config management do).
Edits alternate the route's weights (80-k)/20/k <-> 20/(80-k)/k, k = edit number mod 40 + 1, so every
edit is new content; every third edit also adds or removes alpha's second endpoint (alpha-2). The benchmark
then polls
Envoy's admin every `--poll-ms` until it runs the edit: the weights in
`/config_dump?resource=dynamic_route_configs` and, for endpoint edits, alpha's hosts in `/clusters`. The next
edit starts only after that (or after `--timeout`, counted as a failure), following a random pause of up to
one file-poll interval so edits land at random phases of the control plane's poll timer: without it, every
edit would be written at the same offset from the last poll tick and the poll wait would be biased.

Per edit it reports, from the wall-clock time of the write:
  observed    first admin poll showing the edit (includes up to one poll period and an admin round trip);
  envoy       Envoy's own apply stamp of the changed subscriptions, the later of the two for endpoint edits:
              RDS `http.ingress.rds.ingress.config_reload_time_ms` and, since EDS clusters have no
              config_reload_time_ms, `cluster.alpha.update_time` (epoch ms of its last successful update):
              free of polling delay (benchmarks/README.md);
  pickup      the control plane logging `source_published` for the new file: the file-poll wait, stat, read
              and parse;
  sent        the control plane logging `response_sent` (debug level) for the changed types: pickup plus
              debounce, snapshot build and the send. The line is written once the write has returned, so
              Envoy may stamp its apply a millisecond before it.
Log timestamps are truncated to whole milliseconds, as are Envoy's stats, so stage differences carry about
+-1 ms; all clocks are this machine's wall clock.

The floor before any build, send or apply is the file-poll wait (uniform over 0 to the poll interval) plus
the debounce; the summary prints it next to the measurements.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import yaml

from harness import (
    AdminError,
    ControlPlaneProcess,
    EnvoyProcess,
    UpstreamPool,
    bootstrap_for,
    free_port,
    free_ports,
    unique_base_id,
    wait_until,
)
from harness.ports import LOOPBACK
from xds.policy.weights import normalize_weights
from xds.settings import Settings
from xds.typeurls import ENDPOINT, ROUTE

SERVICES = ("alpha", "beta", "gamma")
SPARE = "alpha-2"  # the endpoint some edits add to and remove from alpha
LISTENER = "ingress"  # also the route configuration's name and the HTTP stat prefix (translate/listeners.py)
ROUTE_NAME = "split"
NODE_ID = "bench-envoy"
NODE_GROUP = "bench"
RDS_PART, EDS_PART = "rds", "eds"
# Envoy's apply timestamps (epoch ms) per part, first one present wins. EDS clusters have no
# config_reload_time_ms (Envoy 1.40); their update_time, stamped after a successful update, stands in: every
# EDS update alpha gets here changes its endpoints, so it is the same instant.
_RELOAD_STATS = {
    RDS_PART: (f"http.{LISTENER}.rds.{LISTENER}.config_reload_time_ms",),
    EDS_PART: (f"cluster.{SERVICES[0]}.config_reload_time_ms", f"cluster.{SERVICES[0]}.update_time"),
}
_TYPES = {RDS_PART: ROUTE, EDS_PART: ENDPOINT}
_STARTUP_TIMEOUT_S = 60.0
# Bounds how long one admin request may take; a hung admin fails the poll rather than the benchmark.
_ADMIN_TIMEOUT_S = 1.0
_LOG_GRACE_S = 0.05


@dataclass(frozen=True, slots=True)
class Edit:
    number: int
    weights: tuple[int, int, int]  # as written, for alpha, beta, gamma
    spare: bool  # alpha-2 is one of alpha's endpoints after this edit
    endpoints_changed: bool

    @property
    def parts(self) -> tuple[str, ...]:
        """The subscriptions this edit changes in Envoy."""
        return (RDS_PART, EDS_PART) if self.endpoints_changed else (RDS_PART,)

    def expected_weights(self) -> dict[str, int]:
        # The control plane normalises weights to a fixed total (policy/weights.py); Envoy shows those.
        return dict(zip(SERVICES, normalize_weights(self.weights), strict=True))

    def describe(self) -> str:
        weights = "/".join(str(w) for w in self.weights)
        if not self.endpoints_changed:
            return f"weights {weights}"
        return f"weights {weights}, {'+' if self.spare else '-'}{SPARE}"


def plan_edits(count: int) -> list[Edit]:
    edits = []
    spare = False
    for number in range(1, count + 1):
        # Percentages summing to 100 (the policy requires it); k makes every edit new content.
        k = number % 40 + 1
        weights = (80 - k, 20, k) if number % 2 else (20, 80 - k, k)
        changed = number % 3 == 0
        spare = not spare if changed else spare
        edits.append(Edit(number, weights, spare, changed))
    return edits


def catalog_text(pool: UpstreamPool, *, listener_port: int, weights: Sequence[int], spare: bool) -> str:
    def endpoints(service: str) -> list[dict[str, str]]:
        names = [service, SPARE] if service == SERVICES[0] and spare else [service]
        return [{"address": f"{LOOPBACK}:{pool[name].port}"} for name in names]

    document = {
        "version": 1,
        "services": [{"name": s, "connect_timeout": "1s", "endpoints": endpoints(s)} for s in SERVICES],
        "listeners": [{
            "name": LISTENER, "address": LOOPBACK, "port": listener_port,
            "routes": [{"name": ROUTE_NAME, "match": {"prefix": "/"},
                        "backends": [{"service": s, "weight": w}
                                     for s, w in zip(SERVICES, weights, strict=True)]}],
        }],
    }
    return yaml.safe_dump(document, sort_keys=False)


def write_atomically(path: Path, text: str) -> float:
    """Replace `path` with `text` in one rename; returns the wall-clock time of the rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    written = time.time()
    os.replace(tmp, path)
    return written


# --- reading Envoy ----------------------------------------------------------------------------------------


def route_weights(envoy: EnvoyProcess) -> dict[str, int]:
    """Cluster -> weight of route `split` as Envoy runs it now; empty before the route arrives."""
    dump = envoy.admin_json("/config_dump?resource=dynamic_route_configs", timeout_s=_ADMIN_TIMEOUT_S)
    for config in dump.get("configs", []):
        route_config = config.get("route_config", {})
        if route_config.get("name") != LISTENER:
            continue
        for vhost in route_config.get("virtual_hosts", []):
            for route in vhost.get("routes", []):
                if route.get("name") == ROUTE_NAME:
                    clusters = route.get("route", {}).get("weighted_clusters", {}).get("clusters", [])
                    return {c["name"]: int(c.get("weight", 0)) for c in clusters}
    return {}


def cluster_ports(envoy: EnvoyProcess, cluster: str) -> frozenset[int]:
    """Ports of the hosts Envoy's cluster manager holds for `cluster` (what EDS updates change)."""
    data = envoy.admin_json("/clusters?format=json", timeout_s=_ADMIN_TIMEOUT_S)
    for status in data.get("cluster_statuses", []):
        if status.get("name") == cluster:
            return frozenset(int(h["address"]["socket_address"]["port_value"])
                             for h in status.get("host_statuses", []))
    return frozenset()


def reload_stamps(envoy: EnvoyProcess) -> dict[str, int]:
    """Part -> Envoy's `config_reload_time_ms` (epoch ms of its last applied update), where it has one."""
    stats = envoy.stats(r"\.(config_reload_time_ms|update_time)$")
    stamps: dict[str, int] = {}
    for part, names in _RELOAD_STATS.items():
        for name in names:
            value = stats.get(name)
            if isinstance(value, int) and value > 0:
                stamps[part] = value
                break
    return stamps


# --- reading the control plane's log ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogEvent:
    at: float  # wall-clock seconds
    event: str
    type_url: str


class LogTail:
    """Reads the JSON lines the control plane appended since the last call."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0

    def skip_to_end(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._offset = self._path.stat().st_size

    def read(self) -> list[LogEvent]:
        try:
            with self._path.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return []
        # Only whole lines: the control plane may be halfway through writing the last one.
        end = data.rfind(b"\n") + 1
        self._offset += end
        events = []
        for line in data[:end].decode("utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
                at = datetime.datetime.fromisoformat(entry["ts"]).timestamp()
            except (ValueError, KeyError, TypeError):
                continue  # harness headers and anything that is not one of the server's JSON lines
            # The file source's message carries its fields after the event name ("source_published source=").
            event = str(entry.get("event", "")).split(" ", 1)[0]
            events.append(LogEvent(at, event, str(entry.get("type_url", ""))))
        return events


# --- one edit ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    edit: Edit
    observed_s: float | None = None  # None: not applied within the timeout
    envoy_s: float | None = None
    pickup_s: float | None = None
    sent_s: float | None = None
    missing: list[str] = field(default_factory=list)


def _poll(checks: dict[str, Callable[[], bool]], *, timeout_s: float, interval_s: float) -> dict[str, float]:
    """Seconds (perf_counter) at which each check first held; bounded in polls as well as in time."""
    seen: dict[str, float] = {}
    deadline = time.perf_counter() + timeout_s
    for _ in range(math.ceil(timeout_s / interval_s) + 2):
        for part, check in checks.items():
            if part in seen:
                continue
            try:
                held = check()
            except (OSError, AdminError, ValueError, KeyError):
                held = False  # admin busy or half-written config: not yet
            if held:
                seen[part] = time.perf_counter()
        now = time.perf_counter()
        if len(seen) == len(checks) or now >= deadline:
            break
        time.sleep(min(interval_s, deadline - now))
    return seen


def run_edit(edit: Edit, *, envoy: EnvoyProcess, pool: UpstreamPool, catalog: Path, listener_port: int,
             log: LogTail, timeout_s: float, interval_s: float) -> Outcome:
    before = reload_stamps(envoy)
    log.read()  # drop what the previous edit left
    expected_weights = edit.expected_weights()
    alpha_upstreams = (SERVICES[0], SPARE) if edit.spare else (SERVICES[0],)
    expected_ports = frozenset(pool[name].port for name in alpha_upstreams)
    checks: dict[str, Callable[[], bool]] = {RDS_PART: lambda: route_weights(envoy) == expected_weights}
    if edit.endpoints_changed:
        checks[EDS_PART] = lambda: cluster_ports(envoy, SERVICES[0]) == expected_ports
    text = catalog_text(pool, listener_port=listener_port, weights=edit.weights, spare=edit.spare)

    written_wall = write_atomically(catalog, text)
    written = time.perf_counter()
    seen = _poll(checks, timeout_s=timeout_s, interval_s=interval_s)

    outcome = Outcome(edit, missing=[part for part in checks if part not in seen])
    if not outcome.missing:
        outcome.observed_s = max(seen.values()) - written
    after = reload_stamps(envoy)
    reloads = [after[p] / 1e3 - written_wall for p in edit.parts if after.get(p, 0) > before.get(p, 0)]
    if len(reloads) == len(edit.parts):
        outcome.envoy_s = max(reloads)
    events = log.read()
    wanted = {_TYPES[p] for p in edit.parts}
    if not any(e.event == "response_sent" and e.type_url in wanted for e in events):
        # The server logs a send after its write returns, so Envoy can apply (and this poll see) it first.
        time.sleep(_LOG_GRACE_S)
        events += log.read()
    published = [e.at for e in events if e.event == "source_published"]
    # The first publish after the write is this edit's; log stamps are truncated to whole milliseconds.
    picked = [at for at in published if at >= written_wall - 0.001]
    if picked:
        outcome.pickup_s = picked[0] - written_wall
        sent = [e.at for e in events
                if e.event == "response_sent" and e.type_url in wanted and e.at >= picked[0]]
        if sent:
            outcome.sent_s = max(sent) - written_wall
    return outcome


# --- the run ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    edits: int
    timeout_s: float
    interval_s: float
    seed: int
    workdir: Path | None
    keep: bool


def _start_control_plane(catalog: Path, workdir: Path) -> ControlPlaneProcess:
    xds_port, admin_port = free_ports(2)
    control_plane = ControlPlaneProcess(
        catalog, workdir=workdir, xds_port=xds_port, admin_port=admin_port,
        # Debug level for the per-response `response_sent` lines that time the send; a handful per edit.
        extra_args=("--log-level", "DEBUG", "--log-format", "json"),
    )
    control_plane.start()
    control_plane.wait_ready(_STARTUP_TIMEOUT_S)
    return control_plane


def _start_envoy(control_plane: ControlPlaneProcess, workdir: Path) -> EnvoyProcess:
    # Admin on port 0: Envoy picks a free port and the harness reads it back, so there is no port race.
    bootstrap = bootstrap_for(NODE_ID, NODE_GROUP, xds_port=control_plane.xds_port, admin_port=0)
    envoy = EnvoyProcess(bootstrap, workdir=workdir, admin_port=0, base_id=unique_base_id(),
                         log_level="warning", name="envoy")
    envoy.start(timeout_s=_STARTUP_TIMEOUT_S)
    envoy.wait_live(_STARTUP_TIMEOUT_S)
    return envoy


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: an observed value, never an interpolation between two."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def _summary_row(label: str, values: Sequence[float], out: TextIO) -> None:
    if not values:
        print(f"  {label:<38} no data", file=out)
        return
    print(f"  {label:<38}{_ms(statistics.median(values)):>9}{_ms(_percentile(values, 0.95)):>9}"
          f"{_ms(min(values)):>9}{_ms(max(values)):>9}{len(values):>5}", file=out)


def print_results(outcomes: Sequence[Outcome], *, settings: Settings, options: Options, envoy_version: str,
                  rejected: int, out: TextIO) -> None:
    poll_ms, debounce_ms = settings.file_poll_interval_s * 1e3, settings.debounce_s * 1e3
    print(file=out)
    header = f"{'edit':>4}  {'change':<28}{'observed':>10}{'envoy':>9}{'pickup':>9}{'sent':>9}  status"
    print(header, file=out)
    for o in outcomes:
        status = "ok" if not o.missing else f"TIMEOUT waiting for {', '.join(o.missing)}"
        print(f"{o.edit.number:>4}  {o.edit.describe():<28}{_ms(o.observed_s):>10}{_ms(o.envoy_s):>9}"
              f"{_ms(o.pickup_s):>9}{_ms(o.sent_s):>9}  {status}", file=out)
    print(file=out)
    done = [o for o in outcomes if not o.missing]
    print(f"summary over {len(done)} applied edits of {len(outcomes)} (ms from the write):", file=out)
    print(f"  {'':<38}{'p50':>9}{'p95':>9}{'min':>9}{'max':>9}{'n':>5}", file=out)
    _summary_row("observed by admin poll", [o.observed_s for o in done if o.observed_s is not None], out)
    _summary_row("applied per Envoy reload stat", [o.envoy_s for o in done if o.envoy_s is not None], out)
    _summary_row("  weights only", [o.envoy_s for o in done if o.envoy_s is not None
                                    and not o.edit.endpoints_changed], out)
    _summary_row("  weights + endpoints", [o.envoy_s for o in done if o.envoy_s is not None
                                           and o.edit.endpoints_changed], out)
    _summary_row("control plane pickup (poll+parse)",
                 [o.pickup_s for o in done if o.pickup_s is not None], out)
    _summary_row("pickup -> sent (debounce+build+send)",
                 [o.sent_s - o.pickup_s for o in done
                  if o.sent_s is not None and o.pickup_s is not None], out)
    _summary_row("sent -> Envoy applied", [o.envoy_s - o.sent_s for o in done
                                           if o.envoy_s is not None and o.sent_s is not None], out)
    print(file=out)
    print(f"floor before build/send/apply: file poll wait 0-{poll_ms:.0f} ms "
          f"(uniform, mean {poll_ms / 2:.0f}) "
          f"+ debounce {debounce_ms:.0f} ms = {debounce_ms:.0f}-{poll_ms + debounce_ms:.0f} ms, "
          f"mean {poll_ms / 2 + debounce_ms:.0f} ms; the poll interval is the dominant term", file=out)
    failures = len(outcomes) - len(done)
    print(f"failures (not applied within {options.timeout_s:g} s): {failures}; "
          f"Envoy update_rejected (NACKs) total: {rejected}", file=out)
    print(f"Envoy {envoy_version}", file=out)


def run(options: Options, out: TextIO) -> int:
    settings = Settings()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="xds-convergence-"))
    workdir.mkdir(parents=True, exist_ok=True)
    catalog = workdir / "catalog.yaml"
    edits = plan_edits(options.edits)
    rng = random.Random(options.seed)
    pool = UpstreamPool([*SERVICES, SPARE])
    control_plane: ControlPlaneProcess | None = None
    envoy: EnvoyProcess | None = None
    outcomes: list[Outcome] = []
    ok = False
    try:
        pool.start()
        listener_port = free_port()
        initial = Edit(0, (50, 49, 1), spare=False, endpoints_changed=False)
        write_atomically(catalog, catalog_text(pool, listener_port=listener_port, weights=initial.weights,
                                               spare=False))
        control_plane = _start_control_plane(catalog, workdir)
        envoy = _start_envoy(control_plane, workdir)
        running = envoy
        wait_until(lambda: route_weights(running) == initial.expected_weights(),
                   timeout_s=_STARTUP_TIMEOUT_S, interval_s=0.05, ignore=(OSError, AdminError),
                   message=lambda: f"Envoy never got the initial route; log:\n{running.tail()}")
        envoy_version = str(envoy.server_info().get("version", "?"))
        print(f"convergence: {options.edits} edits of {catalog.name} (temporary file + os.replace), "
              f"each waited for in a real Envoy; admin polled every {options.interval_s * 1e3:g} ms, "
              f"timeout {options.timeout_s:g} s per edit", file=out)
        print(f"control plane defaults (xds.settings): file poll interval "
              f"{settings.file_poll_interval_s:g} s, "
              f"debounce {settings.debounce_s:g} s; random pause before each edit 0-"
              f"{settings.file_poll_interval_s * 1e3:.0f} ms (seed {options.seed}); cores: {os.cpu_count()}",
              file=out)
        log = LogTail(control_plane.process.log_path)
        log.skip_to_end()
        for edit in edits:
            # A random phase against the poll timer, so the poll wait is sampled rather than fixed.
            time.sleep(rng.uniform(0, settings.file_poll_interval_s))
            outcome = run_edit(edit, envoy=envoy, pool=pool, catalog=catalog, listener_port=listener_port,
                               log=log, timeout_s=options.timeout_s, interval_s=options.interval_s)
            outcomes.append(outcome)
            print(f"  edit {edit.number}: {_ms(outcome.observed_s)} ms", file=sys.stderr, flush=True)
        print_results(outcomes, settings=settings, options=options, envoy_version=envoy_version,
                      rejected=envoy.update_rejected_total(), out=out)
        ok = all(not o.missing for o in outcomes)
        return 0 if ok else 1
    finally:
        if envoy is not None:
            envoy.stop()
        if control_plane is not None:
            control_plane.stop()
        pool.stop()
        if ok and not options.keep and options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=out)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.convergence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each edit")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="admin poll period in milliseconds")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random pauses between edits")
    parser.add_argument("--workdir", type=Path, help="where to put the catalog and the logs (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir and its logs")
    args = parser.parse_args(argv)
    if args.edits < 1 or args.timeout <= 0 or args.poll_ms <= 0:
        parser.error("--edits must be >= 1, --timeout and --poll-ms positive")
    return Options(edits=args.edits, timeout_s=args.timeout, interval_s=args.poll_ms / 1e3, seed=args.seed,
                   workdir=args.workdir, keep=args.keep)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    return run(parse_args(argv), out if out is not None else sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
