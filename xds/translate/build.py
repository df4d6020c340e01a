"""DesiredState -> the list of Envoy resources one node group should hold, with their references."""

from __future__ import annotations

import functools

from xds.policy.desired import DesiredState, ListenerSpec, RouteConfigSpec
from xds.translate.clusters import build_cluster, cluster_key
from xds.translate.endpoints import build_load_assignment
from xds.translate.listeners import build_listener
from xds.translate.resource import Deferred, Translated
from xds.translate.routes import build_route_configuration, route_clusters
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE


def plan(desired: DesiredState) -> list[Deferred]:
    """Every resource of `desired`, grouped by type in push order (CDS, EDS, LDS, RDS; docs/protocol.md R23),
    each with the key that decides whether the previous snapshot already holds its bytes.

    Within a type, resources keep DesiredState's own deterministic order, so equal inputs give equal output.
    Every cluster gets a ClusterLoadAssignment, an empty one when it has no endpoints (docs/protocol.md R22).
    Nothing is translated here: make_snapshot builds the protos of the resources that changed only.
    """
    clusters: list[Deferred] = []
    assignments: list[Deferred] = []
    for spec in desired.clusters:
        clusters.append(Deferred(CLUSTER, spec.name, functools.partial(build_cluster, spec),
                                 refs=() if spec.dns else ((ENDPOINT, spec.name),), key=cluster_key(spec)))
        # DNS clusters carry their endpoints inline and have no ClusterLoadAssignment resource.
        if not spec.dns:
            assignments.append(Deferred(ENDPOINT, spec.name, functools.partial(build_load_assignment, spec),
                                        key=spec))
    listeners = [_listener(spec) for spec in desired.listeners]
    routes = [_route_configuration(spec) for spec in desired.route_configs]
    return [*clusters, *assignments, *listeners, *routes]


def translate(desired: DesiredState) -> list[Translated]:
    """Every resource of `desired` translated to its proto, in plan() order."""
    return [item.translated() for item in plan(desired)]


def _listener(spec: ListenerSpec) -> Deferred:
    return Deferred(LISTENER, spec.name, functools.partial(build_listener, spec),
                    refs=((ROUTE, spec.route_config),), key=spec)


def _route_configuration(spec: RouteConfigSpec) -> Deferred:
    return Deferred(ROUTE, spec.name, functools.partial(build_route_configuration, spec),
                    refs=tuple((CLUSTER, name) for name in route_clusters(spec)), key=spec)
