"""DesiredState: what one node group should run, in Envoy's terms but free of protobuf.

This is the contract between `policy` (which decides) and `translate` (which spells it as Envoy protos).
Every collection is a tuple in a deterministic order so equal inputs give byte-identical snapshots.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from xds.model.service import Endpoint, Locality
from xds.policy.tls_specs import IngressTlsSpec, UpstreamTlsSpec
from xds.policy.tracing_spec import TracingSpec


class LbPolicy(enum.Enum):
    ROUND_ROBIN = "round_robin"
    LEAST_REQUEST = "least_request"
    RANDOM = "random"
    RING_HASH = "ring_hash"
    MAGLEV = "maglev"
    # Envoy's client-side weighted round robin: weights from the endpoints' own ORCA load reports (issue 10,
    # docs/load-aware.md); a typed `load_balancing_policy` rather than an `lb_policy` enum value.
    CLIENT_SIDE_WEIGHTED = "client_side_weighted"


class ListenerKind(enum.Enum):
    """An Envoy listener on an address and port, or an api_listener for proxyless gRPC (issue 11)."""

    HTTP = "http"
    GRPC = "grpc"


class WeightsMode(enum.Enum):
    """Where a service's endpoint weights come from (issue 10; docs/load-aware.md)."""

    STATIC = "static"  # the catalog's weights, as given by the file, Consul or Kubernetes
    LOAD_AWARE = "load_aware"  # the catalog's weights scaled by the control plane from load reports


@dataclass(frozen=True, slots=True)
class OutlierDetectionSpec:
    """Passive health checking of a cluster's hosts (envoy.config.cluster.v3.OutlierDetection). Every None is
    Envoy's own default; the keys and bounds are declared in xds/policy/cluster_fields.py (issue 8)."""

    consecutive_5xx: int | None = None
    consecutive_gateway_failure: int | None = None
    interval_s: float | None = None
    base_ejection_time_s: float | None = None
    max_ejection_percent: int | None = None
    success_rate: bool | None = None  # None: Envoy's default (enforced, given enough hosts and requests)
    split_external_local_origin_errors: bool = False


@dataclass(frozen=True, slots=True)
class RetryBudgetSpec:
    budget_percent: int | None = None  # None: Envoy's 20%
    min_retry_concurrency: int | None = None  # None: Envoy's 3


@dataclass(frozen=True, slots=True)
class CircuitBreakersSpec:
    """The DEFAULT-priority thresholds of a cluster (envoy.config.cluster.v3.CircuitBreakers). None: Envoy's
    default (1024 connections, pending and requests; 3 retries)."""

    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None
    max_retries: int | None = None
    retry_budget: RetryBudgetSpec | None = None


@dataclass(frozen=True, slots=True)
class HttpHealthCheckSpec:
    path: str
    expected_statuses: tuple[int, ...] = ()  # (): Envoy's default, 200 only
    host: str | None = None  # None: the cluster's name, as Envoy does


@dataclass(frozen=True, slots=True)
class TcpHealthCheckSpec:
    """A connect-only check: the endpoint is healthy while it accepts connections."""


@dataclass(frozen=True, slots=True)
class GrpcHealthCheckSpec:
    service: str = ""  # "": the server's overall health (grpc.health.v1)


# Envoy has no defaults for these four (health_check.proto marks them required); these are Envoy Gateway's.
DEFAULT_HEALTH_CHECK_INTERVAL_S = 3.0
DEFAULT_HEALTH_CHECK_TIMEOUT_S = 1.0
DEFAULT_UNHEALTHY_THRESHOLD = 3
DEFAULT_HEALTHY_THRESHOLD = 1


@dataclass(frozen=True, slots=True)
class HealthCheckSpec:
    """An active health check (envoy.config.core.v3.HealthCheck): exactly one of http, tcp and grpc."""

    http: HttpHealthCheckSpec | None = None
    tcp: TcpHealthCheckSpec | None = None
    grpc: GrpcHealthCheckSpec | None = None
    interval_s: float = DEFAULT_HEALTH_CHECK_INTERVAL_S
    timeout_s: float = DEFAULT_HEALTH_CHECK_TIMEOUT_S
    unhealthy_threshold: int = DEFAULT_UNHEALTHY_THRESHOLD
    healthy_threshold: int = DEFAULT_HEALTHY_THRESHOLD
    no_traffic_interval_s: float | None = None  # None: Envoy's 60 s
    # Probe this port instead of each endpoint's serving port (a separate admin or health port): EDS
    # LbEndpoint.endpoint.health_check_config.port_value. None: the endpoint's own port.
    port: int | None = None


