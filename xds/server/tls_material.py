"""The xDS port's TLS material: the server certificate chain, its key and the client CA bundle, read from
files and checked with `cryptography` before gRPC ever sees them (issue 9, item 1).

Every problem is a TlsMaterialError that names the file and says what is wrong with it, never what is in
it: a private key must not reach a log line, /status or a metric (docs/security.md). At startup the error
is fatal; on reload the server reports it and keeps the last good material (tls_reload.py).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

# The files are PEM text of a few KiB; a bound keeps a wrong path (a log file, /dev/zero) from being read
# whole into memory every poll.
MAX_FILE_BYTES = 1024 * 1024


class TlsMaterialError(ValueError):
    """A TLS file is missing, unreadable or unusable. `path` is the file at fault."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class TlsPaths:
    """Where the server's TLS files are: `--tls-cert`, `--tls-key`, `--client-ca`."""

    cert: Path
    key: Path
    client_ca: Path


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """Validated PEM bytes as gRPC takes them, plus what an operator may see about them (no key)."""

    cert_chain_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes
    fingerprint: str  # sha256 over the three files: a change on disk is a new fingerprint
    serial: int  # of the server (leaf) certificate
    not_after: datetime.datetime
    server_names: tuple[str, ...]  # the leaf's SANs, as "DNS:x", "IP:x", "URI:x"
    client_cas: int  # certificates in the client CA bundle

    def summary(self) -> dict[str, object]:
        """For /status: public facts only."""
        return {"serial": format(self.serial, "x"), "not_after": self.not_after.isoformat(),
                "server_names": list(self.server_names), "client_cas": self.client_cas}


def read_files(paths: TlsPaths) -> tuple[bytes, bytes, bytes]:
    """The three files' bytes (certificate, key, client CA); TlsMaterialError naming the one that fails."""
    return _read(paths.cert, "server certificate"), _read(paths.key, "private key"), \
        _read(paths.client_ca, "client CA bundle")


def fingerprint(cert: bytes, key: bytes, ca: bytes) -> str:
    digest = hashlib.sha256()
    for part in (cert, key, ca):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def load_material(paths: TlsPaths, *, now: datetime.datetime | None = None) -> TlsMaterial:
    """Read and check the three files; TlsMaterialError naming the file at fault.

    Checked: each parses as PEM; the key is unencrypted and belongs to the first certificate of the chain;
    that certificate has a subject alternative name (clients verify names against SANs only) and is
    within its validity period; the CA bundle holds at least one certificate that is still valid.
    """
    cert_pem, key_pem, ca_pem = read_files(paths)
    return check_material(paths, cert_pem, key_pem, ca_pem, now=now)


def check_material(paths: TlsPaths, cert_pem: bytes, key_pem: bytes, ca_pem: bytes, *,
                   now: datetime.datetime | None = None) -> TlsMaterial:
    moment = now or datetime.datetime.now(datetime.UTC)
    chain = _certificates(paths.cert, cert_pem, "server certificate")
    leaf = chain[0]
    key = _private_key(paths.key, key_pem)
    if not _same_public_key(leaf, key):
        raise TlsMaterialError(paths.key, f"this private key does not belong to the certificate in "
                                          f"{paths.cert} (serial {leaf.serial_number:x})")
    names = _san_names(leaf)
    if not names:
        raise TlsMaterialError(paths.cert, "the server certificate has no subject alternative name (SAN); "
                                           "clients check the server's name against SANs only, so add "
                                           "one (DNS, IP or URI)")
    if leaf.not_valid_after_utc <= moment:
        raise TlsMaterialError(paths.cert, f"the server certificate expired at "
                                           f"{leaf.not_valid_after_utc.isoformat()}")
    if leaf.not_valid_before_utc > moment:
        raise TlsMaterialError(paths.cert, f"the server certificate is not valid before "
                                           f"{leaf.not_valid_before_utc.isoformat()}")
    cas = _certificates(paths.client_ca, ca_pem, "client CA bundle")
    if all(ca.not_valid_after_utc <= moment for ca in cas):
        raise TlsMaterialError(paths.client_ca, "every certificate in the client CA bundle has expired")
    return TlsMaterial(cert_chain_pem=cert_pem, key_pem=key_pem, client_ca_pem=ca_pem,
                       fingerprint=fingerprint(cert_pem, key_pem, ca_pem), serial=leaf.serial_number,
                       not_after=leaf.not_valid_after_utc, server_names=names, client_cas=len(cas))


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise TlsMaterialError(path, f"{what} file not found") from None
    except IsADirectoryError:
        raise TlsMaterialError(path, f"{what} path is a directory, not a file") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TlsMaterialError(path, f"cannot read the {what}: {reason}") from None
    if len(data) > MAX_FILE_BYTES:
        raise TlsMaterialError(path, f"{what} file is larger than {MAX_FILE_BYTES} bytes; not a PEM file")
    return data


def _certificates(path: Path, data: bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TlsMaterialError(path, f"the {what} is not valid PEM (expected one or more "
                                     "'-----BEGIN CERTIFICATE-----' blocks)") from None
    if not certs:  # pragma: no cover - cryptography raises on an empty bundle; kept as a guard
        raise TlsMaterialError(path, f"the {what} holds no certificate")
    return certs


def _private_key(path: Path, data: bytes) -> PrivateKeyTypes:
    # The exception text of a failed load is not shown: it comes from parsing secret material.
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TlsMaterialError(path, "the private key is encrypted; give an unencrypted PEM key (protect "
                                     "it with file permissions)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsMaterialError(path, "not a valid PEM private key (expected an unencrypted PKCS#8, RSA "
                                     "or EC key in PEM)") from None


def _same_public_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return bool(cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


def _san_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return (*(f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)),
            *(f"IP:{n}" for n in san.get_values_for_type(x509.IPAddress)),
            *(f"URI:{n}" for n in san.get_values_for_type(x509.UniformResourceIdentifier)))
