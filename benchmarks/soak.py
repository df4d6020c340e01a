"""Soak: the control plane's memory under registry-like churn, with ADS clients connected and ACKing.

    python -m benchmarks.soak [--duration 600] [--services 1000] [--endpoints 10] [--rate 10] [--clients 3]
                              [--sample 5] [--warmup SECONDS] [--max-slope 0.5] [--seed 1]

Theory of operation
-------------------
The control plane runs as a child process (`python -m benchmarks.soak --serve ...`): the real App, with its
pipeline, SnapshotStore, snapshot builds in a worker thread and grpc.aio ADS server, fed by one in-process
registry-like source. Like the Consul and Kubernetes sources, that source publishes the full catalog after
every change, reusing the Service objects it did not change. It makes `--rate` changes a second, chosen
at random (seeded): half flip one endpoint's health between healthy and unhealthy, half give one endpoint
a new weight (1-100). The policy is one listener with one route per service (as in snapshot_build).

This process connects `--clients` ADS streams to it, in one node group. Each subscribes like Envoy does
(CDS wildcard, EDS for the clusters received, LDS wildcard, RDS for the listener's route configuration)
and ACKs every response. Every `--sample` seconds it reads the child's resident set size (VmRSS from
/proc/PID/status), and prints it with the changes made and the responses received so far.

At the end it fits a least-squares line to RSS against time over the samples taken after `--warmup`
(default: a fifth of the run, at most 120 s; start-up, the first builds and the allocator's arenas settle
in that time), and prints the slope in MiB per minute. The verdict is "flat" when the slope is below
`--max-slope` and "growing" otherwise. The exit status is 0 for flat, 1 for growing, and 2 when the run
itself failed (the child died or a client stopped receiving updates).

Only the child is measured, so the clients' own memory does not count. Every loop is bounded by
`--duration`, and the child stops itself a little after it even if this process dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from benchmarks.snapshot_build import Sizes, make_policy, service_name
from xds.app import App
from xds.load_settings import LoadSettings
from xds.model.service import Catalog, Endpoint, Health, Service, ServiceName
from xds.settings import Settings
from xds.sources.base import SourceSink, SourceUpdate
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

SOURCE = "soak"
NODE_GROUP = "soak"
ENDPOINT_PORT = 8080
# The route configuration the policy's single listener names (it is named after the listener).
ROUTE_CONFIG = "ingress-0"
# The child stops this long after --duration even if nobody stops it.
CHILD_MARGIN_S = 30.0
# How long the child may take to import, start and print its port.
CHILD_START_S = 60.0
# A client that has received nothing for this long while changes are being made has stopped following.
STALL_S = 20.0


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float
    services: int
    endpoints: int
    rate: float
    clients: int
    sample_s: float
    warmup_s: float
    max_slope: float
    seed: int


# --- the child: the control plane and its registry-like source --------------------------------------------


class ChurnSource:
    """A registry stand-in publishing the full catalog after each random health flip or weight change."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.name = SOURCE
        self.changes = 0
        self._random = random.Random(options.seed)
        self._policy = make_policy(Sizes(options.services, options.endpoints, 1, 1, 1, 1))
        # Per service, per endpoint: (weight, healthy). Hosts never change, as with a stable fleet.
        self._state = [[(1, True)] * options.endpoints for _ in range(options.services)]
        self._services = [self._service(i) for i in range(options.services)]

    def _service(self, index: int) -> Service:
        return Service(ServiceName(service_name(index)), tuple(
            Endpoint(f"10.{index // 250}.{index % 250}.{j + 1}", ENDPOINT_PORT, weight=weight,
                     health=Health.HEALTHY if healthy else Health.UNHEALTHY, source=SOURCE)
            for j, (weight, healthy) in enumerate(self._state[index])))

    def change(self) -> None:
        service = self._random.randrange(self.options.services)
        endpoint = self._random.randrange(self.options.endpoints)
        weight, healthy = self._state[service][endpoint]
        if self._random.random() < 0.5:
            healthy = not healthy
        else:
            weight = self._random.randint(1, 100)
        self._state[service][endpoint] = (weight, healthy)
        self._services[service] = self._service(service)
        self.changes += 1

    def update(self) -> SourceUpdate:
        return SourceUpdate(self.name, Catalog(tuple(self._services)), self._policy)

    async def run(self, sink: SourceSink) -> None:
        sink.publish(self.update())
        started = time.monotonic()
        deadline = started + self.options.duration_s + CHILD_MARGIN_S
        while (now := time.monotonic()) < deadline:
            # Paced against the start rather than the last change, so slow builds do not lower the rate.
            await asyncio.sleep(max(0.0, started + (self.changes + 1) / self.options.rate - now))
            self.change()
            sink.publish(self.update())


