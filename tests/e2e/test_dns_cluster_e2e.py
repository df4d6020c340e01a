"""Host-name endpoints end to end (issue 13, docs/dns.md): a file catalog names a real upstream as
`localhost:<port>`, the control plane makes it a DNS cluster, and the real Envoy resolves the name with its
own resolver and carries traffic to it, as STRICT_DNS and then as LOGICAL_DNS. A name that does not resolve
gives its route no traffic while the other services, and the control plane, carry on."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import EnvoyProcess, UpstreamPool, free_port, run_requests, wait_until
from harness.controlplane import bootstrap_for
from harness.envoy import AdminError

pytestmark = pytest.mark.usefixtures("xds_mode")

DNS_EXTENSION_TYPE = "type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster"
UNRESOLVABLE = "no-such-host.invalid"  # RFC 6761 section 6.4: never resolves


@dataclass
class DnsCatalog:
    path: Path
    listener_port: int
    services: dict[str, dict[str, Any]]

    def write(self) -> None:
        routes = [{"name": name, "match": {"prefix": f"/{name}"}, "backends": [{"service": name}]}
                  for name in sorted(self.services)]
        document = {
            "version": 1,
            "services": [{"name": name, "connect_timeout": "1s", **entry}
                         for name, entry in sorted(self.services.items())],
            "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": self.listener_port,
                           "routes": routes}],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(document, sort_keys=False))
        os.replace(tmp, self.path)  # atomically, as editors and config management do


def _dynamic_cluster(envoy: EnvoyProcess, name: str) -> dict[str, Any] | None:
    for config in envoy.config_dump()["configs"]:
        for key in ("dynamic_active_clusters", "dynamic_warming_clusters"):
            for entry in config.get(key, []):
                if entry["cluster"]["name"] == name:
                    cluster: dict[str, Any] = entry["cluster"]
                    return cluster
    return None


def _dns_config(envoy: EnvoyProcess, name: str) -> dict[str, Any] | None:
    """The DnsCluster config of Envoy's active cluster `name`, None while it has none."""
    cluster = _dynamic_cluster(envoy, name)
    if cluster is None or cluster.get("cluster_type", {}).get("name") != "envoy.cluster.dns":
        return None
    config: dict[str, Any] = cluster["cluster_type"]["typed_config"]
    assert config["@type"] == DNS_EXTENSION_TYPE
    return config


def _all_ok_from(url: str, upstream: str, count: int = 200) -> None:
    result = run_requests(url, count=count, concurrency=4)
    assert result.non_2xx == 0 and result.failures == 0, result.summary()
    assert result.by_upstream == {upstream: count}, result.summary()


def test_host_name_endpoint_strict_then_logical_and_an_unresolvable_name(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    pool = upstreams("web-by-name", "drained-by-name", "other-by-ip")
    serving, drained = pool["web-by-name"].port, pool["drained-by-name"].port
    catalog = DnsCatalog(workdir / "catalog.yaml", free_port(), {
        "web": {"dns": {"refresh_rate": "1s"},
                "endpoints": [{"address": f"localhost:{serving}", "weight": 3, "locality": {"zone": "a"}},
                              {"address": f"localhost:{drained}", "health": "draining",
                               "locality": {"zone": "b"}}]},
        "other": {"endpoints": [{"address": f"127.0.0.1:{pool['other-by-ip'].port}"}]},
    })
    catalog.write()
    control_plane = control_plane_factory(catalog.path)
    envoy = envoy_factory(lambda admin_port: bootstrap_for("envoy-1", "edge", xds_port=control_plane.xds_port,
                                                           admin_port=admin_port))
    wait_until(lambda: envoy.listener_port("ingress") == catalog.listener_port, timeout_s=15,
               message="Envoy never bound the ingress listener", ignore=(KeyError, AdminError))
    base = f"http://127.0.0.1:{catalog.listener_port}"

    # STRICT_DNS (the default): Envoy resolved `localhost` itself; the IP service stays on EDS.
    strict = _dns_config(envoy, "web")
    assert strict is not None and not strict.get("all_addresses_in_single_endpoint", False), strict
    assert strict["dns_lookup_family"] == "V4_PREFERRED" and strict["dns_refresh_rate"] == "1s"
    assert _dynamic_cluster(envoy, "other") is not None and _dns_config(envoy, "other") is None
    # Weight, health and locality of host-name endpoints reach Envoy inline: the draining one gets nothing.
    resolved = {("127.0.0.1", serving, "HEALTHY", 3, "a"), ("127.0.0.1", drained, "DRAINING", 1, "b")}
    wait_until(lambda: {(h.address, h.port, h.eds_health, h.weight, h.zone)
                        for h in envoy.cluster_hosts("web")} == resolved,
               timeout_s=10, message=lambda: f"web never resolved: {envoy.cluster_hosts('web')}")
    _all_ok_from(f"{base}/web", "web-by-name")
    _all_ok_from(f"{base}/other", "other-by-ip")

    # LOGICAL_DNS: the same name, one logical host; traffic still flows.
    catalog.services["web"] = {"dns": {"mode": "logical", "lookup_family": "v4_only", "respect_ttl": True},
                               "endpoints": [{"address": f"localhost:{serving}"}]}
    catalog.write()
    logical = wait_until(lambda: (c := _dns_config(envoy, "web")) is not None
                         and c.get("all_addresses_in_single_endpoint") is True and c,
                         timeout_s=10, message="Envoy never got the LOGICAL_DNS cluster")
    assert logical["dns_lookup_family"] == "V4_ONLY" and logical["respect_dns_ttl"] is True
    wait_until(lambda: run_requests(f"{base}/web", count=20, concurrency=1).non_2xx == 0, timeout_s=10,
               message="no traffic through the LOGICAL_DNS cluster")
    _all_ok_from(f"{base}/web", "web-by-name")

    # A name that never resolves: its route gets no upstream, everything else keeps serving.
    catalog.services["ghost"] = {"endpoints": [{"address": f"{UNRESOLVABLE}:80"}]}
    catalog.write()
    wait_until(lambda: _dns_config(envoy, "ghost") is not None and envoy.cluster_hosts("ghost") == [],
               timeout_s=15, message="Envoy never got the ghost cluster", ignore=(KeyError, AdminError))
    ghost = run_requests(f"{base}/ghost", count=20, concurrency=1)
    assert ghost.total == 20 and ghost.by_status == {503: 20}, ghost.summary()  # no healthy upstream
    _all_ok_from(f"{base}/web", "web-by-name")
    _all_ok_from(f"{base}/other", "other-by-ip")
    assert control_plane.status()["sources"], "the control plane stopped answering /status"
    assert_clean_envoy(envoy, control_plane)


def assert_clean_envoy(envoy: EnvoyProcess, control_plane: Any) -> None:
    """Nothing was rejected and no deprecated field was used (the DNS settings travel in the DNS cluster
    extension, translate/dns.py)."""
    assert envoy.update_rejected_total() == 0
    assert envoy.deprecation_warnings() == []
    assert control_plane.alive
