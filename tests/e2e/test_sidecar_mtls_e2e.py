"""Sidecar mTLS and authorization with workload certificates over SDS (issue 9, items 4-6), on real Envoys.

Three sidecars of one control plane (docs/security.md "Workload certificates (SDS), sidecar mTLS and
authorization"):

* B (node group `b`) has the inbound listener of service `b` (`inbound_for: b`) in front of a real upstream
  (`b-app`); `b` is `mtls: strict` and its authorization allows group `a` only.
* A (group `a`) and C (group `c`) each have an outbound listener routing to `b`; their clusters for `b`
  originate mTLS with their own workload certificate and check B's SAN.

Every certificate comes from the control plane's development CA over SDS: nothing is written to disk.
"""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import (
    ControlPlaneProcess,
    EnvoyProcess,
    SteadyLoad,
    UpstreamPool,
    free_ports,
    run_requests,
    wait_until,
)
from harness.controlplane import bootstrap_for
from harness.envoy import AdminError
from harness.pki import CertificateAuthority, install_set, spiffe_id

# Every test here runs against Envoy in state-of-the-world and in delta mode (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

A_ID, B_ID, C_ID = "spiffe://xds.local/group/a", "spiffe://xds.local/group/b", "spiffe://xds.local/group/c"


@dataclass
class Mesh:
    control_plane: ControlPlaneProcess
    a: EnvoyProcess
    b: EnvoyProcess
    c: EnvoyProcess
    ports: dict[str, int]

    def url(self, listener: str, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.ports[listener]}{path}"


def document(ports: dict[str, int], app_port: int, mode: str = "strict") -> dict[str, Any]:
    return {
        "version": 1,
        "services": [
            {"name": "b", "mtls": mode,
             "authorization": [{"identities": ["a"]}],
             # Short-lived upstream connections: A opens new mTLS connections to B all the time, so the
             # rotation test sees fresh handshakes with each new certificate, not one long-lived connection.
             "upstream_connection": {"max_requests_per_connection": 20},
             "endpoints": [{"address": f"127.0.0.1:{ports['b-in']}"}]},
            {"name": "b-app", "endpoints": [{"address": f"127.0.0.1:{app_port}"}]},
        ],
        "listeners": [
            {"name": "a-out", "address": "127.0.0.1", "port": ports["a-out"], "groups": ["a"],
             "routes": [{"backends": [{"service": "b"}], "retries": 0}]},
            {"name": "c-out", "address": "127.0.0.1", "port": ports["c-out"], "groups": ["c"],
             "routes": [{"backends": [{"service": "b"}]}]},
            {"name": "b-in", "address": "127.0.0.1", "port": ports["b-in"], "inbound_for": "b",
             "routes": [{"backends": [{"service": "b-app"}]}]},
        ],
    }


def start_mesh(workdir: Path, pool: UpstreamPool, control_plane_factory: Callable[..., ControlPlaneProcess],
               envoy_factory: Callable[..., EnvoyProcess], *extra_args: str,
               tls_args: Callable[[str], tuple[str, ...]] = lambda group: ()) -> Mesh:
    """The three sidecars and their control plane; `tls_args(group)`: `xds bootstrap` TLS flags."""
    ports = dict(zip(("a-out", "b-in", "c-out"), free_ports(3), strict=True))
    catalog = workdir / "mesh.yaml"
    catalog.write_text(yaml.safe_dump(document(ports, pool["b-app"].port), sort_keys=False))
    control_plane = control_plane_factory(catalog, extra_args=extra_args)

    def sidecar(group: str) -> EnvoyProcess:
        return envoy_factory(lambda admin_port: bootstrap_for(
            f"{group}-1", group, xds_port=control_plane.xds_port, admin_port=admin_port,
            tls_args=tls_args(group)))

    b = sidecar("b")  # first, so its inbound side is up when A and C send traffic
    mesh = Mesh(control_plane, a=sidecar("a"), b=b, c=sidecar("c"), ports=ports)
    for envoy, listener in ((mesh.a, "a-out"), (mesh.b, "b-in"), (mesh.c, "c-out")):
        wait_until(lambda e=envoy, n=listener: e.listener_port(n) == ports[n], timeout_s=20,
                   message=f"Envoy never bound {listener}", ignore=(KeyError, AdminError))
    return mesh


def status_of(url: str) -> int:
    return next(iter(run_requests(url, count=1, concurrency=1).by_status), 0)


