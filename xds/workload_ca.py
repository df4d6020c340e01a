"""The workload CA of a running server: its settings, loading at startup, file reload and rotation.

At startup the CA comes from `--ca-cert`/`--ca-key` (XDS_CA_CERT/XDS_CA_KEY, PEM file paths; an external CA
such as cert-manager, Vault or a corporate CA signs that intermediate), or, with neither, a self-signed
development CA is created in memory and the log says so. A bad CA file at startup is fatal, with an error
naming the file. While serving, the files are polled: a changed, valid CA is adopted (every group gets a
certificate of it on its next build, the old CA stays in the trust bundle while its certificates live), and
an invalid one is logged and ignored, so the last good CA keeps serving (issue 9, item 4).

Rotation: each group's certificate is due at half its lifetime (`--workload-cert-ttl`, pki/workload.py);
when one is due the app rebuilds the live groups, which pushes the new Secret version.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xds.model.spiffe import check_trust_domain
from xds.pki.ca import CaError, CertificateAuthority, generate_ca, load_ca
from xds.pki.workload import WorkloadIdentities

log = logging.getLogger("xds.workload_ca")

CA_POLL_INTERVAL_S = 2.0


@dataclass(frozen=True, slots=True)
class CaFiles:
    cert: Path
    key: Path


def ca_files(cert: Path | None, key: Path | None) -> CaFiles | None:
    """Both paths, or neither (a development CA); one without the other is a configuration error."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        missing = "--ca-cert (XDS_CA_CERT)" if cert is None else "--ca-key (XDS_CA_KEY)"
        raise CaError(f"the workload CA needs both a certificate and its key: {missing} is missing")
    return CaFiles(cert, key)


def open_identities(files: CaFiles | None, *, trust_domain: str, lifetime_s: float) -> WorkloadIdentities:
    """The workload identities of a starting server; CaError (naming the file) or ValueError if unusable."""
    check_trust_domain(trust_domain)
    if files is None:
        ca = generate_ca(trust_domain)
        log.warning("workload_ca_generated", extra={
            "origin": ca.origin, "trust_domain": trust_domain,
            "hint": "a development CA held in memory only: its certificates are not trusted by another "
                    "server or after a restart; give --ca-cert and --ca-key for a real one"})
    else:
        ca = load_ca(files.cert, files.key)
        log.info("workload_ca_loaded", extra={"origin": ca.origin, "trust_domain": trust_domain,
                                              "expires": ca.not_after.isoformat()})
    return WorkloadIdentities(ca, lifetime_s=lifetime_s)


class CaFileWatcher:
    """Reloads the CA files when their content changes; the last good CA stays on a bad change."""

    def __init__(self, files: CaFiles, identities: WorkloadIdentities) -> None:
        self._files = files
        self._identities = identities
        self._seen = self._fingerprint()
        self.error = ""
        self.reload_errors = 0

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in (self._files.cert, self._files.key):
            try:
                digest.update(path.read_bytes())
            except OSError as exc:
                digest.update(f"unreadable:{exc.errno}".encode())
            digest.update(b"\0")
        return digest.hexdigest()

    def check(self) -> bool:
        """True when a new CA was adopted."""
        seen = self._fingerprint()
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            ca = load_ca(self._files.cert, self._files.key)
        except CaError as exc:
            self.error = str(exc)
            self.reload_errors += 1
            log.error("workload_ca_reload_failed", extra={"error": self.error,
                                                          "serving": self._identities.ca.origin})
            return False
        self.error = ""
        if ca.certificate == self._identities.ca.certificate:
            return False
        self._identities.set_ca(ca)
        log.info("workload_ca_reloaded", extra={"origin": ca.origin, "expires": ca.not_after.isoformat()})
        return True


async def rotate_forever(identities: WorkloadIdentities, watcher: CaFileWatcher | None,
                         rebuild: Callable[[], None], *, poll_s: float = CA_POLL_INTERVAL_S) -> None:
    """Call `rebuild` whenever a certificate is due or the CA changed; runs until cancelled."""
    while True:
        due = identities.next_rotation()
        now = datetime.datetime.now(datetime.UTC)
        wait_s = poll_s if due is None else min(poll_s, max(0.0, (due - now).total_seconds()))
        await asyncio.sleep(wait_s)
        changed = watcher.check() if watcher is not None else False
        due = identities.next_rotation()
        if due is not None and due <= datetime.datetime.now(datetime.UTC):
            count = identities.release_due()
            log.info("workload_certs_rotating", extra={"due": count})
            changed = True
        if changed:
            rebuild()


def describe(ca: CertificateAuthority) -> dict[str, str]:
    """What /status shows of the CA: where it came from and when it expires; never key material."""
    return {"origin": ca.origin, "expires": ca.not_after.isoformat()}
