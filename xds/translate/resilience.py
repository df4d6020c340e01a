"""A cluster's outlier detection, circuit breakers and active health check (issue 8): OutlierDetectionSpec ->
envoy.config.cluster.v3.OutlierDetection, CircuitBreakersSpec -> CircuitBreakers with DEFAULT-priority
thresholds, HealthCheckSpec -> one envoy.config.core.v3.HealthCheck. A setting left unset is not emitted, so
Envoy applies its own default (docs/config.md).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.type.v3 import range_pb2
from google.protobuf import duration_pb2

from xds.policy.desired import CircuitBreakersSpec, HealthCheckSpec, OutlierDetectionSpec

_ENFORCED = 100  # Envoy's enforcing_* fields are the percentage of detected outliers actually ejected


def duration(seconds: float) -> duration_pb2.Duration:
    # From integral nanoseconds, as clusters.py does for connect_timeout: exact on every run.
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def build_outlier_detection(spec: OutlierDetectionSpec) -> outlier_detection_pb2.OutlierDetection:
    out = outlier_detection_pb2.OutlierDetection()
    if spec.consecutive_5xx is not None:
        out.consecutive_5xx.value = spec.consecutive_5xx
    if spec.consecutive_gateway_failure is not None:
        out.consecutive_gateway_failure.value = spec.consecutive_gateway_failure
        # Envoy detects gateway failures but, by default, enforces 0% of them (outlier_detection.proto):
        # a user who sets the count means it to eject.
        out.enforcing_consecutive_gateway_failure.value = _ENFORCED
    if spec.interval_s is not None:
        out.interval.CopyFrom(duration(spec.interval_s))
    if spec.base_ejection_time_s is not None:
        out.base_ejection_time.CopyFrom(duration(spec.base_ejection_time_s))
    if spec.max_ejection_percent is not None:
        out.max_ejection_percent.value = spec.max_ejection_percent
    if spec.success_rate is not None:
        enforcing = _ENFORCED if spec.success_rate else 0
        out.enforcing_success_rate.value = enforcing
        out.enforcing_local_origin_success_rate.value = enforcing
    if spec.split_external_local_origin_errors:
        out.split_external_local_origin_errors = True
    return out


def build_circuit_breakers(spec: CircuitBreakersSpec) -> circuit_breaker_pb2.CircuitBreakers:
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds(priority=base_pb2.DEFAULT)
    for name in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
        value = getattr(spec, name)
        if value is not None:
            getattr(thresholds, name).value = value
    if spec.retry_budget is not None:
        budget = thresholds.retry_budget
        budget.SetInParent()  # an empty budget is a budget with Envoy's defaults (20%, 3)
        if spec.retry_budget.budget_percent is not None:
            budget.budget_percent.value = float(spec.retry_budget.budget_percent)
        if spec.retry_budget.min_retry_concurrency is not None:
            budget.min_retry_concurrency.value = spec.retry_budget.min_retry_concurrency
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[thresholds])


def build_health_check(spec: HealthCheckSpec) -> health_check_pb2.HealthCheck:
    check = health_check_pb2.HealthCheck()
    check.interval.CopyFrom(duration(spec.interval_s))
    check.timeout.CopyFrom(duration(spec.timeout_s))
    check.unhealthy_threshold.value = spec.unhealthy_threshold
    check.healthy_threshold.value = spec.healthy_threshold
    if spec.no_traffic_interval_s is not None:
        check.no_traffic_interval.CopyFrom(duration(spec.no_traffic_interval_s))
    if spec.http is not None:
        http = check.http_health_check
        http.path = spec.http.path
        if spec.http.host is not None:
            http.host = spec.http.host
        # Envoy takes half-open ranges [start, end); one range per status keeps the list as written.
        http.expected_statuses.extend(range_pb2.Int64Range(start=s, end=s + 1)
                                      for s in spec.http.expected_statuses)
    elif spec.grpc is not None:
        check.grpc_health_check.service_name = spec.grpc.service
    else:
        # No send/receive payload: a connect-only check (health_check.proto, TcpHealthCheck).
        check.tcp_health_check.SetInParent()
    return check
