"""A raw delta xDS client for component tests: real gRPC, checks every DeltaDiscoveryResponse on arrival."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.route.v3 import rds_pb2_grpc
from google.rpc import status_pb2

from .ads_client import NO_RESPONSE_WINDOW_S


class DeltaClient:
    """One delta stream (DeltaAggregatedResources, or DeltaRoutes with method="rds")."""

    def __init__(self, channel: grpc.aio.Channel, *, node_id: str = "n1", cluster: str = "g",
                 method: str = "ads") -> None:
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        self._outbox: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()
        if method == "ads":
            self._call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources(
                self._requests())
        else:
            self._call = rds_pb2_grpc.RouteDiscoveryServiceStub(channel).DeltaRoutes(self._requests())
        self._first = True
        self.nonces_seen: set[str] = set()
        self.last: dict[str, discovery_pb2.DeltaDiscoveryResponse] = {}
        # What the client holds per type (name -> version), updated as an accepting Envoy would.
        self.held: dict[str, dict[str, str]] = {}
        self._inbox: asyncio.Queue[object] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read_all())

    async def _read_all(self) -> None:
        try:
            while True:
                message = await self._call.read()
                self._inbox.put_nowait(message)
                if message is grpc.aio.EOF:
                    return
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            self._inbox.put_nowait(exc)

    async def _requests(self) -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
        while True:
            item = await self._outbox.get()
            if item is None:
                return
            yield item

    def send(self, type_url: str, subscribe: Iterable[str] = (), unsubscribe: Iterable[str] = (), *,
             nonce: str = "", error: str | None = None, initial: Mapping[str, str] | None = None) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe), response_nonce=nonce,
            initial_resource_versions=dict(initial or {}))
        if self._first:
            request.node.CopyFrom(self.node)
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._first = False
        self._outbox.put_nowait(request)

    def ack(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        held = self.held.setdefault(response.type_url, {})
        for r in response.resources:
            held[r.name] = r.version
        for name in response.removed_resources:
            held.pop(name, None)
        self.send(response.type_url, nonce=response.nonce)

    async def recv(self, timeout_s: float = 5.0) -> discovery_pb2.DeltaDiscoveryResponse:
        response = await asyncio.wait_for(self._inbox.get(), timeout_s)
        assert response is not grpc.aio.EOF, "stream ended"
        assert not isinstance(response, BaseException), f"stream failed: {response!r}"
        assert isinstance(response, discovery_pb2.DeltaDiscoveryResponse)
        # Every response: a nonce never used before, resources of its type, each with a name and version,
        # no name both added and removed.
        assert response.nonce and response.nonce not in self.nonces_seen
        self.nonces_seen.add(response.nonce)
        for r in response.resources:
            assert r.name and r.version and r.resource.type_url == response.type_url
        assert not {r.name for r in response.resources} & set(response.removed_resources)
        self.last[response.type_url] = response
        return response

    async def expect_nothing(self, window_s: float = NO_RESPONSE_WINDOW_S) -> None:
        try:
            item = await asyncio.wait_for(self._inbox.get(), window_s)
        except TimeoutError:
            return
        raise AssertionError(f"expected no response, got {item!r}")

    async def error(self, timeout_s: float = 5.0) -> grpc.aio.AioRpcError:
        item = await asyncio.wait_for(self._inbox.get(), timeout_s)
        assert isinstance(item, grpc.aio.AioRpcError), f"expected the stream to fail, got {item!r}"
        return item

    async def close(self) -> None:
        self._outbox.put_nowait(None)
        self._call.cancel()
        self._reader.cancel()


def names(response: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return [r.name for r in response.resources]
