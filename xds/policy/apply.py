"""(Catalog, Policy, node group) -> DesiredState: the pure decision of what one node group should run.

One listener becomes one ListenerSpec, one RouteConfigSpec and one VirtualHostSpec, all named after the
listener. Every distinct (service, subset) that a route of the group sends traffic to becomes one cluster,
named `service` or `service|k1=v1,k2=v2`, holding the catalog endpoints that match the subset. A service
that is not in the catalog yields an empty cluster rather than an error: registries lag behind policy, and
an empty cluster (answered with an empty ClusterLoadAssignment, docs/protocol.md R22) fills in as soon as the
endpoints appear, without a policy change.
"""

from __future__ import annotations

from dataclasses import replace

from xds.model.service import Catalog, Endpoint, Locality
from xds.model.spiffe import DEFAULT_TRUST_DOMAIN, group_identity, resolve_identity
from xds.policy.desired import (
    DEFAULT_DNS,
    AuthorizationRuleSpec,
    ClusterSpec,
    DesiredState,
    DnsMode,
    DnsSpec,
    FaultSpec,
    HashPolicySpec,
    HashSource,
    HeaderMatchSpec,
    InboundSpec,
    LbPolicy,
    ListenerKind,
    ListenerSpec,
    MtlsMode,
    RetrySpec,
    RouteConfigSpec,
    RouteSpec,
    SecretSpec,
    TlsCertificateSpec,
    UpstreamMeshTlsSpec,
    VirtualHostSpec,
    WeightedClusterSpec,
    WeightsMode,
)
from xds.policy.load_weights import NO_LOADS, LoadFactors, endpoint_address, scaled_weight
from xds.policy.schema import (
    BackendRef,
    FaultPolicy,
    HashPolicy,
    ListenerPolicy,
    Policy,
    RetryPolicy,
    RoutePolicy,
    ServicePolicy,
)
from xds.policy.tls_material import NO_MATERIAL, TlsMaterial
from xds.policy.tls_specs import IngressChainSpec, IngressTlsSpec, UpstreamTlsSpec, edge_secret_name
from xds.policy.tracing_apply import collector_cluster, tracing_spec
from xds.policy.tracing_spec import TracingSpec
from xds.policy.weights import normalize_weights

_Subset = tuple[tuple[str, str], ...]
_NOWHERE = Locality()  # a proxy that declares no locality


def cluster_name(service: str, subset: _Subset) -> str:
    """`web` or `web|version=v1,zone=a` (keys sorted). Service names cannot contain '|', and subset pairs
    cannot contain ',', '=' or '|' (see policy.rules), so distinct clusters always get distinct names."""
    return f"{service}|{_subset_text(subset)}" if subset else service


def _subset_text(subset: _Subset) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(subset))


def locality_tier(endpoint: Locality, proxy: Locality) -> int:
    """0 for the proxy's own zone, 1 for the rest of its region, 2 for anywhere else (issue 8)."""
    if proxy.region and endpoint.region == proxy.region:
        return 0 if proxy.zone and endpoint.zone == proxy.zone else 1
    if not proxy.region and proxy.zone and endpoint.zone == proxy.zone:
        return 0  # a proxy that names only its zone: zones match only within the (empty) region
    return 2


def _failover(endpoints: tuple[Endpoint, ...], proxy: Locality) -> tuple[Endpoint, ...]:
    # The locality tier comes first and the catalog's priority orders endpoints within it. The numbers
    # need not be contiguous: build_load_assignment ranks them (Envoy wants priorities 0, 1, 2, ...).
    if not endpoints:
        return endpoints
    span = max(e.priority for e in endpoints) + 1
    return tuple(replace(e, priority=locality_tier(e.locality, proxy) * span + e.priority) for e in endpoints)


