"""The `kube_cluster` fixture against a real kube-apiserver and etcd: what Kubernetes-source tests rely on.

Each test gets a fresh etcd and API server. EndpointSlices here use addresses in 10.200.0.0/24, because the
API server rejects loopback ones; nothing in these tests ever sends traffic to them (they are data only).
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import wait_until
from harness.kube import KubeApiError, KubeBackend, KubeClient
from harness.testbin import TOOLS, required_version
from tests.kube_fixtures import kube_backend_name

NAMESPACE = "shop"
MANAGED_BY = "xds-tests"
_EVENT_TIMEOUT_S = 10.0


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(name: str, *, port: int = 8080) -> dict[str, Any]:
    # No selector: nothing would select pods anyway, and the EndpointSlices are written by hand.
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "http", "port": port, "protocol": "TCP"}]},
    }  # fmt: skip


def endpoint_slice(name: str, service_name: str, addresses: list[str], *, port: int = 8080) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": name, "namespace": NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": service_name,
                # Without kube-controller-manager the tests own their slices, which is what this label says.
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}} for address in addresses],
    }  # fmt: skip


def _slice_addresses(item: dict[str, Any]) -> list[str]:
    return [address for endpoint in item["endpoints"] for address in endpoint["addresses"]]


def _seed(client: KubeClient) -> None:
    client.apply(namespace(NAMESPACE))
    client.apply(service("web"))


def test_api_server_is_ready_and_reports_the_pinned_version(kube_cluster: KubeBackend) -> None:
    client = kube_cluster.client()
    assert client.readyz()
    version = client.call("GET", "/version")
    if kube_backend_name() == "binary":
        assert version["gitVersion"] == required_version(
            TOOLS["kube-apiserver"].wrapper_dir() / "go.mod", "k8s.io/kubernetes"
        )
    assert kube_cluster.url.startswith("https://127.0.0.1:")
    # The CA file really verifies the serving certificate (the client refuses anything else).
    context = ssl.create_default_context(cafile=str(kube_cluster.ca_file))
    assert context.cert_store_stats()["x509_ca"] >= 1


def test_anonymous_and_limited_users_get_nothing_until_rbac_grants_it(kube_cluster: KubeBackend) -> None:
    admin = kube_cluster.client()
    anonymous = kube_cluster.client(anonymous=True)
    limited = kube_cluster.client(kube_cluster.limited_token)
    _seed(admin)

    for client in (anonymous, limited):
        status, _ = client.request("GET", f"/api/v1/namespaces/{NAMESPACE}/services")
        assert status in (401, 403)
    status, _ = anonymous.request("GET", "/apis/discovery.k8s.io/v1/endpointslices")
    assert status in (401, 403)

    # Least privilege, as a control plane's manifests would grant it: read services in one namespace.
    admin.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "read-services", "namespace": NAMESPACE},
        "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}],
    })  # fmt: skip
    admin.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "read-services", "namespace": NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-services"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": kube_cluster.limited_user}
        ],
    })  # fmt: skip

    # RBAC changes reach the authorizer through an informer: a moment, not instantly.
    wait_until(
        lambda: limited.request("GET", f"/api/v1/namespaces/{NAMESPACE}/services")[0] == 200,
        timeout_s=_EVENT_TIMEOUT_S,
        message="the RoleBinding never took effect for the limited user",
    )
    names = [item["metadata"]["name"] for item in limited.list("v1", "Service", namespace=NAMESPACE)["items"]]
    assert names == ["web"]
    # Only what was granted: not other namespaces, not other resources, not writes.
    assert limited.request("GET", "/api/v1/namespaces/default/services")[0] == 403
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"
    assert limited.request("GET", slices)[0] == 403
    assert limited.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/services/web")[0] == 403


def test_admin_creates_and_lists_services_and_endpoint_slices(kube_cluster: KubeBackend) -> None:
    client = kube_cluster.client()
    _seed(client)
    client.apply(endpoint_slice("web-a", "web", ["10.200.0.2", "10.200.0.3"]))
    client.apply(endpoint_slice("web-b", "web", ["10.200.0.4"]))
    client.apply(service("api", port=9090))
    client.apply(endpoint_slice("api-a", "api", ["10.200.0.9"], port=9090))

    stored = client.get("v1", "Service", "web", namespace=NAMESPACE)
    assert stored is not None
    # ClusterIPs are allocated by the API server itself, from --service-cluster-ip-range (never routed).
    assert stored["spec"]["clusterIP"].startswith("10.0.0.")

    slices = client.list(
        "discovery.k8s.io/v1", "EndpointSlice", namespace=NAMESPACE,
        label_selector="kubernetes.io/service-name=web",
    )  # fmt: skip
    by_name = {item["metadata"]["name"]: _slice_addresses(item) for item in slices["items"]}
    assert by_name == {"web-a": ["10.200.0.2", "10.200.0.3"], "web-b": ["10.200.0.4"]}
    assert all(
        item["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == MANAGED_BY
        for item in slices["items"]
    )
    assert int(slices["metadata"]["resourceVersion"]) > 0

    # apply() replaces an existing object.
    client.apply(endpoint_slice("web-b", "web", ["10.200.0.5"]))
    updated = client.get("discovery.k8s.io/v1", "EndpointSlice", "web-b", namespace=NAMESPACE)
    assert updated is not None and _slice_addresses(updated) == ["10.200.0.5"]
    assert client.delete("discovery.k8s.io/v1", "EndpointSlice", "web-b", namespace=NAMESPACE)
    assert client.get("discovery.k8s.io/v1", "EndpointSlice", "web-b", namespace=NAMESPACE) is None
    assert not client.delete("discovery.k8s.io/v1", "EndpointSlice", "web-b", namespace=NAMESPACE)


def test_endpoint_slice_with_a_loopback_address_is_rejected(kube_cluster: KubeBackend) -> None:
    # The gotcha behind the 10.200.0.x addresses: endpoint validation refuses loopback (and link-local,
    # multicast, unspecified) addresses, so a slice can never point straight at a test server on 127.0.0.1.
    client = kube_cluster.client()
    _seed(client)
    with pytest.raises(KubeApiError) as rejected:
        client.apply(endpoint_slice("web-loop", "web", ["127.0.0.1"]))
    assert rejected.value.status == 422
    assert rejected.value.reason == "Invalid"
    assert "loopback" in rejected.value.message
    assert client.get("discovery.k8s.io/v1", "EndpointSlice", "web-loop", namespace=NAMESPACE) is None


def test_server_side_dry_run_validates_without_storing(kube_cluster: KubeBackend) -> None:
    client = kube_cluster.client()
    _seed(client)
    answer = client.server_side_dry_run(endpoint_slice("web-a", "web", ["10.200.0.2"]))
    assert answer["metadata"]["name"] == "web-a"
    assert client.get("discovery.k8s.io/v1", "EndpointSlice", "web-a", namespace=NAMESPACE) is None

    with pytest.raises(KubeApiError) as rejected:
        client.server_side_dry_run(endpoint_slice("web-a", "web", ["127.0.0.1"]))
    assert rejected.value.status == 422

    # On an existing object the dry run is a replace, and it changes nothing either.
    client.apply(endpoint_slice("web-a", "web", ["10.200.0.2"]))
    client.server_side_dry_run(endpoint_slice("web-a", "web", ["10.200.0.7"]))
    stored = client.get("discovery.k8s.io/v1", "EndpointSlice", "web-a", namespace=NAMESPACE)
    assert stored is not None and _slice_addresses(stored) == ["10.200.0.2"]

    # RBAC applies to dry runs as to real writes.
    with pytest.raises(KubeApiError) as forbidden:
        kube_cluster.client(kube_cluster.limited_token).server_side_dry_run(service("other"))
    assert forbidden.value.status == 403


def test_watch_from_a_resource_version_sees_later_changes(kube_cluster: KubeBackend) -> None:
    client = kube_cluster.client()
    _seed(client)
    client.apply(endpoint_slice("web-a", "web", ["10.200.0.2"]))
    listed = client.list("discovery.k8s.io/v1", "EndpointSlice", namespace=NAMESPACE)
    since = listed["metadata"]["resourceVersion"]

    with client.watch(
        "discovery.k8s.io/v1", "EndpointSlice", namespace=NAMESPACE, resource_version=since, bookmarks=True
    ) as stream:
        client.apply(endpoint_slice("web-b", "web", ["10.200.0.3"]))
        client.delete("discovery.k8s.io/v1", "EndpointSlice", "web-a", namespace=NAMESPACE)
        seen: list[tuple[str, str]] = []
        while len(seen) < 2:
            event = stream.next_event(_EVENT_TIMEOUT_S)
            assert event is not None, f"the watch ended early after {seen}"
            if event["type"] != "BOOKMARK":
                seen.append((event["type"], event["object"]["metadata"]["name"]))
    # Only changes after the listed version: web-a's creation is not replayed.
    assert seen == [("ADDED", "web-b"), ("DELETED", "web-a")]


def _history(client: KubeClient) -> str:
    """Create a slice and change things after it; return the resourceVersion of its creation."""
    _seed(client)
    created = client.apply(endpoint_slice("web-a", "web", ["10.200.0.2"]))
    client.apply(endpoint_slice("web-a", "web", ["10.200.0.3"]))
    client.apply(endpoint_slice("web-b", "web", ["10.200.0.4"]))
    old_version: str = created["metadata"]["resourceVersion"]
    # Before any compaction the history is there: a watch from the old version starts normally.
    assert not _expired(client, old_version)
    return old_version


def _expired(client: KubeClient, resource_version: str) -> bool:
    return client.watch_expired("discovery.k8s.io/v1", "EndpointSlice", resource_version, namespace=NAMESPACE)


def _relist_and_resume(client: KubeClient) -> None:
    # The recovery a watcher does after 410: list again, then watch from the list's version.
    listed = client.list("discovery.k8s.io/v1", "EndpointSlice", namespace=NAMESPACE)
    assert sorted(item["metadata"]["name"] for item in listed["items"]) == ["web-a", "web-b"]
    assert not _expired(client, listed["metadata"]["resourceVersion"])


@pytest.mark.kube(watch_cache=False)
def test_compaction_expires_old_resource_versions_without_the_watch_cache(
    kube_cluster: KubeBackend, kube_compact: Callable[..., int]
) -> None:
    # The precondition of docs/protocol.md case F7: a watcher that resumes from a resourceVersion older than
    # the compacted history gets 410 Gone and must re-list. Served by etcd, that is immediate.
    client = kube_cluster.client()
    old_version = _history(client)

    revision = kube_compact()

    # The compaction point is "now": past the old version, before whatever is written next.
    assert int(old_version) < revision < kube_cluster.current_revision()
    assert _expired(client, old_version)
    _relist_and_resume(client)


def test_with_the_watch_cache_old_versions_expire_after_compaction_and_restart(
    kube_cluster: KubeBackend, kube_compact: Callable[..., int], kube_restart: Callable[[], None]
) -> None:
    # Production's default: watches come from the API server's in-memory window of recent events, which a
    # compaction does not shorten, so F7 needs the window to move too; a restart starts it afresh.
    client = kube_cluster.client()
    old_version = _history(client)

    kube_compact()
    assert not _expired(client, old_version)  # still inside the watch cache's window
    kube_restart()

    assert _expired(client, old_version)
    _relist_and_resume(client)


def test_api_server_restart_keeps_objects_and_address(
    kube_cluster: KubeBackend, kube_restart: Callable[[], None]
) -> None:
    client = kube_cluster.client()
    _seed(client)
    before = client.apply(endpoint_slice("web-a", "web", ["10.200.0.2"]))
    url = kube_cluster.url

    kube_restart()

    assert kube_cluster.url == url
    stored = client.get("discovery.k8s.io/v1", "EndpointSlice", "web-a", namespace=NAMESPACE)
    assert stored is not None
    assert stored["metadata"]["uid"] == before["metadata"]["uid"]
    assert _slice_addresses(stored) == ["10.200.0.2"]
    # Versions continue from etcd's revision: they never go backwards across an API server restart.
    after = client.apply(endpoint_slice("web-a", "web", ["10.200.0.3"]))
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])


def test_killed_api_server_refuses_connections_until_restarted(kube_cluster: KubeBackend) -> None:
    client = kube_cluster.client()
    _seed(client)
    kube_cluster.kill()
    with pytest.raises(ConnectionRefusedError):
        client.request("GET", "/readyz")
    kube_cluster.restart()
    assert client.get("v1", "Service", "web", namespace=NAMESPACE) is not None


def test_kubeconfig_points_at_the_cluster_with_admin_credentials(
    kube_cluster: KubeBackend, kubeconfig: Path, tmp_path: Path
) -> None:
    config = json.loads(kubeconfig.read_text())
    assert kubeconfig.stat().st_mode & 0o077 == 0
    assert config["current-context"] == "xds-test"
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == kube_cluster.url
    # A client built only from the kubeconfig's contents works (as the control plane's source will be).
    ca = tmp_path / "ca-from-kubeconfig.crt"
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    client = KubeClient(cluster["server"], token=config["users"][0]["user"]["token"], ca_file=ca)
    client.apply(namespace(NAMESPACE))
    assert client.get("v1", "Namespace", NAMESPACE) is not None

    limited = kube_cluster.write_kubeconfig(tmp_path / "limited.kubeconfig", token=kube_cluster.limited_token)
    assert json.loads(limited.read_text())["users"][0]["user"]["token"] == kube_cluster.limited_token
