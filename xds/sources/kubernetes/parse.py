"""Pure mapping from Kubernetes Services and EndpointSlices to the model: no I/O, no clock, table-tested.

Objects arrive as the API's JSON (dicts); `parse_service` and `parse_slice` keep what the mapping needs in
small frozen values, and `service_endpoints` joins one Service with its slices. The rules (docs/kubernetes.md
has the operator's table):

- Names. One catalog service per TCP Service port, named `<service>.<namespace>:<port>` with the Service's
  port number (`web.shop:80`), so two ports of one Service are two clusters. The annotation
  `xds.dev/service-name: <logical>` names one port `<logical>` instead, so that it merges with the same
  name from Consul or a file (model/catalog.py) and one policy can split traffic between them: the only
  port of a one-port Service, or on a Service with several, the port named (or numbered) by
  `xds.dev/service-port`. The logical name must follow the policy's service-name rule (policy/load.py);
  one that does not, or a multi-port Service without `xds.dev/service-port`, keeps the default names and
  is reported. UDP and SCTP ports are skipped: Envoy clusters here carry TCP.
- Slices. Every EndpointSlice labelled `kubernetes.io/service-name: <service>` belongs to that Service
  (docs/protocol.md R35, Kubernetes docs "EndpointSlices"); a slice port joins the Service port with the same
  name (both unnamed for a one-port Service). Slices of addressType FQDN (deprecated) are skipped: EDS needs
  IP addresses. Only an endpoint's first address is used: "No semantics are defined for additional addresses
  beyond the first, and kube-proxy does not look at them" (EndpointSlice API reference, `addresses`).
- Health (R35; EndpointSlice API reference, `EndpointConditions`): `ready` (nil means true) -> HEALTHY;
  else `serving` (nil means true) and `terminating` (nil means false) -> DRAINING, so Envoy lets open
  requests finish on a pod that is shutting down (Envoy Gateway and Istio do the same); else the endpoint
  is left out.
- Duplicates. The same address:port may sit in two slices of one Service while the controller moves it
  ("Duplicate endpoints" in the EndpointSlice docs; kube-proxy's EndpointSliceCache de-duplicates them).
  One endpoint is kept per address:port: a ready copy over a draining one, else the copy from the slice
  whose name sorts first, so the result never depends on arrival order.
- Locality: `zone` -> Locality(zone=...). The region is a Node label (`topology.kubernetes.io/region`) and
  slices do not carry it; reading Nodes would need more RBAC for one field, so the region stays empty.
- Protocol: `appProtocol` `http2`, `grpc`, `h2c` or `kubernetes.io/h2c` (on the Service port or the slice
  port) -> metadata `protocol: http2`, which makes the cluster speak HTTP/2 upstream (model/service.py).
- Metadata for subsets: `registry: kubernetes`, `k8s.namespace: <namespace>`, `k8s.service: <service>`, so
  one policy can tell Kubernetes endpoints from the VMs of a merged service (docs/kubernetes.md, "Migrating
  from VMs").
- Headless Services (clusterIP None) have slices like any other and need nothing special. ExternalName
  Services have no slices: each port becomes one endpoint whose host is the `externalName`, with metadata
  `address_type: fqdn`; a host name makes the cluster a STRICT_DNS one that Envoy resolves itself
  (translate/clusters.py). Its endpoint source is `kubernetes:<namespace>/<service>`; slice endpoints have
  `kubernetes:<namespace>/<slice>`.

A malformed object raises KubeParseError and is skipped by the watcher with a note; an entry that cannot be
used (a bad address, an unknown port) is skipped with a note. One broken object never hides the others
(docs/protocol.md R38).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from xds.model.service import PROTOCOL_KEY, Catalog, Endpoint, Health, Locality, Service, ServiceName
from xds.policy.load import MAX_NAME_LENGTH

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
LOGICAL_NAME_ANNOTATION = "xds.dev/service-name"
LOGICAL_PORT_ANNOTATION = "xds.dev/service-port"
HTTP2_APP_PROTOCOLS = frozenset({"http2", "grpc", "h2c", "kubernetes.io/h2c"})
ADDRESS_TYPE_KEY = "address_type"
REGISTRY_KEY = "registry"
NAMESPACE_KEY = "k8s.namespace"
SERVICE_KEY = "k8s.service"
REGISTRY = "kubernetes"
SOURCE_PREFIX = "kubernetes:"

# The policy's service-name rule (policy/load.py `_NAME_RE`), repeated so that parse stays independent of
# the loader's private names; tests/unit/test_kube_parse.py checks the two agree.
_LOGICAL_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?")
# RFC 1123 subdomain, the rule for ExternalName (Service API reference, `externalName`).
_DNS_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class KubeParseError(ValueError):
    """An object whose shape is wrong (no metadata.name, a spec that is not a mapping, ...)."""


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str  # "" when unnamed (only allowed on a one-port Service)
    port: int
    _: KW_ONLY
    protocol: str = "TCP"
    app_protocol: str = ""


@dataclass(frozen=True, slots=True)
class KubeService:
    namespace: str
    name: str
    _: KW_ONLY
    ports: tuple[ServicePort, ...] = ()
    type: str = "ClusterIP"
    external_name: str = ""  # type ExternalName only
    logical_name: str = ""  # the xds.dev/service-name annotation, as written
    logical_port: str = ""  # the xds.dev/service-port annotation, as written


@dataclass(frozen=True, slots=True)
class SlicePort:
    name: str
    port: int | None  # None: "ports are not restricted", unusable for a cluster
    _: KW_ONLY
    protocol: str = "TCP"
    app_protocol: str = ""


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    address: str  # the first address, as given
    _: KW_ONLY
    ready: bool | None = None  # None: the field was absent (nil)
    serving: bool | None = None
    terminating: bool | None = None
    zone: str = ""


@dataclass(frozen=True, slots=True)
class KubeSlice:
    namespace: str
    name: str
    _: KW_ONLY
    service_name: str = ""  # from the kubernetes.io/service-name label; "" when absent
    address_type: str = "IPv4"
    ports: tuple[SlicePort, ...] = ()
    endpoints: tuple[SliceEndpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceResult:
    """What one Service contributes: (catalog name, endpoints) per usable port, and notes on what was
    skipped."""

    services: tuple[tuple[str, tuple[Endpoint, ...]], ...]
    skipped: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------- primitives


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _port_number(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    return None


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name) of an object; KubeParseError without a name."""
    metadata = _mapping(obj.get("metadata"))
    name = _text(metadata.get("name"))
    if not name:
        raise KubeParseError("an object without metadata.name")
    return _text(metadata.get("namespace")), name


