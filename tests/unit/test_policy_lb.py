"""A service's `load_balancer` knobs and `upstream_connection` settings (issue 8): located errors, defaults
(unset is Envoy's default: nothing emitted), `lb_policy` working as before, what reaches ClusterSpec, and
the Envoy fields translate emits (merged into one HttpProtocolOptions with HTTP/2)."""

from __future__ import annotations

import textwrap

import pytest
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.service_settings import loaded_service as _service
from tests.unit.service_settings import service_problems as _problems
from xds.model.service import Catalog
from xds.policy.apply import apply_policy
from xds.policy.desired import (
    ClusterSpec,
    LbPolicy,
    LoadBalancerSpec,
    TcpKeepaliveSpec,
    UpstreamConnectionSpec,
)
from xds.policy.errors import PolicyError
from xds.policy.lb_checks import is_prime
from xds.policy.load import parse_document, policy_from_data
from xds.policy.schema import BackendRef, ListenerPolicy, Policy, RoutePolicy, ServicePolicy
from xds.translate.clusters import HTTP_PROTOCOL_OPTIONS_KEY, build_cluster, cluster_key


def _json(spec: ClusterSpec) -> dict[str, object]:
    return json_format.MessageToDict(build_cluster(spec), preserving_proto_field_name=True)


def test_absent_means_envoys_defaults_and_nothing_emitted() -> None:
    service = _service("lb_policy: least_request")
    assert service.load_balancer is None and service.upstream_connection is None
    cluster = _json(ClusterSpec(name="web", service="web", lb_policy=LbPolicy.LEAST_REQUEST))
    for key in ("least_request_lb_config", "common_lb_config", "typed_extension_protocol_options",
                "upstream_connection_options"):
        assert key not in cluster


@pytest.mark.parametrize("policy", list(LbPolicy))
def test_empty_mappings_emit_nothing_and_lb_policy_works_as_before(policy: LbPolicy) -> None:
    service = _service(f"lb_policy: {policy.value}\nload_balancer: {{}}\nupstream_connection: {{}}")
    assert service.lb_policy is policy
    assert service.load_balancer == LoadBalancerSpec()
    assert service.upstream_connection == UpstreamConnectionSpec()
    bare = build_cluster(ClusterSpec(name="web", service="web", lb_policy=policy))
    knobs = build_cluster(ClusterSpec(name="web", service="web", lb_policy=policy,
                                      load_balancer=service.load_balancer,
                                      upstream_connection=service.upstream_connection))
    assert knobs == bare


def test_every_knob_reaches_the_cluster_through_apply_policy() -> None:
    _, policy = parse_document(textwrap.dedent("""
        services:
          - name: web
            lb_policy: least_request
            load_balancer: {choice_count: 4, slow_start_window: 45s, healthy_panic_threshold: 0}
            upstream_connection:
              idle_timeout: 90s
              max_requests_per_connection: 1
              tcp_keepalive: {probes: 2, time: 30, interval: 5s}
        listeners:
          - {name: edge, port: 10000, routes: [{backends: [{service: web}]}]}
    """), where="c.yaml")
    state = apply_policy(Catalog(), policy, group="g")
    (cluster,) = state.clusters
    assert cluster.load_balancer == LoadBalancerSpec(choice_count=4, slow_start_window_s=45.0,
                                                     healthy_panic_threshold=0)
    assert cluster.upstream_connection == UpstreamConnectionSpec(
        idle_timeout_s=90.0, max_requests_per_connection=1,
        tcp_keepalive=TcpKeepaliveSpec(probes=2, time_s=30.0, interval_s=5.0))
    out = _json(cluster)
    assert out["least_request_lb_config"] == {"choice_count": 4,
                                              "slow_start_config": {"slow_start_window": "45s"}}
    # 0% is "panic mode off": the Percent message is present with value 0.
    assert out["common_lb_config"] == {"healthy_panic_threshold": {}}
    assert out["upstream_connection_options"] == {
        "tcp_keepalive": {"keepalive_probes": 2, "keepalive_time": 30, "keepalive_interval": 5}}
    options = out["typed_extension_protocol_options"]
    assert isinstance(options, dict)
    assert options[HTTP_PROTOCOL_OPTIONS_KEY] == {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http_protocol_options": {}},
        "common_http_protocol_options": {"idle_timeout": "90s", "max_requests_per_connection": 1}}


