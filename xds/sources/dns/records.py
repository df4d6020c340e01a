"""SRV answers to endpoints, and the re-resolve delay from TTLs. Pure: no I/O, no DNS library types.

Mapping (docs/dns.md "DNS SRV source"):

- Each SRV record (RFC 2782) gives a port and a target; each A/AAAA address of the target becomes one
  endpoint at that port. A target of "." means "no service here" (RFC 2782) and gives nothing.
- SRV weight -> endpoint weight. Envoy's load_balancing_weight must be at least 1, and RFC 2782 gives
  weight 0 "a very small chance" of selection, so 0 becomes 1.
- SRV priority -> failover tier: the distinct priorities, lowest first, become tiers 0, 1, 2, ... (the
  `Endpoint.priority` Envoy fails over on), so priorities 10 and 20 are tiers 0 and 1, not 10 and 20.
- An address named by several records keeps the record of the lowest tier (then the highest weight): one
  address is one endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from xds.model.service import Endpoint, Health, Locality

_NO_LOCALITY = Locality()


@dataclass(frozen=True, slots=True, order=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str  # absolute name with or without the final dot; "." means "no service"


@dataclass(frozen=True, slots=True)
class SrvAnswer:
    """One name's resolution: its SRV records, the addresses of their targets, and the smallest TTL seen."""

    records: tuple[SrvRecord, ...]
    addresses: Mapping[str, tuple[str, ...]]  # target (normalized by `target_key`) -> IP addresses
    ttl_s: int


def target_key(name: str) -> str:
    """How targets are compared: lowercase, without the final dot (DNS names are case-insensitive)."""
    return name.lower().rstrip(".")


def endpoints_of(answer: SrvAnswer, *, source: str, locality: Locality = _NO_LOCALITY,
                 metadata: tuple[tuple[str, str], ...] = ()) -> tuple[Endpoint, ...]:
    """The endpoints `answer` describes (see the module docstring for the mapping)."""
    tiers = {p: tier for tier, p in enumerate(sorted({r.priority for r in answer.records}))}
    best: dict[tuple[str, int], Endpoint] = {}
    for record in answer.records:
        target = target_key(record.target)
        if not target:
            continue
        for host in answer.addresses.get(target, ()):
            endpoint = Endpoint(host=host, port=record.port, weight=max(1, record.weight),
                                health=Health.HEALTHY, locality=locality, metadata=metadata,
                                source=source, priority=tiers[record.priority])
            kept = best.get(endpoint.address)
            if kept is None or (endpoint.priority, -endpoint.weight) < (kept.priority, -kept.weight):
                best[endpoint.address] = endpoint
    return tuple(best[address] for address in sorted(best))


def refresh_delay_s(ttl_s: float, *, floor_s: float, ceiling_s: float) -> float:
    """When to resolve a name again: at its TTL, but never sooner than `floor_s` (a TTL of 0, which
    Consul's DNS interface serves by default, must not become a busy loop) nor later than `ceiling_s`
    (so a long TTL still notices a change within a bounded time)."""
    return min(max(float(ttl_s), floor_s), ceiling_s)