def resource_version(obj: Mapping[str, Any]) -> str:
    return _text(_mapping(obj.get("metadata")).get("resourceVersion"))


def catalog_name(namespace: str, name: str, port: int) -> str:
    """`<service>.<namespace>:<port>`: the catalog name of one Service port (module doc, "Names")."""
    return f"{name}.{namespace}:{port}"


def is_http2(app_protocol: str) -> bool:
    return app_protocol in HTTP2_APP_PROTOCOLS


def is_logical_name(text: str) -> bool:
    """Whether `text` is usable as a service name in policies (the policy loader's rule)."""
    return bool(_LOGICAL_NAME_RE.fullmatch(text)) and len(text) <= MAX_NAME_LENGTH


def endpoint_health(*, ready: bool | None, serving: bool | None, terminating: bool | None) -> Health | None:
    """HEALTHY, DRAINING, or None (leave the endpoint out), per docs/protocol.md R35 (module doc,
    "Health")."""
    if ready is None or ready:
        return Health.HEALTHY
    if (serving is None or serving) and terminating is True:
        return Health.DRAINING
    return None


# ---------------------------------------------------------------------------------------- objects


def parse_service(obj: Mapping[str, Any]) -> KubeService:
    """A core/v1 Service. KubeParseError when the object is not one."""
    namespace, name = object_key(obj)
    metadata = _mapping(obj.get("metadata"))
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise KubeParseError(f"Service {namespace}/{name} has no spec")
    ports: list[ServicePort] = []
    raw_ports = spec.get("ports")
    for raw in raw_ports if isinstance(raw_ports, list) else ():
        fields = _mapping(raw)
        number = _port_number(fields.get("port"))
        if number is None:
            continue
        ports.append(ServicePort(_text(fields.get("name")), number,
                                 protocol=_text(fields.get("protocol")) or "TCP",
                                 app_protocol=_text(fields.get("appProtocol"))))
    annotations = _mapping(metadata.get("annotations"))
    return KubeService(namespace, name, ports=tuple(ports), type=_text(spec.get("type")) or "ClusterIP",
                       external_name=_text(spec.get("externalName")),
                       logical_name=_text(annotations.get(LOGICAL_NAME_ANNOTATION)).strip(),
                       logical_port=_text(annotations.get(LOGICAL_PORT_ANNOTATION)).strip())


