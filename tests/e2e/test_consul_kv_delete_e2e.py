"""Deleting an invalid Consul KV policy key clears the source's error at once (issue 14 item 6): before
the fix the source stayed STALE, and `xds_source_stale` at 1, until an unrelated catalog change. Real
Consul, real control plane process, real Envoy."""

from __future__ import annotations

import time
from collections.abc import Callable

from harness import UpstreamPool, wait_until

from .test_consul_e2e import ConsulStack, _status, consul_stack, register  # noqa: F401 (fixture)

BAD_KEY = "xds/policies/zz-bad"
# The KV watch answers within milliseconds of a change; a few seconds leave room on a loaded machine,
# far below the catalog changes the old behaviour waited for (none happen in this test).
_CLEARED_WITHIN_S = 5.0


def _stale(stack: ConsulStack) -> float:
    for line in stack.control_plane.metrics_text().splitlines():
        if line.startswith("xds_source_stale{") and "consul" in line:
            return float(line.split()[-1])
    raise AssertionError("xds_source_stale of the consul source not in /metrics")


def _error(stack: ConsulStack) -> str:
    sources = stack.control_plane.status()["sources"]
    return "".join(str(s.get("error", "")) for name, s in sources.items() if name.startswith("consul:"))


def test_deleting_a_never_valid_kv_key_clears_stale_at_once(
        consul_stack: Callable[..., ConsulStack], upstreams: Callable[..., UpstreamPool]) -> None:  # noqa: F811
    pool = upstreams("a")
    stack = consul_stack(services=["web"], routes=[("/", [("web", None, 100)])])
    register(stack.consul, pool, "a")
    stack.wait_hosts("web", {pool["a"].port: "HEALTHY"})
    assert _stale(stack) == 0

    stack.consul.kv_put(BAD_KEY, "listeners:\n  - name: other\n    port: eighty\n")
    wait_until(lambda: _stale(stack) == 1 and BAD_KEY in _error(stack), timeout_s=10,
               message=lambda: f"the bad key was never reported: {_error(stack)!r}")
    assert any(line.startswith("consul:") and "STALE" in line for line in _status(stack).splitlines())

    stack.consul.kv_delete(BAD_KEY)
    start = time.monotonic()
    wait_until(lambda: _stale(stack) == 0 and _error(stack) == "", timeout_s=_CLEARED_WITHIN_S,
               interval_s=0.05, message=lambda: f"still stale after the delete: {_error(stack)!r}")
    cleared_s = time.monotonic() - start
    assert not any("STALE" in line for line in _status(stack).splitlines()), _status(stack)
    assert cleared_s < _CLEARED_WITHIN_S
