"""ConsulSource: watches a Consul agent's catalog, health and (optionally) KV, and publishes the whole.

Theory of operation.

Watches. Every watch is one loop of Consul blocking queries (api-docs/features/blocking): read without an
index, then block on the `X-Consul-Index` the read returned, again and again. Per datacenter there are two:
the catalog watch (`/v1/catalog/services`, registrations) and the health-state watch
(`/v1/health/state/any`, every check's status); with a KV prefix there is one KV watch
(`/v1/kv/<prefix>?recurse`). The services themselves are read with targeted, non-blocking
`/v1/health/service/<name>` requests, only when those answers say they changed (tracker.py, changes.py), so
the connections to the agent stay bounded whatever the catalog's size (issue 13 section 4: one watch per
service hit Consul's 200-per-client limit). All of them are tasks of one TaskGroup, so cancelling `run()`
stops every watch and nothing outlives it.

Each loop follows docs/protocol.md R32: an index that comes back 0 or negative is replaced by 1; an index
lower than the last one resets the loop to a fresh read (index 0) whose answer is taken as a full resync; a
token bucket paces the loop (a blocking query may return at once, many times); errors back off
exponentially with full jitter, reset by the next success. After an error the next read is always a fresh
one (index 0): blocking on an old index against a Consul that restarted with a lower one would hang for a
whole `wait` before noticing.

Publishing, outages and the resync grace are the registry engine's (sources/registry/engine.py, issue 13):
this class implements its `Registry` interface (`watch`, `candidate`) and keeps what is Consul's own.

Publishing. Watches only store what they read and mark the source dirty; one publisher task turns the
stored state into a full Catalog (and the KV policy) and publishes it when it differs from the last
publish. A dirty mark waits `debounce_s` first, so a burst (100 services appearing) is a few publishes, not
100 (R37). Nothing is published before the initial sync: every datacenter's service list, the health of
every service on it, and the KV prefix have each been read once. A response is not proof of change: equal
content is never republished (R32, case F6d).

Outages (R36, F5, F8). A failing watch keeps the last data it read, so while Consul is down nothing changes
and nothing is published; the outage is reported to the sink once (per kind of error), the source's last
publish stays in effect, and `status()` shows the outage growing. An outage longer than `max_stale_s` is
reported a second time; the last known state keeps serving regardless (Envoy's own health checking and outlier
detection handle instances that died meanwhile). The first answer after a failure wakes every other failing
watch to retry at once, and while some are still failing the publisher waits up to `SETTLE_S` for them, so a
recovery is published once, whole. After an outage the source publishes once even if nothing changed, so the
sink learns it recovered.

Resync grace. A Consul that restarts empty (a dev agent, a lost data dir, a snapshot restore) answers
correctly but with nothing, or with services coming back one by one while agents re-register them (and
with checks that start critical until their first run). Publishing that truth would flush every Envoy. So
for `resync_grace_s` after any watch saw its index go backwards or recovered from an error (the KV watch
only by recovering: deleting keys makes its index go backwards routinely), the publisher holds back
anything that would take traffic away from what was last published: removed services and endpoints stay
as they were, and an endpoint that was routable keeps its last health instead of turning UNHEALTHY.
Everything else (new services and endpoints, other health changes, weights, metadata) is published at
once. When the grace ends, the truth is published. The trade: after a Consul restart or outage, removals
are delayed by at most the grace; in exchange an empty or half-populated Consul never reaches Envoy.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from xds.cache.quarantine import Rejection
from xds.model.service import Catalog, Health
from xds.sources.base import SourceSink
from xds.sources.consul.client import (
    ConsulClient,
    ConsulConfig,
    ConsulError,
    ConsulNotFound,
    ConsulResponse,
    ConsulUnavailable,
    advance_index,
)
from xds.sources.consul.kv import KvEntry, KvPolicies, parse_kv_entries
from xds.sources.consul.parse import ConsulParseError, ParseOptions, assemble_catalog
from xds.sources.consul.status import wanted_statuses
from xds.sources.consul.tracker import ServiceTracker, endpoints_of
from xds.sources.outage import hold_removals as _hold_removals
from xds.sources.registry import Candidate, EngineConfig, RegistryEngine, SourceStatus

_log = logging.getLogger(__name__)

_Handler = Callable[[ConsulResponse, bool, bool], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Staleness:
    """How current the source's view of Consul is (docs/protocol.md R33), for metrics and `xds status`."""

    outage_s: float  # how long some watch has been failing; 0 while every watch answers
    seconds_since_answer: float | None  # since the last answer of any watch (blocking ones come every `wait`)
    last_contact_s: float | None  # X-Consul-LastContact of the last answer: the server's lag behind leader
    known_leader: bool | None  # X-Consul-KnownLeader of the last answer
    failing_watches: int
    resync_grace_remaining_s: float


