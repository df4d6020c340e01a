"""RouteConfigSpec -> envoy.config.route.v3.RouteConfiguration."""

from __future__ import annotations

from typing import Final

from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.v3 import percent_pb2

from xds.policy.desired import (
    FaultSpec,
    HashPolicySpec,
    HashSource,
    HeaderMatchSpec,
    RetrySpec,
    RouteConfigSpec,
    RouteSpec,
)

# What counts as retriable (router filter docs, "x-envoy-retry-on"): upstream 5xx, a reset before response
# headers, and a failed connect, which together cover a dead or restarting endpoint without retrying 4xx.
RETRY_ON: Final = "5xx,reset,connect-failure"

# What a gRPC listener's `retries: N` retries (issue 11): UNAVAILABLE is what a gRPC client sees for a dead
# or restarting endpoint, the counterpart of connect-failure and reset above.
GRPC_RETRY_ON: Final = "unavailable"

# A route whose backends are all gone still needs an action (route_components.proto, Route.action is a
# required oneof). 503 is what Envoy itself answers when a cluster has no healthy host.
NO_BACKEND_STATUS: Final = 503

# Retry on a host not tried yet for this request (retry.proto, RetryPolicy.retry_host_predicate).
PREVIOUS_HOSTS: Final = "envoy.retry_host_predicates.previous_hosts"
# The HTTP fault filter; a route's faults are its per-route config (typed_per_filter_config), and the
# listener of such a route has the filter in its chain (translate/listeners.py).
FAULT_FILTER_NAME: Final = "envoy.filters.http.fault"


def route_clusters(spec: RouteConfigSpec) -> tuple[str, ...]:
    """Every cluster name the routes of `spec` can send traffic to, sorted and without repeats."""
    return tuple(sorted({
        backend.cluster
        for vhost in spec.virtual_hosts
        for route in vhost.routes
        for backend in route.backends
    }))


def _header_matcher(spec: HeaderMatchSpec) -> route_components_pb2.HeaderMatcher:
    matcher = route_components_pb2.HeaderMatcher(name=spec.name, invert_match=spec.invert)
    if spec.exact is None:
        matcher.present_match = True
    else:
        # string_match replaces the deprecated exact_match field (route_components.proto, HeaderMatcher).
        matcher.string_match.exact = spec.exact
    return matcher


def _route(spec: RouteSpec) -> route_components_pb2.Route:
    route = route_components_pb2.Route(name=spec.name)
    route.match.prefix = spec.prefix
    route.match.headers.extend(_header_matcher(h) for h in spec.headers)
    if not spec.backends:
        route.direct_response.status = NO_BACKEND_STATUS
        return route
    action = route.route
    if len(spec.backends) == 1:
        # One backend takes all the traffic whatever its weight; `cluster` says so without a weight table.
        action.cluster = spec.backends[0].cluster
    else:
        # total_weight is deprecated: Envoy sums the weights itself (route_components.proto,
        # WeightedCluster.total_weight), so it is never set.
        for backend in spec.backends:
            weighted = action.weighted_clusters.clusters.add()
            weighted.name = backend.cluster
            weighted.weight.value = backend.weight
    if spec.timeout_s is not None and spec.grpc:
        # gRPC clients read no RouteAction.timeout: a call's deadline there is the route's maximum stream
        # duration (gRFC A31; route_components.proto, RouteAction.MaxStreamDuration). Issue 11.
        action.max_stream_duration.max_stream_duration.FromNanoseconds(_ns(spec.timeout_s))
    elif spec.timeout_s is not None:
        # Unset means Envoy's default of 15 s; 0 disables the timeout (RouteAction.timeout).
        action.timeout.FromNanoseconds(round(spec.timeout_s * 1e9))
    if spec.idle_timeout_s is not None:
        action.idle_timeout.FromNanoseconds(round(spec.idle_timeout_s * 1e9))
    if isinstance(spec.retries, RetrySpec):
        _retry_policy(spec.retries, action.retry_policy)
    elif spec.retries > 0:
        # gRPC clients retry on gRPC status names only (gRFC A44) and ignore HTTP conditions such as 5xx.
        action.retry_policy.retry_on = GRPC_RETRY_ON if spec.grpc else RETRY_ON
        action.retry_policy.num_retries.value = spec.retries
    for hash_spec in spec.hash_policy:
        _hash_policy(hash_spec, action.hash_policy.add())
    if spec.fault is not None:
        # Deterministic packing keeps the route's bytes, and so the snapshot version, stable.
        route.typed_per_filter_config[FAULT_FILTER_NAME].Pack(_fault(spec.fault), deterministic=True)
    return route