@dataclass(frozen=True, slots=True)
class LoadBalancerSpec:
    """Knobs of the service's `lb_policy` (issue 8; keys in xds/policy/lb_fields.py). None: Envoy's default,
    nothing emitted. Each knob applies to the policies the loader allows it with (walker.py)."""

    choice_count: int | None = None  # least_request: hosts sampled per pick (Envoy's 2)
    minimum_ring_size: int | None = None  # ring_hash (Envoy's 1024)
    maximum_ring_size: int | None = None  # ring_hash (Envoy's 8M)
    table_size: int | None = None  # maglev, a prime (Envoy's 65537)
    slow_start_window_s: float | None = None  # round_robin, least_request: ramp-up of a new host (off)
    healthy_panic_threshold: int | None = None  # percent, any policy (Envoy's 50)
    # client_side_weighted only (issue 10, docs/load-aware.md); None: Envoy's default.
    blackout_period_s: float | None = None  # reports needed this long before a weight is used (10 s)
    weight_expiration_period_s: float | None = None  # a weight without reports this long is dropped (3 min)
    weight_update_period_s: float | None = None  # how often weights are recomputed (1 s, at least 100 ms)
    error_utilization_penalty: float | None = None  # eps/qps multiplier added to utilization (1.0)
    oob_reporting: bool | None = None  # ORCA out-of-band stream instead of response headers (off)
    oob_reporting_period_s: float | None = None  # report interval asked for on that stream (10 s)
    # Issue 10, control-plane mode (docs/load-aware.md): not an Envoy knob; the pipeline scales the EDS
    # weights of the service's endpoints, and `orca_port` opts its endpoints in to ORCA out-of-band reports.
    weights: WeightsMode = WeightsMode.STATIC
    orca_port: int | None = None


@dataclass(frozen=True, slots=True)
class TcpKeepaliveSpec:
    """SO_KEEPALIVE on upstream connections; None: the operating system's setting."""

    probes: int | None = None
    time_s: float | None = None  # whole seconds (Envoy counts in seconds; the loader refuses fractions)
    interval_s: float | None = None


@dataclass(frozen=True, slots=True)
class UpstreamConnectionSpec:
    """Upstream connection settings (issue 8); None: Envoy's default, nothing emitted."""

    idle_timeout_s: float | None = None  # Envoy's 1 h
    max_requests_per_connection: int | None = None  # Envoy's unlimited
    tcp_keepalive: TcpKeepaliveSpec | None = None  # None: no keepalive set by Envoy


@dataclass(frozen=True, slots=True)
class LocalitySpec:
    """How a cluster's endpoints are ordered by locality (issue 8); keys and bounds are declared in
    xds/policy/cluster_fields.py."""

    # Order EDS priorities relative to the proxy's own node.locality: same zone first, then same region,
    # then anywhere (ClusterLoadAssignment priorities, computed per proxy locality).
    failover: bool = False
    # ClusterLoadAssignment.Policy.overprovisioning_factor, in percent; None: Envoy's 140.
    overprovisioning_factor: int | None = None
    # Locality-weighted balancing: each locality's share of a priority's traffic (LocalityLbEndpoints
    # load_balancing_weight), by the first entry that matches it; (): off.
    weights: tuple[LocalityWeightSpec, ...] = ()

    def weight_of(self, locality: Locality) -> int:
        """The weight of the first entry matching `locality`; 1 for a locality no entry names, so a new zone
        gets a little traffic rather than none (Envoy sends nothing to a locality without a weight)."""
        for entry in self.weights:
            if entry.matches(locality):
                return entry.weight
        return 1


@dataclass(frozen=True, slots=True)
class LocalityWeightSpec:
    """One `locality.weights` entry: the parts given must all equal the endpoint's (an entry naming only a
    region matches every zone of it)."""

    weight: int
    region: str = ""
    zone: str = ""
    sub_zone: str = ""

    def matches(self, locality: Locality) -> bool:
        return ((not self.region or self.region == locality.region)
                and (not self.zone or self.zone == locality.zone)
                and (not self.sub_zone or self.sub_zone == locality.sub_zone))


class MtlsMode(enum.Enum):
    """Sidecar mTLS of a service (issue 9): its inbound side requires (strict) or accepts (permissive) client
    certificates of the mesh CA, and its clients originate mTLS to it unless it is off."""

    OFF = "off"
    PERMISSIVE = "permissive"
    STRICT = "strict"


@dataclass(frozen=True, slots=True)
class UpstreamMeshTlsSpec:
    """Originate mTLS with the node group's workload certificate (SDS `WORKLOAD_CERT_SECRET`), trusting the
    mesh CA (SDS `TRUST_BUNDLE_SECRET`), and accept only a server whose URI SAN is `peer_identity`."""

    peer_identity: str


class DnsMode(enum.Enum):
    """How Envoy turns the host names of a DNS cluster into hosts (issue 13, docs/dns.md)."""

    STRICT = "strict"  # STRICT_DNS: every address a name resolves to is a host of its own
    LOGICAL = "logical"  # LOGICAL_DNS: one host per name, connecting to the first address of each lookup


