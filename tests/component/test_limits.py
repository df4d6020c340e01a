"""Issue 7: every limit on what a client sends, answered with its gRPC status over a real grpc.aio server.

Each test starts a real server on 127.0.0.1:0 with the limit under test lowered (the defaults are in
xds/server/limits.py and docs/operations.md), provokes it with a real client, checks the status and the
metric hook, and checks that a well-behaved client on the same server is unaffected.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from tests.protocol.world import snapshot
from xds.cache.node import NodeGrouper
from xds.cache.snapshot import Snapshot, length_delimited
from xds.cache.store import GroupCounts, SnapshotStore
from xds.server.grpc_server import ADS_SERVICE, ServerOptions, build_server
from xds.server.limits import StreamLimits
from xds.server.stream import StreamHandler
from xds.typeurls import CLUSTER, ENDPOINT

from .ads_client import AdsClient, resource_names
from .test_ads_wire import Recorder

WORLD = dict(clusters={"a": 1, "b": 1}, listeners={"l": "r"}, routes={"r": ["a"]})


@dataclass
class Server:
    store: SnapshotStore
    handler: StreamHandler
    channel: grpc.aio.Channel
    recorder: Recorder
    limits_hit: list[str] = field(default_factory=list)

    def client(self, **kwargs: str) -> AdsClient:
        return AdsClient(self.channel, **kwargs)

    async def healthy_client_syncs(self) -> None:
        """A well-behaved client of another group still gets its clusters."""
        client = self.client(node_id="healthy", cluster="healthy")
        client.send(CLUSTER)
        cds = await client.recv()
        assert sorted(resource_names(cds)) == ["a", "b"]
        client.close()


ServerFactory = Callable[..., "asyncio.Future[Server]"]


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., object]]:
    started: list[tuple[grpc.aio.Server, grpc.aio.Channel, StreamHandler]] = []

    async def make(*, limits: StreamLimits | None = None, store: SnapshotStore | None = None,
                   options: ServerOptions | None = None,
                   builder: Callable[[str, Snapshot | None], Snapshot] | None = None) -> Server:
        store = store or SnapshotStore()
        hits: list[str] = []
        recorder = Recorder()
        handler = StreamHandler(store, grouper=NodeGrouper("cluster"), callbacks=recorder, limits=limits,
                                on_limit=hits.append)
        server, port = build_server(handler, address="127.0.0.1:0", options=options or ServerOptions())
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                            options=[("grpc.max_send_message_length", -1)])
        started.append((server, channel, handler))
        world = snapshot(**WORLD)  # type: ignore[arg-type]
        store.publish(builder or (lambda group, previous: world))
        return Server(store=store, handler=handler, channel=channel, recorder=recorder, limits_hit=hits)

    yield make
    for server, channel, handler in started:
        await channel.close()
        await server.stop(grace=None)
        handler.close()


async def raw_stream(channel: grpc.aio.Channel, payloads: list[bytes]) -> grpc.StatusCode:
    """Send undecoded bytes on ADS and return the status the server ends the stream with."""
    method = channel.stream_stream(f"/{ADS_SERVICE}/StreamAggregatedResources",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)

    async def requests() -> AsyncIterator[bytes]:
        for payload in payloads:
            yield payload
        await asyncio.sleep(10)  # keep our side open: the server must end the stream

    call = method(requests())
    return await asyncio.wait_for(call.code(), 10)


def request(**node: object) -> discovery_pb2.DiscoveryRequest:
    return discovery_pb2.DiscoveryRequest(type_url=CLUSTER, node=base_pb2.Node(**node))  # type: ignore[arg-type]


async def test_an_oversized_request_is_refused_before_it_is_read(start: Callable[..., object]) -> None:
    server: Server = await start(options=ServerOptions(max_receive_message_bytes=64 * 1024))  # type: ignore[misc]
    big = request(id="n1", cluster="g", user_agent_name="x" * (200 * 1024)).SerializeToString()
    assert await raw_stream(server.channel, [big]) == grpc.StatusCode.RESOURCE_EXHAUSTED
    await server.healthy_client_syncs()


async def test_bytes_that_are_not_a_request_end_the_stream_with_invalid_argument(
        start: Callable[..., object]) -> None:
    server: Server = await start()  # type: ignore[misc]
    # Field 1 (version_info) announced as length-delimited with a length far past the end.
    assert await raw_stream(server.channel, [b"\x0a\xff\xff\x03abc"]) == grpc.StatusCode.INVALID_ARGUMENT
    assert server.limits_hit == ["request_decode"]
    await server.healthy_client_syncs()


def nested_metadata(depth: int) -> struct_pb2.Struct:
    root = struct_pb2.Struct()
    inner = root
    for _ in range(depth - 1):
        inner = inner.fields["x"].struct_value
    inner.fields["leaf"].string_value = "v"
    return root


@pytest.mark.parametrize(("node", "limit", "message"), [
    (dict(id="i" * 2000, cluster="g"), "max_node_id_bytes", "node.id is 2000 bytes; the limit is 1024"),
    (dict(id="n1", cluster="c" * 1025), "max_node_cluster_bytes", "node.cluster is 1025 bytes"),
    (dict(id="n1", cluster="g", locality=base_pb2.Locality(region="r1", zone="z" * 257)),
     "max_node_locality_bytes", "node.locality.zone is 257 bytes; the limit is 256"),
    (dict(id="n1", cluster="g", metadata=struct_pb2.Struct(fields={
        "blob": struct_pb2.Value(string_value="m" * 70_000)})), "max_node_metadata_bytes",
     "node.metadata is 70"),
    (dict(id="n1", cluster="g", metadata=nested_metadata(20)), "max_node_metadata_depth",
     "nested deeper than 16 levels"),
])
async def test_node_fields_over_their_bounds_are_invalid_argument(
        start: Callable[..., object], node: dict[str, object], limit: str, message: str) -> None:
    server: Server = await start()  # type: ignore[misc]
    method = server.channel.stream_stream(f"/{ADS_SERVICE}/StreamAggregatedResources",
                                          request_serializer=lambda m: m.SerializeToString(),
                                          response_deserializer=lambda b: b)
    call = method(iter([request(**node)]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")
    assert len(caught.value.details() or "") < 300  # the status never echoes the oversized value
    assert server.limits_hit == [limit]
    await server.healthy_client_syncs()


async def test_deep_metadata_that_protobuf_refuses_is_invalid_argument_not_unknown(
        start: Callable[..., object]) -> None:
    server: Server = await start()  # type: ignore[misc]
    # Past protobuf's own recursion limit (100 messages) the bytes no longer decode at all, so they are
    # written by hand: Struct{fields: {"x": Value{struct_value: ...}}}, 150 levels deep.
    struct = b""
    for _ in range(150):
        value = length_delimited(5, struct)  # Value.struct_value
        entry = length_delimited(1, b"x") + length_delimited(2, value)  # map entry: key, value
        struct = length_delimited(1, entry)  # Struct.fields
    node = length_delimited(1, b"n1") + length_delimited(2, b"g") + length_delimited(3, struct)
    payload = length_delimited(3, node) + length_delimited(4, CLUSTER.encode())  # DiscoveryRequest
    assert await raw_stream(server.channel, [payload]) == grpc.StatusCode.INVALID_ARGUMENT
    assert server.limits_hit == ["request_decode"]


async def test_too_many_resource_names_or_a_long_name_is_invalid_argument(
        start: Callable[..., object]) -> None:
    server: Server = await start(limits=StreamLimits(max_resource_names=100))  # type: ignore[misc]
    client = server.client()
    client.send(ENDPOINT, [f"c{i}" for i in range(101)])
    assert await client.status() == grpc.StatusCode.INVALID_ARGUMENT
    client = server.client()
    client.send(ENDPOINT, ["n" * 1025])
    assert await client.status() == grpc.StatusCode.INVALID_ARGUMENT
    assert server.limits_hit == ["max_resource_names", "max_name_bytes"]
    await server.healthy_client_syncs()


async def test_placeholders_for_unknown_eds_names_are_capped_per_stream(start: Callable[..., object]) -> None:
    server: Server = await start(limits=StreamLimits(max_placeholders=10))  # type: ignore[misc]
    client = server.client()
    unknown = [f"ghost-{i}" for i in range(500)]
    client.send(ENDPOINT, ["a", *unknown])
    eds = await client.recv()
    names = resource_names(eds)
    # The known cluster is always answered; placeholders only for the first 10 unknown names.
    assert "a" in names and len(names) == 1 + 10
    assert server.limits_hit == ["max_placeholders"]


async def test_a_request_flood_is_slowed_to_the_rate_and_the_stream_survives(
        start: Callable[..., object]) -> None:
    server: Server = await start(limits=StreamLimits(request_rate_per_s=50, request_burst=10))  # type: ignore[misc]
    client = server.client()
    client.send(CLUSTER)
    cds = await client.recv()
    client.ack(cds)
    began = time.monotonic()
    for _ in range(60):  # a NACK/stale-nonce flood: every request carries the same old nonce
        client.send(CLUSTER, nonce="stale", version="")
    client.send(CLUSTER, ["a"], version=cds.version_info, nonce=cds.nonce)  # a real subscription change
    narrowed = await client.recv(timeout_s=10)
    # 61 requests past a burst of 10 at 50/s cannot be read in less than about 1 s.
    assert time.monotonic() - began >= 0.9
    assert resource_names(narrowed) == ["a"]
    assert server.limits_hit and set(server.limits_hit) == {"request_rate_per_s"}  # once per episode


async def test_streams_past_the_server_limit_are_resource_exhausted(start: Callable[..., object]) -> None:
    server: Server = await start(limits=StreamLimits(max_streams=2))  # type: ignore[misc]
    first, second = server.client(node_id="n1"), server.client(node_id="n2")
    for client in (first, second):
        client.send(CLUSTER)
        await client.recv()
    third = server.client(node_id="n3")
    third.send(CLUSTER)
    assert await third.status() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.limits_hit == ["max_streams"]
    first.close()
    for _ in range(100):  # the server notices the cancelled stream asynchronously
        if server.handler.open_streams < 2:
            break
        await asyncio.sleep(0.02)
    again = server.client(node_id="n4")
    again.send(CLUSTER)
    assert resource_names(await again.recv())


async def test_a_new_group_past_the_cap_is_refused_until_one_goes_idle(start: Callable[..., object]) -> None:
    server: Server = await start(store=SnapshotStore(max_groups=2))  # type: ignore[misc]
    a, b = server.client(cluster="ga"), server.client(cluster="gb")
    for client in (a, b):
        client.send(CLUSTER)
        await client.recv()
    c = server.client(cluster="gc")
    c.send(CLUSTER)
    assert await c.status() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.limits_hit == ["node_groups"]
    # The refused stream was never opened, so it is not reported as closed either (the streams gauge).
    assert len(server.recorder.of("open")) == 2 and server.recorder.of("closed") == []
    # A client of a group already held is never refused.
    a2 = server.client(node_id="n2", cluster="ga")
    a2.send(CLUSTER)
    assert resource_names(await a2.recv())
    b.close()
    for _ in range(100):
        if server.store.counts().idle:
            break
        await asyncio.sleep(0.02)
    c = server.client(cluster="gc")  # "gb" is idle now and makes room
    c.send(CLUSTER)
    assert resource_names(await c.recv())


async def test_2000_groups_opened_and_closed_leave_none_after_the_grace(start: Callable[..., object]) -> None:
    store = SnapshotStore(max_groups=5000, idle_grace_s=0.5)
    server: Server = await start(store=store)  # type: ignore[misc]

    async def one(i: int) -> None:
        client = server.client(node_id=f"n{i}", cluster=f"group-{i}")
        client.send(CLUSTER)
        assert resource_names(await client.recv(timeout_s=30))
        client.close()

    for batch in range(0, 2000, 200):
        await asyncio.gather(*(one(i) for i in range(batch, batch + 200)))
    for _ in range(200):
        if server.handler.open_streams == 0:
            break
        await asyncio.sleep(0.05)
    assert store.counts().live == 0 and store.counts().idle == 2000
    await asyncio.sleep(0.6)
    assert len(store.sweep()) == 2000
    assert store.counts() == GroupCounts(live=0, idle=0) and store.groups() == []


async def test_a_new_groups_build_does_not_block_the_event_loop(start: Callable[..., object]) -> None:
    release = threading.Event()
    world = snapshot(**WORLD)  # type: ignore[arg-type]

    def build(group: str, previous: Snapshot | None) -> Snapshot:
        if group == "slow":
            assert release.wait(20), "the test never released the slow build"
        return world

    server: Server = await start(builder=build)  # type: ignore[misc]
    server.store.get("healthy")  # built before: new groups' first builds queue on one worker thread
    slow = server.client(node_id="slow-1", cluster="slow")
    slow.send(CLUSTER)
    # While the slow group builds (on the worker thread), another group's client is served: had the
    # build run on the event loop, this would time out.
    await server.healthy_client_syncs()
    await slow.expect_silence()
    release.set()
    assert sorted(resource_names(await slow.recv())) == ["a", "b"]


async def test_a_client_that_does_not_read_gets_the_latest_state_only(start: Callable[..., object]) -> None:
    server: Server = await start()  # type: ignore[misc]
    client = server.client()
    client.send(CLUSTER)
    first = await client.recv()
    client.ack(first)
    # 50 new worlds while the client reads nothing: when it returns, it must not find one response per
    # world waiting, only what leads it to the latest.
    for i in range(50):
        world = snapshot(clusters={"a": 1, f"c{i}": 1})
        server.store.publish(lambda group, previous, w=world: w)  # type: ignore[misc]
    latest = server.store.get("g")
    assert latest is not None
    responses = []
    while not responses or responses[-1].version_info != latest.version(CLUSTER):
        responses.append(await client.recv(timeout_s=10))
        client.ack(responses[-1])
    await client.expect_silence()
    assert len(responses) <= 2  # never one response per intermediate world


async def test_requests_past_the_servers_pending_budget_are_resource_exhausted(
        start: Callable[..., object]) -> None:
    server: Server = await start(limits=StreamLimits(max_pending_request_bytes=10_000))  # type: ignore[misc]
    client = server.client()
    client.send(ENDPOINT, [f"cluster-{i:05d}" for i in range(1000)])  # ~16 KB: more than the whole budget
    assert await client.status() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.limits_hit == ["max_pending_request_bytes"]
    await server.healthy_client_syncs()  # small requests still fit


async def test_each_locality_of_a_group_counts_against_the_cap(start: Callable[..., object]) -> None:
    # A node's locality makes its own snapshot (issue 8, cache/node.py), so a client that varies its zone
    # is bounded by the same cap as one that varies its group.
    built: list[str] = []
    base = snapshot()

    def build(group: str, previous: Snapshot | None) -> Snapshot:
        built.append(group)
        return base

    server: Server = await start(store=SnapshotStore(max_groups=2), builder=build)  # type: ignore[misc]
    for zone in ("a", "b", "c"):
        client = server.client(node_id=f"n-{zone}", cluster="ga")
        client.node.locality.CopyFrom(base_pb2.Locality(region="r1", zone=zone))
        client.send(CLUSTER)
        if zone == "c":
            assert await client.status() == grpc.StatusCode.RESOURCE_EXHAUSTED
        else:
            assert (await client.recv()).type_url == CLUSTER
    assert server.limits_hit == ["node_groups"]
    assert sorted(built) == ['ga|locality=["r1", "a", ""]', 'ga|locality=["r1", "b", ""]']
