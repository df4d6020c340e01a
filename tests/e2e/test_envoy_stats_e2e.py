"""Issue 14 items 3 and 4 against a running system: a real Envoy's `/stats/prometheus` through the stats
listener the control plane adds (`xds serve --envoy-stats-port`), nothing else of its admin through it, and
every metric the dashboards (deploy/grafana/*.json) and alert rules (deploy/prometheus/alerts.yaml) name is
exported by the control plane or the Envoy."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import UpstreamPool, free_port, run_requests, wait_until
from harness.promql_names import exported_names, missing_names

from .stack import Stack, assert_clean, start_stack

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "deploy" / "grafana").glob("*.json"))
RULES = REPO / "deploy" / "prometheus" / "alerts.yaml"

# Every test here runs against Envoy in state-of-the-world and in delta mode (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")


@pytest.fixture
def stats_stack(workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
                envoy_factory: Any) -> tuple[Stack, int]:
    stats_port = free_port()

    def with_stats_listener(config: Path, *, extra_args: tuple[str, ...] = ()) -> Any:
        return control_plane_factory(config, extra_args=(*extra_args, "--envoy-stats-port", str(stats_port),
                                                         "--envoy-stats-address", "127.0.0.1"))

    pool = upstreams("web-1", "web-2")
    # Outlier detection on, so the ejection stats the Envoy dashboard shows exist (docs/config.md).
    stack = start_stack(workdir=workdir, pool=pool, services={"web": [("web-1", {}), ("web-2", {})]},
                        backends=[("web", None, 100)], control_plane_factory=with_stats_listener,
                        envoy_factory=envoy_factory, cluster="edge",
                        service_settings={"web": {"outlier_detection": {"consecutive_5xx": 5}}})
    return stack, stats_port


def _get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def _scrape(port: int) -> str:
    status, body = _get(port, "/stats/prometheus")
    assert status == 200, body[:300]
    return body


def test_stats_listener_serves_prometheus_stats_and_nothing_else(stats_stack: tuple[Stack, int]) -> None:
    stack, port = stats_stack
    wait_until(lambda: stack.envoy.listener_port("envoy_prometheus_stats") == port, timeout_s=15,
               message="Envoy never bound the stats listener", ignore=(KeyError,))
    result = run_requests(stack.url, count=20, concurrency=2)
    assert result.non_2xx == 0 and result.failures == 0, result.summary()

    def web_stats() -> str | None:
        body = _scrape(port)
        return body if 'envoy_cluster_name="web"' in body else None

    body = wait_until(web_stats, timeout_s=10, message="no stats of cluster web through the stats listener")
    assert "# TYPE envoy_cluster_upstream_rq_total counter" in body
    # The node-group tag of the bootstrap labels every series (xds/bootstrap.py _stats_config_lines).
    rq = [line for line in body.splitlines() if line.startswith("envoy_cluster_upstream_rq_total{")
          and 'envoy_cluster_name="web"' in line]
    assert rq and all('xds_node_group="edge"' in line for line in rq), rq
    assert int(float(rq[0].rsplit(" ", 1)[1])) >= 20

    # Only /stats/prometheus reaches admin: every other path, however spelled, is Envoy's own 404.
    for method, path in [("POST", "/quitquitquit"), ("GET", "/config_dump"), ("GET", "/stats"),
                         ("GET", "/stats/prometheus/../config_dump"), ("GET", "//config_dump"),
                         ("POST", "/runtime_modify?x=1"), ("GET", "/clusters")]:
        status, text = _get(port, path, method)
        assert status == 404, (method, path, status, text[:200])
        assert "configs" not in text and "cluster_statuses" not in text
    assert stack.envoy.alive and stack.envoy.ready()
    # Nothing rejected and no deprecated field in what the control plane sent (tests/e2e/stack.py).
    assert_clean(stack)


def _dashboard_expressions(path: Path) -> tuple[list[str], list[str]]:
    """(panel target expressions, metric names of the dashboard's label_values() variables)."""
    doc = json.loads(path.read_text())
    exprs = [t["expr"] for panel in doc["panels"] for t in panel.get("targets", [])]
    variable_metrics = []
    for variable in doc["templating"]["list"]:
        if variable.get("type") == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert match, f"{path.name}: variable {variable['name']} is not label_values(metric, label)"
            variable_metrics.append(match.group(1))
    return exprs, variable_metrics


def test_every_metric_dashboards_and_rules_name_is_exported(stats_stack: tuple[Stack, int]) -> None:
    stack, port = stats_stack
    wait_until(lambda: stack.envoy.listener_port("envoy_prometheus_stats") == port, timeout_s=15,
               message="Envoy never bound the stats listener", ignore=(KeyError,))
    # Traffic first: Envoy creates per-status-class stats at the first response of that class.
    result = run_requests(stack.url, count=20, concurrency=2)
    assert result.non_2xx == 0 and result.failures == 0, result.summary()
    control_plane = exported_names(stack.control_plane.metrics_text())
    envoy = exported_names(_scrape(port))
    assert "xds_ready" in control_plane and "envoy_server_live" in envoy

    checked = 0
    for path in DASHBOARDS:
        exprs, variable_metrics = _dashboard_expressions(path)
        assert exprs, path
        exported = control_plane if path.name == "control-plane.json" else envoy
        assert missing_names(exprs, exported) == {}, path.name
        assert set(variable_metrics) <= exported, (path.name, variable_metrics)
        checked += len(exprs)
    rules = [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    assert missing_names(rules, control_plane) == {}
    assert len(DASHBOARDS) == 2 and checked >= 20 and len(rules) >= 4
