"""Issue 10, proxy-side mode: `lb_policy: client_side_weighted` from the catalog file, through the real
control plane process, to a real Envoy whose client-side weighted round robin follows the ORCA load its
real upstreams report (docs/load-aware.md, "Proxy-side mode").

The prediction is Envoy's documented formula (client_side_weighted_round_robin.proto): weight = qps /
(utilization + eps/qps * penalty), computed by `expected_weight` from exactly what each upstream reports.
Every upstream reports the same qps (`rps_fractional`), so the weights are in the inverse ratio of the
reported CPU: 100/0.3 = 333 for a cool one, 100/0.9 = 111 for the hot one, a hot share of 111/777 = 14.3%.
Envoy's own view says why traffic moved: `/clusters` shows each host's weight, and the test waits for exactly
the predicted weights before it counts requests. The three upstreams use the three header encodings Envoy
accepts (TEXT, JSON, BIN), so a weight of its own for each shows each encoding parsed.

Out-of-band reporting is proven without any traffic at all: the endpoints are ORCA OOB servers
(harness/orca_oob.py), and Envoy's weights follow what they stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import SteadyLoad, UpstreamPool, run_requests, wait_until
from harness.orca_oob import OrcaOobServer
from harness.orca_report import OrcaFormat, OrcaLoad, expected_shares, expected_weight

from .stack import Stack, assert_clean, start_stack

# Every Envoy here runs once over state-of-the-world and once over delta xDS (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

REQUESTS = 2000
TOLERANCE_POINTS = 5.0
QPS = 100.0  # what every upstream reports as its rps_fractional
COOL, HOT = 0.3, 0.9
# Short periods so the test converges in about a second; every one is a knob of `load_balancer`.
KNOBS = {"blackout_period": "1s", "weight_update_period": "200ms", "weight_expiration_period": "5s",
         "error_utilization_penalty": 1.0}
FORMATS: dict[str, OrcaFormat] = {"a": "TEXT", "b": "JSON", "hot": "BIN"}
_POLICY = "envoy.load_balancing_policies.client_side_weighted_round_robin"


def _load(cpu: float) -> OrcaLoad:
    return OrcaLoad(cpu_utilization=cpu, mem_utilization=0.4, rps_fractional=QPS)


def _weights(stack: Stack, cluster: str, ports: Mapping[int, str]) -> dict[str, int]:
    return {ports[h.port]: h.weight for h in stack.envoy.cluster_hosts(cluster) if h.port in ports}


def _converge(stack: Stack, cluster: str, ports: Mapping[int, str], expected: dict[str, int], *,
              traffic: bool, since: float, timeout_s: float = 10.0) -> float:
    """Seconds from `since` until Envoy's host weights are `expected`. With `traffic`, a light steady load
    runs meanwhile: header reports ride on responses, so weights only move while requests flow."""
    load = SteadyLoad(stack.url, rate_per_s=100, concurrency=2) if traffic else None
    if load is not None:
        load.start()
    try:
        wait_until(lambda: _weights(stack, cluster, ports) == expected, timeout_s=timeout_s, interval_s=0.02,
                   message=lambda: f"Envoy weights {_weights(stack, cluster, ports)} != {expected}")
        return time.monotonic() - since
    finally:
        if load is not None:
            load.stop()


def _measure(stack: Stack) -> dict[str, float]:
    result = run_requests(stack.url, count=REQUESTS, concurrency=4)
    assert result.ok == result.total == REQUESTS, result.summary()
    return {name: 100.0 * result.share(name) for name in FORMATS}  # share() is a fraction


def _assert_shares(measured: dict[str, float], weights: dict[str, int]) -> None:
    predicted = expected_shares(weights)
    for name, share in measured.items():
        assert abs(share - predicted[name]) <= TOLERANCE_POINTS, (name, measured, predicted)


def _cluster(stack: Stack, name: str) -> dict[str, Any]:
    for config in stack.envoy.config_dump()["configs"]:
        for entry in config.get("dynamic_active_clusters", []):
            if entry["cluster"]["name"] == name:
                cluster: dict[str, Any] = entry["cluster"]
                return cluster
    raise KeyError(name)


def test_hot_instance_share_falls_to_the_formula_and_returns_when_its_load_drops(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    pool = upstreams(*FORMATS)
    for name, fmt in FORMATS.items():
        pool[name].set_orca(_load(COOL), fmt)
    stack = start_stack(workdir=workdir, pool=pool, services={"web": [(n, {}) for n in FORMATS]},
                        backends=[("web", None, 100)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory,
                        service_settings={"web": {"lb_policy": "client_side_weighted",
                                                  "load_balancer": KNOBS}})
    ports = {pool[name].port: name for name in FORMATS}
    wait_until(lambda: len(stack.eds_ports("web")) == 3, timeout_s=10, message="Envoy never had 3 endpoints")

    # The typed policy with every knob, and no lb_policy enum value (client_side_weighted.py).
    cluster = _cluster(stack, "web")
    assert "lb_policy" not in cluster
    (policy,) = cluster["load_balancing_policy"]["policies"]
    assert policy["typed_extension_config"]["name"] == _POLICY
    typed = policy["typed_extension_config"]["typed_config"]
    assert {k: typed[k] for k in ("blackout_period", "weight_update_period", "weight_expiration_period",
                                  "error_utilization_penalty")} == {
        "blackout_period": "1s", "weight_update_period": "0.200s", "weight_expiration_period": "5s",
        "error_utilization_penalty": 1.0}

    cool = expected_weight(_load(COOL))
    hot = expected_weight(_load(HOT))
    assert (cool, hot) == (333, 111)
    even = {name: cool for name in FORMATS}
    warm_s = _converge(stack, "web", ports, even, traffic=True, since=time.monotonic())
    baseline = _measure(stack)
    _assert_shares(baseline, even)

    pool["hot"].set_orca(_load(HOT), FORMATS["hot"])
    skewed = {**even, "hot": hot}
    shift_s = _converge(stack, "web", ports, skewed, traffic=True, since=time.monotonic())
    loaded = _measure(stack)
    _assert_shares(loaded, skewed)

    pool["hot"].set_orca(_load(COOL), FORMATS["hot"])
    back_s = _converge(stack, "web", ports, even, traffic=True, since=time.monotonic())
    recovered = _measure(stack)
    _assert_shares(recovered, even)

    predicted = expected_shares(skewed)["hot"]
    print(f"\nclient_side_weighted, {REQUESTS} requests per phase: hot share {baseline['hot']:.1f}% all at "
          f"{COOL:g} CPU (predicted {100 / 3:.1f}%), {loaded['hot']:.1f}% at {HOT:g} CPU (predicted "
          f"{predicted:.1f}%, weights {skewed}), {recovered['hot']:.1f}% back at {COOL:g}; Envoy's weights "
          f"settled {warm_s:.2f} s after start (1 s blackout), {shift_s:.2f} s after the load rose, "
          f"{back_s:.2f} s after it dropped")
    assert shift_s < 5.0 and back_s < 5.0
    assert_clean(stack)


@pytest.fixture
def oob_servers() -> Iterator[dict[str, OrcaOobServer]]:
    servers = {name: OrcaOobServer(name, _load(HOT if name == "hot" else COOL)) for name in FORMATS}
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def test_out_of_band_reports_set_the_weights_without_any_traffic(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any, oob_servers: dict[str, OrcaOobServer]) -> None:
    """`oob_reporting: true`: Envoy opens StreamCoreMetrics to every endpoint and weighs each host by what it
    streams; no request is sent, so no header could have carried a report."""
    pool = upstreams("plain")
    stack = start_stack(workdir=workdir, pool=pool, services={"web": [("plain", {})]},
                        backends=[("web", None, 100)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory)
    document = stack.catalog.document()
    document["services"].append({
        "name": "oob", "protocol": "http2", "lb_policy": "client_side_weighted",
        "load_balancer": {**KNOBS, "oob_reporting": True, "oob_reporting_period": "200ms"},
        "endpoints": [{"address": f"127.0.0.1:{server.port}"} for server in oob_servers.values()]})
    document["listeners"][0]["routes"].insert(
        0, {"name": "oob", "match": {"prefix": "/oob"}, "backends": [{"service": "oob"}]})
    started = time.monotonic()
    stack.catalog.write_text(yaml.safe_dump(document, sort_keys=False))
    ports = {server.port: name for name, server in oob_servers.items()}
    wait_until(lambda: len(stack.eds_ports("oob")) == 3, timeout_s=10, message="Envoy never had 3 endpoints")

    typed = _cluster(stack, "oob")["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert typed["typed_config"]["enable_oob_load_report"] is True
    assert typed["typed_config"]["oob_reporting_period"] == "0.200s"

    skewed = {"a": 333, "b": 333, "hot": 111}
    first_s = _converge(stack, "oob", ports, skewed, traffic=False, since=started)
    oob_servers["hot"].set_load(_load(COOL))
    even = {name: 333 for name in FORMATS}
    back_s = _converge(stack, "oob", ports, even, traffic=False, since=time.monotonic())

    received = stack.envoy.cluster_stat("oob", "lb_orca_oob.reports_received")
    print(f"\nclient_side_weighted with oob_reporting: weights {skewed} {first_s:.2f} s after the catalog "
          f"write (1 s blackout), even again {back_s:.2f} s after the hot endpoint cooled; Envoy received "
          f"{received} out-of-band reports on {sum(s.streams for s in oob_servers.values())} streams, "
          f"asking every {oob_servers['a'].intervals} s")
    assert all(server.streams >= 1 and set(server.intervals) == {0.2} for server in oob_servers.values())
    assert received >= 3
    assert stack.envoy.cluster_stat("oob", "lb_orca_oob.report_errors") == 0
    assert stack.envoy.cluster_stat("oob", "upstream_rq_total") == 0  # not one request carried a header
    assert_clean(stack)
