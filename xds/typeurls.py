"""xDS resource type URLs and the properties of each type that the protocol depends on."""

from __future__ import annotations

from typing import Final, NewType

TypeUrl = NewType("TypeUrl", str)

CLUSTER: Final = TypeUrl("type.googleapis.com/envoy.config.cluster.v3.Cluster")
ENDPOINT: Final = TypeUrl("type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment")
LISTENER: Final = TypeUrl("type.googleapis.com/envoy.config.listener.v3.Listener")
ROUTE: Final = TypeUrl("type.googleapis.com/envoy.config.route.v3.RouteConfiguration")
# SDS: TLS certificates and validation contexts that clusters and listeners name (issue 9).
SECRET: Final = TypeUrl("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret")

# Make-before-break order for ADS (xds_protocol.rst "Eventual consistency considerations"; docs/protocol.md
# R23): CDS, then EDS for those clusters, then SDS for the secrets clusters and listeners name (R46), then
# LDS, then RDS; removals of stale clusters come last.
PUSH_ORDER: Final[tuple[TypeUrl, ...]] = (CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE)

# SotW: LDS and CDS responses carry the complete state; EDS, RDS and SDS carry only named resources (R18).
FULL_STATE: Final[frozenset[TypeUrl]] = frozenset({CLUSTER, LISTENER})

SHORT_NAMES: Final[dict[TypeUrl, str]] = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds",
                                          SECRET: "sds"}

KNOWN: Final[frozenset[TypeUrl]] = frozenset(PUSH_ORDER)


def short_name(type_url: str) -> str:
    """`cds`, `eds`, ... for metrics and logs; the URL itself for unknown types."""
    return SHORT_NAMES.get(TypeUrl(type_url), type_url)
