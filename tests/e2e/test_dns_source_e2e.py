"""The DNS SRV source against a real DNS server: the DNS interface of the real Consul agent the other tests
run (`<service>.service.consul` SRV records, with the registration's port and weight), on loopback.

The first test drives the source in-process (to read its status and every publish); the second runs the
control plane as a process with --dns-* flags, a real Envoy and real HTTP upstreams (docs/dns.md). The
last serves SRV priorities, which Consul cannot, from a loopback DnsZone (harness/dns_zone.py).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import UpstreamPool, free_port, run_requests, wait_until
from harness.consul import ConsulAgent, TtlCheck, Weights
from harness.controlplane import bootstrap_for
from harness.dns_zone import DnsZone
from harness.envoy import AdminError
from tests.backend_support import started
from tests.consul_fixtures import _CONSUL_AGENTS
from tests.source_helpers import RecordingSink, until
from xds.sources.dns import DnsConfig, DnsService, DnsSource

WEB = "web.service.consul"


@pytest.fixture
def consul_dns(request: pytest.FixtureRequest, tmp_path: Path, consul_binary: Path) -> Iterator[ConsulAgent]:
    """A fresh Consul dev agent with its DNS interface on a free loopback port (UDP and TCP)."""
    agent = ConsulAgent(tmp_path / "consul", binary=consul_binary, dns=True)
    with started(request, _CONSUL_AGENTS, agent):
        yield agent


def register(agent: ConsulAgent, service_id: str, port: int, weight: int) -> None:
    agent.register_service("web", service_id=service_id, address="127.0.0.1", port=port,
                           weights=Weights(passing=weight), check=TtlCheck())


async def test_source_follows_consul_dns_and_serves_the_last_endpoints_while_it_is_down(
        consul_dns: ConsulAgent) -> None:
    await asyncio.to_thread(register, consul_dns, "a", 9001, 5)
    await asyncio.to_thread(register, consul_dns, "b", 9002, 2)
    config = DnsConfig(servers=(("127.0.0.1", consul_dns.dns_port),), services=(DnsService("web", WEB),),
                       timeout_s=0.5, ttl_floor_s=0.2, ttl_ceiling_s=5.0, resync_grace_s=2.0, max_stale_s=1.0,
                       backoff_initial_s=0.1, backoff_max_s=0.3)
    source = DnsSource(config)
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    try:
        # Both instances, with the ports and the Consul weights the SRV records carry.
        await until(lambda: sink.endpoints("web") == {9001: 5, 9002: 2}, what="a and b published")
        # Consul's DNS leaves out an instance whose check is critical: b goes, and comes back when passing.
        await asyncio.to_thread(consul_dns.set_check, "service:b", "critical")
        await until(lambda: sink.endpoints("web") == {9001: 5}, what="critical b left out")
        await asyncio.to_thread(consul_dns.set_check, "service:b", "passing")
        await until(lambda: sink.endpoints("web") == {9001: 5, 9002: 2}, what="passing b back")
        # Deregistered: gone from the SRV answer, gone from the catalog.
        await asyncio.to_thread(consul_dns.deregister_service, "b")
        await until(lambda: sink.endpoints("web") == {9001: 5}, what="b removed")
        published = len(sink.updates)
        # A hung server (SIGSTOP: queries are received, never answered) times out: reported, nothing lost.
        consul_dns.pause()
        await until(lambda: any("no DNS server answered in time" in e for e in sink.errors),
                    what="timeout reported")
        assert source.status().failing_watches == 1 and sink.endpoints("web") == {9001: 5}
        consul_dns.resume()
        await until(lambda: source.status().failing_watches == 0, what="recovery from the pause")
        reported = len(sink.errors)
        # The server is gone: the last good endpoints stay, the outage is reported, then as stale.
        await asyncio.to_thread(consul_dns.stop)
        await until(lambda: any("serving the last state read from DNS" in e for e in sink.errors[reported:]),
                    what="outage reported")
        await until(lambda: any("has not answered for" in e for e in sink.errors[reported:]),
                    what="stale reported")
        status = source.status()
        assert status.failing_watches == 1 and status.outage_s >= 1.0 and status.last_error
        # Publishes since the deregistration only ever re-announced a (the recovery from the pause).
        assert all(u.catalog == sink.updates[published - 1].catalog for u in sink.updates[published:])
        assert sink.endpoints("web") == {9001: 5}
        # It comes back EMPTY (a dev agent keeps nothing): NXDOMAIN is held by the resync grace until
        # the instance is registered again, so the catalog never loses it.
        await asyncio.to_thread(consul_dns.start)
        await until(lambda: source.status().failing_watches == 0, what="recovery")
        assert source.status().resync_grace_remaining_s > 0 and sink.endpoints("web") == {9001: 5}
        await asyncio.to_thread(register, consul_dns, "a", 9001, 7)
        await until(lambda: sink.endpoints("web") == {9001: 7}, what="re-registered a")
        assert all(update.catalog.get("web") is not None for update in sink.updates)
        assert source.status().last_error == ""
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def ingress_to_web(workdir: Path, port: int) -> Path:
    """A policy file: listener `ingress` on 127.0.0.1:`port` routing everything to service web."""
    policy = workdir / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "services": [{"name": "web", "connect_timeout": "1s"}],
        "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": port,
                       "routes": [{"backends": [{"service": "web"}]}]}]}))
    return policy


def envoy_host_field(envoy: Any, cluster: str, field: str, default: int) -> dict[int, int]:
    """Port -> `field` (an integer, `default` when Envoy leaves it out) of every host Envoy holds for
    `cluster`."""
    for status in envoy.clusters_json().get("cluster_statuses", []):
        if status.get("name") == cluster:
            return {int(h["address"]["socket_address"]["port_value"]): int(h.get(field, default))
                    for h in status.get("host_statuses", [])}
    return {}


def envoy_hosts(envoy: Any, cluster: str) -> dict[int, int]:
    """Port -> load-balancing weight of every host Envoy holds for `cluster`."""
    return envoy_host_field(envoy, cluster, "weight", 1)


def stale_gauge(control_plane: Any, source: str) -> float | None:
    """`xds_source_stale` of `source` on the control plane's /metrics, None while it has no series."""
    prefix = f'xds_source_stale{{source="{source}"}} '
    for line in control_plane.metrics_text().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None


