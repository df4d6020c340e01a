"""Test certificates made at test time with `cryptography`: CAs, server and client certificates.

Nothing is checked in: every test makes its own CA, so no key material lives in the repository and no
certificate expires between runs. Keys are ECDSA P-256 (fast to make; Envoy and gRPC both accept them).

The shapes follow docs/security.md ("Transport: mTLS and node identity on the xDS port"): a server
certificate with DNS/IP SANs, client certificates carrying a SPIFFE URI SAN
`spiffe://<trust-domain>/group/<group>/node/<node>`, and the broken variants the tests need (expired, from
another CA, without any SAN).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_ONE_DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def spiffe_id(trust_domain: str, group: str, node: str | None = None) -> str:
    """The proxy identity convention of issue 9: a group-wide id, or one bound to a single node."""
    base = f"spiffe://{trust_domain}/group/{group}"
    return base if node is None else f"{base}/node/{node}"


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key, in PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """`<name>.crt` and `<name>.key` in `directory` (the key readable by the owner only)."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        write_atomic(cert, self.cert_pem)
        write_atomic(key, self.key_pem, mode=0o600)
        return cert, key


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace `path` in one rename, as config management does: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A self-signed root that issues leaf certificates."""

    name: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, name: str = "xds test CA") -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - _ONE_DAY)
            .not_valid_after(_now() + 30 * _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(name=name, key=key, certificate=cert)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write_ca(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, self.cert_pem)
        return path

    def issue(self, *, common_name: str, dns: Sequence[str] = (), ips: Sequence[str] = (),
              uris: Sequence[str] = (), server: bool = False, client: bool = False,
              not_before: datetime.datetime | None = None,
              not_after: datetime.datetime | None = None) -> Issued:
        """A leaf certificate with exactly the SANs given (none at all when all three are empty)."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or _now() - datetime.timedelta(minutes=5)
        end = not_after or _now() + 7 * _ONE_DAY
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        names += [x509.UniformResourceIdentifier(u) for u in uris]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))

    def server_cert(self, *, dns: Sequence[str] = ("localhost",), ips: Sequence[str] = ("127.0.0.1",),
                    uris: Sequence[str] = ()) -> Issued:
        return self.issue(common_name="xds control plane", dns=dns, ips=ips, uris=uris, server=True)

    def client_cert(self, uri: str | None = None, *, dns: Sequence[str] = (), expired: bool = False
                    ) -> Issued:
        """A proxy's certificate: `uri` its SPIFFE id. `expired`: valid for an hour that ended a day ago."""
        start, end = (_now() - 2 * _ONE_DAY, _now() - _ONE_DAY) if expired else (None, None)
        return self.issue(common_name=uri or (dns[0] if dns else "proxy"), dns=dns,
                          uris=(uri,) if uri else (), client=True, not_before=start, not_after=end)


def install_set(directory: Path, files: Mapping[str, bytes]) -> dict[str, Path]:
    """Publish `files` the way a Kubernetes Secret volume does: a new versioned directory, then one atomic
    rename of the `..data` symlink, so a reader sees either every old file or every new one, never a new
    certificate with the old key. Returns name -> the stable path (`directory/<name>`)."""
    directory.mkdir(parents=True, exist_ok=True)
    version = directory / f"..{uuid.uuid4().hex}"
    version.mkdir()
    for name, data in files.items():
        (version / name).write_bytes(data)
    link = directory / f"..data.{uuid.uuid4().hex}.tmp"
    link.symlink_to(version.name)
    os.replace(link, directory / "..data")
    paths: dict[str, Path] = {}
    for name in files:
        stable = directory / name
        if not stable.is_symlink():
            stable.symlink_to(Path("..data") / name)
        paths[name] = stable
    return paths
