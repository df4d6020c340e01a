"""Service and endpoint value types shared by every source and by policy.

Values are frozen and hashable; collections are tuples sorted on construction so that two equal inputs
always produce equal values (and therefore equal snapshot versions, see docs/protocol.md R14).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field
from typing import NewType

ServiceName = NewType("ServiceName", str)

# Endpoint metadata key a source sets to "http2" for instances that serve HTTP/2.
PROTOCOL_KEY = "protocol"


class Health(enum.Enum):
    """Endpoint health as the data plane should see it (mirrors envoy.config.core.v3.HealthStatus)."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    DEGRADED = "degraded"
    UNKNOWN = "unknown"


# Dotted-quad IPv4 exactly as ipaddress accepts it (decimal octets up to 255, no leading zeros): a match is
# certainly an IP address, decided in well under a microsecond. Anything else (IPv6, host names) is left to
# ipaddress, which costs several microseconds a call.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)


def _is_ip_address(host: str) -> bool:
    if _IPV4.fullmatch(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, order=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    sub_zone: str = ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance of a service, reachable at host:port."""

    host: str
    port: int
    weight: int = 1
    health: Health = Health.HEALTHY
    locality: Locality = Locality()
    # Sorted (key, value) pairs: tags and metadata used by policy subsets such as `version: v2`.
    metadata: tuple[tuple[str, str], ...] = ()
    # Which source contributed this endpoint ("file:/etc/xds.yaml", "consul:dc1", ...).
    source: str = ""
    # Failover tier: Envoy sends traffic to priority 0 while it is healthy enough, then to 1, ...
    # (for example the local Consul datacenter at 0 and the others at 1).
    priority: int = 0
    # Whether `host` is an IP address, decided once when the endpoint is made, since every snapshot build
    # asks it of every endpoint. Held here rather than in a process-wide cache by host, which would keep
    # hosts long gone from every registry (issue 7): it dies with the endpoint.
    _ip: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", tuple(sorted(self.metadata)))
        object.__setattr__(self, "_ip", _is_ip_address(self.host))

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def is_dns_name(self) -> bool:
        """A host name rather than an IP address (a Kubernetes ExternalName Service, say): Envoy resolves it
        itself, in a DNS cluster, instead of receiving it over EDS."""
        return not self._ip

    @property
    def speaks_http2(self) -> bool:
        """The source says this instance serves HTTP/2 (Kubernetes appProtocol http2/grpc/h2c, or metadata
        `protocol: http2` from any source)."""
        return (PROTOCOL_KEY, "http2") in self.metadata

    def matches(self, selector: tuple[tuple[str, str], ...]) -> bool:
        """True when every (key, value) of the selector is in this endpoint's metadata."""
        meta = dict(self.metadata)
        return all(meta.get(k) == v for k, v in selector)


@dataclass(frozen=True, slots=True)
class Service:
    name: ServiceName
    endpoints: tuple[Endpoint, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "endpoints", tuple(sorted(self.endpoints, key=lambda e: (e.host, e.port, e.source)))
        )


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every known service, by name. Built by `merge_catalogs`; never mutated."""

    services: tuple[Service, ...] = ()
    _by_name: dict[ServiceName, Service] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.services, key=lambda s: s.name))
        object.__setattr__(self, "services", ordered)
        object.__setattr__(self, "_by_name", {s.name: s for s in ordered})
        if len(self._by_name) != len(ordered):
            raise ValueError("duplicate service names in one catalog; merge them with merge_catalogs()")

    def get(self, name: str) -> Service | None:
        return self._by_name.get(ServiceName(name))

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self.services)
