"""DesiredState -> the list of Envoy resources one node group should hold, with their references."""

from __future__ import annotations

from xds.policy.desired import DesiredState
from xds.translate.clusters import build_cluster
from xds.translate.endpoints import build_load_assignment
from xds.translate.listeners import build_listener
from xds.translate.resource import Translated
from xds.translate.routes import build_route_configuration, route_clusters
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE


def translate(desired: DesiredState) -> list[Translated]:
    """Every resource of `desired`, grouped by type in push order (CDS, EDS, LDS, RDS; XDS-RULES R23).

    Within a type, resources keep DesiredState's own deterministic order, so equal inputs give equal output.
    Every cluster gets a ClusterLoadAssignment, an empty one when it has no endpoints (XDS-RULES R22).
    """
    # DNS clusters carry their endpoints inline and have no ClusterLoadAssignment resource.
    clusters = [
        Translated(CLUSTER, spec.name, build_cluster(spec),
                   refs=() if spec.dns else ((ENDPOINT, spec.name),))
        for spec in desired.clusters
    ]
    assignments = [
        Translated(ENDPOINT, spec.name, build_load_assignment(spec))
        for spec in desired.clusters if not spec.dns
    ]
    listeners = [
        Translated(LISTENER, spec.name, build_listener(spec), refs=((ROUTE, spec.route_config),))
        for spec in desired.listeners
    ]
    routes = [
        Translated(ROUTE, spec.name, build_route_configuration(spec),
                   refs=tuple((CLUSTER, name) for name in route_clusters(spec)))
        for spec in desired.route_configs
    ]
    return [*clusters, *assignments, *listeners, *routes]
