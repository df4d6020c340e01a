"""The management API over a real grpc.aio server on loopback, queried through xds.status_view's real stub."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2

from xds import status_view, typeurls
from xds.cache.snapshot import Snapshot, make_snapshot
from xds.cache.store import SnapshotStore
from xds.server.callbacks import StreamInfo
from xds.server.management import ManagementService, snapshot_to_proto
from xds.server.registry import ProxyRegistry
from xds.translate.resource import Translated


def ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def mesh_items() -> list[Translated]:
    cluster = cluster_pb2.Cluster(
        name="web", type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source()))
    socket = address_pb2.SocketAddress(address="10.0.0.1", port_value=80)
    endpoint = endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
        address=address_pb2.Address(socket_address=socket)))
    cla = endpoint_pb2.ClusterLoadAssignment(
        cluster_name="web", endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])])
    route = route_pb2.RouteConfiguration(name="http", virtual_hosts=[route_components_pb2.VirtualHost(
        name="web", domains=["*"], routes=[route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"),
            route=route_components_pb2.RouteAction(cluster="web"))])])
    router = any_pb2.Any()
    router.Pack(router_pb2.Router())
    manager = any_pb2.Any()
    manager.Pack(hcm.HttpConnectionManager(
        stat_prefix="http", rds=hcm.Rds(config_source=ads_source(), route_config_name="http"),
        http_filters=[hcm.HttpFilter(name="envoy.filters.http.router", typed_config=router)]))
    listener = listener_pb2.Listener(
        name="http", address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address="0.0.0.0", port_value=10000)),
        filter_chains=[listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=manager)])])
    return [
        Translated(typeurls.CLUSTER, "web", cluster, refs=((typeurls.ENDPOINT, "web"),)),
        Translated(typeurls.ENDPOINT, "web", cla),
        Translated(typeurls.LISTENER, "http", listener, refs=((typeurls.ROUTE, "http"),)),
        Translated(typeurls.ROUTE, "http", route, refs=((typeurls.CLUSTER, "web"),)),
    ]


@dataclass
class World:
    """What the builder the store calls does: "broken" always fails; others fail while `fail` is set."""

    fail: str = ""

    def build(self, group: str, previous: Snapshot | None) -> Snapshot:
        if group == "broken":
            raise ValueError("listener 'http' refers to missing route 'nope'")
        if self.fail:
            raise ValueError(self.fail)
        return make_snapshot(group, mesh_items(), previous)


@dataclass
class Plane:
    address: str
    registry: ProxyRegistry
    store: SnapshotStore
    world: World


@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    registry = ProxyRegistry(clock=lambda: 1_700_000_000.25)
    store = SnapshotStore()
    server = grpc.aio.server()
    ManagementService(registry, store).add_to_server(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Plane(address=f"127.0.0.1:{port}", registry=registry, store=store, world=World())
    finally:
        await server.stop(grace=None)


def open_stream(registry: ProxyRegistry, stream_id: int, node_id: str) -> StreamInfo:
    info = StreamInfo(stream_id=stream_id, node_id=node_id, group="default", peer="ipv4:127.0.0.1:4000",
                      method="ads", envoy_version="1.31.0")
    registry.on_stream_open(info)
    return info


def send(registry: ProxyRegistry, info: StreamInfo, type_url: str, version: str, nonce: str) -> None:
    registry.on_response_sent(info, type_url=type_url, version=version, nonce=nonce, resource_names=(),
                              size_bytes=100)


async def test_list_proxies_empty(plane: Plane) -> None:
    response = await status_view.fetch_proxies(plane.address)
    assert list(response.proxies) == []
    assert status_view.format_proxy_table(response) == "no proxies connected"


async def test_list_proxies_reports_every_stream_and_type(plane: Plane) -> None:
    reg = plane.registry
    b = open_stream(reg, 2, "node-b")
    a = open_stream(reg, 1, "node-a")
    closed = open_stream(reg, 3, "node-c")
    reg.on_stream_closed(closed)
    for i, t in enumerate(typeurls.PUSH_ORDER):
        send(reg, a, t, "v1", str(i))
        reg.on_ack(a, type_url=t, version="v1", nonce=str(i))
    send(reg, a, typeurls.ENDPOINT, "v2", "9")  # not acknowledged yet
    send(reg, b, typeurls.CLUSTER, "v1", "1")
    reg.on_ack(b, type_url=typeurls.CLUSTER, version="v1", nonce="1")
    send(reg, b, typeurls.CLUSTER, "v2", "2")
    reg.on_nack(b, type_url=typeurls.CLUSTER, version="v1", nonce="2", rejected_version="v2",
                message="cluster 'web': unknown field")

    response = await status_view.fetch_proxies(plane.address)

    assert [(p.node_id, p.stream_id) for p in response.proxies] == [("node-a", 1), ("node-b", 2)]
    pa, pb_ = response.proxies
    assert (pa.group, pa.peer, pa.method, pa.envoy_version) == (
        "default", "ipv4:127.0.0.1:4000", "ads", "1.31.0")
    assert pa.connected_at.ToNanoseconds() == 1_700_000_000_250_000_000
    assert [t.short_name for t in pa.types] == ["cds", "eds", "sds", "lds", "rds"]
    eds = pa.types[1]
    assert (eds.version_sent, eds.nonce_sent, eds.version_acked, eds.pushes) == ("v2", "9", "v1", 2)
    [cds] = pb_.types
    assert (cds.version_acked, cds.last_nack_version, cds.last_nack_nonce, cds.nack_count) == (
        "v1", "v2", "2", 1)
    assert cds.last_nack_message == "cluster 'web': unknown field"
    assert cds.HasField("last_nack_at")
    assert not pa.types[0].HasField("last_nack_at")

    table = status_view.format_proxy_table(response).splitlines()
    assert table[0].split() == ["NODE", "GROUP", "CDS", "EDS", "SDS", "LDS", "RDS", "METHOD",
                                 "ENVOY"]
    assert table[1].split() == ["node-a", "default", "SYNCED", "STALE", "SYNCED", "SYNCED", "SYNCED",
                                 "ADS", "1.31.0"]
    assert table[2].split("  ")[0] == "node-b"
    assert "NACKED(v2)" in table[2]
    assert table[2].count("NOT SENT") == 4
    assert "NACKS" in table
    assert "    cluster 'web': unknown field" in table


async def test_get_snapshot_renders_every_resource_as_json(plane: Plane) -> None:
    plane.store.publish(plane.world.build)
    snapshot = plane.store.get("web-group")
    assert snapshot is not None

    response = await status_view.fetch_snapshot(plane.address, "web-group")

    assert response.group == "web-group"
    assert response.error == ""
    assert [(v.type_url, v.version) for v in response.versions] == [
        (t, snapshot.version(t)) for t in typeurls.PUSH_ORDER]
    assert [(r.type_url, r.name) for r in response.resources] == [
        (typeurls.CLUSTER, "web"), (typeurls.ENDPOINT, "web"), (typeurls.LISTENER, "http"),
        (typeurls.ROUTE, "http")]
    by_name = {(r.type_url, r.name): r for r in response.resources}
    cluster = by_name[(typeurls.CLUSTER, "web")]
    assert cluster.version == snapshot.resources[typeurls.CLUSTER]["web"].hash
    assert json.loads(cluster.json) == {
        "name": "web", "type": "EDS",
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}}
    assert " " not in cluster.json  # compact
    listener = json.loads(by_name[(typeurls.LISTENER, "http")].json)
    typed = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert typed["@type"].endswith("HttpConnectionManager")
    assert typed["rds"]["route_config_name"] == "http"
    assert '"cluster_name": "web"' in status_view.format_snapshot(response)


async def test_get_snapshot_reports_build_error_while_serving_last_good(plane: Plane) -> None:
    plane.store.publish(plane.world.build)
    assert plane.store.get("web-group") is not None
    plane.world.fail = "route 'http' refers to missing cluster 'api'"
    plane.store.publish(plane.world.build)

    response = await status_view.fetch_snapshot(plane.address, "web-group")

    assert response.error == "route 'http' refers to missing cluster 'api'"
    assert len(response.resources) == 4
    assert "last build failed" in status_view.format_snapshot(response)


async def test_get_snapshot_unknown_group_is_not_found_and_not_built(plane: Plane) -> None:
    plane.store.publish(plane.world.build)
    with pytest.raises(status_view.GroupNotFoundError, match="no snapshot for group 'nobody'"):
        await status_view.fetch_snapshot(plane.address, "nobody")
    # Asking must not make the store build and keep rebuilding a group nobody uses.
    assert plane.store.groups() == []


async def test_get_snapshot_of_group_that_never_built_carries_the_error(plane: Plane) -> None:
    plane.store.publish(plane.world.build)
    assert plane.store.get("broken") is None
    with pytest.raises(status_view.GroupNotFoundError, match="last build error: listener 'http' refers"):
        await status_view.fetch_snapshot(plane.address, "broken")


async def test_unreachable_server_is_a_query_error() -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await server.stop(grace=None)  # a port that was just free: nothing listens there now
    with pytest.raises(status_view.ManagementQueryError, match=r"UNAVAILABLE|DEADLINE_EXCEEDED"):
        await status_view.fetch_proxies(f"127.0.0.1:{port}", timeout_s=2.0)


def test_resource_that_cannot_be_rendered_names_the_problem() -> None:
    # An Any whose type no imported module registered: json_format cannot expand it.
    opaque = any_pb2.Any(type_url="type.googleapis.com/example.NotImported", value=b"\x08\x01")
    listener = listener_pb2.Listener(name="odd", filter_chains=[listener_components_pb2.FilterChain(
        filters=[listener_components_pb2.Filter(name="f", typed_config=opaque)])])
    snapshot = make_snapshot("g", [Translated(typeurls.LISTENER, "odd", listener)])

    [resource] = snapshot_to_proto(snapshot).resources

    rendered = json.loads(resource.json)
    assert rendered["@type"] == typeurls.LISTENER
    assert "example.NotImported" in rendered["@error"]