def _upstream_tls(settings: ServicePolicy, endpoints: tuple[Endpoint, ...],
                  material: TlsMaterial) -> UpstreamTlsSpec | None:
    tls = settings.tls
    if tls is None:
        return None
    ca_pem = material.ca_bundles.get(tls.ca_file)
    if ca_pem is None:
        # Never plaintext instead: the pipeline resolves every file a policy names before it builds
        # (xds/sources/tls_files.py), so this is a caller's bug, not an input problem.
        raise LookupError(f"service {settings.name!r}: tls.ca_file {tls.ca_file} was not loaded")
    sni = tls.sni
    if sni is None:
        # An ExternalName-style service: the one host name its endpoints share is the name the upstream
        # expects, as a browser would send it (docs/security.md, "Edge TLS").
        hosts = {e.host for e in endpoints if e.is_dns_name}
        sni = hosts.pop() if len(hosts) == 1 and all(e.is_dns_name for e in endpoints) else ""
    sans = tls.subject_alt_names or ((sni,) if sni else ())
    return UpstreamTlsSpec(ca_file=tls.ca_file, ca_pem=ca_pem, sni=sni, subject_alt_names=sans)


def _ingress_tls(listener: ListenerPolicy, material: TlsMaterial,
                 secrets: dict[str, SecretSpec]) -> IngressTlsSpec | None:
    """The listener's filter chains by SNI, adding the SDS secret of each certificate to `secrets`."""
    if listener.tls is None:
        return None
    chains = []
    for cert in listener.tls.certificates:
        pair = material.key_pairs.get((cert.cert_file, cert.key_file))
        if pair is None:  # as for a CA bundle: never a listener without its certificate
            raise LookupError(f"listener {listener.name!r}: tls certificate {cert.cert_file} was not loaded")
        name = edge_secret_name(cert.cert_file)
        secrets[name] = SecretSpec(name, tls_certificate=TlsCertificateSpec(
            certificate_chain_pem=pair.cert_pem.decode(), private_key_pem=pair.key_pem.decode()))
        chains.append(IngressChainSpec(secret=name, server_names=cert.server_names))
    return IngressTlsSpec(chains=tuple(chains))


def _load_aware(endpoints: tuple[Endpoint, ...], settings: ServicePolicy, loads: LoadFactors
                ) -> tuple[Endpoint, ...]:
    """The endpoints with their weights scaled by the load tracker's factors (issue 10, docs/load-aware.md).
    Per endpoint, inside the cluster: a route's split between clusters is untouched."""
    lb = settings.load_balancer
    if lb is None or lb.weights is not WeightsMode.LOAD_AWARE:
        return endpoints
    return tuple(replace(e, weight=scaled_weight(e.weight, loads.factor(settings.name, endpoint_address(e))))
                 for e in endpoints)


def _dns_options(settings: ServicePolicy, endpoints: tuple[Endpoint, ...]) -> DnsSpec:
    spec = settings.dns or DEFAULT_DNS
    if spec.mode is DnsMode.LOGICAL and len(endpoints) != 1:
        # Envoy rejects a LOGICAL_DNS cluster without exactly one endpoint. The file loader refuses such a
        # service; a registry (or a subset) can still yield another count, so it falls back to STRICT_DNS,
        # which explain_warnings reports, rather than have Envoy reject the cluster.
        return replace(spec, mode=DnsMode.STRICT)
    return spec


def _cluster(catalog: Catalog, settings: ServicePolicy, subset: _Subset, proxy: Locality,
             material: TlsMaterial = NO_MATERIAL, *, trust_domain: str = DEFAULT_TRUST_DOMAIN,
             loads: LoadFactors = NO_LOADS) -> ClusterSpec:
    service = catalog.get(settings.name)
    if service is None:
        endpoints: tuple[Endpoint, ...] = ()
    elif not subset:
        endpoints = service.endpoints  # every endpoint matches the empty subset; no copy on every build
    else:
        endpoints = tuple(e for e in service.endpoints if e.matches(subset))
    endpoints = _load_aware(endpoints, settings, loads)
    if settings.locality is not None and settings.locality.failover and proxy != _NOWHERE:
        endpoints = _failover(endpoints, proxy)
    return ClusterSpec(
        name=cluster_name(settings.name, subset),
        service=settings.name,
        subset=tuple(sorted(subset)),
        lb_policy=settings.lb_policy,
        connect_timeout_s=settings.connect_timeout_s,
        # HTTP/2 when the policy says so, or when every instance declares it (Kubernetes appProtocol).
        http2=settings.http2 or (bool(endpoints) and all(e.speaks_http2 for e in endpoints)),
        # One host name makes the whole cluster a DNS cluster: Envoy resolves an IP literal to itself, so
        # IP endpoints next to it still work (docs/dns.md, "Mixed endpoints").
        dns=any(e.is_dns_name for e in endpoints),
        dns_options=_dns_options(settings, endpoints),
        outlier_detection=settings.outlier_detection,
        circuit_breakers=settings.circuit_breakers,
        health_check=settings.health_check,
        load_balancer=settings.load_balancer,
        upstream_connection=settings.upstream_connection,
        locality=settings.locality,
        tls=_upstream_tls(settings, endpoints, material),
        # Clients of a service with sidecar mTLS originate it and accept only the service's identity
        # (issue 9, docs/security.md).
        mesh_tls=(None if settings.mtls is MtlsMode.OFF
                  else UpstreamMeshTlsSpec(peer_identity=group_identity(trust_domain, settings.name))),
        endpoints=endpoints,
    )