def plaintext_get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def plaintext_status(port: int) -> int:
    try:
        return plaintext_get(port)
    except (ConnectionError, http.client.HTTPException, OSError):
        return 0


def workload_serials(envoy: EnvoyProcess) -> set[str]:
    """Serial numbers of the workload certificates Envoy holds (admin /certs), by URI SAN."""
    serials: set[str] = set()
    for entry in envoy.admin_json("/certs").get("certificates", []):
        for cert in entry.get("cert_chain", []):
            if any(san.get("uri", "").startswith("spiffe://") for san in cert.get("subject_alt_names", [])):
                serials.add(cert["serial_number"])
    return serials


def test_strict_mtls_between_sidecars_with_authorization(
        workdir: Path, upstreams: Callable[..., UpstreamPool],
        control_plane_factory: Callable[..., ControlPlaneProcess],
        envoy_factory: Callable[..., EnvoyProcess]) -> None:
    pool = upstreams("b-app")
    mesh = start_mesh(workdir, pool, control_plane_factory, envoy_factory)

    # A (allowed) reaches b-app through B over mTLS.
    wait_until(lambda: status_of(mesh.url("a-out")) == 200, timeout_s=20,
               message=lambda: f"A never got 200 through B: {status_of(mesh.url('a-out'))}")
    result = run_requests(mesh.url("a-out"), count=20, concurrency=2)
    assert result.by_status == {200: 20}, result.summary()

    # Both sides did TLS handshakes: A's cluster for b and B's inbound listener.
    assert mesh.a.cluster_stat("b", "ssl.handshake") > 0
    assert mesh.b.counter(f"listener.127.0.0.1_{mesh.ports['b-in']}.ssl.handshake") > 0
    # B saw A's workload identity as the peer (access log), and A verified B's (SAN match, no failures).
    wait_until(lambda: any(f"peer={A_ID}" in line for line in mesh.b.access_log_lines()), timeout_s=5,
               message=lambda: f"no peer={A_ID} in B's access log: {mesh.b.access_log_lines()[-3:]}")
    assert mesh.a.cluster_stat("b", "ssl.fail_verify_san") == 0
    assert workload_serials(mesh.a) and workload_serials(mesh.b)

    # C has a valid mesh certificate too (the handshake succeeds) but authorization allows only `a`: 403.
    wait_until(lambda: status_of(mesh.url("c-out")) == 403, timeout_s=20,
               message=lambda: f"C was not denied: {status_of(mesh.url('c-out'))}")
    assert mesh.c.cluster_stat("b", "ssl.handshake") > 0
    wait_until(lambda: any(f"peer={C_ID}" in line and '" 403 ' in line for line in mesh.b.access_log_lines()),
               timeout_s=5, message=lambda: f"no 403 for {C_ID} in B's log: {mesh.b.access_log_lines()[-3:]}")

    # A plaintext client straight to B's inbound port gets no HTTP answer at all: strict wants TLS.
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        plaintext_get(mesh.ports["b-in"])

    # Permissive: B's inbound side now also takes plaintext (a second filter chain behind the TLS
    # inspector). A plaintext request has no identity, so authorization answers it with 403 instead of a
    # reset, while A keeps getting 200 over mTLS.
    text = yaml.safe_dump(document(mesh.ports, pool["b-app"].port, mode="permissive"), sort_keys=False)
    (workdir / "mesh.tmp").write_text(text)
    (workdir / "mesh.tmp").replace(workdir / "mesh.yaml")
    wait_until(lambda: plaintext_status(mesh.ports["b-in"]) == 403, timeout_s=20,
               message="B's inbound side never accepted plaintext in permissive mode")
    assert status_of(mesh.url("a-out")) == 200
    wait_until(lambda: any(" 403 " in line and line.rstrip().endswith("peer=-")
                           for line in mesh.b.access_log_lines()),
               timeout_s=5, message=lambda: f"no plaintext 403 in B's log: {mesh.b.access_log_lines()[-3:]}")

    # Nothing the control plane sent was rejected by any of the three.
    for envoy in (mesh.a, mesh.b, mesh.c):
        assert envoy.update_rejected_total() == 0, envoy.name