class DnsLookupFamily(enum.Enum):
    """Which address families Envoy asks its resolver for (DnsCluster.dns_lookup_family)."""

    V4_ONLY = "v4_only"
    V6_ONLY = "v6_only"
    V4_PREFERRED = "v4_preferred"
    AUTO = "auto"  # IPv6 first, IPv4 if there is none
    ALL = "all"


@dataclass(frozen=True, slots=True)
class DnsSpec:
    """How Envoy resolves the host-name endpoints of a service (issue 13; keys in xds/policy/dns_fields.py).
    Only a cluster with a host-name endpoint reads it; one of IP endpoints stays EDS."""

    mode: DnsMode = DnsMode.STRICT
    refresh_rate_s: float | None = None  # None: Envoy's 5 s
    respect_ttl: bool = False  # refresh at the records' TTL instead of refresh_rate
    # V4_PREFERRED: what DNS clusters used before issue 13. Envoy's own default, AUTO, tries IPv6 first and
    # so sends `localhost` to ::1 where most local upstreams listen on 127.0.0.1 only.
    lookup_family: DnsLookupFamily = DnsLookupFamily.V4_PREFERRED


DEFAULT_DNS = DnsSpec()


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """One upstream cluster: a service, or the subset of it whose endpoints match `subset`."""

    name: str
    service: str
    subset: tuple[tuple[str, str], ...] = ()
    lb_policy: LbPolicy = LbPolicy.ROUND_ROBIN
    connect_timeout_s: float = 1.0
    http2: bool = False
    # Endpoints are host names Envoy resolves itself (a DNS cluster, endpoints inline) instead of EDS.
    dns: bool = False
    # How it resolves them; read only when `dns` (apply.py has already turned LOGICAL into STRICT for a
    # cluster without exactly one endpoint, which LOGICAL_DNS needs).
    dns_options: DnsSpec = DEFAULT_DNS
    outlier_detection: OutlierDetectionSpec | None = None  # None: no outlier detection (Envoy's default)
    circuit_breakers: CircuitBreakersSpec | None = None  # None: Envoy's default thresholds
    health_check: HealthCheckSpec | None = None  # None: no active health checking
    load_balancer: LoadBalancerSpec | None = None  # None: Envoy's defaults for lb_policy
    upstream_connection: UpstreamConnectionSpec | None = None  # None: Envoy's defaults
    locality: LocalitySpec | None = None  # None: priorities as the catalog gives them, Envoy's factor
    mesh_tls: UpstreamMeshTlsSpec | None = None  # None: plaintext to the endpoints
    tls: UpstreamTlsSpec | None = None  # edge TLS to an external service (issue 9 item 7); wins over mesh_tls
    # The endpoints to serve for this cluster (already filtered by subset); may be empty: an empty
    # ClusterLoadAssignment is still sent so the cluster leaves warming (docs/protocol.md R22).
    endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class HeaderMatchSpec:
    name: str
    exact: str | None = None  # None: the header must be present, any value
    invert: bool = False


@dataclass(frozen=True, slots=True)
class WeightedClusterSpec:
    cluster: str
    weight: int  # normalised: the weights of one route sum to TOTAL_WEIGHT


@dataclass(frozen=True, slots=True)
class RetrySpec:
    """A route's retry policy in full (issue 8); None fields leave Envoy's defaults."""

    retry_on: tuple[str, ...]
    num_retries: int | None = None
    per_try_timeout_s: float | None = None
    backoff_base_s: float | None = None
    backoff_max_s: float | None = None
    retriable_status_codes: tuple[int, ...] = ()
    different_host: bool = False
    host_selection_attempts: int | None = None


class HashSource(enum.Enum):
    HEADER = "header"
    COOKIE = "cookie"
    SOURCE_IP = "source_ip"
    QUERY_PARAMETER = "query_parameter"


@dataclass(frozen=True, slots=True)
class HashPolicySpec:
    source: HashSource
    name: str = ""  # the header, cookie or query parameter; "" for the source IP
    terminal: bool = False
    cookie_ttl_s: float | None = None  # set: Envoy generates the cookie when the request lacks it
    cookie_path: str | None = None


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """Injected faults of a route (Envoy's HTTP fault filter); None: that fault is not injected."""

    delay_s: float | None = None
    delay_percent: int = 0
    abort_status: int | None = None
    abort_percent: int = 0