def _inbound(listener: ListenerPolicy, settings: dict[str, ServicePolicy], trust_domain: str
             ) -> InboundSpec | None:
    if listener.inbound_for is None:
        return None
    service = settings.get(listener.inbound_for) or ServicePolicy(listener.inbound_for)
    rules = tuple(AuthorizationRuleSpec(principals=tuple(resolve_identity(trust_domain, name)
                                                         for name in rule.identities),
                                        prefix=rule.prefix, methods=rule.methods)
                  for rule in service.authorization)
    return InboundSpec(service=service.name, mtls=service.mtls, rules=rules)


def _combined_backends(route: RoutePolicy) -> dict[tuple[str, _Subset], int]:
    """Weights per (service, subset), in order of first mention: one target listed twice is one cluster
    carrying the sum of its weights (Envoy rejects a weighted_clusters list naming a cluster twice)."""
    combined: dict[tuple[str, _Subset], int] = {}
    for backend in route.backends:
        key = (backend.service, backend.subset)
        combined[key] = combined.get(key, 0) + backend.weight
    return combined


def _route(route: RoutePolicy, targets: dict[tuple[str, _Subset], int], *, grpc: bool = False) -> RouteSpec:
    shares = normalize_weights(list(targets.values()))
    return RouteSpec(
        name=route.name,
        prefix=route.prefix,
        headers=tuple(HeaderMatchSpec(name=h.name, exact=h.exact, invert=h.invert) for h in route.headers),
        backends=tuple(
            WeightedClusterSpec(cluster=cluster_name(service, subset), weight=share)
            for (service, subset), share in zip(targets, shares, strict=True)
        ),
        timeout_s=route.timeout_s,
        retries=_retries(route.retries),
        idle_timeout_s=route.idle_timeout_s,
        hash_policy=tuple(_hash_policy(h) for h in route.hash_policy),
        fault=_fault(route.fault),
        grpc=grpc,
    )


def _fault(fault: FaultPolicy | None) -> FaultSpec | None:
    if fault is None:
        return None
    return FaultSpec(delay_s=fault.delay.duration_s if fault.delay else None,
                     delay_percent=fault.delay.percent if fault.delay else 0,
                     abort_status=fault.abort.status if fault.abort else None,
                     abort_percent=fault.abort.percent if fault.abort else 0)


def _retries(retries: int | RetryPolicy) -> int | RetrySpec:
    if isinstance(retries, int):
        return retries
    return RetrySpec(retry_on=retries.retry_on, num_retries=retries.num_retries,
                     per_try_timeout_s=retries.per_try_timeout_s, backoff_base_s=retries.backoff_base_s,
                     backoff_max_s=retries.backoff_max_s,
                     retriable_status_codes=retries.retriable_status_codes,
                     different_host=retries.different_host,
                     host_selection_attempts=retries.host_selection_attempts)


def _hash_policy(policy: HashPolicy) -> HashPolicySpec:
    if policy.cookie is not None:
        return HashPolicySpec(HashSource.COOKIE, policy.cookie.name, policy.terminal,
                              cookie_ttl_s=policy.cookie.ttl_s, cookie_path=policy.cookie.path)
    if policy.header is not None:
        return HashPolicySpec(HashSource.HEADER, policy.header, policy.terminal)
    if policy.query_parameter is not None:
        return HashPolicySpec(HashSource.QUERY_PARAMETER, policy.query_parameter, policy.terminal)
    return HashPolicySpec(HashSource.SOURCE_IP, "", policy.terminal)


