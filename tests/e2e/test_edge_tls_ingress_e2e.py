"""Ingress TLS termination (issue 9 item 7): one listener, one port, two host names, each served its own
certificate by SNI; the certificates come from files the control plane reads and reach Envoy over SDS, so a
rotated file is served without a restart, and a bad file leaves the last good certificate serving.

Every check is a real TLS handshake from Python's `ssl` client with SNI, reading the certificate Envoy
presents (its serial number and SAN), then a real HTTPS request through Envoy to a plaintext upstream.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from harness import UpstreamPool, wait_until
from harness.controlplane import bootstrap_for
from harness.envoy import AdminError
from harness.pki_edge import Issued, TestCa, other_key_pem, write_atomically
from harness.ports import free_port
from tests.e2e.conftest import ControlPlaneFactory, EnvoyFactory

# Every Envoy here runs once over state-of-the-world and once over delta xDS (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

A, B = "shop.example.test", "blog.example.test"


def _handshake(port: int, server_name: str, ca: TestCa) -> tuple[int, list[str]]:
    """(serial, DNS SANs) of the certificate Envoy serves for `server_name`, verified against the test CA."""
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return cert.serial_number, list(sans.get_values_for_type(x509.DNSName))


def _https_get(port: int, server_name: str, ca: TestCa) -> tuple[int, str]:
    """One HTTP/1.1 GET over TLS with SNI `server_name` (connecting by IP): (status, body)."""
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        response.begin()
        return response.status, response.read().decode()



def test_two_host_names_on_one_port_rotation_and_bad_files(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: ControlPlaneFactory,
        envoy_factory: EnvoyFactory) -> None:
    pool = upstreams("web-1")
    ca = TestCa()
    files = {name: (workdir / f"{name}.pem", workdir / f"{name}.key") for name in (A, B)}
    issued: dict[str, Issued] = {name: ca.issue(name) for name in (A, B)}
    for name, (cert, key) in files.items():
        issued[name].write(cert, key)
    port = free_port()
    catalog = workdir / "catalog.yaml"
    write_atomically(catalog, yaml.safe_dump({
        "version": 1,
        "services": [{"name": "web", "endpoints": [{"address": f"127.0.0.1:{pool['web-1'].port}"}]}],
        "listeners": [{
            "name": "edge", "address": "127.0.0.1", "port": port,
            "tls": {"certificates": [
                {"cert_file": str(files[n][0]), "key_file": str(files[n][1]), "server_names": [n]}
                for n in (A, B)]},
            "routes": [{"name": "all", "backends": [{"service": "web"}]}],
        }],
    }).encode())
    control_plane = control_plane_factory(catalog)
    envoy = envoy_factory(lambda admin_port: bootstrap_for("envoy-1", "edge", xds_port=control_plane.xds_port,
                                                           admin_port=admin_port))
    wait_until(lambda: envoy.listener_port("edge") == port, timeout_s=15,
               message="Envoy never bound the TLS listener", ignore=(KeyError, AdminError))

    # 1. Each name gets its own certificate on the one port, and HTTPS goes through to the upstream.
    for name in (A, B):
        served = wait_until(lambda name=name: _handshake(port, name, ca), timeout_s=10,  # type: ignore[misc]
                            message=f"no TLS handshake for {name}", ignore=(OSError,))
        assert served == (issued[name].serial, [name])
        assert _https_get(port, name, ca) == (200, "web-1")
    assert envoy.counter(f"listener.127.0.0.1_{port}.ssl.handshake") >= 2
    listener_updates = envoy.counter("listener_manager.listener_modified")
    pid = envoy.process.pid

    # 2. Rotate A's files: the new certificate is served without a restart and without a listener change.
    rotated = ca.issue(A)
    rotated.write(*files[A])
    wait_until(lambda: _handshake(port, A, ca)[0] == rotated.serial, timeout_s=10,
               message=lambda: f"still serving serial {_handshake(port, A, ca)[0]}, not {rotated.serial}")
    assert _handshake(port, B, ca)[0] == issued[B].serial
    assert envoy.process.pid == pid
    assert envoy.counter("listener_manager.listener_modified") == listener_updates
    assert _https_get(port, A, ca) == (200, "web-1")

    # 3. Bad files: each named in /status, while the last good certificate keeps serving.
    cert_a, key_a = files[A]
    write_atomically(cert_a, b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    wait_until(lambda: str(cert_a) in control_plane.status()["tls_files"], timeout_s=10,
               message=lambda: f"malformed certificate not reported: {control_plane.status()}")
    assert "malformed PEM" in control_plane.status()["tls_files"][str(cert_a)]
    assert _handshake(port, A, ca)[0] == rotated.serial

    write_atomically(cert_a, rotated.cert_pem)
    write_atomically(key_a, other_key_pem())
    wait_until(lambda: str(key_a) in control_plane.status()["tls_files"], timeout_s=10,
               message=lambda: f"mismatched key not reported: {control_plane.status()}")
    assert (control_plane.status()["tls_files"][str(key_a)]
            == f"the private key does not match the certificate in {cert_a}")
    assert _handshake(port, A, ca)[0] == rotated.serial

    ca.issue(A, san=False).write(cert_a, key_a)

    def problem(path: Path) -> str:
        result: str = control_plane.status()["tls_files"].get(str(path), "")
        return result

    wait_until(lambda: "no subjectAltName" in problem(cert_a), timeout_s=10,
               message="a certificate without SAN was not reported")
    assert _handshake(port, A, ca)[0] == rotated.serial
    assert _https_get(port, A, ca) == (200, "web-1")
    assert envoy.update_rejected_total() == 0

    # No key material anywhere the operator looks.
    status_text = json.dumps(control_plane.status())
    assert "PRIVATE" not in status_text and "BEGIN" not in status_text
    assert "PRIVATE KEY" not in control_plane.tail(1000)
