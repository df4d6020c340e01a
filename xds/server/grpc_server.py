"""The grpc.aio server: ADS and the five single-type services, each in SotW and delta; health; management.

Health answers for every service the port serves (issue 11 item 3), calls to any other method are logged
and counted (unimplemented.py), and `--grpc-reflection` adds server reflection.

Discovery methods are registered through generic handlers whose response serializer is the identity, so
the pre-encoded bytes from `encode_response` go to the wire untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from xds.server.stream import StreamHandler
from xds.server.unimplemented import UnimplementedHandler, enable_reflection
from xds.server.variants import DELTA, SOTW, Variant
from xds.server.writes import write_within
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, TypeUrl

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

# (gRPC service, method, stream type or None for ADS, short method name for metrics, protocol variant)
_DISCOVERY_METHODS: tuple[tuple[str, str, TypeUrl | None, str, Variant], ...] = (
    (ADS_SERVICE, "StreamAggregatedResources", None, "ads", SOTW),
    ("envoy.service.cluster.v3.ClusterDiscoveryService", "StreamClusters", CLUSTER, "cds", SOTW),
    ("envoy.service.endpoint.v3.EndpointDiscoveryService", "StreamEndpoints", ENDPOINT, "eds", SOTW),
    ("envoy.service.listener.v3.ListenerDiscoveryService", "StreamListeners", LISTENER, "lds", SOTW),
    ("envoy.service.route.v3.RouteDiscoveryService", "StreamRoutes", ROUTE, "rds", SOTW),
    # Single-type SDS for clients that do not use ADS for secrets (docs/protocol.md R46).
    ("envoy.service.secret.v3.SecretDiscoveryService", "StreamSecrets", SECRET, "sds", SOTW),
    # Delta xDS (docs/protocol.md R28-R30; issue 11): the same services' Delta* methods, the default of
    # Istio, Consul, Kuma and Envoy Gateway. The metrics method label gets a "-delta" suffix.
    (ADS_SERVICE, "DeltaAggregatedResources", None, "ads-delta", DELTA),
    ("envoy.service.cluster.v3.ClusterDiscoveryService", "DeltaClusters", CLUSTER, "cds-delta", DELTA),
    ("envoy.service.endpoint.v3.EndpointDiscoveryService", "DeltaEndpoints", ENDPOINT, "eds-delta", DELTA),
    ("envoy.service.listener.v3.ListenerDiscoveryService", "DeltaListeners", LISTENER, "lds-delta", DELTA),
    ("envoy.service.route.v3.RouteDiscoveryService", "DeltaRoutes", ROUTE, "rds-delta", DELTA),
    ("envoy.service.secret.v3.SecretDiscoveryService", "DeltaSecrets", SECRET, "sds-delta", DELTA),
)
# Every gRPC service the xDS port serves, for health and reflection.
DISCOVERY_SERVICES: tuple[str, ...] = tuple(dict.fromkeys(service for service, *_ in _DISCOVERY_METHODS))
HEALTH_SERVICE = "grpc.health.v1.Health"


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Transport settings; the defaults follow docs/protocol.md R6/R7 (Istio's values in brackets)."""

    # The largest request a client may send; gRPC refuses a bigger one with RESOURCE_EXHAUSTED before
    # reading it (issue 7). A request holds names and a node: 20 000 names of 100 bytes are 2 MiB.
    max_receive_message_bytes: int = 4 * 1024 * 1024  # [4 MiB]
    max_concurrent_streams: int = 100_000  # [100000]
    keepalive_time_s: float = 30.0  # [30 s]
    keepalive_timeout_s: float = 10.0  # [10 s]
    max_connection_age_s: float = 30 * 60.0  # spreads load after scale-out [30 min]
    max_connection_age_grace_s: float = 60.0
    # New calls the gRPC core may hold before the handler takes them, and for how long (see below).
    max_pending_calls: int = 1_000_000
    max_call_wait_s: float = 600.0

    def channel_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self.max_receive_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            # Envoy pings every 30 s on its xDS connection (our bootstrap); allow it, and a bit faster.
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_connection_age_ms", int(self.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(self.max_connection_age_grace_s * 1000)),
            # Connect storms (issue 12; docs/operations.md "Connect storms"): grpc.aio asks the core for
            # one new call at a time from the event loop, so in a storm of thousands of proxies most new
            # streams wait in the core's pending queue until the busy loop gets to them. The core drops
            # waiting calls at random past 1000 and all of them past 3000 (the client sees CANCELLED),
            # and kills those that waited 30 s: 174 of 2000 and 1045 of 5000 streams were lost that way.
            # The queue holds only call headers; what bounds the work is admission.py and max_streams.
            ("grpc.server.max_pending_requests", self.max_pending_calls),
            ("grpc.server.max_pending_requests_hard_limit", self.max_pending_calls),
            ("grpc.server_max_unrequested_time_in_server", int(self.max_call_wait_s)),
        ]


