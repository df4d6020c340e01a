"""The closed NACK loop reports on what produced a rejected resource (issue 11 item 4): a TrafficPolicy gets
`Programmed=False` with Envoy's message and the node ids (real kube-apiserver), a Consul KV policy a status
key beside it (real Consul). Real Envoy rejects a listener on a port another process holds."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from harness import free_port, wait_until
from harness.envoy import AdminError

from .test_consul_e2e import KV_KEY, ConsulStack, consul_stack, policy_document  # noqa: F401 (fixture)
from .test_kube_e2e import NS, POLICY_API, KubeStack, kube_stack, traffic_policy  # noqa: F401 (fixture)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port a plain socket holds (no SO_REUSEPORT), so Envoy's bind of it fails."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        yield blocker.getsockname()[1]
    finally:
        blocker.close()


def _blocked_listener(port: int, service: str) -> dict[str, Any]:
    return {"name": "blocked", "address": "127.0.0.1", "port": port,
            "routes": [{"name": "b", "backends": [{"service": service, "weight": 100}]}]}


def _nacked_at(status: dict[str, Any], name: str) -> float | None:
    return next((q["nacked_at"] for q in status["quarantined"] if q["name"] == name), None)


def _condition(stack: KubeStack, kind: str) -> dict[str, Any] | None:
    obj = stack.cluster.client().get(POLICY_API, "TrafficPolicy", "edge", namespace=NS)
    for condition in (obj or {}).get("status", {}).get("conditions", []):
        if condition.get("type") == kind:
            return dict(condition)
    return None


def test_traffic_policy_gets_programmed_false_with_envoys_message(
        kube_stack: Callable[..., KubeStack], taken_port: int) -> None:  # noqa: F811 (the imported fixture)
    stack = kube_stack(backends=[("v1.shop:80", 100)])
    policy = traffic_policy("edge", port=stack.listener_port, backends=[("v1.shop:80", 100)])
    policy["spec"]["listeners"].append(_blocked_listener(taken_port, "v1.shop:80"))
    stack.cluster.client().apply(policy)

    def rejected() -> dict[str, Any] | None:
        condition = _condition(stack, "Programmed")
        return condition if condition and condition["status"] == "False" else None

    condition = wait_until(rejected, timeout_s=15, message="the TrafficPolicy never got Programmed=False")
    seen = time.time()
    nacked_at = _nacked_at(stack.control_plane.status(), "blocked")
    assert nacked_at is not None
    print(f"\nNACK -> Programmed=False condition: {seen - nacked_at:.3f} s (polled every 0.05 s)")
    assert condition["reason"] == "Rejected"
    assert "envoy-1" in condition["message"] and "Address already in use" in condition["message"]
    assert "'blocked'" in condition["message"]
    accepted = _condition(stack, "Accepted")
    assert accepted is not None and accepted["status"] == "True"
    # The rest of the policy serves: the ingress listener stays.
    assert stack.envoy.listener_port("ingress") == stack.listener_port
    # Fixed input: tried once, accepted, Programmed=True.
    policy["spec"]["listeners"][1]["port"] = free_port()
    stack.cluster.client().apply(policy)
    wait_until(lambda: (_condition(stack, "Programmed") or {}).get("status") == "True", timeout_s=15,
               message=lambda: f"conditions: {json.dumps(_condition(stack, 'Programmed'))}")
    wait_until(lambda: stack.envoy.listener_port("blocked") > 0, timeout_s=10,
               message="the fixed listener never came up", ignore=(KeyError, AdminError))


def test_consul_kv_policy_gets_a_status_key_beside_it(
        consul_stack: Callable[..., ConsulStack], taken_port: int) -> None:  # noqa: F811 (the fixture)
    stack = consul_stack(services=["web"], routes=[("/", [("web", None, 100)])])
    document = yaml.safe_load(policy_document(port=stack.listener_port, services=["web"],
                                              routes=[("/", [("web", None, 100)])]))
    document["listeners"].append(_blocked_listener(taken_port, "web"))
    stack.consul.kv_put(KV_KEY, yaml.safe_dump(document))
    status_key = KV_KEY + ".status"
    raw = wait_until(lambda: stack.consul.kv_get(status_key), timeout_s=15,
                     message="no status key was written beside the KV policy")
    seen = time.time()
    nacked_at = _nacked_at(stack.control_plane.status(), "blocked")
    assert nacked_at is not None
    print(f"\nNACK -> Consul status key: {seen - nacked_at:.3f} s (polled every 0.05 s)")
    status = json.loads(raw)
    assert status["programmed"] is False
    (entry,) = status["rejected"]
    assert entry["name"] == "blocked" and entry["node_ids"] == ["envoy-1"]
    assert "Address already in use" in entry["message"]
    # The status key is not read back as a policy, and the rest of the policy serves.
    assert stack.control_plane.status()["sources"][f"consul:{stack.consul.url}"]["error"] == ""
    assert stack.envoy.listener_port("ingress") == stack.listener_port
    # Fixed input: tried once, accepted, the status key is removed.
    document["listeners"][1]["port"] = free_port()
    stack.consul.kv_put(KV_KEY, yaml.safe_dump(document))
    wait_until(lambda: stack.consul.kv_get(status_key) is None, timeout_s=15,
               message="the status key stayed after the fix")
    wait_until(lambda: stack.envoy.listener_port("blocked") > 0, timeout_s=10,
               message="the fixed listener never came up", ignore=(KeyError, AdminError))
