"""In-process cost of building a snapshot and of serving it to many streams.

    python -m benchmarks.snapshot_build [--services 1000] [--endpoints 10] [--listeners 1] [--runs 5]
                                        [--streams 1000] [--watchers 100] [--groups 4]

Theory of operation
-------------------
A World of N services x M endpoints is built in memory: every service has M endpoints (distinct 10.x.y.z
addresses, port 8080) and one route `/<service>/` on a listener; services are dealt round-robin over
`--listeners` listeners (default one listener holding all N routes, so RDS is one big RouteConfiguration).
The same World is also written as a YAML document, to time the file source's parse.

Each run measures, in this order and on the same data, so per-run ratios compare like with like on a noisy
machine: parse of the YAML document; policy apply; translate; make_snapshot; the whole build_snapshot; the
same build with issue 8's resilience settings on every service and route (featured_service,
featured_route); a rebuild after a one-endpoint change with `previous=`; store.publish to a SnapshotStore
with K watchers of one node group; start-up of S ADS streams through StreamProtocol + encode_response
(cached bytes); encoding the same responses alone; and the naive per-stream path (Any.Pack every message
into a DiscoveryResponse and SerializeToString it). A first run is a discarded warm-up. The garbage
collector stays on, as in the server, but is run before every timed step so one step's garbage is not
charged to the next. Last, the whole path of one endpoint change into a store with `--groups` live node
groups, through the file and through a registry (benchmarks/change_path.py, issue 12).

Wall time (perf_counter) is the headline; process CPU time is printed beside it, since on a shared machine a
wall time well above the CPU time means the benchmark was descheduled.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import ipaddress
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

import yaml
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.internal import api_implementation
from google.protobuf.message import Message

from xds.cache.snapshot import Snapshot, empty_endpoints, make_snapshot
from xds.cache.store import SnapshotStore
from xds.model.service import Catalog, Endpoint, Service, ServiceName
from xds.pipeline import World, build_snapshot
from xds.policy.apply import apply_policy
from xds.policy.desired import (
    CircuitBreakersSpec,
    HealthCheckSpec,
    HttpHealthCheckSpec,
    LbPolicy,
    LoadBalancerSpec,
    LocalitySpec,
    LocalityWeightSpec,
    OutlierDetectionSpec,
    RetryBudgetSpec,
    TcpKeepaliveSpec,
    UpstreamConnectionSpec,
)
from xds.policy.load import parse_document
from xds.policy.schema import (
    BackendRef,
    HashPolicy,
    ListenerPolicy,
    Policy,
    RetryPolicy,
    RoutePolicy,
    ServicePolicy,
)
from xds.server.encode import encode_response
from xds.server.protocol import Request, Send, StreamProtocol
from xds.translate.build import translate
from xds.translate.resource import Translated
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, TypeUrl, short_name

T = TypeVar("T")

GROUP = "bench"
# parse_document stamps endpoints with source="file:<where>"; the in-memory World uses the same, so the parsed
# document and the World compare equal and the parse row times the very World the other rows use.
WHERE = "bench.yaml"
ENDPOINT_PORT = 8080
FIRST_LISTENER_PORT = 10000
_FIRST_HOST = int(ipaddress.IPv4Address("10.0.0.1"))
_MAX_HOSTS = 1 << 24  # the 10.0.0.0/8 block
FEATURED_ROW = "total build, resilience features on"


@dataclass(frozen=True, slots=True)
class Sizes:
    services: int
    endpoints: int
    listeners: int
    runs: int
    streams: int
    watchers: int
    groups: int = 4


# --- the World ------------------------------------------------------------------------------------------


def service_name(index: int) -> str:
    return f"svc-{index:05d}"


def listener_name(index: int) -> str:
    return f"ingress-{index}"


def _host(sizes: Sizes, service: int, endpoint: int) -> str:
    # One spare slot per service, so the endpoint added for the rebuild row collides with no other service.
    return str(ipaddress.IPv4Address(_FIRST_HOST + service * (sizes.endpoints + 1) + endpoint))


def make_catalog(sizes: Sizes, *, extra: int = 0) -> Catalog:
    """N services x M endpoints; `extra` more endpoints on the first service (the one-endpoint change)."""
    services = []
    for i in range(sizes.services):
        count = sizes.endpoints + (extra if i == 0 else 0)
        endpoints = tuple(Endpoint(_host(sizes, i, j), ENDPOINT_PORT, source=f"file:{WHERE}")
                          for j in range(count))
        services.append(Service(ServiceName(service_name(i)), endpoints))
    return Catalog(tuple(services))


def _listener_services(sizes: Sizes, listener: int) -> range:
    return range(listener, sizes.services, sizes.listeners)


def make_policy(sizes: Sizes, *, features: bool = False) -> Policy:
    """Default settings per service; one prefix route per service, services dealt over the listeners.
    With `features`, every service and route carries issue 8's resilience settings (featured_service)."""
    listeners = tuple(
        ListenerPolicy(
            listener_name(k), port=FIRST_LISTENER_PORT + k,
            routes=tuple(featured_route(i) if features else
                         RoutePolicy(service_name(i), f"/{service_name(i)}/",
                                     backends=(BackendRef(service_name(i)),))
                         for i in _listener_services(sizes, k)),
        )
        for k in range(sizes.listeners)
    )
    services = tuple(featured_service(i) if features else ServicePolicy(service_name(i))
                     for i in range(sizes.services))
    return Policy(services, listeners)


