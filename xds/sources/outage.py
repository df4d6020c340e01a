"""Health of a watching source (Consul, Kubernetes): outage bookkeeping and the resync grace.

`OutageTracker` keeps which watches of a source are failing and turns that into what the sink and the
logs are told (docs/protocol.md R36, F5, F8):

- An outage starts with the first failing watch and ends when the last one answers again.
- It is reported to the sink once per outage and kind of error (100 watches failing with "connection
  refused" are one outage, but a 403 appearing during a 500 outage is news), and a second time once it has
  lasted `max_stale_s`.
- The first answer after a failure wakes every watch sleeping in `sleep_unless_woken`, so the others retry
  at once rather than at the end of their backoff; `settle_remaining_s` tells the publisher how long to
  wait for them, so a recovery is published once, whole.
- After an outage that was reported, `announce` asks for one publish even if nothing changed: the sink
  takes a publish as "recovered". `published()` then says again whatever is still failing.

The tracker logs with the source's own logger, as `<prefix>_watch_failed` (debug), `<prefix>_unavailable`
and `<prefix>_recovered`; besides logging it does no I/O, and it reads time only from the clock it is given.

`ResyncGrace` is the window after a resync (a recovery, an index reset) during which a source publishes
its new state with whatever it would take away from its last publish put back (`hold_removals`); when to
start it is the source's own decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from xds.model.service import Catalog, Endpoint, Health, Service, ServiceName
from xds.policy.schema import Policy
from xds.sources.base import SourceSink, SourceUpdate

# After one watch recovers, how long the publisher waits for the others that are still failing (they are
# woken to retry at once, so normally they answer within milliseconds).
SETTLE_S = 1.0
# Health that sends traffic; with `keep_routable_health` such an endpoint does not become UNHEALTHY.
_ROUTABLE = frozenset({Health.HEALTHY, Health.DEGRADED, Health.UNKNOWN})


class OutageTracker:
    """The failing watches of one source, and the reports and wake-ups their failures and recoveries call for.

    `label` names the registry in reports ("serving the last state read from <label>"); `server` is how the
    staleness report names what stopped answering ("<server> has not answered for ..."). `report` delivers
    a message to the sink; `on_recovery` runs when the last failing watch answers again.
    """

    def __init__(self, *, source: str, label: str, server: str, event_prefix: str, log: logging.Logger,
                 clock: Callable[[], float], max_stale_s: float, report: Callable[[str], None],
                 on_recovery: Callable[[], None]) -> None:
        self._source = source
        self._label = label
        self._server = server
        self._prefix = event_prefix
        self._log = log
        self._clock = clock
        self._max_stale_s = max_stale_s
        self._report = report
        self._on_recovery = on_recovery
        self._failing: dict[str, str] = {}  # watch -> its last error
        self._outage_started: float | None = None
        self._reported_kinds: set[type[Exception]] = set()
        self._stale_reported = False
        self._announce = False  # publish even if unchanged: the sink must learn the outage is over
        self._recovered_at = float("-inf")
        self._wake = asyncio.Event()  # set (and replaced) to cut the backoff sleeps of failing watches

    @property
    def failing_watches(self) -> int:
        return len(self._failing)

    @property
    def announce(self) -> bool:
        """A reported outage ended since the last publish: publish even if nothing changed."""
        return self._announce

    def outage_s(self, now: float) -> float:
        """How long some watch has been failing; 0 while every watch answers."""
        return 0.0 if self._outage_started is None else now - self._outage_started

    def failure(self, key: str, error: Exception) -> None:
        """Watch `key` failed with `error`."""
        now = self._clock()
        if not self._failing:
            self._outage_started = now
        self._failing[key] = str(error)
        self._log.debug(f"{self._prefix}_watch_failed",
                        extra={"source": self._source, "watch": key, "error": str(error)})
        kind = type(error)
        if kind not in self._reported_kinds:
            # Once per outage and kind of error: 100 watches failing with "connection refused" are one
            # outage, but a 403 appearing during a 500 outage is news.
            self._reported_kinds.add(kind)
            self._log.warning(f"{self._prefix}_unavailable",
                              extra={"source": self._source, "watch": key, "error": str(error)})
            self._report(f"{error}; serving the last state read from {self._label}")
        started = self._outage_started if self._outage_started is not None else now
        if not self._stale_reported and now - started >= self._max_stale_s:
            self._stale_reported = True
            self._report(f"{self._server} has not answered for {now - started:.0f} s (more than "
                         f"{self._max_stale_s:g} s); still serving the last state read from it: {error}")

    def clear(self, key: str) -> None:
        """Watch `key` answered; a no-op unless it was failing."""
        if key not in self._failing:
            return
        now = self._clock()
        del self._failing[key]
        self._recovered_at = now
        # The registry answers again: let every failing watch retry now rather than at the end of its backoff.
        self._wake.set()
        self._wake = asyncio.Event()
        if not self._failing:
            started = self._outage_started if self._outage_started is not None else now
            self._log.info(f"{self._prefix}_recovered",
                           extra={"source": self._source, "outage_s": round(now - started, 3)})
            self._announce = bool(self._reported_kinds)
            self._outage_started = None
            self._reported_kinds.clear()
            self._stale_reported = False
            self._on_recovery()

    async def sleep_unless_woken(self, delay_s: float) -> None:
        """Sleep `delay_s`, or less if some watch recovers meanwhile."""
        wake = self._wake
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await wake.wait()

    def settle_remaining_s(self, now: float) -> float | None:
        """While watches are still failing right after another recovered: how long to wait for them."""
        if self._failing and now - self._recovered_at < SETTLE_S:
            return self._recovered_at + SETTLE_S - now
        return None

    def published(self) -> None:
        """The source published: the recovery is announced, and what still fails is said again (the sink
        takes a publish as "recovered")."""
        self._announce = False
        if self._failing:
            first = sorted(self._failing.items())[0]
            more = f" (and {len(self._failing) - 1} more failing watches)" if len(self._failing) > 1 else ""
            self._report(f"{first[1]}{more}; serving the last state read from {self._label}")


class ResyncGrace:
    """For `grace_s` after `begin()`, once the source has published, `hold` keeps back what would take
    traffic away from the last publish; it logs `<prefix>_removals_held` when it does. `hold_removals` is
    the source's own rule for what to put back."""

    def __init__(self, *, grace_s: float, clock: Callable[[], float],
                 hold_removals: Callable[[Catalog, Catalog], Catalog], source: str, event_prefix: str,
                 log: logging.Logger) -> None:
        self._grace_s = grace_s
        self._clock = clock
        self._hold_removals = hold_removals
        self._source = source
        self._prefix = event_prefix
        self._log = log
        self._until = float("-inf")

    def begin(self) -> bool:
        """Start (or restart) the grace now; False, starting nothing, when the grace is off."""
        if self._grace_s <= 0:
            return False
        self._until = self._clock() + self._grace_s
        return True

    def active(self, published: Catalog | None) -> bool:
        """In the grace, with a publish to hold on to."""
        return published is not None and self._clock() < self._until

    def remaining_s(self, now: float) -> float:
        return max(0.0, self._until - now)

    def hold(self, published: Catalog, candidate: Catalog, *, now: float,
             policy_held: bool) -> tuple[Catalog, float | None]:
        """What to publish instead of `candidate`, and, when anything is held back (removals, or a policy
        the source itself holds), the seconds after which to look again: when the grace ends."""
        catalog = self._hold_removals(published, candidate)
        if catalog == candidate and not policy_held:
            return catalog, None
        recheck_s = self._until - now
        self._log.info(f"{self._prefix}_removals_held",
                       extra={"source": self._source, "grace_remaining_s": round(recheck_s, 3)})
        return catalog, recheck_s


