"""Pacing for source watch loops: jittered exponential backoff after errors, a token bucket between calls.

Both are pure bookkeeping: they compute how long to wait and never sleep themselves, so the watch loops
decide how to wait (cancellably, or cut short by an event) and the tests drive them with an injected clock
and random source instead of real time.

- `Backoff` is "full jitter" exponential backoff: the n-th consecutive failure waits a uniformly random
  time in [0, min(cap, initial * multiplier**n)]. Randomizing the whole interval (not just adding a little
  noise) is what spreads out many watchers that failed together, e.g. every watch of a Consul agent that
  just restarted, so that they do not come back in lockstep (docs/architecture.md).
- `TokenBucket` bounds how often a loop may call out, whatever the remote side answers. Consul's
  blocking-query docs ask for exactly this: a blocking query can legitimately return at once, many times
  (idempotent writes, an index that is 0 or went backwards), and a loop that re-arms immediately turns
  that into a busy loop against the cluster; "rate limit the loop with a token bucket; do not simply
  sleep" (docs/protocol.md R32, Consul api-docs/features/blocking "Implementation details").
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Callable

DEFAULT_INITIAL_S = 0.5
DEFAULT_MAX_S = 30.0
DEFAULT_MULTIPLIER = 2.0


class Backoff:
    """Full-jitter exponential backoff: `next_delay_s()` after each failure, `reset()` after a success."""

    def __init__(self, *, initial_s: float = DEFAULT_INITIAL_S, max_s: float = DEFAULT_MAX_S,
                 multiplier: float = DEFAULT_MULTIPLIER,
                 random: Callable[[], float] = _random.random) -> None:
        if initial_s <= 0 or max_s < initial_s or multiplier < 1:
            raise ValueError(f"need 0 < initial_s <= max_s and multiplier >= 1, got initial_s={initial_s}, "
                             f"max_s={max_s}, multiplier={multiplier}")
        self._initial_s = initial_s
        self._max_s = max_s
        self._multiplier = multiplier
        self._random = random
        self._failures = 0

    @property
    def failures(self) -> int:
        """Consecutive failures since the last reset."""
        return self._failures

    def ceiling_s(self) -> float:
        """The upper bound of the next delay."""
        # Computed by repeated multiplication with an early exit so a long outage cannot overflow a float.
        ceiling = self._initial_s
        for _ in range(self._failures):
            ceiling *= self._multiplier
            if ceiling >= self._max_s:
                return self._max_s
        return min(ceiling, self._max_s)

    def next_delay_s(self) -> float:
        """How long to wait before the next attempt, counting one more failure."""
        delay = self._random() * self.ceiling_s()
        self._failures += 1
        return delay

    def reset(self) -> None:
        self._failures = 0


class TokenBucket:
    """Allows bursts of up to `burst` calls, then `rate_per_s` calls per second on average.

    `reserve_s()` takes a token and says how long the caller must wait before using it (0 when one is
    available now). A caller that is told to wait has already paid: tokens may go negative, which queues
    concurrent callers one behind the other instead of letting them all wake at once.
    """

    def __init__(self, *, rate_per_s: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"need rate_per_s > 0 and burst >= 1, got rate_per_s={rate_per_s}, "
                             f"burst={burst}")
        self._rate_per_s = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)  # a clock that steps back must not drain the bucket
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate_per_s)
        self._updated = now

    def reserve_s(self) -> float:
        """Take one token; the seconds to wait before acting on it."""
        self._refill()
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self._rate_per_s

    def available(self) -> float:
        """Tokens available now (may be negative while reservations are outstanding)."""
        self._refill()
        return self._tokens
