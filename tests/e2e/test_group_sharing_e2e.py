"""Two node groups served the same listeners share one snapshot build, and a changed cluster reaches both
real Envoys with its endpoints (issue 12; docs/architecture.md "Changes cost what changed").

The control plane builds the groups' snapshot once per change and gives each group the same mappings and
versions; a cluster change takes the streams' shortcut, which must still send the cluster's
ClusterLoadAssignment again (docs/protocol.md R21), or the re-initialised cluster would have no hosts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import EnvoyProcess, run_requests, wait_until
from harness.controlplane import bootstrap_for
from harness.envoy import AdminError
from tests.e2e.stack import assert_clean, start_stack

pytestmark = pytest.mark.usefixtures("xds_mode")


def _connect_timeout(envoy: EnvoyProcess, cluster: str) -> str | None:
    for config in envoy.config_dump()["configs"]:
        for entry in config.get("dynamic_active_clusters", []):
            if entry["cluster"]["name"] == cluster:
                value: Any = entry["cluster"].get("connect_timeout")
                return str(value) if value is not None else None
    return None


def _hosts(envoy: EnvoyProcess, cluster: str) -> int:
    return len(envoy.cluster_hosts(cluster))


def test_a_cluster_change_reaches_two_groups_sharing_one_snapshot(
        workdir: Path, upstreams: Any, control_plane_factory: Any, envoy_factory: Any) -> None:
    pool = upstreams("alpha")
    stack = start_stack(workdir=workdir, pool=pool, services={"web": [("alpha", {})]},
                        backends=[("web", None, 1)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory, node_id="envoy-1", cluster="edge")
    second = envoy_factory(lambda admin_port: bootstrap_for(
        "envoy-2", "mobile", xds_port=stack.control_plane.xds_port, admin_port=admin_port))
    envoys = (stack.envoy, second)
    wait_until(lambda: all(_hosts(e, "web") == 1 for e in envoys), timeout_s=15,
               message="an Envoy never got web's endpoint", ignore=(KeyError, AdminError))
    assert all(_connect_timeout(e, "web") == "1s" for e in envoys)
    versions = [e.versions() for e in envoys]

    stack.catalog.service_settings["web"] = {"connect_timeout": "3s"}
    stack.catalog.write()

    wait_until(lambda: all(_connect_timeout(e, "web") == "3s" for e in envoys), timeout_s=15,
               message=lambda: f"connect_timeout: {[_connect_timeout(e, 'web') for e in envoys]}",
               ignore=(KeyError, AdminError))
    # The re-initialised cluster got its (unchanged) ClusterLoadAssignment again and left warming (R21).
    wait_until(lambda: all(_hosts(e, "web") == 1 for e in envoys), timeout_s=15,
               message="a changed cluster was left without its endpoint", ignore=(KeyError, AdminError))
    after = [e.versions() for e in envoys]
    # Equal content, equal versions in both groups (R14), and the cluster's version moved in each.
    assert after[0] == after[1], after
    assert all(a != b for a, b in zip(after, versions, strict=True)), (versions, after)
    result = run_requests(stack.url, count=20, concurrency=2)
    assert result.total == 20 and result.failures == 0 and result.non_2xx == 0, result.summary()
    assert_clean(stack)
    assert second.update_rejected_total() == 0
