"""A service's `outlier_detection`, `circuit_breakers` and `health_check` (issue 8): located errors,
defaults (unset is Envoy's default: nothing emitted), what reaches ClusterSpec, and the Envoy fields
translate emits."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.service_settings import loaded_service as _service
from tests.unit.service_settings import service_problems as _problems
from xds.model.service import Catalog
from xds.policy.apply import apply_policy
from xds.policy.desired import (
    CircuitBreakersSpec,
    ClusterSpec,
    GrpcHealthCheckSpec,
    HealthCheckSpec,
    HttpHealthCheckSpec,
    OutlierDetectionSpec,
    RetryBudgetSpec,
    TcpHealthCheckSpec,
)
from xds.policy.errors import PolicyError
from xds.policy.load import policy_from_data
from xds.policy.schema import BackendRef, ListenerPolicy, Policy, RoutePolicy, ServicePolicy
from xds.translate.clusters import build_cluster, cluster_key
from xds.translate.resilience import build_outlier_detection


def test_absent_means_envoys_defaults_and_nothing_emitted() -> None:
    service = _service("lb_policy: round_robin")
    assert service.outlier_detection is None and service.circuit_breakers is None
    cluster = build_cluster(ClusterSpec(name="web", service="web"))
    assert not cluster.HasField("outlier_detection")
    assert not cluster.HasField("circuit_breakers")


def test_empty_mappings_turn_the_features_on_with_envoys_defaults() -> None:
    service = _service("outlier_detection: {}\ncircuit_breakers: {retry_budget: {}}")
    assert service.outlier_detection == OutlierDetectionSpec()
    assert service.circuit_breakers == CircuitBreakersSpec(retry_budget=RetryBudgetSpec())
    cluster = build_cluster(ClusterSpec(name="web", service="web",
                                        outlier_detection=service.outlier_detection,
                                        circuit_breakers=service.circuit_breakers))
    # Present but empty: Envoy's defaults (5 consecutive 5xx, 10 s, 30 s, 10%).
    assert cluster.HasField("outlier_detection")
    assert json_format.MessageToDict(cluster.outlier_detection) == {}
    assert json_format.MessageToDict(cluster.circuit_breakers) == {"thresholds": [{"retryBudget": {}}]}


def test_every_key_reaches_the_cluster() -> None:
    service = _service("""
        outlier_detection:
          consecutive_5xx: 3
          consecutive_gateway_failure: 2
          interval: 500ms
          base_ejection_time: 1m
          max_ejection_percent: 50
          success_rate: false
          split_external_local_origin_errors: true
        circuit_breakers: {max_connections: 4, max_pending_requests: 5, max_requests: 6, max_retries: 0}
    """)
    spec = apply_policy(Catalog(), _policy_with(service), group="g").clusters[0]
    assert spec.outlier_detection == OutlierDetectionSpec(3, 2, 0.5, 60.0, 50, False, True)
    assert spec.circuit_breakers == CircuitBreakersSpec(4, 5, 6, 0)
    cluster = build_cluster(spec)
    assert json_format.MessageToDict(cluster.outlier_detection) == {
        "consecutive5xx": 3, "consecutiveGatewayFailure": 2,
        # Envoy enforces 0% of gateway failures unless told otherwise: a count the user set must eject.
        "enforcingConsecutiveGatewayFailure": 100,
        "interval": "0.500s", "baseEjectionTime": "60s", "maxEjectionPercent": 50,
        "enforcingSuccessRate": 0, "enforcingLocalOriginSuccessRate": 0,
        "splitExternalLocalOriginErrors": True,
    }
    (thresholds,) = cluster.circuit_breakers.thresholds
    assert thresholds.priority == base_pb2.DEFAULT
    assert (thresholds.max_connections.value, thresholds.max_pending_requests.value,
            thresholds.max_requests.value) == (4, 5, 6)
    assert thresholds.HasField("max_retries") and thresholds.max_retries.value == 0
    assert not thresholds.HasField("retry_budget")


def test_retry_budget() -> None:
    service = _service("circuit_breakers: {retry_budget: {budget_percent: 25, min_retry_concurrency: 0}}")
    cluster = build_cluster(ClusterSpec(name="web", service="web", circuit_breakers=service.circuit_breakers))
    budget = cluster.circuit_breakers.thresholds[0].retry_budget
    assert budget.budget_percent.value == 25.0
    assert budget.HasField("min_retry_concurrency") and budget.min_retry_concurrency.value == 0
    assert not cluster.circuit_breakers.thresholds[0].HasField("max_retries")


def test_success_rate_true_is_explicit() -> None:
    service = _service("outlier_detection: {success_rate: true}")
    cluster = build_cluster(ClusterSpec(name="web", service="web",
                                        outlier_detection=service.outlier_detection))
    assert cluster.outlier_detection.enforcing_success_rate.value == 100


def test_cluster_key_covers_the_new_settings() -> None:
    plain = ClusterSpec(name="web", service="web")
    ejecting = ClusterSpec(name="web", service="web",
                           outlier_detection=OutlierDetectionSpec(consecutive_5xx=2))
    limited = ClusterSpec(name="web", service="web", circuit_breakers=CircuitBreakersSpec(max_requests=2))
    assert len({cluster_key(plain), cluster_key(ejecting), cluster_key(limited)}) == 3


@pytest.mark.parametrize(("settings", "expected"), [
    ("outlier_detection: {consecutive_5xx: 0}",
     "c.yaml:3:42: services[0].outlier_detection.consecutive_5xx: must be an integer between 1 and 1000, "
     "got integer 0"),
    ("outlier_detection: {consecutive_gateway_failure: 1001}",
     "c.yaml:3:54: services[0].outlier_detection.consecutive_gateway_failure: must be an integer between 1 "
     "and 1000, got integer 1001"),
    ("outlier_detection: {interval: 0s}",
     "c.yaml:3:35: services[0].outlier_detection.interval: must be more than 0 and at most 3600s, got '0s'"),
    ("outlier_detection: {base_ejection_time: 2h}",
     "c.yaml:3:45: services[0].outlier_detection.base_ejection_time: must be a duration such as '250ms', "
     "'1s', '1.5s' or a number of seconds, got '2h'"),
    ("outlier_detection: {max_ejection_percent: 101}",
     "c.yaml:3:47: services[0].outlier_detection.max_ejection_percent: must be an integer between 1 and "
     "100, got integer 101"),
    ("outlier_detection: {success_rate: 1}",
     "c.yaml:3:39: services[0].outlier_detection.success_rate: must be true or false, got integer 1"),
    ("outlier_detection: {consecutive5xx: 3}",
     "c.yaml:3:25: services[0].outlier_detection.consecutive5xx: unknown key 'consecutive5xx' in "
     "outlier_detection; did you mean 'consecutive_5xx'?"),
    ("outlier_detection: true",
     "c.yaml:3:24: services[0].outlier_detection: outlier_detection must be a mapping, got boolean true"),
    ("circuit_breakers: {max_requests: 0}",
     "c.yaml:3:38: services[0].circuit_breakers.max_requests: must be an integer between 1 and 4294967295, "
     "got integer 0"),
    ("circuit_breakers: {max_connections: 4294967296}",
     "c.yaml:3:41: services[0].circuit_breakers.max_connections: must be an integer between 1 and "
     "4294967295, got integer 4294967296"),
    ("circuit_breakers: {max_retries: -1}",
     "c.yaml:3:37: services[0].circuit_breakers.max_retries: must be an integer between 0 and 4294967295, "
     "got integer -1"),
    ("circuit_breakers: {retry_budget: {budget_percent: 0}}",
     "c.yaml:3:55: services[0].circuit_breakers.retry_budget.budget_percent: must be an integer between 1 "
     "and 100, got integer 0"),
    ("circuit_breakers: {max_retries: 3, retry_budget: {}}",
     "c.yaml:3:37: services[0].circuit_breakers.max_retries: has no effect with retry_budget, which "
     "replaces it; remove one of them"),
])
def test_located_errors(settings: str, expected: str) -> None:
    assert _problems(settings) == [expected]


def test_health_check_defaults_and_output() -> None:
    assert _service("lb_policy: random").health_check is None
    tcp = _service("health_check: {tcp: {}}").health_check
    assert tcp == HealthCheckSpec(tcp=TcpHealthCheckSpec())
    assert tcp is not None
    cluster = build_cluster(ClusterSpec(name="web", service="web", health_check=tcp))
    (check,) = cluster.health_checks
    # Envoy requires all four; the defaults are Envoy Gateway's (docs/config.md, "Health checks").
    assert json_format.MessageToDict(check) == {
        "interval": "3s", "timeout": "1s", "unhealthyThreshold": 3, "healthyThreshold": 1,
        "tcpHealthCheck": {}}
    assert not build_cluster(ClusterSpec(name="web", service="web")).health_checks


def test_http_health_check_with_every_key() -> None:
    spec = _service("""
        health_check:
          http: {path: /healthz, expected_statuses: [200, 204], host: web.internal}
          interval: 250ms
          timeout: 100ms
          unhealthy_threshold: 2
          healthy_threshold: 4
          no_traffic_interval: 5s
    """).health_check
    assert spec == HealthCheckSpec(http=HttpHealthCheckSpec("/healthz", (200, 204), "web.internal"),
                                   interval_s=0.25, timeout_s=0.1, unhealthy_threshold=2, healthy_threshold=4,
                                   no_traffic_interval_s=5.0)
    (check,) = build_cluster(ClusterSpec(name="web", service="web", health_check=spec)).health_checks
    assert json_format.MessageToDict(check) == {
        "interval": "0.250s", "timeout": "0.100s", "unhealthyThreshold": 2, "healthyThreshold": 4,
        "noTrafficInterval": "5s",
        "httpHealthCheck": {"path": "/healthz", "host": "web.internal", "expectedStatuses": [
            {"start": "200", "end": "201"}, {"start": "204", "end": "205"}]}}


def test_grpc_health_check_needs_http2() -> None:
    spec = _service("protocol: http2\nhealth_check: {grpc: {service: orders.v1.Orders}}").health_check
    assert spec == HealthCheckSpec(grpc=GrpcHealthCheckSpec("orders.v1.Orders"))
    (check,) = build_cluster(ClusterSpec(name="o", service="o", http2=True, health_check=spec)).health_checks
    assert check.grpc_health_check.service_name == "orders.v1.Orders"
    assert _service("protocol: http2\nhealth_check: {grpc: {}}").health_check == HealthCheckSpec(
        grpc=GrpcHealthCheckSpec())
    assert _problems("health_check: {grpc: {}}") == [
        "c.yaml:3:26: services[0].health_check.grpc: a gRPC health check needs the service to speak HTTP/2: "
        "add `protocol: http2`"]


@pytest.mark.parametrize(("settings", "expected"), [
    ("health_check: {}",
     "c.yaml:3:19: services[0].health_check: health_check needs exactly one of 'http', 'tcp' or 'grpc'"),
    ("health_check: {tcp: {}, http: {path: /}}",
     "c.yaml:3:19: services[0].health_check: health_check needs exactly one of 'http', 'tcp' or 'grpc'"),
    ("health_check: {http: {path: healthz}}",
     "c.yaml:3:33: services[0].health_check.http.path: must start with '/' and contain no whitespace or "
     "control characters, got 'healthz'"),
    ("health_check: {http: {}}",
     "c.yaml:3:26: services[0].health_check.http: missing required key 'path' in http"),
    ("health_check: {http: {path: /, expected_statuses: [200, 99]}}",
     "c.yaml:3:61: services[0].health_check.http.expected_statuses[1]: must be an integer between 100 and "
     "599, got integer 99"),
    ("health_check: {http: {path: /, expected_statuses: [204, 204]}}",
     "c.yaml:3:61: services[0].health_check.http.expected_statuses[1]: duplicate integer 204"),
    ("health_check: {http: {path: /, expected_statuses: []}}",
     "c.yaml:3:55: services[0].health_check.http.expected_statuses: must list at least one HTTP status code, "
     "100 to 599"),
    ("health_check: {http: {path: /, host: 'a b'}}",
     "c.yaml:3:42: services[0].health_check.http.host: must be a host name, optionally with a port, such as "
     "web.internal or web.internal:8080, got 'a b'"),
    ("health_check: {tcp: {}, interval: 0}",
     "c.yaml:3:39: services[0].health_check.interval: must be more than 0 and at most 3600s, got integer 0"),
    ("health_check: {tcp: {}, unhealthy_threshold: 0}",
     "c.yaml:3:50: services[0].health_check.unhealthy_threshold: must be an integer between 1 and 1000, got "
     "integer 0"),
    ("health_check: {tcp: true}",
     "c.yaml:3:25: services[0].health_check.tcp: tcp must be a mapping, got boolean true"),
    ("health_check: {tcp: {port: 1}}",
     "c.yaml:3:26: services[0].health_check.tcp.port: unknown key 'port' in tcp"),
])
def test_health_check_errors(settings: str, expected: str) -> None:
    assert _problems(settings) == [expected]


def test_several_problems_are_all_reported() -> None:
    problems = _problems("outlier_detection: {consecutive_5xx: 0, interval: x}\n"
                         "circuit_breakers: {max_pending_requests: 0}")
    assert [p.split(": ")[1] for p in problems] == [
        "services[0].outlier_detection.consecutive_5xx", "services[0].outlier_detection.interval",
        "services[0].circuit_breakers.max_pending_requests"]


def _policy_with(service: ServicePolicy) -> Policy:
    route = RoutePolicy("r", backends=(BackendRef("web"),))
    return Policy(services=(service,), listeners=(ListenerPolicy("l", port=80, routes=(route,)),))


# --- property tests: the bounds are exactly the declared ones (issue 8, section 4) --------------------------

_INTEGER_BOUNDS = {
    ("outlier_detection", "consecutive_5xx"): (1, 1000),
    ("outlier_detection", "max_ejection_percent"): (1, 100),
    ("circuit_breakers", "max_requests"): (1, 2**32 - 1),
    ("circuit_breakers", "max_retries"): (0, 2**32 - 1),
    ("health_check", "unhealthy_threshold"): (1, 1000),
    ("locality", "overprovisioning_factor"): (100, 1000),
}


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(sorted(_INTEGER_BOUNDS)), value=st.integers(-10, 2**33))
def test_integer_bounds(key: tuple[str, str], value: int) -> None:
    mapping, field = key
    low, high = _INTEGER_BOUNDS[key]
    # A health check needs its kind besides the threshold.
    body: dict[str, object] = {"tcp": {}} if mapping == "health_check" else {}
    data = {"services": [{"name": "web", mapping: {**body, field: value}}]}
    if low <= value <= high:
        policy_from_data(data, where="p")
    else:
        with pytest.raises(PolicyError, match=f"must be an integer between {low} and {high}"):
            policy_from_data(data, where="p")


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["interval", "base_ejection_time"]),
       millis=st.integers(-1000, 4_000_000))
def test_outlier_durations(field: str, millis: int) -> None:
    data = {"services": [{"name": "web", "outlier_detection": {field: f"{millis}ms"}}]}
    if 0 < millis <= 3_600_000:
        (service,) = policy_from_data(data, where="p").services
        assert service.outlier_detection is not None
        seconds = getattr(service.outlier_detection, f"{field}_s")
        assert seconds == pytest.approx(millis / 1000)
        out = build_outlier_detection(service.outlier_detection)
        assert getattr(out, field).ToNanoseconds() == millis * 1_000_000
    else:
        with pytest.raises(PolicyError):
            policy_from_data(data, where="p")

