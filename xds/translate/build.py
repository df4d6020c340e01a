"""DesiredState -> the list of Envoy resources one node group should hold, with their references."""

from __future__ import annotations

import functools

from xds.policy.desired import ClusterSpec, DesiredState, ListenerSpec, RouteConfigSpec
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
    Each resource is translated from one frozen spec and remembered by it, so a rebuild after a change to
    one service translates that service only.
    """
    translated = [_cluster(spec) for spec in desired.clusters]
    clusters = [cluster for cluster, _ in translated]
    # DNS clusters carry their endpoints inline and have no ClusterLoadAssignment resource.
    assignments = [assignment for _, assignment in translated if assignment is not None]
    listeners = [_listener(spec) for spec in desired.listeners]
    routes = [_route_configuration(spec) for spec in desired.route_configs]
    return [*clusters, *assignments, *listeners, *routes]


# Specs are frozen and fully determine their protos, so translations are cached by spec. The messages are
# shared between snapshots and never mutated after translation (make_snapshot only serializes them).
_CACHE_SIZE = 1 << 16


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cluster(spec: ClusterSpec) -> tuple[Translated, Translated | None]:
    cluster = Translated(CLUSTER, spec.name, build_cluster(spec),
                         refs=() if spec.dns else ((ENDPOINT, spec.name),), key=spec)
    if spec.dns:
        return cluster, None
    return cluster, Translated(ENDPOINT, spec.name, build_load_assignment(spec), key=spec)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _listener(spec: ListenerSpec) -> Translated:
    return Translated(LISTENER, spec.name, build_listener(spec), refs=((ROUTE, spec.route_config),), key=spec)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _route_configuration(spec: RouteConfigSpec) -> Translated:
    return Translated(ROUTE, spec.name, build_route_configuration(spec),
                      refs=tuple((CLUSTER, name) for name in route_clusters(spec)), key=spec)


def clear_translation_cache() -> None:
    """Forget every cached translation (benchmarks measure a cold build with it; nothing else needs it)."""
    for cached in (_cluster, _listener, _route_configuration):
        cached.cache_clear()
