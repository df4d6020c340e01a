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
- When a name is answered again after a failure, removals are held for `resync_grace_s` (the engine's
  resync grace, xds/sources/registry/engine.py):
  a DNS server that restarts empty (Consul's dev agent does) must not flush the data plane before its
  registry is repopulated.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import time
from collections.abc import Awaitable, Callable

from xds.model.service import Catalog, Endpoint, Service, ServiceName
from xds.sources.base import SourceSink
from xds.sources.dns.config import DnsConfig, DnsService
from xds.sources.dns.lookup import DnsUnavailableError, Missing, lookup_srv, make_resolver
from xds.sources.dns.records import SrvAnswer, endpoints_of, refresh_delay_s
from xds.sources.outage import hold_removals
from xds.sources.registry import Candidate, EngineConfig, RegistryEngine, SourceStatus

_log = logging.getLogger(__name__)

# Every registry marks its endpoints with `registry`, so one policy can split a service across registries
# by subset (docs/kubernetes.md "Migrating from VMs").
_METADATA = (("registry", "dns"),)

Lookup = Callable[[str], Awaitable[SrvAnswer | Missing]]
Sleep = Callable[[float], Awaitable[None]]


def _hold_removals(previous: Catalog, candidate: Catalog) -> Catalog:
    # DNS has no health: only missing services and endpoints are put back during the grace.
    return hold_removals(previous, candidate, keep_routable_health=False)


class DnsSource:
    """A `Source` publishing the services found by SRV lookups, on the registry engine. Construction does
    no I/O. `lookup` and `sleep` replace the DNS queries and the wait between resolutions in unit tests."""

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
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}  # per service, once answered
        config = self._config
        # Logs dns_watch_failed, dns_unavailable, dns_recovered, dns_resync_grace, dns_removals_held and
        # dns_published.
        self._engine = RegistryEngine(EngineConfig.tuned_by(
            config, source=self.name, kind="dns", label="DNS", server=f"DNS server {config.servers_text}",
            event_prefix="dns",
            hold_removals=_hold_removals, log=_log), clock=self._clock, random=self._random)

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def config(self) -> DnsConfig:
        return self._config

    def status(self) -> SourceStatus:
        """The common SourceStatus (sources/registry/status.py); details: how many names have endpoints."""
        return self._engine.status(details={
            "names": len(self._config.services),
            "names_with_endpoints": sum(1 for endpoints in self._endpoints.values() if endpoints)})

    async def run(self, sink: SourceSink) -> None:
        self._reset_state()
        await self._engine.run(sink, self)

    # ------------------------------------------------------------------------- Registry (engine.py)

    async def watch(self, engine: RegistryEngine, tasks: asyncio.TaskGroup) -> None:
        """One resolve loop per SRV name."""
        lookup = self._lookup_override
        if lookup is None:
            resolver = make_resolver(self._config.servers, timeout_s=self._config.timeout_s)

            def lookup(name: str) -> Awaitable[SrvAnswer | Missing]:
                return lookup_srv(resolver, name)

        for service in self._config.services:
            tasks.create_task(self._resolve_loop(engine, service, lookup), name=f"dns-{service.name}")

    def candidate(self, *, in_grace: bool) -> Candidate | None:
        # Nothing before every name has been answered once: a partial first catalog would route nowhere
        # for the names still unanswered.
        if self._engine.published is None and len(self._endpoints) < len(self._config.services):
            return None
        return Candidate(Catalog(tuple(Service(ServiceName(name), endpoints)
                                       for name, endpoints in self._endpoints.items() if endpoints)))

    async def _resolve_loop(self, engine: RegistryEngine, service: DnsService, lookup: Lookup) -> None:
        backoff = engine.backoff()
        failing = False
        while True:
            try:
                result = await lookup(service.srv_name)
            except DnsUnavailableError as e:
                failing = True
                engine.failed(service.name, e)
                await engine.pause(backoff.next_delay_s())
                continue
            backoff.reset()
            if isinstance(result, Missing):
                endpoints: tuple[Endpoint, ...] = ()
                delay_s = self._config.ttl_floor_s
            else:
                endpoints = endpoints_of(result, source=self.name, locality=service.locality,
                                         metadata=_METADATA)
                delay_s = refresh_delay_s(result.ttl_s, floor_s=self._config.ttl_floor_s,
                                          ceiling_s=self._config.ttl_ceiling_s)
            if self._endpoints.get(service.name) != endpoints:
                _log.debug("dns_resolved", extra={"source": self.name, "service": service.name,
                                                  "srv": service.srv_name, "endpoints": len(endpoints)})
                self._endpoints[service.name] = endpoints
                engine.mark_dirty()
            # The first answer after a failure starts the resync grace: a server that restarted empty
            # answers NXDOMAIN until its registry is repopulated.
            engine.answered(service.name, resync="recovered" if failing else None)
            failing = False
            await self._sleep(delay_s)
