"""Deterministic merge of the catalogs published by several sources.

A service present in several sources becomes one service whose endpoints are the union of theirs; each
endpoint keeps its `source`. Two sources naming the same host:port keep the entry of the source listed first
(sources are ordered by the operator's configuration), so the result never holds one address twice.
"""

from __future__ import annotations

from collections.abc import Sequence

from xds.model.service import Catalog, Endpoint, Service, ServiceName


def merge_catalogs(catalogs: Sequence[Catalog]) -> Catalog:
    """Union of `catalogs`, earlier catalogs winning on duplicate endpoint addresses."""
    # A file that carries only policy, next to the registry that has the endpoints, is the common case:
    # then the registry's catalog is the union as it is, with no pass over its endpoints (issue 12).
    catalogs = [catalog for catalog in catalogs if catalog.services] or list(catalogs[:1])
    if len(catalogs) == 1:
        return catalogs[0]
    merged: dict[ServiceName, dict[tuple[str, int], Endpoint]] = {}
    for catalog in catalogs:
        for service in catalog.services:
            endpoints = merged.setdefault(service.name, {})
            for endpoint in service.endpoints:
                endpoints.setdefault(endpoint.address, endpoint)
    return Catalog(
        services=tuple(Service(name=name, endpoints=tuple(eps.values())) for name, eps in merged.items())
    )
