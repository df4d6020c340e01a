"""A raw xDS client for component tests: real gRPC, checks every message it receives."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from .raw_stream import NO_RESPONSE_WINDOW_S, RawStream

__all__ = ["NO_RESPONSE_WINDOW_S", "AdsClient", "resource_names"]

class AdsClient(RawStream[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse]):
    """One SotW stream. `send` requests, `recv` responses; every response is validated on arrival."""

    def __init__(self, channel: grpc.aio.Channel, *, node_id: str = "n1", cluster: str = "g",
                 method: str = "ads") -> None:
        super().__init__(discovery_pb2.DiscoveryResponse)
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        if method == "ads":
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
                self._requests())
        else:
            call = cds_pb2_grpc.ClusterDiscoveryServiceStub(channel).StreamClusters(self._requests())
        self._first = True
        self.nonces_seen: set[str] = set()
        self.requested_types: set[str] = set()
        self.received: list[discovery_pb2.DiscoveryResponse] = []
        self.last: dict[str, discovery_pb2.DiscoveryResponse] = {}
        self._start(call)

    def send(self, type_url: str, names: Iterable[str] = (), *, version: str | None = None,
             nonce: str | None = None, error: str | None = None, with_node: bool | None = None,
             ) -> None:
        last = self.last.get(type_url)
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=list(names),
            version_info=version if version is not None else (last.version_info if last else ""),
            response_nonce=nonce if nonce is not None else (last.nonce if last else ""))
        if with_node if with_node is not None else self._first:
            request.node.CopyFrom(self.node)
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._first = False
        self.requested_types.add(type_url)
        self._outbox.put_nowait(request)

    def ack(self, response: discovery_pb2.DiscoveryResponse, names: Iterable[str] = ()) -> None:
        self.send(response.type_url, names, version=response.version_info, nonce=response.nonce)

    async def recv(self, timeout_s: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        response = await self._next_response(timeout_s)
        # Every response: a version, a nonce never used before on this stream, a type we asked for,
        # and resources of that type only.
        assert response.version_info, response
        assert response.nonce and response.nonce not in self.nonces_seen, response.nonce
        assert response.type_url in self.requested_types, response.type_url
        assert all(r.type_url == response.type_url for r in response.resources)
        self.nonces_seen.add(response.nonce)
        self.received.append(response)
        self.last[response.type_url] = response
        return response

    def close(self) -> None:
        self._shutdown()


def resource_names(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    """Names of the resources in a response, read from the packed messages."""
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.config.listener.v3 import listener_pb2
    from envoy.config.route.v3 import route_pb2
    out = []
    for any_ in response.resources:
        for cls, attr in ((cluster_pb2.Cluster, "name"), (endpoint_pb2.ClusterLoadAssignment, "cluster_name"),
                          (listener_pb2.Listener, "name"), (route_pb2.RouteConfiguration, "name")):
            if any_.type_url.endswith(cls.DESCRIPTOR.full_name):
                message = cls()
                assert any_.Unpack(message)
                out.append(getattr(message, attr))
    return out
