"""HTTP upstreams with a fixed capacity that report their real load (issue 10's closed-loop benchmark).

Capacity is modelled as a worker pool, honestly enough for a load balancer to tell the difference: each
upstream has `workers` slots (an asyncio semaphore) and holds one slot for `service_s` per request. A request
that finds every slot busy waits in the queue. So an upstream serves at most `workers / service_s` requests a
second, and above that its queue, and with it the latency, grows without bound.

The load each one reports is its real busy fraction: busy slots / workers, integrated over time and smoothed
with an exponentially weighted moving average (time constant `tau_s`), the way an agent would smooth a CPU
gauge. It is reported

* in every response, as an ORCA header `endpoint-load-metrics: TEXT cpu_utilization=U,mem_utilization=M,
  rps_fractional=R` (the format Envoy parses for `client_side_weighted_round_robin`; Envoy weighs a host by
  rps_fractional / utilization and ignores a report without a positive rps_fractional, so both are sent);
* through an optional `reporter`, called every `report_period_s` with (address, cpu, memory): the benchmark
  passes one that calls the control plane's report API (docs/load-aware.md).

Memory is not modelled: every upstream reports the same constant `memory_utilization`, so only CPU can tell
them apart.

`GET /_capacity/stats` answers (not counted as traffic, no ORCA header) with JSON counters from which a
benchmark computes exact averages over any window: busy worker-seconds, arrivals, completions, the queue.

Run as a process (`python -m harness.capacity_upstream --upstream NAME:PORT:WORKERS:SERVICE_MS ...`) so that a
load generator in another process shares no interpreter lock with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from harness.ports import LOOPBACK
from harness.upstream import UPSTREAM_HEADER

ORCA_HEADER = "endpoint-load-metrics"
STATS_PATH = "/_capacity/stats"
# How often the meters fold the busy integral into the smoothed values; well under tau_s.
_TICK_S = 0.1

# (address "host:port" as the catalog has it, cpu utilization, memory utilization)
Reporter = Callable[[str, float, float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Capacity:
    """One upstream's worker pool: `workers` slots, each held `service_s` per request."""

    name: str
    port: int
    workers: int
    service_s: float

    def __post_init__(self) -> None:
        if self.workers < 1 or not self.service_s > 0:
            raise ValueError(f"upstream {self.name}: workers must be >= 1 and service time > 0")

    @property
    def max_rps(self) -> float:
        return self.workers / self.service_s

    @classmethod
    def parse(cls, text: str) -> Capacity:
        """`NAME:PORT:WORKERS:SERVICE_MS`, the command-line form."""
        parts = text.split(":")
        if len(parts) != 4:
            raise ValueError(f"--upstream {text!r}: expected NAME:PORT:WORKERS:SERVICE_MS")
        name, port, workers, service_ms = parts
        return cls(name, int(port), int(workers), float(service_ms) / 1e3)

    def argument(self) -> str:
        return f"{self.name}:{self.port}:{self.workers}:{self.service_s * 1e3:g}"


class BusyMeter:
    """Busy workers integrated over time, plus smoothed busy fraction and completion rate.

    Pure bookkeeping: every method takes the current monotonic time, so it is tested without a clock.
    """

    def __init__(self, workers: int, *, tau_s: float, now: float) -> None:
        self.workers = workers
        self.tau_s = tau_s
        self.busy = 0
        self.busy_seconds = 0.0  # integral of `busy` over time, in worker-seconds
        self.completed = 0
        self.utilization = 0.0  # smoothed busy fraction in [0, 1]
        self.rps = 0.0  # smoothed completions per second
        self._last_change = now
        self._last_tick = now
        self._busy_at_tick = 0.0
        self._completed_at_tick = 0

    def _advance(self, now: float) -> None:
        self.busy_seconds += self.busy * max(0.0, now - self._last_change)
        self._last_change = now

    def acquire(self, now: float) -> None:
        self._advance(now)
        self.busy += 1

    def release(self, now: float) -> None:
        self._advance(now)
        self.busy -= 1
        self.completed += 1

    def integral(self, now: float) -> float:
        self._advance(now)
        return self.busy_seconds

    def tick(self, now: float) -> None:
        """Fold the time since the last tick into the moving averages (continuous-time EWMA)."""
        dt = now - self._last_tick
        if dt <= 0:
            return
        busy = self.integral(now)
        fraction = (busy - self._busy_at_tick) / (self.workers * dt)
        rate = (self.completed - self._completed_at_tick) / dt
        alpha = 1.0 - math.exp(-dt / self.tau_s)
        self.utilization += alpha * (min(1.0, max(0.0, fraction)) - self.utilization)
        self.rps += alpha * (rate - self.rps)
        self._last_tick, self._busy_at_tick, self._completed_at_tick = now, busy, self.completed


def orca_header(cpu: float, memory: float, rps: float) -> str:
    """The `endpoint-load-metrics` value in Envoy's native text form."""
    return f"TEXT cpu_utilization={cpu:.4f},mem_utilization={memory:.4f},rps_fractional={rps:.3f}"


