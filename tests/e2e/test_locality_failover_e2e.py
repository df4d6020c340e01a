"""Issue 8, zone failover: `locality: {failover: true}` through the real control plane process and real
Envoys bootstrapped by `xds bootstrap --region/--zone`, in front of the harness's upstreams.

Zone a and zone b are in region r1, zone c in region r2. An Envoy in r1/a keeps its traffic in zone a;
when zone a fails traffic moves to zone b, then to region r2 when b fails too, and back as they recover.
A zone fails three ways: the registry marks it unhealthy (no request fails), Envoy's active health checks
fail it, or outlier detection ejects it (requests fail only until Envoy notices; each step prints how many
and bounds how long). A second Envoy of the same node group in r2/c gets zone c first: the control plane
serves one snapshot per (node group, locality) (docs/config.md "Locality failover")."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import UpstreamPool, free_port, run_requests, wait_until
from harness.controlplane import bootstrap_for
from harness.envoy import AdminError, EnvoyProcess

# Every test here runs against Envoy in state-of-the-world and in delta mode (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

ZONES = {"a": ("r1", "a"), "b": ("r1", "b"), "c": ("r2", "c")}
UPSTREAMS = ("a1", "a2", "b1", "b2", "c1", "c2")
_STARTED_LINE = "starting main dispatch loop"
# Envoy applies a cluster's first host health change at once and merges the next ones over this window
# (cluster.proto, CommonLbConfig.update_merge_window, default 1 s; we leave it unset). A zone's second host
# failing therefore moves the priority loads up to this much later: the failures of each step below.
MERGE_WINDOW_S = 1.0
# For a loaded machine (two shared cores).
SLACK_S = 1.5


@dataclass
class _Catalog:
    path: Path
    port: int
    pool: UpstreamPool
    settings: dict[str, Any]
    unhealthy: set[str] = field(default_factory=set)  # zones the registry marks unhealthy

    def write(self) -> None:
        endpoints = [{"address": f"127.0.0.1:{self.pool[name].port}",
                      "health": "unhealthy" if name[0] in self.unhealthy else "healthy",
                      "locality": {"region": ZONES[name[0]][0], "zone": name[0]}} for name in UPSTREAMS]
        document = {"version": 1,
                    "services": [{"name": "web", "connect_timeout": "1s", "locality": {"failover": True},
                                  **self.settings, "endpoints": endpoints}],
                    "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": self.port,
                                   "routes": [{"name": "all", "match": {"prefix": "/"},
                                               "backends": [{"service": "web"}]}]}]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(document, sort_keys=False))
        tmp.replace(self.path)


def _start(workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
           settings: dict[str, Any] | None = None) -> tuple[_Catalog, Any]:
    catalog = _Catalog(workdir / "catalog.yaml", free_port(), upstreams(*UPSTREAMS), settings or {})
    catalog.write()
    return catalog, control_plane_factory(catalog.path)


def _envoy(envoy_factory: Any, control_plane: Any, catalog: _Catalog, node_id: str,
           zone: str) -> EnvoyProcess:
    region, zone_name = ZONES[zone]
    envoy: EnvoyProcess = envoy_factory(lambda admin_port: bootstrap_for(
        node_id, "edge", xds_port=control_plane.xds_port, admin_port=admin_port, region=region,
        zone=zone_name))
    wait_until(lambda: envoy.listener_port("ingress") == catalog.port, timeout_s=15,
               message="Envoy never bound the ingress listener", ignore=(KeyError, AdminError))
    wait_until(lambda: len(envoy.cluster_hosts("web")) == len(UPSTREAMS), timeout_s=10,
               message="Envoy never had every endpoint", ignore=(KeyError, AdminError))
    return envoy


def _priorities(envoy: EnvoyProcess) -> dict[str, set[int]]:
    by_zone: dict[str, set[int]] = {}
    for host in envoy.cluster_hosts("web"):
        by_zone.setdefault(host.zone, set()).add(host.priority)
    return by_zone


def _zones(upstreams: dict[str, int]) -> set[str]:
    return {name[0] for name in upstreams}


def _hosts(envoy: EnvoyProcess) -> str:
    return "; ".join(f"{h.zone}:{h.port} p{h.priority} {h.eds_health} {sorted(h.flags)}"
                     for h in envoy.cluster_hosts("web"))


def _back(envoy: EnvoyProcess, zone: str) -> Callable[[], bool]:
    """True once Envoy's own checks pass every host of `zone` and the merge window has passed since: until
    then a half-healthy zone still spills part of its traffic to the next priority (overprovisioning)."""
    since: list[float] = []

    def back() -> bool:
        if not all(h.healthy for h in envoy.cluster_hosts("web") if h.zone == zone):
            since.clear()
            return False
        since[:] = since or [time.monotonic()]
        return time.monotonic() - since[0] >= MERGE_WINDOW_S

    return back


@dataclass(frozen=True)
class _Moved:
    failed: int  # requests that did not get a 200 while traffic moved
    last_failure_s: float  # when the last of them was answered, after the change; 0 without failures


def _move(envoy: EnvoyProcess, url: str, to: str, change: Callable[[], None], *, label: str,
          timeout_s: float = 15.0, settled: Callable[[], bool] = lambda: True) -> _Moved:
    """Apply `change`, send paced batches until one lands only in zone `to` (once `settled()`), then check
    that traffic stays there."""
    change()
    started = time.monotonic()
    failed = sent = 0
    last_failure_s = 0.0
    while True:
        batch = run_requests(url, count=10, concurrency=2, timeout_s=5)
        sent += batch.total
        if batch.ok < batch.total:
            failed += batch.total - batch.ok
            last_failure_s = time.monotonic() - started
        elif batch.total and _zones(batch.by_upstream) == {to} and settled():
            break
        assert time.monotonic() - started < timeout_s, (
            f"{label}: traffic never moved to zone {to}; Envoy's hosts: {_hosts(envoy)}; last batch "
            f"{batch.summary()}")
        time.sleep(0.02)  # about 300 requests a second, so the counts below say something about time
    print(f"{label}: traffic in zone {to} {time.monotonic() - started:.3f} s after the change; {failed} "
          f"failed of {sent} requests sent meanwhile, the last {last_failure_s:.3f} s after the change")
    steady = run_requests(url, count=60, concurrency=4, timeout_s=5)
    assert steady.ok == steady.total == 60 and _zones(steady.by_upstream) == {to}, steady.summary()
    return _Moved(failed, last_failure_s)


def _assert_clean(envoy: EnvoyProcess) -> None:
    envoy.wait_log_line(_STARTED_LINE)
    assert envoy.deprecation_warnings() == []
    assert envoy.update_rejected_total() == 0


def test_failover_follows_the_registry_and_each_proxy_gets_its_own_locality(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    catalog, control_plane = _start(workdir, upstreams, control_plane_factory)
    envoy_a = _envoy(envoy_factory, control_plane, catalog, "envoy-a", "a")
    url = f"http://127.0.0.1:{catalog.port}/"
    assert _priorities(envoy_a) == {"a": {0}, "b": {1}, "c": {2}}

    start = run_requests(url, count=100, concurrency=4, timeout_s=5)
    assert start.ok == start.total == 100 and set(start.by_upstream) == {"a1", "a2"}, start.summary()

    def mark(*zones: str) -> Callable[[], None]:
        def change() -> None:
            catalog.unhealthy = set(zones)
            catalog.write()
        return change

    # The registry drains a zone: its upstreams still answer, so Envoy moves traffic without an error.
    steps = [("zone a unhealthy", "b", mark("a")), ("zones a and b unhealthy", "c", mark("a", "b")),
             ("zone b recovered", "b", mark("a")), ("zone a recovered", "a", mark())]
    for label, to, change in steps:
        assert _move(envoy_a, url, to, change, label=f"registry: {label}").failed == 0
    _assert_clean(envoy_a)

    # A second proxy of the same node group, in region r2: zone c first, then region r1's two zones. The
    # first one stops first, as both would bind the same listener port.
    envoy_a.stop()
    envoy_c = _envoy(envoy_factory, control_plane, catalog, "envoy-c", "c")
    assert _priorities(envoy_c) == {"c": {0}, "a": {1}, "b": {1}}
    there = run_requests(url, count=100, concurrency=4, timeout_s=5)
    assert there.ok == there.total == 100 and set(there.by_upstream) == {"c1", "c2"}, there.summary()
    _assert_clean(envoy_c)


def test_failover_when_active_health_checks_fail_a_zone(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    """The registry still calls zone a healthy; Envoy's own health checks fail it (and it answers 503)."""
    interval_s = 0.5
    check = {"health_check": {"http": {"path": "/healthz"}, "interval": f"{interval_s}s", "timeout": "0.5s",
                              "unhealthy_threshold": 1, "healthy_threshold": 1,
                              # Envoy checks at this pace too before the cluster has seen traffic.
                              "no_traffic_interval": f"{interval_s}s"}}
    catalog, control_plane = _start(workdir, upstreams, control_plane_factory, check)
    envoy = _envoy(envoy_factory, control_plane, catalog, "envoy-a", "a")
    url = f"http://127.0.0.1:{catalog.port}/"
    wait_until(lambda: all(h.healthy for h in envoy.cluster_hosts("web")), timeout_s=10,
               message="the endpoints never passed their first health checks")
    pool = catalog.pool

    def fail(*names: str, status: int) -> Callable[[], None]:
        def change() -> None:
            for name in names:
                pool[name].health_status = status
                pool[name].status = status
        return change

    steps = [("zone a failing", "b", fail("a1", "a2", status=503)),
             ("zones a and b failing", "c", fail("b1", "b2", status=503)),
             ("zone b healthy", "b", fail("b1", "b2", status=200)),
             ("zone a healthy", "a", fail("a1", "a2", status=200))]
    for label, to, change in steps:
        moved = _move(envoy, url, to, change, label=f"health checks: {label}",
                      settled=_back(envoy, to) if "healthy" in label else lambda: True)
        # Requests fail until a check fails each of the zone's hosts (one failed check suffices) and the
        # merge window has passed (measured: about 1.5 s). A recovery costs nothing: the healthy zone keeps
        # serving until the recovered one passes its checks.
        assert moved.last_failure_s <= interval_s + MERGE_WINDOW_S + SLACK_S, moved
        if "healthy" in label:
            assert moved.failed == 0, moved
    _assert_clean(envoy)


