"""The Kubernetes source against a real kube-apiserver and etcd, with a real Envoy.

EndpointSlice validation refuses loopback addresses, so the endpoints live at 10.200.0.0/16 addresses that
no test ever sends traffic to: the assertions read what Envoy holds (admin `/clusters`, `config_dump`).
"""

from __future__ import annotations

import json
import signal
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import ControlPlaneProcess, EnvoyProcess, free_port, wait_until
from harness.controlplane import bootstrap_for
from harness.envoy import AdminError
from harness.kube import KubeApiError, KubeBackend

# Every Envoy here runs once over state-of-the-world and once over delta xDS (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NS = "shop"
POLICY_API = "xds.dev/v1alpha1"


def service(name: str, *, port: int = 80) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"ports": [{"name": "http", "port": port, "targetPort": 8080}]}}


def endpoint(address: str, *, ready: bool = True, serving: bool | None = None, terminating: bool = False,
             zone: str | None = None) -> dict[str, Any]:
    conditions: dict[str, bool] = {"ready": ready, "terminating": terminating}
    if serving is not None:
        conditions["serving"] = serving
    out: dict[str, Any] = {"addresses": [address], "conditions": conditions}
    if zone:
        out["zone"] = zone
    return out


def endpoint_slice(name: str, service_name: str, endpoints: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": name, "namespace": NS, "labels": {
            "kubernetes.io/service-name": service_name,
            "endpointslice.kubernetes.io/managed-by": "xds-tests"}},
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


def traffic_policy(name: str, *, port: int, backends: Sequence[tuple[str, int]]) -> dict[str, Any]:
    return {
        "apiVersion": POLICY_API, "kind": "TrafficPolicy", "metadata": {"name": name, "namespace": NS},
        "spec": {
            "services": [{"name": s} for s, _ in backends],
            "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": port,
                           "routes": [{"name": "all", "backends": [{"service": s, "weight": w}
                                                                   for s, w in backends]}]}],
        },
    }


@dataclass
class KubeStack:
    cluster: KubeBackend
    control_plane: ControlPlaneProcess
    envoy: EnvoyProcess
    listener_port: int

    def hosts(self, cluster: str) -> dict[str, tuple[str, str]]:
        """Address -> (EDS health, zone) of every host Envoy holds for `cluster`."""
        out: dict[str, tuple[str, str]] = {}
        for status in self.envoy.clusters_json().get("cluster_statuses", []):
            if status.get("name") != cluster:
                continue
            for host in status.get("host_statuses", []):
                address = host["address"]["socket_address"]["address"]
                health = host.get("health_status", {}).get("eds_health_status", "HEALTHY")
                out[address] = (health, host.get("locality", {}).get("zone", ""))
        return out

    def wait_hosts(self, cluster: str, expected: dict[str, tuple[str, str]], *, timeout_s: float = 15.0,
                   interval_s: float = 0.01) -> float:
        start = time.monotonic()
        wait_until(lambda: self.hosts(cluster) == expected, timeout_s=timeout_s, interval_s=interval_s,
                   message=lambda: f"Envoy hosts of {cluster}: {self.hosts(cluster)} != {expected}",
                   ignore=(AdminError, OSError))
        return time.monotonic() - start

    def accepted(self, name: str) -> dict[str, Any] | None:
        obj = self.cluster.client().get(POLICY_API, "TrafficPolicy", name, namespace=NS)
        for condition in (obj or {}).get("status", {}).get("conditions", []):
            if condition.get("type") == "Accepted":
                return dict(condition)
        return None


