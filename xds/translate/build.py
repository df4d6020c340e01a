"""DesiredState -> the list of Envoy resources one node group should hold, with their references."""

from __future__ import annotations

import functools

from xds.policy.desired import (
    DesiredState,
    ListenerSpec,
    RouteConfigSpec,
    SecretSpec,
    cluster_secret_names,
    listener_secret_names,
)
from xds.translate.clusters import build_cluster, cluster_key
from xds.translate.delivery import ADS, Delivery
from xds.translate.endpoints import build_load_assignment
from xds.translate.listeners import build_listener
from xds.translate.resource import Deferred, Refs, Translated
from xds.translate.routes import build_route_configuration, route_clusters
from xds.translate.secrets import build_secret
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET


def plan(desired: DesiredState, delivery: Delivery = ADS) -> list[Deferred]:
    """Every resource of `desired`, grouped by type in push order (CDS, EDS, SDS, LDS, RDS; docs/protocol.md
    R23, R46),
    each with the key that decides whether the previous snapshot already holds its bytes.

    Within a type, resources keep DesiredState's own deterministic order, so equal inputs give equal output.
    Every cluster gets a ClusterLoadAssignment, an empty one when it has no endpoints (docs/protocol.md R22).
    Nothing is translated here: make_snapshot builds the protos of the resources that changed only.
    `delivery` decides where Clusters and Listeners point for EDS and RDS (delivery.py); it is part of
    their keys, while ClusterLoadAssignments, RouteConfigurations and Secrets do not depend on it and are
    shared between the variants of a group.
    """
    clusters: list[Deferred] = []
    assignments: list[Deferred] = []
    for spec in desired.clusters:
        refs: Refs = () if spec.dns else ((ENDPOINT, spec.name),)
        refs += tuple((SECRET, name) for name in cluster_secret_names(spec))
        clusters.append(Deferred(CLUSTER, spec.name, functools.partial(build_cluster, spec, delivery),
                                 refs=refs, key=cluster_key(spec, delivery)))
        # DNS clusters carry their endpoints inline and have no ClusterLoadAssignment resource.
        if not spec.dns:
            assignments.append(Deferred(ENDPOINT, spec.name, functools.partial(build_load_assignment, spec),
                                        key=spec))
    secrets = [_secret(spec) for spec in desired.secrets]
    listeners = [_listener(spec, delivery) for spec in desired.listeners]
    routes = [_route_configuration(spec) for spec in desired.route_configs]
    return [*clusters, *assignments, *secrets, *listeners, *routes]


def translate(desired: DesiredState, delivery: Delivery = ADS) -> list[Translated]:
    """Every resource of `desired` translated to its proto, in plan() order."""
    return [item.translated() for item in plan(desired, delivery)]


def _listener(spec: ListenerSpec, delivery: Delivery) -> Deferred:
    refs = ((ROUTE, spec.route_config), *((SECRET, name) for name in listener_secret_names(spec)))
    return Deferred(LISTENER, spec.name, functools.partial(build_listener, spec, delivery), refs=refs,
                    key=(spec, delivery))


def _secret(spec: SecretSpec) -> Deferred:
    # The spec holds the PEM itself, so an equal key is an equal Secret: a rotated certificate is a new key
    # and a new SDS version, an unchanged one is reused unserialized.
    return Deferred(SECRET, spec.name, functools.partial(build_secret, spec), key=spec)


def _route_configuration(spec: RouteConfigSpec) -> Deferred:
    return Deferred(ROUTE, spec.name, functools.partial(build_route_configuration, spec),
                    refs=tuple((CLUSTER, name) for name in route_clusters(spec)), key=spec)
