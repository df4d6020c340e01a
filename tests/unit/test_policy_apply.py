from __future__ import annotations

import textwrap

from xds.model.service import Catalog, Endpoint, Service, ServiceName
from xds.policy.apply import apply_policy, cluster_name, explain_warnings
from xds.policy.desired import (
    ClusterSpec,
    HeaderMatchSpec,
    LbPolicy,
    ListenerSpec,
    RouteConfigSpec,
    RouteSpec,
    VirtualHostSpec,
    WeightedClusterSpec,
)
from xds.policy.load import parse_document
from xds.policy.schema import BackendRef, HeaderMatch, ListenerPolicy, Policy, RoutePolicy, ServicePolicy
from xds.policy.weights import TOTAL_WEIGHT

V1 = Endpoint(host="10.0.0.1", port=80, metadata=(("version", "v1"),))
V2 = Endpoint(host="10.0.0.2", port=80, metadata=(("version", "v2"), ("zone", "a")))
API = Endpoint(host="10.0.0.3", port=81)
CATALOG = Catalog((Service(ServiceName("web"), (V1, V2)), Service(ServiceName("api"), (API,))))


def route(*backends: BackendRef, name: str = "r") -> RoutePolicy:
    return RoutePolicy(name, backends=backends)


def listener(name: str, *routes: RoutePolicy, port: int = 10000,
             groups: frozenset[str] | None = None) -> ListenerPolicy:
    return ListenerPolicy(name, "127.0.0.1", port=port, groups=groups, routes=routes)


def test_cluster_names() -> None:
    assert cluster_name("web", ()) == "web"
    assert cluster_name("web", (("zone", "a"), ("version", "v2"))) == "web|version=v2,zone=a"


def test_listener_route_config_and_virtual_host_share_the_listener_name() -> None:
    policy = Policy(listeners=(listener("ingress", route(BackendRef("api"))),))
    state = apply_policy(CATALOG, policy, group="any")
    assert state.listeners == (ListenerSpec("ingress", "127.0.0.1", 10000, route_config="ingress"),)
    assert state.route_configs == (
        RouteConfigSpec("ingress", (VirtualHostSpec("ingress", ("*",), (
            RouteSpec("r", backends=(WeightedClusterSpec("api", TOTAL_WEIGHT),)),
        )),)),
    )
    assert state.clusters == (ClusterSpec("api", "api", endpoints=(API,)),)


def test_subsets_select_matching_endpoints() -> None:
    policy = Policy(listeners=(listener("ingress", route(
        BackendRef("web", (("version", "v1"),), weight=90),
        BackendRef("web", (("version", "v2"), ("zone", "a")), weight=10),
        BackendRef("web", weight=0),
    )),))
    state = apply_policy(CATALOG, policy, group="g")
    by_name = {c.name: c for c in state.clusters}
    assert list(by_name) == ["web", "web|version=v1", "web|version=v2,zone=a"]
    assert by_name["web"].endpoints == (V1, V2)
    assert by_name["web|version=v1"].endpoints == (V1,)
    assert by_name["web|version=v1"].subset == (("version", "v1"),)
    assert by_name["web|version=v2,zone=a"].endpoints == (V2,)
    (rc,) = state.route_configs
    assert rc.virtual_hosts[0].routes[0].backends == (
        WeightedClusterSpec("web|version=v1", 90),
        WeightedClusterSpec("web|version=v2,zone=a", 10),
        WeightedClusterSpec("web", 0),  # kept: the cluster stays warm for a later shift
    )


def test_service_settings_apply_to_every_subset_cluster() -> None:
    policy = Policy(
        services=(ServicePolicy("web", LbPolicy.MAGLEV, connect_timeout_s=0.25, http2=True),),
        listeners=(listener("l", route(BackendRef("web", (("version", "v1"),)), BackendRef("api"))),),
    )
    clusters = {c.name: c for c in apply_policy(CATALOG, policy, group="g").clusters}
    v1 = clusters["web|version=v1"]
    assert (v1.lb_policy, v1.connect_timeout_s, v1.http2) == (LbPolicy.MAGLEV, 0.25, True)
    api = clusters["api"]  # no ServicePolicy: defaults
    assert (api.lb_policy, api.connect_timeout_s, api.http2) == (LbPolicy.ROUND_ROBIN, 1.0, False)


def test_unknown_service_gives_an_empty_cluster() -> None:
    unknown_subset = BackendRef("web", (("version", "v9"),))
    policy = Policy(listeners=(listener("l", route(BackendRef("ghost"), unknown_subset)),))
    clusters = apply_policy(CATALOG, policy, group="g").clusters
    assert [(c.name, c.endpoints) for c in clusters] == [("ghost", ()), ("web|version=v9", ())]


def test_group_filtering() -> None:
    policy = Policy(listeners=(
        listener("everyone", route(BackendRef("api")), port=1),
        listener("front", route(BackendRef("web")), port=2, groups=frozenset({"frontend"})),
        listener("back", route(BackendRef("web", (("version", "v2"),))), port=3,
                 groups=frozenset({"backend", "batch"})),
    ))
    front = apply_policy(CATALOG, policy, group="frontend")
    assert [x.name for x in front.listeners] == ["everyone", "front"]
    assert [c.name for c in front.clusters] == ["api", "web"]  # only what this group's routes reference
    batch = apply_policy(CATALOG, policy, group="batch")
    assert [x.name for x in batch.listeners] == ["back", "everyone"]
    assert [c.name for c in batch.clusters] == ["api", "web|version=v2"]
    other = apply_policy(CATALOG, policy, group="other")
    assert [x.name for x in other.listeners] == ["everyone"]


