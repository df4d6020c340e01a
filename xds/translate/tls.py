"""Edge TLS specs -> Envoy's TLS transport sockets (issue 9 item 7).

Upstream: a cluster's UpstreamTlsContext carries the CA bundle inline (trusted_ca as inline_bytes), the SNI
and the SAN check. Inline rather than an SDS validation context keeps the cluster self-contained, so an
Envoy never holds a TLS cluster whose CA has not arrived yet; a rotated bundle changes the cluster, which
Envoy applies to new connections (docs/security.md, "Edge TLS").
"""

from __future__ import annotations

from typing import Final

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2

from xds.policy.tls_specs import UpstreamTlsSpec

# The TLS transport socket's extension name (transport_sockets/tls/v3/tls.proto).
TLS_TRANSPORT_SOCKET: Final = "envoy.transport_sockets.tls"


def san_matcher(san: str) -> common_pb2.SubjectAltNameMatcher:
    """A URI SAN (a SPIFFE id) when it has a scheme, else a DNS SAN; matched exactly (common.proto,
    SubjectAltNameMatcher: a DNS matcher honours the certificate's own wildcards)."""
    san_type = common_pb2.SubjectAltNameMatcher.URI if "://" in san else common_pb2.SubjectAltNameMatcher.DNS
    return common_pb2.SubjectAltNameMatcher(san_type=san_type, matcher=string_pb2.StringMatcher(exact=san))


def transport_socket(context: tls_pb2.UpstreamTlsContext | tls_pb2.DownstreamTlsContext
                     ) -> base_pb2.TransportSocket:
    packed = any_pb2.Any()
    # Deterministic, so equal specs give equal bytes and equal versions (docs/protocol.md R14).
    packed.Pack(context, deterministic=True)
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=packed)


def build_upstream_tls(spec: UpstreamTlsSpec) -> base_pb2.TransportSocket:
    context = tls_pb2.UpstreamTlsContext(sni=spec.sni)
    validation = context.common_tls_context.validation_context
    validation.trusted_ca.inline_bytes = spec.ca_pem
    validation.match_typed_subject_alt_names.extend(san_matcher(s) for s in spec.subject_alt_names)
    return transport_socket(context)