def featured_service(index: int) -> ServicePolicy:
    """A service with every per-service setting of issue 8 that changes the Cluster: outlier detection,
    circuit breakers with a retry budget, an HTTP health check on a separate port, ring_hash with its ring
    bounds and a panic threshold, upstream connection settings and locality weights (docs/config.md)."""
    return ServicePolicy(
        service_name(index), LbPolicy.RING_HASH,
        outlier_detection=OutlierDetectionSpec(consecutive_5xx=3, interval_s=1.0, base_ejection_time_s=30.0,
                                               max_ejection_percent=50),
        circuit_breakers=CircuitBreakersSpec(max_connections=100, max_pending_requests=50, max_requests=200,
                                             retry_budget=RetryBudgetSpec(25, 3)),
        health_check=HealthCheckSpec(http=HttpHealthCheckSpec("/healthz", (200,)), interval_s=2.0, port=9901),
        load_balancer=LoadBalancerSpec(minimum_ring_size=1024, maximum_ring_size=8192,
                                       healthy_panic_threshold=25),
        upstream_connection=UpstreamConnectionSpec(idle_timeout_s=300.0, max_requests_per_connection=1000,
                                                   tcp_keepalive=TcpKeepaliveSpec(3, 60.0, 10.0)),
        locality=LocalitySpec(weights=(LocalityWeightSpec(70, zone="a"), LocalityWeightSpec(30, zone="b"))),
    )


def featured_route(index: int) -> RoutePolicy:
    """The route with a retry policy, a timeout and a header hash policy (session affinity)."""
    return RoutePolicy(service_name(index), f"/{service_name(index)}/", timeout_s=5.0,
                       retries=RetryPolicy(num_retries=2, per_try_timeout_s=1.0, backoff_base_s=0.05,
                                           retriable_status_codes=(503,), different_host=True),
                       hash_policy=(HashPolicy(header="x-user"),),
                       backends=(BackendRef(service_name(index)),))


def make_document(sizes: Sizes) -> str:
    """The World as the YAML file format an operator would write (docs/config.md)."""
    document = {
        "version": 1,
        "services": [
            {"name": service_name(i),
             "endpoints": [{"address": f"{_host(sizes, i, j)}:{ENDPOINT_PORT}"}
                           for j in range(sizes.endpoints)]}
            for i in range(sizes.services)
        ],
        "listeners": [
            {"name": listener_name(k), "port": FIRST_LISTENER_PORT + k,
             "routes": [{"name": service_name(i), "match": {"prefix": f"/{service_name(i)}/"},
                         "backends": [{"service": service_name(i)}]}
                        for i in _listener_services(sizes, k)]}
            for k in range(sizes.listeners)
        ],
    }
    # The C dumper only makes the setup faster; the parse being timed is the loader's own (pure Python).
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(document, Dumper=dumper, sort_keys=False)