def test_weights_are_normalised_and_duplicates_summed() -> None:
    policy = Policy(listeners=(listener("l", route(
        BackendRef("web", weight=1),
        BackendRef("api", weight=1),
        BackendRef("web", weight=1),  # same target again: one cluster with weight 2
    )),))
    (rc,) = apply_policy(CATALOG, policy, group="g").route_configs
    backends = rc.virtual_hosts[0].routes[0].backends
    assert backends == (WeightedClusterSpec("web", 67), WeightedClusterSpec("api", 33))


def test_every_route_sums_to_total_weight() -> None:
    policy = Policy(listeners=(listener("l", *(
        route(*(BackendRef("web", (("n", str(i)),), weight=i) for i in range(n)), BackendRef("api", weight=3),
              name=f"r{n}")
        for n in range(1, 12)
    )),))
    (rc,) = apply_policy(CATALOG, policy, group="g").route_configs
    for r in rc.virtual_hosts[0].routes:
        assert sum(b.weight for b in r.backends) == TOTAL_WEIGHT


def test_route_fields_are_carried_over() -> None:
    policy = Policy(listeners=(ListenerPolicy("l", port=1, domains=("a.example", "b.example"), routes=(
        RoutePolicy("first", "/api",
                    headers=(HeaderMatch("x-canary", "yes"), HeaderMatch("x-debug", invert=True)),
                    backends=(BackendRef("api"),), timeout_s=2.5, retries=3),
        RoutePolicy("second", backends=(BackendRef("web"),)),
    )),))
    state = apply_policy(CATALOG, policy, group="g")
    (vh,) = state.route_configs[0].virtual_hosts
    assert vh.domains == ("a.example", "b.example")
    assert [r.name for r in vh.routes] == ["first", "second"]  # evaluation order kept
    first = vh.routes[0]
    assert (first.prefix, first.timeout_s, first.retries) == ("/api", 2.5, 3)
    assert first.headers == (HeaderMatchSpec("x-canary", "yes"), HeaderMatchSpec("x-debug", invert=True))
    assert state.listeners[0].address == "0.0.0.0"


def test_deterministic_regardless_of_input_order() -> None:
    text = textwrap.dedent("""
        services:
          - name: web
            endpoints:
              - {address: 10.0.0.2:80, metadata: {version: v2}}
              - {address: 10.0.0.1:80, metadata: {version: v1}}
          - name: api
        listeners:
          - name: z
            port: 2
            routes: [{backends: [{service: web, subset: {version: v2}, weight: 50},
                                 {service: api, weight: 50}]}]
          - name: a
            port: 1
            routes: [{backends: [{service: web, subset: {version: v1}, weight: 3}]}]
    """)
    catalog, policy = parse_document(text, where="f")
    state = apply_policy(catalog, policy, group="g")
    assert state == apply_policy(catalog, policy, group="g")
    assert [c.name for c in state.clusters] == ["api", "web|version=v1", "web|version=v2"]
    assert [x.name for x in state.listeners] == ["a", "z"]
    assert [r.name for r in state.route_configs] == ["a", "z"]
    reordered = Policy(policy.services, tuple(reversed(policy.listeners)))
    assert apply_policy(catalog, reordered, group="g") == state


def test_explain_warnings() -> None:
    catalog = Catalog((*CATALOG.services, Service(ServiceName("empty"))))
    policy = Policy(listeners=(
        listener("l", route(BackendRef("ghost"), BackendRef("web", (("version", "v3"),)), BackendRef("empty"),
                            BackendRef("web", (("version", "v1"),)), BackendRef("ghost"))),
    ))
    assert explain_warnings(catalog, policy) == [
        "listener 'l' route 'r': service 'ghost' is not in the catalog; its cluster will have no endpoints "
        "until a source provides them",
        "listener 'l' route 'r': subset version=v3 of service 'web' matches none of its 2 endpoints",
        "listener 'l' route 'r': service 'empty' has no endpoints",
    ]
    assert explain_warnings(CATALOG, Policy(listeners=(listener("l", route(BackendRef("api"))),))) == []


def test_protocol_and_dns_follow_the_endpoints() -> None:
    from xds.model.service import Endpoint, Service, ServiceName
    from xds.policy.schema import BackendRef, ListenerPolicy, Policy, RoutePolicy, ServicePolicy

    catalog = Catalog((
        Service(ServiceName("grpc"), (Endpoint("10.0.0.1", 80, metadata=(("protocol", "http2"),)),
                                      Endpoint("10.0.0.2", 80, metadata=(("protocol", "http2"),)))),
        Service(ServiceName("mixed"), (Endpoint("10.0.0.3", 80, metadata=(("protocol", "http2"),)),
                                       Endpoint("10.0.0.4", 80))),
        Service(ServiceName("external"), (Endpoint("api.example.com", 443),)),
    ))
    routes = tuple(RoutePolicy(n, f"/{n}", backends=(BackendRef(n, weight=100),))
                   for n in ("grpc", "mixed", "external"))
    policy = Policy((ServicePolicy("grpc"), ServicePolicy("mixed"), ServicePolicy("external")),
                    (ListenerPolicy("l", port=1, routes=routes),))
    clusters = {c.name: c for c in apply_policy(catalog, policy, group="g").clusters}
    assert clusters["grpc"].http2 and not clusters["mixed"].http2  # only when every instance says so
    assert clusters["external"].dns and not clusters["grpc"].dns
