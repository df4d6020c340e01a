"""The demo itself: starts every process, runs the phases, always stops everything, prints the summary."""

from __future__ import annotations

import functools
import http.client
import math
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from harness import (
    LOOPBACK,
    AdminError,
    ControlPlaneProcess,
    EnvoyProcess,
    UpstreamPool,
    free_ports,
)
from harness.demo.catalog import Edge, render_catalog, weights_label, write_atomic
from harness.demo.constants import (
    API_SHARE,
    BASELINE,
    CANARY_STEPS,
    CATALOG_NAME,
    CONVERGE_POLL_S,
    CONVERGENCE_TIMEOUT_S,
    DEFAULT_PHASE_S,
    DEFAULT_RATE,
    FRAME_S,
    MAX_RUN_S,
    SEGMENT_S,
    STARTUP_TIMEOUT_S,
    STOP_SIGNALS,
    TICK_S,
    UPSTREAMS,
    Weights,
)
from harness.demo.controlplane import ControlPlaneView, start_control_plane
from harness.demo.envoys import AppliedRoute, applied_route, new_envoy, wait_serving
from harness.demo.ledger import Ledger, Phase, is_2xx
from harness.demo.screen import EnvoyStatus, Frame, Screen
from harness.demo.summary import build_summary, format_summary
from harness.demo.traffic import EnvoyTraffic


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
        previous = {sig: signal.signal(sig, _raise_stop) for sig in STOP_SIGNALS}
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
        control_plane = start_control_plane(self.catalog, workdir=self.workdir,
                                            on_start=self._own_control_plane)
        names = " and ".join(e.envoy for e in self.edges)
        self.screen.message(f"demo: starting {names}; waiting until both are LIVE and serving")
        for edge in self.edges:
            # Owned before it starts: an interrupt during the start still stops it.
            envoy = self.envoys[edge.envoy] = new_envoy(edge, xds_port=control_plane.xds_port,
                                                        workdir=self.workdir)
            envoy.start(timeout_s=STARTUP_TIMEOUT_S)
        for edge in self.edges:
            self.envoys[edge.envoy].wait_live(STARTUP_TIMEOUT_S)
            wait_serving(self.envoys[edge.envoy], edge)
        self.view = ControlPlaneView(control_plane.management_address)
        self._print_addresses(ports)
        self.ledger.begin("baseline", BASELINE, at=time.monotonic(), edited=False)
        for edge in self.edges:
            traffic = EnvoyTraffic(edge, rate_per_s=self.options.rate_per_s, phase_s=self.options.phase_s)
            self.traffic[edge.envoy] = traffic
            traffic.start()
        self.outcome = "running"

    def _own_control_plane(self, control_plane: ControlPlaneProcess) -> None:
        self.control_plane = control_plane

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
        say(f"demo: load {self.options.rate_per_s:g} req/s per Envoy ({100 - API_SHARE * 100:g}% to /, "
            f"{API_SHARE * 100:g}% to /api); web v1/v2 weights {steps}, "
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
        run_deadline = time.monotonic() + MAX_RUN_S
        next_poll = next_frame = 0.0
        for _ in range(math.ceil(MAX_RUN_S / CONVERGE_POLL_S)):
            now = time.monotonic()
            if now >= run_deadline:
                self.screen.message(f"demo: ran for {MAX_RUN_S / 3600:g} h, stopping")
                self.outcome = "ran for the maximum time"
                return
            if self._transition is not None or now >= next_poll:
                self._poll(control_plane=now >= next_poll)
                if now >= next_poll:
                    next_poll = now + FRAME_S
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
                next_frame = now + FRAME_S
            time.sleep(CONVERGE_POLL_S if self._transition is not None else TICK_S)
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
        elif now - phase.started_at > CONVERGENCE_TIMEOUT_S:
            missing = ", ".join(sorted(transition.pending))
            message = (f"phase {phase.name}: {missing} did not apply the edit "
                       f"within {CONVERGENCE_TIMEOUT_S:g} s")
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
            if traffic.segment_age_s >= SEGMENT_S:
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
            web = Counter(s.upstream or "?" for _, kind, s in window if kind == "web" and is_2xx(s))
            web_total = sum(1 for _, kind, _s in window if kind == "web")
            api = [s for _, kind, s in window if kind == "api"]
            non_2xx, errors = self.ledger.failed_requests(edge.envoy)
            non_2xx += sum(1 for _, _, s in current if s.status is not None and not is_2xx(s))
            errors += sum(1 for _, _, s in current if s.status is None)
            statuses.append(EnvoyStatus(
                edge=edge, admin_url=f"http://{LOOPBACK}:{self.envoys[edge.envoy].admin_port}/",
                applied=self._applied.get(edge.envoy), served_version=self._served.get(edge.group),
                target=self.target, web=web, web_total=web_total,
                api_ok=sum(1 for s in api if is_2xx(s)), api_total=len(api), non_2xx=non_2xx, errors=errors))
        cp = self.control_plane
        assert cp is not None
        footer = (f"catalog  {self.catalog}   (logs beside it)",
                  f"control plane  http://{LOOPBACK}:{cp.admin_port}/metrics  /status",
                  "Envoy admin    " + "  ".join(f"{s.edge.envoy} {s.admin_url}" for s in statuses))
        return Frame(elapsed_s=now - self._t0, phase_line=self._phase_line(), status_line=self._status,
                     envoys=tuple(statuses), footer=footer, events=self.screen.events)

    # -- the summary -------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        pids = {name: pid for name, envoy in self.envoys.items() if (pid := _pid(envoy)) is not None}
        if self.control_plane is not None and self.control_plane.process.pid is not None:
            pids["control-plane"] = self.control_plane.process.pid
        return build_summary(self.ledger, outcome=self.outcome, failures=self.failures, pids=pids,
                             workdir=self.workdir)

    def _print_summary(self) -> None:
        self.screen.message(format_summary(self.summary()))


def _pid(envoy: EnvoyProcess) -> int | None:
    try:
        return envoy.process.pid
    except RuntimeError:  # never started
        return None


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
