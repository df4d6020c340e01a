"""A `tracing` block -> the listener's TracingSpec and the collector's cluster (issue 14 item 2).

The collector is reached through a cluster the control plane emits itself, with the collector as its one
endpoint over EDS like any other cluster (docs/protocol.md R22), so Envoy needs nothing in its bootstrap.
"""

from __future__ import annotations

from xds.model.service import Endpoint
from xds.policy.desired import ClusterSpec
from xds.policy.tracing_fields import TracingPolicy, TracingTag
from xds.policy.tracing_spec import TagSource, TagSpec, TracingProvider, TracingSpec

# Service names cannot contain '/' (rules.NAME_RE), so a collector's cluster never collides with a service's.
TRACING_CLUSTER_PREFIX = "xds-tracing/"
COLLECTOR_CONNECT_TIMEOUT_S = 1.0


def _authority(policy: TracingPolicy) -> str:
    host = f"[{policy.address}]" if ":" in policy.address else policy.address
    return f"{host}:{policy.port}"


def tracing_cluster_name(policy: TracingPolicy) -> str:
    return f"{TRACING_CLUSTER_PREFIX}{policy.provider.value}/{_authority(policy)}"


def tracing_spec(policy: TracingPolicy, *, group: str) -> TracingSpec:
    """The spec of `policy` for node group `group`, whose name is the default service name."""
    return TracingSpec(provider=policy.provider, collector_cluster=tracing_cluster_name(policy),
                       collector_authority=_authority(policy),
                       service_name=policy.service_name or group, sampling_percent=policy.sampling,
                       tags=tuple(_tag(tag) for tag in policy.tags))


def collector_cluster(policy: TracingPolicy) -> ClusterSpec:
    """The cluster of `policy`'s collector: HTTP/2 for OTLP/gRPC, HTTP/1.1 for Zipkin's JSON API."""
    name = tracing_cluster_name(policy)
    return ClusterSpec(name=name, service=name, connect_timeout_s=COLLECTOR_CONNECT_TIMEOUT_S,
                       http2=policy.provider is TracingProvider.OPENTELEMETRY,
                       endpoints=(Endpoint(policy.address, policy.port),))


def _tag(tag: TracingTag) -> TagSpec:
    if tag.literal is not None:
        return TagSpec(tag.name, TagSource.LITERAL, tag.literal)
    if tag.header is not None:
        return TagSpec(tag.name, TagSource.HEADER, tag.header.lower(), tag.default)
    # The shape's one_of guarantees exactly one of the three (tracing_fields.TRACING_TAG).
    return TagSpec(tag.name, TagSource.ENVIRONMENT, tag.environment or "", tag.default)
