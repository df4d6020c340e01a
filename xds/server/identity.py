"""Which node ids and node groups a client certificate may claim on the xDS port (issue 9, item 1).

Pure: no gRPC, no I/O. The server reads the peer's certificate from the TLS session (peer_auth.py) and asks
`check_claim` whether its identity may claim the node id and node group of a request. The rule is
docs/security.md, "Transport: mTLS and node identity on the xDS port":

* rule `spiffe` (the default): the certificate's SPIFFE URI SANs count.
  `spiffe://<trust-domain>/group/<group>/node/<node-id>` allows exactly that group and node id;
  `spiffe://<trust-domain>/group/<group>` allows any node id of that group.
* rule `dns-group`: as `spiffe`; a certificate without any URI SAN is read by its DNS SANs instead, where
  `<group>.<trust-domain>` allows any node id of that group (a DNS name cannot carry a node id without
  ambiguity, so there is no per-node DNS form).

Parsing is strict on purpose: the identity is attacker-influenced text (a CA may sign whatever a CSR asks
for), so anything that is not exactly the form above -- percent-escapes, dot segments, a port, user info,
a query, upper case in the trust domain, empty or extra segments -- grants nothing rather than being
normalised into something that might match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

from cryptography import x509

SPIFFE_SCHEME: Final = "spiffe://"
# SPIFFE-ID spec, section 2: at most 2048 bytes; trust domain of lower-case letters, digits, '.', '-', '_';
# path segments of letters, digits, '.', '-', '_' and never '.' or '..'.
MAX_SPIFFE_ID_BYTES: Final = 2048
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_DNS_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")


class IdentityRule(Enum):
    SPIFFE = "spiffe"
    DNS_GROUP = "dns-group"


RULE_NAMES: Final = tuple(r.value for r in IdentityRule)


class DenyReason(Enum):
    """The `reason` label of xds_identity_denied_total."""

    NO_CERTIFICATE = "no_certificate"  # no peer certificate on the connection (plaintext or not verified)
    NO_IDENTITY = "no_identity"  # the certificate carries no SAN the rule reads
    TRUST_DOMAIN = "trust_domain"  # identities exist, none in our trust domain
    GROUP = "group"  # none of them names the claimed node group
    NODE = "node"  # the group matches, but only for another node id


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The SANs of a verified client certificate that the rules read."""

    uris: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()

    def describe(self) -> str:
        """For logs: certificates are public, but a hostile SAN could be huge or hold control characters."""
        names = [*self.uris, *(f"DNS:{d}" for d in self.dns_names)]
        shown = ", ".join(_printable(n) for n in names[:4])
        return shown + (f" (+{len(names) - 4} more)" if len(names) > 4 else "") if names else "(none)"


@dataclass(frozen=True, slots=True)
class Grant:
    """What one identity allows: a group, and either one node id or any (`node is None`)."""

    trust_domain: str
    group: str
    node: str | None


@dataclass(frozen=True, slots=True)
class Denial:
    reason: DenyReason
    message: str  # for the client's status details and the log; never holds key material


def identity_from_pem(pem: bytes) -> PeerIdentity:
    """The URI and DNS SANs of a PEM certificate; ValueError when it does not parse."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return PeerIdentity()
    return PeerIdentity(uris=tuple(san.get_values_for_type(x509.UniformResourceIdentifier)),
                        dns_names=tuple(san.get_values_for_type(x509.DNSName)))


def parse_spiffe(uri: str) -> Grant | None:
    """`spiffe://<td>/group/<g>[/node/<n>]` -> Grant; None for anything else (see the module docstring)."""
    if len(uri.encode("utf-8", errors="replace")) > MAX_SPIFFE_ID_BYTES or not uri.startswith(SPIFFE_SCHEME):
        return None
    trust_domain, slash, path = uri[len(SPIFFE_SCHEME):].partition("/")
    if not slash or not _TRUST_DOMAIN.fullmatch(trust_domain):
        return None
    segments = path.split("/")
    if any(s in (".", "..") or not _SEGMENT.fullmatch(s) for s in segments):
        return None
    if len(segments) == 2 and segments[0] == "group":
        return Grant(trust_domain=trust_domain, group=segments[1], node=None)
    if len(segments) == 4 and segments[0] == "group" and segments[2] == "node":
        return Grant(trust_domain=trust_domain, group=segments[1], node=segments[3])
    return None


def parse_dns_group(name: str, trust_domain: str) -> Grant | None:
    """`<group>.<trust-domain>` -> a group-wide Grant; None for anything else. The group is every label
    before the trust domain, so `a.b.<td>` is the group `a.b`."""
    suffix = "." + trust_domain
    if not name.endswith(suffix):
        return None
    group = name[: -len(suffix)]
    if not group or not all(_DNS_LABEL.fullmatch(label) for label in group.split(".")):
        return None
    return Grant(trust_domain=trust_domain, group=group, node=None)


def grants(identity: PeerIdentity, *, trust_domain: str, rule: IdentityRule) -> tuple[Grant, ...]:
    """Every grant the certificate's SANs carry under `rule`, in any trust domain (filtered later)."""
    found = [g for g in map(parse_spiffe, identity.uris) if g is not None]
    if rule is IdentityRule.DNS_GROUP and not identity.uris:
        found += [g for d in identity.dns_names if (g := parse_dns_group(d, trust_domain)) is not None]
    return tuple(found)


def check_claim(identity: PeerIdentity | None, *, node_id: str, group: str, trust_domain: str,
                rule: IdentityRule = IdentityRule.SPIFFE) -> Denial | None:
    """None when `identity` may claim `node_id` in `group`; otherwise why not.

    `group` is the node group as the --node-group-key selects it, before any locality is attached: the
    locality only orders endpoints and is not an authorization boundary.
    """
    if identity is None:
        return Denial(DenyReason.NO_CERTIFICATE, "no verified client certificate on this connection")
    all_grants = grants(identity, trust_domain=trust_domain, rule=rule)
    shown = identity.describe()
    if not all_grants:
        return Denial(DenyReason.NO_IDENTITY,
                      f"the client certificate has no identity the '{rule.value}' rule reads (SANs: {shown})")
    ours = [g for g in all_grants if g.trust_domain == trust_domain]
    if not ours:
        return Denial(DenyReason.TRUST_DOMAIN,
                      f"the client certificate's identities ({shown}) are not in trust domain {trust_domain}")
    in_group = [g for g in ours if g.group == group]
    if not in_group:
        return Denial(DenyReason.GROUP, f"the client certificate ({shown}) may not claim node group "
                                        f"{_printable(group)}")
    if any(g.node is None or g.node == node_id for g in in_group):
        return None
    return Denial(DenyReason.NODE, f"the client certificate ({shown}) may not claim node id "
                                   f"{_printable(node_id)} in node group {_printable(group)}")


def _printable(text: str, limit: int = 200) -> str:
    """Quoted with control characters escaped and cut to `limit` characters: log-safe."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    return repr(shown)
