"""A raw delta xDS client for component tests: real gRPC, checks every DeltaDiscoveryResponse on arrival."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.route.v3 import rds_pb2_grpc
from google.rpc import status_pb2

from .raw_stream import RawStream


class DeltaClient(RawStream[discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse]):
    """One delta stream (DeltaAggregatedResources, or DeltaRoutes with method="rds")."""

    def __init__(self, channel: grpc.aio.Channel, *, node_id: str = "n1", cluster: str = "g",
                 method: str = "ads") -> None:
        super().__init__(discovery_pb2.DeltaDiscoveryResponse)
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        if method == "ads":
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources(
                self._requests())
        else:
            call = rds_pb2_grpc.RouteDiscoveryServiceStub(channel).DeltaRoutes(self._requests())
        self._first = True
        self.nonces_seen: set[str] = set()
        self.last: dict[str, discovery_pb2.DeltaDiscoveryResponse] = {}
        # What the client holds per type (name -> version), updated as an accepting Envoy would.
        self.held: dict[str, dict[str, str]] = {}
        self._start(call)

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
        response = await self._next_response(timeout_s)
        # Every response: a nonce never used before, resources of its type, each with a name and version,
        # no name both added and removed.
        assert response.nonce and response.nonce not in self.nonces_seen
        self.nonces_seen.add(response.nonce)
        for r in response.resources:
            assert r.name and r.version and r.resource.type_url == response.type_url
        assert not {r.name for r in response.resources} & set(response.removed_resources)
        self.last[response.type_url] = response
        return response

    async def close(self) -> None:
        self._shutdown()


def names(response: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return [r.name for r in response.resources]
