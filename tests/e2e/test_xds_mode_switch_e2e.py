"""A live fleet moves from state-of-the-world to delta xDS one Envoy at a time, with zero failed requests
(issue 11, item 2; docs/protocol.md R28-R30).

Three Envoys, each in its own node group with its own ingress listener, serve steady traffic. One by one each
is taken out of rotation (its load stops, as a load balancer drains it), restarted with a delta bootstrap
(`xds bootstrap --delta`), and put back once it serves. Halfway through, a catalog edit reaches the SotW and
the delta Envoys alike. Every request of every phase must succeed, and the server must end with every proxy
on `DeltaAggregatedResources`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from harness import LoadResult, SteadyLoad, UpstreamPool, free_port, wait_until
from harness.controlplane import ControlPlaneProcess, bootstrap_for
from harness.envoy import AdminError, EnvoyProcess

from .stack import Catalog

FLEET = 3


def _write(catalog: Catalog, ports: list[int]) -> None:
    document = catalog.document()
    ingress = document["listeners"][0]
    listeners = []
    for i, port in enumerate(ports, start=1):
        # One listener per node group, so each Envoy has a port of its own to drain and restart.
        listeners.append({**ingress, "name": f"ingress-{i}", "port": port, "groups": [f"edge-{i}"]})
    document["listeners"] = listeners
    catalog.write_text(yaml.safe_dump(document, sort_keys=False))


def _start_envoy(envoy_factory: Any, control_plane: ControlPlaneProcess, i: int, port: int, *, mode: str,
                 hosts: int) -> EnvoyProcess:
    envoy: EnvoyProcess = envoy_factory(lambda admin_port: bootstrap_for(
        f"envoy-{i}", f"edge-{i}", xds_port=control_plane.xds_port, admin_port=admin_port, mode=mode))
    wait_until(lambda: envoy.listener_port(f"ingress-{i}") == port, timeout_s=15,
               message=f"envoy-{i} ({mode}) never bound its listener", ignore=(KeyError, AdminError))
    wait_until(lambda: len(envoy.cluster_hosts("web")) == hosts, timeout_s=10,
               message=f"envoy-{i} ({mode}) never had its {hosts} endpoints", ignore=(KeyError, AdminError))
    return envoy


def _load(url: str) -> SteadyLoad:
    load = SteadyLoad(url, rate_per_s=60, concurrency=3, max_duration_s=120)
    load.start()
    return load


def _methods(control_plane: ControlPlaneProcess) -> dict[str, str]:
    """Node id -> the METHOD column of `xds status` (ListProxies), one row per stream."""
    result = subprocess.run([sys.executable, "-m", "xds", "status", "--management-address",
                             control_plane.management_address], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    # The ENVOY column (a version, no spaces) comes last, METHOD before it.
    return {line.split()[0]: line.split()[-2] for line in result.stdout.splitlines()
            if line.startswith("envoy-")}


def test_fleet_switches_from_sotw_to_delta_one_envoy_at_a_time_with_zero_errors(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    pool = upstreams("a", "b", "c")
    catalog = Catalog(path=workdir / "catalog.yaml", listener_port=0, pool=pool,
                      services={"web": [("a", {}), ("b", {})]}, backends=[("web", None, 100)])
    ports = [free_port() for _ in range(FLEET)]
    _write(catalog, ports)
    control_plane = control_plane_factory(catalog.path)
    envoys = [_start_envoy(envoy_factory, control_plane, i, port, mode="sotw", hosts=2)
              for i, port in enumerate(ports, start=1)]
    urls = [f"http://127.0.0.1:{port}/" for port in ports]
    loads = [_load(url) for url in urls]
    results: list[LoadResult] = []
    hosts = 2
    assert _methods(control_plane) == {f"envoy-{i}": "ADS" for i in range(1, FLEET + 1)}
    started = time.monotonic()
    for index in range(FLEET):
        time.sleep(0.5)  # let every Envoy serve a while in the mixed fleet
        results.append(loads[index].stop())  # out of rotation: drained before it stops
        envoys[index].stop()
        envoys[index] = _start_envoy(envoy_factory, control_plane, index + 1, ports[index], mode="delta",
                                     hosts=hosts)
        loads[index] = _load(urls[index])
        if index == 0:
            # An edit while the fleet runs both protocols: both kinds of stream get it.
            catalog.services = {"web": [("a", {}), ("b", {}), ("c", {})]}
            _write(catalog, ports)
            hosts = 3
            for envoy in envoys:
                wait_until(lambda e=envoy: len(e.cluster_hosts("web")) == 3, timeout_s=10,
                           message="an Envoy never got the new endpoint", ignore=(KeyError, AdminError))
    time.sleep(0.5)
    results.extend(load.stop() for load in loads)
    print(f"mode switch of {FLEET} Envoys took {time.monotonic() - started:.1f} s; "
          + "; ".join(r.summary() for r in results))
    for result in results:
        assert result.total > 0
        assert result.non_2xx == 0 and result.failures == 0, result.summary()
    assert sum(r.by_upstream.get("c", 0) for r in results) > 0
    wait_until(lambda: _methods(control_plane) == {f"envoy-{i}": "ADS-DELTA" for i in range(1, FLEET + 1)},
               timeout_s=10, message=lambda: f"proxies' methods: {_methods(control_plane)}")
    for envoy in envoys:
        assert envoy.update_rejected_total() == 0
