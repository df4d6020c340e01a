"""Issue 8, per service: `upstream_connection.max_requests_per_connection` and `load_balancer` knobs from
the catalog file, through the real control plane process, to a real Envoy in front of real upstreams
(docs/config.md, "Upstream connections" and "Load balancer").

`max_requests_per_connection: 1` is observable honestly from both ends: Envoy counts every upstream
connection it closes at the limit as `upstream_cx_max_requests`, and opens one connection per request
(`upstream_cx_total`), while a service without the setting, served by the same Envoy at the same time,
keeps reusing its pooled connection. The knobs of `least_request` are checked where Envoy reports them
(the config dump) and by traffic: least request steers around a slow upstream that round robin keeps
feeding, and slow start ramps a new endpoint up over its window. Envoy must reject nothing and log no
deprecated-field warning."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import UpstreamPool, run_requests, wait_until

from .stack import start_stack

# Every Envoy here runs once over state-of-the-world and once over delta xDS (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

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


def _share(result: Any, upstream: str) -> float:
    assert result.ok == result.total, result.summary()
    return 100.0 * result.by_upstream.get(upstream, 0) / result.total


def test_least_request_steers_around_a_slow_upstream_that_round_robin_keeps_feeding(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    """`lb_policy: least_request` with `choice_count: 3`: the same three upstreams, one of them slow, behind
    two services of one Envoy. Round robin gives the slow one its third of the requests; least request
    picks the host with fewer requests in flight, and the slow one always has more."""
    pool = upstreams("a", "b", "slow")
    pool["slow"].delay_s = 0.2
    members = [("a", {}), ("b", {}), ("slow", {})]
    stack = start_stack(workdir=workdir, pool=pool, services={"rr": members, "lr": members},
                        backends=[("rr", None, 100)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory,
                        service_settings={"lr": {"lb_policy": "least_request",
                                                 "load_balancer": {"choice_count": 3}}},
                        extra_routes=[{"name": "lr", "match": {"prefix": "/lr"},
                                       "backends": [{"service": "lr"}]}])
    wait_until(lambda: len(stack.eds_ports("rr")) == len(stack.eds_ports("lr")) == 3, timeout_s=10,
               message="Envoy never had every endpoint of both services")
    count, concurrency = 150, 6
    round_robin = _share(run_requests(stack.url, count=count, concurrency=concurrency), "slow")
    least_request = _share(run_requests(f"{stack.url}lr/", count=count, concurrency=concurrency), "slow")
    print(f"\nslow upstream (200 ms) share of {count} requests at concurrency {concurrency}: round_robin "
          f"{round_robin:.1f}%, least_request (choice_count 3) {least_request:.1f}%")
    assert abs(round_robin - 100 / 3) <= 5, round_robin
    assert least_request <= round_robin / 3, (least_request, round_robin)
    assert stack.envoy.update_rejected_total() == 0


def test_slow_start_ramps_a_new_endpoint_up_over_its_window(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    """`load_balancer.slow_start_window`: an endpoint added to a running service starts with a small share
    of the traffic and grows to its full share over the window, while the same endpoint added at the same
    moment to a service without slow start gets its full share at once."""
    window_s = 5.0
    pool = upstreams("a", "b", "new")
    stack = start_stack(workdir=workdir, pool=pool, services={"ramped": [("a", {}), ("b", {})],
                                                              "plain": [("a", {}), ("b", {})]},
                        backends=[("ramped", None, 100)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory,
                        service_settings={"ramped": {"load_balancer": {"slow_start_window": f"{window_s}s"}}},
                        extra_routes=[{"name": "plain", "match": {"prefix": "/plain"},
                                       "backends": [{"service": "plain"}]}])
    wait_until(lambda: len(stack.eds_ports("ramped")) == len(stack.eds_ports("plain")) == 2, timeout_s=10,
               message="Envoy never had the first endpoints")
    # Every host of a new cluster starts in slow start too (Envoy's load_balancing/slow_start docs: the
    # window runs from when a host joins), so the first ones must leave their window before the new one is
    # compared with them. Waiting out the window is what is being tested here.
    time.sleep(window_s + 0.5)
    for name in ("ramped", "plain"):
        stack.catalog.services[name].append(("new", {}))
    stack.catalog.write()
    wait_until(lambda: len(stack.eds_ports("ramped")) == len(stack.eds_ports("plain")) == 3, timeout_s=10,
               message="Envoy never had the new endpoint")
    added = time.monotonic()
    # Worker threads take the new host set shortly after /clusters shows it: wait until plain traffic
    # reaches the new endpoint, then sample both services one after the other.
    wait_until(lambda: "new" in run_requests(f"{stack.url}plain/", count=30, concurrency=2).by_upstream,
               timeout_s=5, message="traffic never reached the new endpoint")
    early_ramped = _share(run_requests(stack.url, count=150, concurrency=2), "new")
    early_plain = _share(run_requests(f"{stack.url}plain/", count=150, concurrency=2), "new")
    early_s = time.monotonic() - added
    assert early_s < window_s / 2, f"the early sample took {early_s:.1f} s, too long to say anything"
    time.sleep(max(0.0, window_s + 0.5 - (time.monotonic() - added)))
    late_ramped = _share(run_requests(stack.url, count=150, concurrency=2), "new")
    print(f"\nslow start {window_s:g}s: the new endpoint's share in its first {early_s:.1f} s: "
          f"{early_ramped:.1f}% (without slow start {early_plain:.1f}%); after the window {late_ramped:.1f}%")
    assert abs(early_plain - 100 / 3) <= 6, early_plain
    assert early_ramped <= early_plain / 2, (early_ramped, early_plain)
    assert abs(late_ramped - 100 / 3) <= 6, late_ramped
    assert stack.envoy.update_rejected_total() == 0
