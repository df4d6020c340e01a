"""The schema walk: services, endpoints, listeners, routes and backends, with the rules between them.

One pass over the located tree collects every problem (unknown and missing keys, bad values, duplicate
names, backends naming undeclared services, weights that do not sum to 100, listeners sharing a port) and
builds a ServicePolicy, Endpoint, ListenerPolicy or RoutePolicy only from a part without any problem.
`walk` returns the whole result or raises PolicyError: nothing partial ever leaves this module.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from xds.model.service import Endpoint, Health, Locality
from xds.policy.checks import Checker, describe, suggest
from xds.policy.document import Node, Pos, Report, Scalar, Seq, first_at, text_at
from xds.policy.rules import (
    DOMAIN_RE,
    DOMAIN_RULE,
    GROUP_RE,
    HEADER_NAME_RE,
    HEADER_NAME_RULE,
    HEALTH_VALUES,
    LB_POLICIES,
    MAX_CONNECT_TIMEOUT_S,
    MAX_ENDPOINT_WEIGHT,
    MAX_RETRIES,
    MAX_ROUTE_TIMEOUT_S,
    PAIR_KEY_RULE,
    PAIR_VALUE_RE,
    PREFIX_RE,
    PREFIX_RULE,
    PROTOCOLS,
    TEXT_RE,
    TEXT_RULE,
    VERSION,
    host_port,
    parse_host_port,
)
from xds.policy.schema import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_DOMAINS,
    DEFAULT_LB_POLICY,
    DEFAULT_LISTENER_ADDRESS,
    DEFAULT_PREFIX,
    BackendRef,
    HeaderMatch,
    ListenerPolicy,
    Policy,
    RoutePolicy,
    ServicePolicy,
    describe_groups,
    find_port_conflicts,
)
from xds.policy.weights import TOTAL_WEIGHT


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    policy: ServicePolicy
    endpoints: tuple[Endpoint, ...] | None  # None: the document says nothing about this service's endpoints


@dataclass(frozen=True, slots=True)
class _ListenerEntry:
    policy: ListenerPolicy
    port_pos: Pos
    path: str


def walk(report: Report, root: Node | None, *, endpoint_source: str | None
         ) -> tuple[list[ServiceEntry], Policy]:
    """The services and the policy of a document, or PolicyError listing every problem in `report`, also
    those found before the walk (a None root: there was no tree to walk). `endpoint_source` is the
    `source` of the endpoints in the file format, None for a policy-only document, which refuses them."""
    services: list[ServiceEntry] = []
    listeners: list[ListenerPolicy] = []
    if root is not None:
        services, listeners = _Walker(report, endpoint_source=endpoint_source).document(root)
    report.raise_if_any()
    policy = Policy(tuple(s.policy for s in services), tuple(listeners), origin=report.where)
    return services, policy


class _Walker(Checker):
    """Walks the whole document, checking each part against the schema and building the policy (and, in the
    file format, the endpoints) from the parts that passed."""

    def __init__(self, report: Report, *, endpoint_source: str | None) -> None:
        super().__init__(report)
        # None: a policy-only document, in which endpoints are refused (they come from registries).
        self._endpoint_source = endpoint_source
        # Service names the document declares; backends may only name these (docs/protocol.md case B1).
        self._declared: frozenset[str] = frozenset()

    def document(self, root: Node) -> tuple[list[ServiceEntry], list[ListenerPolicy]]:
        f = self._mapping(root, "", what="the document", keys=("version", "services", "listeners"))
        if f is None:
            return [], []
        version, _ = f.at("version")
        supported = isinstance(version, Scalar) and type(version.value) is int and version.value == VERSION
        if version is not None and not supported:
            self._bad(version, "version",
                      f"unsupported version {describe(version)}; only {VERSION} is supported")
        services_node, _ = f.at("services")
        if isinstance(services_node, Seq):
            self._declared = frozenset(
                name for item in services_node.items if (name := text_at(item, "name")) is not None)
        return self._services(*f.at("services")), self._listeners(*f.at("listeners"))

    def _services(self, node: Node | None, path: str) -> list[ServiceEntry]:
        out: list[ServiceEntry] = []
        seen: dict[str, int | None] = {}
        for index, item in enumerate(self._list(node, path, nonempty=None) or ()):
            item_path = f"{path}[{index}]"
            entry = self._service(item, item_path)
            name = text_at(item, "name")
            duplicate = self._duplicate(seen, name, item, f"{item_path}.name", field="name",
                                        what=f"service {name!r}")
            if entry is not None and not duplicate:
                out.append(entry)
        return out

    def _service(self, node: Node, path: str) -> ServiceEntry | None:
        mark = self._mark
        what = _label("service", node)
        keys: tuple[str, ...] = ("name", "lb_policy", "connect_timeout", "protocol")
        refused: dict[str, str] = {}
        if self._endpoint_source is None:
            refused["endpoints"] = ("endpoints are not accepted in a policy-only document; "
                                    "they come from the service registry")
        else:
            keys += ("endpoints",)
        f = self._mapping(node, path, what=what, keys=keys, required=("name",), refused=refused)
        if f is None:
            return None
        name = self._name(*f.at("name"))
        lb = self._choice(*f.at("lb_policy"), default=DEFAULT_LB_POLICY, choices=LB_POLICIES)
        timeout_s = self._duration(*f.at("connect_timeout"), default=DEFAULT_CONNECT_TIMEOUT_S,
                                   max_s=MAX_CONNECT_TIMEOUT_S)
        http2 = self._choice(*f.at("protocol"), default=False, choices=PROTOCOLS)
        endpoints: tuple[Endpoint, ...] | None = None
        if "endpoints" in f and self._endpoint_source is not None:
            endpoints = self._endpoints(*f.at("endpoints"), service=name or what,
                                        source=self._endpoint_source)
        if self._mark != mark or name is None or lb is None or timeout_s is None or http2 is None:
            return None
        return ServiceEntry(ServicePolicy(name, lb, connect_timeout_s=timeout_s, http2=http2), endpoints)

    def _endpoints(self, node: Node | None, path: str, *, service: str,
                   source: str) -> tuple[Endpoint, ...] | None:
        items = self._list(node, path, nonempty=None)
        if items is None:
            return None
        out: list[Endpoint] = []
        seen: dict[tuple[str, int], int | None] = {}
        for index, item in enumerate(items):
            endpoint = self._endpoint(item, f"{path}[{index}]", service=service, source=source)
            host, port, problem = parse_host_port(text_at(item, "address") or "")
            address = None if problem else (host, port)
            duplicate = self._duplicate(seen, address, item, f"{path}[{index}].address", field="address",
                                        what=f"endpoint {host_port(host, port)} in service {service!r}")
            if endpoint is not None and not duplicate:
                out.append(endpoint)
        return tuple(out)

    def _endpoint(self, node: Node, path: str, *, service: str, source: str) -> Endpoint | None:
        mark = self._mark
        f = self._mapping(node, path, what=f"an endpoint of service {service!r}",
                          keys=("address", "weight", "health", "locality", "metadata"), required=("address",))
        if f is None:
            return None
        address = self._address(*f.at("address"))
        weight = self._integer(*f.at("weight"), default=1, low=1, high=MAX_ENDPOINT_WEIGHT)
        health = self._choice(*f.at("health"), default=Health.HEALTHY, choices=HEALTH_VALUES)
        locality = self._locality(*f.at("locality"))
        metadata = self._pairs(*f.at("metadata"), what="metadata", value_pattern=TEXT_RE,
                               value_rule=TEXT_RULE)
        if (self._mark != mark or address is None or weight is None or health is None or locality is None
                or metadata is None):
            return None
        return Endpoint(host=address[0], port=address[1], weight=weight, health=health, locality=locality,
                        metadata=metadata, source=source)

    def _address(self, node: Node | None, path: str) -> tuple[str, int] | None:
        text = self._string(node, path)
        if node is None or text is None:
            return None
        host, port, problem = parse_host_port(text)
        if problem:
            self._bad(node, path, f"{problem}, got {text!r}")
            return None
        return host, port

    def _locality(self, node: Node | None, path: str) -> Locality | None:
        if node is None:
            return Locality()
        mark = self._mark
        f = self._mapping(node, path, what="locality", keys=("region", "zone", "sub_zone"))
        if f is None:
            return None
        region = self._string(*f.at("region"), default="")
        zone = self._string(*f.at("zone"), default="")
        sub_zone = self._string(*f.at("sub_zone"), default="")
        if self._mark != mark or region is None or zone is None or sub_zone is None:
            return None
        return Locality(region=region, zone=zone, sub_zone=sub_zone)

    def _listeners(self, node: Node | None, path: str) -> list[ListenerPolicy]:
        entries: list[_ListenerEntry] = []
        seen: dict[str, int | None] = {}
        for index, item in enumerate(self._list(node, path, nonempty=None) or ()):
            item_path = f"{path}[{index}]"
            entry = self._listener(item, item_path)
            name = text_at(item, "name")
            duplicate = self._duplicate(seen, name, item, f"{item_path}.name", field="name",
                                        what=f"listener {name!r}")
            if entry is not None and not duplicate:
                entries.append(entry)
        for first, second in find_port_conflicts([e.policy for e in entries]):
            a, b = entries[first], entries[second]
            self._report.add(b.port_pos, f"{b.path}.port",
                             f"{b.policy.address}:{b.policy.port} is already used by listener "
                             f"{a.policy.name!r}{first_at(a.port_pos[0])} "
                             f"{describe_groups(a.policy.groups, b.policy.groups)}")
        return [e.policy for e in entries]

    def _listener(self, node: Node, path: str) -> _ListenerEntry | None:
        mark = self._mark
        what = _label("listener", node)
        f = self._mapping(node, path, what=what,
                          keys=("name", "address", "port", "groups", "domains", "routes"),
                          required=("name", "port", "routes"))
        if f is None:
            return None
        name = self._name(*f.at("name"))
        address = self._ip(*f.at("address"))
        port = self._integer(*f.at("port"), low=1, high=65535)
        groups = self._groups(*f.at("groups"))
        domains = self._domains(*f.at("domains"))
        routes = self._routes(*f.at("routes"), listener=name or what)
        port_node, _ = f.at("port")
        if (self._mark != mark or name is None or address is None or port is None or port_node is None
                or domains is None or routes is None):
            return None
        policy = ListenerPolicy(name, address, port=port, groups=groups, domains=domains, routes=routes)
        return _ListenerEntry(policy, port_node.pos, path)

    def _ip(self, node: Node | None, path: str) -> str | None:
        text = self._string(node, path, default=DEFAULT_LISTENER_ADDRESS)
        if node is None or text is None:
            return text
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            self._bad(node, path, f"must be an IP address such as 0.0.0.0 or ::, got {text!r}")
            return None

    def _groups(self, node: Node | None, path: str) -> frozenset[str] | None:
        if node is None:
            return None  # every group
        items = self._list(node, path, nonempty="group (omit 'groups' to serve every group)")
        groups = [self._string(item, f"{path}[{i}]", pattern=GROUP_RE,
                               rule="must be a non-empty group name without control characters")
                  for i, item in enumerate(items or ())]
        return frozenset(g for g in groups if g is not None)

    def _domains(self, node: Node | None, path: str) -> tuple[str, ...] | None:
        if node is None:
            return DEFAULT_DOMAINS
        mark = self._mark
        domains: list[str] = []
        for i, item in enumerate(self._list(node, path, nonempty="domain") or ()):
            domain = self._string(item, f"{path}[{i}]", pattern=DOMAIN_RE, rule=DOMAIN_RULE)
            if domain is None:
                continue
            # Envoy rejects a route configuration that names one domain twice.
            if domain.lower() in (d.lower() for d in domains):
                self._bad(item, f"{path}[{i}]", f"duplicate domain {domain!r}")
                continue
            domains.append(domain)
        return tuple(domains) if self._mark == mark else None

    def _routes(self, node: Node | None, path: str, *, listener: str) -> tuple[RoutePolicy, ...] | None:
        mark = self._mark
        routes: list[RoutePolicy] = []
        seen: dict[str, int | None] = {}
        for index, item in enumerate(self._list(node, path, nonempty="route") or ()):
            route = self._route(item, f"{path}[{index}]", index=index, listener=listener)
            # An unnamed route is "route-<index>", which an explicit name may also use.
            name = text_at(item, "name") or f"route-{index}"
            duplicate = self._duplicate(seen, name, item, f"{path}[{index}].name", field="name",
                                        what=f"route name {name!r} in listener {listener!r}")
            if route is not None and not duplicate:
                routes.append(route)
        return tuple(routes) if self._mark == mark and node is not None else None

    def _route(self, node: Node, path: str, *, index: int, listener: str) -> RoutePolicy | None:
        mark = self._mark
        what = _label("route", node, default=str(index)) + f" of listener {listener!r}"
        f = self._mapping(node, path, what=what, keys=("name", "match", "timeout", "retries", "backends"),
                          required=("backends",))
        if f is None:
            return None
        name = self._name(*f.at("name"), default=f"route-{index}")
        prefix, headers = self._match(*f.at("match"))
        timeout_s = self._duration(*f.at("timeout"), max_s=MAX_ROUTE_TIMEOUT_S)
        retries = self._integer(*f.at("retries"), default=0, low=0, high=MAX_RETRIES)
        backends = self._backends(*f.at("backends"))
        if (self._mark != mark or name is None or prefix is None or headers is None or retries is None
                or backends is None):
            return None
        return RoutePolicy(name, prefix, headers=headers, backends=backends, timeout_s=timeout_s,
                           retries=retries)

    def _match(self, node: Node | None, path: str) -> tuple[str | None, tuple[HeaderMatch, ...] | None]:
        if node is None:
            return DEFAULT_PREFIX, ()
        f = self._mapping(node, path, what="a route match", keys=("prefix", "headers"))
        if f is None:
            return None, None
        prefix = self._string(*f.at("prefix"), default=DEFAULT_PREFIX, pattern=PREFIX_RE, rule=PREFIX_RULE)
        headers_node, headers_path = f.at("headers")
        items = self._list(headers_node, headers_path, nonempty=None)
        found = [self._header(item, f"{headers_path}[{i}]") for i, item in enumerate(items or ())]
        headers = tuple(h for h in found if h is not None)
        return prefix, headers if items is not None and len(headers) == len(found) else None

    def _header(self, node: Node, path: str) -> HeaderMatch | None:
        mark = self._mark
        f = self._mapping(node, path, what="a header match", keys=("name", "exact", "present", "invert"),
                          required=("name",))
        if f is None:
            return None
        name_node, name_path = f.at("name")
        if isinstance(name_node, Scalar) and isinstance(name_node.value, str):
            # Header names are case-insensitive (RFC 9110 section 5.1); Envoy compares them lowercased.
            name_node = Scalar(name_node.value.lower(), name_node.pos)
        name = self._string(name_node, name_path, pattern=HEADER_NAME_RE, rule=HEADER_NAME_RULE)
        exact: str | None = None
        if ("exact" in f) == ("present" in f):
            self._bad(node, path, "a header match needs exactly one of 'exact' or 'present'")
        elif "exact" in f:
            exact = self._string(*f.at("exact"))
        else:
            present_node, present_path = f.at("present")
            if self._boolean(present_node, present_path) is False and present_node is not None:
                self._bad(present_node, present_path, "must be true; to match requests without the header, "
                                                      "write present: true, invert: true")
        invert = self._boolean(*f.at("invert"), default=False)
        if self._mark != mark or name is None or invert is None:
            return None
        return HeaderMatch(name, exact, invert=invert)

    def _backends(self, node: Node | None, path: str) -> tuple[BackendRef, ...] | None:
        if node is None:
            return None  # required; already reported
        items = self._list(node, path, nonempty="backend")
        if items is None:
            return None
        found = [self._backend(item, f"{path}[{i}]") for i, item in enumerate(items)]
        backends = tuple(b for b in found if b is not None)
        if len(backends) != len(found):
            return None
        total = sum(b.weight for b in backends)
        if len(backends) > 1 and total != TOTAL_WEIGHT:
            # Percentages, as in Istio's VirtualService: a split summing to 90 is a mistake to report,
            # not a ratio to guess at (docs/protocol.md case B1).
            self._bad(node, path, f"backend weights are percentages and must sum to {TOTAL_WEIGHT}, "
                                  f"got {total} ({' + '.join(str(b.weight) for b in backends)})")
            return None
        if total == 0:
            self._bad(node, path, "the only backend of a route needs a weight > 0")
            return None
        return backends

    def _backend(self, node: Node, path: str) -> BackendRef | None:
        mark = self._mark
        f = self._mapping(node, path, what="a backend", keys=("service", "subset", "weight"),
                          required=("service",))
        if f is None:
            return None
        service = self._name(*f.at("service"))
        subset = self._pairs(*f.at("subset"), what="subset", value_pattern=PAIR_VALUE_RE,
                             value_rule=f"values {PAIR_KEY_RULE}")
        weight = self._integer(*f.at("weight"), default=1, low=0)
        if service is not None and service not in self._declared:
            # A typo would otherwise become an empty cluster and 503s. A service that another source
            # provides is declared too, with no `endpoints` key.
            service_node, service_path = f.at("service")
            assert service_node is not None
            self._bad(service_node, service_path,
                      f"unknown service {service!r}: declare it under `services:` (without `endpoints` if "
                      f"a registry provides them){suggest(service, sorted(self._declared))}")
        if self._mark != mark or service is None or subset is None or weight is None:
            return None
        return BackendRef(service, subset, weight=weight)


def _label(kind: str, node: Node, *, default: str = "") -> str:
    """"service 'web'" when the entry has a usable name, so messages read like the document."""
    name = text_at(node, "name")
    if name is not None:
        return f"{kind} {name!r}"
    return f"{kind} {default}" if default else f"a {kind}"
