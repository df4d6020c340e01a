"""How a client fetches the resources another resource names: ADS, per-type gRPC, or as a proxyless client.

A Cluster names where its endpoints come from (EDS) and a Listener where its routes come from (RDS) as a
`ConfigSource`. Which one is right depends on the client that receives them (issue 11 item 3):

* an Envoy on the aggregated stream needs `ads: {}`;
* an Envoy on single-type streams (no `ads_config` in its bootstrap) rejects `ads: {}` ("ADS must be
  configured to support an ADS config source") and needs an `api_config_source` naming its gRPC cluster
  of the control plane (`xds_cluster` in the bootstrap `xds bootstrap --no-ads` prints);
* a proxyless gRPC client always uses ADS and only accepts `ads` (or `self`) sources; it is also the only
  client that gets `api_listener` listeners, and never gets the Envoy ones (docs/protocol.md C2).

Each kind of client is its own snapshot variant of a node group (cache/node.py `client_key`), so every
variant is serialized once and fanned out as bytes to all the streams of that kind.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, replace
from typing import Final

from envoy.config.core.v3 import config_source_pb2

from xds.policy.desired import DesiredState

# The control plane's cluster in the bootstraps `xds bootstrap` prints (xds/templates/*.tmpl).
DEFAULT_XDS_CLUSTER: Final = "xds_cluster"


class ClientKind(enum.Enum):
    """What kind of xDS client a stream belongs to (docs/protocol.md C2)."""

    ENVOY_ADS = "envoy"
    ENVOY_SINGLE = "envoy-single"
    GRPC = "grpc"


def client_kind(*, aggregated: bool, user_agent: str) -> ClientKind:
    """The kind of client from its stream's service and `node.user_agent_name`.

    gRPC libraries name themselves "gRPC Go", "gRPC Java", "gRPC C-core <platform>" (which grpcio and the
    other wrapped languages use); Envoy says "envoy". gRPC clients always use ADS.
    """
    if user_agent.startswith("gRPC"):
        return ClientKind.GRPC
    return ClientKind.ENVOY_ADS if aggregated else ClientKind.ENVOY_SINGLE


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the EDS and RDS config sources of a snapshot point."""

    aggregated: bool = True
    # Used when not aggregated: the bootstrap cluster that reaches this control plane.
    xds_cluster: str = DEFAULT_XDS_CLUSTER


ADS: Final = Delivery()


def delivery_for(kind: ClientKind, xds_cluster: str = DEFAULT_XDS_CLUSTER) -> Delivery:
    return Delivery(aggregated=False, xds_cluster=xds_cluster) if kind is ClientKind.ENVOY_SINGLE else ADS


# Bounded: one entry per Delivery in use, which is one per configured xDS cluster name plus ADS.
@functools.lru_cache(maxsize=8)
def _config_source(delivery: Delivery) -> config_source_pb2.ConfigSource:
    # `resource_api_version` must be V3: AUTO (the zero value) means V2 in older Envoys and is rejected by
    # current ones (config_source.proto, `resource_api_version`).
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    if delivery.aggregated:
        source.ads.SetInParent()
        return source
    api = source.api_config_source
    api.api_type = config_source_pb2.ApiConfigSource.GRPC
    api.transport_api_version = config_source_pb2.V3
    # As the bootstrap's own sources: only the first request of a stream carries the node (docs/protocol.md
    # R1).
    api.set_node_on_first_message_only = True
    api.grpc_services.add().envoy_grpc.cluster_name = delivery.xds_cluster
    return source


def config_source(delivery: Delivery = ADS) -> config_source_pb2.ConfigSource:
    """The shared ConfigSource for `delivery`: callers CopyFrom it and never modify it."""
    return _config_source(delivery)


def for_client(desired: DesiredState, kind: ClientKind) -> DesiredState:
    """`desired` as a client of `kind` gets it: gRPC clients only the gRPC listeners (api_listener), Envoys
    only the others, each with the route configurations of its own listeners (docs/protocol.md C2)."""
    grpc = kind is ClientKind.GRPC
    listeners = tuple(spec for spec in desired.listeners if spec.grpc is grpc)
    if len(listeners) == len(desired.listeners):
        return desired
    wanted = {spec.route_config for spec in listeners}
    routes = tuple(spec for spec in desired.route_configs if spec.name in wanted)
    return replace(desired, listeners=listeners, route_configs=routes)
