"""Secrets never leave the control plane (issue 9; docs/security.md, "The management API and secrets"):
not in /status, the log file, ListProxies or /metrics, even when the registry's error echoes them back.

Two registries: a loopback HTTP server that answers every request with a 500 echoing the request headers
(and a private key), and a real Consul agent with ACLs enforced (default deny), read once with the right
token and once with a wrong one. Tokens reach the server through files, never the command line.
"""

from __future__ import annotations

import http.client
import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from harness import ControlPlaneProcess, free_ports, wait_until
from harness.consul_acl import AclConsulAgent
from harness.controlplane import bootstrap_for
from harness.echo import EchoErrorServer
from harness.envoy import AdminError
from xds.management.v1 import management_pb2 as pb
from xds.management.v1 import management_pb2_grpc

# Every Envoy here runs once over state-of-the-world and once over delta xDS (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

POLICY = """\
services:
  - name: web
    connect_timeout: 1s
listeners:
  - name: ingress
    address: 127.0.0.1
    port: {port}
    routes:
      - name: all
        match: {{prefix: /}}
        backends: [{{service: web, weight: 100}}]
"""


def secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


class Observed:
    """Everything an operator or a scraper can read from one control plane."""

    def __init__(self, control_plane: ControlPlaneProcess, management_token: str) -> None:
        self.status = _admin_get(control_plane, "/status")
        self.metrics = _admin_get(control_plane, "/metrics")
        with grpc.insecure_channel(control_plane.management_address) as channel:
            listing = management_pb2_grpc.ManagementStub(channel).ListProxies(
                pb.ListProxiesRequest(), timeout=5,
                metadata=(("authorization", f"Bearer {management_token}"),))
        self.list_proxies = str(listing)
        self.source_errors = [s.error for s in listing.sources]
        self.log = control_plane.process.log_path.read_text()

    def assert_free_of(self, *values: str) -> None:
        for where in ("status", "metrics", "list_proxies", "log"):
            text = getattr(self, where)
            for value in values:
                assert value not in text, f"a secret leaked into {where}"


def _admin_get(control_plane: ControlPlaneProcess, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", control_plane.admin_port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _source_error(control_plane: ControlPlaneProcess) -> str:
    control_plane.process.check_alive()
    try:
        sources = json.loads(_admin_get(control_plane, "/status"))["sources"]
    except OSError:
        return ""
    return "".join(s["error"] for s in sources.values())


@pytest.fixture
def start_unready(workdir: Path) -> Iterator[Any]:
    """A control plane whose only source fails, so it never becomes ready (the factory waits for that)."""
    started: list[ControlPlaneProcess] = []

    def start(extra_args: tuple[str, ...], env: dict[str, str], name: str) -> ControlPlaneProcess:
        xds_port, admin_port, management_port = free_ports(3)
        control_plane = ControlPlaneProcess(None, workdir=workdir, xds_port=xds_port, admin_port=admin_port,
                                            management_port=management_port, extra_args=extra_args, env=env,
                                            name=name)
        started.append(control_plane)
        control_plane.start()
        wait_until(lambda: _source_error(control_plane) != "", timeout_s=15, ignore=(OSError, KeyError),
                   message=lambda: f"no source error reported; log:\n{control_plane.tail()}")
        return control_plane

    yield start
    for control_plane in started:
        control_plane.stop()


def test_a_registry_echoing_the_token_back_does_not_leak_it(tmp_path: Path, start_unready: Any) -> None:
    consul_token = str(uuid.uuid4())
    management_token = secrets.token_urlsafe(32)
    env = {"XDS_MANAGEMENT_TOKEN_FILE": str(secret_file(tmp_path / "mgmt.token", management_token))}
    with EchoErrorServer(status=500) as echo:
        control_plane = start_unready(
            ("--consul-address", echo.url, "--consul-token-file",
             str(secret_file(tmp_path / "consul.token", consul_token)), "--log-level", "DEBUG"),
            env, "control-plane-echo")
        # The registry really did receive (and echo) the token: the redaction is what keeps it in.
        assert consul_token in echo.seen("X-Consul-Token")
        observed = Observed(control_plane, management_token)

    assert all(consul_token not in arg for arg in control_plane.process.args)
    observed.assert_free_of(consul_token, management_token, "secretkeymaterial")
    # The error itself still reaches the operator, with the secrets cut out of it.
    (error,) = observed.source_errors
    assert "Consul answered 500" in error and "[REDACTED]" in error
    assert "X-Consul-Token: [REDACTED]" in observed.log
    status_errors = [s["error"] for s in json.loads(observed.status)["sources"].values()]
    assert status_errors == [error]


def test_real_consul_with_acls_never_shows_the_token(
        tmp_path: Path, consul_binary: Path, control_plane_factory: Any, envoy_factory: Any,
        start_unready: Any) -> None:
    consul = AclConsulAgent(tmp_path / "consul", binary=consul_binary)
    consul.start()
    try:
        port = free_ports(1)[0]
        consul.kv_put("xds/policies/edge", POLICY.format(port=port))
        consul.register_service("web", service_id="web-1", address="127.0.0.1", port=9)
        management_token = secrets.token_urlsafe(32)
        env = {"XDS_MANAGEMENT_TOKEN_FILE": str(secret_file(tmp_path / "mgmt.token", management_token))}
        consul_args = ("--consul-address", consul.url, "--consul-kv-prefix", "xds/policies/",
                       "--log-level", "DEBUG")

        good = control_plane_factory(None, env=env, extra_args=(
            *consul_args, "--consul-token-file", str(secret_file(tmp_path / "good.token", consul.token))))
        envoy = envoy_factory(lambda admin_port: bootstrap_for("envoy-1", "edge", xds_port=good.xds_port,
                                                               admin_port=admin_port))
        # Consul denies anonymous reads, so Envoy holding `web` proves the token was used.
        wait_until(lambda: envoy.listener_port("ingress") == port, timeout_s=15,
                   ignore=(KeyError, AdminError),
                   message="Envoy never got the ingress listener from the ACL-protected KV")
        assert "web" in {s["name"] for s in envoy.clusters_json()["cluster_statuses"]}

        wrong_token = str(uuid.uuid4())
        bad = start_unready((*consul_args, "--consul-token-file",
                             str(secret_file(tmp_path / "bad.token", wrong_token))), env, "control-plane-bad")
        for control_plane in (good, bad):
            observed = Observed(control_plane, management_token)
            observed.assert_free_of(consul.token, wrong_token, management_token)
        (error,) = Observed(bad, management_token).source_errors
        assert "403" in error and "ACL not found" in error
    finally:
        consul.stop()

