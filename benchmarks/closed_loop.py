"""The closed loop of issue 10, measured: one open-loop request rate, four ways to balance it.

    python -m benchmarks.closed_loop [--rate-fraction 0.75] [--warmup 10] [--duration 30] [--seed 1]
                                     [--modes round_robin,least_request,client_side_weighted,load_aware]
                                     [--load-args '--load-interval 1'] [--quick] [--workdir DIR] [--keep]

Theory of operation
-------------------
Three upstreams of different capacity run in one child process (harness/capacity_upstream.py): each has a
fixed pool of workers and a service time per request, and queues requests when every worker is busy. Two
take `--service-ms` per request; the third takes twice as long with the same number of workers, so it has
half their capacity. Each reports its real busy fraction (busy workers / workers, smoothed) as utilization,
in ORCA response headers (`endpoint-load-metrics`) for Envoy's client-side weighted round robin and to the
control plane's report API (`xds.load.v1.LoadReporting/Report`) for load-aware weights.

The same request schedule is then driven through one real Envoy and the real control plane once per mode:
  round_robin            the default: every endpoint weight is the same, so each gets a third;
  least_request          Envoy picks the less busy of two random hosts (its in-flight requests);
  client_side_weighted   proxy-side: Envoy weighs each host by rps / utilization from its ORCA headers;
  load_aware             control-plane side: the control plane turns reported utilization into endpoint
                         weights and pushes them over EDS (docs/load-aware.md).
Each mode gets a fresh control plane and a fresh Envoy (no weights or connection pools carried over); the
upstream process stays up, and its queues are drained between modes.

The load is OPEN-LOOP: arrivals follow a fixed schedule (Poisson, seeded, the same for every mode) whatever
the answers do, so a slow upstream cannot slow the arrivals down. Latency is measured from each request's
SCHEDULED send time to its answer, so a late send (the generator lagging) counts against the latency
instead of being omitted. The rate defaults to 75% of the fleet's total capacity: round robin then sends
the slow upstream more than it can serve, while the fleet as a whole has headroom.

Only the last `--duration` seconds are measured; the first `--warmup` seconds (same rate) let the
load-aware modes converge. Per mode the table gives p50/p99/max latency over every request scheduled in the
window (a failed request counts with the time it took to fail), errors (non-2xx answers plus requests that
raised or timed out), and per upstream its share of the window's requests and its mean utilization over the
window, both from its own counters (arrivals; busy worker-seconds / workers / window). Ratios are against
round_robin in the same run. Envoy's host weights at the end of the window show what each mode converged
to, and the control plane's counters how many load reports it took and how often load changed weights.

None of this is a test: it asserts nothing about speed. `tests/e2e/test_closed_loop_bench.py` runs
`--quick` to check that the code works end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harness import AdminError, ControlPlaneProcess, EnvoyProcess, bootstrap_for, free_ports, wait_until
from harness.capacity_upstream import ORCA_HEADER, STATS_PATH, Capacity
from harness.ports import LOOPBACK
from harness.processes import ManagedProcess
from harness.upstream import UPSTREAM_HEADER

SERVICE = "app"
LISTENER = "ingress"
NODE_ID, NODE_GROUP = "bench-envoy", "bench"
MODES = ("round_robin", "least_request", "client_side_weighted", "load_aware")
_STARTUP_TIMEOUT_S = 60.0
_DRAIN_TIMEOUT_S = 60.0
_ADMIN_TIMEOUT_S = 2.0
_WEIGHT_SAMPLE_S = 0.5
_TIMELINE_STEP_S = 3.0
_LOAD_COUNTERS = ("xds_load_reports_total", "xds_load_reports_rejected_total",
                  "xds_load_weight_updates_total")


@dataclass(frozen=True, slots=True)
class Options:
    rate_fraction: float
    warmup_s: float
    duration_s: float
    workers: int
    service_ms: float
    seed: int
    modes: tuple[str, ...]
    timeout_s: float
    report_period_s: float
    tau_s: float
    load_args: tuple[str, ...]
    workdir: Path | None
    keep: bool

    def capacities(self, ports: Sequence[int]) -> list[Capacity]:
        service_s = self.service_ms / 1e3
        names_and_times = (("fast-1", service_s), ("fast-2", service_s), ("slow", 2 * service_s))
        return [Capacity(name, port, self.workers, t)
                for (name, t), port in zip(names_and_times, ports, strict=True)]


# The control plane runs with its default weight function (docs/load-aware.md): the benchmark measures
# what an operator gets without tuning.
QUICK = dict(rate_fraction=0.3, warmup_s=1.0, duration_s=2.0, timeout_s=5.0)


def service_settings(mode: str) -> dict[str, Any]:
    """The catalog keys that select `mode` for the service (docs/config.md, docs/load-aware.md)."""
    if mode == "round_robin":
        return {}
    if mode == "least_request":
        return {"lb_policy": "least_request"}
    if mode == "client_side_weighted":
        # Envoy's default blackout (10 s) would hold the weights back for most of a short warm-up; the
        # benchmark's upstreams report from their first answer, so a 1 s blackout is enough.
        return {"lb_policy": "client_side_weighted",
                "load_balancer": {"blackout_period": "1s", "weight_update_period": "1s"}}
    if mode == "load_aware":
        return {"load_balancer": {"weights": "load_aware"}}
    raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")


def catalog_text(mode: str, capacities: Sequence[Capacity], listener_port: int) -> str:
    document = {
        "version": 1,
        "services": [{"name": SERVICE, "connect_timeout": "1s", **service_settings(mode),
                      "endpoints": [{"address": f"{LOOPBACK}:{c.port}"} for c in capacities]}],
        "listeners": [{"name": LISTENER, "address": LOOPBACK, "port": listener_port,
                       "routes": [{"name": "all", "match": {"prefix": "/"},
                                   "backends": [{"service": SERVICE, "weight": 100}]}]}],
    }
    return yaml.safe_dump(document, sort_keys=False)


def arrival_schedule(rate: float, total_s: float, seed: int) -> list[float]:
    """Poisson arrival offsets in seconds, from a seeded generator: the same list for every mode."""
    rng = random.Random(seed)
    times: list[float] = []
    t = rng.expovariate(rate)
    while t < total_s:
        times.append(t)
        t += rng.expovariate(rate)
    return times


# --- the load -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    scheduled_s: float  # offset in the schedule
    latency_s: float  # from the scheduled send time to the answer (or the failure)
    lag_s: float  # how late the request was actually sent
    status: int | None
    upstream: str | None


async def _one(session: aiohttp.ClientSession, url: str, offset: float, at: float,
               loop: asyncio.AbstractEventLoop) -> Answer:
    lag = loop.time() - at
    try:
        async with session.get(url) as response:
            await response.read()
            upstream = response.headers.get(UPSTREAM_HEADER)
            return Answer(offset, loop.time() - at, lag, response.status, upstream)
    except (aiohttp.ClientError, TimeoutError):
        return Answer(offset, loop.time() - at, lag, None, None)


async def drive(url: str, schedule: Sequence[float], *, timeout_s: float,
                window: tuple[float, float], snapshot: Any) -> tuple[list[Answer], Any, Any]:
    """Send one GET per scheduled offset, each at its time whatever the others are doing; `snapshot()` is
    awaited at both ends of the measured `window` (offsets), so the upstreams' counters cover exactly it."""
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=2000, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = loop.time() + 0.05
        tasks: list[asyncio.Task[Answer]] = []
        first: Any = None
        for offset in schedule:
            if first is None and offset >= window[0]:
                first = await snapshot()
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(session, url, offset, start + offset, loop)))
        if first is None:
            first = await snapshot()
        await asyncio.sleep(max(0.0, start + window[1] - loop.time()))
        last = await snapshot()
        return list(await asyncio.gather(*tasks)), first, last


