"""Delta xDS over the wire (docs/protocol.md R28-R30): a real grpc.aio server on 127.0.0.1:0, raw delta
clients, the real registry and metrics behind the callbacks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2

from tests.protocol.world import snapshot
from xds.cache.node import NodeGrouper
from xds.cache.store import SnapshotStore
from xds.observability.metrics import Metrics
from xds.server.callbacks import MultiCallbacks
from xds.server.grpc_server import ServerOptions, build_server
from xds.server.limits import StreamLimits
from xds.server.registry import ProxyRegistry
from xds.server.stream import StreamHandler
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

from .delta_client import DeltaClient, names

BASE = dict(clusters={"a": 1, "b": 1}, listeners={"l": "r"}, routes={"r": ["a"]})


@dataclass
class Server:
    store: SnapshotStore
    registry: ProxyRegistry
    metrics: Metrics
    channel: grpc.aio.Channel

    def publish(self, **spec: object) -> None:
        snap = snapshot(**spec)  # type: ignore[arg-type]
        self.store.publish(lambda group, previous: snap)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    store = SnapshotStore()
    registry, metrics = ProxyRegistry(), Metrics()
    handler = StreamHandler(store, grouper=NodeGrouper("cluster"),
                            callbacks=MultiCallbacks(registry, metrics),
                            limits=StreamLimits(max_resource_names=50))
    grpc_server, port = build_server(handler, address="127.0.0.1:0", options=ServerOptions())
    await grpc_server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Server(store=store, registry=registry, metrics=metrics, channel=channel)
    finally:
        await channel.close()
        await grpc_server.stop(0)
        handler.close()


async def start_up(client: DeltaClient) -> None:
    """Envoy's delta start-up: CDS wildcard, EDS for the clusters, LDS wildcard, RDS for the listeners."""
    client.send(CLUSTER)
    cds = await client.recv()
    client.ack(cds)
    client.send(ENDPOINT, sorted(names(cds)))
    client.ack(await client.recv())
    client.send(LISTENER)
    lds = await client.recv()
    client.ack(lds)
    client.send(ROUTE, ["r"])
    client.ack(await client.recv())


async def test_delta_ads_start_up_update_removal_and_status(server: Server) -> None:
    server.publish(**BASE)
    client = DeltaClient(server.channel)
    await start_up(client)
    assert set(client.held[CLUSTER]) == {"a", "b"}
    cluster = cluster_pb2.Cluster()
    assert client.last[CLUSTER].resources[0].resource.Unpack(cluster) and cluster.name == "a"
    await client.expect_silence()  # ACKs get no answer (R13)
    # b deleted: only the removal goes out, nothing is re-sent (R28).
    server.publish(clusters={"a": 1}, listeners={"l": "r"}, routes={"r": ["a"]})
    cds = await client.recv()
    assert names(cds) == [] and list(cds.removed_resources) == ["b"]
    client.ack(cds)
    await client.expect_silence()
    # The registry and metrics see a delta stream like any other (xds status, ListProxies, per-type state).
    (proxy,) = server.registry.list()
    assert proxy.method == "ads-delta" and proxy.node_id == "n1"
    by_type = {t.type_url: t for t in proxy.types}
    assert by_type[CLUSTER].version_acked == cds.system_version_info and by_type[CLUSTER].pushes == 2
    text = server.metrics.render().decode()
    assert 'xds_connected_streams{method="ads-delta"} 1.0' in text
    await client.close()


async def test_delta_reconnect_sends_only_what_differs_p12(server: Server) -> None:
    server.publish(**BASE)
    first = DeltaClient(server.channel)
    await start_up(first)
    held = dict(first.held[CLUSTER])
    await first.close()
    # While the client is away, b is deleted and a changes.
    server.publish(clusters={"a": 4}, listeners={"l": "r"}, routes={"r": ["a"]})
    again = DeltaClient(server.channel)
    again.send(CLUSTER, initial=held)
    cds = await again.recv()
    assert names(cds) == ["a"] and list(cds.removed_resources) == ["b"]
    again.ack(cds)
    # The changed cluster's endpoints are sent although the client says it kept them (R21, R29).
    again.send(ENDPOINT, ["a"], initial=first.held[ENDPOINT])
    eds = await again.recv()
    assert names(eds) == ["a"]
    await again.close()


async def test_delta_missing_name_removed_then_delivered_and_nack_not_resent(server: Server) -> None:
    server.publish(**BASE)
    client = DeltaClient(server.channel, method="rds")
    client.send(ROUTE, ["r", "later"])
    rds = await client.recv()
    assert names(rds) == ["r"] and list(rds.removed_resources) == ["later"]
    client.ack(rds)
    server.publish(**{**BASE, "routes": {"r": ["b"], "later": ["a"]}})
    update = await client.recv()
    assert sorted(names(update)) == ["later", "r"]
    client.send(ROUTE, nonce=update.nonce, error="route r rejected")
    await client.expect_silence()  # not re-sent (R10)
    (proxy,) = server.registry.list()
    assert proxy.method == "rds-delta"
    (route,) = proxy.types
    assert route.nack_count == 1 and route.last_nack_message == "route r rejected"
    await client.close()


async def test_delta_request_limits_apply(server: Server) -> None:
    server.publish(**BASE)
    client = DeltaClient(server.channel)
    client.send(CLUSTER, initial={f"c{i}": "v" for i in range(60)})
    error = await client.error()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The bound counts initial_resource_versions too: a reconnect cannot smuggle in unbounded names (R45).
    assert "60 resource names" in (error.details() or "")
