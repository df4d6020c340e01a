"""The registry-source engine (xds/sources/registry; issue 13 section 1) with a scripted registry, a fake
clock for outages and graces, and a recording sink: no network. The publish loop runs on the real event
loop with debounce 0, and each test polls for the condition it waits for."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager

import pytest

from tests.source_helpers import RecordingSink, running_task, until
from xds.model.service import Catalog, Endpoint, Health, Service, ServiceName
from xds.policy.schema import Policy
from xds.secrets import REDACTED, register_secret
from xds.sources.base import SourceUpdate
from xds.sources.outage import hold_removals
from xds.sources.registry import Candidate, EngineConfig, PolicyDocuments, RegistryEngine


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A registry whose state the test sets: `hosts` (None before the initial sync)."""

    def __init__(self) -> None:
        self.hosts: list[tuple[str, int]] | None = None
        self.problems: tuple[str, ...] = ()
        self.calls = 0

    async def watch(self, engine: RegistryEngine, tasks: asyncio.TaskGroup) -> None:
        return None  # the test drives answered/failed/mark_dirty itself

    def candidate(self, *, in_grace: bool) -> Candidate | None:
        self.calls += 1
        if self.hosts is None:
            return None
        endpoints = tuple(Endpoint(host, port, health=Health.HEALTHY) for host, port in self.hosts)
        return Candidate(Catalog((Service(ServiceName("web"), endpoints),)), standing_problems=self.problems)


def engine_for(clock: Clock, *, grace_s: float = 0.0, max_stale_s: float = 60.0) -> RegistryEngine:
    return RegistryEngine(EngineConfig(
        source="test:registry", kind="test", label="the test registry", server="the test server",
        event_prefix="test", hold_removals=lambda a, b: hold_removals(a, b, keep_routable_health=False),
        debounce_s=0.0, max_stale_s=max_stale_s, resync_grace_s=grace_s), clock=clock, random=lambda: 0.0)


def running(engine: RegistryEngine, registry: Scripted,
            sink: RecordingSink) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    return running_task(engine.run(sink, registry))


def hosts(update: SourceUpdate) -> set[tuple[str, int]]:
    service = update.catalog.get(ServiceName("web"))
    return set() if service is None else {e.address for e in service.endpoints}


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_nothing_is_published_before_the_initial_sync_then_only_changes(clock: Clock) -> None:
    engine, registry, sink = engine_for(clock), Scripted(), RecordingSink()
    async with running(engine, registry, sink):
        engine.mark_dirty()
        await until(lambda: registry.calls >= 1, what="the publisher to look")
        assert sink.updates == [] and engine.status().synced is False
        registry.hosts = [("10.0.0.1", 80)]
        engine.mark_dirty()
        await until(lambda: len(sink.updates) == 1, what="the initial publish")
        assert engine.status().synced is True
        calls = registry.calls
        engine.mark_dirty()  # nothing changed: not republished (docs/protocol.md R32, F6d)
        await until(lambda: registry.calls > calls, what="another look")
        assert len(sink.updates) == 1
        registry.hosts = [("10.0.0.1", 80), ("10.0.0.2", 80)]
        engine.mark_dirty()
        await until(lambda: len(sink.updates) == 2, what="the change")
        assert hosts(sink.updates[-1]) == {("10.0.0.1", 80), ("10.0.0.2", 80)}


async def test_an_outage_is_reported_once_timed_by_the_clock_and_its_end_republished(clock: Clock) -> None:
    engine, registry, sink = engine_for(clock, max_stale_s=60.0), Scripted(), RecordingSink()
    registry.hosts = [("10.0.0.1", 80)]
    async with running(engine, registry, sink):
        engine.answered("a")
        engine.answered("b")
        engine.mark_dirty()
        await until(lambda: len(sink.updates) == 1, what="the initial publish")
        engine.failed("a", ConnectionRefusedError("refused"))
        engine.failed("b", ConnectionRefusedError("refused"))
        assert len(sink.errors) == 1  # one outage, one kind of error
        clock.now += 30
        status = engine.status()
        assert (status.failing_watches, status.outage_s, status.seconds_since_answer) == (2, 30.0, 30.0)
        assert "refused" in status.last_error
        clock.now += 31
        engine.failed("a", ConnectionRefusedError("refused"))
        assert len(sink.errors) == 2 and "has not answered for 61 s" in sink.errors[-1]
        engine.answered("a")
        engine.answered("b")
        # Nothing changed, but a reported outage ended: published once so the sink learns it recovered.
        await until(lambda: len(sink.updates) == 2, what="the recovery publish")
        assert engine.status().failing_watches == 0 and engine.status().outage_s == 0.0
        assert engine.status().last_error == ""


async def test_the_resync_grace_holds_removals_until_it_ends(clock: Clock) -> None:
    engine, registry, sink = engine_for(clock, grace_s=10.0), Scripted(), RecordingSink()
    registry.hosts = [("10.0.0.1", 80), ("10.0.0.2", 80)]
    async with running(engine, registry, sink):
        engine.mark_dirty()
        await until(lambda: len(sink.updates) == 1, what="the initial publish")
        engine.answered("a", resync="recovered")
        assert engine.in_grace() and engine.status().resync_grace_remaining_s == 10.0
        registry.hosts = [("10.0.0.1", 80), ("10.0.0.3", 80)]
        engine.mark_dirty()
        await until(lambda: len(sink.updates) == 2, what="the addition")
        # The addition goes out at once; the removal of .2 is held.
        assert hosts(sink.updates[-1]) == {("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80)}
        clock.now += 10.5
        engine.mark_dirty()
        await until(lambda: len(sink.updates) == 3, what="the truth after the grace")
        assert hosts(sink.updates[-1]) == {("10.0.0.1", 80), ("10.0.0.3", 80)}
        assert engine.status().resync_grace_remaining_s == 0.0


async def test_standing_problems_are_said_again_after_a_publish_and_secrets_never_show(clock: Clock) -> None:
    register_secret("hunter2-registry-token")
    engine, registry, sink = engine_for(clock), Scripted(), RecordingSink()
    registry.hosts = [("10.0.0.1", 80)]
    registry.problems = ("kv:web: bad document",)
    async with running(engine, registry, sink):
        engine.mark_dirty()
        await until(lambda: len(sink.updates) == 1, what="the initial publish")
        assert sink.errors == ["kv:web: bad document"]
        engine.failed("a", PermissionError("403 for token hunter2-registry-token"))
        assert "hunter2" not in engine.status().last_error and REDACTED in engine.status().last_error


def test_policy_documents_keep_the_last_valid_version_and_report_problems_once() -> None:
    documents: PolicyDocuments[str] = PolicyDocuments(origin="test:docs")
    documents.accept("a", Policy(origin="a"))
    assert documents.merge() is None
    documents.reject("a", "a: broken")
    assert documents.has_valid("a") and documents.errors() == ("a: broken",)
    assert documents.fresh(documents.errors()) == ("a: broken",)
    assert documents.fresh(documents.errors()) == ()  # reported once
    documents.remove("a")
    assert documents.errors() == () and documents.valid() == {}
