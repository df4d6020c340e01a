"""DnsSpec -> the `cluster_type` of a DNS cluster (issue 13, docs/dns.md).

Envoy 1.40 marks the Cluster's own `dns_refresh_rate` and `respect_dns_ttl` deprecated (cluster.proto) and
warns that they will be removed; the DNS cluster extension `envoy.cluster.dns` (DnsCluster) carries every
DNS setting instead. Its `all_addresses_in_single_endpoint` is the LOGICAL_DNS behaviour, off the STRICT_DNS
one, so one extension serves both modes.
"""

from __future__ import annotations

import functools
from typing import Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.clusters.common.dns.v3 import dns_pb2
from envoy.extensions.clusters.dns.v3 import dns_cluster_pb2

from xds.policy.desired import DnsLookupFamily, DnsMode, DnsSpec

DNS_CLUSTER_EXTENSION: Final = "envoy.cluster.dns"

_FAMILIES: Final[dict[DnsLookupFamily, int]] = {
    DnsLookupFamily.V4_ONLY: dns_pb2.V4_ONLY,
    DnsLookupFamily.V6_ONLY: dns_pb2.V6_ONLY,
    DnsLookupFamily.V4_PREFERRED: dns_pb2.V4_PREFERRED,
    DnsLookupFamily.AUTO: dns_pb2.AUTO,
    DnsLookupFamily.ALL: dns_pb2.ALL,
}


# Bounded: DnsSpec has a handful of fields with few values each, and operators set a few combinations.
@functools.lru_cache(maxsize=256)
def dns_cluster_type(spec: DnsSpec) -> cluster_pb2.Cluster.CustomClusterType:
    """The `cluster_type` for `spec`; callers CopyFrom it. Packed deterministically so the Cluster's bytes,
    and so the snapshot version hash, are the same on every run."""
    config = dns_cluster_pb2.DnsCluster(
        dns_lookup_family=_FAMILIES[spec.lookup_family],
        respect_dns_ttl=spec.respect_ttl,
        all_addresses_in_single_endpoint=spec.mode is DnsMode.LOGICAL,
    )
    if spec.refresh_rate_s is not None:
        config.dns_refresh_rate.FromNanoseconds(round(spec.refresh_rate_s * 1e9))
    custom = cluster_pb2.Cluster.CustomClusterType(name=DNS_CLUSTER_EXTENSION)
    custom.typed_config.Pack(config, deterministic=True)
    return custom
