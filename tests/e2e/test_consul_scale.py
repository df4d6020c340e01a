"""The Consul source past Consul's per-client connection limit (issue 13 section 4), against the real agent:
300 services (more than the agent's default `limits.http_max_conns_per_client`, 200) sync through a bounded
pool of connections, and a health flip of one of them reaches Envoy."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import yaml

from harness import free_port, wait_until
from harness.consul import ConsulBackend, TtlCheck
from harness.controlplane import bootstrap_for
from harness.envoy import AdminError
from harness.sockets import established_connections
from xds.sources.consul.client import DEFAULT_MAX_CONNECTIONS

SERVICES = 300
CONSUL_DEFAULT_LIMIT = 200


def name(i: int) -> str:
    return f"svc-{i:03d}"


def test_300_services_sync_with_bounded_connections_and_a_flip_converges(
        consul_agent: ConsulBackend, control_plane_factory: Any, envoy_factory: Any) -> None:
    def register(i: int) -> None:
        consul_agent.register_service(name(i), service_id=f"{name(i)}-1", address="127.0.0.1",
                                      port=20000 + i, check=TtlCheck())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(register, range(SERVICES)))
    watched = [name(0), name(150), name(299)]
    consul_agent.kv_put("xds/policies/scale", yaml.safe_dump({
        "services": [{"name": s} for s in watched],
        "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": free_port(),
                       "routes": [{"name": s, "match": {"prefix": f"/{s}"}, "backends": [{"service": s}]}
                                  for s in watched]}]}))
    control_plane = control_plane_factory(None, extra_args=(
        "--consul-address", consul_agent.url, "--consul-kv-prefix", "xds/policies/"))
    envoy = envoy_factory(lambda admin_port: bootstrap_for(
        "envoy-1", "edge", xds_port=control_plane.xds_port, admin_port=admin_port))

    def healthy(service: str) -> int:
        value = envoy.stat(f"cluster.{service}.membership_healthy")
        assert isinstance(value, int)
        return value

    wait_until(lambda: all(healthy(s) == 1 for s in watched), timeout_s=15, interval_s=0.05,
               message="Envoy never got a healthy host in every watched cluster",
               ignore=(KeyError, AdminError))
    pid = control_plane.process.pid
    assert pid is not None
    connections = established_connections(pid, consul_agent.http_port)
    assert 2 <= connections <= DEFAULT_MAX_CONNECTIONS < CONSUL_DEFAULT_LIMIT, connections

    started = time.monotonic()
    consul_agent.set_check(f"service:{name(150)}-1", "critical")
    wait_until(lambda: healthy(name(150)) == 0, timeout_s=10, interval_s=0.01,
               message="Envoy never saw the critical check", ignore=(KeyError, AdminError))
    flip_s = time.monotonic() - started
    assert healthy(name(0)) == 1 and healthy(name(299)) == 1
    assert established_connections(pid, consul_agent.http_port) <= DEFAULT_MAX_CONNECTIONS
    print(f"\n[consul scale] {SERVICES} services: {connections} connections to Consul, flip -> Envoy "
          f"{flip_s * 1000:.0f} ms")
