"""The DNS SRV source over fake answers: TTL scheduling, NXDOMAIN vs timeout, stale reports, resync grace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.source_helpers import RecordingSink, until
from xds.model.service import Catalog
from xds.sources.dns.config import DnsConfig, DnsService
from xds.sources.dns.lookup import DnsUnavailableError, Missing
from xds.sources.dns.records import SrvAnswer, SrvRecord
from xds.sources.dns.source import DnsSource

WEB = "web.service.consul"
API = "_http._tcp.api.example"


def srv(*ports: int, ttl_s: int = 30, priority: int = 1) -> SrvAnswer:
    """One record per port, each on its own target 10.0.0.<i>, weight = port % 100."""
    records = tuple(SrvRecord(priority, port % 100, port, f"t{i}.example.") for i, port in enumerate(ports))
    addresses = {f"t{i}.example": (f"10.0.0.{i + 1}",) for i in range(len(ports))}
    return SrvAnswer(records=records, addresses=addresses, ttl_s=ttl_s)


Result = SrvAnswer | Missing | DnsUnavailableError


@dataclass
class FakeDns:
    """Answers per name, and a fake clock: the source's waits between resolutions block until `tick()`."""

    answers: dict[str, Result]
    now: float = 1000.0
    asked: list[str] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    _tick: asyncio.Event = field(default_factory=asyncio.Event)

    async def lookup(self, name: str) -> SrvAnswer | Missing:
        self.asked.append(name)
        result = self.answers[name]
        if isinstance(result, DnsUnavailableError):
            raise result
        return result

    async def sleep(self, delay_s: float) -> None:
        self.delays.append(delay_s)
        tick = self._tick
        await tick.wait()

    def tick(self, seconds: float = 0.0) -> None:
        """Advance the clock and end every wait: each name is resolved again."""
        self.now += seconds
        self._tick.set()
        self._tick = asyncio.Event()

    def clock(self) -> float:
        return self.now


def ports(catalog: Catalog, service: str) -> set[int]:
    found = catalog.get(service)
    return set() if found is None else {e.port for e in found.endpoints}


@dataclass
class Running:
    dns: FakeDns
    sink: RecordingSink
    source: DnsSource


@pytest.fixture
def settings() -> dict[str, Any]:
    return {"ttl_floor_s": 2.0, "ttl_ceiling_s": 60.0, "resync_grace_s": 0.0, "max_stale_s": 5.0,
            "backoff_initial_s": 0.01, "backoff_max_s": 0.02, "debounce_s": 0.0}


@pytest.fixture
async def running(settings: dict[str, Any]) -> AsyncIterator[Running]:
    dns = FakeDns({WEB: srv(9001, 9002, ttl_s=0), API: srv(8080, ttl_s=30)})
    config = DnsConfig(servers=(("127.0.0.1", 8600),),
                       services=(DnsService("web", WEB), DnsService("api", API)), **settings)
    source = DnsSource(config, clock=dns.clock, lookup=dns.lookup, sleep=dns.sleep, random=lambda: 1.0)
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    try:
        yield Running(dns, sink, source)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_publishes_every_name_with_weights_and_reresolves_at_the_clamped_ttl(running: Running) -> None:
    dns, sink = running.dns, running.sink
    await until(lambda: bool(sink.updates), what="first publish")
    assert ports(sink.catalog, "web") == {9001, 9002} and ports(sink.catalog, "api") == {8080}
    web = sink.catalog.get("web")
    assert web is not None and {e.port: e.weight for e in web.endpoints} == {9001: 1, 9002: 2}
    # TTL 0 -> the 2 s floor; TTL 30 -> 30 s.
    await until(lambda: len(dns.delays) == 2, what="both names waiting")
    assert sorted(dns.delays) == [2.0, 30.0]
    dns.answers[WEB] = srv(9001, 9002, 9003, ttl_s=600)
    dns.tick(2.0)
    await until(lambda: ports(sink.catalog, "web") == {9001, 9002, 9003}, what="third instance")
    await until(lambda: len(dns.delays) == 4, what="next waits")
    assert 60.0 in dns.delays[2:]  # TTL 600 -> the 60 s ceiling


