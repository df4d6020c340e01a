"""Pure mapping from Eureka's JSON answers to the model: no I/O, no clock, table-tested.

Two steps, because Eureka's delta protocol needs the registry as Eureka sees it, not as we serve it:

1. `parse_applications` / `parse_delta` read `GET /eureka/apps` and `GET /eureka/apps/delta` into `Instance`
   records, one per registered instance whatever its status or address, so that `reconcile_hashcode` counts
   exactly what the server counts. `apply_delta` applies a delta's ADDED / MODIFIED / DELETED entries to a
   copy of the registry (docs/eureka.md, "Full and delta fetches").
2. `registry_catalog` turns the registry into a Catalog (the table in docs/eureka.md):

- health: `UP` -> HEALTHY; `DOWN` -> UNHEALTHY; `OUT_OF_SERVICE` -> DRAINING (an operator took it out on
  purpose, so Envoy lets open requests finish); `STARTING` -> left out (the application says it is not ready
  yet and will turn UP); `UNKNOWN`, and any status this code does not know -> UNHEALTHY: Eureka's own client
  routes only to UP instances, and keeping it listed (instead of leaving it out) shows it in Envoy's admin
  and lets the resync grace keep an instance's last routable health after a server restart (issue 13).
- port: `port` when enabled, else `securePort` when enabled; with `prefer_secure` the secure port first.
  An instance with neither enabled is skipped with a note.
- address: `ipAddr`, which must be an IP literal (Envoy does not resolve host names of EDS endpoints).
- name: the application name lowercased (Eureka upper-cases it), so `WEB` in Eureka and `web` in Consul or a
  file are one service and one policy splits across both (model/catalog.py merges by name). An instance's
  metadata `xds.dev/service-name` names it explicitly instead, as the Kubernetes annotation of the same name
  does (docs/kubernetes.md, "Logical names"). A name that is not a valid policy service name is skipped.
- metadata (policy subsets): the instance's `metadata` map (string values; Eureka's `@class` marker is
  dropped) plus `registry: eureka` and `eureka.app: <APP>`, so a policy can tell Eureka instances apart.
- locality: the zone from `dataCenterInfo.metadata.availability-zone` (AWS), else metadata `zone` (Spring
  Cloud's `eureka.instance.metadata-map.zone`).

An instance that cannot become an endpoint is skipped with a note; one broken registration must not hide
the others (docs/protocol.md R38). A body whose overall shape is wrong raises EurekaParseError saying where,
and the source keeps its last good state rather than publishing nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from xds.model.service import Catalog, Endpoint, Health, Locality, Service, ServiceName
from xds.policy.rules import MAX_NAME_LENGTH, NAME_RE

REGISTRY_KEY = "registry"
REGISTRY = "eureka"
APP_KEY = "eureka.app"
LOGICAL_NAME_KEY = "xds.dev/service-name"
SOURCE_PREFIX = "eureka:"

ACTION_ADDED = "ADDED"
ACTION_MODIFIED = "MODIFIED"
ACTION_DELETED = "DELETED"
_ACTIONS = (ACTION_ADDED, ACTION_MODIFIED, ACTION_DELETED)

_HEALTH: Mapping[str, Health | None] = {
    "UP": Health.HEALTHY,
    "DOWN": Health.UNHEALTHY,
    "OUT_OF_SERVICE": Health.DRAINING,
    "STARTING": None,  # left out
    "UNKNOWN": Health.UNHEALTHY,
}


class EurekaParseError(ValueError):
    """A body whose shape is not what Eureka documents; the message names the field (`applications.
    application[2].instance[0]`, say)."""


@dataclass(frozen=True, slots=True)
class Port:
    number: int  # 0 when missing or unreadable
    enabled: bool


@dataclass(frozen=True, slots=True)
class Instance:
    """One registered instance as Eureka reports it, usable or not (the hashcode counts them all)."""

    app: str  # as Eureka names it, upper case
    # `instanceId`, or `hostName` for registrations without one (as Eureka's InstanceInfo.getId does)
    instance_id: str
    status: str
    ip: str = ""
    port: Port = Port(0, False)
    secure_port: Port = Port(0, False)
    zone: str = ""
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.app, self.instance_id)


@dataclass(frozen=True, slots=True)
class Registry:
    """The local copy of a Eureka server's registry: every instance, sorted by (app, id)."""

    instances: tuple[Instance, ...] = ()
    hashcode: str = ""  # `apps__hashcode` of the answer it was read from ("" for a delta-built copy)
    version: int | None = None  # `versions__delta`, when the server sent a number

    def __post_init__(self) -> None:
        object.__setattr__(self, "instances", tuple(sorted(self.instances, key=lambda i: i.key)))

    def __len__(self) -> int:
        return len(self.instances)


@dataclass(frozen=True, slots=True)
class Change:
    action: str  # ADDED | MODIFIED | DELETED
    instance: Instance


@dataclass(frozen=True, slots=True)
class Delta:
    changes: tuple[Change, ...]
    hashcode: str  # the server's hashcode of its whole registry after these changes
    version: int | None = None


