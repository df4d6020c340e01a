"""ListenerSpec -> envoy.config.listener.v3.Listener: one HTTP connection manager, routes over RDS.

An Envoy listener binds an address; a gRPC listener (`kind: grpc`, issue 11) is an `api_listener` that a
proxyless gRPC client looks up by its `xds:///<name>` target, holding only the HCM with RDS and the router.
"""

from __future__ import annotations

import functools
from typing import Final

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from xds.policy.desired import InboundSpec, ListenerSpec, MtlsMode
from xds.translate.delivery import ADS, Delivery, config_source
from xds.translate.ingress_tls import add_ingress_tls_chains
from xds.translate.mesh_tls import RBAC_FILTER_NAME, downstream_transport_socket, rbac_filter
from xds.translate.routes import FAULT_FILTER_NAME
from xds.translate.tracing import build_tracing

HCM_FILTER_NAME: Final = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER_NAME: Final = "envoy.filters.http.router"
STDOUT_ACCESS_LOG_NAME: Final = "envoy.access_loggers.stdout"

# One access-log line per request on Envoy's stdout. Tests and operators grep `flags=` for the response flags
# (NR: no route, NC: no cluster, UH: no healthy upstream, ...) and `cluster=`/`host=` for where the request
# went; the operators are documented under "Access logging > Command operators" in Envoy's docs.
ACCESS_LOG_FORMAT: Final = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    "flags=%RESPONSE_FLAGS% route=%ROUTE_NAME% cluster=%UPSTREAM_CLUSTER% host=%UPSTREAM_HOST% "
    "duration_ms=%DURATION%\n"
)
# The inbound side of a sidecar also logs who called: the URI SAN of the client certificate, "-" for a
# plaintext request (issue 9).
INBOUND_ACCESS_LOG_FORMAT: Final = ACCESS_LOG_FORMAT.removesuffix("\n") + " peer=%DOWNSTREAM_PEER_URI_SAN%\n"
TLS_INSPECTOR_NAME: Final = "envoy.filters.listener.tls_inspector"


def _pack(message: Message) -> any_pb2.Any:
    # Deterministic so equal listeners always serialize to equal bytes (content-hash versions,
    # docs/protocol.md R14).
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


# The functools.cache'd builders take no argument (the access log one a flag), so each holds one or two
# messages for the life of the process: bounded, unlike a cache keyed by content (issue 7).
@functools.cache
def _router_filter() -> hcm_pb2.HttpFilter:
    # The router must be the last HTTP filter (http_connection_manager.proto, `http_filters`); Envoy >= 1.24
    # also requires its typed_config to be present.
    return hcm_pb2.HttpFilter(name=ROUTER_FILTER_NAME, typed_config=_pack(router_pb2.Router()))


@functools.cache
def _fault_filter() -> hcm_pb2.HttpFilter:
    # Injects nothing by itself: each route with a `fault` carries its own config (translate/routes.py).
    return hcm_pb2.HttpFilter(name=FAULT_FILTER_NAME, typed_config=_pack(fault_pb2.HTTPFault()))


@functools.cache
def _access_log(inbound: bool = False) -> accesslog_pb2.AccessLog:
    log_format = substitution_format_string_pb2.SubstitutionFormatString()
    log_format.text_format_source.inline_string = INBOUND_ACCESS_LOG_FORMAT if inbound else ACCESS_LOG_FORMAT
    return accesslog_pb2.AccessLog(
        name=STDOUT_ACCESS_LOG_NAME,
        typed_config=_pack(stream_pb2.StdoutAccessLog(log_format=log_format)),
    )


def build_http_connection_manager(spec: ListenerSpec, delivery: Delivery = ADS
                                  ) -> hcm_pb2.HttpConnectionManager:
    """The HCM for `spec`, with its RouteConfiguration fetched by name as `delivery` says (delivery.py)."""
    manager = hcm_pb2.HttpConnectionManager(stat_prefix=spec.name)
    manager.rds.config_source.CopyFrom(config_source(delivery))
    manager.rds.route_config_name = spec.route_config
    if spec.grpc:
        # A proxyless client NACKs an HTTP filter it does not know unless marked optional, and has no access
        # log or sidecar RBAC: the fault filter (gRFC A33) when a route injects faults, then the router.
        if spec.fault_filter:
            manager.http_filters.append(_fault_filter())
        manager.http_filters.append(_router_filter())
        return manager
    inbound = spec.inbound
    if inbound is not None and inbound.rules:
        # Authorization first, so a denied request never reaches the fault filter or the upstream (issue 9).
        manager.http_filters.append(hcm_pb2.HttpFilter(name=RBAC_FILTER_NAME,
                                                       typed_config=_pack(rbac_filter(inbound.rules))))
    if spec.fault_filter:
        manager.http_filters.append(_fault_filter())
    manager.http_filters.append(_router_filter())
    manager.access_log.append(_access_log(inbound is not None))
    if spec.tracing is not None:
        manager.tracing.CopyFrom(build_tracing(spec.tracing))  # issue 14 item 2, translate/tracing.py
    if inbound is not None and inbound.mtls is not MtlsMode.OFF:
        # Hand the verified client certificate's identity to the upstream as Envoy does for Istio
        # (x-forwarded-client-cert), replacing whatever a client sent.
        manager.forward_client_cert_details = hcm_pb2.HttpConnectionManager.SANITIZE_SET
        manager.set_current_client_cert_details.uri = True
    return manager


def build_listener(spec: ListenerSpec, delivery: Delivery = ADS) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(name=spec.name)
    if spec.grpc:
        # No address: gRPC clients read `api_listener` only (listener.proto, Listener.api_listener).
        listener.api_listener.api_listener.CopyFrom(_pack(build_http_connection_manager(spec, ADS)))
        return listener
    address = listener.address.socket_address
    address.address = spec.address
    address.port_value = spec.port
    manager = _pack(build_http_connection_manager(spec, delivery))
    inbound = spec.inbound
    if spec.tls is not None:
        # Edge TLS, one chain per SNI set (issue 9).
        add_ingress_tls_chains(listener, manager, spec.tls, delivery)
    elif inbound is None or inbound.mtls is MtlsMode.OFF:
        _chain(listener, manager)
    elif inbound.mtls is MtlsMode.STRICT:
        _chain(listener, manager, inbound, delivery)
    else:
        # Permissive: the TLS inspector tells a TLS handshake from plaintext, and each gets its own chain
        # (listener_components.proto, FilterChainMatch.transport_protocol "tls" / "raw_buffer").
        listener.listener_filters.add(name=TLS_INSPECTOR_NAME,
                                      typed_config=_pack(tls_inspector_pb2.TlsInspector()))
        _chain(listener, manager, inbound, delivery).filter_chain_match.transport_protocol = "tls"
        _chain(listener, manager).filter_chain_match.transport_protocol = "raw_buffer"
    return listener


def _chain(listener: listener_pb2.Listener, manager: any_pb2.Any,
           inbound: InboundSpec | None = None, delivery: Delivery = ADS) -> listener_pb2.FilterChain:
    """A filter chain with the HCM; with `inbound`, behind TLS with the workload certificate that requires
    a client certificate of the mesh CA (strict and permissive alike: a TLS client in the mesh has one)."""
    chain: listener_pb2.FilterChain = listener.filter_chains.add()
    network_filter = chain.filters.add()
    network_filter.name = HCM_FILTER_NAME
    network_filter.typed_config.CopyFrom(manager)
    if inbound is not None:
        chain.transport_socket.CopyFrom(downstream_transport_socket(require_client_certificate=True,
                                                                    delivery=delivery))
    return chain