def _identity(payload: bytes) -> bytes:
    return payload


def discovery_handlers(handler: StreamHandler) -> list[grpc.GenericRpcHandler]:
    handlers: list[grpc.GenericRpcHandler] = []
    by_service: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
    for service, method, stream_type, short, variant in _DISCOVERY_METHODS:
        by_service.setdefault(service, {})[method] = grpc.stream_stream_rpc_method_handler(
            _bind(handler, method=short, stream_type=stream_type, variant=variant),
            # Requests are decoded by the handler (limits.decode_request), so a malformed one ends the
            # stream with INVALID_ARGUMENT rather than gRPC's UNKNOWN.
            request_deserializer=_identity,
            response_serializer=_identity,
        )
    for service, methods in by_service.items():
        handlers.append(grpc.method_handlers_generic_handler(service, methods))
    return handlers


def _bind(handler: StreamHandler, *, method: str, stream_type: TypeUrl | None, variant: Variant
          ) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[object, object]],
                        Coroutine[Any, Any, None]]:
    # A coroutine handler writing through `context.write`, rather than an async generator, so that a
    # write can be given up on (issue 12; writes.py): a client that stops reading has its stream's state
    # freed after the write timeout instead of holding it, and its pending response, forever.
    async def serve(requests: AsyncIterator[bytes],
                    context: grpc.aio.ServicerContext[object, object]) -> None:
        responses = handler.handle(requests, context, method=method, stream_type=stream_type,
                                   variant=variant)
        async with contextlib.aclosing(responses):
            async for payload in responses:
                written = await write_within(context, payload, handler.write_timeout_s)
                # Dropped before waiting for the next response: an idle stream would otherwise keep
                # its last response (tens of KiB) alive (issue 12, memory per idle stream).
                del payload
                if not written:
                    break
            else:
                return
            # Timed out. Close the stream's handler first (its state, its max-streams slot): the status
            # below queues behind the unread response and reaches the client only once it reads again or
            # its connection ends (max_connection_age + grace at the latest); grpc.aio cannot reset one
            # stream.
            await responses.aclose()
            handler.write_timed_out(method)
        await context.abort(grpc.StatusCode.UNAVAILABLE,
                            f"the client did not read a response for {handler.write_timeout_s:g} s "
                            "(--write-timeout); reconnect")

    return serve


class HealthReporter:
    """The standard gRPC health service: NOT_SERVING until the first snapshot can be served."""

    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()

    async def set_serving(self, serving: bool, services: Sequence[str] = ("", *DISCOVERY_SERVICES)) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in services:
            await self.servicer.set(name, status)

    async def shut_down(self) -> None:
        """NOT_SERVING for every service, for good: a later set_serving(True) (a build finishing during the
        shutdown) is ignored (graceful shutdown, issue 14 item 6)."""
        await self.servicer.enter_graceful_shutdown()

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)


def build_server(handler: StreamHandler, *, address: str, options: ServerOptions,
                 extra: Sequence[Callable[[grpc.aio.Server], None]] = (),
                 credentials: grpc.ServerCredentials | None = None,
                 on_unimplemented: Callable[[str], None] | None = None,
                 reflection: bool = False) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server bound to `address` (port 0 picks one); returns it with the bound port.

    With `credentials` the port speaks TLS only (mTLS on the xDS port, issue 9: tls_reload.py makes them);
    without, plaintext."""
    server = grpc.aio.server(options=options.channel_options())
    server.add_generic_rpc_handlers(discovery_handlers(handler))
    for add in extra:
        add(server)
    if reflection:
        enable_reflection(server, (*DISCOVERY_SERVICES, HEALTH_SERVICE))
    if on_unimplemented is not None:
        # Last: gRPC asks generic handlers in order, so this one sees only methods nobody else serves.
        server.add_generic_rpc_handlers((UnimplementedHandler(
            on_unimplemented, served=(*DISCOVERY_SERVICES, HEALTH_SERVICE)),))
    port = (server.add_secure_port(address, credentials) if credentials is not None
            else server.add_insecure_port(address))
    if port == 0:
        raise OSError(f"could not bind the xDS server to {address}")
    return server, port