async def serve(options: Options, out: TextIO) -> None:
    """The control plane until --duration plus a margin: its port, then the changes made, every second."""
    source = ChurnSource(options)
    app = App(Settings(xds_address="127.0.0.1:0", admin_address="127.0.0.1:0",
                       management_address="127.0.0.1:0", load=LoadSettings(report_address="127.0.0.1:0")),
              sources=[source])
    task = asyncio.create_task(app.run())
    deadline = time.monotonic() + options.duration_s + CHILD_MARGIN_S
    try:
        await asyncio.wait_for(app.started.wait(), CHILD_START_S)
        print(json.dumps({"xds_port": app.xds_port}), file=out, flush=True)
        while not task.done() and time.monotonic() < deadline:
            await asyncio.wait([task], timeout=1.0)
            print(json.dumps({"changes": source.changes}), file=out, flush=True)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- the parent: clients and measurement -------------------------------------------------------------------


@dataclass
class Client:
    """One SotW ADS stream that subscribes as Envoy does and ACKs everything."""

    node_id: str
    received: dict[str, int] = field(default_factory=dict)
    last_at: float = field(default_factory=time.monotonic)
    _outbox: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = field(default_factory=asyncio.Queue)
    _clusters: list[str] = field(default_factory=list)
    _routes_subscribed: bool = False

    def _send(self, type_url: str, names: Sequence[str] = (), response: discovery_pb2.DiscoveryResponse
              | None = None, *, first: bool = False) -> None:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names))
        if response is not None:
            request.version_info, request.response_nonce = response.version_info, response.nonce
        if first:
            request.node.CopyFrom(base_pb2.Node(id=self.node_id, cluster=NODE_GROUP))
        self._outbox.put_nowait(request)

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (request := await self._outbox.get()) is not None:
            yield request

    async def run(self, channel: grpc.aio.Channel) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        call = stub.StreamAggregatedResources(self._requests())
        self._send(CLUSTER, first=True)
        self._send(LISTENER)
        try:
            async for response in call:
                self.received[response.type_url] = self.received.get(response.type_url, 0) + 1
                self.last_at = time.monotonic()
                self._on_response(response)
        finally:
            self._outbox.put_nowait(None)

    def _on_response(self, response: discovery_pb2.DiscoveryResponse) -> None:
        if response.type_url == CLUSTER:
            names = []
            for packed in response.resources:
                cluster = cluster_pb2.Cluster()
                packed.Unpack(cluster)
                names.append(cluster.name)
            self._send(CLUSTER, (), response)
            if names != self._clusters:
                self._clusters = names
                self._send(ENDPOINT, names)
        elif response.type_url == ENDPOINT:
            self._send(ENDPOINT, self._clusters, response)
        elif response.type_url == LISTENER:
            self._send(LISTENER, (), response)
            if not self._routes_subscribed:
                self._routes_subscribed = True
                self._send(ROUTE, [ROUTE_CONFIG])
        elif response.type_url == ROUTE:
            self._send(ROUTE, [ROUTE_CONFIG], response)


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float
    rss_mib: float
    changes: int
    responses: int


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def slope_mib_per_min(samples: Sequence[Sample]) -> float:
    """Least-squares slope of RSS against time, in MiB per minute."""
    return statistics.linear_regression([s.t_s for s in samples], [s.rss_mib for s in samples]).slope * 60


def _child_argv(options: Options) -> list[str]:
    return [sys.executable, "-m", "benchmarks.soak", "--serve", "--duration", str(options.duration_s),
            "--services", str(options.services), "--endpoints", str(options.endpoints),
            "--rate", str(options.rate), "--seed", str(options.seed)]


async def _read_lines(stream: asyncio.StreamReader, state: dict[str, int]) -> None:
    while line := await stream.readline():
        with contextlib.suppress(ValueError):
            state.update(json.loads(line))


async def soak(options: Options, out: TextIO) -> int:
    child = await asyncio.create_subprocess_exec(*_child_argv(options), stdout=subprocess.PIPE)
    assert child.stdout is not None
    state: dict[str, int] = {}
    reader = asyncio.create_task(_read_lines(child.stdout, state))
    clients = [Client(f"soak-{k}") for k in range(options.clients)]
    tasks: list[asyncio.Task[None]] = []
    try:
        started = time.monotonic()
        while "xds_port" not in state:
            if child.returncode is not None or time.monotonic() - started > CHILD_START_S:
                print("soak: the control plane did not start", file=out)
                return 2
            await asyncio.sleep(0.05)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{state['xds_port']}") as channel:
            tasks = [asyncio.create_task(c.run(channel)) for c in clients]
            return await _measure(options, out, child.pid, state, clients, tasks)
    finally:
        for task in tasks:
            task.cancel()
        if child.returncode is None:
            child.terminate()
            try:
                await asyncio.wait_for(child.wait(), 10)
            except TimeoutError:
                child.kill()
                await child.wait()
        reader.cancel()


