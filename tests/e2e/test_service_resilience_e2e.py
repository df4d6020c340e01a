"""Issue 8, per service: `outlier_detection`, `circuit_breakers` and `health_check` from the catalog file,
through the real control plane process, to a real Envoy in front of the harness's fault-playing upstreams.
Each test asserts on what the client saw and on Envoy's own stats and `/clusters` flags, and checks that
Envoy rejected nothing and logged no deprecated-field warning (docs/config.md, "Outlier detection",
"Circuit breakers", "Health checks")."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import (
    HEALTH_PATH,
    GrpcHealthServer,
    LoadResult,
    UpstreamPool,
    free_port,
    run_requests,
    wait_until,
)

from .stack import Stack, start_stack

# Every test here runs against Envoy in state-of-the-world and in delta mode (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

CONSECUTIVE_5XX = 3
BASE_EJECTION_S = 3.0
MAX_REQUESTS = 2
# Envoy logs this once its bootstrap is loaded; the dynamic resources arrive after it.
_STARTED_LINE = "starting main dispatch loop"


def _assert_clean(stack: Stack) -> None:
    """Nothing the control plane sent was rejected or used a deprecated field (issue 8, section 3)."""
    stack.envoy.wait_log_line(_STARTED_LINE)
    assert stack.envoy.deprecation_warnings() == []
    assert stack.envoy.update_rejected_total() == 0
    assert "NACKED" not in stack.status_text()


def _dynamic_cluster(stack: Stack, name: str) -> dict[str, Any]:
    for config in stack.envoy.config_dump().get("configs", []):
        for entry in config.get("dynamic_active_clusters", []):
            if entry["cluster"]["name"] == name:
                cluster: dict[str, Any] = entry["cluster"]
                return cluster
    raise KeyError(name)


def _ejected(stack: Stack, address: tuple[str, int]) -> bool:
    return "failed_outlier_check" in stack.envoy.host_status("web", address).flags


def test_outlier_detection_ejects_a_failing_upstream_and_readmits_it(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    pool = upstreams("a", "b", "c")
    settings = {"web": {"outlier_detection": {
        "consecutive_5xx": CONSECUTIVE_5XX, "interval": "0.5s", "base_ejection_time": f"{BASE_EJECTION_S:g}s",
        "max_ejection_percent": 50, "success_rate": False}}}
    stack = start_stack(workdir=workdir, pool=pool, services={"web": [("a", {}), ("b", {}), ("c", {})]},
                        backends=[("web", None, 100)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory, service_settings=settings)
    wait_until(lambda: len(stack.eds_ports("web")) == 3, timeout_s=10, message="Envoy never had 3 endpoints")
    detection = _dynamic_cluster(stack, "web")["outlier_detection"]
    assert detection["consecutive_5xx"] == CONSECUTIVE_5XX and detection["base_ejection_time"] == "3s"

    warm = run_requests(stack.url, count=30, concurrency=1)
    assert warm.by_status == {200: 30} and set(warm.by_upstream) == {"a", "b", "c"}, warm.summary()

    # `a` starts failing. One request at a time, so "consecutive" is exact and each step can be timed.
    bad = pool["a"]
    bad.status = 503
    flipped = time.monotonic()
    statuses: list[int | None] = []
    sent_last = ejected_by = flipped
    for _ in range(60):
        sent_last = time.monotonic()
        statuses += [s.status for s in run_requests(stack.url, count=1, concurrency=1).samples]
        if _ejected(stack, bad.address):
            ejected_by = time.monotonic()
            break
    errors = sum(1 for s in statuses if s != 200)
    print(f"\noutlier detection: {errors} client-visible errors in {len(statuses)} requests; ejected "
          f"{ejected_by - flipped:.3f} s after the upstream started failing")
    assert _ejected(stack, bad.address), f"never ejected; statuses {statuses}"
    # Round robin over three hosts: `a` saw exactly its threshold of failures, and the client no more.
    assert 0 < errors <= CONSECUTIVE_5XX, statuses
    assert statuses.count(503) == errors
    assert stack.envoy.cluster_stat("web", "outlier_detection.ejections_enforced_consecutive_5xx") == 1
    assert stack.envoy.cluster_stat("web", "outlier_detection.ejections_active") == 1

    during = run_requests(stack.url, count=30, concurrency=2)
    assert during.by_status == {200: 30} and "a" not in during.by_upstream, during.summary()

    # Healthy again; Envoy re-admits it at the first interval after the ejection time, not before.
    bad.status = 200
    last_seen_ejected = time.monotonic()

    def readmitted() -> bool:
        nonlocal last_seen_ejected
        if _ejected(stack, bad.address):
            last_seen_ejected = time.monotonic()
            return False
        return True

    wait_until(readmitted, timeout_s=BASE_EJECTION_S + 15, interval_s=0.05,
               message="the healed upstream was never re-admitted")
    readmitted_after = time.monotonic() - ejected_by
    print(f"outlier detection: re-admitted {readmitted_after:.3f} s after ejection "
          f"(base_ejection_time {BASE_EJECTION_S:g} s, interval 0.5 s)")
    # Still ejected until shortly before the ejection time was over (0.5 s of slack for polling).
    assert last_seen_ejected - sent_last >= BASE_EJECTION_S - 0.5
    assert stack.envoy.cluster_stat("web", "outlier_detection.ejections_active") == 0

    after = run_requests(stack.url, count=30, concurrency=1)
    assert after.by_status == {200: 30}, after.summary()
    assert after.by_upstream.get("a", 0) > 0, after.summary()
    _assert_clean(stack)


def test_circuit_breaker_max_requests_fails_the_overflow_fast(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    pool = upstreams("slow")
    settings = {"web": {"circuit_breakers": {"max_requests": MAX_REQUESTS}}}
    stack = start_stack(workdir=workdir, pool=pool, services={"web": [("slow", {})]},
                        backends=[("web", None, 100)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory, service_settings=settings)
    wait_until(lambda: len(stack.eds_ports("web")) == 1, timeout_s=10, message="Envoy never had the endpoint")
    (thresholds,) = _dynamic_cluster(stack, "web")["circuit_breakers"]["thresholds"]
    assert thresholds == {"max_requests": MAX_REQUESTS}  # DEFAULT priority: proto3 JSON leaves it out
    slow = pool["slow"]
    total = 10
    overflow = total - MAX_REQUESTS

    slow.hang()
    with ThreadPoolExecutor(max_workers=1) as executor:
        running = executor.submit(run_requests, stack.url, count=total, concurrency=total, timeout_s=15)
        try:
            # Answered while the upstream still holds the first two: failing fast, not queueing. Envoy counts
            # a max_requests overflow as upstream_rq_active_overflow (max_pending_requests has its own).
            wait_until(lambda: stack.envoy.cluster_stat("web", "upstream_rq_active_overflow") == overflow,
                       timeout_s=10, message=f"overflow never reached {overflow}")
            assert slow.in_flight == MAX_REQUESTS
            assert stack.envoy.cluster_stat("web", "circuit_breakers.default.rq_open") == 1
        finally:
            slow.release()
        result = running.result(timeout=20)

    overloaded_latency = max(s.latency_s for s in result.samples if s.overloaded)
    print(f"\ncircuit breaker: {result.summary()}; {result.overloaded} overloaded, slowest answered in "
          f"{overloaded_latency:.3f} s while the upstream hung")
    assert result.by_status == {200: MAX_REQUESTS, 503: overflow}, result.summary()
    assert result.overloaded == overflow
    assert slow.max_in_flight == MAX_REQUESTS
    assert slow.hits == MAX_REQUESTS
    assert stack.envoy.cluster_stat("web", "upstream_rq_active_overflow") == overflow
    assert stack.envoy.cluster_stat("web", "upstream_rq_pending_overflow") == 0
    wait_until(lambda: stack.envoy.cluster_stat("web", "circuit_breakers.default.rq_open") == 0, timeout_s=5,
               message="the breaker never closed")
    again = run_requests(stack.url, count=10, concurrency=2)
    assert again.by_status == {200: 10}, again.summary()
    _assert_clean(stack)


def _failed_check(stack: Stack, cluster: str, address: tuple[str, int]) -> bool:
    return "failed_active_health_check" in stack.envoy.host_status(cluster, address).flags


def _checked_stack(workdir: Path, pool: UpstreamPool, check: dict[str, Any], control_plane_factory: Any,
                   envoy_factory: Any) -> Stack:
    # Fast checks by default; a test's own `check` keys win (the timeout test sets its timeout and threshold).
    settings = {"web": {"health_check": {"interval": "200ms", "timeout": "1s", "unhealthy_threshold": 2,
                                         "healthy_threshold": 1, "no_traffic_interval": "200ms", **check}}}
    stack = start_stack(workdir=workdir, pool=pool, services={"web": [("a", {}), ("b", {})]},
                        backends=[("web", None, 100)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory, service_settings=settings)
    wait_until(lambda: len(stack.envoy.cluster_hosts("web")) == 2
               and all(h.healthy for h in stack.envoy.cluster_hosts("web")), timeout_s=10,
               message="the endpoints never passed their first health checks")
    return stack


def test_http_health_check_takes_an_endpoint_out_while_the_registry_says_healthy(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    pool = upstreams("a", "b")
    stack = _checked_stack(workdir, pool, {"http": {"path": HEALTH_PATH, "expected_statuses": [200]}},
                           control_plane_factory, envoy_factory)
    (check,) = _dynamic_cluster(stack, "web")["health_checks"]
    assert check["http_health_check"]["path"] == HEALTH_PATH
    sick = pool["a"]

    sick.health_status = 503
    flipped = time.monotonic()
    wait_until(lambda: _failed_check(stack, "web", sick.address), timeout_s=10,
               message="Envoy never failed the endpoint's health check")
    detected = time.monotonic() - flipped
    print(f"\nhttp health check: endpoint out {detected:.3f} s after /healthz started failing "
          "(interval 0.2 s; a wrong status fails at once)")
    # The catalog file still calls it healthy; only Envoy's own check took it out.
    assert stack.envoy.host_status("web", sick.address).eds_health == "HEALTHY"
    hits_before = sick.hits
    result = run_requests(stack.url, count=40, concurrency=2)
    assert result.by_status == {200: 40} and result.by_upstream == {"b": 40}, result.summary()
    assert sick.hits == hits_before
    # A status outside expected_statuses fails the endpoint at once; Envoy applies unhealthy_threshold to
    # timeouts and connection failures only (docs/config.md, "Health checks").
    assert stack.envoy.cluster_stat("web", "health_check.failure") >= 1

    sick.health_status = 200
    wait_until(lambda: stack.envoy.host_status("web", sick.address).healthy, timeout_s=10,
               message="the endpoint never came back")
    # Worker threads get the new host set shortly after /clusters shows it: wait for traffic to return.
    back: list[LoadResult] = []
    healthy_at = time.monotonic()

    def reached() -> bool:
        back.append(run_requests(stack.url, count=4, concurrency=1))
        return "a" in back[-1].by_upstream

    wait_until(reached, timeout_s=10, message="no traffic reached the endpoint again")
    assert all(r.by_status == {200: 4} for r in back), [r.summary() for r in back]
    print(f"http health check: traffic back {time.monotonic() - healthy_at:.3f} s after /clusters showed the "
          f"endpoint healthy ({len(back)} rounds of 4 requests, none failed)")
    _assert_clean(stack)


def test_http_health_check_timeouts_count_against_the_unhealthy_threshold(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    """A /healthz that stops answering in time: each check times out after `timeout`, and the endpoint goes
    out only after `unhealthy_threshold` of them in a row (unlike a wrong status, which fails it at once)."""
    timeout_s, threshold = 0.3, 3
    pool = upstreams("a", "b")
    check = {"http": {"path": HEALTH_PATH}, "timeout": f"{timeout_s}s", "unhealthy_threshold": threshold}
    stack = _checked_stack(workdir, pool, check, control_plane_factory, envoy_factory)
    slow = pool["a"]
    slow.health_delay_s = 5.0
    started = time.monotonic()
    wait_until(lambda: _failed_check(stack, "web", slow.address), timeout_s=10,
               message="Envoy never failed the endpoint whose checks time out")
    detected = time.monotonic() - started
    print(f"\nhealth check timeouts: endpoint out {detected:.3f} s after /healthz stopped answering "
          f"(timeout {timeout_s}s, unhealthy_threshold {threshold})")
    # Each of the `threshold` checks needs `timeout` to fail, one after the other.
    assert detected >= threshold * timeout_s - 0.05, detected
    assert stack.envoy.cluster_stat("web", "health_check.failure") >= threshold
    result = run_requests(stack.url, count=20, concurrency=2)
    assert result.by_status == {200: 20} and result.by_upstream == {"b": 20}, result.summary()

    slow.health_delay_s = 0.0
    wait_until(lambda: stack.envoy.host_status("web", slow.address).healthy, timeout_s=10,
               message="the endpoint never came back once its checks answered in time")
    _assert_clean(stack)


def test_tcp_health_check_takes_out_an_endpoint_whose_port_closed(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    pool = upstreams("a", "b")
    stack = _checked_stack(workdir, pool, {"tcp": {}}, control_plane_factory, envoy_factory)
    gone = pool["a"]
    address = gone.address
    gone.stop()  # the port closes; the catalog file still lists the endpoint, healthy
    wait_until(lambda: _failed_check(stack, "web", address), timeout_s=10,
               message="Envoy never failed the closed port's health check")
    result = run_requests(stack.url, count=40, concurrency=2)
    assert result.by_status == {200: 40} and result.by_upstream == {"b": 40}, result.summary()
    assert stack.envoy.host_status("web", address).eds_health == "HEALTHY"
    _assert_clean(stack)


def test_health_check_port_probes_a_separate_port_instead_of_the_serving_one(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    """`health_check.port`: every endpoint is probed on that port (here a third upstream standing in for a
    separate health port), so its verdict, not the serving port's, decides."""
    pool = upstreams("a", "b", "probe")
    probe = pool["probe"]
    # The serving port's own /healthz fails; with the override it is never asked, so `a` stays in.
    pool["a"].health_status = 503
    stack = _checked_stack(workdir, pool, {"http": {"path": HEALTH_PATH}, "port": probe.port},
                           control_plane_factory, envoy_factory)
    assert stack.envoy.host_status("web", pool["a"].address).healthy
    assert pool["a"].health_checks == 0 and pool["b"].health_checks == 0
    assert probe.health_checks >= 2  # one probe per endpoint at least
    result = run_requests(stack.url, count=40, concurrency=2)
    assert result.by_status == {200: 40} and set(result.by_upstream) == {"a", "b"}, result.summary()
    assert probe.hits == 0  # the override moves probes only: traffic still goes to the serving ports

    probe.health_status = 503
    wait_until(lambda: all(_failed_check(stack, "web", pool[name].address) for name in ("a", "b")),
               timeout_s=10, message="Envoy never failed the endpoints whose health port failed")
    assert pool["b"].health_checks == 0
    _assert_clean(stack)


