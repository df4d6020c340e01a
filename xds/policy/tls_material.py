"""The TLS files a policy names, and their checked contents as the control plane last read them (issue 9).

Pure: reading and checking the files is `xds/sources/tls_files.py`'s job; this module says which files a
policy needs (`tls_inputs`) and carries what was read (`TlsMaterial`) into `apply_policy`, which copies the
bytes into the specs that `translate` turns into Envoy config. Private keys are held with `repr=False` so that
no log line, error or /status page that prints a spec or the material can show one (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from xds.policy.schema import Policy

# A certificate and its key are checked together (the key must match the certificate), so they are one input.
KeyPairFiles = tuple[str, str]  # (cert_file, key_file)


@dataclass(frozen=True, slots=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class TlsInputs:
    """Every file a policy names, each with where it is named (for error messages), in policy order."""

    ca_files: Mapping[str, str] = field(default_factory=dict)
    key_pairs: Mapping[KeyPairFiles, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.ca_files or self.key_pairs)

    def paths(self) -> tuple[str, ...]:
        """Every path, once, in policy order: what a watcher stats."""
        paths = dict.fromkeys(self.ca_files)
        for cert, key in self.key_pairs:
            paths.setdefault(cert)
            paths.setdefault(key)
        return tuple(paths)


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """The last good contents of the files of a TlsInputs: CA bundles by path, key pairs by (cert, key)."""

    ca_bundles: Mapping[str, bytes] = field(default_factory=dict)
    key_pairs: Mapping[KeyPairFiles, KeyPair] = field(default_factory=dict, repr=False)


NO_MATERIAL = TlsMaterial()


def tls_inputs(policy: Policy) -> TlsInputs:
    """The CA bundles of services' `tls` and the certificates of listeners' `tls`."""
    ca_files: dict[str, str] = {}
    key_pairs: dict[KeyPairFiles, str] = {}
    for service in policy.services:
        if service.tls is not None:
            ca_files.setdefault(service.tls.ca_file, f"service {service.name!r} tls.ca_file")
    for listener in policy.listeners:
        if listener.tls is None:
            continue
        for index, cert in enumerate(listener.tls.certificates):
            key_pairs.setdefault((cert.cert_file, cert.key_file),
                                 f"listener {listener.name!r} tls.certificates[{index}]")
    return TlsInputs(ca_files, key_pairs)
