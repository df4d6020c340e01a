"""A control plane, one real Envoy and real upstreams on loopback, driven by editing the catalog file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import ControlPlaneProcess, EnvoyProcess, UpstreamPool, free_port, run_requests, wait_until
from harness.controlplane import bootstrap_for
from harness.envoy import AdminError

Backend = tuple[str, Mapping[str, str] | None, int]  # (service, subset, weight)


@dataclass
class Catalog:
    """The catalog file a test edits. `services`: name -> [(upstream name, metadata)]."""

    path: Path
    listener_port: int
    pool: UpstreamPool
    services: dict[str, list[tuple[str, dict[str, str]]]] = field(default_factory=dict)
    backends: list[Backend] = field(default_factory=list)
    extra_listeners: list[dict[str, Any]] = field(default_factory=list)
    # Issue 8: policy keys merged into a service's entry (`lb_policy`, `outlier_detection`,
    # `circuit_breakers`, `health_check`) and into the catch-all route (`retries`, `hash_policy`, `fault`),
    # and routes tried before it.
    service_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    route_settings: dict[str, Any] = field(default_factory=dict)
    extra_routes: list[dict[str, Any]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {
            "version": 1,
            "services": [
                {"name": name, "connect_timeout": "1s", **self.service_settings.get(name, {}),
                 "endpoints": [{"address": f"127.0.0.1:{self.pool[up].port}", "metadata": meta}
                               for up, meta in endpoints]}
                for name, endpoints in sorted(self.services.items())
            ],
            "listeners": [{
                "name": "ingress", "address": "127.0.0.1", "port": self.listener_port,
                "routes": [*self.extra_routes, {
                    "name": "all", "match": {"prefix": "/"}, **self.route_settings,
                    "backends": [{"service": s, **({"subset": dict(sub)} if sub else {}), "weight": w}
                                 for s, sub, w in self.backends]}],
            }, *self.extra_listeners],
        }

    def write(self) -> float:
        """Atomically replace the file, as editors and config management do; returns the write time."""
        self.write_text(yaml.safe_dump(self.document(), sort_keys=False))
        return time.monotonic()

    def write_text(self, text: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)


@dataclass
class Stack:
    catalog: Catalog
    control_plane: ControlPlaneProcess
    envoy: EnvoyProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.catalog.listener_port}/"

    def eds_ports(self, cluster: str) -> set[int]:
        """Ports of the endpoints Envoy holds for `cluster`."""
        ports: set[int] = set()
        for status in self.envoy.clusters_json().get("cluster_statuses", []):
            if status.get("name") != cluster:
                continue
            for host in status.get("host_statuses", []):
                ports.add(int(host["address"]["socket_address"]["port_value"]))
        return ports

    def wait_weights(self, expected: Mapping[str, int], timeout_s: float = 10.0) -> float:
        start = time.monotonic()
        wait_until(lambda: self.envoy.route_weights() == dict(expected), timeout_s=timeout_s,
                   message=lambda: f"Envoy route weights {self.envoy.route_weights()} != {dict(expected)}")
        return time.monotonic() - start

    def status_text(self) -> str:
        result = subprocess.run([sys.executable, "-m", "xds", "status", "--management-address",
                                 self.control_plane.management_address], capture_output=True, text=True,
                                timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def admin_status(self) -> dict[str, Any]:
        return self.control_plane.status()


def start_stack(*, workdir: Path, pool: UpstreamPool, services: dict[str, list[tuple[str, dict[str, str]]]],
                backends: Sequence[Backend], control_plane_factory: Any, envoy_factory: Any,
                node_id: str = "envoy-1", cluster: str = "edge",
                service_settings: dict[str, dict[str, Any]] | None = None,
                route_settings: dict[str, Any] | None = None,
                extra_routes: Sequence[dict[str, Any]] = ()) -> Stack:
    catalog = Catalog(path=workdir / "catalog.yaml", listener_port=free_port(), pool=pool,
                      services=services, backends=list(backends),
                      service_settings=dict(service_settings or {}),
                      route_settings=dict(route_settings or {}), extra_routes=list(extra_routes))
    catalog.write()
    # XDS_E2E_LOG_LEVEL=DEBUG logs every request and response of the control plane in its log file.
    control_plane = control_plane_factory(
        catalog.path, extra_args=("--log-level", os.environ.get("XDS_E2E_LOG_LEVEL", "INFO")))
    envoy = envoy_factory(lambda admin_port: bootstrap_for(node_id, cluster, xds_port=control_plane.xds_port,
                                                           admin_port=admin_port))
    stack = Stack(catalog=catalog, control_plane=control_plane, envoy=envoy)
    wait_until(lambda: stack.envoy.listener_port("ingress") == catalog.listener_port, timeout_s=15,
               message="Envoy never bound the ingress listener", ignore=(KeyError, AdminError))
    return stack


# Envoy's log line once it serves; Envoy flushes its log every 100 ms (harness/envoy.py), so a few flushes
# are waited for before it is read.
ENVOY_STARTED_LINE = "starting main dispatch loop"
LOG_FLUSH_S = 0.5


def assert_clean(stack: Stack) -> None:
    """Nothing the control plane sent was rejected or used a deprecated field (issue 8, section 3)."""
    stack.envoy.wait_log_line(ENVOY_STARTED_LINE)
    time.sleep(LOG_FLUSH_S)
    assert stack.envoy.deprecation_warnings() == []
    assert stack.envoy.update_rejected_total() == 0
    assert "NACKED" not in stack.status_text()


def route_has(stack: Stack, key: str) -> bool:
    """Envoy's route `all` carries `key` in its RouteAction (the policy arrived over RDS)."""
    for config in stack.envoy.config_dump()["configs"]:
        for dynamic in config.get("dynamic_route_configs", []):
            for vhost in dynamic["route_config"].get("virtual_hosts", []):
                for route in vhost.get("routes", []):
                    if route.get("name") == "all" and key in route.get("route", {}):
                        return True
    return False


# Session-affinity tests (issue 8): requests carry one of SESSION_KEYS values of an `x-session` header.
SESSION_KEYS = 50


def session_key(i: int) -> str:
    return f"user-{i % SESSION_KEYS}"


def key_placement(stack: Stack, count: int = 1000) -> dict[str, str]:
    """Which upstream each session key lands on; asserts that each key lands on exactly one."""
    result = run_requests(stack.url, count=count, concurrency=4,
                          request_headers=lambda i: {"x-session": session_key(i)})
    assert result.total == count and result.failures == 0 and result.non_2xx == 0, result.summary()
    by_key = result.upstreams_by_key(session_key)
    assert len(by_key) == SESSION_KEYS
    spread = {k: v for k, v in by_key.items() if len(v) != 1}
    assert spread == {}, f"keys answered by more than one upstream: {spread}"
    return {key: next(iter(counts)) for key, counts in by_key.items()}