async def test_nxdomain_removes_the_service(running: Running) -> None:
    dns, sink = running.dns, running.sink
    await until(lambda: bool(sink.updates), what="first publish")
    dns.answers[WEB] = Missing("NXDOMAIN")
    dns.tick(2.0)
    await until(lambda: "web" not in sink.catalog, what="web removed")
    assert ports(sink.catalog, "api") == {8080}
    assert sink.errors == []  # a name that is gone is news, not an outage


async def test_a_silent_server_keeps_the_last_endpoints_reports_stale_and_recovers(running: Running) -> None:
    dns, sink, source = running.dns, running.sink, running.source
    await until(lambda: bool(sink.updates), what="first publish")
    published = len(sink.updates)
    for name in (WEB, API):
        dns.answers[name] = DnsUnavailableError(f"SRV {name}: no DNS server answered in time")
    dns.tick(2.0)
    await until(lambda: any("serving the last state read from DNS" in e for e in sink.errors),
                what="outage reported")
    dns.now += 6.0  # past max_stale_s: the next failure says the server has been silent too long
    await until(lambda: any("has not answered for" in e for e in sink.errors), what="stale report")
    assert source.status().failing_watches == 2 and source.status().outage_s >= 5.0
    status = source.status()
    assert status.kind == "dns" and status.synced and "no DNS server answered in time" in status.last_error
    assert len(sink.updates) == published  # never a publish, let alone an empty one, during the outage
    dns.answers[WEB] = srv(9001)
    dns.answers[API] = srv(8080)
    await until(lambda: len(sink.updates) > published and source.status().failing_watches == 0,
                what="recovery publish")
    assert ports(sink.catalog, "web") == {9001}


async def test_nothing_is_published_before_every_name_answered(settings: dict[str, Any]) -> None:
    dns = FakeDns({WEB: srv(9001), API: DnsUnavailableError("SRV api: no DNS server answered in time")})
    config = DnsConfig(servers=(("127.0.0.1", 8600),),
                       services=(DnsService("web", WEB), DnsService("api", API)), **settings)
    sink = RecordingSink()
    source = DnsSource(config, clock=dns.clock, lookup=dns.lookup, sleep=dns.sleep)
    task = asyncio.create_task(source.run(sink))
    try:
        await until(lambda: dns.asked.count(API) >= 3, what="api retried")
        assert sink.updates == [] and sink.errors
        dns.answers[API] = srv(8080)
        await until(lambda: bool(sink.updates), what="first publish")
        assert ports(sink.catalog, "api") == {8080} and ports(sink.catalog, "web") == {9001}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("settings", [{"ttl_floor_s": 2.0, "resync_grace_s": 0.3, "backoff_initial_s": 0.01,
                                       "backoff_max_s": 0.02, "debounce_s": 0.0}])
async def test_after_an_outage_removals_wait_for_the_resync_grace(running: Running) -> None:
    dns, sink = running.dns, running.sink
    await until(lambda: bool(sink.updates), what="first publish")
    dns.answers[WEB] = DnsUnavailableError("SRV web: no DNS server answered in time")
    dns.tick(2.0)
    await until(lambda: bool(sink.errors), what="outage reported")
    # The server comes back empty (a restarted Consul): web is held for the grace, then removed.
    dns.answers[WEB] = Missing("NXDOMAIN")
    await until(lambda: running.source.status().failing_watches == 0, what="recovery")
    assert ports(sink.catalog, "web") == {9001, 9002}
    assert running.source.status().resync_grace_remaining_s == pytest.approx(0.3)
    dns.now += 0.5  # the grace ends on the source's clock; its recheck then publishes the removal
    await until(lambda: "web" not in sink.catalog, what="removal after the grace")
