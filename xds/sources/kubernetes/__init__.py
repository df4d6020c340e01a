"""The Kubernetes source: Services and EndpointSlices from a cluster, policies from TrafficPolicy objects.

Split by role (docs/architecture.md): `client` does the HTTP (list, watch, status patch) through
kubernetes_asyncio's configuration and authentication, `parse` maps Services and EndpointSlices to the model
and `policies` maps TrafficPolicy objects to a Policy and status conditions, both without any I/O, and
`watcher` runs the supervised list-and-watch loops and decides what to publish. docs/kubernetes.md is the
operator's view.
"""

from xds.sources.kubernetes.client import (
    KubeBadResponse,
    KubeClient,
    KubeConfig,
    KubeConfigError,
    KubeError,
    KubeForbidden,
    KubeGone,
    KubeNotFound,
    KubeUnavailable,
    KubeWatchInactive,
    resolve_server,
)
from xds.sources.kubernetes.watcher import KubernetesSource, Staleness

__all__ = [
    "KubeBadResponse",
    "KubeClient",
    "KubeConfig",
    "KubeConfigError",
    "KubeError",
    "KubeForbidden",
    "KubeGone",
    "KubeNotFound",
    "KubeUnavailable",
    "KubeWatchInactive",
    "KubernetesSource",
    "Staleness",
    "resolve_server",
]