# --- the upstreams' own counters ------------------------------------------------------------------------


def read_stats(capacities: Sequence[Capacity]) -> dict[str, dict[str, Any]]:
    import http.client

    result = {}
    for c in capacities:
        conn = http.client.HTTPConnection(LOOPBACK, c.port, timeout=_ADMIN_TIMEOUT_S)
        try:
            conn.request("GET", STATS_PATH)
            result[c.name] = json.loads(conn.getresponse().read())
        finally:
            conn.close()
    return result


async def read_stats_async(capacities: Sequence[Capacity]) -> dict[str, dict[str, Any]]:
    return await asyncio.to_thread(read_stats, capacities)


# --- one mode -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ModeResult:
    mode: str
    answers: list[Answer]
    utilization: dict[str, float]
    weights: dict[str, int]
    max_lag_s: float
    arrivals: dict[str, int] = field(default_factory=dict)
    settled_s: float | None = None  # when the slow upstream's relative weight reached its final value
    relative: list[tuple[float, float]] = field(default_factory=list)  # (t, slow weight / fast weight)
    statuses: dict[str, int] = field(default_factory=dict)
    # The control plane's own counters at the end of the mode (docs/load-aware.md, metrics).
    control_plane: dict[str, float] = field(default_factory=dict)

    @property
    def latencies(self) -> list[float]:
        return sorted(a.latency_s for a in self.answers)

    @property
    def errors(self) -> int:
        return sum(1 for a in self.answers if a.status is None or not 200 <= a.status < 300)

    def share(self, name: str) -> float:
        """The fraction of the window's requests that reached `name`, by the upstreams' own counters (so a
        request that timed out in a queue counts where it was sent)."""
        total = sum(self.arrivals.values())
        return self.arrivals.get(name, 0) / total if total else 0.0

    @property
    def lag_p99_s(self) -> float:
        lags = sorted(a.lag_s for a in self.answers)
        return lags[max(0, math.ceil(0.99 * len(lags)) - 1)] if lags else math.nan

    def percentile(self, q: float) -> float:
        values = self.latencies
        return values[max(0, math.ceil(q * len(values)) - 1)] if values else math.nan


