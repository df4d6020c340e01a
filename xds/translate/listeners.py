"""ListenerSpec -> envoy.config.listener.v3.Listener: one HTTP connection manager, routes over RDS."""

from __future__ import annotations

import functools
from typing import Final

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from xds.policy.desired import ListenerSpec
from xds.translate.clusters import ads_config_source
from xds.translate.routes import FAULT_FILTER_NAME

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


def _pack(message: Message) -> any_pb2.Any:
    # Deterministic so equal listeners always serialize to equal bytes (content-hash versions,
    # docs/protocol.md R14).
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


# Both functools.cache'd builders take no argument, so each holds exactly one message for the life of the
# process: bounded, unlike a cache keyed by content (issue 7).
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
def _access_log() -> accesslog_pb2.AccessLog:
    log_format = substitution_format_string_pb2.SubstitutionFormatString()
    log_format.text_format_source.inline_string = ACCESS_LOG_FORMAT
    return accesslog_pb2.AccessLog(
        name=STDOUT_ACCESS_LOG_NAME,
        typed_config=_pack(stream_pb2.StdoutAccessLog(log_format=log_format)),
    )


def build_http_connection_manager(spec: ListenerSpec) -> hcm_pb2.HttpConnectionManager:
    """The HCM for `spec`, with its RouteConfiguration fetched over ADS by name."""
    manager = hcm_pb2.HttpConnectionManager(stat_prefix=spec.name)
    manager.rds.config_source.CopyFrom(ads_config_source())
    manager.rds.route_config_name = spec.route_config
    if spec.fault_filter:
        manager.http_filters.append(_fault_filter())
    manager.http_filters.append(_router_filter())
    manager.access_log.append(_access_log())
    return manager


def build_listener(spec: ListenerSpec) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(name=spec.name)
    address = listener.address.socket_address
    address.address = spec.address
    address.port_value = spec.port
    chain = listener.filter_chains.add()
    network_filter = chain.filters.add()
    network_filter.name = HCM_FILTER_NAME
    network_filter.typed_config.CopyFrom(_pack(build_http_connection_manager(spec)))
    return listener