# The Envoy runs once over state-of-the-world and once over delta xDS (issue 11).
@pytest.mark.usefixtures("xds_mode")
def test_envoy_routes_by_srv_weights_and_keeps_serving_while_dns_is_down(
        consul_dns: ConsulAgent, upstreams: Callable[..., UpstreamPool], workdir: Path,
        control_plane_factory: Any, envoy_factory: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pool = upstreams("a", "b")
    register(consul_dns, "a", pool["a"].port, 3)
    register(consul_dns, "b", pool["b"].port, 1)
    port = free_port()
    policy = ingress_to_web(workdir, port)
    control_plane = control_plane_factory(policy, extra_args=(
        "--dns-server", f"127.0.0.1:{consul_dns.dns_port}", "--dns-service", f"web={WEB}",
        "--dns-ttl-floor", "0.2", "--dns-timeout", "0.5"))
    envoy = envoy_factory(lambda admin_port: bootstrap_for(
        "envoy-1", "edge", xds_port=control_plane.xds_port, admin_port=admin_port))
    both = {pool["a"].port: 3, pool["b"].port: 1}
    wait_until(lambda: envoy_hosts(envoy, "web") == both, timeout_s=15, ignore=(AdminError, OSError),
               message=lambda: f"Envoy hosts of web: {envoy_hosts(envoy, 'web')} != {both}")
    url = f"http://127.0.0.1:{port}/"
    result = run_requests(url, count=2000, concurrency=6)
    # Weighted round robin 3:1; +-6 points is far outside noise for 2000 requests.
    assert result.non_2xx == 0 and 0.69 <= result.share("a") <= 0.81, result.summary()
    # Registration and deregistration -> Envoy, 8 trials each: bounded by the TTL floor (0.2 s here; Consul
    # serves TTL 0) plus one publish and Envoy's update.
    only_a = {pool["a"].port: 3}
    added: list[float] = []
    removed: list[float] = []

    def timed(change: Callable[[], object], expected: dict[int, int]) -> float:
        started = time.monotonic()
        change()
        wait_until(lambda: envoy_hosts(envoy, "web") == expected, timeout_s=10, interval_s=0.01,
                   ignore=(AdminError, OSError),
                   message=lambda: f"Envoy hosts of web: {envoy_hosts(envoy, 'web')} != {expected}")
        return time.monotonic() - started

    for trial in range(8):
        removed.append(timed(lambda: consul_dns.deregister_service("b"), only_a))
        if trial < 7:
            added.append(timed(lambda: register(consul_dns, "b", pool["b"].port, 1), both))
    with capsys.disabled():
        print(f"\n[dns] Consul -> Envoy, TTL floor 0.2 s: registration p50 "
              f"{statistics.median(added) * 1000:.0f} ms, max {max(added) * 1000:.0f} ms "
              f"({len(added)} trials); "
              f"deregistration p50 {statistics.median(removed) * 1000:.0f} ms, "
              f"max {max(removed) * 1000:.0f} ms ({len(removed)} trials)")
    # DNS goes silent: the control plane reports the source stale, and a stays in Envoy and keeps answering.
    source = f"dns:127.0.0.1:{consul_dns.dns_port}"
    assert stale_gauge(control_plane, source) == 0
    consul_dns.stop()
    wait_until(lambda: stale_gauge(control_plane, source) == 1, timeout_s=10,
               message=lambda: f"{source} never reported stale:\n{control_plane.tail(20)}")
    registry = control_plane.status()["sources"][source]["registry"]
    assert registry["kind"] == "dns" and registry["synced"] and registry["failing_watches"] == 1, registry
    assert "serving the last state read from DNS" in registry["last_error"], registry
    for _ in range(3):
        result = run_requests(url, count=200, concurrency=4)
        assert result.non_2xx == 0 and result.failures == 0 and result.share("a") == 1.0, result.summary()
        assert envoy_hosts(envoy, "web") == {pool["a"].port: 3}
    assert envoy.update_rejected_total() == 0


def envoy_tiers(envoy: Any, cluster: str) -> dict[int, int]:
    """Port -> priority (failover tier) of every host Envoy holds for `cluster`."""
    return envoy_host_field(envoy, cluster, "priority", 0)


# Consul's DNS interface gives every record priority 1; a DnsZone (harness/dns_zone.py) serves several.
@pytest.mark.usefixtures("xds_mode")
def test_srv_priorities_become_envoy_failover_tiers(
        upstreams: Callable[..., UpstreamPool], workdir: Path, control_plane_factory: Any,
        envoy_factory: Any) -> None:
    pool = upstreams("primary", "backup")
    srv_name = "_http._tcp.web.test."
    with DnsZone(ttl=0) as zone:
        zone.set(srv_name, "SRV", [f"10 1 {pool['primary'].port} primary.test.",
                                   f"20 1 {pool['backup'].port} backup.test."])
        zone.set("primary.test.", "A", ["127.0.0.1"])
        zone.set("backup.test.", "A", ["127.0.0.1"])
        port = free_port()
        policy = ingress_to_web(workdir, port)
        control_plane = control_plane_factory(policy, extra_args=(
            "--dns-server", zone.address, "--dns-service", f"web={srv_name}", "--dns-ttl-floor", "0.2",
            "--dns-timeout", "0.5"))
        envoy = envoy_factory(lambda admin_port: bootstrap_for(
            "envoy-1", "edge", xds_port=control_plane.xds_port, admin_port=admin_port))
        tiers = {pool["primary"].port: 0, pool["backup"].port: 1}
        wait_until(lambda: envoy_tiers(envoy, "web") == tiers, timeout_s=15, ignore=(AdminError, OSError),
                   message=lambda: f"Envoy tiers of web: {envoy_tiers(envoy, 'web')} != {tiers}")
        url = f"http://127.0.0.1:{port}/"
        result = run_requests(url, count=300, concurrency=4)
        assert result.non_2xx == 0 and result.share("primary") == 1.0, result.summary()
        # The primary record goes: the backup is now the only tier, tier 0, and takes the traffic.
        zone.set(srv_name, "SRV", [f"20 1 {pool['backup'].port} backup.test."])
        wait_until(lambda: envoy_tiers(envoy, "web") == {pool["backup"].port: 0}, timeout_s=10,
                   ignore=(AdminError, OSError), message=lambda: f"tiers: {envoy_tiers(envoy, 'web')}")
        result = run_requests(url, count=300, concurrency=4)
        assert result.non_2xx == 0 and result.share("backup") == 1.0, result.summary()
        assert envoy.update_rejected_total() == 0
