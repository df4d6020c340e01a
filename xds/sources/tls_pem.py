"""Checking the PEM files of edge TLS with `cryptography` (issue 9: no hand-written crypto).

Each check returns the bytes to send to Envoy, re-encoded from what was parsed, or raises PemError with a
message for an operator. Re-encoding means only what was checked ever leaves the control plane: a CA "bundle"
that also holds a private key sends the certificates alone, since a CA bundle goes to every proxy. Messages
describe the problem and never quote the file, so no key material can reach a log, an error or /status
(docs/security.md, "Edge TLS").
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

_PEM = serialization.Encoding.PEM
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


class PemError(ValueError):
    """A PEM file is unusable; the message says why, without quoting it."""


@dataclass(frozen=True, slots=True)
class CheckedPair:
    cert_pem: bytes
    key_pem: bytes = field(repr=False)


def _certificates(data: bytes, what: str) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise PemError(f"no PEM certificate found (expected {what})")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise PemError(f"malformed PEM: a CERTIFICATE block does not parse (expected {what})") from None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def check_ca_bundle(data: bytes) -> bytes:
    """The certificates of a CA bundle, as PEM."""
    certs = _certificates(data, "one or more CA certificates")
    return b"".join(c.public_bytes(_PEM) for c in certs)


def check_key_pair(cert_data: bytes, key_data: bytes, *, cert_file: str) -> CheckedPair:
    """A certificate chain (leaf first) and its private key. Raises CertificateError for a problem of the
    certificate file, PemError for one of the key file."""
    try:
        chain = _certificates(cert_data, "a certificate chain, leaf first")
    except PemError as e:
        raise CertificateError(str(e)) from None
    leaf = chain[0]
    try:
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        # Clients check the host name against the SAN only (RFC 6125 section 6.4.4); a CN-only certificate
        # fails every modern client's check.
        raise CertificateError("the certificate has no subjectAltName extension; clients match host names "
                               "against it, not the common name") from None
    if leaf.not_valid_after_utc <= _now():
        raise CertificateError(f"the certificate expired at {leaf.not_valid_after_utc.isoformat()}")
    if b"ENCRYPTED" in key_data:
        raise PemError("the private key is encrypted; Envoy needs it unencrypted (protect the file instead)")
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError):
        raise PemError("malformed PEM: no unencrypted PRIVATE KEY block that parses") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        # The key types Envoy serves certificates with (tls.proto, TlsCertificate.private_key).
        raise PemError(f"unsupported private key type {type(key).__name__}; use RSA or ECDSA")
    if key.public_key().public_bytes(_PEM, _SPKI) != leaf.public_key().public_bytes(_PEM, _SPKI):
        raise PemError(f"the private key does not match the certificate in {cert_file}")
    key_pem = key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return CheckedPair(b"".join(c.public_bytes(_PEM) for c in chain), key_pem)


class CertificateError(PemError):
    """The problem is in the certificate file, not the key file."""
