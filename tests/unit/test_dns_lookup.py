"""xds/sources/dns/lookup.py against small DNS servers on loopback (UDP), whose answers dnspython builds:
what the Consul e2e cannot show (no additional section, SERVFAIL, a silent first server, a target whose
address query times out)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from xds.sources.dns.lookup import DnsUnavailableError, Missing, lookup_srv, make_resolver
from xds.sources.dns.records import SrvAnswer, SrvRecord

# (query name, query type) -> the response, or None to stay silent.
Answer = Callable[[dns.message.Message], dns.message.Message | None]


class _Server(asyncio.DatagramProtocol):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport is not registered as a DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        self.asked.append((question.name.to_text(), dns.rdatatype.to_text(question.rdtype)))
        response = self.answer(query)
        if response is not None and self.transport is not None:
            self.transport.sendto(response.to_wire(), addr)


@asynccontextmanager
async def dns_server(answer: Answer) -> AsyncIterator[tuple[int, _Server]]:
    transport, server = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Server(answer), local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1], server
    finally:
        transport.close()


def zone(records: dict[tuple[str, str], list[str]], *, ttl: int = 30, additional: bool = False,
         rcode: int = dns.rcode.NOERROR, silent: frozenset[tuple[str, str]] = frozenset()) -> Answer:
    """Answers from `records` ((name, type) -> rdata texts); NXDOMAIN for unknown names."""
    names = {name for name, _ in records}

    def answer(query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        key = (question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
        if key in silent:
            return None
        response = dns.message.make_response(query)
        if rcode != dns.rcode.NOERROR:
            response.set_rcode(rcode)
            return response
        if key[0] not in names:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        if key in records:
            response.answer.append(dns.rrset.from_text_list(key[0], ttl, "IN", key[1], records[key]))
        if additional and key[1] == "SRV":
            for (name, kind), texts in records.items():
                if kind in ("A", "AAAA"):
                    response.additional.append(dns.rrset.from_text_list(name, ttl - 10, "IN", kind, texts))
        return response

    return answer


SRV_NAME = "_http._tcp.web.example."
RECORDS = {
    (SRV_NAME, "SRV"): ["10 5 9001 a.example.", "20 0 9002 b.example."],
    ("a.example.", "A"): ["10.0.0.1"],
    ("a.example.", "AAAA"): ["fd00::1"],
    ("b.example.", "A"): ["10.0.0.2"],
}


async def test_addresses_are_queried_when_the_additional_section_lacks_them() -> None:
    async with dns_server(zone(RECORDS)) as (port, server):
        got = await lookup_srv(make_resolver((("127.0.0.1", port),), timeout_s=1.0), SRV_NAME)
    records = (SrvRecord(10, 5, 9001, "a.example."), SrvRecord(20, 0, 9002, "b.example."))
    assert got == SrvAnswer(records=records,
                            addresses={"a.example": ("10.0.0.1", "fd00::1"), "b.example": ("10.0.0.2",)},
                            ttl_s=30)
    assert ("a.example.", "AAAA") in server.asked and ("b.example.", "AAAA") in server.asked


async def test_the_additional_section_is_used_and_its_ttls_count() -> None:
    async with dns_server(zone(RECORDS, additional=True)) as (port, server):
        got = await lookup_srv(make_resolver((("127.0.0.1", port),), timeout_s=1.0), SRV_NAME)
    assert isinstance(got, SrvAnswer) and got.ttl_s == 20 and got.addresses["b.example"] == ("10.0.0.2",)
    assert server.asked == [(SRV_NAME, "SRV")]  # nothing else asked


async def test_nxdomain_and_no_srv_records_are_missing() -> None:
    async with dns_server(zone({("other.example.", "A"): ["10.0.0.9"]})) as (port, _):
        resolver = make_resolver((("127.0.0.1", port),), timeout_s=1.0)
        assert await lookup_srv(resolver, SRV_NAME) == Missing("NXDOMAIN")
        assert await lookup_srv(resolver, "other.example.") == Missing("no SRV records")


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED])
async def test_servfail_and_refused_are_unavailable_not_missing(rcode: int) -> None:
    async with dns_server(zone(RECORDS, rcode=rcode)) as (port, _):
        with pytest.raises(DnsUnavailableError, match=f"SRV {SRV_NAME}"):
            await lookup_srv(make_resolver((("127.0.0.1", port),), timeout_s=0.5), SRV_NAME)


async def test_a_silent_server_times_out_within_the_timeout() -> None:
    async with dns_server(lambda query: None) as (port, _):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DnsUnavailableError, match="no DNS server answered in time"):
            await lookup_srv(make_resolver((("127.0.0.1", port),), timeout_s=0.3), SRV_NAME)
        assert loop.time() - started < 1.0


async def test_a_silent_first_server_leaves_time_for_the_second() -> None:
    async with dns_server(lambda query: None) as (silent, _), dns_server(zone(RECORDS)) as (port, _):
        got = await lookup_srv(make_resolver((("127.0.0.1", silent), ("127.0.0.1", port)), timeout_s=1.0),
                               SRV_NAME)
    assert isinstance(got, SrvAnswer) and len(got.records) == 2


async def test_a_target_whose_address_query_times_out_makes_the_whole_name_unavailable() -> None:
    answer = zone(RECORDS, silent=frozenset({("b.example.", "A")}))
    async with dns_server(answer) as (port, _):
        with pytest.raises(DnsUnavailableError, match=r"A b\.example"):
            await lookup_srv(make_resolver((("127.0.0.1", port),), timeout_s=0.3), SRV_NAME)
