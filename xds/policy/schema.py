"""Policy: what the operator wants done with the services in the catalog, free of where it came from.

A Policy holds per-service settings (load balancing, connect timeout, protocol) and listeners with their
routes. It carries no endpoints: those come from the catalog. The same Policy shape is loaded from the YAML
file source, and later from Consul KV and Kubernetes CRDs; loaders validate and report located problems,
while the invariants that `apply_policy` relies on are re-checked here so no invalid Policy can exist.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field

from xds.policy.catalog_fields import ENDPOINT
from xds.policy.cluster_fields import (
    CIRCUIT_BREAKERS,
    HEALTH_CHECK,
    LOCALITY_POLICY,
    OUTLIER_DETECTION,
)
from xds.policy.desired import (
    CircuitBreakersSpec,
    DnsSpec,
    HealthCheckSpec,
    LbPolicy,
    ListenerKind,
    LoadBalancerSpec,
    LocalitySpec,
    MtlsMode,
    OutlierDetectionSpec,
    UpstreamConnectionSpec,
)
from xds.policy.dns_fields import DNS
from xds.policy.errors import PolicyError, Problem
from xds.policy.fields import (
    Boolean,
    Choice,
    CountOr,
    Duration,
    Exactly,
    FieldSpec,
    Integer,
    IpAddress,
    ListOf,
    Name,
    Nested,
    Pairs,
    Text,
    declare,
    erase,
    shape,
)
from xds.policy.lb_fields import LOAD_BALANCER, UPSTREAM_CONNECTION
from xds.policy.rules import (
    COOKIE_NAME_RE,
    COOKIE_NAME_RULE,
    DOMAIN_RE,
    DOMAIN_RULE,
    GROUP_RE,
    HEADER_NAME_ANY_CASE_RE,
    HEADER_NAME_RE,
    HEADER_NAME_RULE,
    HTTP_METHODS,
    IDENTITY_RE,
    IDENTITY_RULE,
    LB_POLICIES,
    MAX_BACKOFF_S,
    MAX_CONNECT_TIMEOUT_S,
    MAX_COOKIE_TTL_S,
    MAX_FAULT_DELAY_S,
    MAX_HOST_SELECTION_ATTEMPTS,
    MAX_NAME_LENGTH,
    MAX_RETRIES,
    MAX_ROUTE_TIMEOUT_S,
    MTLS_MODES,
    PAIR_KEY_RULE,
    PAIR_VALUE_RE,
    PREFIX_RE,
    PREFIX_RULE,
    PROTOCOLS,
    QUERY_PARAMETER_RE,
    QUERY_PARAMETER_RULE,
    RETRY_ON_CONDITIONS,
    VERSION,
)
from xds.policy.tls_fields import LISTENER_TLS, UPSTREAM_TLS, ListenerTlsPolicy, UpstreamTlsPolicy
from xds.policy.tracing_fields import TRACING, TracingPolicy

# Each YAML key is declared once, in the `metadata` of the field it fills (fields.py, issue 8): its kind and
# bounds, its one-line doc (docs/config.md and the schemas), and its default, which is the field's default.

DEFAULT_LB_POLICY = LbPolicy.ROUND_ROBIN
DEFAULT_CONNECT_TIMEOUT_S = 1.0
DEFAULT_LISTENER_ADDRESS = "0.0.0.0"
DEFAULT_DOMAINS: tuple[str, ...] = ("*",)
DEFAULT_PREFIX = "/"
ENVOY_ROUTE_TIMEOUT_S = 15.0  # RouteAction.timeout when unset
# What the integer form `retries: N` retries on (translate/routes.py); the mapping form defaults to the same.
DEFAULT_RETRY_ON: tuple[str, ...] = ("5xx", "reset", "connect-failure")

_NAME_DOC = ("lowercase letters, digits, `.`, `_`, `-`, starting and ending with a letter or digit, at most "
             f"{MAX_NAME_LENGTH} characters")


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """Match a request header: equal to `exact`, or merely present when `exact` is None."""

    name: str = field(metadata=declare(
        "name", Text(HEADER_NAME_RE, HEADER_NAME_RULE, schema_pattern=HEADER_NAME_ANY_CASE_RE),
        "Header name; case does not matter (`X-Canary` is `x-canary`). Pseudo-headers like `:authority` are "
        "allowed.", required=True))
    exact: str | None = field(default=None, metadata=declare(
        "exact", Text(), "The header must have exactly this value. Quote it: `exact: \"yes\"` (unquoted "
        "`yes` is a boolean).", shown_default=""))
    _: KW_ONLY
    invert: bool = field(default=False, metadata=declare(
        "invert", Boolean(), "`true` negates the condition: `{name: x-debug, present: true, invert: true}` "
        "matches requests *without* `x-debug`."))


HEADER = shape(HeaderMatch, "A request header condition: exactly one of `exact` and `present`.", extra=[
    ("exact", FieldSpec("present", Boolean(only_true=True), "`true`: the header must be present, any value.",
                        shown_default="")),
], one_of=("exact", "present"))


@dataclass(frozen=True, slots=True)
class BackendRef:
    """A route target: a service, optionally narrowed to the endpoints whose metadata match `subset`."""

    service: str = field(metadata=declare(
        "service", Name(),
        "A service declared under `services:` in the same document. A service whose endpoints come from a "
        "registry (or that has none yet) is declared without an `endpoints` key. An undeclared name is an "
        "error (with a \"did you mean\" suggestion), because a typo would otherwise become an empty cluster "
        "and 503s.", required=True))
    subset: tuple[tuple[str, str], ...] = field(default=(), metadata=declare(
        "subset", Pairs(PAIR_VALUE_RE, f"values {PAIR_KEY_RULE}", "A metadata value."),
        "Only the endpoints whose metadata contain all these key/value pairs, e.g. `{version: v2}`. Keys "
        "and values cannot contain whitespace, `,`, `=` or `|`.", shown_default="none"))
    _: KW_ONLY
    # Relative to the other backends of the same route.
    weight: int = field(default=1, metadata=declare(
        "weight", Integer(0),
        "With one backend: any weight above 0 (it gets all the traffic). With several: percentages, "
        "integers >= 0 that must sum to exactly 100."))

    def __post_init__(self) -> None:
        # Sorted so that {a: 1, b: 2} and {b: 2, a: 1} name the same cluster.
        object.__setattr__(self, "subset", tuple(sorted(self.subset)))
        if self.weight < 0:
            raise ValueError(f"backend weight must be >= 0, got {self.weight}")


BACKEND = shape(BackendRef, "Where matching requests go.")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The mapping form of a route's `retries` (issue 8). Unset keys leave Envoy's defaults."""

    num_retries: int | None = field(default=None, metadata=declare(
        "num_retries", Integer(0, MAX_RETRIES), f"How many retries, 0 to {MAX_RETRIES}.",
        shown_default="Envoy's (1)"))
    retry_on: tuple[str, ...] = field(default=DEFAULT_RETRY_ON, metadata=declare(
        "retry_on", ListOf(Choice({c: c for c in RETRY_ON_CONDITIONS}), item_doc="An Envoy retry condition.",
                           nonempty=True, list_type="set"),
        "Envoy's retry conditions: " + ", ".join(f"`{c}`" for c in RETRY_ON_CONDITIONS) + ".",
        shown_default="`[5xx, reset, connect-failure]` (as `retries: N`)"))
    per_try_timeout_s: float | None = field(default=None, metadata=declare(
        "per_try_timeout", Duration(MAX_ROUTE_TIMEOUT_S),
        "Timeout of each attempt; a hanging attempt is cut and retried. At most the route's request timeout.",
        shown_default="none"))
    backoff_base_s: float | None = field(default=None, metadata=declare(
        "backoff_base", Duration(MAX_BACKOFF_S),
        "Base interval of Envoy's jittered exponential backoff between retries, at most "
        f"{MAX_BACKOFF_S:g} s.",
        shown_default="Envoy's (25 ms)"))
    backoff_max_s: float | None = field(default=None, metadata=declare(
        "backoff_max", Duration(MAX_BACKOFF_S),
        "Longest backoff interval; needs `backoff_base` and is at least it.",
        shown_default="10 x `backoff_base`"))
    retriable_status_codes: tuple[int, ...] = field(default=(), metadata=declare(
        "retriable_status_codes", ListOf(Integer(100, 599), item_doc="An HTTP status code.", nonempty=True,
                                         list_type="set"),
        "Status codes to retry; only with `retriable-status-codes` in `retry_on`.", shown_default="none"))
    different_host: bool = field(default=False, metadata=declare(
        "different_host", Boolean(),
        "`true`: a retry avoids the hosts already tried (Envoy's `previous_hosts` retry predicate)."))
    host_selection_attempts: int | None = field(default=None, metadata=declare(
        "host_selection_attempts", Integer(1, MAX_HOST_SELECTION_ATTEMPTS),
        f"How often Envoy picks again to find an untried host, 1 to {MAX_HOST_SELECTION_ATTEMPTS}; only with "
        "`different_host: true`.", shown_default="Envoy's (1)"))


