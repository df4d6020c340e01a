"""mTLS on the xDS port with node identity bound to the client certificate (issue 9, items 1 and 2).

Real control-plane processes, real Envoys and `xds bootstrap --tls-cert --tls-key --ca --server-san`,
certificates made at test time (harness/pki.py). What a client that may not have a group's config gets is
checked where it lands: Envoy's own config dump, the server's log and its metrics.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from harness import ControlPlaneProcess, EnvoyProcess, UpstreamPool, free_port, wait_until
from harness.controlplane import bootstrap_for
from harness.envoy import AdminError
from harness.pki import CertificateAuthority, Issued, install_set, spiffe_id
from harness.xds_tls import AdsStream, channel, first_config, health_ok, presented_certificate
from tests.e2e.conftest import ControlPlaneFactory, EnvoyFactory
from tests.e2e.stack import Catalog

# Every Envoy here runs once over state-of-the-world and once over delta xDS (issue 11).
pytestmark = pytest.mark.usefixtures("xds_mode")

TRUST_DOMAIN = "xds.local"
RELOAD_S = "0.2"  # --tls-reload-interval: tests poll for a reload, and a fast server poll keeps them short


@dataclass
class Pki:
    """The server's TLS files, published as a Kubernetes Secret volume is (install_set), and clients'."""

    root: Path
    ca: CertificateAuthority = field(default_factory=CertificateAuthority.create)
    other_ca: CertificateAuthority = field(default_factory=lambda: CertificateAuthority.create("other CA"))
    server: Issued = field(init=False)

    def __post_init__(self) -> None:
        self.server = self.ca.server_cert()
        self.publish(self.server, self.ca.cert_pem)

    @property
    def server_dir(self) -> Path:
        return self.root / "server-tls"

    def publish(self, server: Issued | None, client_ca: bytes | None, *,
                cert_pem: bytes | None = None, key_pem: bytes | None = None) -> None:
        files = {"tls.crt": cert_pem if cert_pem is not None else server.cert_pem if server else b"",
                 "tls.key": key_pem if key_pem is not None else server.key_pem if server else b""}
        if client_ca is not None:
            files["ca.crt"] = client_ca
        install_set(self.server_dir, files)

    def server_args(self) -> tuple[str, ...]:
        d = self.server_dir
        return ("--tls-cert", str(d / "tls.crt"), "--tls-key", str(d / "tls.key"),
                "--client-ca", str(d / "ca.crt"), "--trust-domain", TRUST_DOMAIN,
                "--tls-reload-interval", RELOAD_S)

    def client_files(self, name: str, issued: Issued) -> tuple[Path, Path, Path]:
        """cert, key, and the CA Envoy verifies the server with."""
        cert, key = issued.write(self.root / "clients", name)
        ca = self.ca.write_ca(self.root / "clients" / "server-ca.crt")
        return cert, key, ca


@pytest.fixture
def pki(workdir: Path) -> Pki:
    return Pki(root=workdir)


def _catalog(workdir: Path, pool: UpstreamPool) -> Catalog:
    # `payments-only` goes to the payments group alone: what an Envoy claiming that group must never get.
    payments = {"name": "payments-only", "address": "127.0.0.1", "port": free_port(),
                "groups": ["payments"], "routes": [{"name": "db", "match": {"prefix": "/"},
                                                    "backends": [{"service": "payments-db"}]}]}
    catalog = Catalog(path=workdir / "catalog.yaml", listener_port=free_port(), pool=pool,
                      services={"web": [("web", {})], "payments-db": [("db", {})]},
                      backends=[("web", None, 100)], extra_listeners=[payments])
    catalog.write()
    return catalog


def _tls_bootstrap(cp: ControlPlaneProcess, pki: Pki, *, node_id: str, cluster: str, client: Issued,
                   name: str, strip_client_cert: bool = False) -> Callable[[int], str]:
    """`xds bootstrap --tls-cert --tls-key --ca --server-san localhost` for a client certificate."""
    cert, key, ca = pki.client_files(name, client)
    args = ("--tls-cert", str(cert), "--tls-key", str(key), "--ca", str(ca), "--server-san", "localhost")

    def render(admin_port: int) -> str:
        text = bootstrap_for(node_id, cluster, xds_port=cp.xds_port, admin_port=admin_port, tls_args=args)
        if not strip_client_cert:
            return text
        # An Envoy that speaks TLS to the server but has no certificate to show.
        doc = yaml.safe_load(text)
        context = doc["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
        del context["common_tls_context"]["tls_certificates"]
        return yaml.safe_dump(doc)

    return render


def _metric(cp: ControlPlaneProcess, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    series = f"{name}{{{wanted}}}" if labels else name
    for line in cp.metrics_text().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0



def _dynamic_names(envoy: EnvoyProcess) -> tuple[set[str], set[str]]:
    """Clusters and listeners Envoy received over xDS."""
    clusters: set[str] = set()
    listeners: set[str] = set()
    for config in envoy.config_dump()["configs"]:
        for c in config.get("dynamic_active_clusters", []) + config.get("dynamic_warming_clusters", []):
            clusters.add(c["cluster"]["name"])
        for item in config.get("dynamic_listeners", []):
            listeners.add(item["name"])
    return clusters, listeners


def _get(port: int) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("x-upstream", "")
    finally:
        conn.close()


def _log(cp: ControlPlaneProcess) -> str:
    return cp.process.log_path.read_text(errors="replace")


async def _denied(address: str, pki: Pki, client: Issued, *, node_id: str, cluster: str,
                  then: tuple[str, str] | None = None) -> grpc.aio.AioRpcError:
    """Open a stream as (node_id, cluster) -- and, with `then`, continue as another node -- and return the
    error that ends it; fail if a resource arrives where the claim is not allowed."""
    async with channel(address, ca_pem=pki.ca.cert_pem, client=client) as chan:
        stream = AdsStream(chan)
        stream.send(node_id=node_id, cluster=cluster)
        try:
            if then is not None:
                await stream.recv()  # the first claim is allowed: its config arrives
                stream.send(node_id=then[0], cluster=then[1])
            response = await stream.recv()
        except grpc.aio.AioRpcError as exc:
            return exc
        finally:
            stream.close()
    raise AssertionError(f"a resource arrived for a claim that is not allowed: {response.type_url}")


def test_only_a_certificate_allowed_to_claim_its_node_gets_config(
        pki: Pki, workdir: Path, upstreams: Any, control_plane_factory: ControlPlaneFactory,
        envoy_factory: EnvoyFactory) -> None:
    pool = upstreams("web", "db")
    catalog = _catalog(workdir, pool)
    cp = control_plane_factory(catalog.path, extra_args=pki.server_args())

    # Four Envoys that must get nothing, started first so they are all retrying while the good one works.
    ca, other = pki.ca, pki.other_ca
    bad = {
        "no-cert": envoy_factory(_tls_bootstrap(cp, pki, node_id="envoy-2", cluster="edge", name="none",
                                                client=ca.client_cert(spiffe_id(TRUST_DOMAIN, "edge")),
                                                strip_client_cert=True), wait_live=False),
        "other-ca": envoy_factory(_tls_bootstrap(cp, pki, node_id="envoy-3", cluster="edge", name="other",
                                                 client=other.client_cert(spiffe_id(TRUST_DOMAIN, "edge"))),
                                  wait_live=False),
        "expired": envoy_factory(_tls_bootstrap(
            cp, pki, node_id="envoy-4", cluster="edge", name="expired",
            client=ca.client_cert(spiffe_id(TRUST_DOMAIN, "edge", "envoy-4"), expired=True)),
            wait_live=False),
        # A valid certificate of the edge group whose Envoy claims the payments group.
        "intruder": envoy_factory(_tls_bootstrap(
            cp, pki, node_id="intruder", cluster="payments", name="intruder",
            client=ca.client_cert(spiffe_id(TRUST_DOMAIN, "edge", "intruder"))), wait_live=False),
    }
    good = envoy_factory(_tls_bootstrap(cp, pki, node_id="envoy-1", cluster="edge", name="good",
                                        client=ca.client_cert(spiffe_id(TRUST_DOMAIN, "edge", "envoy-1"))))
    wait_until(lambda: good.listener_port("ingress") == catalog.listener_port, timeout_s=15,
               message="the Envoy with a valid certificate never got its listener", ignore=(KeyError,))
    assert _get(catalog.listener_port) == (200, "web")
    assert good.control_plane_connected()

    # The server refused each at the handshake and says why (gRPC's TLS log), or ended the stream.
    reasons = ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "certificate has expired",
               "unable to get local issuer certificate")
    wait_until(lambda: all(r in _log(cp) for r in reasons), timeout_s=15,
               message=lambda: f"handshake failures not all logged; log:\n{cp.tail(30)}")
    wait_until(lambda: _metric(cp, "xds_identity_denied_total", reason="group") >= 1, timeout_s=15,
               message=lambda: f"no identity denial counted; log:\n{cp.tail(30)}")
    denied = [json.loads(line) for line in _log(cp).splitlines() if '"stream_denied"' in line]
    assert denied and {d["claimed_node_id"] for d in denied} == {"intruder"}
    assert {d["claimed_group"] for d in denied} == {"payments"} and {d["reason"] for d in denied} == {"group"}
    assert f"spiffe://{TRUST_DOMAIN}/group/edge/node/intruder" in denied[0]["error"]
    wait_until(lambda: bad["intruder"].app_log_lines() and any(
        "PERMISSION_DENIED" in line or "closed: 7" in line for line in bad["intruder"].app_log_lines()),
        timeout_s=10, message="the intruder Envoy never saw PERMISSION_DENIED")

    for name, envoy in bad.items():
        assert envoy.counter("cluster.xds_cluster.upstream_cx_total") >= 1, name
        assert _dynamic_names(envoy) == (set(), set()), f"{name} received config"
    # With TLS 1.3 the client finishes its handshake before the server has checked the client certificate,
    # so an Envoy retrying with a refused certificate can show connected_state 1 for the instant between
    # opening its stream and receiving the server's alert. An Envoy the server admitted stays connected;
    # a refused one is seen disconnected as soon as one look falls outside such a retry.
    for n in ("no-cert", "other-ca", "expired"):
        wait_until(lambda n=n: not bad[n].control_plane_connected(), timeout_s=10,
                   message=f"the {n} Envoy stays connected to the control plane")
    # The good Envoy has its own group's config and nothing of the payments group.
    clusters, listeners = _dynamic_names(good)
    assert "web" in clusters and listeners == {"ingress"}
    assert cp.status()["proxies"] == ["envoy-1"]
    assert _metric(cp, "xds_identity_denied_total", reason="no_certificate") == 0

    # What Envoy cannot express: a node id the certificate does not name, another trust domain, and a
    # stream that starts as its own node and then claims another group.
    address = cp.xds_address
    node_cert = ca.client_cert(spiffe_id(TRUST_DOMAIN, "edge", "envoy-9"))
    err = asyncio.run(_denied(address, pki, node_cert, node_id="envoy-1", cluster="edge"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "node id 'envoy-1'" in (err.details() or "")
    foreign = ca.client_cert(spiffe_id("evil.local", "edge", "envoy-1"))
    err = asyncio.run(_denied(address, pki, foreign, node_id="envoy-1", cluster="edge"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "trust domain" in (err.details() or "")
    group_cert = ca.client_cert(spiffe_id(TRUST_DOMAIN, "edge"))
    err = asyncio.run(_denied(address, pki, group_cert, node_id="any-edge-node", cluster="edge",
                              then=("any-edge-node", "payments")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "'payments'" in (err.details() or "")
    assert _metric(cp, "xds_identity_denied_total", reason="node") == 1
    assert _metric(cp, "xds_identity_denied_total", reason="trust_domain") == 1
    assert "PRIVATE KEY" not in _log(cp)


class _Prober:
    """A client that keeps opening new mTLS connections (a new handshake each) and asking for config."""

    def __init__(self, address: str, pki: Pki, client: Issued) -> None:
        self.results: list[tuple[float, bool, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run(address, pki, client)),
                                        daemon=True)

    async def _run(self, address: str, pki: Pki, client: Issued) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                response = await first_config(address, node_id=f"probe-{i}", cluster="edge",
                                              ca_pem=pki.ca.cert_pem, client=client, timeout_s=5)
                self.results.append((time.monotonic(), bool(response.resources), ""))
            except (grpc.aio.AioRpcError, TimeoutError, AssertionError) as exc:
                self.results.append((time.monotonic(), False, repr(exc)[:200]))

    def __enter__(self) -> _Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def count_since(self, moment: float) -> int:
        return sum(1 for at, ok, _ in self.results if ok and at > moment)


def test_server_certificate_and_client_ca_reload_under_load_without_dropping_streams(
        pki: Pki, workdir: Path, upstreams: Any, control_plane_factory: ControlPlaneFactory,
        envoy_factory: EnvoyFactory) -> None:
    pool = upstreams("web", "db", "api")
    catalog = _catalog(workdir, pool)
    cp = control_plane_factory(catalog.path, extra_args=pki.server_args())
    own_cert = pki.ca.client_cert(spiffe_id(TRUST_DOMAIN, "edge", "envoy-1"))
    envoy = envoy_factory(_tls_bootstrap(cp, pki, node_id="envoy-1", cluster="edge", name="good",
                                         client=own_cert))
    wait_until(lambda: envoy.listener_port("ingress") == catalog.listener_port, timeout_s=15,
               message="Envoy never got its listener", ignore=(KeyError,))
    connections = envoy.counter("cluster.xds_cluster.upstream_cx_total")
    assert envoy.control_plane_connected() and connections == 1

    probe = pki.ca.client_cert(spiffe_id(TRUST_DOMAIN, "edge"))
    probe_cert, probe_key, ca_file = pki.client_files("probe", probe)

    def serial() -> int:
        return presented_certificate(cp.xds_port, ca_file=ca_file, cert_file=probe_cert,
                                     key_file=probe_key).serial_number

    assert serial() == pki.server.serial
    outsider = pki.other_ca.client_cert(spiffe_id(TRUST_DOMAIN, "edge"))
    assert not asyncio.run(health_ok(cp.xds_address, ca_pem=pki.ca.cert_pem, client=outsider))

    with _Prober(cp.xds_address, pki, probe) as prober:
        wait_until(lambda: prober.count_since(0) >= 20, timeout_s=15, message="the prober got no config")
        # A new server certificate, and a client CA bundle that now also trusts the other CA: one swap.
        renewed = pki.ca.server_cert()
        pki.publish(renewed, pki.ca.cert_pem + pki.other_ca.cert_pem)
        swapped = time.monotonic()
        wait_until(lambda: serial() == renewed.serial, timeout_s=10,
                   message="new handshakes never presented the renewed certificate")
        wait_until(lambda: prober.count_since(swapped) >= 20, timeout_s=15,
                   message="the prober stopped getting config after the reload")
    failures = [r for r in prober.results if not r[1]]
    assert failures == [], failures[:3]
    assert asyncio.run(health_ok(cp.xds_address, ca_pem=pki.ca.cert_pem, client=outsider))

    # Envoy's stream lived through it: still connected, never reconnected, and still receives pushes.
    assert envoy.control_plane_connected()
    assert envoy.counter("cluster.xds_cluster.upstream_cx_total") == connections
    catalog.services["api"] = [("api", {})]
    catalog.backends = [("web", None, 50), ("api", None, 50)]
    catalog.write()
    wait_until(lambda: "api" in _dynamic_names(envoy)[0], timeout_s=10,
               message="Envoy's stream no longer receives pushes after the reload", ignore=(AdminError,))
    assert envoy.counter("cluster.xds_cluster.upstream_cx_total") == connections
    assert _metric(cp, "xds_tls_reloads_total", result="ok") == 2  # the first load and the swap
    assert _metric(cp, "xds_tls_reloads_total", result="error") == 0
    assert cp.status()["tls"]["serving"]["serial"] == format(renewed.serial, "x")


def test_bad_tls_files_are_rejected_by_name_and_the_last_good_keep_serving(
        pki: Pki, workdir: Path, upstreams: Any, control_plane_factory: ControlPlaneFactory) -> None:
    catalog = _catalog(workdir, upstreams("web", "db"))
    cp = control_plane_factory(catalog.path, extra_args=pki.server_args())
    client = pki.ca.client_cert(spiffe_id(TRUST_DOMAIN, "edge"))
    cert_file, key_file, ca_file = pki.client_files("probe", client)
    good = pki.server
    ca = pki.ca.cert_pem
    d = pki.server_dir
    stranger = pki.ca.server_cert()
    no_san = pki.ca.issue(common_name="no-san", server=True)
    cases = [
        ("malformed PEM", d / "tls.crt", "not valid PEM",
         {"server": good, "client_ca": ca, "cert_pem": b"-----BEGIN CERTIFICATE-----\nnot base64!\n"
                                                      b"-----END CERTIFICATE-----\n"}),
        ("key of another certificate", d / "tls.key", "does not belong to the certificate",
         {"server": good, "client_ca": ca, "key_pem": stranger.key_pem}),
        ("client CA missing", d / "ca.crt", "client CA bundle file not found",
         {"server": good, "client_ca": None}),
        ("certificate without SAN", d / "tls.crt", "no subject alternative name",
         {"server": no_san, "client_ca": ca}),
    ]
    for number, (what, path, text, files) in enumerate(cases, start=1):
        pki.publish(**files)

        def reported(path: Path = path, text: str = text) -> bool:
            problem = cp.status()["tls"]["problem"]
            return bool(problem) and problem["file"] == str(path) and text in problem["error"]

        wait_until(reported, timeout_s=10, message=lambda what=what: f"{what}: not reported: {cp.status()}")
        assert _metric(cp, "xds_tls_reloads_total", result="error") == number, what
        assert _metric(cp, "xds_tls_material_rejected") == 1, what
        # The last good material keeps serving new handshakes and streams.
        assert presented_certificate(cp.xds_port, ca_file=ca_file, cert_file=cert_file,
                                     key_file=key_file).serial_number == good.serial, what
        response = asyncio.run(first_config(cp.xds_address, node_id="n", cluster="edge", ca_pem=ca,
                                            client=client))
        assert response.resources, what

    renewed = pki.ca.server_cert()
    pki.publish(renewed, ca)
    wait_until(lambda: cp.status()["tls"]["problem"] is None, timeout_s=10, message="problem never cleared")
    assert _metric(cp, "xds_tls_material_rejected") == 0
    assert presented_certificate(cp.xds_port, ca_file=ca_file, cert_file=cert_file,
                                 key_file=key_file).serial_number == renewed.serial
    rejected = [json.loads(line) for line in _log(cp).splitlines() if '"tls_rejected"' in line]
    assert [r["file"] for r in rejected] == [str(path) for _, path, _, _ in cases]
    assert "PRIVATE KEY" not in _log(cp) and "PRIVATE KEY" not in json.dumps(cp.status())


def _serve(catalog: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xds", "serve", "--config", str(catalog),
                           "--xds-address", f"127.0.0.1:{free_port()}",
                           "--admin-address", f"127.0.0.1:{free_port()}", *args],
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def catalog_file(workdir: Path) -> Path:
    path = workdir / "catalog.yaml"
    path.write_text("version: 1\nservices: []\n")
    return path


def test_bad_tls_files_at_startup_are_fatal_and_name_the_file(pki: Pki, catalog_file: Path) -> None:
    d = pki.server_dir
    (d / "ca.crt").unlink()  # the stable symlink
    result = _serve(catalog_file, *pki.server_args())
    assert result.returncode == 1
    assert f"{d / 'ca.crt'}: client CA bundle file not found" in result.stderr

    pki.publish(pki.server, pki.ca.cert_pem, key_pem=pki.ca.server_cert().key_pem)
    result = _serve(catalog_file, *pki.server_args())
    assert result.returncode == 1
    assert re.search(re.escape(str(d / "tls.key")) + r": this private key does not belong", result.stderr)
    assert "PRIVATE KEY" not in result.stderr

    partial = ("--tls-cert", str(d / "tls.crt"), "--tls-key", str(d / "tls.key"))
    result = _serve(catalog_file, *partial)
    assert result.returncode == 1 and "missing: --client-ca (env XDS_CLIENT_CA)" in result.stderr
