"""The load-aware weight function and tracker (issue 10; the formula in docs/load-aware.md).

Property tests for the invariants the document promises: the floor, the bounded move per interval, equal
weights when every endpoint is equally hot, the TTL, and at most one change per service per interval however
many reports arrive; then the report checks (NaN, out of range, unknown endpoint, flood).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xds.model.service import Catalog, Endpoint, Service, ServiceName
from xds.policy.apply import apply_policy
from xds.policy.desired import LoadBalancerSpec, WeightsMode
from xds.policy.load import load_file
from xds.policy.load_tracker import (
    REJECT_ABOVE_ONE,
    REJECT_NEGATIVE,
    REJECT_NOT_A_NUMBER,
    REJECT_RATE_LIMITED,
    REJECT_UNKNOWN_ENDPOINT,
    LoadAwareEndpoint,
    LoadTracker,
    load_aware_endpoints,
)
from xds.policy.load_weights import (
    Combine,
    LoadFactors,
    LoadParams,
    combine,
    endpoint_address,
    max_ticks_to_target,
    move,
    scaled_weight,
    service_step,
    target_factors,
)
from xds.policy.schema import Policy, ServicePolicy

utilization = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
maybe_utilization = st.none() | utilization
params_strategy = st.builds(
    LoadParams,
    combine=st.sampled_from(list(Combine)),
    smoothing=st.floats(min_value=0.05, max_value=1.0),
    dead_band=st.floats(min_value=0.0, max_value=0.3),
    max_step=st.floats(min_value=0.01, max_value=1.0),
    floor=st.floats(min_value=0.01, max_value=1.0),
    gain=st.floats(min_value=0.05, max_value=1.0),
    ttl_s=st.floats(min_value=0.5, max_value=60.0),
)
loads = st.dictionaries(st.sampled_from([f"10.0.0.{i}:80" for i in range(8)]), maybe_utilization, min_size=1)


@given(params_strategy, loads, st.integers(min_value=1, max_value=30))
def test_factors_never_go_below_the_floor_nor_move_more_than_max_step(params: LoadParams,
                                                                        util: dict[str, float | None],
                                                                        rounds: int) -> None:
    published: dict[str, float] = {}
    for _ in range(rounds):
        after = service_step(published, util, params)
        for address, factor in after.items():
            before = published.get(address, 1.0)
            assert params.floor - 1e-12 <= factor <= 1.0
            assert abs(factor - before) <= params.max_step + 1e-12
            assert scaled_weight(1, factor) >= 1
        published = after


@given(params_strategy, st.lists(st.sampled_from([f"10.0.0.{i}:80" for i in range(6)]), min_size=1,
                                 unique=True), utilization,
       st.dictionaries(st.sampled_from([f"10.0.0.{i}:80" for i in range(6)]),
                       st.floats(min_value=0.01, max_value=1.0)))
def test_equally_hot_endpoints_end_at_their_base_weights(params: LoadParams, addresses: list[str], u: float,
                                                         start: dict[str, float]) -> None:
    targets = target_factors(dict.fromkeys(addresses, u), params)
    assert set(targets.values()) == {1.0}
    published = {a: max(params.floor, f) for a, f in start.items() if a in addresses}
    for _ in range(max_ticks_to_target(params)):
        published = service_step(published, dict.fromkeys(addresses, u), params)
    assert published == dict.fromkeys(addresses, 1.0)


@given(params_strategy, st.floats(min_value=0.0, max_value=1.0), st.floats(min_value=0.0, max_value=1.0))
def test_a_silent_endpoint_returns_to_base_after_the_ttl(params: LoadParams, hot: float, cool: float) -> None:
    tracker = LoadTracker(params, min_report_gap_s=0.0)
    tracker.set_endpoints([LoadAwareEndpoint("web", "a:1", 1), LoadAwareEndpoint("web", "b:1", 1)])
    now = 0.0
    for _ in range(20):  # both report for a while: a may sink toward the floor
        assert tracker.submit("a:1", hot, hot, source="api", now=now) is None
        assert tracker.submit("b:1", cool, cool, source="api", now=now) is None
        tracker.tick(now)
        now += 1.0
    last_a = now - 1.0
    # a goes silent; b keeps reporting. Past the TTL a's target is base, reached within the bound.
    steps = max_ticks_to_target(params)
    while now <= last_a + params.ttl_s + steps + 1:
        tracker.submit("b:1", cool, cool, source="api", now=now)
        tracker.tick(now)
        now += 1.0
    assert tracker.factors().factor("web", "a:1") == 1.0
    row = next(r for r in tracker.rows(now) if r.address == "a:1")
    assert row.age_s is None and row.weight == 100


@given(st.lists(st.tuples(st.sampled_from(["a:1", "b:1", "c:1"]), utilization, utilization), max_size=200))
@settings(max_examples=50)
def test_at_most_one_change_per_service_per_interval_however_noisy(reports: list[tuple[str, float, float]]
                                                                   ) -> None:
    params = LoadParams()
    tracker = LoadTracker(params, min_report_gap_s=0.0)
    tracker.set_endpoints([LoadAwareEndpoint("web", a, 1) for a in ("a:1", "b:1", "c:1")])
    before = tracker.factors()
    for index, (address, cpu, memory) in enumerate(reports):
        tracker.submit(address, cpu, memory, source="api", now=index * 0.001)
        assert tracker.factors() == before  # reports alone never change what is served
    changed = tracker.tick(1.0)
    assert changed <= {"web"}
    for address in ("a:1", "b:1", "c:1"):
        assert abs(tracker.factors().factor("web", address) - 1.0) <= params.max_step + 1e-12


def test_the_documented_hot_instance_example() -> None:
    # docs/load-aware.md: 90 % vs 30 % and 30 % -> factors 1/7, 1, 1 -> weights 14, 100, 100.
    params = LoadParams()
    targets = target_factors({"a": 0.9, "b": 0.3, "c": 0.3}, params)
    assert targets == pytest.approx({"a": 1 / 7, "b": 1, "c": 1})
    published: dict[str, float] = {}
    history = []
    for _ in range(10):
        published = service_step(published, {"a": 0.9, "b": 0.3, "c": 0.3}, params)
        history.append(scaled_weight(1, published["a"]))
    # gain 0.25 of the gap per interval (at least the dead band 0.05), then the last 0.1 in one step.
    assert history == [79, 62, 50, 41, 35, 30, 25, 20, 14, 14]


def test_dead_band_keeps_small_changes_from_moving_anything() -> None:
    params = LoadParams(dead_band=0.05)
    assert move(0.5, 0.53, params) == 0.5
    assert move(0.5, 0.56, params) == 0.56  # within twice the dead band: the last step goes all the way
    assert move(0.5, 0.9, params) == pytest.approx(0.6)  # gain 0.25 of the 0.4 gap
    assert move(0.5, 0.6, LoadParams(dead_band=0.0, gain=0.25)) == pytest.approx(0.525)
    assert move(0.97, 1.0, params) == 1.0  # base weight is always reachable


def test_everything_fully_busy_is_equal_not_zero() -> None:
    assert target_factors({"a": 1.0, "b": 1.0}, LoadParams()) == {"a": 1.0, "b": 1.0}
    assert target_factors({"a": 1.0, "b": 0.0}, LoadParams())["a"] == LoadParams().floor


@pytest.mark.parametrize(("how", "expected"), [(Combine.MAX, 0.7), (Combine.CPU, 0.2), (Combine.MEMORY, 0.7),
                                               (Combine.MEAN, 0.45)])
def test_combine(how: Combine, expected: float) -> None:
    assert combine(0.2, 0.7, how) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [{"smoothing": 0.0}, {"dead_band": 1.0}, {"max_step": 0.0}, {"floor": 0.0},
                                 {"ttl_s": 0.0}, {"smoothing": 1.5}])
def test_parameters_out_of_range_are_refused_by_name(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        LoadParams(**bad)  # type: ignore[arg-type]


def test_bad_reports_are_refused_with_a_reason_and_change_nothing() -> None:
    tracker = LoadTracker(LoadParams(), min_report_gap_s=0.1)
    tracker.set_endpoints([LoadAwareEndpoint("web", "10.0.0.1:80", 1)])
    cases = [(math.nan, 0.0, REJECT_NOT_A_NUMBER), (0.0, math.inf, REJECT_NOT_A_NUMBER),
             (-0.01, 0.0, REJECT_NEGATIVE), (0.0, 1.01, REJECT_ABOVE_ONE)]
    for cpu, memory, reason in cases:
        assert tracker.submit("10.0.0.1:80", cpu, memory, source="api", now=0.0) == reason
    assert tracker.submit("10.0.0.9:80", 0.5, 0.5, source="api", now=0.0) == REJECT_UNKNOWN_ENDPOINT
    assert tracker.rows(0.0)[0].age_s is None
    assert tracker.tick(1.0) == set()
    assert tracker.submit("10.0.0.1:80", 0.5, 0.5, source="api", now=2.0) is None
    assert tracker.submit("10.0.0.1:80", 0.9, 0.9, source="api", now=2.05) == REJECT_RATE_LIMITED
    assert tracker.rows(2.05)[0].cpu == 0.5


def test_load_aware_endpoints_come_from_the_merged_catalog_with_orca_ports() -> None:
    catalog = Catalog(services=(
        Service(ServiceName("web"), (Endpoint("10.0.0.1", 80, weight=3),
                                     Endpoint("10.0.0.2", 80, metadata=(("orca_port", "9100"),)),
                                     Endpoint("::1", 80))),
        Service(ServiceName("static"), (Endpoint("10.0.0.3", 80),))))
    policy = Policy(services=(
        ServicePolicy("web", load_balancer=LoadBalancerSpec(weights=WeightsMode.LOAD_AWARE, orca_port=9000)),
        ServicePolicy("static")), listeners=())
    found = load_aware_endpoints(catalog, policy)
    assert [(e.address, e.base_weight, e.orca) for e in found] == [
        ("10.0.0.1:80", 3, ("10.0.0.1", 9000)), ("10.0.0.2:80", 1, ("10.0.0.2", 9100)),
        ("[::1]:80", 1, ("::1", 9000))]
    assert endpoint_address(Endpoint("::1", 80)) == "[::1]:80"


SPLIT = """
version: 1
services:
  - name: web
    load_balancer: {weights: load_aware}
    endpoints:
      - {address: "10.0.0.1:80", metadata: {version: v1}}
      - {address: "10.0.0.2:80", metadata: {version: v1}, weight: 2}
      - {address: "10.0.0.3:80", metadata: {version: v2}}
  - name: plain
    endpoints: [{address: "10.0.0.1:80"}]
listeners:
  - name: edge
    port: 10000
    routes:
      - name: split
        backends:
          - {service: web, subset: {version: v1}, weight: 90}
          - {service: web, subset: {version: v2}, weight: 10}
          - {service: plain, weight: 0}
"""


def test_factors_act_inside_each_cluster_and_leave_splits_and_static_services_alone(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(SPLIT)
    catalog, policy = load_file(path)
    loads = LoadFactors({"web": {"10.0.0.1:80": 0.5}, "plain": {"10.0.0.1:80": 0.5}})
    desired = apply_policy(catalog, policy, group="edge", loads=loads)
    weights = {c.name: {endpoint_address(e): e.weight for e in c.endpoints} for c in desired.clusters}
    assert weights == {"web|version=v1": {"10.0.0.1:80": 50, "10.0.0.2:80": 200},
                       "web|version=v2": {"10.0.0.3:80": 100},
                       "plain": {"10.0.0.1:80": 1}}  # static: the catalog's weight, whatever the factors
    split = desired.route_configs[0].virtual_hosts[0].routes[0].backends
    assert [(b.cluster, b.weight) for b in split] == [("web|version=v1", 90), ("web|version=v2", 10),
                                                      ("plain", 0)]