RETRY = shape(RetryPolicy, "The mapping form of `retries`.")


@dataclass(frozen=True, slots=True)
class CookieHash:
    name: str = field(metadata=declare(
        "name", Text(COOKIE_NAME_RE, COOKIE_NAME_RULE), "The cookie to hash.", required=True))
    ttl_s: float | None = field(default=None, metadata=declare(
        "ttl", Duration(MAX_COOKIE_TTL_S),
        "With a ttl Envoy sets the cookie (this lifetime) on a response to a request without it, so the "
        "client sticks; without one only a cookie the client already has is hashed.", shown_default="none"))
    path: str | None = field(default=None, metadata=declare(
        "path", Text(PREFIX_RE, PREFIX_RULE), "The `Path` of a cookie Envoy sets.", shown_default="none"))


COOKIE = shape(CookieHash, "Hash a cookie.")


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """One input to the hash of ring_hash or maglev balancing: exactly one of the four sources."""

    header: str | None = field(default=None, metadata=declare(
        "header", Text(HEADER_NAME_RE, HEADER_NAME_RULE, schema_pattern=HEADER_NAME_ANY_CASE_RE),
        "Hash this request header (case does not matter).", shown_default=""))
    cookie: CookieHash | None = field(default=None, metadata=declare(
        "cookie", Nested(erase(COOKIE)), "Hash this cookie (below).", shown_default=""))
    source_ip: bool | None = field(default=None, metadata=declare(
        "source_ip", Boolean(only_true=True), "`true`: hash the client's IP address.", shown_default=""))
    query_parameter: str | None = field(default=None, metadata=declare(
        "query_parameter", Text(QUERY_PARAMETER_RE, QUERY_PARAMETER_RULE),
        "Hash this query parameter.", shown_default=""))
    _: KW_ONLY
    terminal: bool = field(default=False, metadata=declare(
        "terminal", Boolean(), "`true`: when this one yields a hash, the ones after it are skipped."))


