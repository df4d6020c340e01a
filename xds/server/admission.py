"""Admission control for connect storms (issue 12; docs/operations.md, "Connect storms").

When thousands of proxies connect at once (a control-plane restart, a zone coming back), every new stream
costs the server its initial sync: four responses built and written, four ACKs read. Two bounds keep a
storm from stalling the streams already being served, each off when 0:

* `starts_per_s`: new streams admitted per second, a token bucket of `start_burst` tokens;
* `max_initial_syncs`: streams admitted but not yet through their initial sync, at once.

A stream over either bound is refused before any work is done for it, with UNAVAILABLE: Envoy and gRPC
clients retry an ended xDS stream with backoff (docs/operations.md, "Connect storms"), so the refused
proxies come back spread out in time rather than all at once. Nothing here does I/O; stream.py applies it
and the clock is injectable so the unit tests run on a fake one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Label values of xds_limit_exceeded_total for the two bounds.
STARTS_LIMIT = "stream_starts_per_s"
SYNCS_LIMIT = "max_initial_syncs"


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    starts_per_s: float = 0.0
    # Tokens the bucket holds when full; 0 means one second's worth (`starts_per_s`, at least 1).
    start_burst: int = 0
    max_initial_syncs: int = 0

    def __post_init__(self) -> None:
        if self.starts_per_s < 0:
            raise ValueError(f"starts_per_s must not be negative, got {self.starts_per_s}")
        if self.start_burst < 0:
            raise ValueError(f"start_burst must not be negative, got {self.start_burst}")
        if self.max_initial_syncs < 0:
            raise ValueError(f"max_initial_syncs must not be negative, got {self.max_initial_syncs}")

    @property
    def burst(self) -> float:
        return float(self.start_burst or max(1, int(self.starts_per_s)))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a new stream was not admitted: `limit` is the metric label, `message` goes to the client."""

    limit: str
    message: str


class Ticket:
    """An admitted stream's place among the initial syncs; `release()` is idempotent, so the stream calls
    it both when its initial sync completes and when it ends."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission.syncing -= 1
            self._admission = None

    @property
    def held(self) -> bool:
        return self._admission is not None


class Admission:
    """Decides, per new stream, admit (a Ticket) or refuse (a Refusal). One per server (one event loop)."""

    def __init__(self, settings: AdmissionSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._tokens = settings.burst
        self._last = clock()
        self.syncing = 0
        self.refused = 0

    def admit(self) -> Ticket | Refusal:
        s = self.settings
        if s.max_initial_syncs and self.syncing >= s.max_initial_syncs:
            return self._refuse(SYNCS_LIMIT, f"the server is already syncing {s.max_initial_syncs} new "
                                             "streams (--max-initial-syncs); retry later")
        if s.starts_per_s:
            now = self._clock()
            self._tokens = min(s.burst, self._tokens + (now - self._last) * s.starts_per_s)
            self._last = now
            if self._tokens < 1.0 - 1e-9:  # float slack: 0.1 s at 10/s is one whole token
                return self._refuse(STARTS_LIMIT, f"the server admits {s.starts_per_s:g} new streams per "
                                                  "second (--max-stream-starts-per-second); retry later")
            self._tokens -= 1.0
        self.syncing += 1
        return Ticket(self)

    def _refuse(self, limit: str, message: str) -> Refusal:
        self.refused += 1
        return Refusal(limit, message)


class EveryInterval:
    """Rate-limits a log line: `due()` is True at most once per `interval_s`, and says how many events
    were folded into it, so a storm of refusals logs one line a second with a count."""

    def __init__(self, interval_s: float = 1.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: float | None = None
        self._folded = 0

    def due(self) -> int:
        """Count one event; the number of events to report now (0: not yet)."""
        self._folded += 1
        now = self._clock()
        if self._last is not None and now - self._last < self._interval_s:
            return 0
        self._last = now
        count, self._folded = self._folded, 0
        return count
