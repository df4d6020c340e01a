"""The DNS SRV source (issue 13 section 3; docs/dns.md "DNS SRV source").

- `config`: what to resolve (service name -> SRV name, locality), the resolvers, timeouts, TTL bounds.
- `records`: pure: SRV and address answers -> endpoints (weights, priority tiers), and when to look again.
- `lookup`: the DNS queries, with dnspython's asyncio resolver; tells "name gone" from "server silent".
- `source`: the `Source` that re-resolves every name at its TTL and publishes the catalog.
"""

from xds.sources.dns.config import DnsConfig, DnsService
from xds.sources.dns.source import DnsSource

__all__ = ["DnsConfig", "DnsService", "DnsSource"]
