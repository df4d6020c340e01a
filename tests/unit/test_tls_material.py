"""TLS files of the xDS port (xds/server/tls_material.py and the reloader's bookkeeping): every problem
names the file, never shows key material, and the reloader keeps the last good set."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from harness.pki import CertificateAuthority, Issued, install_set, spiffe_id
from xds.addresses import is_loopback_host
from xds.server.tls_material import MAX_FILE_BYTES, TlsMaterialError, TlsPaths, load_material
from xds.server.tls_reload import TlsReloader


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


def _write(tmp_path: Path, server: Issued, ca_pem: bytes | None, *, key: bytes | None = None) -> TlsPaths:
    files = {"tls.crt": server.cert_pem, "tls.key": key if key is not None else server.key_pem}
    if ca_pem is not None:
        files["ca.crt"] = ca_pem
    install_set(tmp_path, files)
    return TlsPaths(cert=tmp_path / "tls.crt", key=tmp_path / "tls.key", client_ca=tmp_path / "ca.crt")


def _error(paths: TlsPaths, **kwargs: datetime.datetime) -> TlsMaterialError:
    with pytest.raises(TlsMaterialError) as info:
        load_material(paths, **kwargs)
    assert "PRIVATE KEY" not in str(info.value)
    return info.value


def test_good_material_and_its_public_summary(tmp_path: Path, ca: CertificateAuthority) -> None:
    server = ca.server_cert(uris=("spiffe://xds.local/control-plane",))
    material = load_material(_write(tmp_path, server, ca.cert_pem))
    assert material.serial == server.serial
    assert material.server_names == ("DNS:localhost", "IP:127.0.0.1", "URI:spiffe://xds.local/control-plane")
    summary = material.summary()
    assert summary["serial"] == format(server.serial, "x") and "key" not in str(summary).lower()


def test_each_problem_names_its_file(tmp_path: Path, ca: CertificateAuthority) -> None:
    server = ca.server_cert()
    garbage_key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    paths = _write(tmp_path, server, ca.cert_pem, key=garbage_key)
    err = _error(paths)
    assert err.path == paths.key and "not a valid PEM private key" in str(err)

    paths = _write(tmp_path, server, ca.cert_pem, key=ca.server_cert().key_pem)
    err = _error(paths)
    assert err.path == paths.key and "does not belong to the certificate" in str(err)

    paths = _write(tmp_path, server, None)
    err = _error(paths)
    assert err.path == paths.client_ca and "client CA bundle file not found" in str(err)

    paths = _write(tmp_path, ca.issue(common_name="no SAN", server=True), ca.cert_pem)
    err = _error(paths)
    assert err.path == paths.cert and "no subject alternative name" in str(err)

    paths = _write(tmp_path, Issued(cert_pem=b"hello", key_pem=server.key_pem), ca.cert_pem)
    err = _error(paths)
    assert err.path == paths.cert and "not valid PEM" in str(err)

    paths = _write(tmp_path, server, b"not a CA")
    err = _error(paths)
    assert err.path == paths.client_ca and "client CA bundle is not valid PEM" in str(err)

    paths = _write(tmp_path, server, ca.cert_pem)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=8)
    err = _error(paths, now=later)
    assert err.path == paths.cert and "expired" in str(err)

    (tmp_path / "huge").write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    err = _error(TlsPaths(cert=tmp_path / "huge", key=paths.key, client_ca=paths.client_ca))
    assert "larger than" in str(err)


def test_reloader_keeps_the_last_good_material_and_reports_each_bad_set_once(
        tmp_path: Path, ca: CertificateAuthority) -> None:
    seen: list[object] = []
    first = ca.server_cert()
    paths = _write(tmp_path, first, ca.cert_pem)
    reloader = TlsReloader(paths, on_change=seen.append)
    reloader.load()
    reloader.credentials()
    assert reloader._fetch() is None  # unchanged: gRPC keeps what it has

    _write(tmp_path, first, ca.cert_pem, key=ca.server_cert().key_pem)
    assert reloader.poll() is False and reloader.poll() is False
    assert reloader.problem is not None and reloader.problem.path == str(paths.key)
    assert reloader.current.serial == first.serial
    assert [type(s).__name__ for s in seen] == ["TlsMaterial", "TlsMaterialError"]  # reported once
    assert reloader._fetch() is None

    second = ca.server_cert()
    _write(tmp_path, second, ca.cert_pem)
    assert reloader.poll() is True
    assert reloader.problem is None and reloader.current.serial == second.serial
    assert reloader._fetch() is not None and reloader._fetch() is None  # handed to gRPC once
    assert reloader.status()["problem"] is None


def test_reverting_a_bad_edit_clears_the_problem(tmp_path: Path, ca: CertificateAuthority) -> None:
    server = ca.server_cert()
    paths = _write(tmp_path, server, ca.cert_pem)
    reloader = TlsReloader(paths)
    reloader.load()
    _write(tmp_path, server, None)
    reloader.poll()
    assert reloader.problem is not None
    _write(tmp_path, server, ca.cert_pem)
    assert reloader.poll() is False and reloader.problem is None


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("xds.example.com", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_client_certificates_from_the_harness_carry_spiffe_ids(ca: CertificateAuthority) -> None:
    client = ca.client_cert(spiffe_id("xds.local", "web", "n1"))
    assert "spiffe://xds.local/group/web/node/n1" in str(client.certificate.extensions)
