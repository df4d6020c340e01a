"""The workload CA (xds/pki): issuing SPIFFE certificates, rotation at half life, and refusing bad CA files
with an error naming the file while the last good CA keeps serving (issue 9, item 4)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from harness.pki_sds import make_ca, write_ca
from xds.pki.ca import CaError, generate_ca, load_ca
from xds.pki.workload import MIN_WORKLOAD_CERT_TTL_S, WorkloadIdentities
from xds.workload_ca import CaFileWatcher, ca_files

IDENTITY = "spiffe://xds.local/group/web"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def test_issued_certificate_is_a_spiffe_svid_signed_by_the_ca() -> None:
    ca = generate_ca("xds.local")
    issued = ca.issue(IDENTITY, lifetime=datetime.timedelta(hours=1))
    cert = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [IDENTITY]
    assert san.get_values_for_type(x509.DNSName) == []
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    cert.verify_directly_issued_by(ca.certificate)
    # A fresh EC P-256 key that belongs to the certificate.
    key = serialization.load_pem_private_key(issued.private_key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == cert.public_key()
    assert cert.serial_number == issued.serial
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(hours=1) <= lifetime <= datetime.timedelta(hours=1, minutes=1)  # + clock skew
    assert "PRIVATE KEY" not in repr(issued)


def test_each_certificate_gets_its_own_key() -> None:
    ca = generate_ca("xds.local")
    one, two = (ca.issue(IDENTITY, lifetime=datetime.timedelta(minutes=5)) for _ in range(2))
    assert one.private_key_pem != two.private_key_pem and one.serial != two.serial


def test_certificates_never_outlive_the_ca() -> None:
    ca = generate_ca("xds.local", now=T0)
    issued = ca.issue(IDENTITY, lifetime=datetime.timedelta(days=400), now=T0)
    assert issued.not_after == ca.not_after


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


def test_rotation_at_half_the_lifetime() -> None:
    clock = Clock()
    identities = WorkloadIdentities(generate_ca("xds.local", now=T0), lifetime_s=60, clock=clock)
    first = identities.certificate(IDENTITY)
    assert identities.next_rotation() == T0 + datetime.timedelta(seconds=30)
    clock.now = T0 + datetime.timedelta(seconds=29)
    assert identities.certificate(IDENTITY) is first
    clock.now = T0 + datetime.timedelta(seconds=30)
    second = identities.certificate(IDENTITY)
    assert second.serial != first.serial
    assert identities.next_rotation() == T0 + datetime.timedelta(seconds=60)


def test_due_certificates_are_released_for_the_next_build() -> None:
    clock = Clock()
    identities = WorkloadIdentities(generate_ca("xds.local", now=T0), lifetime_s=60, clock=clock)
    identities.certificate(IDENTITY)
    clock.now = T0 + datetime.timedelta(seconds=31)
    assert identities.release_due() == 1
    assert identities.next_rotation() is None


def test_lifetime_below_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 60"):
        WorkloadIdentities(generate_ca("xds.local"), lifetime_s=MIN_WORKLOAD_CERT_TTL_S - 1)


def test_a_new_ca_reissues_and_the_old_one_stays_trusted_while_its_certificates_live() -> None:
    clock = Clock()
    old, new = generate_ca("xds.local", now=T0), generate_ca("xds.local", now=T0)
    identities = WorkloadIdentities(old, lifetime_s=60, clock=clock)
    before = identities.certificate(IDENTITY)
    identities.set_ca(new)
    after = identities.certificate(IDENTITY)
    assert after.serial != before.serial
    x509.load_pem_x509_certificate(after.certificate_pem.encode()).verify_directly_issued_by(new.certificate)
    bundle = identities.trust_bundle_pem()
    assert bundle.startswith(new.certificate_pem) and old.certificate_pem in bundle
    clock.now = T0 + datetime.timedelta(seconds=61)
    assert identities.trust_bundle_pem() == new.certificate_pem


def test_load_ca_from_files(tmp_path: Path) -> None:
    cert, key = write_ca(tmp_path)
    ca = load_ca(cert, key)
    assert ca.origin == f"file:{cert}"
    issued = ca.issue(IDENTITY, lifetime=datetime.timedelta(minutes=5))
    x509.load_pem_x509_certificate(issued.certificate_pem.encode()).verify_directly_issued_by(ca.certificate)


@pytest.mark.parametrize(("breakage", "names", "message"), [
    ("missing cert", "cert", "file not found"),
    ("missing key", "key", "file not found"),
    ("malformed cert", "cert", "not a PEM certificate"),
    ("malformed key", "key", "not a PEM private key"),
    ("key of another CA", "key", "does not match the CA certificate"),
    ("not a CA", "cert", "not a CA certificate"),
    ("expired", "cert", "expired"),
])
def test_bad_ca_files_are_refused_naming_the_file(tmp_path: Path, breakage: str, names: str,
                                                   message: str) -> None:
    cert, key = write_ca(tmp_path, is_ca=breakage != "not a CA",
                         days=-1 if breakage == "expired" else 30, not_before_days=-2)
    if breakage == "missing cert":
        cert.unlink()
    elif breakage == "missing key":
        key.unlink()
    elif breakage == "malformed cert":
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    elif breakage == "malformed key":
        key.write_text("garbage")
    elif breakage == "key of another CA":
        key.write_bytes(make_ca("other")[1])
    with pytest.raises(CaError, match=message) as caught:
        load_ca(cert, key)
    assert str(cert if names == "cert" else key) in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)


def test_one_ca_file_without_the_other_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(CaError, match="--ca-key"):
        ca_files(tmp_path / "ca.pem", None)
    assert ca_files(None, None) is None


def test_reload_adopts_a_good_ca_and_keeps_the_last_good_one_on_a_bad_file(tmp_path: Path) -> None:
    cert, key = write_ca(tmp_path)
    files = ca_files(cert, key)
    assert files is not None
    identities = WorkloadIdentities(load_ca(cert, key), lifetime_s=60)
    watcher = CaFileWatcher(files, identities)
    first = identities.ca
    assert watcher.check() is False  # unchanged files

    cert.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    assert watcher.check() is False
    assert str(cert) in watcher.error and identities.ca is first  # the last good CA keeps serving

    new_cert, new_key = make_ca("rotated")
    key.write_bytes(new_key)
    cert.write_bytes(new_cert)
    assert watcher.check() is True
    assert watcher.error == "" and identities.ca is not first
    assert identities.ca.certificate.public_bytes(serialization.Encoding.PEM) == new_cert


def test_serve_refuses_a_bad_ca_at_startup_naming_the_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    cert, key = write_ca(tmp_path)
    key.write_bytes(make_ca("other")[1])
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("services: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "xds", "serve", "--config", str(catalog), "--xds-address", "127.0.0.1:0",
         "--admin-address", "127.0.0.1:0", "--ca-cert", str(cert), "--ca-key", str(key)],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"xds: error: CA key {key} does not match the CA certificate {cert}" in result.stderr
    assert "PRIVATE KEY" not in result.stderr + result.stdout
