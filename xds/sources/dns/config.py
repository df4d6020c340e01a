"""Configuration of the DNS SRV source (docs/dns.md "DNS SRV source").

Two forms, the same values:

- flags: `--dns-server HOST:PORT` (repeatable), `--dns-service NAME=SRV_NAME[@REGION[/ZONE[/SUB_ZONE]]]`
  (repeatable), parsed by `parse_server` and `parse_service`;
- a YAML file (`load_services_file`), for many names or locality per name:

      services:
        - name: web
          srv: _http._tcp.web.example.com
          locality: {region: eu-west, zone: a}

Errors name the flag value or the file path and field that is wrong.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xds.model.service import Locality

DEFAULT_PORT = 53
DEFAULT_TIMEOUT_S = 2.0
# TTL bounds (docs/dns.md): Consul's DNS interface serves TTL 0 by default, so a floor keeps that from
# becoming a query loop; a ceiling bounds how late a change behind a long TTL is seen.
DEFAULT_TTL_FLOOR_S = 2.0
DEFAULT_TTL_CEILING_S = 300.0
DEFAULT_RESYNC_GRACE_S = 30.0
DEFAULT_MAX_STALE_S = 60.0


class DnsConfigError(ValueError):
    """A DNS source setting that cannot be used; the message says which value and where."""


@dataclass(frozen=True, slots=True)
class DnsService:
    """One service of the catalog, found by resolving `srv_name`."""

    name: str  # the service name in the catalog (what policies name)
    srv_name: str  # `_service._proto.name`, or Consul's `<service>.service.consul`
    locality: Locality = field(default_factory=Locality)


@dataclass(frozen=True, slots=True)
class DnsConfig:
    servers: tuple[tuple[str, int], ...]  # asked in order; the next one when one does not answer
    services: tuple[DnsService, ...]
    # One query (the SRV query; then the address queries of its targets, together), all servers included.
    timeout_s: float = DEFAULT_TIMEOUT_S
    ttl_floor_s: float = DEFAULT_TTL_FLOOR_S
    ttl_ceiling_s: float = DEFAULT_TTL_CEILING_S
    # After the servers answer again following an outage: removals are held this long (docs/protocol.md
    # R36: a server that comes back empty must not flush the data plane before it is repopulated).
    resync_grace_s: float = DEFAULT_RESYNC_GRACE_S
    # An outage this long is reported a second time, as stale.
    max_stale_s: float = DEFAULT_MAX_STALE_S
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    # Coalesces names that change together (a registration seen by several names) into one publish.
    debounce_s: float = 0.05

    def __post_init__(self) -> None:
        if not self.servers:
            raise DnsConfigError("the DNS source needs at least one --dns-server")
        if not self.services:
            raise DnsConfigError("the DNS source needs at least one --dns-service")
        names = [s.name for s in self.services]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise DnsConfigError(f"--dns-service: service names must be unique, repeated: {', '.join(dup)}")
        if self.timeout_s <= 0:
            raise DnsConfigError(f"DNS timeout must be > 0 s, got {self.timeout_s:g}")
        if not 0 < self.ttl_floor_s <= self.ttl_ceiling_s:
            raise DnsConfigError(f"DNS TTL bounds need 0 < floor <= ceiling, got floor "
                                 f"{self.ttl_floor_s:g} s and ceiling {self.ttl_ceiling_s:g} s")

    @property
    def name(self) -> str:
        return "dns:" + self.servers_text

    @property
    def servers_text(self) -> str:
        """`127.0.0.1:8600,[::1]:53`: the servers as the flags give them."""
        return ",".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                        for host, port in self.servers)


def parse_server(text: str) -> tuple[str, int]:
    """`127.0.0.1:8600`, `[::1]:53`, `10.0.0.2` (port 53). The server must be an IP address: the resolver
    of the resolver cannot itself need DNS."""
    host, port_text = text, str(DEFAULT_PORT)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise DnsConfigError(f"--dns-server {text!r}: expected [IPV6]:PORT")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise DnsConfigError(f"--dns-server {text!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise DnsConfigError(f"--dns-server {text!r}: port {port_text!r} is not in 1..65535")
    return host, int(port_text)


def parse_service(text: str) -> DnsService:
    """`web=web.service.consul` or `web=_http._tcp.web.example.com@eu-west/a`."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise DnsConfigError(f"--dns-service {text!r}: expected NAME=SRV_NAME[@REGION[/ZONE[/SUB_ZONE]]]")
    srv_name, _, where = rest.partition("@")
    parts = where.split("/") if where else []
    if len(parts) > 3:
        raise DnsConfigError(f"--dns-service {text!r}: locality is REGION[/ZONE[/SUB_ZONE]]")
    return DnsService(name=name.strip(), srv_name=_check_name(srv_name.strip(), f"--dns-service {text!r}"),
                      locality=Locality(*parts))


def load_services_file(path: Path) -> tuple[DnsService, ...]:
    """The `services:` list of a YAML file (module docstring)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DnsConfigError(f"{path}: cannot read DNS services: {e}") from None
    entries = document.get("services") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise DnsConfigError(f"{path}: `services` must be a list of {{name, srv, locality}}")
    return tuple(_service_entry(path, i, entry) for i, entry in enumerate(entries))


def _service_entry(path: Path, index: int, entry: Any) -> DnsService:
    where = f"{path}: services[{index}]"
    if not isinstance(entry, dict):
        raise DnsConfigError(f"{where}: must be a mapping with `name` and `srv`")
    unknown = sorted(set(entry) - {"name", "srv", "locality"})
    if unknown:
        raise DnsConfigError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
    name, srv = entry.get("name"), entry.get("srv")
    if not isinstance(name, str) or not name:
        raise DnsConfigError(f"{where}.name: must be a non-empty string")
    if not isinstance(srv, str) or not srv:
        raise DnsConfigError(f"{where}.srv: must be a non-empty string")
    locality = entry.get("locality") or {}
    if not isinstance(locality, dict) or set(locality) - {"region", "zone", "sub_zone"} or not all(
            isinstance(v, str) for v in locality.values()):
        raise DnsConfigError(f"{where}.locality: must map region/zone/sub_zone to strings")
    return DnsService(name=name, srv_name=_check_name(srv, f"{where}.srv"), locality=Locality(**locality))


def _check_name(name: str, where: str) -> str:
    labels = name.rstrip(".").split(".")
    if not name or any(not label or len(label) > 63 for label in labels) or len(name) > 253:
        raise DnsConfigError(f"{where}: {name!r} is not a DNS name")
    return name
