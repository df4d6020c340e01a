"""ClusterSpec -> envoy.config.cluster.v3.Cluster (an EDS cluster, endpoints over ADS or per-type gRPC; or a
DNS cluster with its endpoints inline, translate/dns.py).

Clusters are stamped from a cached template with `CopyFrom` and then get their few per-cluster fields set:
for fleets of thousands of clusters this is about 4x cheaper than building each one from keyword arguments
(benchmarks/README.md).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2, protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2

from xds.policy.desired import ClusterSpec, LbPolicy
from xds.translate.client_side_weighted import apply_client_side_weighted
from xds.translate.delivery import ADS, Delivery, config_source
from xds.translate.dns import dns_cluster_type
from xds.translate.endpoints import build_load_assignment
from xds.translate.lb import (
    apply_load_balancer,
    apply_tcp_keepalive,
    http_protocol_options,
    needs_http_options,
)
from xds.translate.mesh_tls import upstream_transport_socket
from xds.translate.resilience import build_circuit_breakers, build_health_check, build_outlier_detection
from xds.translate.tls import build_upstream_tls

# The key of Cluster.typed_extension_protocol_options is the extension's proto type name
# (cluster.proto, `typed_extension_protocol_options`).
HTTP_PROTOCOL_OPTIONS_KEY: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_LB_POLICIES: Final[dict[LbPolicy, int]] = {
    LbPolicy.ROUND_ROBIN: cluster_pb2.Cluster.ROUND_ROBIN,
    LbPolicy.LEAST_REQUEST: cluster_pb2.Cluster.LEAST_REQUEST,
    LbPolicy.RANDOM: cluster_pb2.Cluster.RANDOM,
    LbPolicy.RING_HASH: cluster_pb2.Cluster.RING_HASH,
    LbPolicy.MAGLEV: cluster_pb2.Cluster.MAGLEV,
}


def ads_config_source() -> config_source_pb2.ConfigSource:
    """ConfigSource{ads: {}, resource_api_version: V3}: fetch the resource over the ADS stream."""
    source = config_source_pb2.ConfigSource()
    source.CopyFrom(config_source(ADS))
    return source


# The functools.cache'd builders below take no argument: each holds exactly one message for the life of
# the process, so they are bounded (issue 7 asks every cache to be).
@functools.cache
def _template() -> cluster_pb2.Cluster:
    # Built on first use, not at import (nothing happens at import). Callers only CopyFrom it.
    cluster = cluster_pb2.Cluster(type=cluster_pb2.Cluster.EDS)
    # eds_cluster_config.service_name is left unset: Envoy then asks EDS for the cluster's own name, which
    # is how build.py names every ClusterLoadAssignment (cluster.proto, EdsClusterConfig.service_name).
    cluster.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    return cluster


@functools.cache
def _http2_options() -> any_pb2.Any:
    # Upstream HTTP/2 is requested through HttpProtocolOptions.explicit_http_config; the Cluster field
    # `http2_protocol_options` is deprecated since v1.17 (cluster.proto). Packed deterministically so the
    # Cluster's bytes, and so the snapshot version hash, never depend on map iteration order.
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions(),
        ),
    )
    packed = any_pb2.Any()
    packed.Pack(options, deterministic=True)
    return packed


def cluster_key(spec: ClusterSpec, delivery: Delivery = ADS) -> Hashable:
    """Every input of build_cluster(spec): equal keys give byte-identical Clusters.

    An EDS Cluster does not depend on its endpoints (they travel in the ClusterLoadAssignment), so they are
    left out and a weight or health flip reuses the previous snapshot's Cluster without building it. A DNS
    cluster carries its endpoints inline, so for it they are in. Keep this in step with build_cluster.
    """
    return (delivery, spec.name, spec.lb_policy, spec.connect_timeout_s, spec.http2, spec.dns,
            spec.dns_options if spec.dns else None,
            spec.outlier_detection, spec.circuit_breakers, spec.health_check, spec.load_balancer,
            spec.upstream_connection, spec.locality is not None and bool(spec.locality.weights),
            spec.tls, spec.mesh_tls,
            (spec.endpoints, spec.locality) if spec.dns else ())


def build_cluster(spec: ClusterSpec, delivery: Delivery = ADS) -> cluster_pb2.Cluster:
    """The Cluster for `spec`; its endpoints come separately, as the ClusterLoadAssignment of that name,
    over the stream `delivery` says (translate/delivery.py, issue 11)."""
    cluster = cluster_pb2.Cluster()
    cluster.CopyFrom(_template())
    if delivery != ADS:
        cluster.eds_cluster_config.eds_config.CopyFrom(config_source(delivery))
    cluster.name = spec.name
    # Duration from integral nanoseconds: exact and identical on every run, unlike float arithmetic on
    # seconds + nanos separately.
    cluster.connect_timeout.FromNanoseconds(round(spec.connect_timeout_s * 1e9))
    if spec.lb_policy is LbPolicy.CLIENT_SIDE_WEIGHTED:
        # A typed policy only, with no enum value (issue 10, client_side_weighted.py).
        apply_client_side_weighted(cluster, spec.load_balancer)
    else:
        cluster.lb_policy = _LB_POLICIES[spec.lb_policy]
    if spec.upstream_connection is not None and needs_http_options(spec.upstream_connection):
        # One HttpProtocolOptions per cluster: the HTTP/2 choice and the connection knobs go in together.
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].CopyFrom(
            http_protocol_options(spec.upstream_connection, http2=spec.http2))
    elif spec.http2:
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].CopyFrom(_http2_options())
    if spec.upstream_connection is not None:
        apply_tcp_keepalive(cluster, spec.upstream_connection)
    if spec.load_balancer is not None:
        apply_load_balancer(cluster, spec.lb_policy, spec.load_balancer)
    if spec.outlier_detection is not None:
        cluster.outlier_detection.CopyFrom(build_outlier_detection(spec.outlier_detection))
    if spec.circuit_breakers is not None:
        cluster.circuit_breakers.CopyFrom(build_circuit_breakers(spec.circuit_breakers))
    if spec.health_check is not None:
        cluster.health_checks.append(build_health_check(spec.health_check))
    if spec.locality is not None and spec.locality.weights:
        # Locality-weighted balancing reads each LocalityLbEndpoints' load_balancing_weight (endpoints.py).
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()
    if spec.tls is not None:
        # Edge TLS to an external service (issue 9 item 7): the operator's own CA and names win over the mesh.
        cluster.transport_socket.CopyFrom(build_upstream_tls(spec.tls))
    elif spec.mesh_tls is not None:
        # Sidecar mTLS (issue 9): workload certificate and trust bundle over SDS, the server's SAN checked.
        cluster.transport_socket.CopyFrom(upstream_transport_socket(spec.mesh_tls, delivery))
    if spec.dns:
        # Host names (a file endpoint or a Kubernetes ExternalName, issue 13): Envoy resolves them and follows
        # DNS changes itself, so the endpoints travel inline, with their weight, health, locality and
        # priority, rather than over EDS (docs/dns.md).
        cluster.ClearField("eds_cluster_config")
        cluster.cluster_type.CopyFrom(dns_cluster_type(spec.dns_options))
        cluster.load_assignment.CopyFrom(build_load_assignment(spec))
    return cluster