def hold_removals(previous: Catalog, candidate: Catalog) -> Catalog:
    """`candidate`, with whatever it would take away from `previous` put back: services and endpoints
    missing from it, and the last health of endpoints that were routable and are UNHEALTHY in it (agents
    re-register checks as critical after a restart)."""
    return _hold_removals(previous, candidate, keep_routable_health=True)


class ConsulSource:
    """A Source publishing the services of one Consul agent (and its other datacenters), with policies from
    KV when a prefix is configured. Construction does no I/O; `run()` watches until cancelled."""

    def __init__(self, config: ConsulConfig, *, clock: Callable[[], float] = time.monotonic,
                 random: Callable[[], float] = _random.random) -> None:
        self._config = config
        self._clock = clock
        self._random = random
        self._datacenters: tuple[str, ...] = config.datacenters or ("",)  # "": the agent's own
        # Closed NACK loop (issue 11 item 4): quarantined resources, and the status keys written for them.
        self._rejections: tuple[Rejection, ...] = ()
        self._status_written: dict[str, bytes] = {}
        self._status_wake = asyncio.Event()
        warning = Health.DEGRADED if config.warning_health == "degraded" else Health.HEALTHY
        self._options = {dc: ParseOptions(warning_health=warning, include_connect=config.include_connect,
                                          priority=0 if i == 0 else 1, datacenter=dc)
                         for i, dc in enumerate(self._datacenters)}
        self._reset_state()

    def _reset_state(self) -> None:
        self._tasks: asyncio.TaskGroup | None = None
        self._trackers: dict[str, ServiceTracker] = {}  # per datacenter, for the current client
        self._kv = KvPolicies(prefix=self._config.kv_prefix) if self._config.kv_prefix else None
        self._kv_entries: tuple[KvEntry, ...] | None = None
        self._kv_held = False
        # The shared registry engine (sources/registry): outages (consul_watch_failed, consul_unavailable,
        # consul_recovered), the resync grace (consul_removals_held) and publishing (consul_published).
        config = self._config
        self._engine = RegistryEngine(EngineConfig.tuned_by(
            config, source=self.name, kind="consul", label="Consul", server=f"Consul at {config.address}",
            event_prefix="consul", hold_removals=hold_removals, log=_log),
            clock=self._clock, random=self._random)
        self._last_contact_s: float | None = None
        self._known_leader: bool | None = None

    @property
    def name(self) -> str:
        return f"consul:{self._config.address}"

    @property
    def config(self) -> ConsulConfig:
        return self._config

    def status(self) -> SourceStatus:
        """The common SourceStatus (sources/registry/status.py), with Consul's leader and lag as details."""
        return self._engine.status(details={
            "known_leader": self._known_leader, "last_contact_s": self._last_contact_s,
            "watched_services": sum(len(names) for names in self.watched_services().values())})

    def staleness(self) -> Staleness:
        status = self._engine.status()
        return Staleness(
            outage_s=status.outage_s, seconds_since_answer=status.seconds_since_answer,
            last_contact_s=self._last_contact_s, known_leader=self._known_leader,
            failing_watches=status.failing_watches,
            resync_grace_remaining_s=status.resync_grace_remaining_s)

    def watched_services(self) -> dict[str, frozenset[str]]:
        """Services listed and read, per datacenter ("" for the agent's own)."""
        return {dc: frozenset(tracker.health) for dc, tracker in self._trackers.items() if tracker.health}

    # ------------------------------------------------------------------------------------------ run

    async def run(self, sink: SourceSink) -> None:
        self._reset_state()
        await self._engine.run(sink, self)

    async def watch(self, engine: RegistryEngine, tasks: asyncio.TaskGroup) -> None:
        """Registry (sources/registry/engine.py): one client at a time, and every watch on it; a client
        that cannot be set up (unreadable TLS files) fails watch "client" until it can."""
        await engine.with_each_client(lambda: ConsulClient(self._config), self._watch_all,
                                      setup_errors=ConsulError)

    async def _watch_all(self, client: ConsulClient) -> None:
        self._engine.forget("client")
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            for dc in self._datacenters:
                previous = self._trackers.get(dc)
                tracker = ServiceTracker(client=client, engine=self._engine, datacenter=dc,
                                         options=self._options[dc], source=self.name)
                if previous is not None:
                    # A new client (after a failed setup): keep what was read until it is read again.
                    tracker.names, tracker.health = previous.names, dict(previous.health)
                self._trackers[dc] = tracker
                tasks.create_task(self._watch(client, f"catalog:{dc}", "/v1/catalog/services", _dc(dc),
                                              tracker.on_catalog), name=f"consul-catalog:{dc}")
                tasks.create_task(self._watch(client, f"state:{dc}", "/v1/health/state/any", _dc(dc),
                                              tracker.on_state), name=f"consul-state:{dc}")
                tasks.create_task(tracker.sweep_loop(), name=f"consul-sweep:{dc}")
                tasks.create_task(tracker.fetch_loop(), name=f"consul-fetch:{dc}")
            if self._kv is not None and self._config.kv_prefix is not None:
                params = {"recurse": ""}
                tasks.create_task(self._watch(client, "kv", f"/v1/kv/{self._config.kv_prefix}", params,
                                              self._kv_handler, missing_is_empty=True), name="consul-kv")
            if self._kv is not None:
                tasks.create_task(self._status_loop(client), name="consul-kv-status")

    def report_rejections(self, rejections: Sequence[Rejection]) -> None:
        """RejectionSink (sources/rejections.py): write a status key beside each KV policy that produced a
        quarantined resource (consul/status.py)."""
        self._rejections = tuple(rejections)
        self._status_wake.set()

    async def _status_loop(self, client: ConsulClient) -> None:
        backoff = self._engine.backoff()
        while True:
            await self._status_wake.wait()
            self._status_wake.clear()
            assert self._kv is not None
            wanted = wanted_statuses(self._kv.valid_policies(), self._rejections)
            try:
                for key, body in wanted.items():
                    if self._status_written.get(key) != body:
                        await client.write("PUT", f"/v1/kv/{quote(key)}", body)
                        self._status_written[key] = body
                        _log.info("consul_policy_status", extra={"source": self.name, "key": key,
                                                                 "programmed": False})
                for key in [k for k in self._status_written if k not in wanted]:
                    await client.write("DELETE", f"/v1/kv/{quote(key)}")
                    del self._status_written[key]
                    _log.info("consul_policy_status", extra={"source": self.name, "key": key,
                                                             "programmed": True})
            except ConsulError as e:
                delay = backoff.next_delay_s()
                _log.warning("consul_policy_status_failed", extra={"source": self.name, "error": str(e),
                                                                   "retry_in_s": round(delay, 3)})
                if backoff.failures == 1:
                    self._report(f"cannot write the status keys of KV policies: {e}")
                asyncio.get_running_loop().call_later(delay, self._status_wake.set)
            else:
                backoff.reset()

    # ------------------------------------------------------------------------------- one watch loop

    async def _watch(self, client: ConsulClient, key: str, path: str, params: Mapping[str, str],
                     handle: _Handler, *, missing_is_empty: bool = False) -> None:
        engine = self._engine
        bucket = engine.bucket(rate_per_s=self._config.rate_per_s, burst=self._config.burst)
        backoff = engine.backoff()
        last = 0  # the last valid index seen; what a new answer is compared with
        query = 0  # the index the next request blocks on; 0 = a fresh read
        while True:
            pause_s = bucket.reserve_s()
            if pause_s > 0:
                await asyncio.sleep(pause_s)
            try:
                try:
                    response = await client.blocking_get(path, index=query, params=params)
                except ConsulNotFound as e:
                    if not missing_is_empty:
                        raise
                    response = ConsulResponse(e.index, None, {})
                recovered = backoff.failures > 0
                query, reset = advance_index(last, response.index)
                last = query
                if reset:
                    _log.warning("consul_index_reset", extra={"source": self.name, "watch": key,
                                                               "index": response.index})
                self._record_answer(key, response)
                engine.answered(key)
                await handle(response, reset, recovered)
                backoff.reset()
            except (ConsulError, ConsulParseError) as e:
                engine.failed(key, e)
                query = 0  # see the module doc: never block on an old index after an error
                delay = backoff.next_delay_s()
                if isinstance(e, ConsulUnavailable) and e.retry_after_s is not None:
                    delay = max(delay, e.retry_after_s)
                await engine.pause(delay)

    # ---------------------------------------------------------------------------------- handlers

    async def _kv_handler(self, response: ConsulResponse, reset: bool, recovered: bool) -> None:
        assert self._kv is not None
        entries = parse_kv_entries(response.body)
        if recovered:
            self._begin_grace("kv", "recovered")
        first = self._kv_entries is None
        self._kv_entries = entries
        keep = self._engine.in_grace()
        outcome = self._kv.update(entries, keep_removed=keep)
        self._kv_held = keep
        for problem in outcome.problems:
            self._report(problem)
        if outcome.changed or first:
            self._mark_dirty()

    # --------------------------------------------------------------------------- health of the source

    def _record_answer(self, key: str, response: ConsulResponse) -> None:
        self._last_contact_s = response.last_contact_s
        leader = response.known_leader
        if leader is False and self._known_leader is not False:
            _log.warning("consul_no_leader", extra={"source": self.name, "watch": key})
        self._known_leader = leader

    def _report(self, message: str) -> None:
        self._engine.report(message)

    def _begin_grace(self, key: str, reason: str) -> None:
        self._engine.begin_grace(key, reason)  # logs consul_resync_grace

    # ---------------------------------------------------------------------------------- publishing

    def _mark_dirty(self) -> None:
        self._engine.mark_dirty()

    def _synced(self) -> bool:
        for dc in self._datacenters:
            tracker = self._trackers.get(dc)
            if tracker is None or not tracker.synced():
                return False
        return self._kv is None or self._kv_entries is not None

    def candidate(self, *, in_grace: bool) -> Candidate | None:
        """Registry: the whole Catalog (and KV policy); None until everything was read once."""
        if self._engine.published is None and not self._synced():
            return None
        if self._kv is not None and self._kv_held and not in_grace and self._kv_entries is not None:
            self._kv_held = False
            for problem in self._kv.update(self._kv_entries).problems:
                self._report(problem)
        pairs = endpoints_of(self._trackers, self._datacenters)
        if self._kv is None:
            return Candidate(assemble_catalog(pairs))
        return Candidate(assemble_catalog(pairs), self._kv.policy, policy_held=self._kv_held,
                         standing_problems=tuple(self._kv.problems()))


def _dc(datacenter: str) -> dict[str, str]:
    return {"dc": datacenter} if datacenter else {}
