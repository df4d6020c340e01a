"""ClusterSpec endpoints -> envoy.config.endpoint.v3.ClusterLoadAssignment."""

from __future__ import annotations

from typing import Final

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from xds.model.service import Endpoint, Health, Locality
from xds.policy.desired import ClusterSpec

# Model health -> envoy.config.core.v3.HealthStatus (health_check.proto). With EDS health and no active
# health checking, Envoy routes to HEALTHY and UNKNOWN hosts, uses DEGRADED only when too few are healthy,
# and sends no new requests to UNHEALTHY or DRAINING hosts.
_HEALTH: Final[dict[Health, int]] = {
    Health.HEALTHY: health_check_pb2.HEALTHY,
    Health.UNHEALTHY: health_check_pb2.UNHEALTHY,
    Health.DRAINING: health_check_pb2.DRAINING,
    Health.DEGRADED: health_check_pb2.DEGRADED,
    Health.UNKNOWN: health_check_pb2.UNKNOWN,
}


def _group_by_locality(endpoints: tuple[Endpoint, ...]
                       ) -> list[tuple[tuple[int, Locality], list[Endpoint]]]:
    groups: dict[tuple[int, Locality], list[Endpoint]] = {}
    for endpoint in endpoints:
        groups.setdefault((endpoint.priority, endpoint.locality), []).append(endpoint)
    # (priority, locality) sorted so the CLA bytes, and so its version hash, do not depend on input order;
    # endpoints keep the deterministic order DesiredState already gives them.
    return sorted(groups.items(), key=lambda item: item[0])


def build_load_assignment(spec: ClusterSpec) -> endpoint_pb2.ClusterLoadAssignment:
    """The ClusterLoadAssignment named after `spec`'s cluster, empty when the cluster has no endpoints.

    An empty assignment is still a real answer: without it an EDS cluster stays warming until
    `initial_fetch_timeout` (docs/protocol.md R22, envoy #4485).
    """
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=spec.name)
    if spec.locality is not None and spec.locality.overprovisioning_factor is not None:
        cla.policy.overprovisioning_factor.value = spec.locality.overprovisioning_factor
    weights = spec.locality if spec.locality is not None and spec.locality.weights else None
    check_port = spec.health_check.port if spec.health_check is not None else None
    groups = _group_by_locality(spec.endpoints)
    # Priorities must be contiguous from 0 (endpoint_components.proto, LocalityLbEndpoints.priority): when
    # a tier is empty (no local endpoints left), the next one moves up rather than leave a gap Envoy rejects.
    tiers = {p: rank for rank, p in enumerate(sorted({priority for (priority, _), _ in groups}))}
    for (priority, locality), members in groups:
        group = cla.endpoints.add()
        if tiers[priority]:
            group.priority = tiers[priority]
        # Always present, even all-empty (Envoy's "no locality"): grpc-go NACKs a LocalityLbEndpoints
        # without one ("EDS response contains a locality without ID", issue 11).
        group.locality.SetInParent()
        group.locality.region = locality.region
        group.locality.zone = locality.zone
        group.locality.sub_zone = locality.sub_zone
        if weights is not None:
            # Read only with the cluster's locality_weighted_lb_config (clusters.py); a locality without a
            # weight would get no traffic at all (endpoint_components.proto, LocalityLbEndpoints).
            group.load_balancing_weight.value = weights.weight_of(locality)
        else:
            # gRPC clients always balance across localities by this weight and drop a locality without one
            # (issue 11: grpcio then fails every call); Envoy reads it only with locality-weighted
            # balancing, which this cluster does not have. The sum of the endpoint weights keeps a gRPC
            # client's split the one the endpoint weights say.
            group.load_balancing_weight.value = sum(endpoint.weight for endpoint in members)
        for endpoint in members:
            lb_endpoint = group.lb_endpoints.add()
            address = lb_endpoint.endpoint.address.socket_address
            address.address = endpoint.host
            address.port_value = endpoint.port
            if check_port is not None:
                lb_endpoint.endpoint.health_check_config.port_value = check_port
            lb_endpoint.health_status = _HEALTH[endpoint.health]
            # Always explicit so the weight Envoy uses is visible in config dumps. It must be >= 1
            # (endpoint_components.proto, LbEndpoint.load_balancing_weight); policy rejects smaller ones.
            lb_endpoint.load_balancing_weight.value = endpoint.weight
    return cla