HASH = shape(HashPolicy, "A hash input: exactly one of `header`, `cookie`, `source_ip`, `query_parameter`.",
             one_of=("header", "cookie", "source_ip", "query_parameter"))


@dataclass(frozen=True, slots=True)
class FaultDelay:
    duration_s: float = field(metadata=declare(
        "duration", Duration(MAX_FAULT_DELAY_S),
        f"How long to hold a request, at most {MAX_FAULT_DELAY_S:g} s.", required=True))
    percent: int = field(metadata=declare(
        "percent", Integer(0, 100), "The share of requests delayed, 0 to 100.", required=True))


FAULT_DELAY = shape(FaultDelay, "Delay requests before they go upstream.")


@dataclass(frozen=True, slots=True)
class FaultAbort:
    status: int = field(metadata=declare(
        "status", Integer(200, 599), "The HTTP status Envoy answers with, 200 to 599.", required=True))
    percent: int = field(metadata=declare(
        "percent", Integer(0, 100), "The share of requests answered so, 0 to 100.", required=True))


FAULT_ABORT = shape(FaultAbort, "Answer requests with an error instead of sending them upstream.")


@dataclass(frozen=True, slots=True)
class FaultPolicy:
    """Fault injection for rehearsing failover (issue 8): Envoy's HTTP fault filter, per route."""

    delay: FaultDelay | None = field(default=None, metadata=declare(
        "delay", Nested(erase(FAULT_DELAY)), "Delay a share of requests (below).", shown_default="none"))
    abort: FaultAbort | None = field(default=None, metadata=declare(
        "abort", Nested(erase(FAULT_ABORT)), "Fail a share of requests (below).", shown_default="none"))


FAULT = shape(FaultPolicy, "Injected faults: `delay`, `abort` or both.")


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    name: str = field(metadata=declare(
        "name", Name(), "Unique within the listener (index counted from 0).",
        shown_default="`route-<index>`"))
    prefix: str = field(default=DEFAULT_PREFIX, metadata=declare(
        "prefix", Text(PREFIX_RE, PREFIX_RULE),
        "Path prefix; must start with `/`. Plain prefix matching: `/api` also matches `/apis`. Put longer "
        "prefixes first.", group="match"))
    _: KW_ONLY
    headers: tuple[HeaderMatch, ...] = field(default=(), metadata=declare(
        "headers", ListOf(Nested(erase(HEADER))),
        "List of header conditions, all of which must hold (below).", shown_default="none", group="match"))
    timeout_s: float | None = field(default=None, metadata=declare(
        "timeout", Duration(MAX_ROUTE_TIMEOUT_S),
        f"Whole-request timeout, more than 0 and at most {MAX_ROUTE_TIMEOUT_S / 3600:g} h.",
        shown_default="Envoy's (15 s)"))
    idle_timeout_s: float | None = field(default=None, metadata=declare(
        "idle", Duration(MAX_ROUTE_TIMEOUT_S),
        "Cancel a request whose stream sends nothing in either direction for this long.",
        shown_default="Envoy's (the connection manager's stream idle timeout, 5 min)", group="timeouts"))
    retries: int | RetryPolicy = field(default=0, metadata=declare(
        "retries", CountOr(Integer(0, MAX_RETRIES), erase(RETRY)),
        f"Retries on connect failures, resets and 5xx responses, 0 to {MAX_RETRIES}; or a mapping (below) "
        "with conditions, per-try timeout, backoff and host choice."))
    hash_policy: tuple[HashPolicy, ...] = field(default=(), metadata=declare(
        "hash_policy", ListOf(Nested(erase(HASH)), nonempty=True),
        "Session affinity: what to hash, tried in order (below). Only `ring_hash` and `maglev` services use "
        "it (`xds validate` warns otherwise).", shown_default="none"))
    fault: FaultPolicy | None = field(default=None, metadata=declare(
        "fault", Nested(erase(FAULT)), "Inject delays and errors into a share of requests (below).",
        shown_default="none"))
    backends: tuple[BackendRef, ...] = field(default=(), metadata=declare(
        "backends", ListOf(Nested(erase(BACKEND)), nonempty=True),
        "Where matching requests go, at least one (below).", required=True))

    def __post_init__(self) -> None:
        # apply_policy normalises weights and would fail on these; refuse to build such a route at all.
        if not self.backends:
            raise ValueError(f"route {self.name!r} needs at least one backend")
        if sum(b.weight for b in self.backends) == 0:
            raise ValueError(f"route {self.name!r}: backend weights sum to 0")