def test_connection_knobs_merge_with_http2_into_one_protocol_options() -> None:
    cluster = build_cluster(ClusterSpec(name="web", service="web", http2=True,
                                        upstream_connection=UpstreamConnectionSpec(idle_timeout_s=2.5)))
    assert list(cluster.typed_extension_protocol_options) == [HTTP_PROTOCOL_OPTIONS_KEY]
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")
    assert options.common_http_protocol_options.idle_timeout.ToNanoseconds() == 2_500_000_000
    # Keepalive alone is a socket option, not an HTTP one: HTTP/2 keeps its shared cached options.
    keepalive_only = build_cluster(ClusterSpec(name="web", service="web", http2=True,
                                               upstream_connection=UpstreamConnectionSpec(
                                                   tcp_keepalive=TcpKeepaliveSpec())))
    plain = build_cluster(ClusterSpec(name="web", service="web", http2=True))
    assert keepalive_only.typed_extension_protocol_options == plain.typed_extension_protocol_options
    assert keepalive_only.upstream_connection_options.HasField("tcp_keepalive")


@pytest.mark.parametrize(("policy", "knobs", "field", "expected"), [
    (LbPolicy.RING_HASH, LoadBalancerSpec(minimum_ring_size=16, maximum_ring_size=1024),
     "ring_hash_lb_config", {"minimum_ring_size": "16", "maximum_ring_size": "1024"}),
    (LbPolicy.MAGLEV, LoadBalancerSpec(table_size=7), "maglev_lb_config", {"table_size": "7"}),
    (LbPolicy.ROUND_ROBIN, LoadBalancerSpec(slow_start_window_s=0.5), "round_robin_lb_config",
     {"slow_start_config": {"slow_start_window": "0.500s"}}),
    (LbPolicy.RANDOM, LoadBalancerSpec(healthy_panic_threshold=75), "common_lb_config",
     {"healthy_panic_threshold": {"value": 75.0}}),
])
def test_each_policy_gets_its_own_lb_config(policy: LbPolicy, knobs: LoadBalancerSpec, field: str,
                                            expected: dict[str, object]) -> None:
    cluster = _json(ClusterSpec(name="web", service="web", lb_policy=policy, load_balancer=knobs))
    assert cluster[field] == expected


def test_cluster_key_sees_the_new_settings() -> None:
    base = ClusterSpec(name="web", service="web")
    keys = {cluster_key(base),
            cluster_key(ClusterSpec(name="web", service="web", load_balancer=LoadBalancerSpec())),
            cluster_key(ClusterSpec(name="web", service="web",
                                    upstream_connection=UpstreamConnectionSpec(max_requests_per_connection=1)))}
    assert len(keys) == 3


