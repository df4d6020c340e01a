"""EurekaSource: polls a Eureka cluster the way Eureka's own client does, and publishes the whole registry.

Theory of operation (docs/eureka.md is the operator's view).

Poll loop. One loop, on the registry engine (sources/registry/engine.py): a full fetch (`GET /apps`), then
every `refresh_s` a delta fetch (`GET /apps/delta`, the changes of the last few minutes) applied to the
local copy (parse.apply_delta). After each delta the local copy's hashcode (`DOWN_1_UP_3_`) is compared with
the delta's `apps__hashcode`, the server's hashcode of its whole registry; a mismatch means the copy has
drifted (a delta was missed, or it came from another server), and a full fetch replaces it at once. A full
fetch is also done after any error, and whenever the answering server changed (the client failed over):
a delta is only meaningful against the copy of the server that sent it.

Publishing. The engine publishes the Catalog of the local copy when it differs from the last publish
(a delta is usually empty: nothing is published then), after `debounce_s`.

Outages (docs/protocol.md R36). When no server answers, the last copy keeps serving, the outage is
reported once (and again past `max_stale_s`), and the loop retries with full-jitter backoff.

Resync grace. A Eureka server that restarts comes back empty: its registry fills again only as the
applications' next heartbeats (every 30 s by default) get a 404 and re-register. Publishing that truth
would flush every Envoy. So for `resync_grace_s` after (a) the first answer following a failure, (b) a
failover to another server, (c) a full fetch that holds fewer instances than the copy it replaces, or
(d) `versions__delta` going backwards, the engine holds back whatever would take traffic away from the last
publish (services, endpoints, and an endpoint's last routable health). Additions and other changes are
published at once; when the grace ends, the truth is. (c) also catches a restart quicker than one poll:
the restarted server's hashcode disagrees with the copy, the full fetch that follows has fewer instances.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import time
from collections.abc import Callable

from xds.model.service import Catalog
from xds.sources.base import SourceSink
from xds.sources.eureka.client import EurekaClient, EurekaConfig, EurekaError
from xds.sources.eureka.parse import (
    EurekaParseError,
    ParseOptions,
    Registry,
    apply_delta,
    delta_matches,
    parse_applications,
    parse_delta,
    registry_catalog,
)
from xds.sources.outage import hold_removals as _hold_removals
from xds.sources.registry import Candidate, EngineConfig, RegistryEngine, SourceStatus

_log = logging.getLogger(__name__)

WATCH = "registry"  # the one watch of the engine: the poll loop
_SERVER_CHANGED = "server changed"


def hold_removals(previous: Catalog, candidate: Catalog) -> Catalog:
    """Removals put back, and the last routable health kept (re-registered instances may come back DOWN or
    STARTING before their first UP)."""
    return _hold_removals(previous, candidate, keep_routable_health=True)


class EurekaSource:
    """A Source publishing the applications of one Eureka cluster. Construction does no I/O; `run()`
    polls until cancelled."""

    def __init__(self, config: EurekaConfig, *, clock: Callable[[], float] = time.monotonic,
                 random: Callable[[], float] = _random.random) -> None:
        self._config = config
        self._clock = clock
        self._random = random
        self._options = ParseOptions(prefer_secure=config.prefer_secure_port, source="eureka")
        self._reset_state()

    def _reset_state(self) -> None:
        config = self._config
        # Logs eureka_watch_failed, eureka_unavailable, eureka_recovered, eureka_resync_grace,
        # eureka_removals_held and eureka_published.
        self._engine = RegistryEngine(EngineConfig.tuned_by(
            config, source=self.name, kind="eureka", label="Eureka",
            server=f"Eureka at {', '.join(config.urls)}", event_prefix="eureka", hold_removals=hold_removals,
            log=_log),
            clock=self._clock, random=self._random)
        self._registry: Registry | None = None
        self._catalog: Catalog | None = None
        self._skipped: tuple[str, ...] = ()
        self._answered_by = ""
        self._full_fetches = 0
        self._delta_fetches = 0
        self._hashcode_mismatches = 0

    @property
    def name(self) -> str:
        return f"eureka:{self._config.urls[0]}"

    @property
    def config(self) -> EurekaConfig:
        return self._config

    def status(self) -> SourceStatus:
        """The common SourceStatus, with which server answered last and the fetch counters as details."""
        return self._engine.status(details={
            "server": self._answered_by or None,
            "instances": None if self._registry is None else len(self._registry),
            "full_fetches": self._full_fetches, "delta_fetches": self._delta_fetches,
            "hashcode_mismatches": self._hashcode_mismatches})

    async def run(self, sink: SourceSink) -> None:
        self._reset_state()
        await self._engine.run(sink, self)

    # ------------------------------------------------------------------------------ Registry protocol

    async def watch(self, engine: RegistryEngine, tasks: asyncio.TaskGroup) -> None:
        """One client at a time, polling until cancelled; a client that cannot be set up (an unreadable
        CA file) fails the poll's watch until it can."""
        await engine.with_each_client(lambda: EurekaClient(self._config), self._poll,
                                      setup_errors=EurekaError, key=WATCH)

    def candidate(self, *, in_grace: bool) -> Candidate | None:
        """The Catalog of the local copy; None before the first full fetch."""
        return None if self._catalog is None else Candidate(self._catalog)

    # ------------------------------------------------------------------------------------ the loop

    async def _poll(self, client: EurekaClient) -> None:
        engine = self._engine
        backoff = engine.backoff()
        full = True  # the next fetch is a full one
        resync: str | None = None  # why the next answer starts the resync grace
        while True:
            try:
                if full:
                    resync = await self._full_fetch(client, resync=resync)
                    full = False
                else:
                    why = await self._delta_fetch(client)
                    if why is not None:  # the copy cannot be trusted: replace it now
                        full = True
                        resync = f"failover to {self._answered_by}" if why == _SERVER_CHANGED else None
                        continue
                engine.answered(WATCH, resync=resync)
                resync = None
                backoff.reset()
                await asyncio.sleep(self._config.refresh_s)
            except (EurekaError, EurekaParseError) as e:
                # The last copy keeps serving (R36). Start again from a full fetch: the deltas missed
                # meanwhile may be gone from the server's queue, or the next answer may come from a peer.
                engine.failed(WATCH, e)
                full = True
                resync = "recovered"
                await engine.pause(backoff.next_delay_s())

    async def _full_fetch(self, client: EurekaClient, *, resync: str | None) -> str | None:
        """Replace the local copy; returns why the resync grace must start (`resync` if given), or None."""
        response = await client.get("/apps")
        registry = parse_applications(response.body)
        self._full_fetches += 1
        previous, switched = self._registry, self._switched(response.url)
        reason = resync
        if reason is None and switched:
            reason = f"failover to {response.url}"
        elif reason is None and previous is not None and len(registry) < len(previous):
            reason = f"full fetch has {len(registry)} instances, the copy had {len(previous)}"
        elif (reason is None and previous is not None and previous.version is not None
              and registry.version is not None and registry.version < previous.version):
            reason = f"versions__delta went back from {previous.version} to {registry.version}"
        self._store(registry)
        return reason

    async def _delta_fetch(self, client: EurekaClient) -> str | None:
        """Apply the next delta; returns why a full fetch is needed instead, or None."""
        assert self._registry is not None
        response = await client.get("/apps/delta")
        self._delta_fetches += 1
        if self._switched(response.url):
            _log.info("eureka_server_changed", extra={"source": self.name, "server": response.url})
            return _SERVER_CHANGED
        updated = apply_delta(self._registry, parse_delta(response.body))
        if not delta_matches(updated):
            self._hashcode_mismatches += 1
            _log.info("eureka_hashcode_mismatch", extra={"source": self.name, "server": response.url,
                                                         "server_hashcode": updated.hashcode})
            return "hashcode mismatch"
        self._store(updated)
        return None

    def _switched(self, url: str) -> bool:
        switched = bool(self._answered_by) and url != self._answered_by
        self._answered_by = url
        return switched

    def _store(self, registry: Registry) -> None:
        self._registry = registry
        result = registry_catalog(registry, options=self._options)
        if result.skipped != self._skipped:
            self._skipped = result.skipped
            for note in result.skipped:
                _log.warning("eureka_instance_skipped", extra={"source": self.name, "reason": note})
        if result.catalog != self._catalog:
            self._catalog = result.catalog
            self._engine.mark_dirty()
