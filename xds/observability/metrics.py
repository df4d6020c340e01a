"""Metrics: Prometheus series for streams, pushes, ACK/NACK, snapshot builds and sources.

Names follow the peers' (Istio's pilot_xds_*, Envoy Gateway's) so dashboards built for them map one to one.
Stream events arrive through the Callbacks hook (xds/server/callbacks.py), snapshot builds through
`SnapshotStore(on_build=...)`, and source health from the watchers. Every instance owns a private
CollectorRegistry: the global one would make a second instance (every test, or two servers in one process)
fail with duplicated series.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from xds.cache.store import BuildReport, GroupCounts
from xds.server.callbacks import StreamInfo
from xds.server.management_auth import DENY_REASONS
from xds.typeurls import PUSH_ORDER, short_name

# Config size buckets after Istio's pilot_xds_config_size_bytes, in binary units: 4 MiB is gRPC's default
# maximum message size, so the buckets either side of it show how close pushes are to being refused.
CONVERGENCE_SECONDS_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 3, 5, 10, 20, 30)
RESPONSE_BYTES_BUCKETS = (1024.0, 10 * 1024.0, 100 * 1024.0, 1024.0**2, 4 * 1024.0**2, 10 * 1024.0**2,
                          40 * 1024.0**2)
# A build is pure CPU over the catalog: milliseconds for small meshes, seconds at 10k clusters
# (benchmarks/README.md).
BUILD_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SOTW_METHODS = ("ads", "cds", "eds", "lds", "rds", "sds")
# Delta streams (issue 11) count under the same names with a "-delta" suffix (server/grpc_server.py).
_METHODS: tuple[str, ...] = _SOTW_METHODS + tuple(f"{m}-delta" for m in _SOTW_METHODS)
# The `limit` label values of xds_limit_exceeded_total: StreamLimits fields, plus the decode and group cap.
LIMIT_NAMES = ("request_decode", "max_field_bytes", "max_resource_names", "max_name_bytes",
               "max_node_id_bytes", "max_node_cluster_bytes", "max_node_locality_bytes",
               "max_node_metadata_bytes",
               "max_node_metadata_depth", "max_placeholders", "request_rate_per_s",
               "max_pending_request_bytes", "max_streams",
               "node_groups",
               # Issue 12: connect-storm admission (server/admission.py) and the write timeout.
               "stream_starts_per_s", "max_initial_syncs", "write_timeout_s")


class Metrics:
    """Callbacks plus build and source reports, rendered in the Prometheus text format.

    `clock` returns Unix time; it stamps source syncs and is injectable for tests.
    """

    # generate_latest writes the classic 0.0.4 text format; every Prometheus version accepts it.
    CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._streams = Gauge("xds_connected_streams", "Open xDS streams.", ["method"], registry=r)
        self._pushes = Counter("xds_pushes_total", "DiscoveryResponses sent.", ["type"], registry=r)
        self._response_bytes = Histogram("xds_response_bytes", "Size of each DiscoveryResponse sent.",
                                         ["type"], buckets=RESPONSE_BYTES_BUCKETS, registry=r)
        self._acks = Counter("xds_acks_total", "Responses the client accepted.", ["type"], registry=r)
        # Istio's pilot_proxy_convergence_time, measured from the stream's side.
        self._convergence = Histogram(
            "xds_convergence_seconds",
            "From a stream having new content (a snapshot, or the request for it) to the client's ACK.",
            ["type"], buckets=CONVERGENCE_SECONDS_BUCKETS, registry=r)
        self._nacks = Counter("xds_nacks_total", "Responses the client rejected.", ["type"], registry=r)
        self._build_seconds = Histogram("xds_snapshot_build_seconds", "Time to build one group's snapshot.",
                                        buckets=BUILD_SECONDS_BUCKETS, registry=r)
        self._build_errors = Counter("xds_snapshot_build_errors_total",
                                     "Snapshot builds that failed; the last good snapshot kept serving.",
                                     registry=r)
        self._source_sync = Gauge("xds_source_last_sync_timestamp_seconds",
                                  "Unix time of the source's last successful sync.", ["source"], registry=r)
        self._source_errors = Counter("xds_source_errors_total", "Failed syncs of the source.", ["source"],
                                      registry=r)
        self._source_stale = Gauge("xds_source_stale",
                                   "1 while the source's last sync failed: its previous state is served.",
                                   ["source"], registry=r)
        self._groups = Gauge("xds_node_groups",
                             "Node groups held: live (a proxy is connected) or idle (kept for the grace).",
                             ["state"], registry=r)
        self._limits = Counter("xds_limit_exceeded_total",
                               "Clients refused or slowed down by a limit (docs/operations.md, Limits).",
                               ["limit"], registry=r)
        # Series exist at 0 from the start, so rate() and absent-series alerts work before the first event.
        for limit in LIMIT_NAMES:
            self._limits.labels(limit)
        # Management API calls refused by the bearer-token check (issue 9, docs/security.md).
        self._management_denied = Counter(
            "xds_management_denied_total", "Management API calls refused: no token, a wrong token, or a "
            "token whose role does not allow the method.", ["reason"], registry=r)
        for reason in DENY_REASONS:
            self._management_denied.labels(reason)
        # Calls to methods the server does not serve (issue 11 item 3; server/unimplemented.py bounds the
        # label to known xDS methods and "other").
        self._unimplemented = Counter("xds_unimplemented_calls_total",
                                      "Calls to gRPC methods this server does not serve (answered "
                                      "UNIMPLEMENTED).",
                                      ["method"], registry=r)
        for method in _METHODS:
            self._streams.labels(method)
        for type_url in PUSH_ORDER:
            name = short_name(type_url)
            for counter in (self._pushes, self._acks, self._nacks):
                counter.labels(name)
            self._response_bytes.labels(name)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # Callbacks

    def on_stream_open(self, stream: StreamInfo) -> None:
        self._streams.labels(stream.method).inc()

    def on_stream_closed(self, stream: StreamInfo) -> None:
        self._streams.labels(stream.method).dec()

    def on_response_sent(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
                         resource_names: Sequence[str], size_bytes: int) -> None:
        name = short_name(type_url)
        self._pushes.labels(name).inc()
        self._response_bytes.labels(name).observe(size_bytes)

    def on_ack(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
               convergence_s: float | None = None) -> None:
        name = short_name(type_url)
        self._acks.labels(name).inc()
        if convergence_s is not None:
            self._convergence.labels(name).observe(convergence_s)

    def on_nack(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
                rejected_version: str, message: str) -> None:
        self._nacks.labels(short_name(type_url)).inc()

    # Limits and node groups

    def limit_exceeded(self, limit: str) -> None:
        """A client was refused or slowed down by `limit` (a name from LIMIT_NAMES)."""
        self._limits.labels(limit).inc()

    def management_denied(self, reason: str) -> None:
        """A management API call was refused; `reason` is one of DENY_REASONS (never the token)."""
        self._management_denied.labels(reason).inc()

    def unimplemented_call(self, method: str) -> None:
        self._unimplemented.labels(method).inc()

    def watch_groups(self, counts: Callable[[], GroupCounts]) -> None:
        """Read the node-group gauges from `counts` at every scrape."""
        self._groups.labels("live").set_function(lambda: counts().live)
        self._groups.labels("idle").set_function(lambda: counts().idle)

    # Snapshot builds and sources

    def on_build(self, report: BuildReport) -> None:
        """Pass as `SnapshotStore(on_build=metrics.on_build)`."""
        self._build_seconds.observe(report.seconds)
        if not report.ok:
            self._build_errors.inc()

    def source_synced(self, source: str) -> None:
        """`source` published its full state successfully."""
        self._source_sync.labels(source).set(self._clock())
        self._source_stale.labels(source).set(0)
        self._source_errors.labels(source)  # so the error series exists at 0 for a healthy source

    def source_error(self, source: str, message: str) -> None:
        """A sync of `source` failed; its previous state keeps serving and it counts as stale.

        `message` is not a label (unbounded cardinality); the caller logs it.
        """
        self._source_errors.labels(source).inc()
        self._source_stale.labels(source).set(1)
