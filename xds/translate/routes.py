"""RouteConfigSpec -> envoy.config.route.v3.RouteConfiguration."""

from __future__ import annotations

from typing import Final

from envoy.config.route.v3 import route_components_pb2, route_pb2

from xds.policy.desired import HeaderMatchSpec, RouteConfigSpec, RouteSpec

# What counts as retriable (router filter docs, "x-envoy-retry-on"): upstream 5xx, a reset before response
# headers, and a failed connect, which together cover a dead or restarting endpoint without retrying 4xx.
RETRY_ON: Final = "5xx,reset,connect-failure"

# A route whose backends are all gone still needs an action (route_components.proto, Route.action is a
# required oneof). 503 is what Envoy itself answers when a cluster has no healthy host.
NO_BACKEND_STATUS: Final = 503


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
    if spec.timeout_s is not None:
        # Unset means Envoy's default of 15 s; 0 disables the timeout (RouteAction.timeout).
        action.timeout.FromNanoseconds(round(spec.timeout_s * 1e9))
    if spec.retries > 0:
        action.retry_policy.retry_on = RETRY_ON
        action.retry_policy.num_retries.value = spec.retries
    return route


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
