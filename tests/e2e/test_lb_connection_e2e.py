"""Issue 8, per service: `upstream_connection.max_requests_per_connection` and `load_balancer` knobs from
the catalog file, through the real control plane process, to a real Envoy in front of real upstreams
(docs/config.md, "Upstream connections" and "Load balancer").

`max_requests_per_connection: 1` is observable honestly from both ends: Envoy counts every upstream
connection it closes at the limit as `upstream_cx_max_requests`, and opens one connection per request
(`upstream_cx_total`), while a service without the setting, served by the same Envoy at the same time,
keeps reusing its pooled connection. The knobs of `least_request` are checked where Envoy reports them
(the config dump); Envoy must reject nothing and log no deprecated-field warning."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import UpstreamPool, run_requests, wait_until

from .stack import start_stack

REQUESTS = 20
_STARTED_LINE = "starting main dispatch loop"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _dynamic_cluster(config_dump: dict[str, Any], name: str) -> dict[str, Any]:
    for config in config_dump.get("configs", []):
        for entry in config.get("dynamic_active_clusters", []):
            if entry["cluster"]["name"] == name:
                cluster: dict[str, Any] = entry["cluster"]
                return cluster
    raise KeyError(name)


def test_max_requests_per_connection_closes_each_upstream_connection_after_one_request(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    pool = upstreams("a", "b")
    settings = {
        "web": {"lb_policy": "least_request",
                "load_balancer": {"choice_count": 3, "healthy_panic_threshold": 0},
                "upstream_connection": {"max_requests_per_connection": 1, "idle_timeout": "30s",
                                        "tcp_keepalive": {"probes": 3, "time": "60s", "interval": "10s"}}},
    }
    stack = start_stack(workdir=workdir, pool=pool, services={"web": [("a", {})], "plain": [("b", {})]},
                        backends=[("web", None, 100)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory, service_settings=settings,
                        extra_routes=[{"name": "plain", "match": {"prefix": "/plain"},
                                       "backends": [{"service": "plain"}]}])
    wait_until(lambda: stack.eds_ports("web") and stack.eds_ports("plain"), timeout_s=10,
               message="Envoy never had both endpoints")

    web = _dynamic_cluster(stack.envoy.config_dump(), "web")
    assert web["lb_policy"] == "LEAST_REQUEST"
    assert web["least_request_lb_config"] == {"choice_count": 3}
    assert web["common_lb_config"] == {"healthy_panic_threshold": {}}  # 0%: panic mode off
    options = web["typed_extension_protocol_options"][_HTTP_OPTIONS]
    assert options["explicit_http_config"] == {"http_protocol_options": {}}
    assert options["common_http_protocol_options"] == {"idle_timeout": "30s",
                                                       "max_requests_per_connection": 1}
    assert web["upstream_connection_options"]["tcp_keepalive"] == {
        "keepalive_probes": 3, "keepalive_time": 60, "keepalive_interval": 10}

    # One client connection, one request at a time: nothing but the limit makes Envoy open a new upstream
    # connection for the next request.
    limited = run_requests(stack.url, count=REQUESTS, concurrency=1)
    unlimited = run_requests(f"{stack.url}plain/", count=REQUESTS, concurrency=1)
    assert limited.by_status == {200: REQUESTS} and set(limited.by_upstream) == {"a"}, limited.summary()
    assert unlimited.by_status == {200: REQUESTS} and set(unlimited.by_upstream) == {"b"}, unlimited.summary()

    wait_until(lambda: stack.envoy.cluster_stat("web", "upstream_cx_max_requests") == REQUESTS, timeout_s=5,
               message=lambda: "upstream_cx_max_requests "
                               f"{stack.envoy.cluster_stat('web', 'upstream_cx_max_requests')} != {REQUESTS}")
    web_total = stack.envoy.cluster_stat("web", "upstream_cx_total")
    plain_total = stack.envoy.cluster_stat("plain", "upstream_cx_total")
    plain_closed = stack.envoy.cluster_stat("plain", "upstream_cx_max_requests")
    print(f"\nmax_requests_per_connection 1: {REQUESTS} requests opened {web_total} upstream connections, "
          f"{stack.envoy.cluster_stat('web', 'upstream_cx_max_requests')} closed at the limit; without it: "
          f"{plain_total} connection(s), {plain_closed} closed at a limit")
    assert web_total == REQUESTS
    assert plain_closed == 0
    assert plain_total == 1  # Envoy runs one worker (harness/envoy.py): one pooled connection, reused

    stack.envoy.wait_log_line(_STARTED_LINE)
    assert stack.envoy.deprecation_warnings() == []
    assert stack.envoy.update_rejected_total() == 0
    assert "NACKED" not in stack.status_text()