def parse_slice(obj: Mapping[str, Any]) -> KubeSlice:
    """A discovery.k8s.io/v1 EndpointSlice. KubeParseError when the object is not one."""
    namespace, name = object_key(obj)
    labels = _mapping(_mapping(obj.get("metadata")).get("labels"))
    ports: list[SlicePort] = []
    raw_ports = obj.get("ports")
    for raw in raw_ports if isinstance(raw_ports, list) else ():
        fields = _mapping(raw)
        ports.append(SlicePort(_text(fields.get("name")), _port_number(fields.get("port")),
                               protocol=_text(fields.get("protocol")) or "TCP",
                               app_protocol=_text(fields.get("appProtocol"))))
    endpoints: list[SliceEndpoint] = []
    raw_endpoints = obj.get("endpoints")
    for raw in raw_endpoints if isinstance(raw_endpoints, list) else ():
        fields = _mapping(raw)
        addresses = fields.get("addresses")
        first = addresses[0] if isinstance(addresses, list) and addresses else None
        if not isinstance(first, str):
            continue
        conditions = _mapping(fields.get("conditions"))
        endpoints.append(SliceEndpoint(first, ready=_flag(conditions.get("ready")),
                                       serving=_flag(conditions.get("serving")),
                                       terminating=_flag(conditions.get("terminating")),
                                       zone=_text(fields.get("zone"))))
    return KubeSlice(namespace, name, service_name=_text(labels.get(SERVICE_NAME_LABEL)),
                     address_type=_text(obj.get("addressType")) or "IPv4", ports=tuple(ports),
                     endpoints=tuple(endpoints))


# ------------------------------------------------------------------------------------------ names


def port_names(service: KubeService) -> tuple[dict[int, str], tuple[str, ...]]:
    """Catalog name per TCP Service port number, and notes (module doc, "Names")."""
    label = f"Service {service.namespace}/{service.name}"
    notes: list[str] = []
    tcp = [p for p in service.ports if p.protocol == "TCP"]
    for port in service.ports:
        if port.protocol != "TCP":
            notes.append(f"{label}: port {port.port}/{port.protocol} skipped (only TCP ports are served)")
    names = {p.port: catalog_name(service.namespace, service.name, p.port) for p in tcp}
    logical = service.logical_name
    if not logical:
        return names, tuple(notes)
    if not is_logical_name(logical):
        notes.append(f"{label}: annotation {LOGICAL_NAME_ANNOTATION}={logical!r} ignored: a service name "
                     f"must be lowercase letters, digits, '.', '_' and '-', at most {MAX_NAME_LENGTH} "
                     "characters, starting and ending with a letter or digit")
        return names, tuple(notes)
    chosen: ServicePort | None = None
    if service.logical_port:
        matches = [p for p in tcp if p.name == service.logical_port or str(p.port) == service.logical_port]
        if not matches:
            notes.append(f"{label}: annotation {LOGICAL_PORT_ANNOTATION}={service.logical_port!r} names no "
                         "TCP port of the Service; the logical name is not used")
        else:
            chosen = matches[0]
    elif len(tcp) == 1:
        chosen = tcp[0]
    elif tcp:
        notes.append(f"{label}: annotation {LOGICAL_NAME_ANNOTATION} on a Service with {len(tcp)} ports "
                     f"needs {LOGICAL_PORT_ANNOTATION} (a port name or number) to say which port it names")
    if chosen is not None:
        names[chosen.port] = logical
    return names, tuple(notes)


# -------------------------------------------------------------------------------------- endpoints


def _metadata(service: KubeService, *, http2: bool, fqdn: bool = False) -> tuple[tuple[str, str], ...]:
    pairs = [(REGISTRY_KEY, REGISTRY), (NAMESPACE_KEY, service.namespace), (SERVICE_KEY, service.name)]
    if http2:
        pairs.append((PROTOCOL_KEY, "http2"))
    if fqdn:
        pairs.append((ADDRESS_TYPE_KEY, "fqdn"))
    return tuple(pairs)


