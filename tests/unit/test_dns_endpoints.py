"""Host-name endpoints (issue 13, docs/dns.md): the loader's checks, the policy's decision and the Cluster
Envoy gets."""

from __future__ import annotations

import textwrap

import pytest
from envoy.config.core.v3 import health_check_pb2
from envoy.extensions.clusters.common.dns.v3 import dns_pb2
from envoy.extensions.clusters.dns.v3 import dns_cluster_pb2

from xds.model.service import Catalog, Endpoint, Health, Locality, Service, ServiceName
from xds.policy.apply import apply_policy, explain_warnings
from xds.policy.desired import ClusterSpec, DnsLookupFamily, DnsMode, DnsSpec
from xds.policy.errors import PolicyError
from xds.policy.load import parse_document
from xds.policy.rules import parse_host_port
from xds.policy.schema import BackendRef, ListenerPolicy, Policy, RoutePolicy, ServicePolicy
from xds.translate.clusters import build_cluster, cluster_key
from xds.translate.dns import DNS_CLUSTER_EXTENSION


def _doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def _problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_document(_doc(text), where="catalog.yaml")
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(("text", "expected"), [
    ("localhost:8080", ("localhost", 8080)),
    ("API.Internal:80", ("api.internal", 80)),  # DNS ignores case: one name, one endpoint
    ("a-1.b2.example.com:443", ("a-1.b2.example.com", 443)),
    ("127.0.0.1:80", ("127.0.0.1", 80)),
    ("[::1]:80", ("::1", 80)),
])
def test_host_names_and_ip_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == (*expected, "")


@pytest.mark.parametrize(("text", "fragment"), [
    ("exa mple:80", "RFC 1123 host name"),
    ("-web:80", "RFC 1123 host name"),
    ("web-.internal:80", "RFC 1123 host name"),
    ("a..b:80", "RFC 1123 host name"),
    ("under_score.internal:80", "RFC 1123 host name"),
    (f"{'a' * 64}.internal:80", "RFC 1123 host name"),
    ("10.0.0.256:80", "last label is all digits"),
    ("[web.internal]:80", "only IPv6 addresses go in brackets"),
    ("web.internal:0", "the port must be a number"),
])
def test_bad_host_names_are_refused(text: str, fragment: str) -> None:
    host, port, problem = parse_host_port(text)
    assert (host, port) == ("", 0) and fragment in problem


def test_loader_error_names_the_endpoint() -> None:
    problems = _problems("""
        services:
          - name: web
            endpoints:
              - address: 10.0.0.1:80
              - address: web.internal:80
              - address: "exa mple:80"
        """)
    assert len(problems) == 1
    assert "services[0].endpoints[2].address" in problems[0] and problems[0].startswith("catalog.yaml:6:")
    assert "'exa mple:80'" in problems[0] and "RFC 1123" in problems[0]


def test_duplicate_host_names_differing_in_case_are_refused() -> None:
    problems = _problems("""
        services:
          - name: web
            endpoints: [{address: "web.internal:80"}, {address: "WEB.internal:80"}]
        """)
    assert len(problems) == 1 and "web.internal:80" in problems[0]


def test_logical_dns_takes_exactly_one_endpoint() -> None:
    problems = _problems("""
        services:
          - name: web
            dns: {mode: logical}
            endpoints: [{address: "a.internal:80"}, {address: "b.internal:80"}]
        """)
    assert len(problems) == 1
    assert "services[0].endpoints" in problems[0] and "exactly one endpoint" in problems[0]
    assert "got 2" in problems[0]


def test_refresh_rate_must_exceed_a_millisecond() -> None:
    problems = _problems("""
        services:
          - name: web
            dns: {refresh_rate: 1ms}
        """)
    assert len(problems) == 1 and "services[0].dns.refresh_rate" in problems[0]
    assert "more than 1ms" in problems[0]


def test_dns_settings_are_loaded() -> None:
    catalog, policy = parse_document(_doc("""
        services:
          - name: web
            dns: {mode: logical, refresh_rate: 2s, respect_ttl: true, lookup_family: all}
            endpoints: [{address: "Web.Internal:8080", weight: 3}]
        """), where="catalog.yaml")
    assert policy.services[0].dns == DnsSpec(DnsMode.LOGICAL, 2.0, True, DnsLookupFamily.ALL)
    service = catalog.get("web")
    assert service is not None and service.endpoints[0].host == "web.internal"
    assert service.endpoints[0].is_dns_name and service.endpoints[0].weight == 3


