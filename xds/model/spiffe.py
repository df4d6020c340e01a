"""SPIFFE identities of the mesh (issue 9; docs/security.md "Workload certificates (SDS)").

A node group's workload identity is `spiffe://<trust-domain>/group/<node-group>`: the identity a sidecar's
workload certificate carries (a sidecar's node group is the service it fronts), that clients check on the
server's certificate, and that authorization rules name. Pure string rules, no I/O.
"""

from __future__ import annotations

import re
from typing import Final

DEFAULT_TRUST_DOMAIN: Final = "xds.local"

# SPIFFE ID spec (spiffe.io, "SPIFFE-ID", sections 2.1 and 2.2): a trust domain is lowercase letters,
# digits, '.', '-' and '_'; a path segment is letters, digits, '.', '-' and '_' and is neither '.' nor '..'.
TRUST_DOMAIN_RE: Final = re.compile(r"[a-z0-9._-]+")
SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9._-]+")
SPIFFE_ID_RE: Final = re.compile(r"spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)+")
MAX_SPIFFE_ID_LENGTH: Final = 2048


class IdentityError(ValueError):
    """A trust domain or node group that cannot form a SPIFFE ID."""


def check_trust_domain(trust_domain: str) -> str:
    if not TRUST_DOMAIN_RE.fullmatch(trust_domain) or len(trust_domain) > 255:
        raise IdentityError(f"trust domain {trust_domain!r} is not a SPIFFE trust domain (lowercase letters, "
                            "digits, '.', '-', '_')")
    return trust_domain


def valid_segment(text: str) -> bool:
    return bool(SEGMENT_RE.fullmatch(text)) and text not in (".", "..")


def group_identity(trust_domain: str, group: str) -> str:
    """`spiffe://<trust-domain>/group/<group>`; IdentityError when `group` is not a SPIFFE path segment."""
    if not valid_segment(group):
        raise IdentityError(f"node group {group!r} cannot be part of a SPIFFE ID: only letters, digits, '.', "
                            "'-' and '_' are allowed")
    return f"spiffe://{check_trust_domain(trust_domain)}/group/{group}"


def is_spiffe_id(text: str) -> bool:
    return (len(text) <= MAX_SPIFFE_ID_LENGTH and bool(SPIFFE_ID_RE.fullmatch(text))
            and all(segment not in (".", "..") for segment in text[len("spiffe://"):].split("/")[1:]))


def resolve_identity(trust_domain: str, name: str) -> str:
    """An authorization rule's identity: a SPIFFE ID as written, or a node group name as that group's
    workload identity."""
    return name if name.startswith("spiffe://") else group_identity(trust_domain, name)