class CapacityUpstream:
    """One capacity-limited upstream on the caller's event loop."""

    def __init__(self, capacity: Capacity, *, tau_s: float = 1.0, memory_utilization: float = 0.2,
                 reporter: Reporter | None = None, report_period_s: float = 0.5) -> None:
        self.capacity = capacity
        self.memory_utilization = memory_utilization
        self._tau_s = tau_s
        self._reporter = reporter
        self._report_period_s = report_period_s
        self.reports_sent = 0
        self.report_errors = 0
        self.arrived = 0
        self.max_queue = 0
        self._meter: BusyMeter | None = None
        self._slots: asyncio.Semaphore | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.capacity.port}"

    @property
    def meter(self) -> BusyMeter:
        if self._meter is None:
            raise RuntimeError(f"upstream {self.capacity.name} is not started")
        return self._meter

    async def start(self) -> None:
        self._meter = BusyMeter(self.capacity.workers, tau_s=self._tau_s, now=time.monotonic())
        self._slots = asyncio.Semaphore(self.capacity.workers)
        app = web.Application()
        app.router.add_get(STATS_PATH, self._handle_stats)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation off (aiohttp's default): a request whose client gave up still holds its slot
        # until served, as a real server keeps working on abandoned requests.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LOOPBACK, self.capacity.port))
            await web.SockSite(self._runner, sock, backlog=1024).start()
        except BaseException:
            sock.close()
            raise
        self._tasks.append(asyncio.create_task(self._tick_loop()))
        if self._reporter is not None:
            self._tasks.append(asyncio.create_task(self._report_loop(self._reporter)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stats(self) -> dict[str, float | int | str]:
        meter = self.meter
        now = time.monotonic()
        return {
            "name": self.capacity.name, "workers": self.capacity.workers,
            "service_s": self.capacity.service_s, "now": now, "busy_seconds": meter.integral(now),
            "arrived": self.arrived, "completed": meter.completed, "busy": meter.busy,
            "in_system": self.arrived - meter.completed, "max_queue": self.max_queue,
            "utilization": meter.utilization, "rps": meter.rps,
            "reports_sent": self.reports_sent, "report_errors": self.report_errors,
        }

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self.stats()), content_type="application/json")

    async def _handle(self, request: web.Request) -> web.Response:
        meter, slots = self.meter, self._slots
        assert slots is not None
        self.arrived += 1
        self.max_queue = max(self.max_queue, self.arrived - meter.completed - meter.busy)
        async with slots:
            meter.acquire(time.monotonic())
            try:
                await asyncio.sleep(self.capacity.service_s)
            finally:
                meter.release(time.monotonic())
        headers = {UPSTREAM_HEADER: self.capacity.name,
                   ORCA_HEADER: orca_header(meter.utilization, self.memory_utilization, meter.rps)}
        return web.Response(text=self.capacity.name, headers=headers)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(_TICK_S)
            self.meter.tick(time.monotonic())

    async def _report_loop(self, reporter: Reporter) -> None:
        while True:
            await asyncio.sleep(self._report_period_s)
            try:
                await reporter(self.address, self.meter.utilization, self.memory_utilization)
                self.reports_sent += 1
            except Exception as e:  # the control plane may be restarting: count it and try next period
                self.report_errors += 1
                if self.report_errors <= 3:
                    print(f"{self.capacity.name}: report to control plane failed: {e}", file=sys.stderr)


def grpc_reporter(target: str) -> Reporter:
    """A reporter that calls the control plane's `xds.load.v1.LoadReporting/Report` at `target`."""
    import grpc

    from xds.load.v1 import load_pb2, load_pb2_grpc

    channel = grpc.aio.insecure_channel(target)
    stub = load_pb2_grpc.LoadReportingStub(channel)

    async def report(address: str, cpu: float, memory: float) -> None:
        await stub.Report(load_pb2.LoadReport(address=address, cpu_utilization=cpu,
                                              memory_utilization=memory), timeout=1.0)

    return report


async def _serve(capacities: Sequence[Capacity], args: argparse.Namespace) -> None:
    reporter = grpc_reporter(args.report_to) if args.report_to else None
    upstreams = [CapacityUpstream(c, tau_s=args.tau, memory_utilization=args.memory,
                                  reporter=reporter, report_period_s=args.report_period)
                 for c in capacities]
    for upstream in upstreams:
        await upstream.start()
    print("serving " + " ".join(u.address for u in upstreams), flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    await stopped.wait()
    for upstream in upstreams:
        await upstream.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.capacity_upstream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", action="append", required=True, type=Capacity.parse,
                        help="NAME:PORT:WORKERS:SERVICE_MS, repeated")
    parser.add_argument("--tau", type=float, default=1.0, help="smoothing time constant, seconds")
    parser.add_argument("--memory", type=float, default=0.2, help="constant memory utilization reported")
    parser.add_argument("--report-to", default="", help="HOST:PORT of the control plane's report API")
    parser.add_argument("--report-period", type=float, default=0.5, help="seconds between reports")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.upstream, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