def _apply(endpoints: tuple[Endpoint, ...], dns: DnsSpec | None = None) -> ClusterSpec:
    catalog = Catalog((Service(ServiceName("web"), endpoints),))
    policy = Policy((ServicePolicy("web", dns=dns),),
                    (ListenerPolicy("l", port=1, routes=(RoutePolicy("r", backends=(BackendRef("web"),)),)),))
    (cluster,) = apply_policy(catalog, policy, group="g").clusters
    return cluster


def test_policy_decides_the_dns_options() -> None:
    one = (Endpoint("web.internal", 80),)
    assert _apply(one).dns and _apply(one).dns_options == DnsSpec()
    logical = DnsSpec(DnsMode.LOGICAL, refresh_rate_s=3.0)
    assert _apply(one, logical).dns_options == logical
    # A registry can give a LOGICAL service two endpoints: STRICT_DNS rather than a cluster Envoy rejects.
    two = (*one, Endpoint("web2.internal", 80))
    assert _apply(two, logical).dns_options == DnsSpec(DnsMode.STRICT, refresh_rate_s=3.0)
    # IP endpoints only: EDS, whatever the block says.
    assert not _apply((Endpoint("10.0.0.1", 80),), logical).dns
    # Mixed: one DNS cluster for all (Envoy resolves an IP literal to itself).
    mixed = _apply((Endpoint("10.0.0.1", 80), Endpoint("web.internal", 80)))
    assert mixed.dns and len(mixed.endpoints) == 2


def test_validate_warns_about_a_logical_service_with_several_endpoints() -> None:
    two = (Endpoint("a.internal", 80), Endpoint("b.internal", 80))
    catalog = Catalog((Service(ServiceName("web"), two),))
    policy = Policy((ServicePolicy("web", dns=DnsSpec(DnsMode.LOGICAL)),))
    assert explain_warnings(catalog, policy) == [
        "service 'web': dns.mode logical needs exactly one endpoint, it has 2; Envoy gets a STRICT_DNS "
        "cluster instead"]


@pytest.mark.parametrize(("spec", "family"), [
    (DnsSpec(), dns_pb2.V4_PREFERRED),
    (DnsSpec(lookup_family=DnsLookupFamily.V4_ONLY), dns_pb2.V4_ONLY),
    (DnsSpec(lookup_family=DnsLookupFamily.V6_ONLY), dns_pb2.V6_ONLY),
    (DnsSpec(lookup_family=DnsLookupFamily.AUTO), dns_pb2.AUTO),
    (DnsSpec(DnsMode.LOGICAL, 0.25, True, DnsLookupFamily.ALL), dns_pb2.ALL),
])
def test_cluster_carries_the_dns_settings(spec: DnsSpec, family: int) -> None:
    cluster = build_cluster(ClusterSpec("web", "web", dns=True, dns_options=spec,
                                        endpoints=(Endpoint("web.internal", 80),)))
    assert cluster.cluster_type.name == DNS_CLUSTER_EXTENSION
    config = dns_cluster_pb2.DnsCluster()
    assert cluster.cluster_type.typed_config.Unpack(config)
    assert config.dns_lookup_family == family
    assert config.respect_dns_ttl is spec.respect_ttl
    assert config.all_addresses_in_single_endpoint is (spec.mode is DnsMode.LOGICAL)
    rate = config.dns_refresh_rate.ToNanoseconds() if config.HasField("dns_refresh_rate") else None
    assert rate == (None if spec.refresh_rate_s is None else round(spec.refresh_rate_s * 1e9))


def test_inline_endpoints_keep_health_weight_locality_and_priority() -> None:
    endpoints = (Endpoint("a.internal", 80, weight=5, health=Health.DRAINING, locality=Locality("r1", "z1")),
                 Endpoint("b.internal", 81, weight=2, priority=1, locality=Locality("r2", "z2")))
    cluster = build_cluster(ClusterSpec("web", "web", dns=True, endpoints=endpoints))
    groups = [(g.priority, g.locality.region, g.locality.zone,
               [(e.endpoint.address.socket_address.address, e.load_balancing_weight.value, e.health_status)
                for e in g.lb_endpoints]) for g in cluster.load_assignment.endpoints]
    assert groups == [(0, "r1", "z1", [("a.internal", 5, health_check_pb2.DRAINING)]),
                      (1, "r2", "z2", [("b.internal", 2, health_check_pb2.HEALTHY)])]


def test_cluster_key_follows_the_dns_options() -> None:
    base = ClusterSpec("web", "web", dns=True, endpoints=(Endpoint("web.internal", 80),))
    other = ClusterSpec("web", "web", dns=True, endpoints=base.endpoints,
                        dns_options=DnsSpec(DnsMode.LOGICAL))
    assert cluster_key(base) != cluster_key(other)
