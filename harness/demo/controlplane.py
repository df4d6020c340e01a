"""The control plane as a child process serving the demo's catalog, and the versions it serves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc

from harness import ControlPlaneProcess, ProcessExitedError, free_ports
from harness.demo.constants import ADMIN_POLL_TIMEOUT_S, PORT_ATTEMPTS, STARTUP_TIMEOUT_S
from xds.management.v1 import management_pb2 as pb
from xds.management.v1 import management_pb2_grpc
from xds.typeurls import ROUTE


class ControlPlaneView:
    """The RDS version the control plane serves each node group, read from its management API."""

    def __init__(self, management_address: str) -> None:
        self._channel = grpc.insecure_channel(management_address)
        self._stub = management_pb2_grpc.ManagementStub(self._channel)

    def route_version(self, group: str) -> str | None:
        try:
            request = pb.GetSnapshotRequest(group=group)
            response = self._stub.GetSnapshot(request, timeout=ADMIN_POLL_TIMEOUT_S)
        except grpc.RpcError:
            return None
        for version in response.versions:
            if version.type_url == ROUTE:
                return str(version.version)
        return None

    def close(self) -> None:
        self._channel.close()


def start_control_plane(catalog: Path, *, workdir: Path,
                        on_start: Callable[[ControlPlaneProcess], None]) -> ControlPlaneProcess:
    """The control plane serving `catalog`, ready; `on_start` gets each process as soon as it runs.

    `on_start` lets the caller own the process before it is ready, so an interrupt while waiting still
    stops it.
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        xds_port, admin_port = free_ports(2)
        control_plane = ControlPlaneProcess(catalog, workdir=workdir, xds_port=xds_port,
                                            admin_port=admin_port, extra_args=("--log-format", "text"))
        on_start(control_plane)
        control_plane.start()
        try:
            control_plane.wait_ready(STARTUP_TIMEOUT_S)
        except ProcessExitedError:
            # Another process may take a port between free_ports() and the child's bind: retry then.
            if attempt == PORT_ATTEMPTS or not lost_port_race(control_plane.tail(200)):
                raise
            control_plane.stop()
            continue
        return control_plane
    raise AssertionError("unreachable: the last attempt returns or raises")


def lost_port_race(log_text: str) -> bool:
    # errno 98 from Python's own sockets, "Failed to bind" from grpc's server.add_insecure_port.
    text = log_text.lower()
    return "address already in use" in text or "failed to bind" in text