@dataclass(frozen=True, slots=True)
class ParseOptions:
    prefer_secure: bool = False  # serve `securePort` when both ports are enabled
    source: str = "eureka"  # Endpoint.source of every endpoint


@dataclass(frozen=True, slots=True)
class CatalogResult:
    catalog: Catalog
    skipped: tuple[str, ...] = ()  # one human-readable note per instance that could not be used


# ------------------------------------------------------------------------------------- JSON helpers


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise EurekaParseError(f"{where}: expected a JSON object, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _list(value: object, where: str) -> list[object]:
    """Eureka's JSON codec writes a one-element list as the element itself, and an absent list as nothing."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping):
        return [value]
    raise EurekaParseError(f"{where}: expected a JSON list or object, got {_kind(value)}")


def _text(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _version(value: object) -> int | None:
    # Sent as a string ("1") by Eureka's JSON codec, as a number by others.
    try:
        return int(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    except ValueError:
        return None


def _port(value: object) -> Port:
    """`{"$": 8080, "@enabled": "true"}`; a bare number is taken as an enabled port."""
    if isinstance(value, Mapping):
        number, enabled = value.get("$"), value.get("@enabled")
        is_on = enabled is True or (isinstance(enabled, str) and enabled.strip().lower() == "true")
    else:
        number, is_on = value, value is not None
    try:
        port = int(number) if isinstance(number, str | int) and not isinstance(number, bool) else 0
    except ValueError:
        port = 0
    return Port(port, is_on)


def _metadata(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        return ()
    # "@class" marks the Java map type (`java.util.Collections$EmptyMap`); it is not metadata.
    return tuple(sorted((k, v) for k, v in value.items()
                        if isinstance(k, str) and k and not k.startswith("@") and isinstance(v, str)))


def _zone(fields: Mapping[str, object], metadata: Mapping[str, str]) -> str:
    info = fields.get("dataCenterInfo")
    if isinstance(info, Mapping):
        aws = info.get("metadata")
        if isinstance(aws, Mapping) and _text(aws.get("availability-zone")):
            return _text(aws.get("availability-zone"))
    return metadata.get("zone", "")


def parse_instance(value: object, where: str, *, app: str = "") -> Instance:
    fields = _mapping(value, where)
    instance_app = (_text(fields.get("app")) or app).upper()
    if not instance_app:
        raise EurekaParseError(f"{where}: no `app`")
    instance_id = _text(fields.get("instanceId")) or _text(fields.get("hostName"))
    if not instance_id:
        raise EurekaParseError(f"{where}: no `instanceId` and no `hostName` to identify the instance")
    status = _text(fields.get("status")).upper()
    if not status:
        raise EurekaParseError(f"{where}: no `status`")
    metadata = _metadata(fields.get("metadata"))
    return Instance(app=instance_app, instance_id=instance_id, status=status, ip=_text(fields.get("ipAddr")),
                    port=_port(fields.get("port")), secure_port=_port(fields.get("securePort")),
                    zone=_zone(fields, dict(metadata)), metadata=metadata)


def _applications(body: object, what: str) -> Mapping[str, object]:
    root = _mapping(body, what)
    if "applications" not in root:
        raise EurekaParseError(f"{what}: no `applications` object (is this a Eureka server's /eureka/apps?)")
    return _mapping(root["applications"], f"{what}: applications")


def _instances(apps: Mapping[str, object], what: str) -> Iterable[tuple[object, str, str]]:
    """(instance JSON, its path, its application's name) for every instance of every application."""
    for a, application in enumerate(_list(apps.get("application"), f"{what}: applications.application")):
        app_where = f"{what}: applications.application[{a}]"
        app_fields = _mapping(application, app_where)
        name = _text(app_fields.get("name"))
        for i, instance in enumerate(_list(app_fields.get("instance"), f"{app_where}.instance")):
            yield instance, f"{app_where}.instance[{i}]", name


def parse_applications(body: object, *, what: str = "GET /eureka/apps") -> Registry:
    """The registry in a full fetch. Raises EurekaParseError naming the field at fault."""
    apps = _applications(body, what)
    found: dict[tuple[str, str], Instance] = {}
    for value, where, app in _instances(apps, what):
        instance = parse_instance(value, where, app=app)
        found[instance.key] = instance
    return Registry(tuple(found.values()), hashcode=_text(apps.get("apps__hashcode")),
                    version=_version(apps.get("versions__delta")))


def parse_delta(body: object, *, what: str = "GET /eureka/apps/delta") -> Delta:
    """The changes in a delta fetch, in the order sent. Raises EurekaParseError naming the field at fault."""
    apps = _applications(body, what)
    changes: list[Change] = []
    for value, where, app in _instances(apps, what):
        instance = parse_instance(value, where, app=app)
        action = _text(_mapping(value, where).get("actionType")).upper()
        if action not in _ACTIONS:
            raise EurekaParseError(f"{where}: actionType {action!r} is not one of {', '.join(_ACTIONS)}")
        changes.append(Change(action, instance))
    hashcode = _text(apps.get("apps__hashcode"))
    if not hashcode and changes:
        raise EurekaParseError(f"{what}: applications.apps__hashcode is missing; the delta cannot be checked")
    return Delta(tuple(changes), hashcode, _version(apps.get("versions__delta")))


def apply_delta(registry: Registry, delta: Delta) -> Registry:
    """`registry` with the delta applied: ADDED and MODIFIED replace the instance (or add it), DELETED
    removes it, as Eureka's own client does. The result carries the delta's hashcode as the one to match."""
    instances = {i.key: i for i in registry.instances}
    for change in delta.changes:
        if change.action == ACTION_DELETED:
            instances.pop(change.instance.key, None)
        else:
            instances[change.instance.key] = change.instance
    return Registry(tuple(instances.values()), hashcode=delta.hashcode,
                    version=delta.version if delta.version is not None else registry.version)


def reconcile_hashcode(instances: Iterable[Instance]) -> str:
    """The hashcode Eureka computes over a registry: `<STATUS>_<count>_` for each status present, statuses in
    alphabetical order ("DOWN_1_UP_3_"); "" for an empty registry."""
    counts: dict[str, int] = {}
    for instance in instances:
        counts[instance.status] = counts.get(instance.status, 0) + 1
    return "".join(f"{status}_{counts[status]}_" for status in sorted(counts))


def delta_matches(registry: Registry) -> bool:
    """Whether a registry built by `apply_delta` agrees with the server's hashcode; if not, the local copy
    has drifted (a missed delta, a server switch) and a full fetch must replace it."""
    return reconcile_hashcode(registry.instances) == registry.hashcode


# ------------------------------------------------------------------------------------- to the model


def instance_health(status: str) -> Health | None:
    """The health an instance of this status is served with; None to leave it out (module doc)."""
    return _HEALTH.get(status, Health.UNHEALTHY)


def is_service_name(text: str) -> bool:
    return bool(NAME_RE.fullmatch(text)) and ":" not in text and len(text) <= MAX_NAME_LENGTH


def service_name(instance: Instance) -> str:
    return dict(instance.metadata).get(LOGICAL_NAME_KEY, "").strip() or instance.app.lower()


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def choose_port(instance: Instance, *, prefer_secure: bool) -> int | None:
    plain, secure = instance.port, instance.secure_port
    order = (secure, plain) if prefer_secure else (plain, secure)
    for port in order:
        if port.enabled:
            return port.number
    return None


def instance_endpoint(instance: Instance, options: ParseOptions) -> tuple[str, Endpoint | None, str]:
    """(service name, endpoint or None, note): None with a note when the instance cannot be used, None with
    no note when it is deliberately left out (STARTING)."""
    label = f"instance {instance.instance_id} of {instance.app}"
    name = service_name(instance)
    if not is_service_name(name):
        return name, None, (f"{label}: {name!r} is not a valid service name (lowercase letters, digits, '.', "
                            f"'_' and '-', at most {MAX_NAME_LENGTH} characters)")
    health = instance_health(instance.status)
    if health is None:
        return name, None, ""
    host = _ip(instance.ip)
    if host is None:
        return name, None, (f"{label}: ipAddr {instance.ip!r} is not an IP address (Envoy does not resolve "
                            "host names of EDS endpoints)")
    port = choose_port(instance, prefer_secure=options.prefer_secure)
    if port is None:
        return name, None, f"{label}: neither `port` nor `securePort` is enabled"
    if not 1 <= port <= 65535:
        return name, None, f"{label}: port {port} is not in 1..65535"
    metadata = dict(instance.metadata)
    metadata.pop(LOGICAL_NAME_KEY, None)
    metadata[REGISTRY_KEY] = REGISTRY
    metadata[APP_KEY] = instance.app
    endpoint = Endpoint(host, port, health=health, locality=Locality(zone=instance.zone),
                        metadata=tuple(metadata.items()), source=options.source)
    return name, endpoint, ""


def registry_catalog(registry: Registry | Sequence[Instance], *,
                     options: ParseOptions = ParseOptions()) -> CatalogResult:
    """The Catalog of a registry. Instances are taken in (app, id) order and an address already taken in a
    service is skipped with a note, so two registrations of one host:port cannot make duplicate Envoy hosts
    and the result never depends on the order Eureka sent them in."""
    instances = registry.instances if isinstance(registry, Registry) else tuple(sorted(registry,
                                                                                        key=lambda i: i.key))
    services: dict[str, dict[tuple[str, int], Endpoint]] = {}
    skipped: list[str] = []
    for instance in instances:
        name, endpoint, note = instance_endpoint(instance, options)
        if note:
            skipped.append(note)
        if endpoint is None:
            continue
        endpoints = services.setdefault(name, {})
        if endpoint.address in endpoints:
            skipped.append(f"instance {instance.instance_id} of {instance.app}: {endpoint.host}:"
                           f"{endpoint.port} is already registered by another instance of {name!r}")
            continue
        endpoints[endpoint.address] = endpoint
    catalog = Catalog(tuple(Service(ServiceName(name), tuple(eps.values()))
                            for name, eps in services.items() if eps))
    return CatalogResult(catalog, tuple(skipped))