def _fault(spec: FaultSpec) -> fault_pb2.HTTPFault:
    fault = fault_pb2.HTTPFault()
    if spec.delay_s is not None:
        fault.delay.fixed_delay.FromNanoseconds(_ns(spec.delay_s))
        fault.delay.percentage.numerator = spec.delay_percent
        fault.delay.percentage.denominator = percent_pb2.FractionalPercent.HUNDRED
    if spec.abort_status is not None:
        fault.abort.http_status = spec.abort_status
        fault.abort.percentage.numerator = spec.abort_percent
        fault.abort.percentage.denominator = percent_pb2.FractionalPercent.HUNDRED
    return fault


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _retry_policy(spec: RetrySpec, policy: route_components_pb2.RetryPolicy) -> None:
    """Only what the policy says is set; the rest stays Envoy's default (route_components.proto,
    RetryPolicy: one retry, 25 ms backoff base, any host)."""
    policy.retry_on = ",".join(spec.retry_on)
    if spec.num_retries is not None:
        policy.num_retries.value = spec.num_retries
    if spec.per_try_timeout_s is not None:
        policy.per_try_timeout.FromNanoseconds(_ns(spec.per_try_timeout_s))
    if spec.backoff_base_s is not None:
        policy.retry_back_off.base_interval.FromNanoseconds(_ns(spec.backoff_base_s))
        if spec.backoff_max_s is not None:
            policy.retry_back_off.max_interval.FromNanoseconds(_ns(spec.backoff_max_s))
    policy.retriable_status_codes.extend(spec.retriable_status_codes)
    if spec.different_host:
        predicate = policy.retry_host_predicate.add()
        predicate.name = PREVIOUS_HOSTS
        # Deterministic packing keeps the route's bytes, and so the snapshot version, stable.
        predicate.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate(), deterministic=True)
        if spec.host_selection_attempts is not None:
            policy.host_selection_retry_max_attempts = spec.host_selection_attempts


def _hash_policy(spec: HashPolicySpec, policy: route_components_pb2.RouteAction.HashPolicy) -> None:
    policy.terminal = spec.terminal
    if spec.source is HashSource.HEADER:
        policy.header.header_name = spec.name
    elif spec.source is HashSource.COOKIE:
        policy.cookie.name = spec.name
        # With a ttl Envoy sets the cookie on the response when the request has none
        # (RouteAction.HashPolicy.Cookie.ttl); without one it only hashes an existing cookie.
        if spec.cookie_ttl_s is not None:
            policy.cookie.ttl.FromNanoseconds(_ns(spec.cookie_ttl_s))
        if spec.cookie_path is not None:
            policy.cookie.path = spec.cookie_path
    elif spec.source is HashSource.QUERY_PARAMETER:
        policy.query_parameter.name = spec.name
    else:
        policy.connection_properties.source_ip = True


def build_route_configuration(spec: RouteConfigSpec) -> route_pb2.RouteConfiguration:
    config = route_pb2.RouteConfiguration(name=spec.name)
    for vhost_spec in spec.virtual_hosts:
        vhost = config.virtual_hosts.add()
        vhost.name = vhost_spec.name
        vhost.domains.extend(vhost_spec.domains)
        # Order is meaning here: Envoy takes the first route that matches (route_components.proto,
        # VirtualHost.routes).
        vhost.routes.extend(_route(r) for r in vhost_spec.routes)
    return config
