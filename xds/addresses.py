"""Whether a listen address stays on this host (issue 9: what may listen beyond loopback without
authentication; docs/security.md, "The management API and secrets"). Pure: no layer imports."""

from __future__ import annotations

import ipaddress


def host_of(address: str) -> str:
    """The host of 'host:port' or '[v6]:port', brackets removed."""
    host = address.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; False for a wildcard (0.0.0.0, ::) or any other address."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything
