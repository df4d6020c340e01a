"""Test certificates for edge TLS (issue 9 item 7), generated at test time with `cryptography`.

A TestCa signs leaf certificates with the DNS names, serial number and validity a test asks for; each
Issued pair can be written to files atomically (write a temporary file, rename it over the old one), as
cert-manager and config management rotate certificates, so a watcher never reads half a file.
"""

from __future__ import annotations

import datetime
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_PEM = serialization.Encoding.PEM
_serials = itertools.count(1000)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    serial: int

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Key first, then certificate: each file replaced atomically."""
        write_atomically(key_path, self.key_pem)
        write_atomically(cert_path, self.cert_pem)


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class TestCa:
    """A self-signed CA (ECDSA P-256) that issues server certificates."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str = "xds edge test CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._name = subject
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(next(_serials))
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(_PEM)

    def issue(self, *dns_names: str, san: bool = True, expired: bool = False) -> Issued:
        """A server certificate for `dns_names` (the first is also the CN), with a fresh serial number;
        `san=False` leaves the SAN out, `expired=True` makes one that expired an hour ago."""
        key = ec.generate_private_key(ec.SECP256R1())
        serial = next(_serials)
        start = _now() - datetime.timedelta(hours=2 if expired else 0, minutes=5)
        end = _now() - datetime.timedelta(hours=1) if expired else _now() + datetime.timedelta(days=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(cert.public_bytes(_PEM), _key_pem(key), serial)


def other_key_pem() -> bytes:
    """A private key that matches no certificate (the "key does not match" case)."""
    return _key_pem(ec.generate_private_key(ec.SECP256R1()))
