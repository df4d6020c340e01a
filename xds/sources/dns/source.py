"""The DNS SRV source: every configured name re-resolved at its TTL, published as one catalog.

Rules (docs/dns.md "DNS SRV source"; docs/protocol.md R36 "source unreachable is not zero endpoints"):

- A name is resolved again after its answer's smallest TTL, clamped to [ttl_floor_s, ttl_ceiling_s]
  (`records.refresh_delay_s`); a name the server says is gone (NXDOMAIN, no SRV records) is looked at
  again after the floor.
- NXDOMAIN or no SRV records: the service leaves the catalog at the next publish.
- No answer (timeout, SERVFAIL, refused): the name keeps its last good endpoints, the outage is reported
  to the sink (and once more, as stale, after `max_stale_s`), and the name is retried with jittered
  backoff. A timeout therefore never publishes an empty catalog; before every name has been answered once
  nothing is published at all.
- When the servers answer again after an outage, removals are held for `resync_grace_s` (`ResyncGrace`):
  a DNS server that restarts empty (Consul's dev agent does) must not flush the data plane before its
  registry is repopulated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random as _random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from xds.model.service import Catalog, Endpoint, Service, ServiceName
from xds.sources.backoff import Backoff
from xds.sources.base import SourceSink
from xds.sources.dns.config import DnsConfig, DnsService
from xds.sources.dns.lookup import DnsUnavailableError, Missing, lookup_srv, make_resolver
from xds.sources.dns.records import SrvAnswer, endpoints_of, refresh_delay_s
from xds.sources.outage import OutageTracker, Publication, ResyncGrace, hold_removals

_log = logging.getLogger(__name__)

Lookup = Callable[[str], Awaitable[SrvAnswer | Missing]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DnsStatus:
    """How current the source's view is, for metrics and `xds status`."""

    outage_s: float  # how long some name has gone unanswered; 0 while every name answers
    failing_names: int
    seconds_since_answer: float | None
    resync_grace_remaining_s: float


class DnsSource:
    """A `Source` publishing the services found by SRV lookups. Construction does no I/O.

    `lookup` and `sleep` replace the DNS queries and the wait between resolutions in unit tests.
    """

    def __init__(self, config: DnsConfig, *, clock: Callable[[], float] = time.monotonic,
                 random: Callable[[], float] = _random.random, lookup: Lookup | None = None,
                 sleep: Sleep = asyncio.sleep) -> None:
        self._config = config
        self._clock = clock
        self._random = random
        self._lookup_override = lookup
        self._sleep = sleep
        self._reset_state()

    def _reset_state(self) -> None:
        self._sink: SourceSink | None = None
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}  # per service, once answered
        self._last_answer: float | None = None
        # Logs dns_watch_failed, dns_unavailable and dns_recovered.
        self._outage = OutageTracker(
            source=self.name, label="DNS", server=f"DNS server {self._servers_text()}", event_prefix="dns",
            log=_log, clock=self._clock, max_stale_s=self._config.max_stale_s, report=self._report,
            on_recovery=self._recovered)
        # Logs dns_removals_held.
        self._grace = ResyncGrace(
            grace_s=self._config.resync_grace_s, clock=self._clock,
            hold_removals=lambda before, now: hold_removals(before, now, keep_routable_health=False),
            source=self.name, event_prefix="dns", log=_log)
        self._publication = Publication(source=self.name, event="dns_published", log=_log)
        self._dirty = asyncio.Event()
        self._recheck: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def config(self) -> DnsConfig:
        return self._config

    def status(self) -> DnsStatus:
        now = self._clock()
        return DnsStatus(
            outage_s=self._outage.outage_s(now), failing_names=self._outage.failing_watches,
            seconds_since_answer=None if self._last_answer is None else now - self._last_answer,
            resync_grace_remaining_s=self._grace.remaining_s(now))

    async def run(self, sink: SourceSink) -> None:
        self._reset_state()
        self._sink = sink
        lookup = self._lookup_override
        if lookup is None:
            resolver = make_resolver(self._config.servers, timeout_s=self._config.timeout_s)

            def lookup(name: str) -> Awaitable[SrvAnswer | Missing]:
                return lookup_srv(resolver, name)

        try:
            async with asyncio.TaskGroup() as tasks:
                for service in self._config.services:
                    tasks.create_task(self._watch(service, lookup))
                tasks.create_task(self._publish_loop())
        finally:
            if self._recheck is not None:
                self._recheck.cancel()

    async def _watch(self, service: DnsService, lookup: Lookup) -> None:
        backoff = Backoff(initial_s=self._config.backoff_initial_s, max_s=self._config.backoff_max_s,
                          random=self._random)
        while True:
            try:
                result = await lookup(service.srv_name)
            except DnsUnavailableError as e:
                self._outage.failure(service.name, e)
                await self._outage.sleep_unless_woken(backoff.next_delay_s())
                continue
            backoff.reset()
            self._last_answer = self._clock()
            if isinstance(result, Missing):
                endpoints: tuple[Endpoint, ...] = ()
                delay_s = self._config.ttl_floor_s
            else:
                endpoints = endpoints_of(result, source=self.name, locality=service.locality)
                delay_s = refresh_delay_s(result.ttl_s, floor_s=self._config.ttl_floor_s,
                                          ceiling_s=self._config.ttl_ceiling_s)
            if self._endpoints.get(service.name) != endpoints:
                _log.debug("dns_resolved", extra={"source": self.name, "service": service.name,
                                                  "srv": service.srv_name, "endpoints": len(endpoints)})
                self._endpoints[service.name] = endpoints
                self._dirty.set()
            self._outage.clear(service.name)
            await self._sleep(delay_s)

    def _report(self, message: str) -> None:
        if self._sink is not None:
            self._sink.report_error(self.name, message)

    def _recovered(self) -> None:
        if self._grace.begin() and self._publication.catalog is not None:
            _log.info("dns_resync_grace", extra={"source": self.name, "grace_s": self._config.resync_grace_s})
        self._dirty.set()

    def _servers_text(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self._config.servers)

    def _candidate(self) -> Catalog:
        return Catalog(tuple(Service(ServiceName(name), endpoints)
                             for name, endpoints in self._endpoints.items() if endpoints))

    async def _publish_loop(self) -> None:
        while True:
            await self._dirty.wait()
            if self._config.debounce_s > 0:
                await asyncio.sleep(self._config.debounce_s)
            self._dirty.clear()
            recheck_s = self._publish_if_changed()
            if recheck_s is not None:
                if self._recheck is not None:
                    self._recheck.cancel()
                self._recheck = asyncio.get_running_loop().call_later(recheck_s, self._dirty.set)

    def _publish_if_changed(self) -> float | None:
        # Nothing before every name has been answered once: a partial first catalog would route nowhere
        # for the names still unanswered.
        if self._publication.catalog is None and len(self._endpoints) < len(self._config.services):
            return None
        now = self._clock()
        if (settle_s := self._outage.settle_remaining_s(now)) is not None:
            return settle_s
        assert self._sink is not None
        published, recheck_s = self._publication.offer(
            self._sink, self._candidate(), None, grace=self._grace,
            in_grace=self._grace.active(self._publication.catalog), policy_held=False, now=now,
            force=self._outage.announce)
        if published:
            self._outage.published()
        return recheck_s


async def run_until_cancelled(source: DnsSource, sink: SourceSink) -> None:
    """`source.run(sink)`, swallowing the cancellation that ends it (for callers that cancel to stop)."""
    with contextlib.suppress(asyncio.CancelledError):
        await source.run(sink)
