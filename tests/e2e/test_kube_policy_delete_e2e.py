"""Deleting the TrafficPolicy that broke the merge clears the Kubernetes source's error at once (issue 14
item 6, the same rule as for Consul KV keys): nothing served changes, yet `xds_source_stale` returns to 0
and /status shows no error right after the delete. Real kube-apiserver, control plane process and Envoy."""

from __future__ import annotations

import time
from collections.abc import Callable

from harness import wait_until

from .test_kube_e2e import NS, POLICY_API, KubeStack, kube_stack, traffic_policy  # noqa: F401 (fixture)

_CLEARED_WITHIN_S = 5.0


def _stale(stack: KubeStack) -> float:
    for line in stack.control_plane.metrics_text().splitlines():
        if line.startswith("xds_source_stale{") and "kube" in line:
            return float(line.split()[-1])
    raise AssertionError("xds_source_stale of the kubernetes source not in /metrics")


def _error(stack: KubeStack) -> str:
    sources = stack.control_plane.status()["sources"]
    return "".join(str(s.get("error", "")) for name, s in sources.items() if name.startswith("kube"))


def test_deleting_the_conflicting_traffic_policy_clears_stale_at_once(
        kube_stack: Callable[..., KubeStack]) -> None:  # noqa: F811 (the imported fixture)
    stack = kube_stack(backends=[("v1.shop:80", 100)])
    assert _stale(stack) == 0
    # A second policy claiming the same listener: the merge refuses it and the first one keeps serving.
    stack.cluster.client().apply(traffic_policy("zz-dup", port=stack.listener_port,
                                                backends=[("v1.shop:80", 100)]))
    wait_until(lambda: _stale(stack) == 1 and "ingress" in _error(stack), timeout_s=10,
               message=lambda: f"the conflict was never reported: {_error(stack)!r}")

    assert stack.cluster.client().delete(POLICY_API, "TrafficPolicy", "zz-dup", namespace=NS)
    start = time.monotonic()
    wait_until(lambda: _stale(stack) == 0 and _error(stack) == "", timeout_s=_CLEARED_WITHIN_S,
               interval_s=0.05, message=lambda: f"still stale after the delete: {_error(stack)!r}")
    assert time.monotonic() - start < _CLEARED_WITHIN_S
