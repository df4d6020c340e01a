"""Translation: golden files per representative DesiredState, plus table-driven checks of each mapping.

Regenerate the golden files after an intended change with
`UPDATE_GOLDEN=1 pytest tests/unit/test_translate.py` and review the diff: it is exactly what every Envoy
will receive differently.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from xds.cache.snapshot import InconsistentSnapshotError, make_snapshot
from xds.model.service import Endpoint, Health, Locality
from xds.policy.desired import (
    CircuitBreakersSpec,
    ClusterSpec,
    DesiredState,
    FaultSpec,
    GrpcHealthCheckSpec,
    HashPolicySpec,
    HashSource,
    HeaderMatchSpec,
    HealthCheckSpec,
    HttpHealthCheckSpec,
    LbPolicy,
    ListenerSpec,
    LoadBalancerSpec,
    LocalitySpec,
    OutlierDetectionSpec,
    RetryBudgetSpec,
    RetrySpec,
    RouteConfigSpec,
    RouteSpec,
    TcpHealthCheckSpec,
    TcpKeepaliveSpec,
    UpstreamConnectionSpec,
    VirtualHostSpec,
    WeightedClusterSpec,
)
from xds.translate.build import plan, translate
from xds.translate.clusters import HTTP_PROTOCOL_OPTIONS_KEY, build_cluster
from xds.translate.endpoints import build_load_assignment
from xds.translate.listeners import build_listener
from xds.translate.resource import Deferred, Translated
from xds.translate.routes import RETRY_ON, build_route_configuration
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

GOLDEN_DIR = Path(__file__).parent / "golden"


def _listener(route_config: str = "main", *, port: int = 10000) -> ListenerSpec:
    return ListenerSpec(name=f"ingress_{port}", address="0.0.0.0", port=port, route_config=route_config)


def _single_route(name: str, *backends: WeightedClusterSpec, **route: Any) -> RouteConfigSpec:
    return RouteConfigSpec(name="main", virtual_hosts=(
        VirtualHostSpec(name="all", routes=(RouteSpec(name=name, backends=backends, **route),)),))


CASES: dict[str, DesiredState] = {
    # Policy split `reviews` by the `version` tag into two subset clusters and weighted them 90/10.
    "subset_split_90_10": DesiredState(
        clusters=(
            ClusterSpec(name="reviews-v1", service="reviews", subset=(("version", "v1"),), endpoints=(
                Endpoint("10.0.1.1", 9080, metadata=(("version", "v1"),)),
                Endpoint("10.0.1.2", 9080, metadata=(("version", "v1"),)),
            )),
            ClusterSpec(name="reviews-v2", service="reviews", subset=(("version", "v2"),), endpoints=(
                Endpoint("10.0.2.1", 9080, metadata=(("version", "v2"),)),
            )),
        ),
        listeners=(_listener(),),
        route_configs=(_single_route("reviews", WeightedClusterSpec("reviews-v1", 90),
                                     WeightedClusterSpec("reviews-v2", 10)),),
    ),
    # Header routes first (exact, present, inverted), then a catch-all; retries and a timeout on one.
    "header_retries_timeout": DesiredState(
        clusters=(
            ClusterSpec(name="api", service="api", endpoints=(Endpoint("10.0.0.10", 8080),)),
            ClusterSpec(name="api-canary", service="api", endpoints=(Endpoint("10.0.0.11", 8080),)),
        ),
        listeners=(_listener(),),
        route_configs=(RouteConfigSpec(name="main", virtual_hosts=(VirtualHostSpec(
            name="api", domains=("api.example.com", "api.example.com:10000"), routes=(
                RouteSpec(name="canary-header", prefix="/v1/",
                          headers=(HeaderMatchSpec("x-canary", exact="true"),
                                   HeaderMatchSpec("x-debug", invert=True)),
                          backends=(WeightedClusterSpec("api-canary", 100),), timeout_s=2.5, retries=3),
                RouteSpec(name="has-user", headers=(HeaderMatchSpec("x-user"),),
                          backends=(WeightedClusterSpec("api", 100),), retries=1),
                RouteSpec(name="default", backends=(WeightedClusterSpec("api", 100),), timeout_s=0.0),
            )),)),),
    ),
    # Issue 8, per route: a full retry policy with the different-host predicate, request and idle timeouts,
    # and session affinity by header, then cookie (Envoy generates it), source IP and query parameter.
    "retry_policy_session_affinity": DesiredState(
        clusters=(ClusterSpec(name="cart", service="cart", lb_policy=LbPolicy.RING_HASH,
                              endpoints=(Endpoint("10.0.5.1", 80), Endpoint("10.0.5.2", 80))),),
        listeners=(_listener(),),
        route_configs=(RouteConfigSpec(name="main", virtual_hosts=(VirtualHostSpec(name="cart", routes=(
            RouteSpec(name="sticky", prefix="/cart", backends=(WeightedClusterSpec("cart", 100),),
                      timeout_s=5.0, idle_timeout_s=30.0,
                      retries=RetrySpec(retry_on=("5xx", "retriable-status-codes", "reset"), num_retries=3,
                                        per_try_timeout_s=0.5, backoff_base_s=0.01, backoff_max_s=0.1,
                                        retriable_status_codes=(409,), different_host=True,
                                        host_selection_attempts=3),
                      hash_policy=(HashPolicySpec(HashSource.HEADER, "x-user"),
                                   HashPolicySpec(HashSource.COOKIE, "session", terminal=True,
                                                  cookie_ttl_s=3600.0, cookie_path="/"),
                                   HashPolicySpec(HashSource.SOURCE_IP),
                                   HashPolicySpec(HashSource.QUERY_PARAMETER, "user"))),
            RouteSpec(name="plain", backends=(WeightedClusterSpec("cart", 100),),
                      retries=RetrySpec(retry_on=("gateway-error",))),
        )),)),),
    ),
    # A route injecting faults: its listener gets the fault filter before the router, the route its config.
    "fault_injection": DesiredState(
        clusters=(ClusterSpec(name="web", service="web", endpoints=(Endpoint("10.0.6.1", 80),)),),
        listeners=(dataclasses.replace(_listener(), fault_filter=True),),
        route_configs=(RouteConfigSpec(name="main", virtual_hosts=(VirtualHostSpec(name="web", routes=(
            RouteSpec(name="rehearse", prefix="/chaos", backends=(WeightedClusterSpec("web", 100),),
                      fault=FaultSpec(delay_s=0.25, delay_percent=10, abort_status=503, abort_percent=5)),
            RouteSpec(name="abort-only", prefix="/a", backends=(WeightedClusterSpec("web", 100),),
                      fault=FaultSpec(abort_status=500, abort_percent=100)),
            RouteSpec(name="calm", backends=(WeightedClusterSpec("web", 100),)),
        )),)),),
    ),
    "http2_least_request": DesiredState(
        clusters=(ClusterSpec(name="grpc-echo", service="grpc-echo", lb_policy=LbPolicy.LEAST_REQUEST,
                              connect_timeout_s=0.25, http2=True,
                              endpoints=(Endpoint("10.0.3.1", 50051), Endpoint("10.0.3.2", 50051))),),
        listeners=(_listener(),),
        route_configs=(_single_route("grpc", WeightedClusterSpec("grpc-echo", 100)),),
    ),
    # A service with no instances still gets a (empty) ClusterLoadAssignment: docs/protocol.md R22.
    "zero_endpoints": DesiredState(
        clusters=(ClusterSpec(name="empty", service="empty"),),
        listeners=(_listener(),),
        route_configs=(_single_route("empty", WeightedClusterSpec("empty", 100)),),
    ),
    # Issue 8: outlier detection with every key, circuit breakers with a retry budget; and a cluster with
    # both turned on at Envoy's defaults (`outlier_detection: {}`, an empty retry budget).
    "outlier_circuit_breakers": DesiredState(
        clusters=(
            ClusterSpec(name="web", service="web",
                        endpoints=(Endpoint("10.0.5.1", 80), Endpoint("10.0.5.2", 80)),
                        outlier_detection=OutlierDetectionSpec(
                            consecutive_5xx=3, consecutive_gateway_failure=2, interval_s=0.5,
                            base_ejection_time_s=30.0, max_ejection_percent=50, success_rate=False,
                            split_external_local_origin_errors=True),
                        circuit_breakers=CircuitBreakersSpec(
                            max_connections=100, max_pending_requests=10, max_requests=50,
                            retry_budget=RetryBudgetSpec(budget_percent=25, min_retry_concurrency=2))),
            ClusterSpec(name="api", service="api", endpoints=(Endpoint("10.0.6.1", 80),),
                        outlier_detection=OutlierDetectionSpec(),
                        circuit_breakers=CircuitBreakersSpec(max_retries=0, retry_budget=None),
                        health_check=HealthCheckSpec(tcp=TcpHealthCheckSpec())),
            ClusterSpec(name="checked", service="checked", endpoints=(Endpoint("10.0.7.1", 80),),
                        health_check=HealthCheckSpec(
                            http=HttpHealthCheckSpec("/healthz", (200, 204), "checked.internal"),
                            interval_s=0.5, timeout_s=0.25, unhealthy_threshold=2, healthy_threshold=2,
                            no_traffic_interval_s=5.0)),
            ClusterSpec(name="orders", service="orders", http2=True, endpoints=(Endpoint("10.0.8.1", 50051),),
                        health_check=HealthCheckSpec(grpc=GrpcHealthCheckSpec("orders.v1.Orders"))),
        ),
        listeners=(_listener(),),
        route_configs=(_single_route("web", WeightedClusterSpec("web", 25), WeightedClusterSpec("api", 25),
                                     WeightedClusterSpec("checked", 25), WeightedClusterSpec("orders", 25)),),
    ),
    # Issue 8: the knobs of each lb_policy, and upstream connection settings merged into the same
    # HttpProtocolOptions as HTTP/2 (api) or with an explicit HTTP/1.1 (web).
    "load_balancer_connections": DesiredState(
        clusters=(
            ClusterSpec(name="web", service="web", lb_policy=LbPolicy.LEAST_REQUEST,
                        endpoints=(Endpoint("10.0.9.1", 80),),
                        load_balancer=LoadBalancerSpec(choice_count=3, slow_start_window_s=30.0,
                                                       healthy_panic_threshold=25),
                        upstream_connection=UpstreamConnectionSpec(
                            idle_timeout_s=300.0, max_requests_per_connection=100,
                            tcp_keepalive=TcpKeepaliveSpec(probes=3, time_s=60.0, interval_s=10.0))),
            ClusterSpec(name="api", service="api", lb_policy=LbPolicy.RING_HASH, http2=True,
                        endpoints=(Endpoint("10.0.9.2", 80),),
                        load_balancer=LoadBalancerSpec(minimum_ring_size=2048, maximum_ring_size=4096),
                        upstream_connection=UpstreamConnectionSpec(max_requests_per_connection=1)),
            ClusterSpec(name="cart", service="cart", lb_policy=LbPolicy.MAGLEV,
                        endpoints=(Endpoint("10.0.9.3", 80),),
                        load_balancer=LoadBalancerSpec(table_size=131071),
                        upstream_connection=UpstreamConnectionSpec(tcp_keepalive=TcpKeepaliveSpec())),
            ClusterSpec(name="rr", service="rr", endpoints=(Endpoint("10.0.9.4", 80),),
                        load_balancer=LoadBalancerSpec(slow_start_window_s=10.0, healthy_panic_threshold=0)),
        ),
        listeners=(_listener(),),
        route_configs=(_single_route("web", WeightedClusterSpec("web", 25), WeightedClusterSpec("api", 25),
                                     WeightedClusterSpec("cart", 25), WeightedClusterSpec("rr", 25)),),
    ),
    "two_localities": DesiredState(
        clusters=(ClusterSpec(name="web", service="web", lb_policy=LbPolicy.RING_HASH, endpoints=(
            Endpoint("10.1.0.1", 80, weight=3, locality=Locality("eu-west-1", "eu-west-1b")),
            Endpoint("10.1.0.2", 80, health=Health.DRAINING, locality=Locality("eu-west-1", "eu-west-1b")),
            Endpoint("10.0.0.1", 80, weight=2, locality=Locality("eu-west-1", "eu-west-1a")),
            Endpoint("10.0.0.2", 80, health=Health.UNHEALTHY, locality=Locality("eu-west-1", "eu-west-1a")),
            Endpoint("10.0.0.3", 80, health=Health.DEGRADED, locality=Locality("eu-west-1", "eu-west-1a")),
            Endpoint("10.0.0.4", 80, health=Health.UNKNOWN, locality=Locality("eu-west-1", "eu-west-1a")),
        )),),
        listeners=(_listener(),),
        route_configs=(_single_route("web", WeightedClusterSpec("web", 100)),),
    ),
    # Issue 8: what apply_policy makes of `locality: {failover: true, overprovisioning_factor: 200}` for a
    # proxy in r1/a (the tiers as priorities, the factor in the assignment's policy).
    "locality_failover": DesiredState(
        clusters=(ClusterSpec(name="web", service="web", locality=LocalitySpec(
            failover=True, overprovisioning_factor=200), endpoints=(
            Endpoint("10.0.0.1", 80, locality=Locality("r1", "a"), priority=0),
            Endpoint("10.0.1.1", 80, locality=Locality("r1", "b"), priority=1),
            Endpoint("10.2.0.1", 80, locality=Locality("r2", "c"), priority=2),
        )),),
        listeners=(_listener(),),
        route_configs=(_single_route("web", WeightedClusterSpec("web", 100)),),
    ),
}


def _as_json(items: list[Translated]) -> str:
    doc = [
        {
            "type_url": item.type_url,
            "name": item.name,
            "refs": [list(ref) for ref in item.refs],
            "resource": json_format.MessageToDict(item.message, preserving_proto_field_name=True),
        }
        for item in items
    ]
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    actual = _as_json(translate(CASES[case]))
    path = GOLDEN_DIR / f"{case}.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(actual)
    assert path.exists(), f"no golden file {path}; run with UPDATE_GOLDEN=1 to create it"
    assert actual == path.read_text(), f"translation of {case} changed; UPDATE_GOLDEN=1 if intended"


@pytest.mark.parametrize("case", sorted(CASES))
def test_snapshot_is_consistent(case: str) -> None:
    snapshot = make_snapshot("g", translate(CASES[case]))
    names = {c.name for c in CASES[case].clusters}
    assert set(snapshot.of_type(CLUSTER)) == set(snapshot.of_type(ENDPOINT)) == names


@pytest.mark.parametrize("case", sorted(CASES))
def test_translation_is_byte_identical(case: str) -> None:
    def bodies() -> list[tuple[str, str, bytes]]:
        return [(t.type_url, t.name, t.message.SerializeToString(deterministic=True))
                for t in translate(CASES[case])]

    assert bodies() == bodies()


def test_refs_and_push_order() -> None:
    items = translate(CASES["header_retries_timeout"])
    assert [(t.type_url, t.name, t.refs) for t in items] == [
        (CLUSTER, "api", ((ENDPOINT, "api"),)),
        (CLUSTER, "api-canary", ((ENDPOINT, "api-canary"),)),
        (ENDPOINT, "api", ()),
        (ENDPOINT, "api-canary", ()),
        (LISTENER, "ingress_10000", ((ROUTE, "main"),)),
        (ROUTE, "main", ((CLUSTER, "api"), (CLUSTER, "api-canary"))),
    ]


def test_route_to_unknown_cluster_fails_the_consistency_check() -> None:
    desired = DesiredState(route_configs=(_single_route("r", WeightedClusterSpec("ghost", 100)),))
    with pytest.raises(InconsistentSnapshotError, match="ghost"):
        make_snapshot("g", translate(desired))


def test_empty_desired_state_translates_to_nothing() -> None:
    assert translate(DesiredState()) == []


# -- clusters -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "expected"), [
    (LbPolicy.ROUND_ROBIN, cluster_pb2.Cluster.ROUND_ROBIN),
    (LbPolicy.LEAST_REQUEST, cluster_pb2.Cluster.LEAST_REQUEST),
    (LbPolicy.RANDOM, cluster_pb2.Cluster.RANDOM),
    (LbPolicy.RING_HASH, cluster_pb2.Cluster.RING_HASH),
    (LbPolicy.MAGLEV, cluster_pb2.Cluster.MAGLEV),
])
def test_lb_policy(policy: LbPolicy, expected: int) -> None:
    assert build_cluster(ClusterSpec(name="c", service="s", lb_policy=policy)).lb_policy == expected


@pytest.mark.parametrize(("seconds", "expected"), [
    (1.0, (1, 0)), (0.25, (0, 250_000_000)), (2.1, (2, 100_000_000)),
])
def test_connect_timeout(seconds: float, expected: tuple[int, int]) -> None:
    timeout = build_cluster(ClusterSpec(name="c", service="s", connect_timeout_s=seconds)).connect_timeout
    assert (timeout.seconds, timeout.nanos) == expected


def test_cluster_is_eds_over_ads() -> None:
    cluster = build_cluster(ClusterSpec(name="c", service="s"))
    assert cluster.type == cluster_pb2.Cluster.EDS
    source = cluster.eds_cluster_config.eds_config
    assert source.WhichOneof("config_source_specifier") == "ads"
    assert source.resource_api_version == 2  # ApiVersion.V3


def test_http2_uses_protocol_options_not_the_deprecated_field() -> None:
    cluster = build_cluster(ClusterSpec(name="c", service="s", http2=True))
    assert not cluster.HasField("http2_protocol_options")
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")


def test_template_is_not_mutated_by_earlier_clusters() -> None:
    build_cluster(ClusterSpec(name="first", service="s", http2=True, lb_policy=LbPolicy.MAGLEV))
    second = build_cluster(ClusterSpec(name="second", service="s"))
    assert len(second.typed_extension_protocol_options) == 0
    assert second.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert second.name == "second"


# -- endpoints ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("health", "expected"), [
    (Health.HEALTHY, health_check_pb2.HEALTHY),
    (Health.UNHEALTHY, health_check_pb2.UNHEALTHY),
    (Health.DRAINING, health_check_pb2.DRAINING),
    (Health.DEGRADED, health_check_pb2.DEGRADED),
    (Health.UNKNOWN, health_check_pb2.UNKNOWN),
])
def test_health_status(health: Health, expected: int) -> None:
    spec = ClusterSpec(name="c", service="s", endpoints=(Endpoint("h", 1, health=health),))
    cla = build_load_assignment(spec)
    assert cla.endpoints[0].lb_endpoints[0].health_status == expected


def test_endpoints_grouped_by_sorted_locality() -> None:
    b, a = Locality("r", "b"), Locality("r", "a")
    spec = ClusterSpec(name="c", service="s", endpoints=(
        Endpoint("10.0.0.1", 80, locality=b), Endpoint("10.0.0.2", 80, weight=5, locality=a),
        Endpoint("10.0.0.3", 80, locality=b),
    ))
    cla = build_load_assignment(spec)
    assert cla.cluster_name == "c"
    assert [group.locality.zone for group in cla.endpoints] == ["a", "b"]
    assert [[(e.endpoint.address.socket_address.address, e.load_balancing_weight.value)
             for e in group.lb_endpoints] for group in cla.endpoints] == [
        [("10.0.0.2", 5)], [("10.0.0.1", 1), ("10.0.0.3", 1)]]


def test_zero_endpoints_give_an_empty_assignment() -> None:
    cla = build_load_assignment(ClusterSpec(name="c", service="s"))
    assert cla.cluster_name == "c"
    assert len(cla.endpoints) == 0


# -- listeners and routes -------------------------------------------------------------------------------


def test_listener_hcm_uses_rds_over_ads_and_logs_response_flags() -> None:
    listener = build_listener(ListenerSpec(name="l", address="127.0.0.1", port=10001, route_config="rc"))
    assert listener.address.socket_address.port_value == 10001
    (chain,) = listener.filter_chains
    (network_filter,) = chain.filters
    manager = http_connection_manager_pb2.HttpConnectionManager()
    assert network_filter.typed_config.Unpack(manager)
    assert manager.stat_prefix == "l"
    assert manager.rds.route_config_name == "rc"
    assert manager.rds.config_source.WhichOneof("config_source_specifier") == "ads"
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]
    log_format = json_format.MessageToDict(manager.access_log[0])["typedConfig"]["logFormat"]
    for operator in ("%RESPONSE_FLAGS%", "%UPSTREAM_CLUSTER%", "%UPSTREAM_HOST%"):
        assert operator in log_format["textFormatSource"]["inlineString"]


def _only_route(config: RouteSpec) -> Any:
    spec = RouteConfigSpec(name="rc", virtual_hosts=(VirtualHostSpec(name="v", routes=(config,)),))
    return build_route_configuration(spec).virtual_hosts[0].routes[0]


def test_weighted_route_has_no_total_weight() -> None:
    backends = (WeightedClusterSpec("a", 90), WeightedClusterSpec("b", 10))
    route = _only_route(RouteSpec(name="r", backends=backends))
    weighted = route.route.weighted_clusters
    assert not weighted.HasField("total_weight")
    assert [(c.name, c.weight.value) for c in weighted.clusters] == [("a", 90), ("b", 10)]


def test_single_backend_route_uses_cluster() -> None:
    route = _only_route(RouteSpec(name="r", backends=(WeightedClusterSpec("a", 100),)))
    assert route.route.cluster == "a"
    assert not route.route.HasField("timeout")
    assert not route.route.HasField("retry_policy")


def test_route_without_backends_answers_503() -> None:
    route = _only_route(RouteSpec(name="r"))
    assert route.WhichOneof("action") == "direct_response"
    assert route.direct_response.status == 503


@pytest.mark.parametrize(("header", "expected"), [
    (HeaderMatchSpec("x-a", exact="1"), {"name": "x-a", "string_match": {"exact": "1"}}),
    (HeaderMatchSpec("x-a", exact=""), {"name": "x-a", "string_match": {"exact": ""}}),
    (HeaderMatchSpec("x-a"), {"name": "x-a", "present_match": True}),
    (HeaderMatchSpec("x-a", invert=True), {"name": "x-a", "present_match": True, "invert_match": True}),
])
def test_header_matchers(header: HeaderMatchSpec, expected: dict[str, Any]) -> None:
    route = _only_route(RouteSpec(name="r", headers=(header,), backends=(WeightedClusterSpec("a", 100),)))
    assert json_format.MessageToDict(route.match.headers[0], preserving_proto_field_name=True) == expected


def test_retries_and_timeout() -> None:
    backends = (WeightedClusterSpec("a", 100),)
    route = _only_route(RouteSpec(name="r", backends=backends, timeout_s=1.5, retries=2))
    assert (route.route.timeout.seconds, route.route.timeout.nanos) == (1, 500_000_000)
    assert route.route.retry_policy.retry_on == RETRY_ON
    assert route.route.retry_policy.num_retries.value == 2


def test_priorities_are_contiguous_from_zero() -> None:
    local = Endpoint(host="10.0.0.1", port=80, priority=0)
    remote = Endpoint(host="10.1.0.1", port=80, priority=1, locality=Locality(region="dc2"))
    both = build_load_assignment(ClusterSpec(name="c", service="c", endpoints=(remote, local)))
    tiers = [(g.priority, g.lb_endpoints[0].endpoint.address.socket_address.address) for g in both.endpoints]
    assert tiers == [(0, "10.0.0.1"), (1, "10.1.0.1")]
    # With no local endpoints left, the remote tier becomes priority 0 instead of leaving a gap.
    only_remote = build_load_assignment(ClusterSpec(name="c", service="c", endpoints=(remote,)))
    assert [g.priority for g in only_remote.endpoints] == [0]


def test_dns_cluster_has_inline_endpoints_and_no_eds() -> None:
    spec = ClusterSpec(name="ext", service="ext", dns=True, endpoints=(Endpoint("api.example.com", 443),))
    items = translate(DesiredState(clusters=(spec,)))
    assert [(i.type_url, i.name, i.refs) for i in items] == [(CLUSTER, "ext", ())]
    cluster = items[0].message
    # The DNS cluster extension, STRICT_DNS behaviour (translate/dns.py, issue 13).
    assert cluster.cluster_type.name == "envoy.cluster.dns" and not cluster.HasField("eds_cluster_config")
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("api.example.com", 443)
    make_snapshot("g", items)  # consistent without a ClusterLoadAssignment


# --- incremental builds: plan() and make_snapshot(previous=) -------------------------------------------

def _state(*clusters: ClusterSpec) -> DesiredState:
    return DesiredState(clusters=clusters)


def _spec(name: str, *weights: int, dns: bool = False) -> ClusterSpec:
    hosts = [f"{name}.example.com" if dns else f"10.0.0.{i + 1}" for i in range(len(weights))]
    endpoints = tuple(Endpoint(h, 80, weight=w) for h, w in zip(hosts, weights, strict=True))
    return ClusterSpec(name=name, service=name, dns=dns, endpoints=endpoints)


def _unbuildable(items: list[Deferred]) -> list[Deferred]:
    """The same plan, but building any proto fails the test: what make_snapshot reuses is never built."""
    def refuse() -> Message:
        raise AssertionError("translated a resource the previous snapshot already holds")
    return [dataclasses.replace(item, make=refuse) for item in items]


def test_plan_translates_to_the_same_snapshot_as_translate() -> None:
    state = CASES["header_retries_timeout"]
    assert make_snapshot("g", plan(state)).versions == make_snapshot("g", translate(state)).versions


def test_rebuild_with_equal_specs_translates_and_serializes_nothing() -> None:
    previous = make_snapshot("g", plan(_state(_spec("a", 1, 2), _spec("b", 3))))
    again = make_snapshot("g", _unbuildable(plan(_state(_spec("a", 1, 2), _spec("b", 3)))), previous)
    assert again.versions == previous.versions
    assert all(again.get(t, n) is r for t, by_name in previous.resources.items() for n, r in by_name.items())


def test_weight_change_rebuilds_only_that_assignment() -> None:
    previous = make_snapshot("g", plan(_state(_spec("a", 1, 2), _spec("b", 3))))
    items = plan(_state(_spec("a", 1, 5), _spec("b", 3)))
    # Only a's ClusterLoadAssignment may be built: an EDS Cluster's key leaves its endpoints out.
    items = [item if (item.type_url, item.name) == (ENDPOINT, "a") else _unbuildable([item])[0]
             for item in items]
    changed = make_snapshot("g", items, previous)
    assert changed.get(ENDPOINT, "a") is not previous.get(ENDPOINT, "a")
    assert changed.get(CLUSTER, "a") is previous.get(CLUSTER, "a")
    assert changed.get(ENDPOINT, "b") is previous.get(ENDPOINT, "b")
    assignment = changed.get(ENDPOINT, "a")
    assert assignment is not None
    weights = endpoint_pb2.ClusterLoadAssignment.FromString(assignment.body)
    assert [e.load_balancing_weight.value for e in weights.endpoints[0].lb_endpoints] == [1, 5]


def test_dns_cluster_key_covers_its_inline_endpoints() -> None:
    before = make_snapshot("g", plan(_state(_spec("ext", 1, dns=True))))
    after = make_snapshot("g", plan(_state(_spec("ext", 7, dns=True))), before)
    assert after.version(CLUSTER) != before.version(CLUSTER)
    resource = after.get(CLUSTER, "ext")
    assert resource is not None
    cluster = cluster_pb2.Cluster.FromString(resource.body)
    assert cluster.load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight.value == 7


def test_a_snapshot_is_the_only_memory_of_earlier_builds() -> None:
    # Issue 7: a process-wide cache by spec kept every translation ever made. After many distinct builds,
    # the specs still alive are exactly those the latest snapshot holds.
    latest = None
    for edit in range(30):
        latest = make_snapshot("g", plan(_state(_spec("a", edit + 1))), latest)
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, ClusterSpec) and o.name == "a"]
    assert latest is not None
    assert {spec.endpoints[0].weight for spec in alive if spec.endpoints} == {30}
