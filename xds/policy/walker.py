"""The schema walk: services, endpoints, listeners, routes and backends, with the rules between them.

One pass over the located tree collects every problem (unknown and missing keys, bad values, duplicate
names, backends naming undeclared services, weights that do not sum to 100, listeners sharing a port) and
builds a ServicePolicy, Endpoint, ListenerPolicy or RoutePolicy only from a part without any problem.
`walk` returns the whole result or raises PolicyError: nothing partial ever leaves this module.

Which keys each mapping has, their kinds, bounds and defaults are the declarations of schema.py and
catalog_fields.py (fields.py, issue 8): a plain setting needs nothing here. What remains here is what a
declaration cannot say: lists with rules of their own (unique names and domains, weights summing to 100),
backends naming declared services, the `exact`/`present` choice of a header match, and port conflicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from xds.model.service import Endpoint, Locality
from xds.model.spiffe import valid_segment
from xds.policy.catalog_fields import ENDPOINT, LOCALITY
from xds.policy.checks import Checker, Fields, describe, suggest
from xds.policy.desired import (
    CircuitBreakersSpec,
    DnsMode,
    DnsSpec,
    HealthCheckSpec,
    LbPolicy,
    ListenerKind,
    LoadBalancerSpec,
    LocalitySpec,
    MtlsMode,
    UpstreamConnectionSpec,
)
from xds.policy.dns_fields import MIN_DNS_REFRESH_RATE_S
from xds.policy.document import Map, Node, Pos, Report, Scalar, Seq, first_at, join, text_at, value_pos
from xds.policy.fields import Shape
from xds.policy.grpc_checks import grpc_lb_problems, grpc_retry_problems
from xds.policy.lb_checks import (
    check_load_balancer,
    check_locality,
    check_locality_for_policy,
    check_upstream_connection,
)
from xds.policy.rules import (
    DOMAIN_RE,
    DOMAIN_RULE,
    GROUP_RE,
    MAX_RETRIES,
    VERSION,
    host_port,
    parse_host_port,
)
from xds.policy.schema import (
    AUTHORIZATION_RULE,
    BACKEND,
    COOKIE,
    DEFAULT_DOMAINS,
    DEFAULT_PREFIX,
    DOCUMENT,
    FAULT,
    FAULT_ABORT,
    FAULT_DELAY,
    HASH,
    HEADER,
    LISTENER,
    RETRY,
    ROUTE,
    ROUTE_MATCH,
    ROUTE_TIMEOUTS,
    SERVICE,
    AuthorizationRule,
    BackendRef,
    CookieHash,
    FaultPolicy,
    HashPolicy,
    HeaderMatch,
    ListenerPolicy,
    Policy,
    RetryPolicy,
    RoutePolicy,
    ServicePolicy,
    describe_groups,
    find_port_conflicts,
    per_try_outlasts_route,
)
from xds.policy.tls_fields import LISTENER_CERTIFICATE, LISTENER_TLS, ListenerCertificate, ListenerTlsPolicy
from xds.policy.tracing_fields import TracingPolicy
from xds.policy.weights import TOTAL_WEIGHT

_P = TypeVar("_P")


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    policy: ServicePolicy
    endpoints: tuple[Endpoint, ...] | None  # None: the document says nothing about this service's endpoints


@dataclass(frozen=True, slots=True)
class _ListenerEntry:
    policy: ListenerPolicy
    port_pos: Pos
    path: str


def walk(report: Report, root: Node | None, *, endpoint_source: str | None,
         declared: frozenset[str] = frozenset()) -> tuple[list[ServiceEntry], Policy]:
    """The services and the policy of a document, or PolicyError listing every problem in `report`, also
    those found before the walk (a None root: there was no tree to walk). `endpoint_source` is the
    `source` of the endpoints in the file format, None for a policy-only document, which refuses them.
    `declared` stands for the service names of a document without `services` (a fragment of a larger one
    whose listeners are walked alone, policy/incremental.py); a `services` list replaces it."""
    services: list[ServiceEntry] = []
    listeners: list[ListenerPolicy] = []
    if root is not None:
        walker = _Walker(report, endpoint_source=endpoint_source, declared=declared)
        services, listeners = walker.document(root)
        tracing = walker.tracing
    else:
        tracing = None
    report.raise_if_any()
    policy = Policy(tuple(s.policy for s in services), tuple(listeners), tracing, origin=report.where)
    return services, policy


class _Walker(Checker):
    """Walks the whole document, checking each part against the schema and building the policy (and, in the
    file format, the endpoints) from the parts that passed."""

    def __init__(self, report: Report, *, endpoint_source: str | None,
                 declared: frozenset[str] = frozenset()) -> None:
        super().__init__(report)
        self.tracing: TracingPolicy | None = None  # the top-level `tracing`, set by document()
        # None: a policy-only document, in which endpoints are refused (they come from registries).
        self._endpoint_source = endpoint_source
        # Service names the document declares; backends may only name these (docs/protocol.md case B1).
        self._declared: frozenset[str] = declared

    def document(self, root: Node) -> tuple[list[ServiceEntry], list[ListenerPolicy]]:
        f = self._mapping(root, "", what="the document", keys=DOCUMENT.keys())
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
        services = self._services(*f.at("services"))
        listeners = self._listeners(*f.at("listeners"))
        # The top-level tracing block (issue 14 item 2) is a plain declared mapping, checked by its kind.
        tracing = self._check(DOCUMENT.field("tracing"), *f.at("tracing"))
        self.tracing = tracing if isinstance(tracing, TracingPolicy) else None
        self._grpc_lb(services_node, services, listeners)
        listeners_node, _ = f.at("listeners")
        if isinstance(listeners_node, Seq):
            at = {text_at(item, "name"): index for index, item in enumerate(listeners_node.items)}
            for problem in grpc_retry_problems(listeners):
                index = at[problem.listener]
                self._report.add(listeners_node.items[index].pos,
                                 f"listeners[{index}].routes[{problem.route_index}].retries.retry_on",
                                 problem.message)
        return services, listeners

    def _grpc_lb(self, services_node: Node | None, services: list[ServiceEntry],
                 listeners: list[ListenerPolicy]) -> None:
        """Services a gRPC listener routes to must use a policy gRPC clients implement (grpc_checks.py)."""
        if not isinstance(services_node, Seq):
            return
        at = {text_at(item, "name"): (item, index) for index, item in enumerate(services_node.items)}
        for problem in grpc_lb_problems([entry.policy for entry in services], listeners):
            item, index = at[problem.service]
            self._report.add(value_pos(item, "lb_policy"), f"services[{index}].lb_policy", problem.message)

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
        file_format = self._endpoint_source is not None
        refused = {} if file_format else {f.key: f.spec.refused_because for f in SERVICE.fields
                                          if f.spec.file_only}
        f = self._mapping(node, path, what=what, keys=SERVICE.keys(file_format=file_format),
                          required=SERVICE.required(), refused=refused)
        if f is None:
            return None

        def endpoints(node: Node | None, path: str) -> tuple[Endpoint, ...] | None:
            if node is None or self._endpoint_source is None:
                return None
            # `name` was checked before, as it comes first; the message names the service when it is valid.
            name = values.get("name")
            found = self._endpoints(node, path, service=name if isinstance(name, str) else what,
                                    source=self._endpoint_source)
            spec = values.get("dns")
            if (found is not None and isinstance(spec, DnsSpec) and spec.mode is DnsMode.LOGICAL
                    and len(found) != 1):
                # Envoy takes exactly one endpoint in a LOGICAL_DNS cluster and rejects the cluster
                # otherwise (docs/dns.md); `dns` comes before `endpoints`, so it was read already.
                self._bad(node, path, f"`dns.mode: logical` takes exactly one endpoint (one host name), "
                                      f"got {len(found)}; use `mode: strict` for several")
                return None
            return found

        def dns(node: Node | None, path: str) -> object:
            spec = self._check(SERVICE.field("dns"), node, path)
            rate = spec.refresh_rate_s if isinstance(spec, DnsSpec) else None
            if rate is not None and rate <= MIN_DNS_REFRESH_RATE_S and node is not None:
                self._report.add(value_pos(node, "refresh_rate"), join(path, "refresh_rate"),
                                 f"must be more than {MIN_DNS_REFRESH_RATE_S * 1000:g}ms (Envoy refuses "
                                 f"shorter DNS refresh rates), got {rate * 1000:g}ms")
                return None
            return spec

        def health_check(node: Node | None, path: str) -> object:
            check = self._check(SERVICE.field("health_check"), node, path)
            if (isinstance(check, HealthCheckSpec) and check.grpc is not None and values.get("http2") is False
                    and node is not None):
                # Envoy refuses a gRPC health check on a cluster that does not speak HTTP/2.
                self._report.add(value_pos(node, "grpc"), join(path, "grpc"),
                                 "a gRPC health check needs the service to speak HTTP/2: add "
                                 "`protocol: http2`")
                return None
            return check

        def load_balancer(node: Node | None, path: str) -> object:
            spec = self._check(SERVICE.field("load_balancer"), node, path)
            policy = values.get("lb_policy")
            if isinstance(spec, LoadBalancerSpec) and isinstance(policy, LbPolicy) and node is not None:
                return spec if check_load_balancer(spec, policy, node, path, self._report.add) else None
            return spec

        def authorization(node: Node | None, path: str) -> tuple[AuthorizationRule, ...] | None:
            rules = self._authorization(node, path)
            if rules and values.get("mtls") is MtlsMode.OFF and node is not None:
                # Rules name the identities of client certificates; without mTLS there are none and every
                # request would get 403.
                self._bad(node, path, "needs `mtls: strict` or `mtls: permissive`: rules match the identity "
                                      "of the client's mesh certificate")
                return None
            return rules

        def mtls(node: Node | None, path: str) -> object:
            mode = self._check(SERVICE.field("mtls"), node, path)
            if mode not in (None, MtlsMode.OFF) and values.get("tls") is not None and node is not None:
                # One transport socket per cluster: the mesh's workload certificate or the `tls` of an
                # external service, not both.
                self._bad(node, path, "cannot be combined with `tls` (TLS to an external service); mesh "
                                      "services use mtls, external ones tls")
                return None
            name = values.get("name")
            if (mode not in (None, MtlsMode.OFF) and isinstance(name, str) and not valid_segment(name)
                    and node is not None):
                self._bad(node, path, f"service {name!r} cannot have mTLS: its SPIFFE identity needs a name "
                                      "of letters, digits, '.', '-' and '_' only")
                return None
            return mode

        def locality(node: Node | None, path: str) -> object:
            spec = self._locality_policy(node, path)
            policy = values.get("lb_policy")
            if isinstance(spec, LocalitySpec) and isinstance(policy, LbPolicy) and node is not None:
                return spec if check_locality_for_policy(spec, policy, node, path, self._report.add) else None
            return spec

        values: dict[str, object] = {}
        self._fields(f, SERVICE, {"endpoints": endpoints, "circuit_breakers": self._circuit_breakers,
                                  "health_check": health_check, "load_balancer": load_balancer,
                                  "upstream_connection": self._upstream_connection,
                                  "locality": locality, "mtls": mtls, "dns": dns,
                                  "authorization": authorization}, into=values)
        found = values.pop("endpoints")
        if not self._complete(mark, SERVICE, values):
            return None
        return ServiceEntry(SERVICE.build(values), found if isinstance(found, tuple) else None)

    def _circuit_breakers(self, node: Node | None, path: str) -> object:
        breakers = self._check(SERVICE.field("circuit_breakers"), node, path)
        if (isinstance(breakers, CircuitBreakersSpec) and breakers.retry_budget is not None
                and breakers.max_retries is not None and node is not None):
            # Envoy ignores max_retries once a retry budget is set (circuit_breaker.proto, retry_budget).
            self._report.add(value_pos(node, "max_retries"), join(path, "max_retries"),
                             "has no effect with retry_budget, which replaces it; remove one of them")
            return None
        return breakers

    def _upstream_connection(self, node: Node | None, path: str) -> object:
        spec = self._check(SERVICE.field("upstream_connection"), node, path)
        if isinstance(spec, UpstreamConnectionSpec) and node is not None:
            return spec if check_upstream_connection(spec, node, path, self._report.add) else None
        return spec

    def _locality_policy(self, node: Node | None, path: str) -> object:
        spec = self._check(SERVICE.field("locality"), node, path)
        if isinstance(spec, LocalitySpec) and node is not None:
            return spec if check_locality(spec, node, path, self._report.add) else None
        return spec

    def _authorization(self, node: Node | None, path: str) -> tuple[AuthorizationRule, ...] | None:
        if node is None:
            return ()
        items = self._list(node, path, nonempty="rule (omit 'authorization' to allow every caller)")
        found = [self._nested(AUTHORIZATION_RULE, item, f"{path}[{i}]", what="an authorization rule",
                              default=None) for i, item in enumerate(items or ())]
        rules = tuple(r for r in found if isinstance(r, AuthorizationRule))
        return rules if items is not None and len(rules) == len(found) else None

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
        f = self._mapping(node, path, what=f"an endpoint of service {service!r}", keys=ENDPOINT.keys(),
                          required=ENDPOINT.required())
        if f is None:
            return None
        values = self._fields(f, ENDPOINT, {"address": self._address, "locality": self._locality})
        address = values.pop("address")
        if not self._complete(mark, ENDPOINT, values) or not isinstance(address, tuple):
            return None
        return ENDPOINT.build({**values, "host": address[0], "port": address[1], "source": source})

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
        f = self._mapping(node, path, what="locality", keys=LOCALITY.keys())
        if f is None:
            return None
        values = self._fields(f, LOCALITY)
        return LOCALITY.build(values) if self._complete(mark, LOCALITY, values) else None

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
        f = self._mapping(node, path, what=what, keys=LISTENER.keys(), required=LISTENER.required())
        if f is None:
            return None

        def routes(node: Node | None, path: str) -> tuple[RoutePolicy, ...] | None:
            name = values.get("name")
            return self._routes(node, path, listener=name if isinstance(name, str) else what)

        def inbound_for(node: Node | None, path: str) -> str | None:
            service = self._name(node, path) if node is not None else None
            if service is None or node is None:
                return None
            if service not in self._declared:
                self._bad(node, path, f"unknown service {service!r}: declare it under `services:`"
                                      f"{suggest(service, sorted(self._declared))}")
                return None
            if values.get("tls") is not None:
                self._bad(node, path, "an inbound listener cannot also have `tls` (ingress certificates): "
                                      "it presents the sidecar's workload certificate")
                return None
            groups = values.get("groups")
            if isinstance(groups, frozenset) and groups != {service}:
                # The inbound side presents the workload identity of the group it is served to, which
                # clients check against the service's identity: any other group would fail every handshake.
                self._bad(node, path, f"an inbound listener of service {service!r} is served to node group "
                                      f"{service!r} only; remove `groups` or make it [{service}]")
                return None
            return service

        values: dict[str, object] = {}
        self._fields(f, LISTENER, {"groups": self._groups, "domains": self._domains, "routes": routes,
                                   "tls": self._listener_tls, "inbound_for": inbound_for}, into=values)
        port_node, _ = f.at("port")
        if not self._listener_kind_fits(node, path, f, values):
            return None
        if not self._complete(mark, LISTENER, values):
            return None
        return _ListenerEntry(LISTENER.build(values), (port_node or node).pos, path)

    def _listener_kind_fits(self, node: Node, path: str, f: Fields, values: Mapping[str, object]) -> bool:
        """An `http` listener needs a port; a `grpc` one (issue 11) binds nothing and terminates nothing, so
        it takes no address, port, tls or inbound_for (docs/config.md "Proxyless gRPC")."""
        if values.get("kind", ListenerKind.HTTP) is ListenerKind.HTTP:
            if f.at("port")[0] is None:
                self._bad(node, f"{path}.port", "an http listener needs `port` (or set `kind: grpc` for "
                                                "proxyless gRPC clients)")
                return False
            return True
        extra = [key for key in ("address", "port", "tls", "inbound_for") if f.at(key)[0] is not None]
        if extra:
            keys = ", ".join(f"`{key}`" for key in extra)
            self._bad(node, f"{path}.{extra[0]}",
                      f"a grpc listener has no {keys}: gRPC clients find it by name (xds:///<name>)")
            return False
        return True

    def _listener_tls(self, node: Node | None, path: str) -> ListenerTlsPolicy | None:
        """A listener's `tls` (issue 9 item 7): each SNI name is claimed by one certificate only, and at
        most one certificate claims none (it becomes the default filter chain), since Envoy refuses two
        filter chains with the same match (listener.proto, `filter_chains`)."""
        if node is None:
            return None
        mark = self._mark
        f = self._mapping(node, path, what="tls", keys=LISTENER_TLS.keys(), required=LISTENER_TLS.required())
        if f is None:
            return None
        items_node, items_path = f.at("certificates")
        certificates: list[ListenerCertificate] = []
        claimed: dict[str, int | None] = {}
        default_at: int | None = None
        for index, item in enumerate(self._list(items_node, items_path, nonempty="certificate") or ()):
            item_path = f"{items_path}[{index}]"
            cert = self._part(LISTENER_CERTIFICATE, item, item_path, what="a certificate")
            if cert is None:
                continue
            if not cert.server_names:
                if default_at is not None:
                    self._bad(item, item_path, "only one certificate may leave out server_names (it is "
                                               "served when no other matches); "
                                               f"certificates[{default_at}] already does")
                default_at = index
            for i, name in enumerate(cert.server_names):
                self._duplicate(claimed, name.lower(), item, f"{item_path}.server_names[{i}]",
                                field="server_names", what=f"server name {name!r} in listener tls")
            certificates.append(cert)
        if self._mark != mark or items_node is None:
            return None
        return ListenerTlsPolicy(certificates=tuple(certificates))

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
        f = self._mapping(node, path, what=what, keys=ROUTE.keys(), required=ROUTE.required())
        if f is None:
            return None
        values: dict[str, object] = {}

        def timeouts(node: Node | None, path: str) -> dict[str, object]:
            return self._timeouts(node, path, timeout_given="timeout" in f)

        self._fields(f, ROUTE, {
            # An unnamed route is "route-<index>" (docs/config.md).
            "name": lambda node, path: self._name(node, path, default=f"route-{index}"),
            "match": self._match,
            "timeouts": timeouts,
            "retries": self._retries,
            "hash_policy": self._hash_policies,
            "fault": self._fault,
            "backends": self._backends,
        }, into=values)
        if not self._complete(mark, ROUTE, values):
            return None
        route = ROUTE.build(values)
        limit = per_try_outlasts_route(route)
        if limit is not None:
            node_at, path_at = f.at("retries")
            assert node_at is not None
            self._report.add(value_pos(node_at, "per_try_timeout"), f"{path_at}.per_try_timeout",
                             f"longer than the route's request timeout ({limit:g}s"
                             f"{', Envoy' + chr(39) + 's default' if route.timeout_s is None else ''}): "
                             "the attempt could never be cut and retried")
            return None
        return route

    def _timeouts(self, node: Node | None, path: str, *, timeout_given: bool) -> dict[str, object]:
        """The values of the `timeouts` group by attribute; `request` is the route's `timeout` by another
        name, so giving both is refused rather than one silently winning."""
        if node is None:
            return {"idle_timeout_s": None}
        f = self._mapping(node, path, what="route timeouts", keys=ROUTE_TIMEOUTS.keys())
        if f is None:
            return {"idle_timeout_s": None, "timeout_s": None}
        values = self._fields(f, ROUTE_TIMEOUTS)
        request = values.pop("request")
        request_node, request_path = f.at("request")
        if request_node is not None:
            if timeout_given:
                self._bad(request_node, request_path,
                          "the request timeout is given twice: keep 'timeout' or 'timeouts.request'")
            values["timeout_s"] = request
        return values

    def _retries(self, node: Node | None, path: str) -> int | RetryPolicy | None:
        """`retries: N` exactly as before issue 8, or the mapping form."""
        if not isinstance(node, Map):
            # The same check and words as the integer-only `retries` had (tests/unit/test_policy_load.py).
            return self._integer(node, path, default=0, low=0, high=MAX_RETRIES)
        mark = self._mark
        f = self._mapping(node, path, what="a retry policy", keys=RETRY.keys())
        if f is None:
            return None
        values = self._fields(f, RETRY)
        if self._mark != mark:
            return None
        policy = RETRY.build(values)
        for key, problem in retry_policy_problems(policy):
            at, at_path = f.at(key)
            assert at is not None
            self._bad(at, at_path, problem)
        return policy if self._mark == mark else None

    def _hash_policies(self, node: Node | None, path: str) -> tuple[HashPolicy, ...] | None:
        items = self._list(node, path, nonempty="hash input")
        found = [self._hash_policy(item, f"{path}[{i}]") for i, item in enumerate(items or ())]
        policies = tuple(p for p in found if p is not None)
        return policies if items is not None and len(policies) == len(found) else None

    def _hash_policy(self, node: Node, path: str) -> HashPolicy | None:
        mark = self._mark
        f = self._mapping(node, path, what="a hash policy", keys=HASH.keys())
        if f is None:
            return None
        given = [key for key in HASH.one_of if key in f]
        if len(given) != 1:
            keys = ", ".join(f"'{k}'" for k in HASH.one_of)
            got = f"; got {', '.join(repr(k) for k in given)}" if given else ""
            self._bad(node, path, f"a hash policy needs exactly one of {keys}{got}")
        header_field = HASH.field("header")

        def header(header_node: Node | None, header_path: str) -> object:
            if isinstance(header_node, Scalar) and isinstance(header_node.value, str):
                # Header names are case-insensitive (RFC 9110 section 5.1), as in a header match.
                header_node = Scalar(header_node.value.lower(), header_node.pos)
            return self._check(header_field, header_node, header_path)

        def source_ip(ip_node: Node | None, ip_path: str) -> bool | None:
            if ip_node is None:
                return None
            value = self._boolean(ip_node, ip_path)
            if value is False:
                self._bad(ip_node, ip_path, "must be true; to hash something else, give another key instead")
                return None
            return value

        values = self._fields(f, HASH, {"header": header, "cookie": self._cookie, "source_ip": source_ip})
        return HASH.build(values) if self._complete(mark, HASH, values) else None

    def _fault(self, node: Node | None, path: str) -> FaultPolicy | None:
        if node is None:
            return None
        mark = self._mark
        f = self._mapping(node, path, what="a fault", keys=FAULT.keys())
        if f is None:
            return None
        if "delay" not in f and "abort" not in f:
            self._bad(node, path, "a fault needs 'delay', 'abort' or both")
            return None

        values = self._fields(f, FAULT, {
            "delay": lambda n, p: self._part(FAULT_DELAY, n, p, what="a fault delay"),
            "abort": lambda n, p: self._part(FAULT_ABORT, n, p, what="a fault abort"),
        })
        return FAULT.build(values) if self._mark == mark else None

    def _part(self, shape: Shape[_P], node: Node | None, path: str, *, what: str) -> _P | None:
        """An optional nested mapping of plain declared fields."""
        if node is None:
            return None
        mark = self._mark
        f = self._mapping(node, path, what=what, keys=shape.keys(), required=shape.required())
        if f is None:
            return None
        values = self._fields(f, shape)
        return shape.build(values) if self._complete(mark, shape, values) else None

    def _cookie(self, node: Node | None, path: str) -> CookieHash | None:
        if node is None:
            return None
        mark = self._mark
        f = self._mapping(node, path, what="a cookie hash", keys=COOKIE.keys(), required=COOKIE.required())
        if f is None:
            return None
        values = self._fields(f, COOKIE)
        return COOKIE.build(values) if self._complete(mark, COOKIE, values) else None

    def _match(self, node: Node | None, path: str) -> dict[str, object]:
        """The values of the `match` group, by attribute of RoutePolicy (None where invalid)."""
        if node is None:
            return {"prefix": DEFAULT_PREFIX, "headers": ()}
        f = self._mapping(node, path, what="a route match", keys=ROUTE_MATCH.keys())
        if f is None:
            return {"prefix": None, "headers": None}
        return self._fields(f, ROUTE_MATCH, {"headers": self._headers})

    def _headers(self, node: Node | None, path: str) -> tuple[HeaderMatch, ...] | None:
        items = self._list(node, path, nonempty=None)
        found = [self._header(item, f"{path}[{i}]") for i, item in enumerate(items or ())]
        headers = tuple(h for h in found if h is not None)
        return headers if items is not None and len(headers) == len(found) else None

    def _header(self, node: Node, path: str) -> HeaderMatch | None:
        mark = self._mark
        f = self._mapping(node, path, what="a header match", keys=HEADER.keys(), required=HEADER.required())
        if f is None:
            return None
        name_field = HEADER.field("name")

        def name(name_node: Node | None, name_path: str) -> object:
            if isinstance(name_node, Scalar) and isinstance(name_node.value, str):
                # Header names are case-insensitive (RFC 9110 section 5.1); Envoy compares them lowercased.
                name_node = Scalar(name_node.value.lower(), name_node.pos)
            return self._check(name_field, name_node, name_path)

        def exact(exact_node: Node | None, exact_path: str) -> str | None:
            # The rule between `exact` and `present` (HEADER.one_of) is checked here, where `exact` comes.
            if ("exact" in f) == ("present" in f):
                self._bad(node, path, "a header match needs exactly one of 'exact' or 'present'")
                return None
            return self._string(exact_node, exact_path) if exact_node is not None else None

        def present(present_node: Node | None, present_path: str) -> None:
            if "exact" in f or present_node is None:
                return
            if self._boolean(present_node, present_path) is False:
                self._bad(present_node, present_path, "must be true; to match requests without the header, "
                                                      "write present: true, invert: true")

        values = self._fields(f, HEADER, {"name": name, "exact": exact, "present": present})
        values.pop("present")
        return HEADER.build(values) if self._complete(mark, HEADER, values) else None

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
        f = self._mapping(node, path, what="a backend", keys=BACKEND.keys(), required=BACKEND.required())
        if f is None:
            return None
        values = self._fields(f, BACKEND)
        service = values["service"]
        if isinstance(service, str) and service not in self._declared:
            # A typo would otherwise become an empty cluster and 503s. A service that another source
            # provides is declared too, with no `endpoints` key.
            service_node, service_path = f.at("service")
            assert service_node is not None
            self._bad(service_node, service_path,
                      f"unknown service {service!r}: declare it under `services:` (without `endpoints` if "
                      f"a registry provides them){suggest(service, sorted(self._declared))}")
        return BACKEND.build(values) if self._complete(mark, BACKEND, values) else None


def retry_policy_problems(policy: RetryPolicy) -> list[tuple[str, str]]:
    """(key, problem) for keys of a retry policy that make no sense together (issue 8, docs/config.md)."""
    problems: list[tuple[str, str]] = []
    if policy.backoff_max_s is not None:
        if policy.backoff_base_s is None:
            problems.append(("backoff_max", "needs 'backoff_base' (Envoy requires a base interval)"))
        elif policy.backoff_max_s < policy.backoff_base_s:
            problems.append(("backoff_max", f"must be at least backoff_base ({policy.backoff_base_s:g}s)"))
    if policy.retriable_status_codes and "retriable-status-codes" not in policy.retry_on:
        problems.append(("retriable_status_codes",
                         "only apply with 'retriable-status-codes' in retry_on; add it there"))
    if policy.host_selection_attempts is not None and not policy.different_host:
        problems.append(("host_selection_attempts", "only applies with 'different_host: true'"))
    return problems


def _label(kind: str, node: Node, *, default: str = "") -> str:
    """"service 'web'" when the entry has a usable name, so messages read like the document."""
    name = text_at(node, "name")
    if name is not None:
        return f"{kind} {name!r}"
    return f"{kind} {default}" if default else f"a {kind}"