def install_crd(cluster: KubeBackend) -> None:
    import yaml
    admin = cluster.client()
    admin.apply(yaml.safe_load((DEPLOY / "crd-trafficpolicy.yaml").read_text()))
    deadline = time.monotonic() + 30
    while True:
        try:
            admin.resource(POLICY_API, "TrafficPolicy")
            return
        except (KeyError, KubeApiError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def kube_stack(kube_cluster: KubeBackend, kubeconfig: Path, control_plane_factory: Any,
               envoy_factory: Any) -> Callable[..., KubeStack]:
    def make(*, backends: Sequence[tuple[str, int]], objects: Sequence[dict[str, Any]] = (),
             grace_s: float = 30.0) -> KubeStack:
        install_crd(kube_cluster)
        admin = kube_cluster.client()
        admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        for obj in objects:
            admin.apply(obj)
        port = free_port()
        admin.apply(traffic_policy("edge", port=port, backends=backends))
        control_plane = control_plane_factory(None, extra_args=(
            "--kubeconfig", str(kubeconfig), "--kube-resync-grace", str(grace_s)))
        envoy = envoy_factory(lambda admin_port: bootstrap_for(
            "envoy-1", "edge", xds_port=control_plane.xds_port, admin_port=admin_port))
        stack = KubeStack(cluster=kube_cluster, control_plane=control_plane, envoy=envoy, listener_port=port)
        wait_until(lambda: envoy.listener_port("ingress") == port, timeout_s=15,
                   message="Envoy never bound the ingress listener", ignore=(KeyError, AdminError))
        return stack

    return make


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def test_three_slices_appear_with_health_and_locality_and_write_latency(
        kube_stack: Callable[..., KubeStack], capsys: pytest.CaptureFixture[str]) -> None:
    slices = [
        endpoint_slice("web-a", "web", [endpoint("10.200.0.1", zone="zone-a"),
                                        endpoint("10.200.0.2", ready=False, zone="zone-a")]),
        endpoint_slice("web-b", "web", [endpoint("10.200.0.3", zone="zone-b"),
                                        endpoint("10.200.0.4", ready=False, serving=True, terminating=True,
                                                 zone="zone-b")]),
        # The same address in two slices (as during an update): one host, the ready copy wins.
        endpoint_slice("web-c", "web", [endpoint("10.200.0.5", zone="zone-c"),
                                        endpoint("10.200.0.1", ready=False, zone="zone-a")]),
    ]
    stack = kube_stack(backends=[("web.shop:80", 100)], objects=[service("web"), *slices])
    expected = {"10.200.0.1": ("HEALTHY", "zone-a"), "10.200.0.3": ("HEALTHY", "zone-b"),
                "10.200.0.4": ("DRAINING", "zone-b"), "10.200.0.5": ("HEALTHY", "zone-c")}
    stack.wait_hosts("web.shop:80", expected)
    accepted = stack.accepted("edge")
    assert accepted is not None and accepted["status"] == "True"
    admin = stack.cluster.client()
    latencies = []
    for trial in range(20):
        address = f"10.200.1.{trial + 1}"
        written = time.monotonic()
        admin.apply(endpoint_slice(f"web-t{trial}", "web", [endpoint(address, zone="zone-t")]))
        stack.wait_hosts("web.shop:80", {**expected, address: ("HEALTHY", "zone-t")})
        latencies.append(time.monotonic() - written)
        admin.delete("discovery.k8s.io/v1", "EndpointSlice", f"web-t{trial}", namespace=NS)
        stack.wait_hosts("web.shop:80", expected)
    with capsys.disabled():
        p50, p95 = statistics.median(latencies), percentile(latencies, 0.95)
        print(f"\n[kube] EndpointSlice write -> Envoy holds it, 20 trials: p50 {p50 * 1000:.0f} ms, "
              f"p95 {p95 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    assert stack.envoy.update_rejected_total() == 0


def test_scale_to_200_and_back_terminating_drains_and_deletion_removes(
        kube_stack: Callable[..., KubeStack]) -> None:
    stack = kube_stack(backends=[("web.shop:80", 100)],
                       objects=[service("web"), endpoint_slice("web-0", "web", [endpoint("10.200.0.1")])])
    stack.wait_hosts("web.shop:80", {"10.200.0.1": ("HEALTHY", "")})
    admin = stack.cluster.client()
    addresses = [f"10.200.{i // 250}.{i % 250 + 1}" for i in range(200)]
    # 200 endpoints in two slices of 100 (the controller's default slice size).
    for index in range(2):
        admin.apply(endpoint_slice(f"web-{index}", "web",
                                   [endpoint(a) for a in addresses[index * 100:(index + 1) * 100]]))
    stack.wait_hosts("web.shop:80", {a: ("HEALTHY", "") for a in addresses}, interval_s=0.1)
    # Back to one: the second slice goes away, the first shrinks.
    admin.delete("discovery.k8s.io/v1", "EndpointSlice", "web-1", namespace=NS)
    admin.apply(endpoint_slice("web-0", "web", [endpoint("10.200.0.1")]))
    stack.wait_hosts("web.shop:80", {"10.200.0.1": ("HEALTHY", "")}, interval_s=0.1)
    # A terminating endpoint that still serves drains; then it is deleted.
    admin.apply(endpoint_slice("web-0", "web", [endpoint("10.200.0.1"), endpoint(
        "10.200.0.2", ready=False, serving=True, terminating=True)]))
    stack.wait_hosts("web.shop:80", {"10.200.0.1": ("HEALTHY", ""), "10.200.0.2": ("DRAINING", "")})
    admin.apply(endpoint_slice("web-0", "web", [endpoint("10.200.0.1")]))
    stack.wait_hosts("web.shop:80", {"10.200.0.1": ("HEALTHY", "")})
    assert stack.envoy.update_rejected_total() == 0


@pytest.mark.kube(watch_cache=False)
def test_compaction_410_relists_and_loses_no_deletion(kube_stack: Callable[..., KubeStack]) -> None:
    stack = kube_stack(backends=[("web.shop:80", 100)], grace_s=1.0, objects=[
        service("web"),
        endpoint_slice("web-a", "web", [endpoint("10.200.0.1")]),
        endpoint_slice("web-b", "web", [endpoint("10.200.0.2")])])
    stack.wait_hosts("web.shop:80", {"10.200.0.1": ("HEALTHY", ""), "10.200.0.2": ("HEALTHY", "")})
    versions = stack.envoy.versions()
    # Freeze the control plane, cut its watches (apiserver restart), change things it cannot see, and
    # compact etcd so that its resourceVersion is gone: resuming must fail with 410 and re-list.
    stack.control_plane.process.kill(signal.SIGSTOP)
    try:
        stack.cluster.restart()
        admin = stack.cluster.client()
        admin.delete("discovery.k8s.io/v1", "EndpointSlice", "web-b", namespace=NS)  # the deletion in the gap
        admin.apply(endpoint_slice("web-c", "web", [endpoint("10.200.0.3")]))
        stack.cluster.compact()
        assert stack.envoy.versions() == versions  # Envoy keeps its config meanwhile
    finally:
        stack.control_plane.process.kill(signal.SIGCONT)
    stack.wait_hosts("web.shop:80", {"10.200.0.1": ("HEALTHY", ""), "10.200.0.3": ("HEALTHY", "")},
                     timeout_s=30)
    log = stack.control_plane.tail(400)
    assert "kube_watch_expired" in log, "the source never saw the 410"
    assert stack.envoy.update_rejected_total() == 0


def test_apiserver_restart_keeps_envoy_config_and_converges_after(
        kube_stack: Callable[..., KubeStack]) -> None:
    stack = kube_stack(backends=[("web.shop:80", 100)], grace_s=3.0, objects=[
        service("web"), endpoint_slice("web-a", "web", [endpoint("10.200.0.1"), endpoint("10.200.0.2")])])
    before = {"10.200.0.1": ("HEALTHY", ""), "10.200.0.2": ("HEALTHY", "")}
    stack.wait_hosts("web.shop:80", before)
    versions = stack.envoy.versions()
    stack.cluster.kill()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:  # the API is down: Envoy keeps everything
        assert stack.hosts("web.shop:80") == before
        time.sleep(0.2)
    assert stack.envoy.versions() == versions
    stack.cluster.restart()
    admin = stack.cluster.client()
    admin.apply(endpoint_slice("web-a", "web", [endpoint("10.200.0.2"), endpoint("10.200.0.3")]))
    # The addition shows at once; the removal of .1 follows once the resync grace (3 s here) has passed.
    stack.wait_hosts("web.shop:80", {"10.200.0.2": ("HEALTHY", ""), "10.200.0.3": ("HEALTHY", "")},
                     timeout_s=30)
    assert stack.envoy.update_rejected_total() == 0


def test_invalid_traffic_policy_is_marked_and_changes_nothing_valid_one_shifts_weights(
        kube_stack: Callable[..., KubeStack]) -> None:
    stack = kube_stack(backends=[("v1.shop:80", 80), ("v2.shop:80", 20)], objects=[
        service("v1"), service("v2"),
        endpoint_slice("v1-a", "v1", [endpoint("10.200.0.1")]),
        endpoint_slice("v2-a", "v2", [endpoint("10.200.0.2")])])
    wait_until(lambda: stack.envoy.route_weights() == {"v1.shop:80": 80, "v2.shop:80": 20}, timeout_s=15,
               message=lambda: f"weights {stack.envoy.route_weights()}", ignore=(AdminError, OSError))
    admin = stack.cluster.client()
    versions = stack.envoy.versions()
    bad = traffic_policy("edge", port=stack.listener_port, backends=[("v1.shop:80", 80), ("v2.shop:80", 10)])
    admin.apply(bad)

    def invalid() -> dict[str, Any] | None:
        condition = stack.accepted("edge")
        return condition if condition and condition["status"] == "False" else None

    condition = wait_until(invalid, timeout_s=15, message="the invalid policy was never marked Invalid")
    assert condition["reason"] == "Invalid"
    assert "must sum to 100" in condition["message"]
    time.sleep(1.0)
    assert stack.envoy.versions() == versions
    assert stack.envoy.route_weights() == {"v1.shop:80": 80, "v2.shop:80": 20}
    good = traffic_policy("edge", port=stack.listener_port, backends=[("v1.shop:80", 30), ("v2.shop:80", 70)])
    admin.apply(good)
    wait_until(lambda: stack.envoy.route_weights() == {"v1.shop:80": 30, "v2.shop:80": 70}, timeout_s=15,
               message=lambda: f"weights {stack.envoy.route_weights()}", ignore=(AdminError, OSError))

    def accepted() -> bool:
        condition = stack.accepted("edge")
        return bool(condition and condition["status"] == "True")

    wait_until(accepted, timeout_s=15, message=lambda: f"status {json.dumps(stack.accepted('edge'))}")
    assert stack.envoy.update_rejected_total() == 0