ROUTE_MATCH = shape(RoutePolicy, "What requests the route takes.", group="match")
ROUTE_TIMEOUTS = shape(RoutePolicy, "Timeouts of the route's requests.", group="timeouts", extra=[
    ("", FieldSpec("request", Duration(MAX_ROUTE_TIMEOUT_S),
                   "The whole-request timeout; the same as `timeout`, give one of them.",
                   shown_default="Envoy's (15 s)")),
])
ROUTE = shape(RoutePolicy, "One route; the first that matches wins.",
              groups={"match": erase(ROUTE_MATCH), "timeouts": erase(ROUTE_TIMEOUTS)})


def per_try_outlasts_route(route: RoutePolicy) -> float | None:
    """The route timeout a per-try timeout exceeds, or None. An attempt that outlives the whole request is
    never cut, so no retry can follow it: a mistake, refused (issue 8). Unset route timeout: Envoy's 15 s."""
    if not isinstance(route.retries, RetryPolicy) or route.retries.per_try_timeout_s is None:
        return None
    limit = ENVOY_ROUTE_TIMEOUT_S if route.timeout_s is None else route.timeout_s
    return limit if route.retries.per_try_timeout_s > limit else None


@dataclass(frozen=True, slots=True)
class AuthorizationRule:
    """Who may call a service (issue 9): any of `identities`, narrowed to a path prefix and methods."""

    identities: tuple[str, ...] = field(metadata=declare(
        "identities", ListOf(Text(IDENTITY_RE, IDENTITY_RULE),
                             item_doc="A SPIFFE ID, or a node group name for that group's workload identity.",
                             nonempty=True, list_type="set"),
        "Callers allowed by this rule: node group names (`frontend` is "
        "`spiffe://<trust-domain>/group/frontend`) or SPIFFE IDs, matched against the URI SAN of the "
        "client's mesh certificate.", required=True))
    prefix: str | None = field(default=None, metadata=declare(
        "prefix", Text(PREFIX_RE, PREFIX_RULE), "Only paths starting with this prefix.",
        shown_default="any path"))
    methods: tuple[str, ...] = field(default=(), metadata=declare(
        "methods", ListOf(Choice({m: m for m in HTTP_METHODS}), item_doc="An HTTP method.", nonempty=True,
                          list_type="set"),
        "Only these HTTP methods: " + ", ".join(f"`{m}`" for m in HTTP_METHODS) + ".",
        shown_default="any method"))


AUTHORIZATION_RULE = shape(AuthorizationRule,
                           "One rule: who may call, optionally on which paths and methods.")