def apply_policy(catalog: Catalog, policy: Policy, *, group: str, locality: Locality = _NOWHERE,
                 material: TlsMaterial = NO_MATERIAL, trust_domain: str = DEFAULT_TRUST_DOMAIN,
                 loads: LoadFactors = NO_LOADS) -> DesiredState:
    """What node group `group` should run, as seen from a proxy in `locality` (which only matters to
    services with `locality.failover`); `material` holds the TLS files the policy names, `trust_domain`
    makes the SPIFFE identities of sidecar mTLS (issue 9), `loads` scales the endpoint weights of
    load-aware services (issue 10).
    Deterministic: equal inputs give equal states, with clusters,
    listeners and route configurations sorted by name (routes keep the policy's order, which is the order
    Envoy evaluates them in)."""
    settings = {s.name: s for s in policy.services}
    clusters: dict[str, ClusterSpec] = {}
    listeners: list[ListenerSpec] = []
    route_configs: list[RouteConfigSpec] = []
    secrets: dict[str, SecretSpec] = {}
    for listener in policy.listeners:
        if not listener.serves(group):
            continue
        routes: list[RouteSpec] = []
        for route in listener.routes:
            targets = _combined_backends(route)
            for service, subset in targets:
                name = cluster_name(service, subset)
                if name not in clusters:
                    service_settings = settings.get(service) or ServicePolicy(service)
                    clusters[name] = _cluster(catalog, service_settings, subset, locality, material,
                                              trust_domain=trust_domain, loads=loads)
            routes.append(_route(route, targets, grpc=listener.kind is ListenerKind.GRPC))
        # A gRPC listener binds nothing: port 0 is never put on the wire (translate/listeners.py, issue 11).
        listeners.append(ListenerSpec(name=listener.name, address=listener.address, port=listener.port or 0,
                                      route_config=listener.name, grpc=listener.kind is ListenerKind.GRPC,
                                      fault_filter=any(r.fault is not None for r in routes),
                                      tls=_ingress_tls(listener, material, secrets),
                                      inbound=_inbound(listener, settings, trust_domain),
                                      tracing=_tracing(listener, policy, group, clusters)))
        virtual_host = VirtualHostSpec(name=listener.name, domains=listener.domains, routes=tuple(routes))
        route_configs.append(RouteConfigSpec(name=listener.name, virtual_hosts=(virtual_host,)))
    return DesiredState(
        clusters=tuple(sorted(clusters.values(), key=lambda c: c.name)),
        listeners=tuple(sorted(listeners, key=lambda x: x.name)),
        route_configs=tuple(sorted(route_configs, key=lambda r: r.name)),
        secrets=tuple(secrets[name] for name in sorted(secrets)),
    )


def _tracing(listener: ListenerPolicy, policy: Policy, group: str, clusters: dict[str, ClusterSpec]
             ) -> TracingSpec | None:
    """The listener's own tracing, else the top-level one (docs/tracing.md); gRPC listeners have none, as
    proxyless clients do not trace. Adds the collector's cluster to `clusters`."""
    chosen = listener.tracing or policy.tracing
    if chosen is None or listener.kind is ListenerKind.GRPC:
        return None
    cluster = collector_cluster(chosen)
    clusters.setdefault(cluster.name, cluster)
    return tracing_spec(chosen, group=group)


def _backend_warning(catalog: Catalog, where: str, backend: BackendRef) -> str | None:
    service = catalog.get(backend.service)
    if service is None:
        return (f"{where}: service {backend.service!r} is not in the catalog; its cluster will have no "
                f"endpoints until a source provides them")
    if not service.endpoints:
        return f"{where}: service {backend.service!r} has no endpoints"
    if backend.subset and not any(e.matches(backend.subset) for e in service.endpoints):
        return (f"{where}: subset {_subset_text(backend.subset)} of service "
                f"{backend.service!r} matches none of its {len(service.endpoints)} endpoints")
    return None