def test_grpc_health_check_against_a_real_grpc_health_server(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    pool = upstreams("a")
    with GrpcHealthServer("g1") as g1, GrpcHealthServer("g2") as g2:
        stack = start_stack(workdir=workdir, pool=pool, services={"web": [("a", {})]},
                            backends=[("web", None, 100)], control_plane_factory=control_plane_factory,
                            envoy_factory=envoy_factory)
        # A second listener routes to `orders`, whose endpoints are the gRPC health servers themselves.
        stack.catalog.extra_listeners = [{"name": "grpc", "address": "127.0.0.1", "port": free_port(),
                                          "routes": [{"backends": [{"service": "orders"}]}]}]
        document = stack.catalog.document()
        document["services"].append({
            "name": "orders", "protocol": "http2",
            "health_check": {"grpc": {}, "interval": "200ms", "timeout": "1s", "unhealthy_threshold": 1,
                             "healthy_threshold": 1, "no_traffic_interval": "200ms"},
            "endpoints": [{"address": f"127.0.0.1:{g.port}"} for g in (g1, g2)]})
        stack.catalog.write_text(yaml.safe_dump(document, sort_keys=False))
        wait_until(lambda: len(stack.envoy.cluster_hosts("orders")) == 2
                   and all(h.healthy for h in stack.envoy.cluster_hosts("orders")), timeout_s=10,
                   message="gRPC health checks never passed", ignore=(KeyError,))
        g1.set_serving(False)
        wait_until(lambda: _failed_check(stack, "orders", ("127.0.0.1", g1.port)), timeout_s=10,
                   message="Envoy never saw NOT_SERVING")
        assert not _failed_check(stack, "orders", ("127.0.0.1", g2.port))
        assert g1.checks > 0 and g2.checks > 0
        g1.set_serving(True)
        wait_until(lambda: not _failed_check(stack, "orders", ("127.0.0.1", g1.port)), timeout_s=10,
                   message="never recovered")
        _assert_clean(stack)