class Run:
    """The processes of one benchmark run; `close()` stops all of them."""

    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        ports = free_ports(8)
        self.capacities = options.capacities(ports[:3])
        self.listener_port = ports[3]
        self.xds_port, self.admin_port, self.management_port, self.report_port = ports[4:8]
        self.catalog = workdir / "catalog.yaml"
        self.upstreams: ManagedProcess | None = None
        self.control_plane: ControlPlaneProcess | None = None
        self.envoy: EnvoyProcess | None = None

    @property
    def report_target(self) -> str:
        """Where the control plane serves the report API (`--load-report-address`, docs/load-aware.md)."""
        return f"{LOOPBACK}:{self.report_port}"

    def start_upstreams(self) -> None:
        args = [sys.executable, "-m", "harness.capacity_upstream",
                *(arg for c in self.capacities for arg in ("--upstream", c.argument())),
                "--tau", str(self.options.tau_s), "--report-period", str(self.options.report_period_s),
                "--report-to", self.report_target]
        self.upstreams = ManagedProcess("upstreams", args, log_dir=self.workdir,
                                        env={"PYTHONUNBUFFERED": "1"})
        self.upstreams.start()
        running = self.upstreams

        def up() -> bool:
            running.check_alive()
            read_stats(self.capacities)
            return True

        wait_until(up, timeout_s=_STARTUP_TIMEOUT_S, ignore=(OSError,),
                   message=lambda: f"capacity upstreams never answered; log:\n{running.tail()}")

    def start_mode(self, mode: str) -> None:
        self.catalog.write_text(catalog_text(mode, self.capacities, self.listener_port))
        self.control_plane = ControlPlaneProcess(
            self.catalog, workdir=self.workdir, xds_port=self.xds_port, admin_port=self.admin_port,
            management_port=self.management_port, load_report_port=self.report_port,
            name=f"control-plane-{mode}",
            extra_args=("--log-level", "INFO", *(self.options.load_args if mode == "load_aware" else ())))
        self.control_plane.start()
        self.control_plane.wait_ready(_STARTUP_TIMEOUT_S)
        bootstrap = bootstrap_for(NODE_ID, NODE_GROUP, xds_port=self.xds_port, admin_port=0)
        self.envoy = EnvoyProcess(bootstrap, workdir=self.workdir, admin_port=0,
                                  base_id=(os.getpid() % 100_000) * 100 + MODES.index(mode),
                                  log_level="warning", name=f"envoy-{mode}")
        self.envoy.start(timeout_s=_STARTUP_TIMEOUT_S)
        self.envoy.wait_live(_STARTUP_TIMEOUT_S)
        envoy, count = self.envoy, len(self.capacities)
        wait_until(lambda: len(envoy.cluster_hosts(SERVICE)) == count and
                   envoy.listener_port(LISTENER) == self.listener_port,
                   timeout_s=_STARTUP_TIMEOUT_S, ignore=(KeyError, OSError, AdminError),
                   message=lambda: f"Envoy never got cluster {SERVICE} and listener {LISTENER} for {mode}; "
                                   f"log:\n{envoy.tail()}")

    def host_weights(self) -> dict[str, int]:
        if self.envoy is None:
            return {}
        by_port = {c.port: c.name for c in self.capacities}
        return {by_port.get(h.port, str(h.port)): h.weight for h in self.envoy.cluster_hosts(SERVICE)}

    def load_counters(self) -> dict[str, float]:
        """Reports the control plane took and refused, and its weight updates for the service (each one
        EDS push caused by load), summed over labels, from its /metrics."""
        if self.control_plane is None:
            return {}
        totals = dict.fromkeys(_LOAD_COUNTERS, 0.0)
        for family in text_string_to_metric_families(self.control_plane.metrics_text()):
            for sample in family.samples:
                if sample.name in totals:
                    totals[sample.name] += sample.value
                if sample.name == _LOAD_COUNTERS[1]:
                    reason = f"refused: {sample.labels.get('reason', '?')}"
                    totals[reason] = totals.get(reason, 0.0) + sample.value
        return totals

    def stop_mode(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
            self.envoy = None
        if self.control_plane is not None:
            self.control_plane.stop()
            self.control_plane = None

    def drain(self) -> None:
        """Wait until no upstream holds a request (the queue of an overloaded one empties at its rate)."""
        wait_until(lambda: all(s["in_system"] == 0 for s in read_stats(self.capacities).values()),
                   timeout_s=_DRAIN_TIMEOUT_S, interval_s=0.2, ignore=(OSError,),
                   message="upstream queues never drained")

    def close(self) -> None:
        self.stop_mode()
        if self.upstreams is not None:
            self.upstreams.stop()


def run_mode(run: Run, mode: str, schedule: Sequence[float], out: TextIO) -> ModeResult:
    options = run.options
    print(f"  {mode}: starting", file=sys.stderr, flush=True)
    run.start_mode(mode)
    try:
        run.drain()
        url = f"http://{LOOPBACK}:{run.listener_port}/"
        window = (options.warmup_s, options.warmup_s + options.duration_s)
        with WeightSampler(run) as sampler:
            answers, before, after = asyncio.run(drive(url, schedule, timeout_s=options.timeout_s,
                                                       window=window,
                                                       snapshot=lambda: read_stats_async(run.capacities)))
        weights = run.host_weights()
        counters = run.load_counters()
    finally:
        run.stop_mode()
    measured = [a for a in answers if a.scheduled_s >= options.warmup_s]
    utilization, arrivals = {}, {}
    names = [c.name for c in run.capacities]
    for c in run.capacities:
        b, a = before[c.name], after[c.name]
        elapsed = a["now"] - b["now"]
        busy = a["busy_seconds"] - b["busy_seconds"]
        arrivals[c.name] = int(a["arrived"] - b["arrived"])
        utilization[c.name] = busy / (c.workers * elapsed) if elapsed > 0 else 0.0
    statuses = Counter("raised" if a.status is None else str(a.status) for a in measured)
    result = ModeResult(mode, measured, utilization, weights,
                        max_lag_s=max((a.lag_s for a in answers), default=0.0), statuses=dict(statuses),
                        control_plane=counters, arrivals=arrivals,
                        settled_s=settle_time(sampler.samples, names),
                        relative=relative_weights(sampler.samples, names))
    print(f"  {mode}: {len(measured)} requests in the {options.duration_s:g} s window, "
          f"p99 {result.percentile(0.99) * 1e3:.1f} ms, errors {result.errors}", file=sys.stderr, flush=True)
    return result


class WeightSampler:
    """Envoy's host weights every `_WEIGHT_SAMPLE_S` from a thread while the load runs, for `settle_time`."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="weight-sampler", daemon=True)

    def _loop(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            with contextlib.suppress(OSError, AdminError, KeyError, ValueError):
                self.samples.append((time.monotonic() - start, self._run.host_weights()))
            self._stop.wait(_WEIGHT_SAMPLE_S)

    def __enter__(self) -> WeightSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def relative_weights(samples: Sequence[tuple[float, dict[str, int]]], names: Sequence[str]
                     ) -> list[tuple[float, float]]:
    """(time, the last upstream's weight over the mean weight of the others) for each sample."""
    series = []
    for t, weights in samples:
        others = [weights.get(n, 0) for n in names[:-1]]
        mean = sum(others) / len(others) if others else 0
        if mean:
            series.append((t, weights.get(names[-1], 0) / mean))
    return series


def settle_time(samples: Sequence[tuple[float, dict[str, int]]], names: Sequence[str]) -> float | None:
    """The first sample time from which the last upstream's weight relative to the mean of the others
    stays within 10% of its final value; None without samples."""
    series = relative_weights(samples, names)
    if not series:
        return None
    final = series[-1][1]
    settled = series[-1][0]
    for t, r in reversed(series):
        if abs(r - final) > 0.1 * final:
            break
        settled = t
    return settled


# --- the table ------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1e3:.1f}"


def _ratio(value: float, base: float) -> str:
    return "-" if not base or math.isnan(base) or math.isnan(value) else f"{value / base:.2f}x"


def print_table(results: Sequence[ModeResult], capacities: Sequence[Capacity], out: TextIO) -> None:
    names = [c.name for c in capacities]
    slash = "/".join(names)
    print(file=out)
    print(f"{'mode':<22}{'requests':>9}{'p50 ms':>9}{'p99 ms':>10}{'max ms':>10}{'errors':>8}"
          f"  {'share % ' + slash:<28}{'utilization % ' + slash:<34}{'Envoy weights'}", file=out)
    for r in results:
        share = "/".join(f"{r.share(n) * 100:.0f}" for n in names)
        util = "/".join(f"{r.utilization.get(n, 0) * 100:.0f}" for n in names)
        weights = "/".join(str(r.weights.get(n, "?")) for n in names)
        print(f"{r.mode:<22}{len(r.answers):>9}{_ms(r.percentile(0.5)):>9}{_ms(r.percentile(0.99)):>10}"
              f"{_ms(r.percentile(1.0)):>10}{r.errors:>8}  {share:<28}{util:<34}{weights}", file=out)
    base = next((r for r in results if r.mode == "round_robin"), None)
    if base is not None:
        print(file=out)
        print("ratios vs round_robin (lower is better):", file=out)
        for r in results:
            if r is base:
                continue
            print(f"  {r.mode:<22} p50 {_ratio(r.percentile(0.5), base.percentile(0.5)):>7}   "
                  f"p99 {_ratio(r.percentile(0.99), base.percentile(0.99)):>7}   "
                  f"errors {r.errors} vs {base.errors}", file=out)
    print(file=out)
    for r in results:
        if any(k != "200" for k in r.statuses):
            print(f"{r.mode}: answers by status {dict(sorted(r.statuses.items()))}", file=out)
    for r in results:
        c = r.control_plane
        reasons = ", ".join(f"{k.split(': ', 1)[1]} {v:.0f}" for k, v in sorted(c.items())
                            if k.startswith("refused: ") and v)
        print(f"{r.mode}: control plane took {c.get(_LOAD_COUNTERS[0], 0):.0f} load reports, refused "
              f"{c.get(_LOAD_COUNTERS[1], 0):.0f}{f' ({reasons})' if reasons else ''}, changed weights "
              f"{c.get(_LOAD_COUNTERS[2], 0):.0f} times", file=out)
    print("Envoy's weight of the slow upstream settled (within 10% of its end value, relative to the others) "
          "after: " + ", ".join(f"{r.mode} {'-' if r.settled_s is None else f'{r.settled_s:.1f} s'}"
                                for r in results), file=out)
    for r in results:
        if len({round(v, 3) for _, v in r.relative}) > 1:
            marks, shown = [], -math.inf
            for t, v in r.relative:
                if t - shown >= _TIMELINE_STEP_S:
                    marks.append(f"{t:.0f}s {v:.2f}")
                    shown = t
            print(f"{r.mode}: slow's weight / fast's weight over time: {', '.join(marks)}", file=out)
    print("load generator, sends after their scheduled time (counted in latency): " + ", ".join(
        f"{r.mode} p99 {r.lag_p99_s * 1e3:.1f} ms max {r.max_lag_s * 1e3:.1f} ms" for r in results), file=out)


def run(options: Options, out: TextIO) -> int:
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="xds-closed-loop-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Run(options, workdir)
    capacity = sum(c.max_rps for c in bench.capacities)
    rate = options.rate_fraction * capacity
    schedule = arrival_schedule(rate, options.warmup_s + options.duration_s, options.seed)
    results: list[ModeResult] = []
    ok = False
    try:
        bench.start_upstreams()
        print("closed_loop: " + ", ".join(
            f"{c.name} {c.workers} workers x {c.service_s * 1e3:g} ms = {c.max_rps:g} rps"
            for c in bench.capacities), file=out)
        print(f"open-loop Poisson arrivals at {rate:.0f} rps = {options.rate_fraction:.0%} of the fleet's "
              f"{capacity:g} rps (seed {options.seed}); {options.warmup_s:g} s warm-up + "
              f"{options.duration_s:g} s measured per mode; client timeout {options.timeout_s:g} s", file=out)
        print(f"utilization smoothed with tau {options.tau_s:g} s; reported to the control plane every "
              f"{options.report_period_s:g} s and in every answer's {ORCA_HEADER} header", file=out)
        print(f"cores: {os.cpu_count()}, load average at start {os.getloadavg()[0]:.2f}", file=out)
        for mode in options.modes:
            results.append(run_mode(bench, mode, schedule, out))
        print_table(results, bench.capacities, out)
        ok = True
        return 0
    finally:
        bench.close()
        if ok and not options.keep and options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=out)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.closed_loop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate-fraction", type=float, default=0.75,
                        help="request rate as a fraction of the fleet's total capacity")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds per mode before measuring")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per mode")
    parser.add_argument("--workers", type=int, default=4, help="workers per upstream")
    parser.add_argument("--service-ms", type=float, default=20.0,
                        help="service time of the fast upstreams; the slow one takes twice as long")
    parser.add_argument("--seed", type=int, default=1, help="seed of the arrival schedule")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, in order")
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout per request, seconds")
    parser.add_argument("--report-period", type=float, default=0.5,
                        help="seconds between the upstreams' reports to the control plane")
    parser.add_argument("--tau", type=float, default=1.0, help="the upstreams' smoothing time constant, s")
    parser.add_argument("--load-args", default="",
                        help="extra `xds serve` flags in load_aware mode, e.g. '--load-interval 1' "
                             "(default: none, the weight function's defaults)")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds per mode at a light rate: checks the code, measures nothing")
    parser.add_argument("--workdir", type=Path, help="where to put the catalog and the logs (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir and its logs")
    args = parser.parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        parser.error(f"--modes: unknown {unknown}; known: {', '.join(MODES)}")
    values: dict[str, Any] = dict(rate_fraction=args.rate_fraction, warmup_s=args.warmup,
                                  duration_s=args.duration, timeout_s=args.timeout)
    if args.quick:
        values.update(QUICK)
    if not 0 < values["rate_fraction"] <= 2 or values["duration_s"] <= 0 or values["warmup_s"] < 0:
        parser.error("--rate-fraction must be in (0, 2], --duration positive, --warmup >= 0")
    return Options(workers=args.workers, service_ms=args.service_ms, seed=args.seed, modes=modes,
                   report_period_s=args.report_period, tau_s=args.tau,
                   load_args=tuple(shlex.split(args.load_args)), workdir=args.workdir, keep=args.keep,
                   **values)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    return run(parse_args(argv), out if out is not None else sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
