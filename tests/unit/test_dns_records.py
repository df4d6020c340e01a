"""The DNS SRV source's pure parts: SRV answers -> endpoints, re-resolve delays, configuration parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds.model.service import Locality
from xds.sources.dns.config import (
    DnsConfig,
    DnsConfigError,
    DnsService,
    load_services_file,
    parse_server,
    parse_service,
)
from xds.sources.dns.records import SrvAnswer, SrvRecord, endpoints_of, refresh_delay_s


def answer(*records: SrvRecord, ttl_s: int = 30, **addresses: tuple[str, ...]) -> SrvAnswer:
    return SrvAnswer(records=records, addresses={k.replace("_", "."): v for k, v in addresses.items()},
                     ttl_s=ttl_s)


def test_weights_and_ports_come_from_the_srv_records() -> None:
    got = endpoints_of(answer(SrvRecord(1, 5, 9001, "a.example."), SrvRecord(1, 3, 9002, "b.example."),
                              a_example=("10.0.0.1",), b_example=("10.0.0.2",)), source="dns:x")
    assert [(e.host, e.port, e.weight, e.priority, e.source) for e in got] == [
        ("10.0.0.1", 9001, 5, 0, "dns:x"), ("10.0.0.2", 9002, 3, 0, "dns:x")]


def test_weight_zero_becomes_one_since_envoy_needs_at_least_one() -> None:
    (endpoint,) = endpoints_of(answer(SrvRecord(0, 0, 80, "a.example."), a_example=("10.0.0.1",)), source="s")
    assert endpoint.weight == 1


def test_distinct_priorities_become_consecutive_failover_tiers() -> None:
    got = endpoints_of(answer(SrvRecord(20, 1, 80, "b.example."), SrvRecord(10, 1, 80, "a.example."),
                              SrvRecord(50, 1, 80, "c.example."), a_example=("10.0.0.1",),
                              b_example=("10.0.0.2",), c_example=("10.0.0.3",)), source="s")
    assert {e.host: e.priority for e in got} == {"10.0.0.1": 0, "10.0.0.2": 1, "10.0.0.3": 2}


def test_every_address_of_a_target_is_an_endpoint_and_targets_compare_case_insensitively() -> None:
    got = endpoints_of(answer(SrvRecord(1, 2, 8080, "Multi.Example."), multi_example=("10.0.0.1", "fd00::1")),
                       source="s", locality=Locality("eu", "a"))
    assert {(e.host, e.port) for e in got} == {("10.0.0.1", 8080), ("fd00::1", 8080)}
    assert all(e.locality == Locality("eu", "a") and not e.is_dns_name for e in got)


def test_root_target_and_targets_without_addresses_give_nothing() -> None:
    got = endpoints_of(answer(SrvRecord(1, 1, 80, "."), SrvRecord(1, 1, 81, "gone.example."),
                              SrvRecord(1, 1, 82, "a.example."), a_example=("10.0.0.1",)), source="s")
    assert [e.address for e in got] == [("10.0.0.1", 82)]


def test_an_address_named_twice_keeps_the_preferred_tier_then_the_higher_weight() -> None:
    got = endpoints_of(answer(SrvRecord(2, 9, 80, "a.example."), SrvRecord(1, 1, 80, "b.example."),
                              SrvRecord(1, 4, 80, "c.example."), a_example=("10.0.0.1",),
                              b_example=("10.0.0.1",), c_example=("10.0.0.1",)), source="s")
    assert [(e.priority, e.weight) for e in got] == [(0, 4)]


@pytest.mark.parametrize(("ttl", "expected"), [(0, 2.0), (1, 2.0), (30, 30.0), (86400, 300.0)])
def test_refresh_is_the_ttl_clamped_to_floor_and_ceiling(ttl: int, expected: float) -> None:
    assert refresh_delay_s(ttl, floor_s=2.0, ceiling_s=300.0) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8600", ("127.0.0.1", 8600)), ("10.0.0.2", ("10.0.0.2", 53)), ("[::1]:5353", ("::1", 5353)),
    ("::1", ("::1", 53)), ("[fd00::2]", ("fd00::2", 53))])
def test_server_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("dns.example:53", "'dns.example' is not an IP address"), ("127.0.0.1:0", "port '0'"),
    ("127.0.0.1:x", "port 'x'"), ("[::1]x", "expected [IPV6]:PORT")])
def test_bad_servers_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(DnsConfigError, match="--dns-server") as raised:
        parse_server(text)
    assert message in str(raised.value)


def test_service_flag_with_and_without_locality() -> None:
    assert parse_service("web=web.service.consul") == DnsService("web", "web.service.consul")
    assert parse_service("api=_http._tcp.api.example.com@eu-west/a") == DnsService(
        "api", "_http._tcp.api.example.com", Locality("eu-west", "a"))
    for bad in ("web", "=x.example", "web=", "web=a..b", "web=x.example@a/b/c/d"):
        with pytest.raises(DnsConfigError, match="--dns-service"):
            parse_service(bad)


def test_services_file(tmp_path: Path) -> None:
    path = tmp_path / "dns.yaml"
    path.write_text("services:\n  - {name: web, srv: web.service.consul}\n"
                    "  - {name: api, srv: _grpc._tcp.api.example.com, locality: {region: eu, zone: b}}\n")
    assert load_services_file(path) == (DnsService("web", "web.service.consul"),
                                        DnsService("api", "_grpc._tcp.api.example.com", Locality("eu", "b")))


@pytest.mark.parametrize(("text", "where"), [
    ("services: 3\n", "`services` must be a list"),
    ("services:\n  - {srv: a.example}\n", "services[0].name"),
    ("services:\n  - {name: a, srv: a.example, port: 3}\n", "services[0]: unknown field(s) port"),
    ("services:\n  - {name: a, srv: a.example}\n  - {name: b, srv: ''}\n", "services[1].srv"),
    ("services:\n  - {name: a, srv: a.example, locality: {planet: mars}}\n", "services[0].locality")])
def test_services_file_errors_name_the_file_and_field(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "dns.yaml"
    path.write_text(text)
    with pytest.raises(DnsConfigError) as raised:
        load_services_file(path)
    assert str(raised.value).startswith(str(path)) and where in str(raised.value)


def test_config_checks() -> None:
    web = DnsService("web", "web.service.consul")
    assert DnsConfig(servers=(("127.0.0.1", 8600),), services=(web,)).name == "dns:127.0.0.1:8600"
    with pytest.raises(DnsConfigError, match="at least one --dns-server"):
        DnsConfig(servers=(), services=(web,))
    with pytest.raises(DnsConfigError, match="repeated: web"):
        DnsConfig(servers=(("127.0.0.1", 53),), services=(web, web))
    with pytest.raises(DnsConfigError, match="floor <= ceiling"):
        DnsConfig(servers=(("127.0.0.1", 53),), services=(web,), ttl_floor_s=10, ttl_ceiling_s=5)