def test_workload_certificates_rotate_under_load_without_a_failed_request(
        workdir: Path, upstreams: Callable[..., UpstreamPool],
        control_plane_factory: Callable[..., ControlPlaneProcess],
        envoy_factory: Callable[..., EnvoyProcess]) -> None:
    # The shortest lifetime allowed: 60 s, rotated at half of it, so two rotations take about 60 s.
    pool = upstreams("b-app")
    mesh = start_mesh(workdir, pool, control_plane_factory, envoy_factory, "--workload-cert-ttl", "60")
    wait_until(lambda: status_of(mesh.url("a-out")) == 200, timeout_s=20, message="A never got 200 through B")
    seen_a, seen_b = workload_serials(mesh.a), workload_serials(mesh.b)
    handshakes_before = mesh.b.counter(f"listener.127.0.0.1_{mesh.ports['b-in']}.ssl.handshake")

    load = SteadyLoad(mesh.url("a-out"), rate_per_s=40, concurrency=4, max_duration_s=120)
    load.start()
    try:
        deadline = time.monotonic() + 100
        # Two rotations on each side: three distinct certificates seen by A and by B.
        while time.monotonic() < deadline and (len(seen_a) < 3 or len(seen_b) < 3):
            time.sleep(1.0)
            seen_a |= workload_serials(mesh.a)
            seen_b |= workload_serials(mesh.b)
    finally:
        result = load.stop()
    handshakes = mesh.b.counter(f"listener.127.0.0.1_{mesh.ports['b-in']}.ssl.handshake") - handshakes_before
    # One line for the record (docs/security.md quotes a run): `pytest -s` shows it.
    print(f"rotation under load: {len(seen_a)} certificates at A, {len(seen_b)} at B, {handshakes} new "
          f"handshakes at B; {result.summary()}")
    assert len(seen_a) >= 3 and len(seen_b) >= 3, (seen_a, seen_b)
    assert result.total > 1000, result.summary()
    assert result.failures == 0 and result.non_2xx == 0, result.summary()
    # New connections kept being made (and so new handshakes with the new certificates) during the test.
    assert handshakes > 20
    assert mesh.a.cluster_stat("b", "ssl.fail_verify_san") == 0
    assert mesh.a.cluster_stat("b", "ssl.fail_verify_error") == 0
    for envoy in (mesh.a, mesh.b):
        assert envoy.update_rejected_total() == 0, envoy.name
    # Groups a and b each got a first certificate and two more; c at least its first.
    issued = re.search(r"^xds_workload_certs_issued_total (\S+)$", mesh.control_plane.metrics_text(), re.M)
    assert issued is not None and float(issued.group(1)) >= 7


def test_sidecars_on_an_mtls_xds_port_get_their_workload_certificates(
        workdir: Path, upstreams: Callable[..., UpstreamPool],
        control_plane_factory: Callable[..., ControlPlaneProcess],
        envoy_factory: Callable[..., EnvoyProcess]) -> None:
    # The xDS port requires client certificates (docs/security.md "Transport"): each sidecar's stream is
    # authenticated and bound to its node, so it is sent Secrets from any address (docs/protocol.md R47).
    ca = CertificateAuthority.create()
    server_dir = workdir / "server-tls"
    server = ca.server_cert()
    install_set(server_dir, {"tls.crt": server.cert_pem, "tls.key": server.key_pem, "ca.crt": ca.cert_pem})
    server_ca = ca.write_ca(workdir / "clients" / "server-ca.crt")

    def tls_args(group: str) -> tuple[str, ...]:
        issued = ca.client_cert(spiffe_id("xds.local", group, f"{group}-1"))
        cert, key = issued.write(workdir / "clients", group)
        return ("--tls-cert", str(cert), "--tls-key", str(key), "--ca", str(server_ca), "--server-san",
                "localhost")

    pool = upstreams("b-app")
    mesh = start_mesh(workdir, pool, control_plane_factory, envoy_factory,
                      "--tls-cert", str(server_dir / "tls.crt"), "--tls-key", str(server_dir / "tls.key"),
                      "--client-ca", str(server_dir / "ca.crt"), tls_args=tls_args)
    wait_until(lambda: status_of(mesh.url("a-out")) == 200, timeout_s=20,
               message=lambda: f"A never got 200 through B: {status_of(mesh.url('a-out'))}")
    assert status_of(mesh.url("c-out")) == 403
    assert workload_serials(mesh.a) and workload_serials(mesh.b)
    assert "stream_secrets_withheld" not in mesh.control_plane.tail(400)
