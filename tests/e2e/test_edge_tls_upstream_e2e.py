"""Upstream TLS origination (issue 9 item 7): Envoy speaks TLS to a real HTTPS server on loopback, checks its
certificate against the CA bundle the control plane read from a file, and its SAN against the policy.

One control plane, one Envoy, one HTTPS upstream whose certificate names `secure.test`, signed by a test CA
(harness/pki_edge.py). The policy file is edited as an operator would; every step is observed through real
HTTP requests, Envoy's own TLS stats and the control plane's /status.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import wait_until
from harness.controlplane import bootstrap_for
from harness.envoy import AdminError
from harness.pki_edge import TestCa, write_atomically
from harness.ports import free_port
from harness.tls_upstream import TlsUpstream
from tests.e2e.conftest import ControlPlaneFactory, EnvoyFactory

# Every Envoy here runs once over state-of-the-world and once over delta xDS (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

SERVER_NAME = "secure.test"


@pytest.fixture
def tls_upstream() -> Iterator[tuple[TestCa, TlsUpstream]]:
    ca = TestCa()
    upstream = TlsUpstream("secure-1", ca.issue(SERVER_NAME))
    upstream.start()
    yield ca, upstream
    upstream.stop()


def _document(listener_port: int, upstream_port: int, tls: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "version": 1,
        "services": [{"name": "secure", "tls": tls,
                      "endpoints": [{"address": f"127.0.0.1:{upstream_port}"}]}],
        "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": listener_port,
                       "routes": [{"name": "all", "backends": [{"service": "secure"}]}]}],
    })


def _get(port: int) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()



def test_upstream_tls_origination_checks_ca_and_san_and_keeps_last_good(
        workdir: Path, tls_upstream: tuple[TestCa, TlsUpstream], control_plane_factory: ControlPlaneFactory,
        envoy_factory: EnvoyFactory) -> None:
    ca, upstream = tls_upstream
    ca_file = workdir / "ca.pem"
    write_atomically(ca_file, ca.cert_pem)
    catalog = workdir / "catalog.yaml"
    listener_port = free_port()

    def write(tls: dict[str, Any]) -> None:
        write_atomically(catalog, _document(listener_port, upstream.port, tls).encode())

    write({"ca_file": str(ca_file), "sni": SERVER_NAME})
    control_plane = control_plane_factory(catalog)
    envoy = envoy_factory(lambda admin_port: bootstrap_for("envoy-1", "edge", xds_port=control_plane.xds_port,
                                                           admin_port=admin_port))
    wait_until(lambda: envoy.listener_port("ingress") == listener_port, timeout_s=15,
               message="Envoy never bound the ingress listener", ignore=(KeyError, AdminError))

    # 1. TLS to the upstream, SAN defaulting to the SNI: the request arrives over TLS.
    assert wait_until(lambda: _get(listener_port) == (200, "secure-1"), timeout_s=10,
                      message=lambda: f"no 200 through TLS: {_get(listener_port)}")
    assert envoy.cluster_stat("secure", "ssl.handshake") >= 1
    assert upstream.requests >= 1
    assert envoy.update_rejected_total() == 0

    # 2. Bad input, each with a located error naming the file, while the last good config keeps serving.
    served = upstream.requests
    write({"ca_file": str(workdir / "missing-ca.pem"), "sni": SERVER_NAME})
    wait_until(lambda: "missing-ca.pem" in control_plane.status()["policy_error"], timeout_s=10,
               message=lambda: f"no error for the missing CA file: {control_plane.status()}")
    error = control_plane.status()["policy_error"]
    assert f"{workdir / 'missing-ca.pem'}: cannot read the file" in error
    assert "service 'secure' tls.ca_file" in error
    assert _get(listener_port) == (200, "secure-1")

    write({"ca_file": str(ca_file), "sni": SERVER_NAME})  # back to the good file...
    wait_until(lambda: control_plane.status()["policy_error"] == "", timeout_s=10,
               message="the policy error did not clear")
    write_atomically(ca_file, b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    wait_until(lambda: str(ca_file) in control_plane.status()["tls_files"], timeout_s=10,
               message=lambda: f"malformed CA not reported: {control_plane.status()}")
    assert "malformed PEM" in control_plane.status()["tls_files"][str(ca_file)]
    assert _get(listener_port) == (200, "secure-1")  # ...whose last good content still serves
    assert envoy.update_rejected_total() == 0
    write_atomically(ca_file, ca.cert_pem)
    wait_until(lambda: control_plane.status()["tls_files"] == {}, timeout_s=10,
               message="the CA file error did not clear")
    assert upstream.requests > served

    # 3. A SAN the upstream's certificate does not carry: the handshake fails in Envoy, 503, counted.
    write({"ca_file": str(ca_file), "sni": SERVER_NAME, "subject_alt_names": ["other.test"]})
    wait_until(lambda: _get(listener_port)[0] == 503, timeout_s=10,
               message=lambda: f"a SAN mismatch still answered {_get(listener_port)}")
    assert envoy.cluster_stat("secure", "ssl.fail_verify_san") >= 1

    # 4. A CA that did not sign the upstream's certificate fails the same way, on verification of the chain.
    other_ca = workdir / "other-ca.pem"
    write_atomically(other_ca, TestCa("another CA").cert_pem)
    write({"ca_file": str(other_ca), "sni": SERVER_NAME})

    def verify_failed() -> bool:
        status, _ = _get(listener_port)  # each request tries a new handshake with the current cluster
        return status == 503 and envoy.cluster_stat("secure", "ssl.fail_verify_error") >= 1

    wait_until(verify_failed, timeout_s=10, message="no chain verification error with another CA")
    assert envoy.update_rejected_total() == 0
    # Nothing of the PEM files reaches the status page or the log.
    assert "BEGIN" not in json.dumps(control_plane.status())
    assert "BEGIN" not in control_plane.tail(400)
    os.remove(other_ca)
