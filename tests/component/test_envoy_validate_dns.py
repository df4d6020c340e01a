"""Host-name endpoints (issue 13, docs/dns.md) through the real Envoy (`--mode validate`): the DNS clusters
built for each `dns` setting load, with no deprecated-field warning, and a LOGICAL_DNS cluster with two
endpoints, which the loader refuses, is refused by Envoy too."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.component.test_envoy_validate import _inlined, _to_json, _verbatim
from tests.component.test_envoy_validate_lb import _deprecations, _validate_log
from xds.model.service import Endpoint
from xds.policy.apply import apply_policy
from xds.policy.desired import ClusterSpec, DesiredState, DnsMode, DnsSpec
from xds.policy.load import parse_document
from xds.translate.build import translate

CATALOG = textwrap.dedent("""
    services:
      - name: strict-default
        endpoints: [{address: "web.internal:8080"}]
      - name: logical
        dns: {mode: logical, refresh_rate: 250ms, respect_ttl: true, lookup_family: v4_only}
        endpoints: [{address: "api.internal:443"}]
      - name: v6
        dns: {lookup_family: v6_only, refresh_rate: 30s}
        endpoints: [{address: "v6.internal:80"}]
      - name: auto
        dns: {lookup_family: auto, respect_ttl: true}
        endpoints: [{address: "auto.internal:80"}]
      - name: all-families
        dns: {mode: strict, lookup_family: all}
        endpoints: [{address: "all.internal:80"}]
      - name: mixed
        dns: {lookup_family: v4_preferred}
        endpoints:
          - {address: "10.0.0.1:80", weight: 3, locality: {region: r1, zone: a}}
          - {address: "mixed.internal:80", health: draining, locality: {region: r1, zone: b}}
          - {address: "[::1]:80", health: unhealthy}
      - name: ip-only
        dns: {mode: logical}
        endpoints: [{address: "10.0.0.2:80"}]
    listeners:
      - name: edge
        port: 10000
        routes:
          - {name: a, match: {prefix: /a}, backends: [{service: strict-default}]}
          - {name: b, match: {prefix: /b}, backends: [{service: logical}]}
          - {name: c, match: {prefix: /c}, backends: [{service: v6}]}
          - {name: d, match: {prefix: /d}, backends: [{service: auto}]}
          - {name: e, match: {prefix: /e}, backends: [{service: all-families}]}
          - {name: f, match: {prefix: /f}, backends: [{service: mixed}]}
          - {name: g, match: {prefix: /g}, backends: [{service: ip-only}]}
""")


def _state() -> DesiredState:
    catalog, policy = parse_document(CATALOG, where="dns.yaml")
    return apply_policy(catalog, policy, group="validate")


def test_dns_clusters_of_every_setting_are_valid(tmp_path: Path) -> None:
    state = _state()
    assert sorted(c.name for c in state.clusters if c.dns) == [
        "all-families", "auto", "logical", "mixed", "strict-default", "v6"]
    items = translate(state)
    for name, config in (("verbatim", _verbatim(items)), ("inlined", _to_json(_inlined(items)))):
        code, log = _validate_log(config, tmp_path / f"{name}.json")
        assert code == 0, f"envoy rejected the {name} config:\n{log}"
        assert _deprecations(log) == [], log


@pytest.mark.parametrize("mode", [DnsMode.LOGICAL, DnsMode.STRICT])
def test_envoy_takes_one_endpoint_in_a_logical_dns_cluster(tmp_path: Path, mode: DnsMode) -> None:
    # Built by hand: apply_policy never emits this (it falls back to STRICT_DNS), the loader refuses it.
    spec = ClusterSpec("two", "two", dns=True, dns_options=DnsSpec(mode),
                       endpoints=(Endpoint("a.internal", 80), Endpoint("b.internal", 80)))
    code, log = _validate_log(_verbatim(translate(DesiredState(clusters=(spec,)))), tmp_path / "two.json")
    if mode is DnsMode.LOGICAL:
        assert code != 0, log
        assert "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint" in log
    else:
        assert code == 0, log
