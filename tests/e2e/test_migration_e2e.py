"""VMs in Consul and pods in Kubernetes under one logical name: one service, the source kept per endpoint,
so a weighted migration is a single policy (docs/kubernetes.md, "Migrating from VMs")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import free_port, wait_until
from harness.consul import ConsulBackend, TtlCheck
from harness.controlplane import bootstrap_for
from harness.envoy import AdminError
from harness.kube import KubeBackend

from .test_kube_e2e import NS, endpoint, endpoint_slice, install_crd

# Every Envoy here runs once over state-of-the-world and once over delta xDS (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")


def test_consul_and_kubernetes_instances_merge_and_one_policy_splits_them(
        consul_agent: ConsulBackend, kube_cluster: KubeBackend, kubeconfig: Path, workdir: Path,
        control_plane_factory: Any, envoy_factory: Any) -> None:
    # The VM, registered in Consul as "web".
    consul_agent.register_service("web", service_id="web-vm-1", address="10.201.0.1", port=8080,
                                  check=TtlCheck())
    # The pod, behind a Kubernetes Service that says it is "web" too.
    install_crd(kube_cluster)
    admin = kube_cluster.client()
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    admin.apply({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "web", "namespace": NS, "annotations": {"xds.dev/service-name": "web"}},
                 "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    admin.apply(endpoint_slice("web-a", "web", [endpoint("10.200.0.1")]))
    # One policy (a plain file here) moves 10% of "web" to Kubernetes by the `registry` each source sets.
    port = free_port()
    policy = workdir / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "services": [{"name": "web"}],
        "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": port, "routes": [{"backends": [
            {"service": "web", "subset": {"registry": "consul"}, "weight": 90},
            {"service": "web", "subset": {"registry": "kubernetes"}, "weight": 10}]}]}],
    }))
    control_plane = control_plane_factory(policy, extra_args=(
        "--consul-address", consul_agent.url, "--kubeconfig", str(kubeconfig), "--no-kube-policies"))
    envoy = envoy_factory(lambda admin_port: bootstrap_for(
        "envoy-1", "edge", xds_port=control_plane.xds_port, admin_port=admin_port))

    def hosts() -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for status in envoy.clusters_json().get("cluster_statuses", []):
            out[status["name"]] = {h["address"]["socket_address"]["address"]
                                   for h in status.get("host_statuses", [])}
        return out

    expected = {"web|registry=consul": {"10.201.0.1"}, "web|registry=kubernetes": {"10.200.0.1"}}
    wait_until(lambda: {k: v for k, v in hosts().items() if k.startswith("web")} == expected, timeout_s=20,
               message=lambda: f"Envoy clusters: {hosts()}", ignore=(AdminError, OSError))
    # Both registries are live sources of the one control plane.
    status = subprocess.run(
        [sys.executable, "-m", "xds", "status", "-o", "json", "--management-address",
         control_plane.management_address], capture_output=True, text=True, timeout=30, check=True).stdout
    sources = json.loads(status)["sources"]
    assert sorted(s["name"].split(":", 1)[0] for s in sources) == ["consul", "file", "kubernetes"], status
    assert all(s.get("synced") and not s.get("stale") and not s.get("error") for s in sources), status
    assert envoy.update_rejected_total() == 0