@dataclass(frozen=True, slots=True)
class ListenerPolicy:
    """An HTTP listener, served to the node groups in `groups` (every group when None)."""

    name: str = field(metadata=declare(
        "name", Name(), "Unique listener name (same rules as service names). It also names the listener's "
        "route configuration and virtual host.", required=True))
    address: str = field(default=DEFAULT_LISTENER_ADDRESS, metadata=declare(
        "address", IpAddress(), "IP address to listen on (IPv4 or IPv6, no brackets: `::`)."))
    _: KW_ONLY
    port: int | None = field(default=None, metadata=declare(
        "port", Integer(1, 65535), "1 to 65535, required for an `http` listener; a `grpc` one has none. Two "
        "listeners that one node group would receive cannot use the same address and port.",
        shown_default="none (required unless `kind: grpc`)"))
    kind: ListenerKind = field(default=ListenerKind.HTTP, metadata=declare(
        "kind", Choice({"http": ListenerKind.HTTP, "grpc": ListenerKind.GRPC}),
        "`http`: an Envoy listener on `address` and `port`. `grpc`: a listener for proxyless gRPC clients "
        "(an `api_listener`), which they look up by the target `xds:///<name>`; it has no `address`, `port`, "
        "`tls` or `inbound_for`, only gRPC clients receive it and Envoys never do (docs/config.md, "
        "\"Proxyless gRPC\"). Its routes use gRPC semantics: `timeout` is the stream's maximum duration and "
        "`retries` retry on status UNAVAILABLE.", shown_default="`http`"))
    groups: frozenset[str] | None = field(default=None, metadata=declare(
        "groups", ListOf(Text(GROUP_RE), item_doc="A node group.", nonempty=True),
        "Node groups that receive this listener. A node's group is its Envoy `node.cluster` unless the "
        "server is started with another `--node-group-key`. At least one name when given; omit the key for "
        "every group.", shown_default="every group"))
    domains: tuple[str, ...] = field(default=DEFAULT_DOMAINS, metadata=declare(
        "domains", ListOf(Text(DOMAIN_RE, DOMAIN_RULE),
                          item_doc="A host name, optionally with one '*' wildcard and a port.", nonempty=True,
                          list_type="set"),
        "Host names the routes apply to: `example.com`, `*.example.com`, `example.*`, `example.com:8080`, "
        "or `*`. No duplicates (case-insensitive).", shown_default='`["*"]`'))
    routes: tuple[RoutePolicy, ...] = field(default=(), metadata=declare(
        "routes", ListOf(Nested(erase(ROUTE)), nonempty=True),
        "At least one route, tried in order; the first that matches wins.", required=True))
    tls: ListenerTlsPolicy | None = field(default=None, metadata=declare(
        "tls", Nested(erase(LISTENER_TLS)),
        "Terminate TLS with these certificates, chosen by the client's SNI (below).", shown_default="off"))
    inbound_for: str | None = field(default=None, metadata=declare(
        "inbound_for", Name(),
        "This listener is the inbound side of this service's sidecar (issue 9): it is served to the node "
        "group of that name (the sidecar's `node.cluster`), presents that group's workload certificate and "
        "applies the service's `mtls` and `authorization`. Its routes go to the local application, a "
        "service of its own. `groups`, if given, must be exactly that group.", shown_default="none"))
    tracing: TracingPolicy | None = field(default=None, metadata=declare(
        "tracing", Nested(erase(TRACING)),
        "Trace the listener's HTTP requests (below, docs/tracing.md); replaces the top-level `tracing` for "
        "this listener.", shown_default="the top-level `tracing`"))

    def __post_init__(self) -> None:
        # A sidecar's node group is the service it fronts (docs/security.md): the inbound listener of a
        # service goes to that group only, which is also what keeps port conflicts within the group.
        if self.inbound_for is not None and self.groups is None:
            object.__setattr__(self, "groups", frozenset({self.inbound_for}))

    def serves(self, group: str) -> bool:
        return self.groups is None or group in self.groups


