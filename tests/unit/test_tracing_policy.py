"""The `tracing` block (issue 14 item 2, docs/tracing.md): loading, the listener-over-global choice, the
collector cluster apply_policy adds, and the HCM `tracing` the translator writes."""

from __future__ import annotations

import textwrap

import pytest
from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2

from xds.policy.apply import apply_policy
from xds.policy.errors import PolicyError
from xds.policy.load import parse_document
from xds.policy.tracing_spec import TagSource, TracingProvider
from xds.translate.listeners import build_http_connection_manager

DOCUMENT = textwrap.dedent("""
    services:
      - name: web
        endpoints: [{address: "10.0.0.1:80"}]
    tracing:
      address: 127.0.0.1
      port: 4317
      sampling: 25
      tags:
        - {name: env, literal: prod}
        - {name: user, header: X-User, default: anonymous}
        - {name: pod, environment: POD_NAME}
    listeners:
      - name: edge
        port: 10000
        routes: [{backends: [{service: web}]}]
      - name: own
        port: 10001
        tracing: {address: "::1", port: 9411, provider: zipkin, sampling: 0}
        routes: [{backends: [{service: web}]}]
      - name: grpc
        kind: grpc
        routes: [{backends: [{service: web}]}]
""")


def test_listeners_get_their_own_or_the_global_tracing_and_grpc_none() -> None:
    catalog, policy = parse_document(DOCUMENT, where="t.yaml")
    state = apply_policy(catalog, policy, group="shop")
    tracing = {listener.name: listener.tracing for listener in state.listeners}
    edge, own = tracing["edge"], tracing["own"]
    assert tracing["grpc"] is None
    assert edge is not None and own is not None
    assert edge.provider is TracingProvider.OPENTELEMETRY and edge.sampling_percent == 25.0
    assert edge.service_name == "shop"  # the node group by default
    assert [(t.name, t.source, t.value, t.default) for t in edge.tags] == [
        ("env", TagSource.LITERAL, "prod", None), ("user", TagSource.HEADER, "x-user", "anonymous"),
        ("pod", TagSource.ENVIRONMENT, "POD_NAME", None)]
    assert own.provider is TracingProvider.ZIPKIN and own.sampling_percent == 0.0 and own.tags == ()
    clusters = {c.name: c for c in state.clusters}
    otlp = clusters["xds-tracing/opentelemetry/127.0.0.1:4317"]
    assert otlp.http2 and [(e.host, e.port) for e in otlp.endpoints] == [("127.0.0.1", 4317)]
    assert not clusters["xds-tracing/zipkin/[::1]:9411"].http2
    assert edge.collector_cluster == otlp.name


def test_the_connection_manager_carries_the_provider_sampling_and_tags() -> None:
    catalog, policy = parse_document(DOCUMENT, where="t.yaml")
    listeners = {spec.name: spec for spec in apply_policy(catalog, policy, group="shop").listeners}
    edge = build_http_connection_manager(listeners["edge"]).tracing
    assert edge.random_sampling.value == 25.0
    assert [t.tag for t in edge.custom_tags] == ["env", "user", "pod"]
    assert edge.custom_tags[1].request_header.name == "x-user"
    assert edge.custom_tags[1].request_header.default_value == "anonymous"
    config = opentelemetry_pb2.OpenTelemetryConfig()
    assert edge.provider.name == "envoy.tracers.opentelemetry" and edge.provider.typed_config.Unpack(config)
    assert config.grpc_service.envoy_grpc.cluster_name == "xds-tracing/opentelemetry/127.0.0.1:4317"
    assert config.service_name == "shop"
    # The collector's address as :authority / Host, never the cluster name with its '/' (a 400 from Jaeger).
    assert config.grpc_service.envoy_grpc.authority == "127.0.0.1:4317"
    own = build_http_connection_manager(listeners["own"]).tracing
    zipkin = zipkin_pb2.ZipkinConfig()
    assert own.provider.name == "envoy.tracers.zipkin" and own.provider.typed_config.Unpack(zipkin)
    assert zipkin.collector_endpoint == "/api/v2/spans" and zipkin.trace_id_128bit
    assert zipkin.collector_hostname == "[::1]:9411"
    assert own.random_sampling.value == 0.0
    assert not build_http_connection_manager(listeners["grpc"]).HasField("tracing")


def test_no_tracing_block_means_no_tracing_and_no_collector_cluster() -> None:
    text = DOCUMENT.split("tracing:")[0] + textwrap.dedent("""
        listeners:
          - name: edge
            port: 10000
            routes: [{backends: [{service: web}]}]
    """)
    catalog, policy = parse_document(text, where="t.yaml")
    state = apply_policy(catalog, policy, group="shop")
    assert [c.name for c in state.clusters] == ["web"]
    assert not build_http_connection_manager(state.listeners[0]).HasField("tracing")


@pytest.mark.parametrize(("block", "expected"), [
    ("{address: 127.0.0.1, port: 4317, sampling: 101}", "tracing.sampling"),
    ("{address: collector, port: 4317}", "tracing.address"),
    ("{address: 127.0.0.1}", "port"),
    ("{address: 127.0.0.1, port: 4317, provider: jaeger}", "tracing.provider"),
    ("{address: 127.0.0.1, port: 4317, tags: [{name: a}]}", "tracing.tags[0]"),
    ("{address: 127.0.0.1, port: 4317, tags: [{name: a, literal: x, environment: Y}]}", "tracing.tags[0]"),
    ("{address: 127.0.0.1, port: 4317, tags: [{name: a, environment: 1BAD}]}", "tracing.tags[0].environment"),
])
def test_bad_tracing_blocks_are_refused_with_their_path(block: str, expected: str) -> None:
    text = "services: []\ntracing: " + block + "\n"
    with pytest.raises(PolicyError) as error:
        parse_document(text, where="t.yaml")
    assert expected in str(error.value), str(error.value)
