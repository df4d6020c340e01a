"""In-process cost of many streams' protocol state: start-up, one change fanned out, memory per idle stream.

    python -m benchmarks.stream_state [--services 1000] [--endpoints 10] [--streams 1000] [--runs 3]

Theory of operation
-------------------
The World of benchmarks/snapshot_build.py (N services x M endpoints, one listener with a route per service)
is built twice, one endpoint apart, as two snapshots of one node group (the second with `previous=`, as the
server builds it). S streams of each protocol variant (SotW `StreamProtocol`, delta `DeltaProtocol`, both
ADS) are driven the way the stream glue drives them (xds/server/stream.py), with every request decoded
from its wire bytes, so names arrive as fresh strings as they do from a real client:

* start-up: CDS (wildcard) -> EDS for every cluster received -> LDS (wildcard) -> RDS for the route
  configurations named, each response encoded and ACKed; CPU per stream;
* one endpoint change: every stream gets the new snapshot, its responses are encoded and ACKed; CPU per
  stream (issue 12: this should cost work proportional to what changed, one ClusterLoadAssignment);
* one cluster change: the first service's connect timeout moves, so one Cluster changes and, by R21
  (docs/protocol.md), its ClusterLoadAssignment is due again; CPU per stream (issue 12: O(changed) too,
  although the wildcard CDS response carries every cluster, its body is encoded once for all streams);
* memory: tracemalloc bytes held per idle, synced stream (issue 12 target: < 100 KiB).

The change alternates between the two snapshots, so every timed fan-out is a real change.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TextIO

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from benchmarks.snapshot_build import Sizes as BuildSizes
from benchmarks.snapshot_build import environment, make_catalog, make_policy
from xds.cache.snapshot import Snapshot, empty_endpoints
from xds.pipeline import World, build_snapshot
from xds.policy.schema import Policy
from xds.server.delta import DeltaProtocol
from xds.server.delta_wire import encode_delta_response, to_delta_request
from xds.server.encode import encode_response
from xds.server.protocol import StreamProtocol
from xds.server.protocol_core import ProtocolCore, Send
from xds.server.variants import to_request
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE, TypeUrl, short_name

GROUP = "bench"
VARIANTS = ("sotw", "delta")


@dataclass(frozen=True, slots=True)
class Sizes:
    services: int
    endpoints: int
    streams: int
    runs: int


class _Client:
    """One simulated Envoy on one ADS stream: builds wire requests, feeds them, ACKs every response."""

    def __init__(self, variant: str, index: int) -> None:
        self.variant = variant
        self.node_id = f"envoy-{index}"
        self.machine: ProtocolCore
        if variant == "sotw":
            self.machine = StreamProtocol(ads=True, placeholder=empty_endpoints)
        else:
            self.machine = DeltaProtocol(ads=True, placeholder=empty_endpoints)
        self.names: dict[TypeUrl, tuple[str, ...]] = {}
        self.encoded = 0

    def _feed(self, type_url: TypeUrl, *, nonce: str = "", version: str = "", names: tuple[str, ...] = (),
              first: bool = False) -> None:
        node = base_pb2.Node(id=self.node_id) if first else None
        if isinstance(self.machine, StreamProtocol):
            sotw = discovery_pb2.DiscoveryRequest(type_url=type_url, response_nonce=nonce,
                                                  version_info=version, resource_names=names, node=node)
            self.machine.on_request(to_request(discovery_pb2.DiscoveryRequest.FromString(
                sotw.SerializeToString())))
        else:
            assert isinstance(self.machine, DeltaProtocol)
            delta = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=nonce,
                                                        resource_names_subscribe=names, node=node)
            self.machine.on_request(to_delta_request(discovery_pb2.DeltaDiscoveryRequest.FromString(
                delta.SerializeToString())))

    def _encode(self, send: Send) -> None:
        encode = encode_response if self.variant == "sotw" else encode_delta_response
        self.encoded += len(encode(send))

    def _answer(self, sends: list[Send]) -> None:
        """Encode and ACK `sends` and whatever the ACKs make due, until the stream is quiet."""
        while sends:
            later: list[Send] = []
            for send in sends:
                self._encode(send)
                # SotW restates the subscription with each ACK; delta ACKs carry no names.
                names = self.names.get(send.type_url, ()) if self.variant == "sotw" else ()
                self._feed(send.type_url, nonce=send.nonce, version=send.version, names=names)
                later.extend(self.machine.next_sends())
            sends = later

    def ask(self, type_url: TypeUrl, names: tuple[str, ...], *, first: bool = False) -> Send:
        self.names[type_url] = names
        self._feed(type_url, names=names, first=first)
        sends = self.machine.next_sends()
        if len(sends) != 1 or sends[0].type_url != type_url:
            got = [short_name(s.type_url) for s in sends]
            raise RuntimeError(f"start-up expected one {short_name(type_url)} response, got {got}")
        self._answer(sends)
        return sends[0]

    def start(self, snapshot: Snapshot) -> None:
        self.machine.set_snapshot(snapshot)
        clusters = self.ask(CLUSTER, (), first=True)
        self.ask(ENDPOINT, tuple(r.name for r in clusters.resources))
        listeners = self.ask(LISTENER, ())
        self.ask(ROUTE, tuple(sorted({n for r in listeners.resources for t, n in r.refs if t == ROUTE})))

    def change(self, snapshot: Snapshot) -> int:
        self.machine.set_snapshot(snapshot)
        sends = self.machine.next_sends()
        self._answer(sends)
        return sum(len(s.resources) for s in sends)


@dataclass(slots=True)
class Row:
    label: str
    cpu_per_stream_ms: list[float]


@dataclass(slots=True)
class Report:
    sizes: Sizes
    rows: list[Row]
    bytes_per_stream: dict[str, int]
    resources_per_change: dict[str, int]


def _cpu(step: Callable[[], object]) -> float:
    gc.collect()
    started = time.process_time()
    step()
    return time.process_time() - started


def _snapshots(sizes: Sizes) -> tuple[Snapshot, Snapshot, Snapshot]:
    """The World, the World one endpoint apart, and the World with one cluster changed (built from the
    first, as the server builds a change)."""
    build = BuildSizes(services=sizes.services, endpoints=sizes.endpoints, listeners=1, runs=1,
                       streams=sizes.streams, watchers=0)
    policy = make_policy(build)
    catalog = make_catalog(build)
    first = build_snapshot(World(catalog, policy), GROUP)
    second = build_snapshot(World(make_catalog(build, extra=1), policy), GROUP, previous=first)
    third = build_snapshot(World(catalog, _one_cluster_changed(policy)), GROUP, previous=first)
    return first, second, third


def _one_cluster_changed(policy: Policy) -> Policy:
    first = policy.services[0]
    changed = replace(first, connect_timeout_s=first.connect_timeout_s + 1.0)
    return replace(policy, services=(changed, *policy.services[1:]))


def _bytes_per_idle_stream(variant: str, snapshot: Snapshot, streams: int) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        clients = [_Client(variant, i) for i in range(streams)]
        for client in clients:
            client.start(snapshot)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del clients
    return held // streams


def _start_all(clients: list[_Client], snapshot: Snapshot) -> None:
    for client in clients:
        client.start(snapshot)


def _change_all(clients: list[_Client], snapshot: Snapshot, counts: list[int]) -> None:
    counts.extend(client.change(snapshot) for client in clients)


def run(sizes: Sizes) -> Report:
    snapshots = _snapshots(sizes)
    rows: list[Row] = []
    per_change: dict[str, int] = {}
    for variant in VARIANTS:
        start_row = Row(f"{variant}: start-up CDS->EDS->LDS->RDS with ACKs", [])
        change_row = Row(f"{variant}: one endpoint change + ACKs", [])
        cluster_row = Row(f"{variant}: one cluster change + ACKs", [])
        rows.extend((start_row, change_row, cluster_row))
        counts: list[int] = []
        cluster_counts: list[int] = []
        for _ in range(sizes.runs):
            clients = [_Client(variant, i) for i in range(sizes.streams)]
            start_row.cpu_per_stream_ms.append(
                _cpu(lambda c=clients: _start_all(c, snapshots[0])) * 1e3 / sizes.streams)
            for target in (snapshots[1], snapshots[0]):  # there and back: two real changes
                change_row.cpu_per_stream_ms.append(
                    _cpu(lambda c=clients, t=target, n=counts: _change_all(c, t, n)) * 1e3 / sizes.streams)
            for target in (snapshots[2], snapshots[0]):
                cluster_row.cpu_per_stream_ms.append(
                    _cpu(lambda c=clients, t=target, n=cluster_counts: _change_all(c, t, n))
                    * 1e3 / sizes.streams)
            del clients
        per_change[variant] = max(counts)
        per_change[f"{variant} (cluster change)"] = max(cluster_counts)
    memory = {variant: _bytes_per_idle_stream(variant, snapshots[0], sizes.streams) for variant in VARIANTS}
    return Report(sizes=sizes, rows=rows, bytes_per_stream=memory, resources_per_change=per_change)


def print_report(report: Report, out: TextIO) -> None:
    sizes = report.sizes
    print(f"stream_state: {sizes.services} services x {sizes.endpoints} endpoints, "
          f"{sizes.streams} ADS streams per variant, {sizes.runs} runs; "
          "process CPU per stream in ms, median (min-max)", file=out)
    for line in environment():
        print(line, file=out)
    print(file=out)
    width = max(len(row.label) for row in report.rows) + 2
    print(f"{'step':<{width}}{'median':>10}{'min':>10}{'max':>10}", file=out)
    for row in report.rows:
        values = row.cpu_per_stream_ms
        print(f"{row.label:<{width}}{statistics.median(values):>10.3f}{min(values):>10.3f}{max(values):>10.3f}",
              file=out)
    print(file=out)
    for variant, count in report.resources_per_change.items():
        print(f"{variant}: resources sent per stream per change: {count}", file=out)
    for variant, held in report.bytes_per_stream.items():
        print(f"{variant}: tracemalloc bytes per idle synced stream: {held} ({held / 1024:.1f} KiB)",
              file=out)


def parse_args(argv: Sequence[str] | None) -> Sizes:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream_state", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints per service")
    parser.add_argument("--streams", type=int, default=1000, help="ADS streams per variant")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = Sizes(services=args.services, endpoints=args.endpoints, streams=args.streams, runs=args.runs)
    if min(sizes.services, sizes.endpoints, sizes.streams, sizes.runs) < 1:
        parser.error("--services, --endpoints, --streams and --runs must be at least 1")
    return sizes


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    sizes = parse_args(argv)
    print_report(run(sizes), out if out is not None else sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
