"""Small snapshots built from real Envoy protos, and a fake SotW client that drives StreamProtocol."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from xds.cache.snapshot import Snapshot, empty_endpoints, make_snapshot
from xds.server.protocol import Event, Request, Send, StreamProtocol
from xds.translate.resource import Translated
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE, TypeUrl


def snapshot(*, clusters: Mapping[str, int] = {}, endpoints: Mapping[str, int] | None = None,
             listeners: Mapping[str, str] = {}, routes: Mapping[str, Sequence[str]] = {},
             group: str = "g") -> Snapshot:
    """clusters: name -> connect timeout seconds (a knob to change a cluster's content);
    endpoints: cluster -> endpoint count (default 1 each); listeners: name -> route config it uses;
    routes: route config -> clusters it sends traffic to."""
    endpoints = endpoints if endpoints is not None else {}
    items: list[Translated] = []
    for name, timeout in clusters.items():
        c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
        c.connect_timeout.seconds = timeout
        items.append(Translated(CLUSTER, name, c, refs=((ENDPOINT, name),)))
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
        group_ = cla.endpoints.add()
        for i in range(endpoints.get(name, 1)):
            ep = group_.lb_endpoints.add()
            ep.endpoint.address.socket_address.address = "127.0.0.1"
            ep.endpoint.address.socket_address.port_value = 8000 + i
        items.append(Translated(ENDPOINT, name, cla))
    for name, route_config in listeners.items():
        listener = listener_pb2.Listener(name=name)
        items.append(Translated(LISTENER, name, listener, refs=((ROUTE, route_config),)))
    for name, targets in routes.items():
        rc = route_pb2.RouteConfiguration(name=name)
        vh = rc.virtual_hosts.add(name=name, domains=["*"])
        for target in targets:
            r = vh.routes.add()
            r.match.prefix = "/"
            r.route.cluster = target
        items.append(Translated(ROUTE, name, rc, refs=tuple((CLUSTER, t) for t in targets)))
    return make_snapshot(group, items)


@dataclass
class FakeClient:
    """Plays the client side of one stream: remembers the last nonce and version per type."""

    protocol: StreamProtocol = field(default_factory=lambda: StreamProtocol(ads=True,
                                                                            placeholder=empty_endpoints))
    node_id: str = "n1"
    nonces: dict[TypeUrl, str] = field(default_factory=dict)
    versions: dict[TypeUrl, str] = field(default_factory=dict)
    log: list[Send] = field(default_factory=list)
    first: bool = True

    def request(self, type_url: TypeUrl, names: Iterable[str] = (), *, nonce: str | None = None,
                version: str | None = None, error: str | None = None) -> tuple[Event | None, list[Send]]:
        node = self.node_id if self.first else None
        self.first = False
        event = self.protocol.on_request(Request(
            type_url=type_url, resource_names=tuple(names), node_id=node, error_message=error,
            response_nonce=self.nonces.get(type_url, "") if nonce is None else nonce,
            version_info=self.versions.get(type_url, "") if version is None else version))
        return event, self.flush()

    def ack(self, send: Send, names: Iterable[str] = ()) -> tuple[Event | None, list[Send]]:
        self.versions[send.type_url] = send.version
        return self.request(send.type_url, names, nonce=send.nonce, version=send.version)

    def nack(self, send: Send, names: Iterable[str] = (), message: str = "rejected"
             ) -> tuple[Event | None, list[Send]]:
        return self.request(send.type_url, names, nonce=send.nonce, error=message)

    def push(self, snap: Snapshot) -> list[Send]:
        self.protocol.set_snapshot(snap)
        return self.flush()

    def flush(self) -> list[Send]:
        sends = self.protocol.next_sends()
        for s in sends:
            self.nonces[s.type_url] = s.nonce
        self.log.extend(sends)
        return sends


def names(send: Send) -> list[str]:
    return [r.name for r in send.resources]


@dataclass(frozen=True)
class Config:
    """A node group's config in the terms the stateful protocol test varies (tests/protocol/
    test_protocol_stateful.py). Unlike `snapshot`, every reference is part of the resource's bytes, as
    in real translation: a listener that switches route configs is a changed listener.

    clusters: name -> (connect timeout seconds, endpoint count); listeners: name -> (route config, port);
    routes: route config -> clusters it sends traffic to (each must be in `clusters`)."""

    clusters: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    listeners: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def config_snapshot(config: Config, previous: Snapshot | None = None, group: str = "g") -> Snapshot:
    """The snapshot of `config`; with `previous`, unchanged resources are shared as the server does."""
    items: list[Translated] = []
    for name, (timeout, count) in sorted(config.clusters.items()):
        c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
        c.connect_timeout.seconds = timeout
        items.append(Translated(CLUSTER, name, c, refs=((ENDPOINT, name),)))
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
        group_ = cla.endpoints.add()
        for i in range(count):
            ep = group_.lb_endpoints.add()
            ep.endpoint.address.socket_address.address = "127.0.0.1"
            ep.endpoint.address.socket_address.port_value = 8000 + i
        items.append(Translated(ENDPOINT, name, cla))
    for name, (route_config, port) in sorted(config.listeners.items()):
        listener = listener_pb2.Listener(name=name, stat_prefix=route_config)
        listener.address.socket_address.port_value = port
        items.append(Translated(LISTENER, name, listener, refs=((ROUTE, route_config),)))
    for name, targets in sorted(config.routes.items()):
        rc = route_pb2.RouteConfiguration(name=name)
        vh = rc.virtual_hosts.add(name=name, domains=["*"])
        for target in targets:
            r = vh.routes.add()
            r.match.prefix = "/"
            r.route.cluster = target
        items.append(Translated(ROUTE, name, rc, refs=tuple((CLUSTER, t) for t in targets)))
    return make_snapshot(group, items, previous)
