"""The DNS SRV row of the source kinds (xds/source_kinds.py): `xds serve`'s --dns-* flags, their XDS_DNS_*
variables, and the DnsConfig they make (docs/dns.md "DNS SRV source"). No DNS library import."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from xds.cli_source_args import env_list, environment_flags

if TYPE_CHECKING:
    from xds.sources.base import Source
    from xds.sources.dns.config import DnsConfig

ENV_DNS_SERVERS = "XDS_DNS_SERVERS"  # comma-separated HOST:PORT
ENV_DNS_SERVICES = "XDS_DNS_SERVICES"  # comma-separated NAME=SRV_NAME[@REGION[/ZONE[/SUB_ZONE]]]
ENV_DNS_SERVICES_FILE = "XDS_DNS_SERVICES_FILE"
ENV_DNS_TIMEOUT_S = "XDS_DNS_TIMEOUT_S"
ENV_DNS_TTL_FLOOR_S = "XDS_DNS_TTL_FLOOR_S"
ENV_DNS_TTL_CEILING_S = "XDS_DNS_TTL_CEILING_S"
ENV_DNS_RESYNC_GRACE_S = "XDS_DNS_RESYNC_GRACE_S"

_ENVIRONMENT = {
    ENV_DNS_SERVERS: "dns_server", ENV_DNS_SERVICES: "dns_service",
    ENV_DNS_SERVICES_FILE: "dns_services_file", ENV_DNS_TIMEOUT_S: "dns_timeout",
    ENV_DNS_TTL_FLOOR_S: "dns_ttl_floor", ENV_DNS_TTL_CEILING_S: "dns_ttl_ceiling",
    ENV_DNS_RESYNC_GRACE_S: "dns_resync_grace",
}
HINT = "SRV names with --dns-service NAME=SRV_NAME and --dns-server HOST:PORT (docs/dns.md)"


def from_environment(env: Mapping[str, str]) -> dict[str, str]:
    return environment_flags(env, _ENVIRONMENT)


def source(config: DnsConfig) -> Source:
    from xds.sources.dns import DnsSource

    return DnsSource(config)


def secrets(config: DnsConfig) -> tuple[str | None, ...]:
    return ()  # DNS queries carry no credentials


def add_arguments(serve: argparse.ArgumentParser, env: dict[str, str]) -> None:
    dns = serve.add_argument_group("DNS SRV source (docs/dns.md)")
    dns.add_argument("--dns-service", action="append", metavar="NAME=SRV_NAME[@REGION[/ZONE]]",
                     help="a service found by resolving an SRV name, e.g. web=web.service.consul or "
                          "api=_http._tcp.api.example.com@eu-west/a (repeatable; "
                          f"env {ENV_DNS_SERVICES}, comma-separated)")
    dns.add_argument("--dns-services-file", type=Path, default=env.get("dns_services_file"), metavar="PATH",
                     help=f"YAML list of services (name, srv, locality) (env {ENV_DNS_SERVICES_FILE})")
    dns.add_argument("--dns-server", action="append", metavar="HOST:PORT",
                     help="DNS server to ask, an IP address, port 53 by default (repeatable, tried in order; "
                          f"env {ENV_DNS_SERVERS}, comma-separated)")
    dns.add_argument("--dns-timeout", type=float, default=env.get("dns_timeout"), metavar="SECONDS",
                     help="time for one DNS query, all servers included (default 2; "
                          f"env {ENV_DNS_TIMEOUT_S})")
    dns.add_argument("--dns-ttl-floor", type=float, default=env.get("dns_ttl_floor"), metavar="SECONDS",
                     help="re-resolve no sooner than this, whatever the TTL (default 2; "
                          f"env {ENV_DNS_TTL_FLOOR_S})")
    dns.add_argument("--dns-ttl-ceiling", type=float, default=env.get("dns_ttl_ceiling"), metavar="SECONDS",
                     help="re-resolve no later than this, whatever the TTL (default 300; "
                          f"env {ENV_DNS_TTL_CEILING_S})")
    dns.add_argument("--dns-resync-grace", type=float, default=env.get("dns_resync_grace"), metavar="SECONDS",
                     help="after the DNS servers answer again, hold removals this long (default 30; "
                          f"env {ENV_DNS_RESYNC_GRACE_S})")


def config(args: argparse.Namespace, env: dict[str, str]) -> DnsConfig | None:
    """The DNS source's configuration, or None when no service is named. SystemExit on a bad value."""
    service_texts = args.dns_service or env_list(env.get("dns_service", ""))
    if not service_texts and not args.dns_services_file:
        return None
    from xds.sources.dns.config import (
        DnsConfig,
        DnsConfigError,
        load_services_file,
        parse_server,
        parse_service,
    )

    try:
        services = tuple(parse_service(text) for text in service_texts)
        if args.dns_services_file:
            services += load_services_file(Path(args.dns_services_file))
        servers = tuple(parse_server(text) for text in args.dns_server or env_list(env.get("dns_server", "")))
        tunables = {name: float(value) for name, value in (
            ("timeout_s", args.dns_timeout), ("ttl_floor_s", args.dns_ttl_floor),
            ("ttl_ceiling_s", args.dns_ttl_ceiling), ("resync_grace_s", args.dns_resync_grace))
            if value is not None}
        return DnsConfig(servers=servers, services=services, **tunables)
    except (DnsConfigError, ValueError) as exc:
        raise SystemExit(f"xds: error: DNS: {exc}") from exc