async def _measure(options: Options, out: TextIO, pid: int, state: dict[str, int], clients: list[Client],
                   tasks: list[asyncio.Task[None]]) -> int:
    print(f"soak: {options.services} services x {options.endpoints} endpoints, {options.rate:g} changes/s "
          f"(health flips and weight changes), {options.clients} ADS client(s) ACKing, "
          f"{options.duration_s:g} s, RSS sampled every {options.sample_s:g} s, "
          f"warm-up {options.warmup_s:g} s", file=out)
    print(f"{'t (s)':>8} {'RSS (MiB)':>10} {'changes':>8} {'responses':>10}", file=out, flush=True)
    samples: list[Sample] = []
    started = time.monotonic()
    for index in range(int(options.duration_s / options.sample_s) + 1):
        await asyncio.sleep(max(0.0, started + index * options.sample_s - time.monotonic()))
        failed = [t for t in tasks if t.done()]
        if failed:
            error = failed[0].exception() if not failed[0].cancelled() else None
            print(f"soak: a client's stream ended: {error!r}", file=out)
            return 2
        try:
            rss = rss_mib(pid)
        except (OSError, RuntimeError) as exc:
            print(f"soak: the control plane is gone: {exc}", file=out)
            return 2
        now = time.monotonic()
        stalled = [c.node_id for c in clients if now - c.last_at > STALL_S]
        if stalled:
            print(f"soak: clients stopped receiving updates: {stalled}", file=out)
            return 2
        sample = Sample(now - started, rss, state.get("changes", 0),
                        sum(sum(c.received.get(t, 0) for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE))
                            for c in clients))
        samples.append(sample)
        print(f"{sample.t_s:8.1f} {sample.rss_mib:10.1f} {sample.changes:8d} {sample.responses:10d}",
              file=out, flush=True)
    return _verdict(options, samples, clients, out)


def _verdict(options: Options, samples: list[Sample], clients: list[Client], out: TextIO) -> int:
    settled = [s for s in samples if s.t_s >= options.warmup_s]
    print(f"changes made: {samples[-1].changes} ({samples[-1].changes / samples[-1].t_s:.1f}/s); EDS "
          f"responses per client: {', '.join(str(c.received.get(ENDPOINT, 0)) for c in clients)}", file=out)
    if len(settled) < 3:
        print("verdict: too few samples after the warm-up for a slope", file=out)
        return 2
    slope = slope_mib_per_min(settled)
    print(f"RSS after warm-up: {settled[0].rss_mib:.1f} -> {settled[-1].rss_mib:.1f} MiB over "
          f"{settled[-1].t_s - settled[0].t_s:.0f} s (min {min(s.rss_mib for s in settled):.1f}, "
          f"max {max(s.rss_mib for s in settled):.1f})", file=out)
    print(f"slope after warm-up: {slope:+.3f} MiB/min (linear fit over {len(settled)} samples)", file=out)
    flat = slope < options.max_slope
    print(f"verdict: {'flat' if flat else 'growing'} (threshold {options.max_slope:g} MiB/min)", file=out)
    return 0 if flat else 1


# --- command line -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of churn (default 600)")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10, help="per service")
    parser.add_argument("--rate", type=float, default=10.0, help="changes per second (default 10)")
    parser.add_argument("--clients", type=int, default=3, help="ADS streams (default 3)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds excluded from the fit (default: a fifth of --duration, at most 120)")
    parser.add_argument("--max-slope", type=float, default=0.5,
                        help="MiB/min below which RSS counts as flat (default 0.5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child's role
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.sample <= 0 or args.services < 1 or args.endpoints < 1:
        parser.error("--duration, --rate, --sample, --services and --endpoints must be positive")
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    warmup = args.warmup if args.warmup is not None else min(120.0, args.duration / 5)
    return Options(duration_s=args.duration, services=args.services, endpoints=args.endpoints,
                   rate=args.rate, clients=args.clients, sample_s=args.sample, warmup_s=warmup,
                   max_slope=args.max_slope, seed=args.seed), args.serve


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    options, child = parse_args(argv)
    stream = out if out is not None else sys.stdout
    if child:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        asyncio.run(serve(options, stream))
        return 0
    return asyncio.run(soak(options, stream))


if __name__ == "__main__":
    raise SystemExit(main())