# --- streams ----------------------------------------------------------------------------------------------


def _exchange(protocol: StreamProtocol, request: Request) -> tuple[list[Send], int]:
    """What the stream glue does per request: apply it, take the sends, encode each one."""
    protocol.on_request(request)
    sends = protocol.next_sends()
    return sends, sum(len(encode_response(send)) for send in sends)


def _only(sends: list[Send], type_url: TypeUrl) -> Send:
    if len(sends) != 1 or sends[0].type_url != type_url:
        got = [short_name(s.type_url) for s in sends]
        raise RuntimeError(f"stream start-up expected one {short_name(type_url)} response, got {got}")
    return sends[0]


def start_stream(snapshot: Snapshot, *, node_id: str) -> tuple[list[Send], int]:
    """One ADS stream through Envoy's start-up order, every response ACKed: CDS (wildcard), EDS for the
    clusters received, LDS (wildcard), RDS for the route configurations the listeners name. Returns the four
    responses and the bytes encoded."""
    protocol = StreamProtocol(ads=True, placeholder=empty_endpoints)
    protocol.set_snapshot(snapshot)
    responses: list[Send] = []
    total = 0

    def ask(type_url: TypeUrl, names: tuple[str, ...], *, first: bool = False) -> tuple[str, ...]:
        nonlocal total
        sends, size = _exchange(protocol, Request(type_url=type_url, resource_names=names,
                                                  node_id=node_id if first else None))
        send = _only(sends, type_url)
        total += size
        ack, size = _exchange(protocol, Request(type_url=type_url, version_info=send.version,
                                                response_nonce=send.nonce, resource_names=names))
        if ack:
            raise RuntimeError(f"an ACK of {short_name(type_url)} at start-up was answered: {len(ack)}")
        total += size
        responses.append(send)
        return tuple(send.resources[i].name for i in range(len(send.resources)))

    clusters = ask(CLUSTER, (), first=True)
    ask(ENDPOINT, clusters)
    ask(LISTENER, ())
    route_names = tuple(sorted({name for r in responses[-1].resources for t, name in r.refs if t == ROUTE}))
    ask(ROUTE, route_names)
    return responses, total


def serve_streams(snapshot: Snapshot, streams: int) -> int:
    total = 0
    for index in range(streams):
        total += start_stream(snapshot, node_id=f"envoy-{index}")[1]
    return total


def encode_streams(sends: Sequence[Send], streams: int) -> int:
    return sum(len(encode_response(send)) for _ in range(streams) for send in sends)


def naive_response(type_url: TypeUrl, messages: Sequence[Message], *, version: str,
                   nonce: str) -> discovery_pb2.DiscoveryResponse:
    response = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
    for message in messages:
        response.resources.add().Pack(message)
    return response


def naive_streams(messages: dict[TypeUrl, list[Message]], versions: dict[TypeUrl, str], streams: int) -> int:
    """A server that keeps live messages and packs and serializes a response per stream and type."""
    total = 0
    for _ in range(streams):
        for nonce, type_url in enumerate(PUSH_ORDER, start=1):
            response = naive_response(type_url, messages[type_url], version=versions[type_url],
                                      nonce=str(nonce))
            total += len(response.SerializeToString())
    return total


def _same_content(cached: Sequence[Send], messages: dict[TypeUrl, list[Message]]) -> bool:
    """The cached responses carry exactly the resources the naive path packs (order aside)."""
    for send in cached:
        parsed = discovery_pb2.DiscoveryResponse.FromString(encode_response(send))
        naive = naive_response(send.type_url, messages[send.type_url], version="", nonce="")
        if (sorted((a.type_url, a.value) for a in parsed.resources)
                != sorted((a.type_url, a.value) for a in naive.resources)):
            return False
    return True


# --- measuring --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Samples:
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)


