"""RegistryEngine: the part every watching registry source shares (issue 13 section 1).

A registry (Consul, Kubernetes, Eureka, DNS SRV ...) only knows how to read its registry; the engine owns
everything between what it read and what the sink gets:

- outage bookkeeping and reports (OutageTracker in sources/outage.py: once per outage and kind of error,
  again past `max_stale_s`; docs/protocol.md R36, F5, F8), and the wake-up of failing watches when one
  recovers;
- the resync grace (ResyncGrace): after a resync, removals are held back for `resync_grace_s`;
- the publisher: a dirty flag, a `debounce_s` wait so a burst is a few publishes (R37), a recheck timer
  for a settle window or a grace that ends, and Publication, which sends only a full state that differs
  from the last one (R32, F6d), or an unchanged one once after a reported outage so the sink learns the
  source recovered;
- pacing helpers: `backoff()` (full-jitter exponential, sources/backoff.py) and `bucket()` (a token
  bucket bounding calls whatever the registry answers);
- `with_each_client()`: one client at a time, a client whose local set-up fails retried after a backoff;
- `status()`: the SourceStatus every source reports to metrics and `xds status`.

The interface a registry implements (`Registry` below) is two methods:

1. `watch(engine, tasks)`: start the watch or poll loops, as tasks of `tasks` (cancelled together with the
   source) or by looping itself until cancelled. Each loop calls
   - `engine.answered(key, resync=None)` when the registry answered watch `key`; `resync="recovered"` (or
     another reason) when that answer must start the resync grace (an index reset, a first answer after
     a failure, a restarted registry that may come back empty);
   - `engine.failed(key, error)` when it did not, then `await engine.pause(delay_s)` (a pause cut short
     when another watch recovers) before retrying;
   - `engine.mark_dirty()` after storing something that may change the candidate.
2. `candidate(in_grace=...)`: the full Catalog (and Policy, and whether it holds back a policy removal
   itself) to publish, or None while the initial sync is not complete (nothing is published before it;
   once the engine has published, `engine.published` is set and a registry returns its best full state).

An Eureka source is then one `tasks.create_task(poll())` whose loop calls answered/failed/mark_dirty; a
DNS SRV source is one such task per SRV name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random as _random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from xds.model.service import Catalog
from xds.policy.schema import Policy
from xds.secrets import redact
from xds.sources.backoff import Backoff, TokenBucket
from xds.sources.base import SourceSink
from xds.sources.outage import OutageTracker, Publication, ResyncGrace
from xds.sources.registry.status import Detail, SourceStatus
from xds.sources.tunables import EngineTunables

_Client = TypeVar("_Client")


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a registry would publish now: its full state."""

    catalog: Catalog
    policy: Policy | None = None
    # The registry itself kept a removed policy during the grace: look again when the grace ends.
    policy_held: bool = False
    # Problems that still stand (invalid documents, a missing CRD): said again after every publish,
    # because the sink takes a publish as "recovered".
    standing_problems: tuple[str, ...] = ()


class Registry(Protocol):
    """What a registry implements to run on the engine (see the module docstring)."""

    async def watch(self, engine: RegistryEngine, tasks: asyncio.TaskGroup) -> None:
        """Start the watch/poll loops in `tasks` (or loop here) until cancelled; never raise for outages."""

    def candidate(self, *, in_grace: bool) -> Candidate | None:
        """The full state to publish, or None before the initial sync."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Who the source is, and the tunables every registry source has (each registry's config holds them)."""

    source: str  # the Source name
    kind: str  # its row in xds/source_kinds.py
    label: str  # names the registry in reports: "serving the last state read from <label>"
    server: str  # what stopped answering, in the staleness report
    event_prefix: str  # log events are <prefix>_published, <prefix>_unavailable, ...
    hold_removals: Callable[[Catalog, Catalog], Catalog]  # what the grace puts back (outage.hold_removals)
    debounce_s: float = 0.1
    max_stale_s: float = 300.0
    resync_grace_s: float = 30.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("xds.sources.registry"))

    @classmethod
    def tuned_by(cls, tunables: EngineTunables, *, source: str, kind: str, label: str, server: str,
                 event_prefix: str, hold_removals: Callable[[Catalog, Catalog], Catalog],
                 log: logging.Logger) -> EngineConfig:
        """Who the source is, with the tunables read from its own config (ConsulConfig, EurekaConfig ...)."""
        return cls(source=source, kind=kind, label=label, server=server, event_prefix=event_prefix,
                   hold_removals=hold_removals, debounce_s=tunables.debounce_s,
                   max_stale_s=tunables.max_stale_s, resync_grace_s=tunables.resync_grace_s,
                   backoff_initial_s=tunables.backoff_initial_s, backoff_max_s=tunables.backoff_max_s,
                   log=log)


