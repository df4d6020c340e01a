"""A CA for workload certificates: loaded from PEM files or created in memory, issuing SPIFFE X.509-SVIDs.

Loading checks what would otherwise fail later and far away (in Envoy, as a handshake error): each file is
read and parsed on its own, so an error names the file that is wrong (missing, not PEM, not a CA, expired,
a key that does not match the certificate). Errors never include key material.

Issued certificates follow the X.509-SVID profile (spiffe.io "X509-SVID"): exactly one URI SAN, the
workload's SPIFFE ID; CA:FALSE; key usage digitalSignature (and keyEncipherment for RSA-style use); extended
key usage serverAuth and clientAuth, since a sidecar is both. Each one gets a fresh EC P-256 key.
"""

from __future__ import annotations

import datetime
import secrets as random_source
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Issued certificates start a minute early, so a proxy whose clock runs slightly behind accepts them.
CLOCK_SKEW = datetime.timedelta(seconds=60)
DEV_CA_LIFETIME = datetime.timedelta(days=365)


class CaError(ValueError):
    """The CA files cannot be used; the message names the file and what is wrong with it."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    identity: str
    certificate_pem: str
    private_key_pem: str = field(repr=False)
    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes = field(repr=False)
    origin: str  # "file:/etc/xds/ca.pem" or "generated", for logs

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def not_after(self) -> datetime.datetime:
        return self.certificate.not_valid_after_utc

    def issue(self, identity: str, *, lifetime: datetime.timedelta,
              now: datetime.datetime | None = None) -> IssuedCertificate:
        """A certificate for the SPIFFE ID `identity`, valid for `lifetime` (cut at the CA's own expiry)."""
        now = now or datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        not_before = max(now - CLOCK_SKEW, self.certificate.not_valid_before_utc)
        not_after = min(now + lifetime, self.not_after)
        serial = x509.random_serial_number()
        ca_public = self.certificate.public_key()
        builder = (
            x509.CertificateBuilder()
            # The SVID profile leaves the subject free; the identity is the URI SAN alone.
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xds workload")]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
                           critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=True, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=False, crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if isinstance(ca_public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
                      | ed448.Ed448PublicKey):
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public),
                                            critical=False)
        certificate = builder.sign(self.key, _hash_for(self.key))
        return IssuedCertificate(
            identity=identity,
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
            private_key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode(),
            serial=serial, not_before=not_before, not_after=not_after)


def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    # Ed25519 and Ed448 sign without a separate digest (cryptography: CertificateBuilder.sign).
    return None if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) else hashes.SHA256()


def generate_ca(trust_domain: str, *, now: datetime.datetime | None = None) -> CertificateAuthority:
    """A self-signed development CA held only in memory (issue 9: no CA files given)."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xds development CA"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} workload CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + DEV_CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        # A SPIFFE trust domain's CA carries the trust domain as its URI SAN (X509-SVID section 4).
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    # An unguessable suffix in the origin tells two development CAs apart in logs.
    return CertificateAuthority(certificate, key, origin=f"generated:{random_source.token_hex(4)}")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CaError(f"{what} {path}: file not found") from None
    except OSError as exc:
        raise CaError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None


def load_ca(cert_path: Path, key_path: Path, *, now: datetime.datetime | None = None) -> CertificateAuthority:
    """The CA in `cert_path` (PEM certificate) and `key_path` (PEM private key, unencrypted); CaError
    naming the file otherwise."""
    now = now or datetime.datetime.now(datetime.UTC)
    cert_bytes = _read(cert_path, "CA certificate")
    key_bytes = _read(key_path, "CA key")
    try:
        certificate = x509.load_pem_x509_certificate(cert_bytes)
    except ValueError:
        raise CaError(f"CA certificate {cert_path}: not a PEM certificate (malformed or empty)") from None
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except TypeError:
        raise CaError(f"CA key {key_path}: the key is encrypted; give an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        # The parser's message could quote the input; say only what is wrong.
        raise CaError(f"CA key {key_path}: not a PEM private key (malformed or empty)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
                      | ed448.Ed448PrivateKey):
        raise CaError(f"CA key {key_path}: a {type(key).__name__} cannot sign certificates; use EC, RSA or "
                      "Ed25519")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, public)
            != certificate.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise CaError(f"CA key {key_path} does not match the CA certificate {cert_path}")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CaError(f"CA certificate {cert_path}: not a CA certificate (basicConstraints CA:TRUE missing)")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise CaError(f"CA certificate {cert_path}: its key usage does not allow signing certificates "
                      "(keyCertSign)")
    if certificate.not_valid_after_utc <= now:
        raise CaError(f"CA certificate {cert_path}: expired on {certificate.not_valid_after_utc.isoformat()}")
    if certificate.not_valid_before_utc > now + CLOCK_SKEW:
        raise CaError(f"CA certificate {cert_path}: not valid before "
                      f"{certificate.not_valid_before_utc.isoformat()}")
    return CertificateAuthority(certificate, key, origin=f"file:{cert_path}")
