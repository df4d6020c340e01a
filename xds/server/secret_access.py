"""Which streams may receive secrets (SDS): the rule of docs/protocol.md R47 and docs/security.md.

A Secret carries a private key: a workload certificate is the mesh identity of a node group, and whoever
holds it can call services as that group (issue 9). So secrets go only to a stream whose peer presented a
client certificate that the TLS handshake verified (the xDS port with mTLS, where the node's claimed group
is bound to that certificate), or to a plaintext stream from a loopback address (local development, where
the xDS port listens on 127.0.0.1 by default). Any other stream gets its clusters, listeners and routes but
no Secret; the server logs that it withheld them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

# gRPC's auth context keys (grpc/grpc_security_constants.h): the transport, and the peer certificate that
# the TLS handshake verified (present only when the server asked for a client certificate and got one).
TRANSPORT_SECURITY_TYPE = "transport_security_type"
PEER_CERTIFICATE = "x509_pem_cert"


def peer_is_loopback(peer: str) -> bool:
    """`peer` as gRPC reports it: 'ipv4:127.0.0.1:5000', 'ipv6:[::1]:5000', 'unix:/path' (same host)."""
    kind, _, rest = peer.partition(":")
    if kind in ("unix", "unix-abstract"):
        return True
    if kind == "ipv4":
        host = rest.rpartition(":")[0]
    elif kind == "ipv6":
        host = rest.rpartition(":")[0].removeprefix("[").removesuffix("]").partition("%")[0]
    else:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def secrets_allowed(auth_context: Mapping[str, Iterable[bytes]], peer: str) -> tuple[bool, str]:
    """(allowed, why) for one stream, from its gRPC auth context and peer address."""
    if any(auth_context.get(PEER_CERTIFICATE, ())):
        return True, "client certificate verified"
    secure = [v.decode(errors="replace") for v in auth_context.get(TRANSPORT_SECURITY_TYPE, ())]
    if secure and secure != ["insecure"]:
        return False, "TLS without a client certificate"
    if peer_is_loopback(peer):
        return True, "plaintext from loopback (development)"
    return False, "plaintext from a non-loopback address"