# HTTPS's port (RFC 9110 section 4.2.2). An endpoint on it almost surely expects TLS, and an ExternalName
# service naming an external API there went out as plaintext before issue 9 item 7.
TLS_PORT = 443


def _plaintext_to_tls_port(catalog: Catalog, policy: Policy) -> list[str]:
    """Services routes send traffic to that have an endpoint on port 443 and no `tls` (a warning, not an
    error: a plaintext server may listen there on purpose)."""
    settings = {s.name: s for s in policy.services}
    used = dict.fromkeys(b.service for listener in policy.listeners for route in listener.routes
                         for b in route.backends)
    out = []
    for name in used:
        service = catalog.get(name)
        entry = settings.get(name)
        if (service is not None and (entry is None or entry.tls is None)
                and any(e.port == TLS_PORT for e in service.endpoints)):
            out.append(name)
    return out


# The load balancers that use a route's hash policy (route_components.proto, RouteAction.hash_policy).
HASHING_LB_POLICIES = frozenset({LbPolicy.RING_HASH, LbPolicy.MAGLEV})


def hash_policy_ignored(route: RoutePolicy, settings: dict[str, ServicePolicy]) -> list[str]:
    """The services of `route` whose load balancer ignores its hash policy (issue 8: a warning, since the
    route still works, only without affinity)."""
    if not route.hash_policy:
        return []
    services = dict.fromkeys(b.service for b in route.backends)
    return [s for s in services
            if (settings.get(s) or ServicePolicy(s)).lb_policy not in HASHING_LB_POLICIES]


def explain_warnings(catalog: Catalog, policy: Policy) -> list[str]:
    """Things that are valid but probably not intended, for `xds validate`: backends naming services the
    catalog does not know, services without endpoints, subsets that select no endpoint, and hash policies
    on services that balance without hashing, locality failover on services none of whose endpoints
    declares a locality, and locality weights that match none of the localities the service's endpoints
    are in (those get weight 1). Each warning is given once, in policy order."""
    warnings: dict[str, None] = {}
    settings = {s.name: s for s in policy.services}
    for listener in policy.listeners:
        for route in listener.routes:
            where = f"listener {listener.name!r} route {route.name!r}"
            for service in hash_policy_ignored(route, settings):
                lb = (settings.get(service) or ServicePolicy(service)).lb_policy.value
                warnings.setdefault(f"{where}: hash_policy has no effect on service {service!r}, whose "
                                    f"lb_policy is {lb}; use ring_hash or maglev for session affinity")
            for backend in route.backends:
                warning = _backend_warning(catalog, where, backend)
                if warning is not None:
                    warnings.setdefault(warning)
    for name in _plaintext_to_tls_port(catalog, policy):
        warnings.setdefault(f"service {name!r} has endpoints on port {TLS_PORT} but no `tls`: Envoy sends "
                            "them plaintext HTTP; add `tls: {ca_file: ...}` to originate TLS "
                            "(docs/security.md)")
    for entry in policy.services:
        found = catalog.get(entry.name)
        if (entry.dns is not None and entry.dns.mode is DnsMode.LOGICAL and found is not None
                and len(found.endpoints) > 1 and any(e.is_dns_name for e in found.endpoints)):
            warnings.setdefault(f"service {entry.name!r}: dns.mode logical needs exactly one endpoint, it "
                                f"has {len(found.endpoints)}; Envoy gets a STRICT_DNS cluster instead")
        if (entry.locality is not None and entry.locality.failover and found is not None
                and found.endpoints and all(e.locality == _NOWHERE for e in found.endpoints)):
            warnings.setdefault(f"service {entry.name!r}: locality.failover has no effect, since none of its "
                                "endpoints declares a locality")
        if entry.locality is not None and entry.locality.weights and found is not None:
            for locality in sorted({e.locality for e in found.endpoints}, key=_locality_text):
                if not any(weight.matches(locality) for weight in entry.locality.weights):
                    warnings.setdefault(f"service {entry.name!r}: no locality.weights entry matches locality "
                                        f"{_locality_text(locality)!r} of its endpoints, which gets weight 1")
    return list(warnings)


def _locality_text(locality: Locality) -> str:
    return "/".join((locality.region, locality.zone, locality.sub_zone)).rstrip("/") or "(none)"
