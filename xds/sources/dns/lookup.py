"""DNS queries for the SRV source, with dnspython's asyncio resolver (no hand-written packets, issue 13).

A lookup ends in one of three ways, and the source treats them differently (docs/dns.md):

- `SrvAnswer`: the SRV records and the addresses of their targets, taken from the answer's additional
  section when the server put them there (Consul's DNS interface does) and queried (A and AAAA) otherwise;
- `Missing`: the server answered that the name does not exist (NXDOMAIN) or has no SRV records: the
  service is gone;
- `DnsUnavailableError` (raised): no server answered in time, or every server failed (SERVFAIL, REFUSED,
  a refused socket): nothing is known, and the last good endpoints must keep serving.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.nameserver
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.SRV import SRV

from xds.sources.dns.records import SrvAnswer, SrvRecord, target_key

_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)


class DnsUnavailableError(Exception):
    """No DNS server gave an answer for a name; the message says which name and why."""


@dataclass(frozen=True, slots=True)
class Missing:
    """The server says the name has no SRV records (`reason`: NXDOMAIN or NOERROR with no answer)."""

    reason: str


def make_resolver(servers: tuple[tuple[str, int], ...], *, timeout_s: float) -> dns.asyncresolver.Resolver:
    """A resolver that asks exactly `servers` (never /etc/resolv.conf), caches nothing (the source
    schedules re-resolution from the TTLs itself) and gives each query `timeout_s` in all."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in servers]
    resolver.lifetime = timeout_s
    # Per-server attempt: a share of the lifetime, so a silent first server leaves time for the next.
    resolver.timeout = timeout_s / max(1, len(servers))
    return resolver


async def lookup_srv(resolver: dns.asyncresolver.Resolver, name: str) -> SrvAnswer | Missing:
    """Resolve `name`'s SRV records and their targets' addresses."""
    try:
        answer = await resolver.resolve(name, dns.rdatatype.SRV, search=False)
    except dns.resolver.NXDOMAIN:
        return Missing("NXDOMAIN")
    except dns.resolver.NoAnswer:
        return Missing("no SRV records")
    except (dns.exception.Timeout, dns.resolver.NoNameservers, OSError) as e:
        raise DnsUnavailableError(f"SRV {name}: {_describe(e)}") from None
    if answer.rrset is None:
        return Missing("no SRV records")
    # Sorted, as the addresses below: an RRset is a set, and equal answers must make equal values.
    records = tuple(sorted(SrvRecord(priority=r.priority, weight=r.weight, port=r.port,
                                     target=r.target.to_text()) for r in answer.rrset if isinstance(r, SRV)))
    ttls = [answer.rrset.ttl]
    addresses: dict[str, list[str]] = {}
    for rrset in answer.response.additional if isinstance(answer.response, dns.message.Message) else ():
        if rrset.rdtype in _ADDRESS_TYPES:
            addresses.setdefault(target_key(rrset.name.to_text()), []).extend(r.to_text() for r in rrset)
            ttls.append(rrset.ttl)
    wanted = sorted({target_key(r.target) for r in records} - set(addresses) - {""})
    if wanted:
        # Targets the server left out of the additional section: ask for them, A and AAAA together.
        found = await asyncio.gather(*(_addresses(resolver, target, kind)
                                       for target in wanted for kind in _ADDRESS_TYPES))
        for target, ips, ttl in found:
            addresses.setdefault(target, []).extend(ips)
            if ttl is not None:
                ttls.append(ttl)
    return SrvAnswer(records=records, addresses={t: tuple(sorted(ips)) for t, ips in addresses.items()},
                     ttl_s=min(ttls))


async def _addresses(resolver: dns.asyncresolver.Resolver, target: str,
                     kind: dns.rdatatype.RdataType) -> tuple[str, list[str], int | None]:
    try:
        answer = await resolver.resolve(target + ".", kind, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        # A target without addresses of this family contributes none; the other records still count.
        return target, [], None
    except (dns.exception.Timeout, dns.resolver.NoNameservers, OSError) as e:
        # Half an answer is not published: the whole name counts as unanswered.
        raise DnsUnavailableError(f"{dns.rdatatype.to_text(kind)} {target}: {_describe(e)}") from None
    if answer.rrset is None:
        return target, [], None
    return target, [r.to_text() for r in answer.rrset], answer.rrset.ttl


def _describe(error: Exception) -> str:
    if isinstance(error, dns.exception.Timeout):
        return "no DNS server answered in time"
    return str(error) or type(error).__name__