@dataclass(slots=True)
class Recorder:
    rows: dict[str, Samples] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)

    def time(self, label: str, step: Callable[[], T]) -> T:
        gc.collect()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = step()
        wall1, cpu1 = time.perf_counter(), time.process_time()
        self.add(label, wall1 - wall0, cpu1 - cpu0)
        return result

    def add(self, label: str, wall_s: float, cpu_s: float) -> None:
        samples = self.rows.setdefault(label, Samples())
        samples.wall_s.append(wall_s)
        samples.cpu_s.append(cpu_s)

    def ratio(self, label: str, numerator: str, denominator: str) -> None:
        """numerator / denominator of this run's latest samples: both measured seconds apart."""
        top, bottom = self.rows[numerator].wall_s[-1], self.rows[denominator].wall_s[-1]
        self.ratios.setdefault(label, []).append(top / bottom if bottom > 0 else float("inf"))


def rss_bytes() -> int:
    """Current resident set size (Linux /proc), or 0 where it cannot be read."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # kilobytes on Linux


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> list[str]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return [
        f"python {platform.python_version()}, protobuf {_version('protobuf')} "
        f"(backend {api_implementation.Type()}), grpcio {_version('grpcio')}, "
        f"xds-protos {_version('xds-protos')}",
        f"cores: {os.cpu_count()} ({usable} usable), {_cpu_model()}, "
        f"{platform.system()} {platform.release()}",
    ]


# --- the benchmark ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    sizes: Sizes
    recorder: Recorder
    snapshot: Snapshot
    startup_bytes: int
    reused: dict[TypeUrl, tuple[int, int]]
    publish_notified: int
    document_bytes: int
    document_matches: bool
    content_matches: bool
    rss_held_bytes: int
    peak_rss_delta_bytes: int


def _messages_by_type(items: Iterable[Translated]) -> dict[TypeUrl, list[Message]]:
    messages: dict[TypeUrl, list[Message]] = {t: [] for t in PUSH_ORDER}
    for item in items:
        messages[item.type_url].append(item.message)
    return messages


def _reuse(new: Snapshot, old: Snapshot) -> dict[TypeUrl, tuple[int, int]]:
    """Per type: (resources shared by identity with the previous snapshot, resources)."""
    # Types neither snapshot holds (SDS in a mesh without mTLS) are left out.
    return {t: (sum(1 for name, r in new.of_type(t).items() if old.get(t, name) is r), len(new.of_type(t)))
            for t in PUSH_ORDER if new.of_type(t) or old.of_type(t)}


@dataclass(slots=True)
class _RunResult:
    snapshot: Snapshot
    reused: dict[TypeUrl, tuple[int, int]]
    publish_notified: int
    startup_bytes: int
    content_matches: bool


class _Bench:
    """The fixed inputs of every run: two Worlds one endpoint apart, the YAML document, a watched store."""

    def __init__(self, sizes: Sizes) -> None:
        self.sizes = sizes
        policy = make_policy(sizes)
        self.worlds = (World(make_catalog(sizes), policy), World(make_catalog(sizes, extra=1), policy))
        # The same catalog under the featured policy: the build cost of issue 8's settings.
        self.featured = World(self.worlds[0].catalog, make_policy(sizes, features=True))
        self.document = make_document(sizes)
        parsed_catalog, parsed_policy = parse_document(self.document, where=WHERE)
        self.document_matches = parsed_catalog == self.worlds[0].catalog and parsed_policy == policy
        self.store = SnapshotStore()
        self.notified: list[Snapshot] = []
        for _ in range(sizes.watchers):
            # A stand-in for the stream glue's call_soon_threadsafe: this times the store, not asyncio.
            self.store.watch(GROUP, self.notified.append)
        self.build_seconds: list[float] = []
        # The store starts on the second World and runs alternate, so every timed publish is a real change
        # and notifies all K watchers.
        self.store.publish(self._timed_builder(self.worlds[1]))

    def _timed_builder(self, world: World) -> Callable[[str, Snapshot | None], Snapshot]:
        def build(group: str, previous: Snapshot | None) -> Snapshot:
            started = time.perf_counter()
            snapshot = build_snapshot(world, group, previous)
            self.build_seconds.append(time.perf_counter() - started)
            return snapshot
        return build

    def run_once(self, rec: Recorder, index: int) -> _RunResult:
        sizes, document = self.sizes, self.document
        world, other = self.worlds[index % 2], self.worlds[1 - index % 2]
        rec.time("parse_document (YAML file source)", lambda: parse_document(document, where=WHERE))
        desired = rec.time("policy apply", lambda: apply_policy(world.catalog, world.policy, group=GROUP))
        # Every resource translated: nothing is cached across builds (translate/build.py, issue 7).
        items = rec.time("translate (cold)", lambda: translate(desired))
        snapshot = rec.time("make_snapshot (serialize+hash+check)", lambda: make_snapshot(GROUP, items))
        full = rec.time("total build (build_snapshot)", lambda: build_snapshot(world, GROUP))
        rec.time(FEATURED_ROW, lambda: build_snapshot(self.featured, GROUP))
        rec.ratio("build with resilience features / without", FEATURED_ROW, "total build (build_snapshot)")
        # As in the server: resources whose spec equals the one in previous= are neither translated nor
        # serialized again; only the changed service's are.
        changed = rec.time("rebuild, 1 endpoint changed, previous=",
                           lambda: build_snapshot(other, GROUP, previous=full))
        rec.ratio("rebuild with previous= / full build", "rebuild, 1 endpoint changed, previous=",
                  "total build (build_snapshot)")

        self.notified.clear()
        self.build_seconds.clear()
        publish_label = f"store.publish, {sizes.watchers} watchers"
        rec.time(publish_label, lambda: self.store.publish(self._timed_builder(world)))
        outside = rec.rows[publish_label].wall_s[-1] - sum(self.build_seconds)
        rec.add("  of which outside the build", outside, float("nan"))
        notified = len(self.notified)

        streams_label = f"{sizes.streams} streams: protocol + encode"
        startup_bytes = rec.time(streams_label, lambda: serve_streams(snapshot, sizes.streams))
        sends, _ = start_stream(snapshot, node_id="probe")
        encode_label = f"{sizes.streams} streams: encode_response only"
        rec.time(encode_label, lambda: encode_streams(sends, sizes.streams))
        messages = _messages_by_type(items)
        versions = {t: snapshot.version(t) for t in PUSH_ORDER}
        naive_label = f"{sizes.streams} streams: naive Pack+Serialize"
        rec.time(naive_label, lambda: naive_streams(messages, versions, sizes.streams))
        rec.ratio("naive / (protocol + encode)", naive_label, streams_label)
        rec.ratio("naive / encode_response only", naive_label, encode_label)
        return _RunResult(snapshot=snapshot, reused=_reuse(changed, full), publish_notified=notified,
                          startup_bytes=startup_bytes // sizes.streams,
                          content_matches=_same_content(sends, messages) if index == 0 else True)


def run(sizes: Sizes) -> Report:
    rss_before, peak_before = rss_bytes(), peak_rss_bytes()
    bench = _Bench(sizes)
    warmup = bench.run_once(Recorder(), 0)  # discarded, except for its content check
    recorder = Recorder()
    result = warmup
    for index in range(1, sizes.runs + 1):
        result = bench.run_once(recorder, index)
    # Imported here: change_path builds its World with this module's helpers.
    from benchmarks.change_path import ChangeSizes, measure
    measure(ChangeSizes(sizes.services, sizes.endpoints, sizes.groups, sizes.runs), recorder)
    return Report(
        sizes=sizes, recorder=recorder, snapshot=result.snapshot, startup_bytes=result.startup_bytes,
        reused=result.reused, publish_notified=result.publish_notified,
        document_bytes=len(bench.document.encode()), document_matches=bench.document_matches,
        content_matches=warmup.content_matches,
        rss_held_bytes=rss_bytes() - rss_before, peak_rss_delta_bytes=peak_rss_bytes() - peak_before,
    )


# --- printing ---------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    value = seconds * 1e3
    if value != value:  # NaN: not measured
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _kb(size: int) -> str:
    return f"{size / 1000:.1f} kB"


def _median_text(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def print_report(report: Report, out: TextIO) -> None:
    sizes, rows = report.sizes, report.recorder.rows
    routes = sizes.services // sizes.listeners
    print(f"snapshot_build: {sizes.services} services x {sizes.endpoints} endpoints, "
          f"{sizes.listeners} listener(s) with ~{routes} prefix routes each (one route per service), "
          f"node group {GROUP!r}", file=out)
    print(f"{sizes.runs} runs after 1 warm-up run; median (min-max) in ms; gc on, collected before each step",
          file=out)
    for line in environment():
        print(line, file=out)
    print(file=out)
    width = max(len(label) for label in rows) + 2
    print(f"{'step':<{width}}{'median':>10}{'min':>10}{'max':>10}{'cpu med':>10}", file=out)
    for label, samples in rows.items():
        cpu = [c for c in samples.cpu_s if c == c]
        cpu_text = _ms(statistics.median(cpu)) if cpu else "-"
        print(f"{label:<{width}}{_ms(statistics.median(samples.wall_s)):>10}{_ms(min(samples.wall_s)):>10}"
              f"{_ms(max(samples.wall_s)):>10}{cpu_text:>10}", file=out)
    print(file=out)
    print("ratios, each from the two steps of the same run, median (min-max):", file=out)
    for label, values in report.recorder.ratios.items():
        print(f"  {label}: {_median_text(values)}", file=out)
    print(file=out)

    snapshot = report.snapshot
    print("snapshot size (serialized resources):", file=out)
    for type_url in PUSH_ORDER:
        resources = snapshot.of_type(type_url)
        body = sum(len(r.body) for r in resources.values())
        encoded = sum(len(r.encoded) for r in resources.values())
        print(f"  {short_name(type_url).upper()}: {len(resources)} resources, {body} B "
              f"({_kb(body)}; {_kb(encoded)} as DiscoveryResponse entries)", file=out)
    print(f"  one stream's start-up (4 responses): {report.startup_bytes} B ({_kb(report.startup_bytes)})",
          file=out)
    print(f"  YAML document: {report.document_bytes} B; parses to the same World as built in memory: "
          f"{'yes' if report.document_matches else 'NO'}", file=out)
    print(f"  cached and naive responses carry the same resources: "
          f"{'yes' if report.content_matches else 'NO'}", file=out)
    reuse = ", ".join(f"{short_name(t).upper()} {shared}/{total}"
                      for t, (shared, total) in report.reused.items())
    print(f"rebuild with previous=: resources shared with the previous snapshot: {reuse}", file=out)
    print(f"store.publish notified {report.publish_notified} of {sizes.watchers} watchers per publish",
          file=out)
    print(f"memory: RSS held at the end {_mb(report.rss_held_bytes)} (2 Worlds, snapshots, store); "
          f"peak RSS delta {_mb(report.peak_rss_delta_bytes)}", file=out)


def parse_args(argv: Sequence[str] | None) -> Sizes:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.snapshot_build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints per service")
    parser.add_argument("--listeners", type=int, default=1, help="services are dealt round-robin over these")
    parser.add_argument("--runs", type=int, default=5, help="timed runs, after one warm-up run")
    parser.add_argument("--streams", type=int, default=1000, help="ADS streams to produce responses for")
    parser.add_argument("--watchers", type=int, default=100, help="store watchers of the node group")
    parser.add_argument("--groups", type=int, default=4,
                        help="live node groups rebuilt by the one-endpoint change rows")
    args = parser.parse_args(argv)
    sizes = Sizes(services=args.services, endpoints=args.endpoints, listeners=args.listeners, runs=args.runs,
                  streams=args.streams, watchers=args.watchers, groups=args.groups)
    if min(sizes.services, sizes.endpoints, sizes.listeners, sizes.runs, sizes.streams, sizes.groups) < 1:
        parser.error("--services, --endpoints, --listeners, --runs, --streams and --groups must be at "
                     "least 1")
    if sizes.watchers < 0:
        parser.error("--watchers must be >= 0")
    if sizes.listeners > sizes.services:
        parser.error("--listeners must not exceed --services (every listener needs a route)")
    if sizes.services * (sizes.endpoints + 1) >= _MAX_HOSTS:
        parser.error("too many endpoints for the 10.0.0.0/8 addresses this benchmark uses")
    return sizes


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    sizes = parse_args(argv)
    print_report(run(sizes), out if out is not None else sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