def _canonical_ip(text: str, address_type: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if (address_type == "IPv4") != (ip.version == 4):
        return None
    return str(ip)


def _external_endpoints(service: KubeService, names: Mapping[int, str]
                        ) -> tuple[list[tuple[str, tuple[Endpoint, ...]]], list[str]]:
    label = f"Service {service.namespace}/{service.name}"
    host = service.external_name.strip().lower().rstrip(".")
    if not host or not _DNS_NAME_RE.fullmatch(host) or len(host) > 253:
        return [(n, ()) for n in names.values()], [
            f"{label}: externalName {service.external_name!r} is not a DNS name; no endpoint"]
    if not names:
        return [], [f"{label}: an ExternalName Service needs at least one TCP port in spec.ports to be "
                    "served (the port Envoy connects to)"]
    out: list[tuple[str, tuple[Endpoint, ...]]] = []
    for port in service.ports:
        if port.port not in names:
            continue
        endpoint = Endpoint(host, port.port, metadata=_metadata(service, http2=is_http2(port.app_protocol),
                                                                fqdn=True),
                            source=f"{SOURCE_PREFIX}{service.namespace}/{service.name}")
        out.append((names[port.port], (endpoint,)))
    return out, []


def service_endpoints(service: KubeService, slices: Iterable[KubeSlice]) -> ServiceResult:
    """(catalog name, endpoints) per TCP port of `service`, from every slice labelled with its name, with
    health, de-duplication and metadata as in the module doc."""
    names, notes_tuple = port_names(service)
    notes = list(notes_tuple)
    if service.type == "ExternalName":
        pairs, more = _external_endpoints(service, names)
        return ServiceResult(tuple(pairs), tuple(notes + more))
    by_name = {p.name: p for p in service.ports if p.port in names}
    chosen: dict[int, dict[tuple[str, int], Endpoint]] = {number: {} for number in names}
    for piece in sorted(slices, key=lambda s: s.name):
        where = f"EndpointSlice {piece.namespace}/{piece.name}"
        if piece.address_type not in ("IPv4", "IPv6"):
            notes.append(f"{where}: addressType {piece.address_type} skipped (EDS needs IP addresses)")
            continue
        source = f"{SOURCE_PREFIX}{piece.namespace}/{piece.name}"
        for slice_port in piece.ports:
            service_port = by_name.get(slice_port.name)
            if service_port is None:
                if slice_port.protocol == "TCP":
                    notes.append(f"{where}: port {slice_port.name or '(unnamed)'} matches no TCP port of "
                                 f"Service {service.namespace}/{service.name}")
                continue
            if slice_port.port is None:
                notes.append(f"{where}: port {slice_port.name or '(unnamed)'} has no port number")
                continue
            http2 = is_http2(service_port.app_protocol or slice_port.app_protocol)
            table = chosen[service_port.port]
            for entry in piece.endpoints:
                health = endpoint_health(ready=entry.ready, serving=entry.serving,
                                         terminating=entry.terminating)
                if health is None:
                    continue
                host = _canonical_ip(entry.address, piece.address_type)
                if host is None:
                    notes.append(f"{where}: address {entry.address!r} is not an {piece.address_type} "
                                 "address; skipped")
                    continue
                address = (host, slice_port.port)
                earlier = table.get(address)
                if earlier is not None and not (earlier.health is Health.DRAINING
                                                and health is Health.HEALTHY):
                    continue  # the slice sorting first wins, unless this copy is ready and that one is not
                table[address] = Endpoint(host, slice_port.port, health=health,
                                          locality=Locality(zone=entry.zone),
                                          metadata=_metadata(service, http2=http2), source=source)
    found = tuple((names[number], tuple(table.values())) for number, table in sorted(chosen.items()))
    return ServiceResult(found, tuple(dict.fromkeys(notes)))


def assemble_catalog(results: Sequence[ServiceResult]) -> Catalog:
    """One Catalog from per-Service results, given in (namespace, name) order. A catalog name produced by
    several Services (a logical name on Services of two namespaces) becomes one service with the union of
    their endpoints; an address seen twice keeps its first entry. Services without ready endpoints are
    kept, empty: the Service exists, so its cluster is known and simply has nothing to send to."""
    merged: dict[str, dict[tuple[str, int], Endpoint]] = {}
    for result in results:
        for name, endpoints in result.services:
            by_address = merged.setdefault(name, {})
            for endpoint in endpoints:
                by_address.setdefault(endpoint.address, endpoint)
    return Catalog(tuple(Service(ServiceName(name), tuple(eps.values())) for name, eps in merged.items()))
