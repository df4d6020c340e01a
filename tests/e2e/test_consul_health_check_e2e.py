"""Issue 8, test 2 with a real Consul: an instance's `/healthz` starts failing while Consul still reports it
passing, and Envoy's own active health check (a `health_check` policy read from Consul KV, same schema as
files: docs/consul.md "Policies from KV", docs/config.md "Health checks") takes it out of rotation within
about interval x unhealthy_threshold, then puts it back once it heals. The file-catalog twin is
tests/e2e/test_service_resilience_e2e.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from harness import HEALTH_PATH, SteadyLoad, UpstreamPool, free_port, run_requests, wait_until
from harness.consul import ConsulBackend, TtlCheck
from harness.controlplane import bootstrap_for
from harness.envoy import AdminError, EnvoyProcess

# Every Envoy here runs once over state-of-the-world and once over delta xDS (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

KV_PREFIX = "xds/policies/"
KV_KEY = KV_PREFIX + "edge"
INTERVAL_S = 0.3
UNHEALTHY_THRESHOLD = 2
# docs/config.md ("Health checks"): a status outside expected_statuses fails the endpoint at once, so a 503
# is seen within one interval; interval x threshold is the documented upper bound asserted here. Slack: the
# check in flight when /healthz flips, Envoy handing the new host set to its worker threads, and this test's
# polling, on two shared cores.
SLACK_S = 1.5
DETECTION_BOUND_S = INTERVAL_S * UNHEALTHY_THRESHOLD + SLACK_S
RATE_PER_S = 60.0
# Envoy logs this once its bootstrap is loaded; deprecation warnings for dynamic resources come after it.
_STARTED_LINE = "starting main dispatch loop"


def _policy(port: int) -> str:
    return yaml.safe_dump({
        "services": [{
            "name": "web", "connect_timeout": "1s",
            "health_check": {"http": {"path": HEALTH_PATH}, "interval": f"{int(INTERVAL_S * 1000)}ms",
                             "timeout": "1s", "unhealthy_threshold": UNHEALTHY_THRESHOLD,
                             "healthy_threshold": 1, "no_traffic_interval": f"{int(INTERVAL_S * 1000)}ms"},
        }],
        "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": port,
                       "routes": [{"name": "all", "match": {"prefix": "/"},
                                   "backends": [{"service": "web", "weight": 100}]}]}],
    }, sort_keys=False)


def _failed_check(envoy: EnvoyProcess, address: tuple[str, int]) -> bool:
    return "failed_active_health_check" in envoy.host_status("web", address).flags


def _consul_statuses(consul: ConsulBackend, service_id: str) -> list[str]:
    """Status of the instance's own checks (the node's serfHealth left out; empty: no checks, which Consul
    counts as passing)."""
    for entry in consul.health_service("web"):
        if entry["Service"]["ID"] == service_id:
            checks = entry.get("Checks", [])
            return [check["Status"] for check in checks if check.get("ServiceID") == service_id]
    raise AssertionError(f"{service_id} is not in Consul's health API")


def test_envoy_health_check_from_kv_takes_out_an_instance_consul_reports_passing(
        consul_agent: ConsulBackend, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pool = upstreams("a", "b", "c")
    port = free_port()
    consul_agent.kv_put(KV_KEY, _policy(port))
    # a and b carry a passing TTL check nobody will turn critical; c has no check at all (also healthy).
    for name in ("a", "b"):
        consul_agent.register_service("web", service_id=name, address="127.0.0.1", port=pool[name].port,
                                      check=TtlCheck())
    consul_agent.register_service("web", service_id="c", address="127.0.0.1", port=pool["c"].port)
    control_plane = control_plane_factory(None, extra_args=(
        "--consul-address", consul_agent.url, "--consul-kv-prefix", KV_PREFIX))
    envoy: EnvoyProcess = envoy_factory(lambda admin_port: bootstrap_for(
        "envoy-1", "edge", xds_port=control_plane.xds_port, admin_port=admin_port))
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: envoy.listener_port("ingress") == port, timeout_s=15,
               message="Envoy never bound the ingress listener", ignore=(KeyError, AdminError))
    wait_until(lambda: [h.healthy for h in envoy.cluster_hosts("web")] == [True] * 3, timeout_s=15,
               message=lambda: f"hosts never all healthy: {envoy.cluster_hosts('web')}",
               ignore=(KeyError, AdminError, OSError))
    warm = run_requests(url, count=30, concurrency=1)
    assert warm.by_status == {200: 30} and set(warm.by_upstream) == {"a", "b", "c"}, warm.summary()
    sick = pool["a"]
    assert sick.health_checks > 0, "Envoy never probed /healthz: the KV health_check did not apply"

    with SteadyLoad(url, rate_per_s=RATE_PER_S, concurrency=2, max_duration_s=45) as load:
        time.sleep(1.0)
        # The instance breaks for real (its traffic fails too, so errors are client-visible) while its
        # Consul check stays passing: only Envoy's own probe of /healthz can notice.
        sick.health_status = 503
        sick.status = 503
        flipped = time.monotonic()
        wait_until(lambda: _failed_check(envoy, sick.address), timeout_s=10, interval_s=0.01,
                   message="Envoy never failed the instance's health check", ignore=(AdminError, OSError))
        detected_s = time.monotonic() - flipped
        assert envoy.host_status("web", sick.address).eds_health == "HEALTHY"
        assert _consul_statuses(consul_agent, "a") == ["passing"]
        # Let the outage run past the bound, so a late request to `a` would be seen.
        time.sleep(DETECTION_BOUND_S + 1.0)
        out_hits = sick.hits
        time.sleep(1.0)
        assert sick.hits == out_hits, "traffic still reached the instance after it was taken out"

        sick.status = 200
        sick.health_status = 200
        healed = time.monotonic()
        wait_until(lambda: envoy.host_status("web", sick.address).healthy, timeout_s=10, interval_s=0.01,
                   message="the instance never passed its health check again", ignore=(AdminError, OSError))
        recovered_s = time.monotonic() - healed
        wait_until(lambda: sick.hits > out_hits, timeout_s=10,
                   message="no traffic reached the instance again")
        back_s = time.monotonic() - healed
        time.sleep(1.0)
        result = load.stop()

    flip_at = flipped - load.origin
    heal_at = healed - load.origin
    errors = [s for s in result.samples if s.status != 200]
    last_error = max((s.started_s - flip_at for s in errors), default=None)
    last = "none" if last_error is None else f"last one sent {last_error:.3f} s after the flip"
    after_heal = [s for s in result.samples if s.started_s >= heal_at]
    with capsys.disabled():
        print(f"\n[consul] /healthz 503 while Consul says passing: Envoy failed the check {detected_s:.3f} s "
              f"after the flip (interval {INTERVAL_S:g} s x threshold {UNHEALTHY_THRESHOLD}); "
              f"{len(errors)} client-visible errors of {result.total} requests at {RATE_PER_S:g}/s ({last}); "
              f"healed: healthy after {recovered_s:.3f} s, traffic "
              f"back after {back_s:.3f} s, {sum(1 for s in after_heal if s.status != 200)} errors after heal")
    assert detected_s <= DETECTION_BOUND_S
    # Every error is the broken instance answering (no resets, no Envoy-made 503 for lack of hosts), sent
    # after the flip and before the bound; their number is bounded by that window's share of the load.
    assert all(s.status == 503 and s.upstream == "a" for s in errors), [(s.status, s.error) for s in errors]
    assert all(-0.1 <= s.started_s - flip_at <= DETECTION_BOUND_S for s in errors), last_error
    assert len(errors) <= RATE_PER_S * DETECTION_BOUND_S
    assert after_heal and all(s.status == 200 for s in after_heal), result.summary()
    assert envoy.cluster_stat("web", "health_check.failure") >= 1
    assert _consul_statuses(consul_agent, "a") == ["passing"] and _consul_statuses(consul_agent, "c") == []
    envoy.wait_log_line(_STARTED_LINE)
    assert envoy.deprecation_warnings() == []
    assert envoy.update_rejected_total() == 0
