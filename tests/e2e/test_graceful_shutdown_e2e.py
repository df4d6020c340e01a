"""Stopping `xds serve` with Envoys connected is quiet (issue 14 item 6; docs/operations.md "Rolling
restarts"): SIGTERM or SIGINT ends the process with exit code 0 within the shutdown grace, and its log has no
ERROR line and no traceback, so a rolling restart pages nobody. Real control plane process, real Envoy."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness import UpstreamPool
from harness.processes import ManagedProcess

from .conftest import ControlPlaneFactory, EnvoyFactory
from .stack import start_stack
from .test_consul_e2e import ConsulStack, consul_stack, register  # noqa: F401 (fixture)

# The gRPC grace (xds/app.py SHUTDOWN_GRACE_S) plus the interpreter's own exit; well under the harness's
# 10 s SIGKILL fallback, so a hang shows up as a failure here rather than as a kill.
_EXIT_WITHIN_S = 5.0
_ADS = "envoy.service.discovery.v3.AggregatedDiscoveryService"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_envoy_connected_exits_cleanly(
        sig: signal.Signals, workdir: Path, upstreams: Callable[..., UpstreamPool],
        control_plane_factory: ControlPlaneFactory, envoy_factory: EnvoyFactory) -> None:
    pool = upstreams("a")
    stack = start_stack(workdir=workdir, pool=pool, services={"web": [("a", {})]},
                        backends=[("web", None, 100)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory)
    # The Envoy holds open ADS streams (it bound the listener the control plane sent it) at the signal.
    assert stack.envoy.listener_port("ingress") == stack.catalog.listener_port
    _stop_quietly(stack.control_plane.process, sig)
    # Envoy keeps serving the last config it got while the control plane is away (docs/protocol.md R27).
    assert stack.envoy.listener_port("ingress") == stack.catalog.listener_port


def test_sigterm_with_consul_source_and_envoy_connected_exits_cleanly(
        consul_stack: Callable[..., ConsulStack], upstreams: Callable[..., UpstreamPool]) -> None:  # noqa: F811
    """The Consul source's blocking queries and KV status loop are cancelled mid-wait: still no ERROR."""
    pool = upstreams("a")
    stack = consul_stack(services=["web"], routes=[("/", [("web", None, 100)])])
    register(stack.consul, pool, "a")
    stack.wait_hosts("web", {pool["a"].port: "HEALTHY"})
    _stop_quietly(stack.control_plane.process, signal.SIGTERM)


def _stop_quietly(process: ManagedProcess, sig: signal.Signals | None) -> None:
    """Send `sig` (None: the caller already did) and check the exit: code 0, in time, no ERROR."""
    start = time.monotonic()
    if sig is not None:
        process.kill(sig)
    code = process.wait(timeout_s=_EXIT_WITHIN_S)
    took = time.monotonic() - start
    log = process.log_path.read_text(errors="replace")
    assert code == 0, f"exit code {code} after {sig}; log tail:\n{process.tail()}"
    assert took < _EXIT_WITHIN_S
    assert "Traceback" not in log, log[-3000:]
    assert _error_lines(log) == [], log[-3000:]
    assert "shutting_down" in log and "stopped" in log


def _error_lines(log: str) -> list[str]:
    """Lines logged at ERROR or above, in either log format (json: a "level" field; text: the level word)."""
    found = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            if str(record.get("level", "")).lower() in ("error", "critical"):
                found.append(line)
        elif re.search(r"\b(ERROR|CRITICAL)\b", line):
            found.append(line)
    return found


def test_sigterm_with_a_health_watch_open_reports_not_serving_and_exits_cleanly(
        workdir: Path, upstreams: Callable[..., UpstreamPool],
        control_plane_factory: ControlPlaneFactory, envoy_factory: EnvoyFactory) -> None:
    """A load balancer watching gRPC health sees NOT_SERVING first; its open Watch does not make an ERROR."""
    pool = upstreams("a")
    stack = start_stack(workdir=workdir, pool=pool, services={"web": [("a", {})]},
                        backends=[("web", None, 100)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory)
    channel = grpc.insecure_channel(stack.control_plane.xds_address)
    try:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=_ADS), timeout=_EXIT_WITHIN_S + 5)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        stack.control_plane.process.kill(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        _stop_quietly(stack.control_plane.process, None)
    finally:
        channel.close()
