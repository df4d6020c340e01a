"""TracingSpec -> the HTTP connection manager's `tracing` (issue 14 item 2; docs/tracing.md).

OpenTelemetry exports OTLP over gRPC to the collector's cluster (envoy.tracers.opentelemetry, an EnvoyGrpc
service); Zipkin posts JSON v2 spans over HTTP (envoy.tracers.zipkin). Both propagate the trace context to
the upstream request (W3C `traceparent` and B3 headers respectively), which is what joins the spans of an
edge proxy and a sidecar into one trace.
"""

from __future__ import annotations

from typing import Final

from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, wrappers_pb2
from google.protobuf.message import Message

from xds.policy.tracing_spec import TagSource, TagSpec, TracingProvider, TracingSpec

OPENTELEMETRY_TRACER_NAME: Final = "envoy.tracers.opentelemetry"
ZIPKIN_TRACER_NAME: Final = "envoy.tracers.zipkin"
# Zipkin's (and Jaeger's Zipkin receiver's) span intake path for the JSON v2 encoding.
ZIPKIN_SPANS_PATH: Final = "/api/v2/spans"
# A bounded export call: a stuck collector must not hold Envoy's exporter forever.
EXPORT_TIMEOUT_S: Final = 5


def _pack(message: Message) -> any_pb2.Any:
    # Deterministic so equal listeners serialize to equal bytes (docs/protocol.md R14).
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def build_tracing(spec: TracingSpec) -> hcm_pb2.HttpConnectionManager.Tracing:
    return hcm_pb2.HttpConnectionManager.Tracing(
        random_sampling=percent_pb2.Percent(value=spec.sampling_percent),
        # Envoy's default overall_sampling is 100 % and client_sampling applies to x-client-trace-id only;
        # random_sampling alone is the operator's knob (docs/tracing.md).
        custom_tags=[_custom_tag(tag) for tag in spec.tags],
        provider=_provider(spec),
    )


def _provider(spec: TracingSpec) -> http_tracer_pb2.Tracing.Http:
    if spec.provider is TracingProvider.OPENTELEMETRY:
        config = opentelemetry_pb2.OpenTelemetryConfig(service_name=spec.service_name)
        config.grpc_service.envoy_grpc.cluster_name = spec.collector_cluster
        config.grpc_service.envoy_grpc.authority = spec.collector_authority
        config.grpc_service.timeout.seconds = EXPORT_TIMEOUT_S
        return http_tracer_pb2.Tracing.Http(name=OPENTELEMETRY_TRACER_NAME, typed_config=_pack(config))
    zipkin = zipkin_pb2.ZipkinConfig(
        collector_cluster=spec.collector_cluster, collector_hostname=spec.collector_authority,
        collector_endpoint=ZIPKIN_SPANS_PATH,
        collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
        # 128-bit ids, as W3C and Jaeger use, so the ids a query returns match the propagated header.
        trace_id_128bit=True,
        # Client and server spans of one hop get their own span ids (OpenTelemetry's model, not Zipkin's
        # shared-span default), so each proxy's span stays distinct in the trace.
        shared_span_context=wrappers_pb2.BoolValue(value=False),
    )
    return http_tracer_pb2.Tracing.Http(name=ZIPKIN_TRACER_NAME, typed_config=_pack(zipkin))


def _custom_tag(tag: TagSpec) -> custom_tag_pb2.CustomTag:
    if tag.source is TagSource.LITERAL:
        literal = custom_tag_pb2.CustomTag.Literal(value=tag.value)
        return custom_tag_pb2.CustomTag(tag=tag.name, literal=literal)
    if tag.source is TagSource.HEADER:
        return custom_tag_pb2.CustomTag(tag=tag.name, request_header=custom_tag_pb2.CustomTag.Header(
            name=tag.value, default_value=tag.default or ""))
    return custom_tag_pb2.CustomTag(tag=tag.name, environment=custom_tag_pb2.CustomTag.Environment(
        name=tag.value, default_value=tag.default or ""))
