"""harness/promql_names.py: which metric names a PromQL expression selects, and which names a scrape offers
(the helpers of tests/e2e/test_envoy_stats_e2e.py, issue 14)."""

from __future__ import annotations

import pytest

from harness.promql_names import exported_names, metric_names, missing_names


@pytest.mark.parametrize(("expression", "names"), [
    ('sum by (type) (rate(xds_pushes_total{job="xds", type=~"c.s"}[5m]))', {"xds_pushes_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(xds_convergence_seconds_bucket[$__rate_interval]))) > 4e6",
     {"xds_convergence_seconds_bucket"}),
    ("absent(xds_ready == 1)", {"xds_ready"}),
    ("time() - xds_source_last_sync_timestamp_seconds > 300", {"xds_source_last_sync_timestamp_seconds"}),
    ("a / on (x) group_left (y) b offset 5m", {"a", "b"}),
    ("increase(xds_nacks_total[5m]) > 0 and bool c", {"xds_nacks_total", "c"}),
    ('sum(envoy_http_downstream_rq_xx{envoy_response_code_class="5", g=~"${group}"}) / 1.5e3',
     {"envoy_http_downstream_rq_xx"}),
    ("max_over_time(up[1h:5m]) unless ignoring(job) foo:recorded", {"up", "foo:recorded"}),
])
def test_metric_names(expression: str, names: set[str]) -> None:
    assert metric_names(expression) == names


def test_exported_names_cover_families_without_samples() -> None:
    exposition = "\n".join([
        "# HELP xds_nacks_total Responses rejected.",
        "# TYPE xds_nacks_total counter",
        "# TYPE xds_build_seconds histogram",
        "# TYPE envoy_cluster_upstream_rq_total counter",
        'envoy_cluster_upstream_rq_total{envoy_cluster_name="web"} 3',
        "# TYPE xds_workload_certs_issued counter",
        "process_open_fds 12",
    ])
    names = exported_names(exposition)
    assert {"xds_nacks_total", "xds_build_seconds_bucket", "xds_build_seconds_sum", "xds_build_seconds_count",
            "envoy_cluster_upstream_rq_total", "xds_workload_certs_issued_total", "process_open_fds"} <= names
    assert missing_names(["rate(xds_nacks_total[1m])", "xds_gone + process_open_fds"], names) == {
        "xds_gone + process_open_fds": {"xds_gone"}}
