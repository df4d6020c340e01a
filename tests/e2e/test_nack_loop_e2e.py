"""The closed NACK loop with real Envoy (issue 11 item 4; docs/protocol.md NL1-NL4).

Two rejections Envoy really makes and our validation cannot foresee: a new listener on a port another
process holds (EADDRINUSE; no version of it was ever accepted, so it is withheld), and an existing listener
moved to an address this host does not have (EADDRNOTAVAIL; its last accepted version keeps serving).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

import pytest

from harness import UpstreamPool, free_port, run_requests, wait_until

from .stack import Stack, start_stack

# Every test here runs against Envoy in state-of-the-world and in delta mode (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

ROUTES = [{"match": {"prefix": "/"}, "backends": [{"service": "web"}]}]


@pytest.fixture
def stack(workdir: Any, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
          envoy_factory: Any) -> Stack:
    pool = upstreams("web-1")
    return start_stack(workdir=workdir, pool=pool, services={"web": [("web-1", {})]},
                       backends=[("web", None, 100)], control_plane_factory=control_plane_factory,
                       envoy_factory=envoy_factory)


def _quarantined(stack: Stack, name: str) -> dict[str, Any] | None:
    for entry in stack.admin_status()["quarantined"]:
        if entry["name"] == name and entry["quarantined_at"] is not None:
            return dict(entry)
    return None


def _synced_status(stack: Stack) -> str:
    """`xds status` once no stream shows a NACK any more ("" before)."""
    text = stack.status_text()
    return "" if "NACKED" in text else text


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _lds_pushes(stack: Stack) -> float:
    return _metric(stack.control_plane.metrics_text(), 'xds_pushes_total{type="lds"}')


def test_listener_on_a_port_in_use_is_withheld_and_the_rest_of_the_update_goes_through(stack: Stack) -> None:
    blocker = socket.socket()  # no SO_REUSEPORT: Envoy's reuse_port bind of the same port fails
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        taken = blocker.getsockname()[1]
        other_port = free_port()
        # One LDS update: a listener Envoy cannot bind, and one it can.
        stack.catalog.extra_listeners = [
            {"name": "blocked", "address": "127.0.0.1", "port": taken, "routes": ROUTES},
            {"name": "second", "address": "127.0.0.1", "port": other_port, "routes": ROUTES}]
        stack.catalog.write()
        entry = wait_until(lambda: _quarantined(stack, "blocked"), timeout_s=15,
                           message="the rejected listener was never quarantined")
        assert entry["type"] == "lds" and entry["node_ids"] == ["envoy-1"]
        assert entry["serving"] == "withheld" and "blocked" in entry["message"]
        print(f"\nNACK -> quarantine (port in use): {entry['quarantined_at'] - entry['nacked_at']:.3f} s")
        # The rest of the update went through, and Envoy accepted the quarantined version: SYNCED.
        wait_until(lambda: stack.envoy.listener_port("second") == other_port, timeout_s=10,
                   message="the listener beside the rejected one never came up")
        assert run_requests(f"http://127.0.0.1:{other_port}/", count=50).non_2xx == 0
        text = wait_until(lambda: _synced_status(stack), timeout_s=10,
                          message="the stream never ACKed the quarantined snapshot")
        assert re.search(r"^blocked\s+LDS\s+edge\s+withheld\s+envoy-1\s", text, re.M), text
        metrics = stack.control_plane.metrics_text()
        assert _metric(metrics, 'xds_quarantined_resources{group="edge",resource="blocked",type="lds"}') == 1
        rejected = stack.envoy.update_rejected_total()
        # A later change of the same type does not re-send the rejected listener (it was re-rejected before).
        pushes = _lds_pushes(stack)
        third_port = free_port()
        stack.catalog.extra_listeners.append(
            {"name": "third", "address": "127.0.0.1", "port": third_port, "routes": ROUTES})
        stack.catalog.write()
        wait_until(lambda: stack.envoy.listener_port("third") == third_port, timeout_s=10,
                   message="a later listener never came up", ignore=(KeyError,))
        assert _lds_pushes(stack) > pushes
        assert stack.envoy.update_rejected_total() == rejected
        assert _quarantined(stack, "blocked") is not None
    finally:
        blocker.close()
    # The input changes (another port): tried once, accepted, out of quarantine.
    free = free_port()
    stack.catalog.extra_listeners[0]["port"] = free
    stack.catalog.write()
    wait_until(lambda: stack.envoy.listener_port("blocked") == free, timeout_s=10,
               message="the fixed listener was never tried again", ignore=(KeyError,))
    wait_until(lambda: stack.admin_status()["quarantined"] == [], timeout_s=10,
               message="the fixed listener stayed quarantined")
    assert stack.envoy.update_rejected_total() == rejected
    metrics = stack.control_plane.metrics_text()
    assert _metric(metrics, "xds_quarantine_retries_total") >= 1


def test_listener_moved_to_a_foreign_address_keeps_its_last_accepted_version(stack: Stack) -> None:
    port = stack.catalog.listener_port
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is on no interface of this host: Envoy cannot bind it.
    stack.catalog.extra_listeners = [{"name": "moved", "address": "127.0.0.1", "port": free_port(),
                                      "routes": ROUTES}]
    stack.catalog.write()
    wait_until(lambda: stack.envoy.listener_port("moved") > 0, timeout_s=10,
               message="the listener never came up", ignore=(KeyError,))
    good_port = stack.envoy.listener_port("moved")
    stack.catalog.extra_listeners[0]["address"] = "192.0.2.1"
    stack.catalog.write()
    entry = wait_until(lambda: _quarantined(stack, "moved"), timeout_s=15,
                       message="the rejected listener was never quarantined")
    assert entry["serving"] == "last-acked" and "moved" in entry["message"], entry
    print(f"\nNACK -> quarantine (foreign address): {entry['quarantined_at'] - entry['nacked_at']:.3f} s")
    wait_until(lambda: "NACKED" not in stack.status_text(), timeout_s=10,
               message="the stream never ACKed the quarantined snapshot")
    # The last accepted listener keeps serving, and the ingress listener is untouched.
    assert stack.envoy.listener_port("moved") == good_port
    assert run_requests(f"http://127.0.0.1:{good_port}/", count=50).non_2xx == 0
    assert run_requests(f"http://127.0.0.1:{port}/", count=50).non_2xx == 0
