"""The management API on its own listener with bearer tokens (issue 9, docs/security.md "The management API
and secrets"): a real `xds serve` process, a real Envoy connected to it, real gRPC calls and `xds status`."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from harness import ControlPlaneProcess, wait_until
from harness.controlplane import bootstrap_for
from xds.management.v1 import management_pb2 as pb
from xds.management.v1 import management_pb2_grpc

# Every Envoy here runs once over state-of-the-world and once over delta xDS (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

CATALOG = """\
version: 1
services:
  - name: web
    connect_timeout: 1s
    endpoints:
      - address: 127.0.0.1:9
"""
LIST = "/xds.management.v1.Management/ListProxies"


def write_token_file(path: Path, *tokens: str) -> Path:
    path.write_text("# management tokens, one per line\n" + "".join(f"{t}\n" for t in tokens))
    path.chmod(0o600)
    return path


def list_proxies(address: str, token: str | None) -> pb.ListProxiesResponse:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    with grpc.insecure_channel(address) as channel:
        response: pb.ListProxiesResponse = management_pb2_grpc.ManagementStub(channel).ListProxies(
            pb.ListProxiesRequest(), timeout=5, metadata=metadata)
        return response


def denied(control_plane: ControlPlaneProcess) -> dict[str, float]:
    pattern = re.compile(r'^xds_management_denied_total\{reason="(\w+)"\} ([0-9.e+]+)$', re.MULTILINE)
    return {reason: float(value) for reason, value in pattern.findall(control_plane.metrics_text())}


def xds_status(control_plane: ControlPlaneProcess, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("XDS_MANAGEMENT_")}
    return subprocess.run([sys.executable, "-m", "xds", "status", "--management-address",
                           control_plane.management_address, *args],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={**clean, **(env or {})})


@pytest.fixture
def secured(tmp_path: Path, control_plane_factory: Any, envoy_factory: Any
            ) -> tuple[ControlPlaneProcess, str, Path]:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    token = secrets.token_urlsafe(32)
    token_file = write_token_file(tmp_path / "read.token", token)
    # The token reaches the server through a variable naming the file: nothing secret on the command line.
    control_plane = control_plane_factory(catalog, env={"XDS_MANAGEMENT_TOKEN_FILE": str(token_file)})
    assert token not in " ".join(control_plane.process.args)
    envoy_factory(lambda admin_port: bootstrap_for("envoy-1", "edge", xds_port=control_plane.xds_port,
                                                   admin_port=admin_port))
    wait_until(lambda: [p.node_id for p in list_proxies(control_plane.management_address, token).proxies]
               == ["envoy-1"], timeout_s=15, message="envoy-1 never showed in ListProxies")
    return control_plane, token, token_file


def test_tokens_gate_the_management_api_and_denials_are_counted(
        secured: tuple[ControlPlaneProcess, str, Path]) -> None:
    control_plane, token, _ = secured
    before = denied(control_plane)
    assert before == {"missing_token": 0, "invalid_token": 0, "insufficient_role": 0}

    with pytest.raises(grpc.RpcError) as no_token:
        list_proxies(control_plane.management_address, None)
    assert no_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as wrong:
        list_proxies(control_plane.management_address, secrets.token_urlsafe(32))
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A prefix of the right token is as wrong as any other guess.
    with pytest.raises(grpc.RpcError) as prefix:
        list_proxies(control_plane.management_address, token[:-1])
    assert prefix.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert denied(control_plane) == {"missing_token": 1, "invalid_token": 2, "insufficient_role": 0}

    # The read-only token lists proxies and reads a snapshot.
    proxies = list_proxies(control_plane.management_address, token).proxies
    assert [(p.node_id, p.group) for p in proxies] == [("envoy-1", "edge")]
    with grpc.insecure_channel(control_plane.management_address) as channel:
        snapshot = management_pb2_grpc.ManagementStub(channel).GetSnapshot(
            pb.GetSnapshotRequest(group="edge"), timeout=5, metadata=(("authorization", f"Bearer {token}"),))
    served = {v.type_url.rsplit(".", 1)[-1] for v in snapshot.versions}
    assert snapshot.group == "edge" and {"Cluster", "ClusterLoadAssignment", "Listener",
                                         "RouteConfiguration"} <= served, served

    # The xDS port no longer serves the management API, with or without a token.
    with pytest.raises(grpc.RpcError) as on_xds:
        list_proxies(control_plane.xds_address, token)
    assert on_xds.value.code() == grpc.StatusCode.UNIMPLEMENTED

    # Denials are logged with the reason, never with the token that was tried.
    log = control_plane.process.log_path.read_text()
    assert log.count('"event": "management_denied"') == 3
    assert token not in log and token[:-1] not in log
    assert token not in control_plane.metrics_text()


def test_xds_status_sends_the_token_from_a_file_or_the_environment(
        secured: tuple[ControlPlaneProcess, str, Path]) -> None:
    control_plane, token, token_file = secured
    by_file = xds_status(control_plane, "--token-file", str(token_file))
    assert by_file.returncode == 0, by_file.stderr
    assert re.search(r"^envoy-1\s+edge\s+SYNCED", by_file.stdout, re.MULTILINE), by_file.stdout

    by_env = xds_status(control_plane, "--group", "edge", env={"XDS_MANAGEMENT_TOKEN": token})
    assert by_env.returncode == 0, by_env.stderr
    assert "group edge" in by_env.stdout and "envoy-1" in by_env.stdout

    without = xds_status(control_plane)
    assert without.returncode == 1
    assert "UNAUTHENTICATED" in without.stderr and "--token-file" in without.stderr

    # The old address is refused with a pointer to the new flag rather than a confusing gRPC error.
    moved = xds_status(control_plane, "--xds-address", control_plane.xds_address)
    assert moved.returncode == 2 and "--management-address" in moved.stderr


def test_a_rotated_token_file_takes_effect_without_a_restart(
        secured: tuple[ControlPlaneProcess, str, Path]) -> None:
    control_plane, old, token_file = secured
    new = secrets.token_urlsafe(32)
    # Both for the overlap, then the new one alone: the file is re-read when it changes.
    write_token_file(token_file, old, new)
    wait_until(lambda: len(list_proxies(control_plane.management_address, new).proxies) == 1, timeout_s=10,
               ignore=(grpc.RpcError,), message="the new token was never accepted")
    assert len(list_proxies(control_plane.management_address, old).proxies) == 1
    write_token_file(token_file, new)

    def old_refused() -> bool:
        try:
            list_proxies(control_plane.management_address, old)
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNAUTHENTICATED
        return False

    wait_until(old_refused, timeout_s=10, message="the removed token still works")
    assert len(list_proxies(control_plane.management_address, new).proxies) == 1
    log = control_plane.process.log_path.read_text()
    assert old not in log and new not in log


def test_serve_refuses_a_non_loopback_management_address_without_a_token(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("XDS_")}
    result = subprocess.run([sys.executable, "-m", "xds", "serve", "--config", str(catalog),
                             "--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0",
                             "--management-address", "0.0.0.0:0"],
                            capture_output=True, text=True, timeout=30, check=False, env=clean)
    assert result.returncode != 0
    assert "0.0.0.0:0 is not a loopback address and no management token is configured" in result.stderr
