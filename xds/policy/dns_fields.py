"""The declared keys of a service's `dns` block (docs/config.md, docs/dns.md; issue 13).

DnsSpec lives in `desired.py`, the protobuf-free contract with `translate`, so its keys are declared here as
rows (fields.py `table`), as cluster_fields.py does for outlier detection. The block only matters to a
service with a host-name endpoint, which Envoy resolves itself in a DNS cluster.
"""

from __future__ import annotations

from xds.policy.desired import DnsLookupFamily, DnsMode, DnsSpec
from xds.policy.fields import Boolean, Choice, Duration, FieldSpec, table

# Envoy refuses a refresh rate of 1 ms or less (DnsCluster.dns_refresh_rate, `gt: 1ms`); an hour already
# keeps a stale address far longer than any registry would.
MIN_DNS_REFRESH_RATE_S = 0.001
MAX_DNS_REFRESH_RATE_S = 3600.0

DNS_MODES = {m.value: m for m in DnsMode}
DNS_LOOKUP_FAMILIES = {f.value: f for f in DnsLookupFamily}

DNS = table(DnsSpec, "How Envoy resolves the service's host-name endpoints (docs/dns.md).", [
    ("mode", FieldSpec(
        "mode", Choice(DNS_MODES),
        "`strict` (Envoy's STRICT_DNS): every address a name resolves to becomes a host, balanced over. "
        "`logical` (LOGICAL_DNS): one host per name, each new connection goes to the first address of the "
        "latest lookup; the service must then have exactly one endpoint.")),
    ("refresh_rate_s", FieldSpec(
        "refresh_rate", Duration(MAX_DNS_REFRESH_RATE_S),
        f"How often Envoy resolves the names again; more than 1ms, at most {MAX_DNS_REFRESH_RATE_S:g} s.",
        shown_default="Envoy's (5 s)")),
    ("respect_ttl", FieldSpec(
        "respect_ttl", Boolean(),
        "`true`: resolve again when the records' TTL runs out, instead of every `refresh_rate`.")),
    ("lookup_family", FieldSpec(
        "lookup_family", Choice(DNS_LOOKUP_FAMILIES),
        "Which addresses Envoy asks for: `v4_only`, `v6_only`, `v4_preferred` (IPv4, or IPv6 if there is "
        "none), `auto` (IPv6, or IPv4 if there is none) or `all` (both).")),
])
