"""The Consul source: services and health from a Consul catalog, policies from Consul KV.

Split by role (docs/architecture.md): `client` does the HTTP (and the blocking-query index rules), `parse`
and `kv` map Consul's JSON to the model and to policies without any I/O, `watcher` runs the supervised watch
loops and decides what to publish. docs/consul.md is the operator's view.
"""

from xds.sources.consul.client import (
    ConsulBadResponse,
    ConsulClient,
    ConsulConfig,
    ConsulError,
    ConsulForbidden,
    ConsulNotFound,
    ConsulUnavailable,
)
from xds.sources.consul.watcher import ConsulSource, Staleness

__all__ = [
    "ConsulBadResponse",
    "ConsulClient",
    "ConsulConfig",
    "ConsulError",
    "ConsulForbidden",
    "ConsulNotFound",
    "ConsulSource",
    "ConsulUnavailable",
    "Staleness",
]
