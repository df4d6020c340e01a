"""xds/sources/dns/lookup.py against a small DNS server on loopback (harness/dns_zone.py, dnspython-built
answers): what the Consul e2e cannot show (no additional section, SERVFAIL, a silent first server, a
target whose address query times out)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import dns.rcode
import pytest

from harness.dns_zone import DnsZone
from xds.sources.dns.lookup import DnsUnavailableError, Missing, lookup_srv, make_resolver
from xds.sources.dns.records import SrvAnswer, SrvRecord

SRV_NAME = "_http._tcp.web.example."


def fill(zone: DnsZone) -> DnsZone:
    zone.set(SRV_NAME, "SRV", ["10 5 9001 a.example.", "20 0 9002 b.example."])
    zone.set("a.example.", "A", ["10.0.0.1"])
    zone.set("a.example.", "AAAA", ["fd00::1"])
    zone.set("b.example.", "A", ["10.0.0.2"])
    return zone


@pytest.fixture
def zone() -> Iterator[DnsZone]:
    with DnsZone(ttl=30) as running:
        yield fill(running)


async def test_addresses_are_queried_when_the_additional_section_lacks_them(zone: DnsZone) -> None:
    got = await lookup_srv(make_resolver((("127.0.0.1", zone.port),), timeout_s=1.0), SRV_NAME)
    records = (SrvRecord(10, 5, 9001, "a.example."), SrvRecord(20, 0, 9002, "b.example."))
    assert got == SrvAnswer(records=records,
                            addresses={"a.example": ("10.0.0.1", "fd00::1"), "b.example": ("10.0.0.2",)},
                            ttl_s=30)
    assert ("a.example.", "AAAA") in zone.asked and ("b.example.", "AAAA") in zone.asked


async def test_the_additional_section_is_used_and_its_ttls_count() -> None:
    with DnsZone(ttl=30, additional=True, additional_ttl=20) as zone:
        fill(zone)
        got = await lookup_srv(make_resolver((("127.0.0.1", zone.port),), timeout_s=1.0), SRV_NAME)
    assert isinstance(got, SrvAnswer) and got.ttl_s == 20 and got.addresses["b.example"] == ("10.0.0.2",)
    assert zone.asked == [(SRV_NAME, "SRV")]  # nothing else asked


async def test_nxdomain_and_no_srv_records_are_missing(zone: DnsZone) -> None:
    resolver = make_resolver((("127.0.0.1", zone.port),), timeout_s=1.0)
    assert await lookup_srv(resolver, "_http._tcp.nope.example.") == Missing("NXDOMAIN")
    assert await lookup_srv(resolver, "a.example.") == Missing("no SRV records")


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED])
async def test_servfail_and_refused_are_unavailable_not_missing(
        zone: DnsZone, rcode: dns.rcode.Rcode) -> None:
    zone.rcode = rcode
    with pytest.raises(DnsUnavailableError, match=f"SRV {SRV_NAME}"):
        await lookup_srv(make_resolver((("127.0.0.1", zone.port),), timeout_s=0.5), SRV_NAME)


async def test_a_silent_server_times_out_within_the_timeout(zone: DnsZone) -> None:
    zone.silence(SRV_NAME, "SRV")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DnsUnavailableError, match="no DNS server answered in time"):
        await lookup_srv(make_resolver((("127.0.0.1", zone.port),), timeout_s=0.3), SRV_NAME)
    assert loop.time() - started < 1.0


async def test_a_silent_first_server_leaves_time_for_the_second(zone: DnsZone) -> None:
    with DnsZone() as silent:
        silent.set(SRV_NAME, "SRV", [])
        silent.silence(SRV_NAME, "SRV")
        for target, kind in (("a.example.", "A"), ("a.example.", "AAAA"), ("b.example.", "A"),
                             ("b.example.", "AAAA")):
            silent.silence(target, kind)
        got = await lookup_srv(make_resolver((("127.0.0.1", silent.port), ("127.0.0.1", zone.port)),
                                             timeout_s=1.0), SRV_NAME)
    assert isinstance(got, SrvAnswer) and len(got.records) == 2


async def test_a_target_whose_address_query_times_out_makes_the_whole_name_unavailable(zone: DnsZone) -> None:
    zone.silence("b.example.", "A")
    with pytest.raises(DnsUnavailableError, match=r"A b\.example"):
        await lookup_srv(make_resolver((("127.0.0.1", zone.port),), timeout_s=0.3), SRV_NAME)
