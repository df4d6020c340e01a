"""The opt-in Prometheus stats listener: each Envoy's own `/stats/prometheus`, and nothing else of its admin.

Issue 14 item 3 (docs/operations.md "Envoy stats for Prometheus"). Envoy's admin interface serves far more
than stats (/quitquitquit, /config_dump with its secrets redacted only in part, /runtime_modify), so it stays
on loopback and Prometheus scrapes a listener this server adds to every Envoy's LDS instead. Its route
forwards exactly the path `/stats/prometheus` to the bootstrap's static cluster `envoy_admin` (rendered by
`xds bootstrap`, xds/templates/*.tmpl, pointing at the Envoy's own admin address); any other path gets a
404 from Envoy itself and never reaches admin.

The route configuration is inline rather than over RDS: it is the same for every node group and never
changes while the server runs, so it needs no resource of its own. `validate_clusters` is off because an
Envoy started from an older bootstrap has no `envoy_admin`; with validation on, Envoy would NACK the whole
LDS update (every listener of the group) for it, while off it answers 503 on the stats port only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2, wrappers_pb2
from google.protobuf.message import Message

from xds.translate.resource import Deferred
from xds.typeurls import LISTENER

STATS_LISTENER_NAME: Final = "envoy_prometheus_stats"
# The bootstrap's static cluster that reaches the Envoy's own admin listener (xds/templates/*.tmpl).
ADMIN_CLUSTER_NAME: Final = "envoy_admin"
STATS_PATH: Final = "/stats/prometheus"


@dataclass(frozen=True, slots=True)
class StatsListenerSpec:
    """Where every Envoy listens for Prometheus scrapes (`xds serve --envoy-stats-port`)."""

    port: int
    address: str = "0.0.0.0"


def _pack(message: Message) -> any_pb2.Any:
    # Deterministic, so the listener's bytes and its content-hash version never change (docs/protocol.md R14).
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def _route_configuration() -> route_pb2.RouteConfiguration:
    config = route_pb2.RouteConfiguration(name=STATS_LISTENER_NAME,
                                          validate_clusters=wrappers_pb2.BoolValue(value=False))
    host = config.virtual_hosts.add(name=STATS_LISTENER_NAME, domains=["*"])
    # `path` is an exact match on the path without its query, so `/stats/prometheus?usedonly` is forwarded
    # and `/stats/prometheus/../config_dump` is not (Envoy normalizes the path first, normalize_path below).
    stats = host.routes.add(name="stats")
    stats.match.path = STATS_PATH
    stats.route.cluster = ADMIN_CLUSTER_NAME
    other = host.routes.add(name="not-found")
    other.match.prefix = "/"
    other.direct_response.CopyFrom(route_components_pb2.DirectResponseAction(status=404))
    return config


def build_stats_listener(spec: StatsListenerSpec) -> listener_pb2.Listener:
    manager = hcm_pb2.HttpConnectionManager(stat_prefix=STATS_LISTENER_NAME)
    manager.route_config.CopyFrom(_route_configuration())
    # Resolve `..` and `//` before routing, so no spelling of another admin path matches the stats route.
    manager.normalize_path.value = True
    manager.merge_slashes = True
    manager.http_filters.add(name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router()))
    listener = listener_pb2.Listener(name=STATS_LISTENER_NAME)
    listener.address.socket_address.address = spec.address
    listener.address.socket_address.port_value = spec.port
    chain = listener.filter_chains.add()
    chain.filters.add(name="envoy.filters.network.http_connection_manager", typed_config=_pack(manager))
    return listener


@functools.lru_cache(maxsize=4)
def stats_listener_item(spec: StatsListenerSpec) -> Deferred:
    """The Deferred LDS item for `spec`; one per spec, so every snapshot shares its key and bytes."""
    return Deferred(LISTENER, STATS_LISTENER_NAME, functools.partial(build_stats_listener, spec), key=spec)