class RegistryEngine:
    """Runs one registry: its watches, the publisher, and the bookkeeping status() reads.

    Construction does no I/O; create one per `run()` of the source (it holds that run's state)."""

    def __init__(self, config: EngineConfig, *, clock: Callable[[], float] = time.monotonic,
                 random: Callable[[], float] = _random.random) -> None:
        self.config = config
        self._clock = clock
        self._random = random
        self._log = config.log
        self._sink: SourceSink | None = None
        self._last_error = ""
        self._outage = OutageTracker(
            source=config.source, label=config.label, server=config.server, event_prefix=config.event_prefix,
            log=config.log, clock=clock, max_stale_s=config.max_stale_s, report=self._tell_sink,
            on_recovery=self.mark_dirty)
        self._grace = ResyncGrace(grace_s=config.resync_grace_s, clock=clock,
                                  hold_removals=config.hold_removals, source=config.source,
                                  event_prefix=config.event_prefix, log=config.log)
        self._publication = Publication(source=config.source, event=f"{config.event_prefix}_published",
                                        log=config.log)
        self._last_answer: float | None = None
        # What the registry reported since the last publish (not outages: OutageTracker announces its own
        # recovery). One that no longer stands among the candidate's standing problems, say an invalid KV
        # key that was deleted, forces a publish, because only a publish clears the sink's error (issue 14
        # item 6: xds_source_stale stayed 1 until an unrelated catalog change).
        self._reported: set[str] = set()
        self._dirty = asyncio.Event()
        self._recheck: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------------------------- for the registry

    @property
    def published(self) -> Catalog | None:
        """The catalog last published, None before the first publish."""
        return self._publication.catalog

    def answered(self, key: str, *, resync: str | None = None) -> None:
        """Watch `key` got an answer; with `resync` (a reason), the answer starts the resync grace."""
        self._last_answer = self._clock()
        if resync is not None:
            self.begin_grace(key, resync)
        self._outage.clear(key)

    def failed(self, key: str, error: Exception) -> None:
        """Watch `key` failed with `error`; its last data stays in effect."""
        self._outage.failure(key, error)

    def forget(self, key: str) -> None:
        """Watch `key` is gone (its service was removed): it no longer counts as failing."""
        self._outage.clear(key)

    async def pause(self, delay_s: float) -> None:
        """Wait `delay_s` after a failure, less if another watch recovers meanwhile (it retries at once)."""
        await self._outage.sleep_unless_woken(delay_s)

    def begin_grace(self, key: str, reason: str) -> None:
        """Start (or restart) the resync grace, if something was published that it can hold on to."""
        if self._publication.catalog is not None and self._grace.begin():
            self._log.info(f"{self.config.event_prefix}_resync_grace", extra={
                "source": self.config.source, "watch": key, "reason": reason,
                "grace_s": self.config.resync_grace_s})

    def in_grace(self) -> bool:
        return self._grace.active(self._publication.catalog)

    def mark_dirty(self) -> None:
        self._dirty.set()

    def report(self, message: str) -> None:
        """Tell the sink about a problem (the source keeps serving its last publish)."""
        self._reported.add(message)
        self._tell_sink(message)

    def _tell_sink(self, message: str) -> None:
        self._last_error = redact(message)
        if self._sink is not None:
            self._sink.report_error(self.config.source, message)

    def backoff(self) -> Backoff:
        return Backoff(initial_s=self.config.backoff_initial_s, max_s=self.config.backoff_max_s,
                       random=self._random)

    def bucket(self, *, rate_per_s: float, burst: int) -> TokenBucket:
        return TokenBucket(rate_per_s=rate_per_s, burst=burst, clock=self._clock)

    async def with_each_client(self, open_client: Callable[[], AbstractAsyncContextManager[_Client]],
                               use: Callable[[_Client], Awaitable[None]], *,
                               setup_errors: type[Exception] | tuple[type[Exception], ...],
                               key: str = "client") -> None:
        """One client at a time, until cancelled: open one, `use` it, close it, open the next.

        Opening a client does only local set-up (TLS files, a CA bundle, a kubeconfig); when that fails
        with `setup_errors`, watch `key` is reported failed and the set-up is retried after a backoff: the
        files may appear or be fixed, and the last publish keeps serving meanwhile (docs/protocol.md R36).
        `use` reports its own watches; clearing `key` once the client works is its call (a Eureka poll
        clears it with its first answer, a Consul or Kubernetes watch as soon as the client is up).
        """
        backoff = self.backoff()
        while True:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    client = await stack.enter_async_context(open_client())
                except setup_errors as e:
                    self.failed(key, e)
                    await self.pause(backoff.next_delay_s())
                    continue
                backoff.reset()
                await use(client)

    # --------------------------------------------------------------------------------- for the source

    def status(self, details: Mapping[str, Detail] | None = None) -> SourceStatus:
        now = self._clock()
        return SourceStatus(
            source=self.config.source, kind=self.config.kind, synced=self._publication.catalog is not None,
            outage_s=self._outage.outage_s(now),
            seconds_since_answer=None if self._last_answer is None else now - self._last_answer,
            failing_watches=self._outage.failing_watches,
            resync_grace_remaining_s=self._grace.remaining_s(now), last_error=self._last_error,
            details=dict(details or {}))

    async def run(self, sink: SourceSink, registry: Registry) -> None:
        """Watch with `registry` and publish until cancelled."""
        self._sink = sink
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._publish_loop(registry), name=f"{self.config.event_prefix}-publish")
                await registry.watch(self, tasks)
        finally:
            if self._recheck is not None:
                self._recheck.cancel()
                self._recheck = None

    async def _publish_loop(self, registry: Registry) -> None:
        while True:
            await self._dirty.wait()
            if self.config.debounce_s > 0:
                await asyncio.sleep(self.config.debounce_s)
            self._dirty.clear()
            recheck_s = self.publish_if_changed(registry)
            if recheck_s is not None:
                if self._recheck is not None:
                    self._recheck.cancel()
                self._recheck = asyncio.get_running_loop().call_later(recheck_s, self.mark_dirty)

    def publish_if_changed(self, registry: Registry) -> float | None:
        """Publish when the registry's candidate differs from the last publish; the seconds after which to
        look again (a settle window, or a grace that ends), or None."""
        now = self._clock()
        in_grace = self.in_grace()
        candidate = registry.candidate(in_grace=in_grace)
        if candidate is None:
            return None
        if (settle_s := self._outage.settle_remaining_s(now)) is not None:
            return settle_s
        assert self._sink is not None
        resolved = not self._reported.issubset(candidate.standing_problems)
        published, recheck_s = self._publication.offer(
            self._sink, candidate.catalog, candidate.policy, grace=self._grace, in_grace=in_grace,
            policy_held=candidate.policy_held, now=now, force=self._outage.announce or resolved)
        if not published:
            return recheck_s
        self._last_error = ""
        self._reported.clear()
        # The sink takes a publish as "recovered"; what still fails and problems that stand are said again.
        self._outage.published()
        for problem in candidate.standing_problems:
            self.report(problem)
        return recheck_s
