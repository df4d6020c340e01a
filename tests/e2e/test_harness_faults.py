"""The harness's fault-playing upstreams, gRPC health server, Envoy admin views and load records, proven for
real: directly over loopback sockets, and through a real Envoy (static bootstrap, no control plane) wherever
the point is what Envoy sees. Issue 8's resilience tests build on these."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness import (
    HEALTH_PATH,
    EnvoyProcess,
    GrpcHealthServer,
    LoadResult,
    UpstreamPool,
    UpstreamServer,
    run_requests,
    wait_until,
)

LISTENER = "ingress"
CLUSTER = "backend"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
# Envoy logs this once its configuration is loaded: any deprecation warning for the bootstrap comes before it.
_STARTED_LINE = "starting main dispatch loop"


def bootstrap(
    admin_port: int,
    servers: list[UpstreamServer],
    *,
    cluster: Mapping[str, Any] | None = None,
    routes: list[dict[str, Any]] | None = None,
    health_ports: Mapping[str, int] | None = None,
) -> str:
    """Listener (port 0) -> `routes` (default: everything to CLUSTER) -> one static cluster over `servers`,
    with `cluster` merged into the cluster; `health_ports` gives a server (by name) a health-check port."""
    health_ports = health_ports or {}

    def endpoint(server: UpstreamServer) -> dict[str, Any]:
        entry: dict[str, Any] = {"address": {"socket_address": {"address": "127.0.0.1",
                                                                 "port_value": server.port}}}
        if server.name in health_ports:
            entry["health_check_config"] = {"port_value": health_ports[server.name]}
        return {"endpoint": entry}

    config: dict[str, Any] = {
        "node": {"id": "harness-faults", "cluster": "harness"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": LISTENER,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": _HCM,
                        "stat_prefix": LISTENER,
                        "route_config": {"name": "local", "virtual_hosts": [{
                            "name": "all",
                            "domains": ["*"],
                            "routes": routes or [{"match": {"prefix": "/"}, "route": {"cluster": CLUSTER}}],
                        }]},
                        "http_filters": [{"name": "envoy.filters.http.router",
                                          "typed_config": {"@type": _ROUTER}}],
                    },
                }]}],
            }],
            "clusters": [{
                "name": CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "lb_policy": "ROUND_ROBIN",
                "load_assignment": {"cluster_name": CLUSTER,
                                    "endpoints": [{"lb_endpoints": [endpoint(s) for s in servers]}]},
                **(cluster or {}),
            }],
        },
    }  # fmt: skip
    return yaml.safe_dump(config, sort_keys=False)


def _url(envoy: EnvoyProcess, path: str = "/") -> str:
    return f"http://127.0.0.1:{envoy.listener_port(LISTENER)}{path}"


def _get(server: UpstreamServer, path: str = "/", headers: Mapping[str, str] | None = None,
         timeout_s: float = 5.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _assert_clean(envoy: EnvoyProcess) -> None:
    """Nothing rejected and nothing deprecated: what issue 8 asks of every resilience test."""
    envoy.wait_log_line(_STARTED_LINE)
    assert envoy.deprecation_warnings() == []
    assert envoy.update_rejected_total() == 0


@pytest.fixture
def server() -> Iterator[UpstreamServer]:
    upstream = UpstreamServer("solo")
    with upstream:
        yield upstream


# -- the upstream on its own ---------------------------------------------------------------------------------


def test_delay_and_hang_hold_requests_and_count_them_in_flight(server: UpstreamServer) -> None:
    server.delay_s = 0.3
    started = time.monotonic()
    assert _get(server) == (200, "solo")
    assert time.monotonic() - started >= 0.3
    server.delay_s = 0

    server.hang()
    assert server.hanging
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = [pool.submit(_get, server) for _ in range(3)]
        wait_until(lambda: server.in_flight == 3, timeout_s=5, message="three requests never arrived")
        # The health endpoint is not held, and not counted as traffic.
        assert _get(server, HEALTH_PATH) == (200, "solo")
        assert server.in_flight == 3
        assert not any(answer.done() for answer in answers)
        server.release()
        assert [answer.result(timeout=5) for answer in answers] == [(200, "solo")] * 3
    assert not server.hanging
    assert server.in_flight == 0
    assert server.max_in_flight == 3
    assert server.reset_max_in_flight() == 3
    assert server.max_in_flight == 0
    assert server.hits == 4
    assert server.health_checks == 1
    with pytest.raises(ValueError, match="delay_s"):
        server.delay_s = -1


def test_stop_releases_held_requests_promptly() -> None:
    server = UpstreamServer("held")
    server.start()
    server.hang()
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(_get, server)
        wait_until(lambda: server.in_flight == 1, timeout_s=5, message="the request never arrived")
        server.stop()
        # Released before shutdown, so answered rather than cut off when aiohttp's shutdown grace ends.
        assert answer.result(timeout=5) == (200, "held")
    assert server.in_flight == 0


def test_fail_first_attempt_fails_each_request_id_once_even_under_concurrency(server: UpstreamServer) -> None:
    server.fail_first_attempt("x-request-id", status=502)
    assert _get(server, headers={"x-request-id": "a"})[0] == 502
    assert _get(server, headers={"x-request-id": "a"})[0] == 200
    assert _get(server, headers={"X-Request-Id": "b"})[0] == 502
    assert _get(server)[0] == 502  # no header: every request is a first attempt
    assert _get(server)[0] == 502

    # 400 requests, each id sent twice, 8 connections at once: the two sends of an id may race, and still
    # exactly one of them fails. Also proves run_requests' per-request headers and indices.
    server.fail_first_attempt()
    result = run_requests(f"http://127.0.0.1:{server.port}/", count=400, concurrency=8,
                          request_headers=lambda i: {"x-request-id": f"id-{i // 2}"})
    assert result.total == 400, result.summary()
    assert result.by_status == {503: 200, 200: 200}, result.summary()
    assert sorted(s.index for s in result.samples) == list(range(400))
    for statuses in _statuses_by_key(result, lambda i: f"id-{i // 2}").values():
        assert sorted(statuses) == [200, 503]

    server.fail_first_attempt(None)
    assert _get(server)[0] == 200


def _statuses_by_key(result: LoadResult, key_of: Callable[[int], str]) -> dict[str, list[int | None]]:
    by_key: dict[str, list[int | None]] = {}
    for sample in result.samples:
        by_key.setdefault(key_of(sample.index), []).append(sample.status)
    return by_key


def test_health_endpoint_status_is_independent_of_traffic(server: UpstreamServer) -> None:
    server.status = 503
    assert _get(server) == (503, "solo")
    assert _get(server, HEALTH_PATH) == (200, "solo")
    server.status = 200
    server.health_status = 503
    assert _get(server, HEALTH_PATH)[0] == 503
    assert _get(server, "/healthz/not-the-endpoint")[0] == 200
    assert (server.hits, server.health_checks) == (2, 2)
    with pytest.raises(ValueError, match="status"):
        server.health_status = 42


def test_reset_closes_the_connection_without_an_answer(server: UpstreamServer) -> None:
    server.reset_connections = True
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        _get(server)
    assert _get(server, HEALTH_PATH)[0] == 200  # health is not reset
    server.reset_connections = False
    assert _get(server) == (200, "solo")
    assert server.hits == 2
    assert server.in_flight == 0


def test_faults_flip_safely_while_traffic_runs(server: UpstreamServer) -> None:
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            server.status = 503 if server.status == 200 else 200

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    try:
        result = run_requests(f"http://127.0.0.1:{server.port}/", count=300, concurrency=6)
    finally:
        stop.set()
        flipper.join(timeout=5)
    assert result.total == 300
    assert set(result.by_status) <= {200, 503}, result.summary()
    assert result.errors == {}
    assert server.hits == 300


# -- the gRPC health server on its own ---------------------------------------------------------------------


def test_grpc_health_server_flips_serving_status() -> None:
    with GrpcHealthServer("solo") as health, grpc.insecure_channel(f"127.0.0.1:{health.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = health_pb2.HealthCheckResponse

        def check(service: str = "") -> Any:
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

        assert check() == response.SERVING
        health.set_serving(False)
        assert check() == response.NOT_SERVING
        assert health.serving() is False
        health.set_serving(True, service="orders")
        assert check("orders") == response.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            check("nobody")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert health.serving("nobody") is None
        assert health.checks == 4


# -- through a real Envoy ------------------------------------------------------------------------------------


# Retries go to a host not tried yet for this request (up to 3 picks), so round robin cannot land them on
# the faulty host again.
_OTHER_HOST: dict[str, Any] = {
    "retry_host_predicate": [{
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": {"@type": "type.googleapis.com/"
                         "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
    }],
    "host_selection_retry_max_attempts": 3,
}  # fmt: skip


def test_retry_to_another_host_hides_first_attempt_failures(
    upstreams: Callable[..., UpstreamPool], envoy_factory: Callable[..., EnvoyProcess]
) -> None:
    pool = upstreams("a", "b", "c")
    pool["a"].fail_first_attempt()  # keyed by x-request-id, which Envoy generates and keeps across retries
    route = {"match": {"prefix": "/"}, "route": {"cluster": CLUSTER, "retry_policy": {
        "retry_on": "5xx", "num_retries": 2, **_OTHER_HOST,
    }}}  # fmt: skip
    # Envoy allows 3 concurrent retries per cluster by default; more would surface first-attempt failures.
    breakers = {"circuit_breakers": {"thresholds": [{"max_retries": 100}]}}
    envoy = envoy_factory(lambda port: bootstrap(port, list(pool), routes=[route], cluster=breakers))

    result = run_requests(_url(envoy), count=300, concurrency=4)

    assert result.total == 300
    assert result.failures == 0, result.summary()
    assert set(result.by_upstream) == {"b", "c"}, "a answers only first attempts, and those fail"
    failing = envoy.host_status(CLUSTER, pool["a"].address)
    assert failing.stat("rq_error") == pool["a"].hits > 0
    assert failing.stat("rq_success") == 0
    retried = envoy.cluster_stat(CLUSTER, "upstream_rq_retry")
    assert retried == pool["a"].hits, result.summary()
    for name in ("b", "c"):
        host = envoy.host_status(CLUSTER, pool[name].address)
        assert host.stat("rq_success") == host.stat("rq_total") == pool[name].hits
        assert host.healthy
    _assert_clean(envoy)


def test_per_try_timeout_cuts_a_hanging_upstream(
    upstreams: Callable[..., UpstreamPool], envoy_factory: Callable[..., EnvoyProcess]
) -> None:
    pool = upstreams("stuck", "fine")
    route = {"match": {"prefix": "/"}, "route": {"cluster": CLUSTER, "timeout": "5s", "retry_policy": {
        "retry_on": "5xx", "num_retries": 2, "per_try_timeout": "0.2s", **_OTHER_HOST,
    }}}  # fmt: skip
    envoy = envoy_factory(lambda port: bootstrap(port, list(pool), routes=[route]))
    pool["stuck"].hang()
    try:
        result = run_requests(_url(envoy), count=20, concurrency=2, timeout_s=5)
        assert result.failures == 0, result.summary()
        assert result.by_upstream == {"fine": 20}
        assert pool["stuck"].hits >= 1
        assert envoy.cluster_stat(CLUSTER, "upstream_rq_per_try_timeout") == pool["stuck"].hits
    finally:
        pool["stuck"].release()
    _assert_clean(envoy)


def test_reset_is_seen_by_envoy_and_outlier_detection_ejects_the_host(
    upstreams: Callable[..., UpstreamPool], envoy_factory: Callable[..., EnvoyProcess]
) -> None:
    pool = upstreams("x", "y", "z")
    cluster = {"outlier_detection": {
        "consecutive_5xx": 3, "interval": "1s", "base_ejection_time": "30s", "max_ejection_percent": 100,
    }}  # fmt: skip
    envoy = envoy_factory(lambda port: bootstrap(port, list(pool), cluster=cluster))
    pool["x"].reset_connections = True

    before = run_requests(_url(envoy), count=60, concurrency=1)

    # Connection resets count as 5xx for outlier detection: exactly the threshold reaches the client.
    assert before.by_status == {200: 57, 503: 3}, before.summary()
    (reply,) = before.replies
    assert "reset" in reply, before.replies
    host = envoy.host_status(CLUSTER, pool["x"].address)
    assert "failed_outlier_check" in host.flags
    assert not host.healthy
    assert envoy.cluster_stat(CLUSTER, "outlier_detection.ejections_enforced_total") == 1
    assert [h.healthy for h in envoy.cluster_hosts(CLUSTER)].count(True) == 2

    after = run_requests(_url(envoy), count=40, concurrency=2)
    assert after.failures == 0, after.summary()
    assert set(after.by_upstream) == {"y", "z"}
    with pytest.raises(KeyError):
        envoy.cluster_hosts("no-such-cluster")
    with pytest.raises(KeyError):
        envoy.host_status(CLUSTER, ("127.0.0.1", 1))
    _assert_clean(envoy)


def test_active_http_health_check_follows_healthz_not_traffic(
    upstreams: Callable[..., UpstreamPool], envoy_factory: Callable[..., EnvoyProcess]
) -> None:
    pool = upstreams("sick", "well")
    cluster = {"health_checks": [{
        "timeout": "1s", "interval": "0.1s", "no_traffic_interval": "0.1s",
        "unhealthy_threshold": 1, "healthy_threshold": 1,
        "http_health_check": {"path": HEALTH_PATH},
    }]}  # fmt: skip
    envoy = envoy_factory(lambda port: bootstrap(port, list(pool), cluster=cluster))
    sick = pool["sick"]

    def host() -> Any:
        return envoy.host_status(CLUSTER, sick.address)

    wait_until(lambda: host().healthy, timeout_s=10, message="never passed its first health check")
    sick.health_status = 503
    wait_until(lambda: "failed_active_health_check" in host().flags, timeout_s=10,
               message="Envoy never failed the host's health check")
    assert envoy.cluster_stat(CLUSTER, "health_check.failure") >= 1
    traffic_before = sick.hits

    result = run_requests(_url(envoy), count=50, concurrency=2)

    assert result.by_upstream == {"well": 50}, result.summary()
    assert sick.hits == traffic_before == 0, "health checks are not counted as traffic"
    assert sick.health_checks > 0
    sick.health_status = 200
    wait_until(lambda: host().healthy, timeout_s=10, message="never recovered")
    _assert_clean(envoy)


def test_grpc_health_check_against_a_real_grpc_health_server(
    upstreams: Callable[..., UpstreamPool], envoy_factory: Callable[..., EnvoyProcess]
) -> None:
    pool = upstreams("g1", "g2")
    with GrpcHealthServer("g1-health") as g1_health, GrpcHealthServer("g2-health") as g2_health:
        cluster = {"health_checks": [{
            "timeout": "1s", "interval": "0.1s", "no_traffic_interval": "0.1s",
            "unhealthy_threshold": 1, "healthy_threshold": 1,
            "grpc_health_check": {},
        }],
        # Envoy refuses gRPC health checks on a cluster that cannot speak HTTP/2 (and `auto_config` needs TLS
        # for ALPN). Using the downstream's protocol declares HTTP/2 support, yet sends this HTTP/1.1 client's
        # traffic as HTTP/1.1, which these upstreams speak; the health checker opens its own HTTP/2
        # connection to the health port.
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}},
        }}}  # fmt: skip
        ports = {"g1": g1_health.port, "g2": g2_health.port}
        envoy = envoy_factory(lambda port: bootstrap(port, list(pool), cluster=cluster, health_ports=ports))

        def g1() -> Any:
            return envoy.host_status(CLUSTER, pool["g1"].address)

        wait_until(lambda: all(h.healthy for h in envoy.cluster_hosts(CLUSTER)), timeout_s=10,
                   message="gRPC health checks never passed")
        g1_health.set_serving(False)
        wait_until(lambda: "failed_active_health_check" in g1().flags, timeout_s=10,
                   message="Envoy never saw NOT_SERVING")
        result = run_requests(_url(envoy), count=30, concurrency=2)
        assert result.by_upstream == {"g2": 30}, result.summary()
        assert g1_health.checks > 0
        assert g2_health.checks > 0
        g1_health.set_serving(True)
        wait_until(lambda: g1().healthy, timeout_s=10, message="never recovered")
        _assert_clean(envoy)


def test_circuit_breaker_overflow_fails_fast_and_is_counted(
    upstreams: Callable[..., UpstreamPool], envoy_factory: Callable[..., EnvoyProcess]
) -> None:
    pool = upstreams("slow")
    slow = pool["slow"]
    cluster = {"circuit_breakers": {"thresholds": [{"max_connections": 2, "max_pending_requests": 1}]}}
    envoy = envoy_factory(lambda port: bootstrap(port, [slow], cluster=cluster))
    slow.hang()
    with ThreadPoolExecutor(max_workers=1) as executor:
        running = executor.submit(run_requests, _url(envoy), count=10, concurrency=10, timeout_s=10)
        # Two on the wire, one pending, seven refused: known before anything is released.
        wait_until(lambda: envoy.cluster_stat(CLUSTER, "upstream_rq_pending_overflow") == 7, timeout_s=10,
                   message="overflow never reached 7")
        assert slow.in_flight == 2
        slow.release()
        result = running.result(timeout=15)

    assert result.by_status == {200: 3, 503: 7}, result.summary()
    assert result.overloaded == 7
    (reply,) = result.replies
    assert "overflow" in reply, result.replies
    assert slow.max_in_flight == 2
    assert slow.hits == 3
    _assert_clean(envoy)


def test_header_and_cookie_affinity_are_visible_per_request(
    upstreams: Callable[..., UpstreamPool], envoy_factory: Callable[..., EnvoyProcess]
) -> None:
    pool = upstreams("h1", "h2", "h3")
    routes = [
        {"match": {"prefix": "/cookie"}, "route": {"cluster": CLUSTER, "hash_policy": [
            {"cookie": {"name": "affinity", "ttl": "60s"}}]}},
        {"match": {"prefix": "/"}, "route": {"cluster": CLUSTER, "hash_policy": [
            {"header": {"header_name": "x-session"}}]}},
    ]  # fmt: skip
    envoy = envoy_factory(
        lambda port: bootstrap(port, list(pool), cluster={"lb_policy": "RING_HASH"}, routes=routes)
    )

    def key(i: int) -> str:
        return f"user-{i % 25}"

    result = run_requests(_url(envoy), count=500, concurrency=4,
                          request_headers=lambda i: {"x-session": key(i)})
    assert result.failures == 0, result.summary()
    placement = result.upstreams_by_key(key)
    assert len(placement) == 25
    assert all(len(counts) == 1 for counts in placement.values()), placement
    assert sum(sum(c.values()) for c in placement.values()) == 500
    assert {name for counts in placement.values() for name in counts} == {"h1", "h2", "h3"}

    # A new connection per request: Envoy makes up a new cookie each time unless the client returns it.
    close = {"Connection": "close"}
    fresh = run_requests(_url(envoy, "/cookie"), count=40, concurrency=1, headers=close)
    kept = run_requests(_url(envoy, "/cookie"), count=40, concurrency=1, headers=close, keep_cookies=True)
    assert fresh.failures == kept.failures == 0
    assert len(fresh.by_upstream) > 1, fresh.summary()
    assert len(kept.by_upstream) == 1, kept.summary()
    _assert_clean(envoy)


def test_deprecated_fields_show_up_in_the_log_scan(
    upstreams: Callable[..., UpstreamPool], envoy_factory: Callable[..., EnvoyProcess]
) -> None:
    pool = upstreams("old")
    # Still accepted, but deprecated in favour of typed_extension_protocol_options.
    cluster = {"http_protocol_options": {}}
    envoy = envoy_factory(lambda port: bootstrap(port, list(pool), cluster=cluster))
    envoy.wait_log_line(_STARTED_LINE)
    warnings = envoy.deprecation_warnings()
    assert warnings, envoy.tail()
    assert any("http_protocol_options" in line for line in warnings), warnings
