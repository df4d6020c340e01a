"""The deployment manifests in deploy/ against a real kube-apiserver: server-side dry run, and the RBAC they
grant is exactly what the control plane needs (least privilege), checked with a real token."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.kube import KubeApiError, KubeBackend

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def manifests(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def wait_served(cluster: KubeBackend, api_version: str, kind: str, timeout_s: float = 30.0) -> None:
    """A new CRD takes a moment to be served (Established)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cluster.client().resource(api_version, kind)
            return
        except (KeyError, KubeApiError):  # 404 for the group until the CRD is established
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_every_manifest_passes_a_server_side_dry_run(kube_cluster: KubeBackend) -> None:
    admin = kube_cluster.client()
    (crd,) = manifests("crd-trafficpolicy.yaml")
    admin.server_side_dry_run(crd)
    admin.apply(crd)  # namespaced objects below are validated against the real, served CRD
    wait_served(kube_cluster, "xds.dev/v1alpha1", "TrafficPolicy")
    (namespace,) = manifests("namespace.yaml")
    admin.server_side_dry_run(namespace)
    admin.apply(namespace)
    checked = []
    for name in ("rbac.yaml", "deployment.yaml", "service.yaml"):
        for obj in manifests(name):
            stored = admin.server_side_dry_run(obj)
            assert stored["metadata"]["name"] == obj["metadata"]["name"]
            checked.append(f"{obj['kind']}/{obj['metadata']['name']}")
    assert sorted(checked) == sorted([
        "ServiceAccount/xds-control-plane", "ClusterRole/xds-control-plane",
        "ClusterRoleBinding/xds-control-plane", "Deployment/xds-control-plane", "Service/xds-control-plane"])
    # Dry run stored nothing.
    assert admin.get("apps/v1", "Deployment", "xds-control-plane", namespace="xds-system") is None


def test_the_cluster_role_grants_what_the_control_plane_needs_and_nothing_more(
        kube_cluster: KubeBackend) -> None:
    admin = kube_cluster.client()
    (crd,) = manifests("crd-trafficpolicy.yaml")
    admin.apply(crd)
    wait_served(kube_cluster, "xds.dev/v1alpha1", "TrafficPolicy")
    role = next(o for o in manifests("rbac.yaml") if o["kind"] == "ClusterRole")
    admin.apply(role)
    # Bind the role to the fixture's limited user (as the manifest binds it to the service account).
    admin.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "xds-test-limited"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "xds-control-plane"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": kube_cluster.limited_user}],
    })
    policy = admin.apply({
        "apiVersion": "xds.dev/v1alpha1", "kind": "TrafficPolicy",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"services": [{"name": "web"}]},
    })
    limited = kube_cluster.client(kube_cluster.limited_token)

    def allowed(method: str, path: str, body: object = None, content_type: str = "application/json") -> bool:
        status, _ = limited.request(method, path, body, content_type=content_type)
        return status < 400

    # The new binding reaches the authorizer's cache within moments: wait for the first grant, then judge.
    deadline = time.monotonic() + 10.0
    while not allowed("GET", "/api/v1/services") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert allowed("GET", "/api/v1/services")
    assert allowed("GET", "/apis/discovery.k8s.io/v1/endpointslices")
    assert allowed("GET", "/apis/xds.dev/v1alpha1/trafficpolicies")
    status_patch = {"status": {"conditions": [{
        "type": "Accepted", "status": "True", "reason": "Accepted", "message": "ok",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": policy["metadata"]["generation"]}]}}
    policies = "/apis/xds.dev/v1alpha1/namespaces/default/trafficpolicies"
    assert allowed("PATCH", f"{policies}/p/status", status_patch, content_type="application/merge-patch+json")
    # ... and nothing else: no secrets, no pods, no writes to any spec.
    assert not allowed("GET", "/api/v1/secrets")
    assert not allowed("GET", "/api/v1/pods")
    assert not allowed("PATCH", f"{policies}/p", {"spec": {"services": []}},
                       content_type="application/merge-patch+json")
    with pytest.raises(KubeApiError) as refused:
        limited.create({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": "x", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}})
    assert refused.value.status == 403
