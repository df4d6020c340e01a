"""Issue 12 over a real grpc.aio server: connect-storm admission and clients that stop reading.

Admission (xds/server/admission.py): a stream past --max-initial-syncs or --max-stream-starts-per-second
ends at once with UNAVAILABLE, is counted under its limit, and a stream admitted later syncs. Stuck
clients (xds/server/writes.py): a stream whose client reads nothing holds one response in flight and the
latest snapshot however often the catalog changes, and is ended after the write timeout.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from tests.protocol.world import snapshot
from xds.cache.node import NodeGrouper
from xds.cache.snapshot import Snapshot
from xds.cache.store import SnapshotStore
from xds.server.admission import STARTS_LIMIT, SYNCS_LIMIT, Admission, AdmissionSettings
from xds.server.grpc_server import ADS_SERVICE, ServerOptions, build_server
from xds.server.limits import StreamLimits
from xds.server.stream import StreamHandler
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

from .ads_client import AdsClient, resource_names
from .test_ads_wire import Recorder

WORLD = dict(clusters={"a": 1, "b": 1}, listeners={"l": "r"}, routes={"r": ["a"]})


@dataclass
class Server:
    store: SnapshotStore
    handler: StreamHandler
    channel: grpc.aio.Channel
    port: int
    recorder: Recorder
    limits_hit: list[str] = field(default_factory=list)

    def client(self, **kwargs: str) -> AdsClient:
        return AdsClient(self.channel, **kwargs)


Start = Callable[..., Coroutine[Any, Any, Server]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    started: list[tuple[grpc.aio.Server, grpc.aio.Channel, StreamHandler]] = []

    async def make(*, admission: AdmissionSettings | None = None, limits: StreamLimits | None = None,
                   world: Snapshot | None = None) -> Server:
        store = SnapshotStore()
        hits: list[str] = []
        recorder = Recorder()
        handler = StreamHandler(store, grouper=NodeGrouper("cluster"), callbacks=recorder, limits=limits,
                                on_limit=hits.append, admission=Admission(admission or AdmissionSettings()))
        server, port = build_server(handler, address="127.0.0.1:0", options=ServerOptions())
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        started.append((server, channel, handler))
        first = world or snapshot(**WORLD)  # type: ignore[arg-type]
        store.publish(lambda group, previous: first)
        return Server(store=store, handler=handler, channel=channel, port=port, recorder=recorder,
                      limits_hit=hits)

    yield make
    for server, channel, handler in started:
        await channel.close()
        await server.stop(0)
        handler.close()


async def full_sync(client: AdsClient) -> None:
    """CDS, EDS, LDS and RDS, each ACKed, as Envoy does at start-up."""
    client.send(CLUSTER)
    cds = await client.recv()
    client.ack(cds)
    client.send(ENDPOINT, resource_names(cds))
    client.ack(await client.recv(), resource_names(cds))
    client.send(LISTENER)
    client.ack(await client.recv())
    client.send(ROUTE, ["r"])
    client.ack(await client.recv(), ["r"])


async def poll(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_stream_past_the_initial_sync_bound_is_unavailable_until_one_syncs(start: Start) -> None:
    server = await start(admission=AdmissionSettings(max_initial_syncs=1))
    syncing = server.client(node_id="n1")
    syncing.send(CLUSTER)
    await syncing.recv()  # admitted, in its initial sync (CDS only so far)
    refused = server.client(node_id="n2")
    refused.send(CLUSTER)
    assert await refused.status() == grpc.StatusCode.UNAVAILABLE
    assert "--max-initial-syncs" in await refused._call.details()
    assert server.limits_hit == [SYNCS_LIMIT]
    # Refused before it was opened: never reported as an open (or closed) stream.
    assert [e for e in server.recorder.of("open")] and len(server.recorder.of("open")) == 1
    syncing.last.clear()
    syncing.requested_types.clear()
    await full_sync(syncing)  # ACKs of all four types: its initial sync is over
    await poll(lambda: server.handler._admission.syncing == 0)
    later = server.client(node_id="n3")
    await full_sync(later)
    syncing.close()
    later.close()


async def test_streams_past_the_start_rate_are_unavailable_and_counted(start: Start) -> None:
    server = await start(admission=AdmissionSettings(starts_per_s=0.5, start_burst=2))
    admitted = [server.client(node_id=f"n{i}") for i in range(2)]
    for client in admitted:
        client.send(CLUSTER)
        assert sorted(resource_names(await client.recv())) == ["a", "b"]
    refused = server.client(node_id="n9")
    refused.send(CLUSTER)
    assert await refused.status() == grpc.StatusCode.UNAVAILABLE
    assert "per second" in await refused._call.details()
    assert server.limits_hit == [STARTS_LIMIT]
    for client in admitted:
        client.close()


# --- clients that stop reading -----------------------------------------------------------------------

CLUSTERS = 150
ENDPOINTS = 150  # ~22 500 endpoints: an EDS response of about 0.7 MB


def large_worlds(count: int) -> list[Snapshot]:
    """`count` different large worlds (cluster contents differ), published in turn as catalog changes."""
    return [snapshot(clusters={f"c{i:04d}": 1 + k for i in range(CLUSTERS)},
                     endpoints={f"c{i:04d}": ENDPOINTS + k for i in range(CLUSTERS)})
            for k in range(count)]


class StuckClient:
    """A raw ADS stream that asks for CDS and EDS of every cluster and then reads nothing."""

    def __init__(self, port: int) -> None:
        # Its own connection, with no BDP probing so the HTTP/2 window stays small and fills fast.
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", -1)])
        method = self.channel.stream_stream(f"/{ADS_SERVICE}/StreamAggregatedResources",
                                            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                                            response_deserializer=lambda b: b)
        node = base_pb2.Node(id="stuck", cluster="g")
        names = [f"c{i:04d}" for i in range(CLUSTERS)]
        self._open = asyncio.Event()

        async def requests() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
            yield discovery_pb2.DiscoveryRequest(type_url=CLUSTER, node=node)
            yield discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=names)
            await self._open.wait()  # never half-closes: the stream stays open, unread

        self.call = method(requests())

    async def read_until_ended(self) -> None:
        for _ in range(100):
            await asyncio.wait_for(self.call.read(), 10)
        raise AssertionError("the stream did not end")

    async def close(self) -> None:
        self._open.set()
        self.call.cancel()
        await self.channel.close()


def sent(server: Server) -> int:
    """Responses whose write completed (the callback runs once gRPC took the bytes)."""
    return len(server.recorder.of("sent"))


async def test_a_client_that_never_reads_holds_one_response_whatever_the_changes(start: Start) -> None:
    worlds = large_worlds(3)
    server = await start(world=worlds[0], limits=StreamLimits(write_timeout_s=0))  # no timeout here
    stuck = StuckClient(server.port)
    await poll(lambda: server.handler.open_streams == 1)
    await asyncio.sleep(0.5)  # let it fill the windows and block on a write (nothing to poll for)
    for k in range(3):  # every world's responses encoded once, before measuring
        server.store.publish(lambda group, previous, w=worlds[k]: w)  # type: ignore[misc]
        await asyncio.sleep(0.2)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sent_before = sent(server)
        for change in range(50):
            world = worlds[change % 3]
            server.store.publish(lambda group, previous, w=world: w)  # type: ignore[misc]
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 50 changes of ~0.7 MB responses: queued, they would be ~35 MB. Held: nothing per change.
    assert grown < 512 * 1024, grown
    assert sent(server) - sent_before <= 1  # at most the one write that was in flight
    assert server.handler.open_streams == 1
    await stuck.close()
    await poll(lambda: server.handler.open_streams == 0)


async def test_a_client_that_never_reads_is_ended_after_the_write_timeout(start: Start) -> None:
    worlds = large_worlds(2)
    server = await start(world=worlds[0], limits=StreamLimits(write_timeout_s=1.0))
    stuck = StuckClient(server.port)
    await poll(lambda: server.handler.open_streams == 1)
    for change in range(10):
        server.store.publish(lambda group, previous, w=worlds[(change + 1) % 2]: w)  # type: ignore[misc]
        await asyncio.sleep(0.05)
    await poll(lambda: server.handler.open_streams == 0)
    assert server.limits_hit == ["write_timeout_s"]
    assert server.recorder.of("closed"), "the stream's close was reported"
    # The client reads again: what was already on its way, then the status (queued behind it).
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await stuck.read_until_ended()
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "--write-timeout" in (ended.value.details() or "")
    await stuck.close()
    # A healthy client is served as before.
    healthy = server.client(node_id="healthy", cluster="h")
    healthy.send(CLUSTER)
    assert len(resource_names(await healthy.recv())) == CLUSTERS
    healthy.close()


async def test_a_stream_that_never_asks_for_every_type_leaves_its_initial_sync_after_a_while(
        start: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    import xds.server.stream as stream_module
    monkeypatch.setattr(stream_module, "_INITIAL_SYNC_MAX_S", 0.3)
    server = await start(admission=AdmissionSettings(max_initial_syncs=1))
    cds_only = server.client(node_id="n1")  # a proxy without listeners: CDS and EDS, never LDS or RDS
    cds_only.send(CLUSTER)
    cds_only.ack(await cds_only.recv())
    await poll(lambda: server.handler._admission.syncing == 0)
    later = server.client(node_id="n2")
    await full_sync(later)
    cds_only.close()
    later.close()