class Publication:
    """What a registry source last published, and the one decision of whether to publish again: during a
    resync grace the removals are held back, and an unchanged full state is not sent unless forced."""

    def __init__(self, *, source: str, event: str, log: logging.Logger) -> None:
        self._source = source
        self._event = event
        self._log = log
        self.catalog: Catalog | None = None
        self.policy: Policy | None = None

    def offer(self, sink: SourceSink, candidate: Catalog, policy: Policy | None, *, grace: ResyncGrace,
              in_grace: bool, policy_held: bool, now: float, force: bool) -> tuple[bool, float | None]:
        """Publish `candidate` (held back as the grace requires) if it differs from the last publish or
        `force` is set; returns (published, seconds after which to look again, or None)."""
        catalog, recheck_s = candidate, None
        if in_grace and self.catalog is not None:
            catalog, recheck_s = grace.hold(self.catalog, candidate, now=now, policy_held=policy_held)
        if catalog == self.catalog and policy == self.policy and not force:
            return False, recheck_s
        self.catalog, self.policy = catalog, policy
        self._log.info(self._event, extra={
            "source": self._source, "services": len(catalog),
            "endpoints": sum(len(s.endpoints) for s in catalog.services),
            "listeners": len(policy.listeners) if policy is not None else 0})
        sink.publish(SourceUpdate(source=self._source, catalog=catalog, policy=policy))
        return True, recheck_s


def hold_removals(previous: Catalog, candidate: Catalog, *, keep_routable_health: bool) -> Catalog:
    """`candidate`, with the services and endpoints missing from it compared with `previous` put back;
    with `keep_routable_health`, endpoints that were routable and are UNHEALTHY in it also keep their last
    health."""
    services: dict[ServiceName, tuple[Endpoint, ...]] = {s.name: s.endpoints for s in candidate.services}
    for before in previous.services:
        now = candidate.get(before.name)
        if now is None:
            services[before.name] = before.endpoints
            continue
        kept = now.endpoints
        if keep_routable_health:
            old = {e.address: e for e in before.endpoints}
            kept = tuple(old[e.address] if e.address in old and old[e.address].health in _ROUTABLE
                         and e.health is Health.UNHEALTHY else e for e in now.endpoints)
        present = {e.address for e in now.endpoints}
        services[before.name] = kept + tuple(e for e in before.endpoints if e.address not in present)
    return Catalog(tuple(Service(name, endpoints) for name, endpoints in services.items()))
