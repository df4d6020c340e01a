"""Tracing (issue 14 item 2, docs/tracing.md) through the real Envoy (`--mode validate`): the HCM `tracing`
of both providers, with every kind of custom tag, and the collector clusters the control plane emits load
with no deprecation warning; a Zipkin tracer naming a cluster that does not exist is refused, so the gate
does not pass vacuously (the OpenTelemetry tracer's gRPC client only looks its cluster up when it exports)."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

from tests.component.test_envoy_validate import _inlined, _to_json, _verbatim
from tests.component.test_envoy_validate_lb import _deprecations, _validate_log
from xds.policy.apply import apply_policy
from xds.policy.desired import DesiredState
from xds.policy.load import parse_document
from xds.translate.build import translate

CATALOG = textwrap.dedent("""
    services:
      - name: web
        endpoints: [{address: "10.0.0.1:8080"}]
    tracing:
      address: 127.0.0.1
      port: 4317
      sampling: 12.5
      service_name: edge-proxy
      tags:
        - {name: env, literal: prod}
        - {name: user, header: X-User, default: anonymous}
        - {name: host, environment: HOSTNAME, default: unknown}
    listeners:
      - name: edge
        port: 10000
        routes: [{backends: [{service: web}]}]
      - name: zipkin
        port: 10001
        tracing: {address: "::1", port: 9411, provider: zipkin, sampling: 0,
                  tags: [{name: route, literal: zipkin}]}
        routes: [{backends: [{service: web}]}]
""")


def _state() -> DesiredState:
    catalog, policy = parse_document(CATALOG, where="tracing.yaml")
    return apply_policy(catalog, policy, group="validate")


def test_tracing_of_both_providers_is_valid(tmp_path: Path) -> None:
    state = _state()
    assert sorted(c.name for c in state.clusters) == [
        "web", "xds-tracing/opentelemetry/127.0.0.1:4317", "xds-tracing/zipkin/[::1]:9411"]
    by_name = {listener.name: listener.tracing for listener in state.listeners}
    assert by_name["edge"] is not None and by_name["edge"].service_name == "edge-proxy"
    assert by_name["zipkin"] is not None and by_name["zipkin"].sampling_percent == 0.0
    items = translate(state)
    for name, config in (("verbatim", _verbatim(items)), ("inlined", _to_json(_inlined(items)))):
        code, log = _validate_log(config, tmp_path / f"{name}.json")
        assert code == 0, f"envoy rejected the {name} config:\n{log}"
        assert _deprecations(log) == [], log


def test_envoy_refuses_tracing_to_a_missing_cluster(tmp_path: Path) -> None:
    state = _state()
    zipkin = next(listener for listener in state.listeners if listener.name == "zipkin")
    assert zipkin.tracing is not None
    broken = replace(zipkin, tracing=replace(zipkin.tracing, collector_cluster="no-such-cluster"))
    state = replace(state, listeners=(broken,))
    code, log = _validate_log(_to_json(_inlined(translate(state))), tmp_path / "broken.json")
    assert code != 0, log
    assert "no-such-cluster" in log, log
