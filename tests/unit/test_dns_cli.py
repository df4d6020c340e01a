"""`xds serve`'s --dns-* flags and XDS_DNS_* variables (xds/cli_dns.py), through the real parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds import cli_dns
from xds.cli import build_parser
from xds.model.service import Locality
from xds.settings import from_environment
from xds.sources.dns import DnsConfig, DnsService, DnsSource


def dns_config(argv: list[str], environ: dict[str, str] | None = None) -> DnsConfig | None:
    env = from_environment(environ or {})
    args = build_parser(env).parse_args(["serve", *argv])
    return cli_dns.config(args, env)


def test_no_dns_service_no_dns_source() -> None:
    assert dns_config(["--dns-server", "127.0.0.1:8600"]) is None


def test_flags_make_the_config_and_the_source() -> None:
    config = dns_config(["--dns-server", "127.0.0.1:8600", "--dns-server", "[::1]:53",
                         "--dns-service", "web=web.service.consul",
                         "--dns-service", "api=_h._tcp.api.example@eu/a",
                         "--dns-timeout", "1.5", "--dns-ttl-floor", "0.5", "--dns-ttl-ceiling", "60",
                         "--dns-resync-grace", "10"])
    assert config == DnsConfig(servers=(("127.0.0.1", 8600), ("::1", 53)),
                               services=(DnsService("web", "web.service.consul"),
                                         DnsService("api", "_h._tcp.api.example", Locality("eu", "a"))),
                               timeout_s=1.5, ttl_floor_s=0.5, ttl_ceiling_s=60.0, resync_grace_s=10.0)
    source = cli_dns.source(config)
    assert isinstance(source, DnsSource) and source.name == "dns:127.0.0.1:8600,[::1]:53"


def test_environment_and_services_file(tmp_path: Path) -> None:
    path = tmp_path / "dns.yaml"
    path.write_text("services:\n  - {name: db, srv: _pg._tcp.db.example}\n")
    config = dns_config([], {"XDS_DNS_SERVERS": "10.0.0.2,10.0.0.3:5353",
                             "XDS_DNS_SERVICES": "web=web.example", "XDS_DNS_SERVICES_FILE": str(path),
                             "XDS_DNS_TTL_FLOOR_S": "1"})
    assert config is not None
    assert config.servers == (("10.0.0.2", 53), ("10.0.0.3", 5353)) and config.ttl_floor_s == 1.0
    assert [s.name for s in config.services] == ["web", "db"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--dns-service", "web=web.example"], "at least one --dns-server"),
    (["--dns-service", "web=web.example", "--dns-server", "ns.example"], "'ns.example' is not an IP address"),
    (["--dns-service", "web", "--dns-server", "127.0.0.1"], "expected NAME=SRV_NAME")])
def test_bad_values_exit_with_what_is_wrong(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as raised:
        dns_config(argv)
    assert str(raised.value).startswith("xds: error: DNS:") and message in str(raised.value)
