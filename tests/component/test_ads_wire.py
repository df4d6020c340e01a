"""The protocol cases again, over the wire: a real grpc.aio server on 127.0.0.1:0 and a raw ADS client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc
import pytest

from tests.protocol.world import snapshot
from xds.cache.node import NodeGrouper
from xds.cache.snapshot import Snapshot
from xds.cache.store import SnapshotStore
from xds.server.callbacks import StreamInfo
from xds.server.grpc_server import ServerOptions, build_server
from xds.server.stream import StreamHandler
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

from .ads_client import NO_RESPONSE_WINDOW_S, AdsClient, resource_names

BASE = dict(clusters={"a": 1, "b": 1}, listeners={"l": "r"}, routes={"r": ["a"]})


@dataclass
class Recorder:
    """Callbacks that keep everything, for assertions."""

    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    convergence: list[float | None] = field(default_factory=list)

    def on_stream_open(self, stream: StreamInfo) -> None:
        self.events.append(("open", {"node": stream.node_id, "group": stream.group}))

    def on_stream_closed(self, stream: StreamInfo) -> None:
        self.events.append(("closed", {"node": stream.node_id}))

    def on_response_sent(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
                         resource_names: Sequence[str], size_bytes: int) -> None:
        self.events.append(("sent", {"type_url": type_url, "version": version}))

    def on_ack(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
               convergence_s: float | None = None) -> None:
        self.events.append(("ack", {"type_url": type_url, "version": version}))
        self.convergence.append(convergence_s)

    def on_nack(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
                rejected_version: str, message: str) -> None:
        self.events.append(("nack", {"type_url": type_url, "rejected": rejected_version, "message": message}))

    def of(self, kind: str) -> list[dict[str, object]]:
        return [e for k, e in self.events if k == kind]


@dataclass
class Harness:
    store: SnapshotStore
    recorder: Recorder
    channel: grpc.aio.Channel
    world: dict[str, Snapshot] = field(default_factory=dict)

    def publish(self, **spec: object) -> None:
        snap = snapshot(**spec)  # type: ignore[arg-type]
        self.store.publish(lambda group, previous: snap)

    def client(self, **kwargs: str) -> AdsClient:
        return AdsClient(self.channel, **kwargs)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    store = SnapshotStore()
    recorder = Recorder()
    handler = StreamHandler(store, grouper=NodeGrouper("cluster"), callbacks=recorder)
    server, port = build_server(handler, address="127.0.0.1:0", options=ServerOptions())
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Harness(store=store, recorder=recorder, channel=channel)
    finally:
        await channel.close()
        await server.stop(grace=None)


async def start_up(client: AdsClient) -> None:
    """Envoy's start-up sequence: CDS, EDS for the clusters, LDS, RDS for the listeners' routes."""
    client.send(CLUSTER)
    cds = await client.recv()
    client.ack(cds)
    client.send(ENDPOINT, resource_names(cds), nonce="", version="")
    eds = await client.recv()
    client.ack(eds, resource_names(cds))
    client.send(LISTENER)
    lds = await client.recv()
    client.ack(lds)
    client.send(ROUTE, ["r"], nonce="", version="")
    rds = await client.recv()
    client.ack(rds, ["r"])


async def test_p1_no_node_is_invalid_argument_with_nothing_sent(harness: Harness) -> None:
    harness.publish(**BASE)
    client = harness.client()
    client.send(CLUSTER, with_node=False)
    assert await client.status() == grpc.StatusCode.INVALID_ARGUMENT
    assert client.received == []


async def test_p1_ads_without_type_url_is_invalid_argument(harness: Harness) -> None:
    harness.publish(**BASE)
    client = harness.client()
    client.send("")
    assert await client.status() == grpc.StatusCode.INVALID_ARGUMENT
    assert client.received == []


async def test_p2_wildcard_then_silent_ack_over_the_wire(harness: Harness) -> None:
    harness.publish(**BASE)
    client = harness.client()
    client.send(CLUSTER)
    cds = await client.recv()
    assert sorted(resource_names(cds)) == ["a", "b"]
    assert cds.version_info == harness.store.get("g").version(CLUSTER)  # type: ignore[union-attr]
    client.ack(cds)
    await client.expect_silence()
    assert harness.recorder.of("ack") == [{"type_url": CLUSTER, "version": cds.version_info}]
    # The ACK closes the interval that opened when the request asked for the content.
    (convergence,) = harness.recorder.convergence
    assert convergence is not None and 0 < convergence < NO_RESPONSE_WINDOW_S
    client.close()


async def test_p3_nack_is_reported_and_never_repushed(harness: Harness) -> None:
    harness.publish(**BASE)
    client = harness.client()
    await start_up(client)
    harness.publish(clusters={"a": 2, "b": 1}, listeners={"l": "r"}, routes={"r": ["a"]})
    cds = await client.recv()
    eds = await client.recv()  # a changed, so its endpoints follow right away (R21)
    assert eds.type_url == ENDPOINT and resource_names(eds) == ["a"]
    client.ack(eds, ["a", "b"])
    client.send(CLUSTER, version=client.received[0].version_info, nonce=cds.nonce, error="bad cluster a")
    await client.expect_silence(1.0)
    (nack,) = harness.recorder.of("nack")
    assert nack == {"type_url": CLUSTER, "rejected": cds.version_info, "message": "bad cluster a"}
    harness.publish(clusters={"a": 3, "b": 1}, listeners={"l": "r"}, routes={"r": ["a"]})
    fixed = await client.recv()
    assert fixed.type_url == CLUSTER and fixed.version_info != cds.version_info
    client.close()


async def test_p9_push_order_over_the_wire(harness: Harness) -> None:
    harness.publish(clusters={"x": 1}, listeners={"l": "r"}, routes={"r": ["x"]})
    client = harness.client()
    await start_up(client)
    harness.publish(clusters={"y": 1}, listeners={"l": "r"}, routes={"r": ["y"]})
    cds = await client.recv()
    assert sorted(resource_names(cds)) == ["x", "y"]
    client.ack(cds)
    client.send(ENDPOINT, ["x", "y"])
    eds = await client.recv()
    assert resource_names(eds) == ["y"]
    client.ack(eds, ["x", "y"])
    rds = await client.recv()
    assert rds.type_url == ROUTE
    client.ack(rds, ["r"])
    final = await client.recv()
    assert final.type_url == CLUSTER and resource_names(final) == ["y"]
    client.close()


async def test_p11b_overlapping_streams_of_one_node(harness: Harness) -> None:
    harness.publish(**BASE)
    first, second = harness.client(), harness.client()
    await start_up(first)
    await start_up(second)
    first.close()
    await asyncio.sleep(0.1)
    harness.publish(clusters={"a": 1, "b": 1, "c": 1}, listeners={"l": "r"}, routes={"r": ["a"]})
    cds = await second.recv()
    assert sorted(resource_names(cds)) == ["a", "b", "c"]
    second.close()


async def test_f2_nothing_is_served_before_the_first_snapshot(harness: Harness) -> None:
    client = harness.client()
    client.send(CLUSTER)
    await client.expect_silence()  # held open, no empty CDS
    harness.publish(**BASE)
    cds = await client.recv()
    assert sorted(resource_names(cds)) == ["a", "b"]
    client.close()


async def test_single_type_cds_stream(harness: Harness) -> None:
    harness.publish(**BASE)
    client = harness.client(method="cds")
    client.send(CLUSTER)
    cds = await client.recv()
    assert sorted(resource_names(cds)) == ["a", "b"]
    client.ack(cds)
    await client.expect_silence()
    client.close()


async def test_node_groups_get_their_own_snapshots(harness: Harness) -> None:
    per_group = {"g": snapshot(clusters={"a": 1}), "h": snapshot(clusters={"h1": 1, "h2": 1})}
    harness.store.publish(lambda group, previous: per_group[group])
    a, b = harness.client(cluster="g"), harness.client(node_id="n2", cluster="h")
    a.send(CLUSTER)
    b.send(CLUSTER)
    assert resource_names(await a.recv()) == ["a"]
    assert sorted(resource_names(await b.recv())) == ["h1", "h2"]
    assert {e["group"] for e in harness.recorder.of("open")} == {"g", "h"}
    a.close()
    b.close()
