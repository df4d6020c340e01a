"""Test CA material for the workload CA (issue 9): PEM files written at test time with `cryptography`.

`write_ca` writes a CA certificate and key as an operator would hand them to `--ca-cert`/`--ca-key`; the
other helpers make the broken variants the server must refuse (not a CA, expired, a key of another CA).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(name: str = "test workload CA", *, is_ca: bool = True, days: float = 30,
            not_before_days: float = -1) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a self-signed EC certificate, a CA unless `is_ca` is False."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + datetime.timedelta(days=not_before_days))
               .not_valid_after(now + datetime.timedelta(days=days)))
    if is_ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def write_ca(directory: Path, name: str = "ca", **options: object) -> tuple[Path, Path]:
    """Write `<name>.pem` and `<name>-key.pem` into `directory`; returns their paths."""
    cert, key = make_ca(f"{name} test CA", **options)  # type: ignore[arg-type]
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    return cert_path, key_path
