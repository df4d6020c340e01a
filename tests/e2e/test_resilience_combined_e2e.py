"""Issue 8, section 3, the checks the per-feature e2e tests leave out: `maglev` session affinity (item 5) and
outlier detection together with a retry policy (item 1, "zero with a retry policy"), through the real control
plane, a real Envoy and the harness's upstreams (docs/config.md "Load balancer", "Hash policy",
"Outlier detection", "Retries")."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import UpstreamPool, run_requests, wait_until

from .stack import SESSION_KEYS, Stack, key_placement, start_stack
from .stack import assert_clean as _assert_clean
from .stack import route_has as _route_has

# Every test here runs against Envoy in state-of-the-world and in delta mode (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

CONSECUTIVE_5XX = 3
CONCURRENCY = 2  # Envoy's default circuit breaker allows 3 retries in flight per cluster (docs/config.md)


def _cluster_lb_policy(stack: Stack, name: str) -> str:
    for config in stack.envoy.config_dump().get("configs", []):
        for entry in config.get("dynamic_active_clusters", []):
            if entry["cluster"]["name"] == name:
                return str(entry["cluster"].get("lb_policy", "ROUND_ROBIN"))
    raise KeyError(name)




def test_maglev_header_affinity_and_minimal_disruption_on_removal(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    names = ("u1", "u2", "u3", "u4")
    pool = upstreams(*names)
    stack = start_stack(workdir=workdir, pool=pool, services={"web": [(n, {}) for n in names]},
                        backends=[("web", None, 100)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory, service_settings={"web": {"lb_policy": "maglev"}},
                        route_settings={"hash_policy": [{"header": "X-Session"}]})
    wait_until(lambda: _route_has(stack, "hash_policy"), timeout_s=10, message="no hash policy in Envoy")
    wait_until(lambda: len(stack.eds_ports("web")) == 4, timeout_s=10, message="Envoy never had 4 endpoints")
    assert _cluster_lb_policy(stack, "web") == "MAGLEV"

    before = key_placement(stack)
    per_upstream = {n: sum(1 for u in before.values() if u == n) for n in names}
    print(f"\nmaglev header affinity: 1000 requests, {SESSION_KEYS} keys, each on one upstream; keys per "
          f"upstream {per_upstream}")
    assert set(before.values()) == set(names), per_upstream

    # Remove u4 from the catalog: its keys must move, and maglev keeps almost all of the others in place.
    stack.catalog.services["web"] = [(n, {}) for n in names[:3]]
    stack.catalog.write()
    wait_until(lambda: stack.eds_ports("web") == {pool[n].port for n in names[:3]}, timeout_s=10,
               message="u4 never left Envoy's endpoints")
    after = key_placement(stack)
    held = {k for k, u in before.items() if u == "u4"}
    moved = {k for k in before if before[k] != after[k]}
    survivors_moved = moved - held
    keys, others = SESSION_KEYS, SESSION_KEYS - len(held)
    print(f"maglev, removing u4: it held {len(held)}/{keys} keys; {len(moved)}/{keys} moved; of the {others} "
          f"keys on the other upstreams {len(survivors_moved)} moved ({len(survivors_moved) / others:.0%}); "
          "modulo hashing would move about 75%")
    assert held <= moved, "every key u4 held must move"
    assert "u4" not in after.values()
    # Maglev rebuilds its lookup table (65537 entries by default) from each host's preference permutation;
    # a survivor keeps nearly all of its entries, but the greedy fill may hand it a few slots another
    # survivor held, so "only u4's keys move" is the design goal, not a guarantee. Measured over nine runs
    # (placement changes per run: Envoy hashes the host addresses, whose ports are free ports): 0 of 345
    # other keys moved. The bound allows 10% (3 or 4 of the 35-42 other keys): at a true per-key move rate
    # of 0.9% (the 95% upper limit of 0/345) exceeding it has a probability under 0.05%, while ring_hash in
    # tests/e2e/test_route_resilience_e2e.py measured 5-26% and modulo hashing would move ~75%.
    assert len(survivors_moved) <= 0.1 * others, (before, after)
    _assert_clean(stack)


def _ejected(stack: Stack, address: tuple[str, int]) -> bool:
    return "failed_outlier_check" in stack.envoy.host_status("web", address).flags


def test_outlier_detection_with_retries_ejects_without_a_client_visible_error(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    pool = upstreams("a", "b", "c")
    # A long ejection so that `a` stays out for the rest of the test; success-rate ejection off so only
    # consecutive_5xx can eject (docs/config.md "Outlier detection").
    service = {"web": {"outlier_detection": {"consecutive_5xx": CONSECUTIVE_5XX, "interval": "0.5s",
                                             "base_ejection_time": "30s", "max_ejection_percent": 50,
                                             "success_rate": False}}}
    retries = {"num_retries": 2, "retry_on": ["5xx"], "different_host": True}
    stack = start_stack(workdir=workdir, pool=pool, services={"web": [("a", {}), ("b", {}), ("c", {})]},
                        backends=[("web", None, 100)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory, service_settings=service,
                        route_settings={"retries": retries})
    wait_until(lambda: _route_has(stack, "retry_policy"), timeout_s=10, message="no retry policy in Envoy")
    wait_until(lambda: len(stack.eds_ports("web")) == 3, timeout_s=10, message="Envoy never had 3 endpoints")

    warm = run_requests(stack.url, count=30, concurrency=1)
    assert warm.by_status == {200: 30} and set(warm.by_upstream) == {"a", "b", "c"}, warm.summary()

    bad = pool["a"]
    hits_before = bad.hits
    bad.status = 503
    flipped = time.monotonic()
    statuses: dict[int | None, int] = {}
    errors: dict[str, int] = {}
    sent = 0
    ejected_after: float | None = None
    for _ in range(40):
        batch = run_requests(stack.url, count=6, concurrency=CONCURRENCY)
        sent += batch.total
        for status, n in batch.by_status.items():
            statuses[status] = statuses.get(status, 0) + n
        for error, n in batch.errors.items():
            errors[error] = errors.get(error, 0) + n
        if _ejected(stack, bad.address):
            ejected_after = time.monotonic() - flipped
            break
    failed_attempts = bad.hits - hits_before
    retried = stack.envoy.cluster_stat("web", "upstream_rq_retry")
    retry_ok = stack.envoy.cluster_stat("web", "upstream_rq_retry_success")
    print(f"\noutlier detection + retries: {sent} requests until `a` was ejected "
          f"({ejected_after if ejected_after is None else f'{ejected_after:.3f} s'} after it started "
          f"failing); client saw {statuses}, errors {errors}; `a` answered {failed_attempts} attempts with "
          f"503; Envoy retried {retried}, {retry_ok} retries succeeded")
    assert ejected_after is not None, f"never ejected; client saw {statuses}"
    assert statuses == {200: sent} and errors == {}, "a client saw an error while `a` was being ejected"
    # Ejected at the threshold; a request already in flight on the other connection may add one more.
    assert CONSECUTIVE_5XX <= failed_attempts <= CONSECUTIVE_5XX + CONCURRENCY - 1
    assert retried == retry_ok == failed_attempts
    assert stack.envoy.cluster_stat("web", "outlier_detection.ejections_enforced_consecutive_5xx") == 1
    assert stack.envoy.cluster_stat("web", "outlier_detection.ejections_active") == 1

    hits_ejected = bad.hits
    during = run_requests(stack.url, count=60, concurrency=CONCURRENCY)
    print(f"outlier detection + retries, after ejection: {during.summary()}")
    assert during.by_status == {200: 60} and set(during.by_upstream) == {"b", "c"}, during.summary()
    assert bad.hits == hits_ejected, "an ejected host got traffic"
    assert stack.envoy.cluster_stat("web", "upstream_rq_retry") == retried
    _assert_clean(stack)