@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    prefix: str = "/"
    headers: tuple[HeaderMatchSpec, ...] = ()
    backends: tuple[WeightedClusterSpec, ...] = ()
    timeout_s: float | None = None
    # A count retries on RETRY_ON (translate/routes.py), as before issue 8; a RetrySpec says it all.
    retries: int | RetrySpec = 0
    idle_timeout_s: float | None = None
    hash_policy: tuple[HashPolicySpec, ...] = ()
    fault: FaultSpec | None = None
    # A route of a gRPC listener (issue 11): gRPC semantics for the timeout and retries (translate/routes.py).
    grpc: bool = False


@dataclass(frozen=True, slots=True)
class VirtualHostSpec:
    name: str
    domains: tuple[str, ...] = ("*",)
    routes: tuple[RouteSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteConfigSpec:
    name: str
    virtual_hosts: tuple[VirtualHostSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthorizationRuleSpec:
    """Requests from any of `principals` (SPIFFE IDs of client certificates) are allowed, narrowed to a path
    prefix and to methods when given (issue 9)."""

    principals: tuple[str, ...]
    prefix: str | None = None
    methods: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InboundSpec:
    """The listener is the inbound side of `service`'s sidecar: it presents the group's workload certificate
    and requires or accepts client certificates per `mtls`; with `rules` only what they allow passes (RBAC,
    403 otherwise), with none everything does."""

    service: str
    mtls: MtlsMode = MtlsMode.OFF
    rules: tuple[AuthorizationRuleSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """An HTTP listener whose routes come over RDS under `route_config`."""

    name: str
    address: str
    port: int
    route_config: str
    # Some route of the listener injects faults: its HTTP connection manager gets the fault filter.
    fault_filter: bool = False
    inbound: InboundSpec | None = None  # None: an outbound or edge listener, plaintext
    tls: IngressTlsSpec | None = None  # edge TLS termination by SNI (issue 9 item 7); wins over inbound mTLS
    # A listener for proxyless gRPC clients (`kind: grpc`, issue 11): an api_listener without address and
    # port, served only to gRPC clients, while Envoys never get it (translate/delivery.py).
    grpc: bool = False
    tracing: TracingSpec | None = None  # None: no HTTP tracing (issue 14 item 2, docs/tracing.md)


def cluster_secret_names(cluster: ClusterSpec) -> tuple[str, ...]:
    """The SDS secrets `cluster` names (its transport socket)."""
    if cluster.mesh_tls is not None:
        return (WORKLOAD_CERT_SECRET, TRUST_BUNDLE_SECRET)
    return ()


def listener_secret_names(listener: ListenerSpec) -> tuple[str, ...]:
    """The SDS secrets `listener` names (its filter chains' transport sockets)."""
    if listener.tls is not None:
        return listener.tls.secret_names()
    if listener.inbound is not None and listener.inbound.mtls is not MtlsMode.OFF:
        return (WORKLOAD_CERT_SECRET, TRUST_BUNDLE_SECRET)
    return ()


# The SDS names of a node group's mesh identity (issue 9; docs/security.md "Workload certificates"): its
# workload certificate with key, and the mesh CA's trust bundle. Every group uses the same two names, and
# each group's snapshot holds its own content under them.
WORKLOAD_CERT_SECRET = "xds-workload-cert"
TRUST_BUNDLE_SECRET = "xds-trust-bundle"


@dataclass(frozen=True, slots=True)
class TlsCertificateSpec:
    """A certificate chain and its private key, PEM (Envoy's TlsCertificate). The key is left out of
    repr so that it never reaches a log line or an error message."""

    certificate_chain_pem: str
    private_key_pem: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ValidationContextSpec:
    """CA certificates, PEM, that peers' certificates must chain to (CertificateValidationContext)."""

    trusted_ca_pem: str


@dataclass(frozen=True, slots=True)
class SecretSpec:
    """One SDS Secret: exactly one of a certificate with key, or a validation context (issue 9)."""

    name: str
    tls_certificate: TlsCertificateSpec | None = None
    validation_context: ValidationContextSpec | None = None

    def __post_init__(self) -> None:
        if (self.tls_certificate is None) == (self.validation_context is None):
            raise ValueError(f"secret {self.name!r} needs exactly one of a certificate and a validation "
                             "context")


@dataclass(frozen=True, slots=True)
class DesiredState:
    clusters: tuple[ClusterSpec, ...] = ()
    listeners: tuple[ListenerSpec, ...] = ()
    route_configs: tuple[RouteConfigSpec, ...] = ()
    # SDS secrets the clusters and listeners name (issue 9); sorted by name.
    secrets: tuple[SecretSpec, ...] = ()

    def secret_names(self) -> frozenset[str]:
        """The SDS names the clusters and listeners of this state refer to, whether or not `secrets` has
        them yet (the pipeline adds the workload identity's secrets, xds/pipeline.py)."""
        names: set[str] = set()
        for cluster in self.clusters:
            names.update(cluster_secret_names(cluster))
        for listener in self.listeners:
            names.update(listener_secret_names(listener))
        return frozenset(names)
