"""Pure mapping from Consul's JSON answers to the model: no I/O, no clock, table-tested.

`/v1/catalog/services` gives the service names of a datacenter; `/v1/health/service/<name>` gives one entry
per instance, each with its Node, its Service registration and every check that applies to it (the node's
own checks, such as serfHealth, and the service's). An entry becomes one Endpoint:

- health (the same precedence as Consul's own xDS server, agent/xds/endpoints.go
  `calculateEndpointHealthAndWeight`, plus DRAINING for maintenance):
    1. a critical maintenance check (`_node_maintenance`, `_service_maintenance:<service id>`, the IDs
       `consul maint` registers) -> DRAINING: an operator took it out on purpose, so Envoy lets open
       requests finish instead of treating it as failed;
    2. any other critical check -> UNHEALTHY;
    3. any warning check -> HEALTHY or DEGRADED, as configured (`--consul-warning-as`);
    4. otherwise (passing, or no checks at all, which Consul also counts as passing) -> HEALTHY.
- weight: `Service.Weights.Passing`, or `.Warning` when a warning check is present (both default to 1,
  api-docs/agent/service "Weights"). Envoy rejects a load_balancing_weight of 0
  (endpoint_components.proto, LbEndpoint), and Consul documents weight 0 as "no traffic", so such an
  instance is served UNHEALTHY with weight 1. Weights above the policy maximum are clamped to it.
- address: `Service.Address`, else `Node.Address`; it must be an IP literal, since Envoy does not
  resolve host names of EDS endpoints and would reject the whole update. Port: `Service.Port`.
- metadata, for policy subsets such as `version: v2`: a tag `k=v` gives `k: v`, any other tag `t` gives
  `tag.t: "true"`; `Service.Meta` is added on top and wins on a conflict.
- locality: from `Node.Meta` `region` / `zone` / `sub_zone`, or the Kubernetes-style
  `topology.kubernetes.io/region` / `topology.kubernetes.io/zone` when the plain keys are absent.
- Connect sidecar proxies and gateways (`Service.Kind` set) are skipped unless configured: they are
  Consul's own data plane, not backends.

An entry that cannot become an endpoint (no usable address or port) is skipped with a note; one broken
registration must not hide the others (docs/protocol.md R38).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from xds.model.service import Catalog, Endpoint, Health, Locality, Service, ServiceName
from xds.policy.load import MAX_ENDPOINT_WEIGHT

NODE_MAINTENANCE_CHECK = "_node_maintenance"
SERVICE_MAINTENANCE_PREFIX = "_service_maintenance:"

_REGION_KEYS = ("region", "topology.kubernetes.io/region")
_ZONE_KEYS = ("zone", "topology.kubernetes.io/zone")
_SUB_ZONE_KEYS = ("sub_zone",)


class ConsulParseError(ValueError):
    """An answer whose overall shape is wrong (not the JSON Consul documents for the endpoint)."""


@dataclass(frozen=True, slots=True)
class ParseOptions:
    warning_health: Health = Health.HEALTHY
    include_connect: bool = False
    # Failover tier of this datacenter's endpoints: 0 for the local (first listed) one, 1 for the others.
    priority: int = 0
    # The datacenter asked for; "" when the agent's own was used, then each entry's Node.Datacenter names it.
    datacenter: str = ""


@dataclass(frozen=True, slots=True)
class HealthResult:
    endpoints: tuple[Endpoint, ...]
    skipped: tuple[str, ...] = ()  # one human-readable note per entry that could not be used


def parse_service_names(body: object) -> frozenset[str]:
    """Names in a `/v1/catalog/services` answer: a JSON object of name -> tags."""
    if not isinstance(body, Mapping):
        raise ConsulParseError(f"expected a JSON object of service names, got {type(body).__name__}")
    return frozenset(name for name in body if isinstance(name, str) and name)


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object, default: int) -> int:
    # JSON numbers only; bool is an int subclass in Python but never a weight.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return default


def instance_health(checks: object, *, service_id: str, warning_health: Health = Health.HEALTHY) -> Health:
    """The health of one instance from the checks in its health entry (precedence in the module doc)."""
    maintenance = critical = warning = False
    for check in checks if isinstance(checks, list) else ():
        fields = _mapping(check)
        status = _text(fields.get("Status"))
        check_id = _text(fields.get("CheckID"))
        if check_id in (NODE_MAINTENANCE_CHECK, SERVICE_MAINTENANCE_PREFIX + service_id) or \
                status == "maintenance":
            # `consul maint` registers these as critical; the status "maintenance" only shows up in
            # aggregated views, but means the same.
            maintenance = maintenance or status in ("critical", "maintenance")
        elif status == "warning":
            warning = True
        elif status != "passing":
            # "critical", and anything this code does not know: serving an instance of unknown state as
            # healthy could send traffic into a failure.
            critical = True
    if maintenance:
        return Health.DRAINING
    if critical:
        return Health.UNHEALTHY
    if warning:
        return warning_health
    return Health.HEALTHY


def _has_warning(checks: object) -> bool:
    return any(_text(_mapping(c).get("Status")) == "warning" for c in (checks if isinstance(checks, list)
                                                                         else ()))


def endpoint_weight(weights: object, *, health: Health, warning: bool) -> tuple[int, Health]:
    """(weight, health) after applying `Service.Weights`: weight 0 becomes UNHEALTHY with weight 1."""
    fields = _mapping(weights)
    passing = _int(fields.get("Passing"), 1)
    weight = _int(fields.get("Warning"), 1) if warning else passing
    if health in (Health.HEALTHY, Health.DEGRADED) and weight <= 0:
        return 1, Health.UNHEALTHY
    return min(max(weight, 1), MAX_ENDPOINT_WEIGHT), health


REGISTRY_KEY = "registry"


def endpoint_metadata(tags: object, meta: object) -> tuple[tuple[str, str], ...]:
    """Subset metadata from `Service.Tags` and `Service.Meta` (Meta wins), plus `registry: consul` so a
    policy can split one logical service between Consul and Kubernetes instances (docs/kubernetes.md)."""
    pairs: dict[str, str] = {REGISTRY_KEY: "consul"}
    for tag in tags if isinstance(tags, list) else ():
        if not isinstance(tag, str) or not tag:
            continue
        key, sep, value = tag.partition("=")
        if sep and key:
            pairs[key] = value
        else:
            pairs[f"tag.{tag}"] = "true"
    for meta_key, meta_value in _mapping(meta).items():
        if isinstance(meta_key, str) and meta_key and isinstance(meta_value, str):
            pairs[meta_key] = meta_value
    return tuple(sorted(pairs.items()))


def node_locality(node_meta: object) -> Locality:
    meta = _mapping(node_meta)

    def first(keys: Sequence[str]) -> str:
        for key in keys:
            value = meta.get(key)
            if isinstance(value, str) and value:
                return value
        return ""

    return Locality(region=first(_REGION_KEYS), zone=first(_ZONE_KEYS), sub_zone=first(_SUB_ZONE_KEYS))


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def parse_health(body: object, *, options: ParseOptions = ParseOptions()) -> HealthResult:
    """Endpoints of one service in one datacenter from a `/v1/health/service/<name>` answer.

    Entries are taken in (node, service id) order and an address already taken is skipped, so two
    registrations of one host:port (a copy-paste mistake) cannot produce duplicate Envoy hosts.
    """
    if not isinstance(body, list):
        raise ConsulParseError(f"expected a JSON list of health entries, got {type(body).__name__}")
    entries = [_mapping(e) for e in body]
    entries.sort(key=lambda e: (_text(_mapping(e.get("Node")).get("Node")),
                                _text(_mapping(e.get("Service")).get("ID"))))
    endpoints: dict[tuple[str, int], Endpoint] = {}
    skipped: list[str] = []
    for entry in entries:
        node = _mapping(entry.get("Node"))
        service = _mapping(entry.get("Service"))
        service_id = _text(service.get("ID"))
        label = f"instance {service_id or '?'} on node {_text(node.get('Node')) or '?'}"
        if _text(service.get("Kind")) and not options.include_connect:
            continue
        address_text = _text(service.get("Address")) or _text(node.get("Address"))
        host = _ip(address_text)
        if host is None:
            skipped.append(f"{label}: address {address_text!r} is not an IP address "
                           "(Envoy does not resolve host names of EDS endpoints)")
            continue
        port = _int(service.get("Port"), 0)
        if not 1 <= port <= 65535:
            skipped.append(f"{label}: port {service.get('Port')!r} is not in 1..65535")
            continue
        if (host, port) in endpoints:
            skipped.append(f"{label}: {host}:{port} is already registered by another instance")
            continue
        checks = entry.get("Checks")
        health = instance_health(checks, service_id=service_id, warning_health=options.warning_health)
        weight, health = endpoint_weight(service.get("Weights"), health=health, warning=_has_warning(checks))
        datacenter = options.datacenter or _text(node.get("Datacenter"))
        endpoints[(host, port)] = Endpoint(
            host, port, weight=weight, health=health, locality=node_locality(node.get("Meta")),
            metadata=endpoint_metadata(service.get("Tags"), service.get("Meta")),
            source=f"consul:{datacenter}", priority=options.priority)
    return HealthResult(tuple(endpoints.values()), tuple(skipped))


def assemble_catalog(services: Iterable[tuple[str, Sequence[Endpoint]]]) -> Catalog:
    """One Catalog from (service name, endpoints) pairs, typically one pair per service per datacenter,
    given in datacenter order. A name seen in several datacenters becomes one Service; an address seen
    twice keeps its first (most preferred) entry. Services without any endpoint are left out: Consul only
    lists a service while it has instances, so an empty one is an instance list caught mid-change."""
    merged: dict[str, dict[tuple[str, int], Endpoint]] = {}
    for name, endpoints in services:
        by_address = merged.setdefault(name, {})
        for endpoint in endpoints:
            by_address.setdefault(endpoint.address, endpoint)
    return Catalog(tuple(Service(ServiceName(name), tuple(eps.values()))
                         for name, eps in merged.items() if eps))
