"""A cluster's load balancer knobs and upstream connection settings (issue 8, docs/config.md).

LoadBalancerSpec -> the Cluster's `lb_config` for its `lb_policy` (least_request_lb_config,
ring_hash_lb_config, maglev_lb_config, round_robin_lb_config) and common_lb_config.healthy_panic_threshold.
These sit beside the `lb_policy` enum the clusters already use and none is deprecated in Envoy 1.40
(cluster.proto); the typed `load_balancing_policy` would replace `lb_policy` and the common config for every
cluster at once. UpstreamConnectionSpec -> HttpProtocolOptions.common_http_protocol_options (the Cluster's
own `max_requests_per_connection` and `common_http_protocol_options` are deprecated) and
upstream_connection_options.tcp_keepalive. Unset knobs are not emitted: Envoy's defaults apply.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2

from xds.policy.desired import LbPolicy, LoadBalancerSpec, UpstreamConnectionSpec
from xds.translate.resilience import duration


def apply_load_balancer(cluster: cluster_pb2.Cluster, policy: LbPolicy, spec: LoadBalancerSpec) -> None:
    if spec.healthy_panic_threshold is not None:
        cluster.common_lb_config.healthy_panic_threshold.value = float(spec.healthy_panic_threshold)
    slow_start = None
    if policy is LbPolicy.LEAST_REQUEST:
        if spec.choice_count is not None:
            cluster.least_request_lb_config.choice_count.value = spec.choice_count
        if spec.slow_start_window_s is not None:
            slow_start = cluster.least_request_lb_config.slow_start_config
    elif policy is LbPolicy.ROUND_ROBIN and spec.slow_start_window_s is not None:
        slow_start = cluster.round_robin_lb_config.slow_start_config
    elif policy is LbPolicy.RING_HASH:
        if spec.minimum_ring_size is not None:
            cluster.ring_hash_lb_config.minimum_ring_size.value = spec.minimum_ring_size
        if spec.maximum_ring_size is not None:
            cluster.ring_hash_lb_config.maximum_ring_size.value = spec.maximum_ring_size
    elif policy is LbPolicy.MAGLEV and spec.table_size is not None:
        cluster.maglev_lb_config.table_size.value = spec.table_size
    if slow_start is not None and spec.slow_start_window_s is not None:
        slow_start.slow_start_window.CopyFrom(duration(spec.slow_start_window_s))


def needs_http_options(spec: UpstreamConnectionSpec | None) -> bool:
    return spec is not None and (spec.idle_timeout_s is not None
                                 or spec.max_requests_per_connection is not None)


def http_protocol_options(spec: UpstreamConnectionSpec, *, http2: bool) -> any_pb2.Any:
    """One HttpProtocolOptions carrying both the protocol (HTTP/2 or HTTP/1.1, a required choice in
    http_protocol_options.proto) and the common options: a Cluster holds one per extension name, so the
    HTTP/2 setting of clusters.py and these knobs must be merged into the same message."""
    options = http_protocol_options_pb2.HttpProtocolOptions()
    explicit = options.explicit_http_config
    if http2:
        explicit.http2_protocol_options.SetInParent()
    else:
        explicit.http_protocol_options.SetInParent()
    common: protocol_pb2.HttpProtocolOptions = options.common_http_protocol_options
    if spec.idle_timeout_s is not None:
        common.idle_timeout.CopyFrom(duration(spec.idle_timeout_s))
    if spec.max_requests_per_connection is not None:
        common.max_requests_per_connection.value = spec.max_requests_per_connection
    packed = any_pb2.Any()
    packed.Pack(options, deterministic=True)  # byte-stable, as clusters.py packs its HTTP/2 options
    return packed


def apply_tcp_keepalive(cluster: cluster_pb2.Cluster, spec: UpstreamConnectionSpec) -> None:
    keepalive = spec.tcp_keepalive
    if keepalive is None:
        return
    out = cluster.upstream_connection_options.tcp_keepalive
    out.SetInParent()  # `{}`: keepalive on with the operating system's settings
    if keepalive.probes is not None:
        out.keepalive_probes.value = keepalive.probes
    if keepalive.time_s is not None:
        out.keepalive_time.value = int(keepalive.time_s)
    if keepalive.interval_s is not None:
        out.keepalive_interval.value = int(keepalive.interval_s)