LISTENER = shape(ListenerPolicy, "An HTTP listener and its routes.",
                 required_unless=(("port", "kind", ListenerKind.GRPC.value),))


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    """How to talk to one service, whichever registry its endpoints come from."""

    name: str = field(metadata=declare(
        "name", Name(), f"Unique service name: {_NAME_DOC}. Routes refer to services by this name, and it is "
        "merged with the same name from other sources (Consul, Kubernetes).", required=True))
    lb_policy: LbPolicy = field(default=DEFAULT_LB_POLICY, metadata=declare(
        "lb_policy", Choice(LB_POLICIES),
        "How Envoy picks an endpoint: " + ", ".join(f"`{w}`" for w in LB_POLICIES) + "."))
    _: KW_ONLY
    connect_timeout_s: float = field(default=DEFAULT_CONNECT_TIMEOUT_S, metadata=declare(
        "connect_timeout", Duration(MAX_CONNECT_TIMEOUT_S),
        "Upstream TCP connect timeout. A duration (below), more than 0 and at most "
        f"{MAX_CONNECT_TIMEOUT_S:g} s."))
    http2: bool = field(default=False, metadata=declare(
        "protocol", Choice(PROTOCOLS),
        "What Envoy speaks to the endpoints: `http1` or `http2` (HTTP/2 without TLS, \"h2c\")."))
    outlier_detection: OutlierDetectionSpec | None = field(default=None, metadata=declare(
        "outlier_detection", Nested(erase(OUTLIER_DETECTION)),
        "Eject endpoints that keep failing (below); `{}` turns it on with Envoy's defaults.",
        shown_default="off"))
    circuit_breakers: CircuitBreakersSpec | None = field(default=None, metadata=declare(
        "circuit_breakers", Nested(erase(CIRCUIT_BREAKERS)),
        "Limits on connections, requests and retries to the service (below).", shown_default="Envoy's"))
    health_check: HealthCheckSpec | None = field(default=None, metadata=declare(
        "health_check", Nested(erase(HEALTH_CHECK)),
        "Envoy checks each endpoint itself and stops sending traffic to one that fails, even while its "
        "registry calls it healthy (below).", shown_default="off"))
    load_balancer: LoadBalancerSpec | None = field(default=None, metadata=declare(
        "load_balancer", Nested(erase(LOAD_BALANCER)),
        "Knobs of the `lb_policy` (below); the policy itself is still chosen by `lb_policy`.",
        shown_default="Envoy's"))
    upstream_connection: UpstreamConnectionSpec | None = field(default=None, metadata=declare(
        "upstream_connection", Nested(erase(UPSTREAM_CONNECTION)),
        "Idle timeout, requests per connection and TCP keepalive of Envoy's connections to the endpoints "
        "(below).", shown_default="Envoy's"))
    locality: LocalitySpec | None = field(default=None, metadata=declare(
        "locality", Nested(erase(LOCALITY_POLICY)),
        "Failover relative to each proxy's own zone and region, and the overprovisioning factor (below).",
        shown_default="off"))
    dns: DnsSpec | None = field(default=None, metadata=declare(
        "dns", Nested(erase(DNS)),
        "How Envoy resolves the service's host-name endpoints (below, docs/dns.md); read only when an "
        "endpoint is a host name rather than an IP address.", shown_default="strict, Envoy's refresh"))
    tls: UpstreamTlsPolicy | None = field(default=None, metadata=declare(
        "tls", Nested(erase(UPSTREAM_TLS)),
        "Envoy speaks TLS to the endpoints, checking their certificate against a CA bundle and names "
        "(below).", shown_default="off (plaintext)"))
    mtls: MtlsMode = field(default=MtlsMode.OFF, metadata=declare(
        "mtls", Choice(MTLS_MODES),
        "Sidecar mTLS with the mesh CA's workload certificates (issue 9): `strict`, the service's inbound "
        "listener requires a client certificate; `permissive`, it also accepts plaintext; `off`. Unless off, "
        "clients originate mTLS to the service and accept only its identity "
        "`spiffe://<trust-domain>/group/<service>`."))
    authorization: tuple[AuthorizationRule, ...] = field(default=(), metadata=declare(
        "authorization", ListOf(Nested(erase(AUTHORIZATION_RULE)), nonempty=True),
        "Who may call the service, enforced on its inbound listener (below); a request no rule allows gets "
        "403. Needs `mtls: strict` or `permissive`.", shown_default="allow all"))


SERVICE = shape(ServicePolicy, "Settings for one service, whichever registry its endpoints come from.",
                extra=[
    (None, FieldSpec(
        "endpoints", ListOf(Nested(erase(ENDPOINT))),
        "The service's instances (below). Without this key the entry only carries settings for a service "
        "whose endpoints come from another source, and it does not appear in the catalog. `endpoints: []` "
        "says the service exists and has no instances.", shown_default="absent", file_only=True,
        refused_because="endpoints are not accepted in a policy-only document; they come from the service "
                        "registry")),
])


