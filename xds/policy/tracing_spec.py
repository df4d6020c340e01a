"""TracingSpec: the protobuf-free form of a listener's tracing, the contract with `translate/tracing.py`
(issue 14 item 2; docs/tracing.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TracingProvider(enum.Enum):
    OPENTELEMETRY = "opentelemetry"
    ZIPKIN = "zipkin"


class TagSource(enum.Enum):
    LITERAL = "literal"
    HEADER = "header"
    ENVIRONMENT = "environment"


@dataclass(frozen=True, slots=True)
class TagSpec:
    name: str
    source: TagSource
    value: str  # the literal, the header name (lowercase) or the variable name
    default: str | None = None


@dataclass(frozen=True, slots=True)
class TracingSpec:
    provider: TracingProvider
    # The cluster the control plane emits for the collector (apply.py `tracing_cluster_name`).
    collector_cluster: str
    # `host:port` of the collector, sent as the Host/:authority of the export requests: the cluster name
    # contains `/`, which an HTTP server refuses as a Host header (Jaeger's Zipkin receiver answers 400).
    collector_authority: str
    service_name: str
    sampling_percent: float
    tags: tuple[TagSpec, ...] = ()
