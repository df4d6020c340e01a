"""A listener's edge TLS (issue 9 item 7): one filter chain per certificate, chosen by the client's SNI.

The TLS inspector listener filter reads the SNI of the ClientHello; each chain matches its certificate's
`server_names` (listener_components.proto, FilterChainMatch.server_names) and terminates TLS with a
DownstreamTlsContext whose certificate comes over SDS by name, so a rotated file is a new Secret version
that Envoy swaps in for new handshakes without changing the listener (docs/security.md, "Edge TLS"). A chain
without server names matches any SNI no other chain claims, and connections without SNI.
"""

from __future__ import annotations

import functools
from typing import Final

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import any_pb2

from xds.policy.tls_specs import IngressTlsSpec
from xds.translate.delivery import ADS, Delivery
from xds.translate.secrets import sds_secret_config
from xds.translate.tls import transport_socket

TLS_INSPECTOR: Final = "envoy.filters.listener.tls_inspector"
# listeners.py's HCM_FILTER_NAME, which this module cannot import: listeners.py imports it.
HCM_FILTER_NAME: Final = "envoy.filters.network.http_connection_manager"


@functools.cache
def _tls_inspector() -> listener_components_pb2.ListenerFilter:
    # No argument, so one message for the life of the process (bounded, issue 7).
    packed = any_pb2.Any()
    packed.Pack(tls_inspector_pb2.TlsInspector(), deterministic=True)
    return listener_components_pb2.ListenerFilter(name=TLS_INSPECTOR, typed_config=packed)


def add_ingress_tls_chains(listener: listener_pb2.Listener, manager: any_pb2.Any,
                           tls: IngressTlsSpec, delivery: Delivery = ADS) -> None:
    """The TLS inspector and one chain per certificate, each with the packed HTTP connection `manager`."""
    listener.listener_filters.append(_tls_inspector())
    for chain_spec in tls.chains:
        chain = listener.filter_chains.add()
        chain.filter_chain_match.server_names.extend(chain_spec.server_names)
        context = tls_pb2.DownstreamTlsContext()
        context.common_tls_context.tls_certificate_sds_secret_configs.append(
            sds_secret_config(chain_spec.secret, delivery))
        chain.transport_socket.CopyFrom(transport_socket(context))
        network_filter = chain.filters.add()
        network_filter.name = HCM_FILTER_NAME
        network_filter.typed_config.CopyFrom(manager)