def test_failover_when_outlier_detection_ejects_a_zone(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    """The registry still calls every zone healthy; zone a's upstreams answer 503 and Envoy ejects them."""
    consecutive, ejection_s = 3, 5.0
    detection = {"outlier_detection": {
        "consecutive_5xx": consecutive, "interval": "0.5s", "base_ejection_time": f"{ejection_s:g}s",
        # Envoy's default (10%) would eject one host of six at a time: a whole zone has to go.
        "max_ejection_percent": 100, "success_rate": False}}
    catalog, control_plane = _start(workdir, upstreams, control_plane_factory, detection)
    envoy = _envoy(envoy_factory, control_plane, catalog, "envoy-a", "a")
    url = f"http://127.0.0.1:{catalog.port}/"
    pool = catalog.pool

    def answer(*names: str, status: int) -> Callable[[], None]:
        def change() -> None:
            for name in names:
                pool[name].status = status
        return change

    # Each failing host is ejected after `consecutive` 503s in a row, and /clusters flags it at once; the
    # zone's second host keeps its share of traffic until the merge window has passed (measured: about
    # 1 s). The counts follow the request rate (about 300 a second) and are printed.
    for label, to, change in [("zone a failing", "b", answer("a1", "a2", status=503)),
                              ("zones a and b failing", "c", answer("b1", "b2", status=503))]:
        moved = _move(envoy, url, to, change, label=f"outlier detection: {label}")
        assert moved.last_failure_s <= MERGE_WINDOW_S + SLACK_S, moved
    ejected = {h.zone for h in envoy.cluster_hosts("web") if "failed_outlier_check" in h.flags}
    assert ejected == {"a", "b"}
    # Both zones heal; Envoy re-admits a host at the first interval after its ejection time, zone a's
    # first (they were ejected first), so traffic returns to zone a without a failure.
    moved = _move(envoy, url, "a", answer("a1", "a2", "b1", "b2", status=200),
                  label="outlier detection: zones a and b healthy", timeout_s=ejection_s + 10,
                  settled=_back(envoy, "a"))
    assert moved.failed == 0, moved
    assert envoy.cluster_stat("web", "outlier_detection.ejections_enforced_consecutive_5xx") == 4
    _assert_clean(envoy)


def _active_cluster(envoy: EnvoyProcess) -> dict[str, Any]:
    for config in envoy.config_dump().get("configs", []):
        for entry in config.get("dynamic_active_clusters", []):
            if entry["cluster"]["name"] == "web":
                cluster: dict[str, Any] = entry["cluster"]
                return cluster
    raise KeyError("web")


def _lb_config(envoy: EnvoyProcess) -> dict[str, Any]:
    config: dict[str, Any] = _active_cluster(envoy).get("common_lb_config", {})
    return config


def _shares(url: str, count: int) -> dict[str, float]:
    result = run_requests(url, count=count, concurrency=4, timeout_s=5)
    assert result.ok == result.total == count, result.summary()
    by_zone: dict[str, int] = {}
    for name, hits in result.by_upstream.items():
        by_zone[name[0]] = by_zone.get(name[0], 0) + hits
    return {zone: round(100 * hits / count, 1) for zone, hits in sorted(by_zone.items())}


def test_locality_weights_split_traffic_between_zones_whatever_their_size(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    """`locality.weights`: two endpoints in each of zones a, b and c. Without weights each zone gets a
    third of the traffic; with 70/20/10 they get that, within a few points over 1000 requests, and an edit
    to 10/10/80 moves it (docs/config.md "Locality failover")."""
    count, tolerance = 1000, 5.0
    catalog, control_plane = _start(workdir, upstreams, control_plane_factory, {"locality": {}})
    envoy = _envoy(envoy_factory, control_plane, catalog, "envoy-a", "a")
    url = f"http://127.0.0.1:{catalog.port}/"
    plain = _shares(url, count)
    print(f"\nlocality weights: none -> zone shares {plain} (%)")
    assert all(abs(share - 100 / 3) <= 2 * tolerance for share in plain.values()), plain

    for weights in ({"a": 70, "b": 20, "c": 10}, {"a": 10, "b": 10, "c": 80}):
        catalog.settings = {"locality": {"weights": [
            {"region": "r1", "zone": "a", "weight": weights["a"]}, {"zone": "b", "weight": weights["b"]},
            {"region": "r2", "weight": weights["c"]}]}}
        catalog.write()
        wait_until(lambda: "locality_weighted_lb_config" in _lb_config(envoy),
                   timeout_s=10, message="Envoy never got the locality-weighted cluster")

        def followed(expected: dict[str, int] = weights) -> bool:
            # Worker threads take the new cluster shortly after the config dump shows it.
            probe = _shares(url, 100)
            return all(abs(probe.get(zone, 0.0) - share) <= 3 * tolerance for zone, share in expected.items())

        wait_until(followed, timeout_s=10, message=f"traffic never followed the weights {weights}")
        shares = _shares(url, count)
        print(f"locality weights: {weights} -> zone shares {shares} (%) over {count} requests")
        assert all(abs(shares.get(zone, 0.0) - share) <= tolerance for zone, share in weights.items()), shares
    _assert_clean(envoy)
