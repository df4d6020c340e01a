"""ServiceTracker: the services of one Consul datacenter, kept current with a bounded number of connections
(issue 13 section 4; docs/consul.md "Past 200 services").

Per datacenter the source blocks on two catalog-wide queries, `/v1/catalog/services` (registrations) and
`/v1/health/state/any` (check statuses), and this tracker turns their answers into targeted, non-blocking
reads of `/v1/health/service/<name>`, at most `fetch_concurrency` at a time (changes.py says which
services). A catalog index move without a visible cause starts a sweep: one `/v1/catalog/node-services/<node>`
per node, whose instance ModifyIndexes name the services to re-read.

Ordering, so that no change is lost between a read and the answers that would reveal it: the tracker reads
no service before it holds a first health-state answer and a first sweep (the baselines). Every read then
happens after the baseline it will be compared against, so a change after the read shows up as a
difference in a later answer of the same watch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import quote

from xds.model.service import Endpoint
from xds.sources.backoff import Backoff
from xds.sources.consul.changes import (
    HealthState,
    InstanceVersion,
    catalog_changes,
    health_changes,
    instance_nodes,
    merge_versions,
    nodes_to_sweep,
    parse_health_state,
    parse_node_services,
    parse_service_tags,
    version_changes,
)
from xds.sources.consul.client import ConsulClient, ConsulError, ConsulNotFound, ConsulResponse
from xds.sources.consul.parse import ConsulParseError, ParseOptions, parse_health

_log = logging.getLogger("xds.sources.consul.watcher")


class Engine(Protocol):
    """What the tracker needs from the registry engine (sources/registry/engine.py)."""

    def answered(self, key: str, *, resync: str | None = None) -> None: ...
    def failed(self, key: str, error: Exception) -> None: ...
    def forget(self, key: str) -> None: ...
    async def pause(self, delay_s: float) -> None: ...
    def begin_grace(self, key: str, reason: str) -> None: ...
    def mark_dirty(self) -> None: ...
    def backoff(self) -> Backoff: ...


class ServiceTracker:
    def __init__(self, *, client: ConsulClient, engine: Engine, datacenter: str, options: ParseOptions,
                 source: str) -> None:
        self._client = client
        self._engine = engine
        self._dc = datacenter
        self._params = {"dc": datacenter} if datacenter else {}
        self._options = options
        self._source = source
        self._limit = asyncio.Semaphore(client.config.fetch_concurrency)
        self.names: frozenset[str] | None = None
        self.health: dict[str, tuple[Endpoint, ...]] = {}
        self._tags: dict[str, tuple[str, ...]] | None = None
        self._catalog_index = 0
        self._skipped: dict[str, tuple[str, ...]] = {}
        self._nodes_of: dict[str, frozenset[str]] = {}
        self._state: HealthState | None = None
        self._versions: dict[str, frozenset[InstanceVersion]] | None = None
        self._pending: set[str] = set()
        self._fetch_wake = asyncio.Event()
        self._sweep_wake = asyncio.Event()
        self._baseline = asyncio.Event()
        self._state_seen = asyncio.Event()  # a sweep needs the nodes the health state names

    def synced(self) -> bool:
        return self.names is not None and all(name in self.health for name in self.names)

    def _key(self, kind: str, name: str = "") -> str:
        return f"{kind}:{self._dc}" + (f":{name}" if name else "")

    def _fetch(self, names: frozenset[str] | set[str]) -> None:
        if names:
            self._pending.update(names)
            self._fetch_wake.set()

    # ------------------------------------------------------------------------- watch handlers

    async def on_catalog(self, response: ConsulResponse, reset: bool, recovered: bool) -> None:
        """Handler of the `/v1/catalog/services` watch."""
        tags = parse_service_tags(response.body)
        resync = reset or recovered
        if resync:
            self._engine.begin_grace(self._key("catalog"), "index reset" if reset else "recovered")
        changes = catalog_changes(None if resync else self._tags, tags,
                                  index_moved=response.index != self._catalog_index)
        self._catalog_index = response.index
        self._tags = tags
        names = frozenset(tags)
        for name in changes.removed:
            self.health.pop(name, None)
            self._skipped.pop(name, None)
            self._nodes_of.pop(name, None)
            self._pending.discard(name)
            self._engine.forget(self._key("health", name))
        if names != self.names:
            _log.info("consul_services", extra={"source": self._source, "datacenter": self._dc or "(agent)",
                                                "services": len(names)})
            self.names = names
            self._engine.mark_dirty()
        self._fetch(names if resync else changes.added | changes.retagged)
        if changes.sweep or self._versions is None:
            self._sweep_wake.set()

    async def on_state(self, response: ConsulResponse, reset: bool, recovered: bool) -> None:
        """Handler of the `/v1/health/state/any` watch."""
        state = parse_health_state(response.body)
        previous = self._state
        self._state = state
        if reset or recovered:
            self._engine.begin_grace(self._key("state"), "index reset" if reset else "recovered")
            self._fetch(set(self.health))
        elif previous is not None:
            self._fetch(set(health_changes(previous, state, self._nodes_of)) & set(self.names or ()))
        self._state_seen.set()
        self._ready()

    def _ready(self) -> None:
        if self._state is not None and self._versions is not None and not self._baseline.is_set():
            self._baseline.set()

    # ------------------------------------------------------------------------------ the sweep

    async def sweep_loop(self) -> None:
        backoff = self._engine.backoff()
        key = self._key("sweep")
        await self._state_seen.wait()
        while True:
            await self._sweep_wake.wait()
            self._sweep_wake.clear()
            try:
                versions = await self._sweep()
            except (ConsulError, ConsulParseError) as e:
                self._engine.failed(key, e)
                await self._engine.pause(backoff.next_delay_s())
                self._sweep_wake.set()
                continue
            backoff.reset()
            self._engine.answered(key)
            changed = version_changes(self._versions, versions)
            self._versions = versions
            self._fetch(set(changed) & set(self.names or ()))
            self._ready()

    async def _sweep(self) -> dict[str, frozenset[InstanceVersion]]:
        nodes = sorted(nodes_to_sweep(self._state or HealthState(), self._nodes_of))

        async def one(node: str) -> dict[str, frozenset[InstanceVersion]]:
            async with self._limit:
                try:
                    response = await self._client.get(f"/v1/catalog/node-services/{quote(node, safe='')}",
                                                      params=self._params)
                except ConsulNotFound:
                    return {}
            return parse_node_services(response.body, node)

        return merge_versions(await asyncio.gather(*(one(node) for node in nodes)))

    # ------------------------------------------------------------------------ targeted reads

    async def fetch_loop(self) -> None:
        backoff = self._engine.backoff()
        await self._baseline.wait()
        while True:
            await self._fetch_wake.wait()
            self._fetch_wake.clear()
            batch = sorted(self._pending)
            self._pending.clear()
            results = await asyncio.gather(*(self._read(name) for name in batch))
            failed = [name for name, ok in zip(batch, results, strict=True) if not ok]
            if failed:
                await self._engine.pause(backoff.next_delay_s())
                self._fetch(set(failed) & set(self.names or ()))
            else:
                backoff.reset()

    async def _read(self, name: str) -> bool:
        key = self._key("health", name)
        try:
            async with self._limit:
                response = await self._client.get(f"/v1/health/service/{quote(name, safe='')}",
                                                  params=self._params)
            result = parse_health(response.body, options=self._options)
        except (ConsulError, ConsulParseError) as e:
            self._engine.failed(key, e)
            return False
        self._engine.answered(key)
        if name not in (self.names or ()):
            return True  # removed while the read was in flight
        self._nodes_of[name] = instance_nodes(response.body)
        if result.skipped != self._skipped.get(name, ()):
            self._skipped[name] = result.skipped
            for note in result.skipped:
                _log.warning("consul_instance_skipped", extra={"source": self._source, "service": name,
                                                               "reason": note})
        if self.health.get(name) != result.endpoints:
            self.health[name] = result.endpoints
            self._engine.mark_dirty()
        return True


def endpoints_of(trackers: Mapping[str, ServiceTracker], datacenters: tuple[str, ...]
                 ) -> list[tuple[str, tuple[Endpoint, ...]]]:
    """(service, endpoints) of every datacenter in order; a service listed but not read yet waits."""
    pairs: list[tuple[str, tuple[Endpoint, ...]]] = []
    for dc in datacenters:
        tracker = trackers.get(dc)
        if tracker is None:
            continue
        for name in sorted(tracker.names or ()):
            endpoints = tracker.health.get(name)
            if endpoints is not None:
                pairs.append((name, endpoints))
    return pairs
