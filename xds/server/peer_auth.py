"""Binding a stream's node to the client certificate of its connection (issue 9, item 1).

gRPC has verified the certificate chain during the handshake (tls_reload.py requires it); this reads the
verified leaf from the call's auth context and applies the identity rule (identity.py). A stream whose
node it may not claim ends with PERMISSION_DENIED before anything is sent (stream.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc

from xds.server.identity import Denial, DenyReason, IdentityRule, PeerIdentity, check_claim, identity_from_pem

# gRPC's auth context property holding the peer's verified leaf certificate (grpc_security_constants.h,
# GRPC_X509_PEM_CERT_PROPERTY_NAME).
_PEM_CERT_PROPERTY = "x509_pem_cert"


class IdentityDeniedError(Exception):
    """The connection's certificate may not claim the node of a request."""

    def __init__(self, denial: Denial, *, node_id: str, group: str) -> None:
        super().__init__(denial.message)
        self.denial = denial
        self.node_id = node_id
        self.group = group


def _ignore(reason: DenyReason) -> None:
    return None


@dataclass(frozen=True, slots=True)
class PeerAuthorizer:
    """Checks node claims against the peer certificate; `on_denied` counts each denial by reason."""

    trust_domain: str
    rule: IdentityRule = IdentityRule.SPIFFE
    on_denied: Callable[[DenyReason], None] = _ignore

    def require(self, context: grpc.aio.ServicerContext[object, object], *, node_id: str, group: str) -> None:
        """Return when the peer may claim `node_id` in `group`; IdentityDeniedError otherwise."""
        denial = check_claim(peer_identity(context), node_id=node_id, group=group,
                             trust_domain=self.trust_domain, rule=self.rule)
        if denial is not None:
            self.on_denied(denial.reason)
            raise IdentityDeniedError(denial, node_id=node_id, group=group)


def peer_identity(context: grpc.aio.ServicerContext[object, object]) -> PeerIdentity | None:
    """The SANs of the peer's verified certificate; None on a connection without one."""
    values = list(context.auth_context().get(_PEM_CERT_PROPERTY) or ())
    if not values:
        return None
    try:
        return identity_from_pem(values[0])
    except ValueError:
        # gRPC verified and re-encoded this certificate; failing to parse it is not the client's claim.
        return PeerIdentity()