@pytest.mark.parametrize(("settings", "expected"), [
    ("load_balancer: {choice_count: 3}",
     "c.yaml:3:35: services[0].load_balancer.choice_count: applies to lb_policy `least_request` only; this "
     "service uses `round_robin`"),
    ("lb_policy: ring_hash\nload_balancer: {table_size: 65537}",
     "c.yaml:4:33: services[0].load_balancer.table_size: applies to lb_policy `maglev` only; this service "
     "uses `ring_hash`"),
    ("lb_policy: maglev\nload_balancer: {table_size: 65536}",
     "c.yaml:4:33: services[0].load_balancer.table_size: must be a prime number (Envoy's maglev needs one), "
     "got 65536"),
    ("lb_policy: maglev\nload_balancer: {table_size: 5000012}",
     "c.yaml:4:33: services[0].load_balancer.table_size: must be an integer between 2 and 5000011, got "
     "integer 5000012"),
    ("lb_policy: maglev\nload_balancer: {slow_start_window: 10s}",
     "c.yaml:4:40: services[0].load_balancer.slow_start_window: applies to lb_policy `round_robin` and "
     "`least_request` only; this service uses `maglev`"),
    ("lb_policy: ring_hash\nload_balancer: {minimum_ring_size: 4096, maximum_ring_size: 1024}",
     "c.yaml:4:40: services[0].load_balancer.minimum_ring_size: must be at most maximum_ring_size (1024), "
     "got 4096"),
    ("lb_policy: ring_hash\nload_balancer: {maximum_ring_size: 8388609}",
     "c.yaml:4:40: services[0].load_balancer.maximum_ring_size: must be an integer between 1 and 8388608, "
     "got integer 8388609"),
    ("lb_policy: least_request\nload_balancer: {choice_count: 1}",
     "c.yaml:4:35: services[0].load_balancer.choice_count: must be an integer between 2 and 100, got "
     "integer 1"),
    ("load_balancer: {healthy_panic_threshold: 101}",
     "c.yaml:3:46: services[0].load_balancer.healthy_panic_threshold: must be an integer between 0 and 100, "
     "got integer 101"),
    ("load_balancer: {slow_start_window: 0s}",
     "c.yaml:3:40: services[0].load_balancer.slow_start_window: must be more than 0 and at most 3600s, got "
     "'0s'"),
    ("upstream_connection: {idle_timeout: 90000s}",
     "c.yaml:3:41: services[0].upstream_connection.idle_timeout: must be more than 0 and at most 86400s, got "
     "'90000s'"),
    ("upstream_connection: {max_requests_per_connection: 0}",
     "c.yaml:3:56: services[0].upstream_connection.max_requests_per_connection: must be an integer between 1 "
     "and 4294967295, got integer 0"),
    ("upstream_connection: {tcp_keepalive: {time: 1.5s}}",
     "c.yaml:3:49: services[0].upstream_connection.tcp_keepalive.time: must be whole seconds (Envoy counts "
     "keepalive in seconds), got 1.5s"),
    ("upstream_connection: {tcp_keepalive: {probes: 128}}",
     "c.yaml:3:51: services[0].upstream_connection.tcp_keepalive.probes: must be an integer between 1 and "
     "127, got integer 128"),
])
def test_located_errors(settings: str, expected: str) -> None:
    assert _problems(settings) == [expected]


def test_load_balancer_does_not_pick_the_policy() -> None:
    # One key picks the policy (docs/config.md "Load balancer"): `policy` is an unknown key, with its reason.
    (problem,) = _problems("load_balancer: {policy: maglev}")
    assert problem.startswith("c.yaml:3:21: services[0].load_balancer.policy: unknown key 'policy'")


def test_policy_only_documents_accept_the_same_keys() -> None:
    policy = policy_from_data({"services": [{"name": "web", "lb_policy": "maglev",
                                             "load_balancer": {"table_size": 131071},
                                             "upstream_connection": {"idle_timeout": "10s"}}]},
                              where="kv")
    assert policy.services[0].load_balancer == LoadBalancerSpec(table_size=131071)
    with pytest.raises(PolicyError) as info:
        policy_from_data({"services": [{"name": "web", "load_balancer": {"table_size": 131071}}]}, where="kv")
    assert [str(p) for p in info.value.problems] == [
        "kv: services[0].load_balancer.table_size: applies to lb_policy `maglev` only; this service uses "
        "`round_robin`"]


def test_is_prime() -> None:
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert is_prime(65537) and is_prime(5_000_011) and not is_prime(65536)


@given(st.integers(min_value=2, max_value=5_000_011))
def test_table_size_is_accepted_exactly_when_prime(size: int) -> None:
    try:
        service = _service(f"lb_policy: maglev\nload_balancer: {{table_size: {size}}}")
    except PolicyError:
        assert not is_prime(size)
    else:
        assert is_prime(size) and service.load_balancer == LoadBalancerSpec(table_size=size)


@given(st.floats(min_value=0.001, max_value=3600.0, allow_nan=False))
def test_slow_start_window_within_bounds_is_accepted(seconds: float) -> None:
    service = _service(f"load_balancer: {{slow_start_window: {seconds!r}}}")
    assert service.load_balancer == LoadBalancerSpec(slow_start_window_s=seconds)


def test_policies_built_in_code_carry_the_knobs() -> None:
    # Policy objects built in code carry the same settings as loaded ones.
    service = ServicePolicy(name="web", load_balancer=LoadBalancerSpec(healthy_panic_threshold=10))
    policy = Policy(services=(service,), listeners=(ListenerPolicy(
        name="edge", port=10000, routes=(RoutePolicy(name="r", backends=(BackendRef(service="web"),)),)),))
    (cluster,) = apply_policy(Catalog(), policy, group="g").clusters
    assert cluster.load_balancer == LoadBalancerSpec(healthy_panic_threshold=10)
