"""Tracing to a real Jaeger (issue 14 item 2, docs/tracing.md): an edge Envoy and a sidecar Envoy, both
configured by the control plane, and a real upstream. A request through both proxies is ONE trace in
Jaeger's query API with a span from each Envoy (the sidecar's a child of the edge's, so the trace context
was propagated), carrying the custom tags; a listener with `sampling: 0` produces no trace; the Zipkin
provider reaches the same Jaeger through its Zipkin receiver.

Topology (all on 127.0.0.1): client -> edge Envoy (node group `edge`, listeners `edge`, `edge-unsampled`,
`edge-zipkin`) -> sidecar Envoy (group `app-sidecar`, listener `sidecar`) -> upstream `app`.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import UpstreamPool, free_ports, wait_until
from harness.controlplane import bootstrap_for
from harness.envoy import AdminError, EnvoyProcess
from harness.jaeger import Jaeger, Span

TRACE_TIMEOUT_S = 20.0  # Envoy's exporters flush every 5 s (OpenTelemetry) / 5 s (Zipkin) by default
EDGE, SIDECAR = "edge", "app-sidecar"


@pytest.fixture
def jaeger(workdir: Path) -> Iterator[Jaeger]:
    with Jaeger(workdir) as server:
        yield server


def _catalog(jaeger: Jaeger, pool: UpstreamPool, ports: dict[str, int]) -> dict[str, Any]:
    def listener(name: str, group: str, service: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "address": "127.0.0.1", "port": ports[name], "groups": [group],
                "routes": [{"backends": [{"service": service}]}], **extra}

    return {
        "version": 1,
        "services": [
            {"name": "app", "endpoints": [{"address": f"127.0.0.1:{pool['app'].port}"}]},
            {"name": "app-sidecar", "endpoints": [{"address": f"127.0.0.1:{ports['sidecar']}"}]},
        ],
        # Global: every listener without its own block traces to Jaeger over OTLP/gRPC, service name = group.
        "tracing": {"address": "127.0.0.1", "port": jaeger.otlp_grpc_port, "sampling": 100,
                    "tags": [{"name": "env", "literal": "e2e"},
                             {"name": "user", "header": "X-User", "default": "nobody"}]},
        "listeners": [
            listener("edge", EDGE, "app-sidecar"),
            listener("sidecar", SIDECAR, "app"),
            listener("edge-unsampled", EDGE, "app", tracing={
                "address": "127.0.0.1", "port": jaeger.otlp_grpc_port, "sampling": 0,
                "tags": [{"name": "user", "header": "x-user"}]}),
            listener("edge-zipkin", EDGE, "app", tracing={
                "address": "127.0.0.1", "port": jaeger.zipkin_port, "provider": "zipkin",
                "tags": [{"name": "user", "header": "x-user"}, {"name": "via", "literal": "zipkin"}]}),
        ],
    }


def _get(port: int, user: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/hello", headers={"X-User": user})
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()
        return int(response.status)


def _traces_with_user(jaeger: Jaeger, user: str) -> dict[str, list[Span]]:
    return {trace_id: spans for trace_id, spans in jaeger.traces(EDGE).items()
            if any(span.tags.get("user") == user for span in spans)}


@pytest.fixture
def proxies(workdir: Path, jaeger: Jaeger, upstreams: Any, control_plane_factory: Any,
            envoy_factory: Any) -> dict[str, Any]:
    pool = upstreams("app")
    names = ("edge", "sidecar", "edge-unsampled", "edge-zipkin")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    catalog = workdir / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(_catalog(jaeger, pool, ports), sort_keys=False))
    control_plane = control_plane_factory(catalog)
    envoys: dict[str, EnvoyProcess] = {
        group: envoy_factory(lambda admin_port, group=group: bootstrap_for(
            f"{group}-1", group, xds_port=control_plane.xds_port, admin_port=admin_port))
        for group in (EDGE, SIDECAR)}
    for group, listeners in ((EDGE, ("edge", "edge-unsampled", "edge-zipkin")), (SIDECAR, ("sidecar",))):
        for name in listeners:
            wait_until(lambda g=group, n=name: envoys[g].listener_port(n) == ports[n], timeout_s=15,
                       message=f"{group} Envoy never bound listener {name}", ignore=(KeyError, AdminError))
    return {"ports": ports, "envoys": envoys}


def test_a_request_through_edge_and_sidecar_is_one_trace_with_both_spans(
        jaeger: Jaeger, proxies: dict[str, Any]) -> None:
    ports = proxies["ports"]
    user = f"alice-{uuid.uuid4().hex[:8]}"
    # The first request can race the sidecar's cluster warming; retry until the whole path answers.
    wait_until(lambda: _get(ports["edge"], user) == 200, timeout_s=15, ignore=(OSError,),
               message="no 200 through edge -> sidecar -> app")

    traces = wait_until(
        lambda: {t: s for t, s in _traces_with_user(jaeger, user).items()
                 if {span.service for span in s} >= {EDGE, SIDECAR}},
        timeout_s=TRACE_TIMEOUT_S, ignore=(OSError,),
        message=lambda: f"no trace with spans of both Envoys; Jaeger has services {jaeger.services()}")
    trace_id, spans = next(iter(traces.items()))
    edge_spans = [s for s in spans if s.service == EDGE]
    sidecar_spans = [s for s in spans if s.service == SIDECAR]
    assert len(edge_spans) == 1 and len(sidecar_spans) == 1, spans
    edge_span, sidecar_span = edge_spans[0], sidecar_spans[0]
    # One trace: the same trace id, and the sidecar's span is the child of the edge's (propagated context).
    assert edge_span.trace_id == sidecar_span.trace_id == trace_id
    assert sidecar_span.parent_span_ids == (edge_span.span_id,), spans
    # The custom tags: a literal, and a request header (case-insensitive name) on both proxies' spans.
    for span in (edge_span, sidecar_span):
        assert span.tags.get("env") == "e2e", span.tags
        assert span.tags.get("user") == user, span.tags


def test_sampling_zero_gives_no_trace_and_zipkin_reaches_jaeger(
        jaeger: Jaeger, proxies: dict[str, Any]) -> None:
    ports = proxies["ports"]
    unsampled = f"bob-{uuid.uuid4().hex[:8]}"
    for _ in range(5):
        assert _get(ports["edge-unsampled"], unsampled) == 200
    # A marker through the same edge Envoy and the same OTLP exporter, sent after the unsampled requests:
    # once it is in Jaeger, spans of the earlier requests would have been exported with or before it.
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    wait_until(lambda: _get(ports["edge"], marker) == 200, timeout_s=15, ignore=(OSError,),
               message="no 200 through the edge listener")
    wait_until(lambda: _traces_with_user(jaeger, marker), timeout_s=TRACE_TIMEOUT_S, ignore=(OSError,),
               message="the sampled marker request never showed up in Jaeger")
    assert _traces_with_user(jaeger, unsampled) == {}

    # Zipkin: spans posted as JSON v2 to Jaeger's Zipkin receiver; the service is the Envoy's node group.
    via_zipkin = f"carol-{uuid.uuid4().hex[:8]}"
    assert _get(ports["edge-zipkin"], via_zipkin) == 200
    edge = proxies["envoys"][EDGE]
    traces = wait_until(
        lambda: _traces_with_user(jaeger, via_zipkin), timeout_s=TRACE_TIMEOUT_S, ignore=(OSError,),
        message=lambda: "the Zipkin-traced request never showed up in Jaeger; Envoy's stats: "
                        f"{edge.stats('zipkin')} {edge.stats('xds-tracing/zipkin')}")
    spans = next(iter(traces.values()))
    assert any(span.tags.get("via") == "zipkin" and span.service == EDGE for span in spans), spans
    for envoy in proxies["envoys"].values():
        assert envoy.update_rejected_total() == 0
