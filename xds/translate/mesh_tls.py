"""Sidecar mTLS and authorization in Envoy's terms (issue 9; docs/security.md "Workload certificates").

* A client's cluster for a service with `mtls` on originates TLS with the node group's workload certificate
  and accepts the server only if its certificate chains to the mesh CA (the trust bundle, over SDS) and its
  URI SAN is exactly the service's SPIFFE identity.
* A service's inbound listener presents the workload certificate of the sidecar's group and requires
  (strict) or accepts (permissive) client certificates of the mesh CA.
* Authorization rules become the RBAC HTTP filter of the inbound listener: an ALLOW policy per rule, the
  principals matched on the client certificate's URI SAN (`authenticated.principal_name`); a request no
  policy allows gets 403.
"""

from __future__ import annotations

from typing import Final

from envoy.config.core.v3 import base_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import path_pb2, string_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from xds.policy.desired import (
    TRUST_BUNDLE_SECRET,
    WORKLOAD_CERT_SECRET,
    AuthorizationRuleSpec,
    UpstreamMeshTlsSpec,
)
from xds.translate.delivery import ADS, Delivery
from xds.translate.secrets import sds_secret_config

TLS_TRANSPORT_SOCKET: Final = "envoy.transport_sockets.tls"
RBAC_FILTER_NAME: Final = "envoy.filters.http.rbac"


def _pack(message: Message) -> any_pb2.Any:
    # Deterministic bytes for content-hash versions (docs/protocol.md R14).
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def _common_context(peer_identity: str | None, delivery: Delivery) -> tls_pb2.CommonTlsContext:
    context = tls_pb2.CommonTlsContext()
    context.tls_certificate_sds_secret_configs.append(sds_secret_config(WORKLOAD_CERT_SECRET, delivery))
    combined = context.combined_validation_context
    combined.validation_context_sds_secret_config.CopyFrom(sds_secret_config(TRUST_BUNDLE_SECRET, delivery))
    if peer_identity is not None:
        san = combined.default_validation_context.match_typed_subject_alt_names.add()
        san.san_type = common_pb2.SubjectAltNameMatcher.URI
        san.matcher.exact = peer_identity
    else:
        combined.default_validation_context.SetInParent()
    return context


def upstream_transport_socket(spec: UpstreamMeshTlsSpec, delivery: Delivery = ADS
                              ) -> base_pb2.TransportSocket:
    context = tls_pb2.UpstreamTlsContext(common_tls_context=_common_context(spec.peer_identity, delivery))
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=_pack(context))


def downstream_transport_socket(*, require_client_certificate: bool, delivery: Delivery = ADS
                                ) -> base_pb2.TransportSocket:
    # Any client certificate of the mesh CA is accepted at the handshake; which identities may do what is
    # the RBAC filter's decision, which can answer 403 instead of a reset.
    context = tls_pb2.DownstreamTlsContext(common_tls_context=_common_context(None, delivery))
    context.require_client_certificate.value = require_client_certificate
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=_pack(context))


def _permission(rule: AuthorizationRuleSpec) -> rbac_pb2.Permission:
    parts: list[rbac_pb2.Permission] = []
    if rule.prefix is not None:
        parts.append(rbac_pb2.Permission(url_path=path_pb2.PathMatcher(
            path=string_pb2.StringMatcher(prefix=rule.prefix))))
    if rule.methods:
        methods = rbac_pb2.Permission.Set(rules=[
            rbac_pb2.Permission(header=route_components_pb2.HeaderMatcher(
                name=":method", string_match=string_pb2.StringMatcher(exact=method)))
            for method in rule.methods])
        parts.append(rbac_pb2.Permission(or_rules=methods))
    if not parts:
        return rbac_pb2.Permission(any=True)
    if len(parts) == 1:
        return parts[0]
    return rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=parts))


def _principal(identity: str) -> rbac_pb2.Principal:
    # principal_name matches the URI SAN of a verified client certificate first (rbac.proto,
    # Principal.Authenticated); a plaintext request has none and matches nothing.
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(
        principal_name=string_pb2.StringMatcher(exact=identity)))


def rbac_filter(rules: tuple[AuthorizationRuleSpec, ...]) -> rbac_filter_pb2.RBAC:
    """ALLOW exactly what `rules` allow; Envoy denies everything else with 403."""
    config = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW)
    for index, rule in enumerate(rules):
        policy = config.policies[f"rule-{index}"]
        policy.permissions.append(_permission(rule))
        if len(rule.principals) == 1:
            policy.principals.append(_principal(rule.principals[0]))
        else:
            policy.principals.append(rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(
                ids=[_principal(p) for p in rule.principals])))
    return rbac_filter_pb2.RBAC(rules=config)
