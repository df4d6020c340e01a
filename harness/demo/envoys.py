"""The demo's two Envoys: starting them, waiting until they serve, reading the web route they run."""

from __future__ import annotations

import http.client
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import LOOPBACK, EnvoyProcess, bootstrap_for, unique_base_id, wait_until
from harness.demo.catalog import Edge
from harness.demo.constants import ADMIN_POLL_TIMEOUT_S, REQUEST_TIMEOUT_S, STARTUP_TIMEOUT_S, WEB_ROUTE


@dataclass(frozen=True, slots=True)
class AppliedRoute:
    """What an Envoy runs for the web route: its RDS version and the weights in catalog order."""

    version: str
    weights: tuple[int, ...]


def applied_route(envoy: EnvoyProcess) -> AppliedRoute | None:
    """The web route from Envoy's config dump; None before Envoy has one."""
    dump = envoy.admin_json("/config_dump?resource=dynamic_route_configs", timeout_s=ADMIN_POLL_TIMEOUT_S)
    return find_web_route(dump)


def find_web_route(dump: Mapping[str, Any]) -> AppliedRoute | None:
    for entry in dump.get("configs", []):
        config = entry.get("route_config", {})
        for vhost in config.get("virtual_hosts", []):
            for route in vhost.get("routes", []):
                if route.get("name") != WEB_ROUTE:
                    continue
                action = route.get("route", {})
                clusters = action.get("weighted_clusters", {}).get("clusters", [])
                # proto3 JSON leaves out zero values; a cluster without `weight` has weight 0.
                weights = tuple(int(c.get("weight", 0)) for c in clusters) if clusters else (100,)
                return AppliedRoute(version=str(entry.get("version_info", "")), weights=weights)
    return None


def new_envoy(edge: Edge, *, xds_port: int, workdir: Path) -> EnvoyProcess:
    """An Envoy (not started yet) in node group `edge.group`, bootstrapped against the control plane."""
    # Admin on port 0: Envoy picks a free port and reports it, so there is no race to lose.
    bootstrap = bootstrap_for(edge.envoy, edge.group, xds_port=xds_port, admin_port=0)
    return EnvoyProcess(bootstrap, workdir=workdir, admin_port=0, base_id=unique_base_id(), name=edge.envoy)


def wait_serving(envoy: EnvoyProcess, edge: Edge) -> None:
    """Wait until the listener answers 200; its port comes from the catalog, so someone may hold it."""

    def serving() -> bool:
        envoy.process.check_alive()
        return http_status(edge.port, "/") == 200

    wait_until(serving, timeout_s=STARTUP_TIMEOUT_S, interval_s=0.1,
               ignore=(OSError, http.client.HTTPException),
               message=lambda: (f"{edge.envoy} does not serve {edge.url}/ (port {edge.port} taken by "
                                f"another process? run the demo again); see {envoy.app_log_path}"))


def http_status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