@dataclass(frozen=True, slots=True)
class Policy:
    services: tuple[ServicePolicy, ...] = field(default=(), metadata=declare(
        "services", ListOf(Nested(erase(SERVICE)), list_type="map", map_keys=("name",)),
        "List of services (below).", shown_default="`[]`"))
    listeners: tuple[ListenerPolicy, ...] = field(default=(), metadata=declare(
        "listeners", ListOf(Nested(erase(LISTENER)), list_type="map", map_keys=("name",)),
        "List of listeners (below).", shown_default="`[]`"))
    tracing: TracingPolicy | None = field(default=None, metadata=declare(
        "tracing", Nested(erase(TRACING)),
        "Trace the HTTP requests of every listener without a `tracing` of its own (below, docs/tracing.md).",
        shown_default="off"))
    _: KW_ONLY
    # Where this policy was loaded from ("file:/etc/xds/catalog.yaml"); only used in error messages, so two
    # policies with the same content compare equal wherever they came from.
    origin: str = field(default="", compare=False)


DOCUMENT = shape(Policy, "A document: service settings and listeners (docs/config.md).", extra=[
    ("", FieldSpec("version", Exactly(VERSION), f"Format version. Only `{VERSION}` exists.",
                   shown_default=f"`{VERSION}`")),
])


def _groups_overlap(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    if a is None or b is None:
        return True
    return not a.isdisjoint(b)


def find_port_conflicts(listeners: Sequence[ListenerPolicy]) -> list[tuple[int, int]]:
    """Pairs (earlier, later) of listener indexes that one node group would receive on the same
    address and port; Envoy would reject the second listener (bind conflict), so loaders refuse them.
    Only the first conflict of each later listener is reported."""
    by_socket: dict[tuple[str, int | None], list[int]] = defaultdict(list)
    conflicts: list[tuple[int, int]] = []
    for index, listener in enumerate(listeners):
        earlier = by_socket[(listener.address, listener.port)]
        if listener.port is None:
            continue  # a gRPC listener binds nothing
        for other in earlier:
            if _groups_overlap(listeners[other].groups, listener.groups):
                conflicts.append((other, index))
                break
        earlier.append(index)
    return conflicts


def describe_groups(a: frozenset[str] | None, b: frozenset[str] | None) -> str:
    """Human wording of the groups two listeners share, for conflict messages."""
    if a is None:
        if b is None:
            return "in every node group"
        shared = b
    else:
        shared = a if b is None else a & b
    return "in node group " + ", ".join(repr(g) for g in sorted(shared))


def merge_policies(policies: Sequence[Policy]) -> Policy:
    """Combine policies from several sources, in the operator's source order.

    A service configured twice keeps the earlier settings (mirroring `merge_catalogs`). Listeners cannot be
    merged that way, since a listener silently vanishing is worse than a refusal: a listener name used twice,
    or one socket claimed twice for a node group, raises PolicyError naming both origins.
    """
    if len(policies) == 1:
        return policies[0]
    services: dict[str, ServicePolicy] = {}
    listeners: list[ListenerPolicy] = []
    origins: list[str] = []
    owner: dict[str, str] = {}
    problems: list[Problem] = []
    # Like a service, the global tracing block of the earliest source that has one wins (issue 14).
    tracing = next((p.tracing for p in policies if p.tracing is not None), None)
    for policy in policies:
        for service in policy.services:
            services.setdefault(service.name, service)
        for listener in policy.listeners:
            if listener.name in owner:
                other = owner[listener.name] or "another policy"
                problems.append(Problem(policy.origin or "policy", None, None,
                                        f"listener {listener.name!r} is also defined by {other}"))
                continue
            owner[listener.name] = policy.origin
            listeners.append(listener)
            origins.append(policy.origin)
    for first, second in find_port_conflicts(listeners):
        a, b = listeners[first], listeners[second]
        problems.append(Problem(
            origins[second] or "policy", None, None,
            f"listener {b.name!r} uses {b.address}:{b.port}, already used by listener {a.name!r} "
            f"from {origins[first] or 'another policy'} {describe_groups(a.groups, b.groups)}",
        ))
    if problems:
        raise PolicyError(problems)
    return Policy(services=tuple(services.values()), listeners=tuple(listeners), tracing=tracing)
