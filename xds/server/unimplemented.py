"""Calls to methods the server does not serve: logged, counted, and answered UNIMPLEMENTED (issue 11 item 3).

An Envoy configured for a mode the server lacks (say `api_type: DELTA_GRPC` before delta xDS existed) gets
UNIMPLEMENTED and comes up with no configuration; without this handler that happened in silence. It is
registered after every real service, so gRPC consults it only for a method no other handler claims.

The metric label is the method only when it is one of the xDS methods an Envoy or gRPC client may call
(`KNOWN_METHODS`), "other" otherwise: the method name comes from the client, and a label taken from it
unchecked would let any client create series without bound (issue 7). The log line carries the real name,
cut to `MAX_LOGGED_METHOD` characters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import grpc

log = logging.getLogger("xds.server")

MAX_LOGGED_METHOD = 200
OTHER = "other"

_XDS_SERVICES = {
    "envoy.service.discovery.v3.AggregatedDiscoveryService": ("StreamAggregatedResources",
                                                              "DeltaAggregatedResources"),
    "envoy.service.cluster.v3.ClusterDiscoveryService": ("StreamClusters", "DeltaClusters", "FetchClusters"),
    "envoy.service.endpoint.v3.EndpointDiscoveryService": ("StreamEndpoints", "DeltaEndpoints",
                                                           "FetchEndpoints"),
    "envoy.service.listener.v3.ListenerDiscoveryService": ("StreamListeners", "DeltaListeners",
                                                           "FetchListeners"),
    "envoy.service.route.v3.RouteDiscoveryService": ("StreamRoutes", "DeltaRoutes", "FetchRoutes"),
    "envoy.service.route.v3.VirtualHostDiscoveryService": ("DeltaVirtualHosts",),
    "envoy.service.route.v3.ScopedRoutesDiscoveryService": ("StreamScopedRoutes", "DeltaScopedRoutes",
                                                            "FetchScopedRoutes"),
    "envoy.service.secret.v3.SecretDiscoveryService": ("StreamSecrets", "DeltaSecrets", "FetchSecrets"),
    "envoy.service.runtime.v3.RuntimeDiscoveryService": ("StreamRuntime", "DeltaRuntime", "FetchRuntime"),
    "envoy.service.extension.v3.ExtensionConfigDiscoveryService": ("StreamExtensionConfigs",
                                                                   "DeltaExtensionConfigs",
                                                                   "FetchExtensionConfigs"),
    "envoy.service.load_stats.v3.LoadReportingService": ("StreamLoadStats",),
    "envoy.service.status.v3.ClientStatusDiscoveryService": ("StreamClientStatus", "FetchClientStatus"),
    "grpc.reflection.v1alpha.ServerReflection": ("ServerReflectionInfo",),
    "grpc.reflection.v1.ServerReflection": ("ServerReflectionInfo",),
}
KNOWN_METHODS: frozenset[str] = frozenset(f"/{service}/{method}" for service, methods in _XDS_SERVICES.items()
                                          for method in methods)


def metric_label(method: str) -> str:
    return method if method in KNOWN_METHODS else OTHER


class UnimplementedHandler(grpc.GenericRpcHandler):
    """Claims every method no other handler did: logs it, reports it, answers UNIMPLEMENTED."""

    def __init__(self, on_call: Callable[[str], None], *, served: Iterable[str] = ()) -> None:
        self._on_call = on_call
        self._served = tuple(sorted(served))

    def service(self, handler_call_details: grpc.HandlerCallDetails
                ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = str(handler_call_details.method)
        on_call, served = self._on_call, self._served

        async def refuse(request: object, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
            # The peer is only known here, in the call; one line per call: these are rare and each matters.
            log.warning("unimplemented_method", extra={
                "method": method[:MAX_LOGGED_METHOD], "peer": context.peer(),
                "hint": "the client uses a mode or service this server does not serve; it serves "
                        + ", ".join(served)})
            on_call(metric_label(method))
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"method {method[:MAX_LOGGED_METHOD]} is not "
                                                               "served by this xDS server")

        # A stream-stream handler answers unary and streaming callers alike: the abort comes before any
        # message is read or written.
        return grpc.stream_stream_rpc_method_handler(refuse, request_deserializer=None,
                                                     response_serializer=None)


_DESCRIPTOR_MODULES = (
    "envoy.service.discovery.v3.ads_pb2", "envoy.service.cluster.v3.cds_pb2",
    "envoy.service.endpoint.v3.eds_pb2", "envoy.service.listener.v3.lds_pb2",
    "envoy.service.route.v3.rds_pb2", "envoy.service.secret.v3.sds_pb2", "grpc_health.v1.health_pb2",
)


def enable_reflection(server: grpc.aio.Server, services: Sequence[str]) -> None:
    """gRPC server reflection (grpcio-reflection) for `services`, so grpcurl and similar tools can list and
    call them without the protos (`--grpc-reflection`, docs/operations.md)."""
    import importlib

    from grpc_reflection.v1alpha import reflection

    # Reflection describes services from the default descriptor pool: load the modules that define them.
    for module in _DESCRIPTOR_MODULES:
        importlib.import_module(module)
    reflection.enable_server_reflection((*services, reflection.SERVICE_NAME), server)
