"""Each node group's current workload certificate, and when it rotates (issue 9, item 4).

A group's certificate is issued on first use (its first snapshot build) and replaced once half its lifetime
has passed: the snapshot built after that carries a new Secret version under the same name, and Envoy swaps
it in for new handshakes without dropping connections (docs/protocol.md R46). The half-life margin leaves
plenty of time for a proxy that is briefly disconnected to still hold a valid certificate.

When the CA changes (a reloaded CA file), every group gets a certificate of the new CA on its next build,
and the trust bundle carries the old CA as well until the last certificate it signed has expired, so peers
that still present an old certificate keep being accepted.

Thread-safe: snapshot builds run on worker threads. Holds at most one certificate per group issued within a
lifetime; expired entries are dropped.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from dataclasses import dataclass

from xds.pki.ca import CertificateAuthority, IssuedCertificate

DEFAULT_WORKLOAD_CERT_TTL_S = 3600.0
# Shorter lifetimes would rotate faster than proxies comfortably reconnect and fetch (issue 9: min 60 s).
MIN_WORKLOAD_CERT_TTL_S = 60.0

Clock = Callable[[], datetime.datetime]


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True, slots=True)
class _Held:
    certificate: IssuedCertificate
    rotate_at: datetime.datetime
    ca: CertificateAuthority


@dataclass(frozen=True, slots=True)
class _Retired:
    ca: CertificateAuthority
    trusted_until: datetime.datetime


class WorkloadIdentities:
    def __init__(self, ca: CertificateAuthority, *, lifetime_s: float = DEFAULT_WORKLOAD_CERT_TTL_S,
                 clock: Clock = _utcnow) -> None:
        if lifetime_s < MIN_WORKLOAD_CERT_TTL_S:
            raise ValueError(f"workload certificate lifetime must be at least {MIN_WORKLOAD_CERT_TTL_S:g} s, "
                             f"got {lifetime_s:g} s")
        self._ca = ca
        self._lifetime = datetime.timedelta(seconds=lifetime_s)
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._retired: list[_Retired] = []
        self._lock = threading.Lock()
        self.issued_total = 0

    @property
    def ca(self) -> CertificateAuthority:
        return self._ca

    @property
    def lifetime(self) -> datetime.timedelta:
        return self._lifetime

    def set_ca(self, ca: CertificateAuthority) -> None:
        """Issue from `ca` from now on; keep trusting the old CA while certificates it signed are valid."""
        with self._lock:
            if ca.certificate == self._ca.certificate:
                return
            now = self._clock()
            self._retired = [r for r in self._retired if r.trusted_until > now]
            self._retired.append(_Retired(self._ca, now + self._lifetime))
            self._ca = ca
            self._held.clear()  # every group gets a certificate of the new CA on its next build

    def certificate(self, identity: str) -> IssuedCertificate:
        """The current certificate for `identity`, issuing a new one when none is held or it is due."""
        with self._lock:
            now = self._clock()
            held = self._held.get(identity)
            if held is not None and now < held.rotate_at and held.ca is self._ca:
                return held.certificate
            issued = self._ca.issue(identity, lifetime=self._lifetime, now=now)
            self.issued_total += 1
            self._held[identity] = _Held(issued, now + self._lifetime / 2, self._ca)
            self._forget_expired(now)
            return issued

    def trust_bundle_pem(self) -> str:
        """The current CA, then retired CAs still trusted, as concatenated PEM."""
        with self._lock:
            now = self._clock()
            retired = [r.ca.certificate_pem for r in self._retired if r.trusted_until > now]
            return "".join([self._ca.certificate_pem, *retired])

    def next_rotation(self) -> datetime.datetime | None:
        """The earliest time a held certificate is due, or None when none is held."""
        with self._lock:
            return min((h.rotate_at for h in self._held.values()), default=None)

    def release_due(self) -> int:
        """Forget every certificate that is due, so the next build of its group issues a new one; returns
        how many. The rotation loop calls this before it rebuilds the live groups (idle groups are not
        rebuilt, and a due certificate left held would keep the loop busy)."""
        with self._lock:
            now = self._clock()
            due = [k for k, h in self._held.items() if h.rotate_at <= now]
            for key in due:
                del self._held[key]
            return len(due)

    def _forget_expired(self, now: datetime.datetime) -> None:
        expired = [k for k, h in self._held.items() if h.certificate.not_after <= now]
        for key in expired:
            del self._held[key]
