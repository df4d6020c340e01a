"""Failover relative to the proxy's own locality (issue 8): the `locality` policy, the priorities computed
per proxy locality, the (group, locality) store key, its bounds, and `xds bootstrap --region/--zone`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from xds.bootstrap import BootstrapError, render_bootstrap
from xds.cache.node import located_key, split_key
from xds.cache.store import GroupLimitError, SnapshotStore
from xds.cli import main
from xds.model.service import Catalog, Endpoint, Locality, Service, ServiceName
from xds.pipeline import World, build_snapshot, builder_for
from xds.policy.apply import apply_policy, explain_warnings, locality_tier
from xds.policy.desired import DesiredState, LocalitySpec
from xds.policy.errors import PolicyError
from xds.policy.load import parse_document
from xds.policy.schema import BackendRef, ListenerPolicy, Policy, RoutePolicy, ServicePolicy
from xds.server.limits import LimitExceededError, StreamLimits, check_node
from xds.translate.clusters import build_cluster
from xds.translate.endpoints import build_load_assignment
from xds.typeurls import ENDPOINT

A = Locality("r1", "a")
B = Locality("r1", "b")
FAR = Locality("r2", "c")
ENDPOINTS = (Endpoint("10.0.0.1", 80, locality=A), Endpoint("10.0.1.1", 80, locality=B),
             Endpoint("10.2.0.1", 80, locality=FAR))


def _world(locality: LocalitySpec | None, endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> World:
    catalog = Catalog(services=(Service(ServiceName("web"), endpoints),))
    policy = Policy(services=(ServicePolicy("web", locality=locality),), listeners=(
        ListenerPolicy("edge", port=10000, routes=(RoutePolicy("r", "/", backends=(BackendRef("web"),)),)),))
    return World(catalog, policy)


def _apply(world: World, proxy: Locality) -> DesiredState:
    return apply_policy(world.catalog, world.policy, group="g", locality=proxy)


def _priorities(world: World, proxy: Locality) -> dict[str, int]:
    desired = apply_policy(world.catalog, world.policy, group="g", locality=proxy)
    cla = build_load_assignment(desired.clusters[0])
    return {lle.locality.zone: lle.priority for lle in cla.endpoints}


def test_the_policy_parses_and_defaults_to_off() -> None:
    _, policy = parse_document("services:\n  - name: web\n    locality: {failover: true, "
                               "overprovisioning_factor: 200}\n", where="c.yaml")
    assert policy.services[0].locality == LocalitySpec(failover=True, overprovisioning_factor=200)
    _, plain = parse_document("services:\n  - name: web\n", where="c.yaml")
    assert plain.services[0].locality is None
    # Unset: the catalog's priorities and no policy in the assignment (Envoy's 140).
    assert _priorities(_world(None), A) == {"a": 0, "b": 0, "c": 0}
    cla = build_load_assignment(_apply(_world(None), A).clusters[0])
    assert not cla.HasField("policy")


@pytest.mark.parametrize(("text", "reason"), [
    ("{overprovisioning_factor: 99}", "c.yaml:3:41: services[0].locality.overprovisioning_factor:"),
    ("{overprovisioning_factor: 1001}", "c.yaml:3:41: services[0].locality.overprovisioning_factor:"),
    ("{failover: yes please}", "c.yaml:3:26: services[0].locality.failover:"),
    ("{fail_over: true}", "c.yaml:3:16: services[0].locality.fail_over: unknown key 'fail_over' in locality; "
                         "did you mean 'failover'?"),
])
def test_located_errors(text: str, reason: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_document(f"services:\n  - name: web\n    locality: {text}\n", where="c.yaml")
    assert any(str(p).startswith(reason) for p in info.value.problems), info.value.problems


def test_tiers_follow_the_proxy() -> None:
    world = _world(LocalitySpec(failover=True))
    assert _priorities(world, A) == {"a": 0, "b": 1, "c": 2}
    assert _priorities(world, B) == {"b": 0, "a": 1, "c": 2}
    # Region 2 has one zone: its own first, then region 1's two zones together (contiguous priorities).
    assert _priorities(world, FAR) == {"c": 0, "a": 1, "b": 1}
    # A zone nobody has: the region is still preferred, and the empty tier is skipped.
    assert _priorities(world, Locality("r1", "z")) == {"a": 0, "b": 0, "c": 1}
    # No locality declared: the catalog's priorities, as without the policy.
    assert _priorities(world, Locality()) == {"a": 0, "b": 0, "c": 0}
    assert locality_tier(Locality("r9", "a"), A) == 2  # a zone name matches only within the region


def test_catalog_priorities_order_endpoints_within_a_tier() -> None:
    endpoints = (Endpoint("10.0.0.1", 80, locality=A, priority=1), Endpoint("10.0.0.2", 80, locality=A),
                 Endpoint("10.2.0.1", 80, locality=FAR))
    desired = _apply(_world(LocalitySpec(failover=True), endpoints), A)
    cla = build_load_assignment(desired.clusters[0])
    by_host = {lle.lb_endpoints[0].endpoint.address.socket_address.address: lle.priority
               for lle in cla.endpoints}
    assert by_host == {"10.0.0.2": 0, "10.0.0.1": 1, "10.2.0.1": 2}


def test_overprovisioning_factor_reaches_the_assignment() -> None:
    desired = _apply(_world(LocalitySpec(overprovisioning_factor=300)), A)
    assert build_load_assignment(desired.clusters[0]).policy.overprovisioning_factor.value == 300


@pytest.mark.parametrize("group", ["edge", "a|locality=", "web|locality=[1]", ""])
@pytest.mark.parametrize("where", [Locality(), A, Locality("r|locality=[\"x\"]", "", "s/1")])
def test_store_keys_round_trip(group: str, where: Locality) -> None:
    key = located_key(group, where)
    if where == Locality():
        assert key == group
    else:
        assert split_key(key) == (group, where)


def test_one_snapshot_per_locality_sharing_everything_but_the_assignment() -> None:
    world = _world(LocalitySpec(failover=True))
    build = builder_for(world)
    in_a, in_far = build(located_key("g", A), None), build(located_key("g", FAR), None)
    assert in_a.versions[ENDPOINT] != in_far.versions[ENDPOINT]
    for type_url, resources in in_a.resources.items():
        if type_url != ENDPOINT:
            # The donor hands over the very same serialized resources: serialize once per (group, locality).
            assert all(r is in_far.resources[type_url][name] for name, r in resources.items())
    # The same proxy locality in a service without failover: one assignment for everybody.
    plain = _world(None)
    assert (build_snapshot(plain, located_key("g", A)).versions
            == build_snapshot(plain, located_key("g", FAR)).versions)


def test_localities_count_against_the_group_cap() -> None:
    store = SnapshotStore(max_groups=2)
    store.publish(builder_for(_world(LocalitySpec(failover=True))))
    store.watch(located_key("g", A), lambda _: None)
    store.watch(located_key("g", B), lambda _: None)
    with pytest.raises(GroupLimitError):
        store.watch(located_key("g", FAR), lambda _: None)


def test_node_locality_is_bounded() -> None:
    limits = StreamLimits(max_node_locality_bytes=8)
    check_node(base_pb2.Node(id="n", locality=base_pb2.Locality(region="r1", zone="12345678")), limits)
    with pytest.raises(LimitExceededError) as info:
        check_node(base_pb2.Node(id="n", locality=base_pb2.Locality(sub_zone="123456789")), limits)
    assert info.value.limit == "max_node_locality_bytes"
    assert "node.locality.sub_zone is 9 bytes; the limit is 8" in str(info.value)


def test_bootstrap_locality() -> None:
    def node(region: str = "", zone: str = "") -> object:
        return yaml.safe_load(render_bootstrap(node_id="n", cluster="c", xds_address="127.0.0.1:1",
                                               region=region, zone=zone))["node"]

    assert node(region="r1", zone="a: #1") == {"id": "n", "cluster": "c",
                                              "locality": {"region": "r1", "zone": "a: #1"}}
    assert node() == {"id": "n", "cluster": "c"}


def test_custom_template_without_the_locality_placeholder_is_refused(tmp_path: Path) -> None:
    template = tmp_path / "t.yaml"
    template.write_text("node: {id: $node_id, cluster: $node_cluster}\n")
    render_bootstrap(node_id="n", cluster="c", xds_address="127.0.0.1:1", template=template)
    with pytest.raises(BootstrapError, match=r"\$node_locality"):
        render_bootstrap(node_id="n", cluster="c", xds_address="127.0.0.1:1", template=template, zone="a")


def test_render_and_bootstrap_take_a_locality(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("""
services:
  - name: web
    locality: {failover: true}
    endpoints:
      - {address: "10.0.0.1:80", locality: {region: r1, zone: a}}
      - {address: "10.2.0.1:80", locality: {region: r2, zone: c}}
listeners:
  - {name: ingress, port: 10000, routes: [{name: all, match: {prefix: /}, backends: [{service: web}]}]}
""")
    render = ["render", "--cluster", "edge", "--config", str(catalog), "--region", "r2", "--zone", "c"]
    assert main(render) == 0
    rendered = json.loads(capsys.readouterr().out)
    (eds,) = [t for t in rendered["types"] if t["type"] == "eds"]
    assert [(e["locality"]["zone"], e.get("priority", 0)) for e in eds["resources"][0]["endpoints"]] == [
        ("c", 0), ("a", 1)]
    assert main(["bootstrap", "--node-id", "n", "--cluster", "edge", "--zone", "a", "--region", "r1"]) == 0
    node = yaml.safe_load(capsys.readouterr().out)["node"]
    assert node["locality"] == {"region": "r1", "zone": "a"}
    with pytest.raises(SystemExit):
        main(["bootstrap", "--node-id", "n", "--cluster", "edge", "--zone", "z" * 257])
    assert "at most 256 bytes" in capsys.readouterr().err


def test_validate_warns_when_no_endpoint_has_a_locality() -> None:
    nowhere = (Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80))
    world = _world(LocalitySpec(failover=True), nowhere)
    assert explain_warnings(world.catalog, world.policy) == [
        "service 'web': locality.failover has no effect, since none of its endpoints declares a locality"]
    located = _world(LocalitySpec(failover=True))
    assert explain_warnings(located.catalog, located.policy) == []


_PLACES = st.builds(Locality, region=st.sampled_from(["", "r1", "r2"]), zone=st.sampled_from(["", "a", "b"]))


@settings(max_examples=200, deadline=None)
@given(places=st.lists(st.tuples(_PLACES, st.integers(0, 3)), min_size=1, max_size=8), proxy=_PLACES)
def test_priorities_are_contiguous_and_the_closest_tier_comes_first(
        places: list[tuple[Locality, int]], proxy: Locality) -> None:
    endpoints = tuple(Endpoint(f"10.0.0.{i}", 80, locality=where, priority=priority)
                      for i, (where, priority) in enumerate(places, 1))
    cla = build_load_assignment(_apply(_world(LocalitySpec(failover=True), endpoints), proxy).clusters[0])
    priorities = sorted({lle.priority for lle in cla.endpoints})
    assert priorities == list(range(len(priorities)))  # Envoy's rule: contiguous from 0
    if proxy != Locality():
        tiers = [(locality_tier(Locality(lle.locality.region, lle.locality.zone), proxy), lle.priority)
                 for lle in cla.endpoints]
        # A closer tier always gets an earlier priority than a farther one.
        for tier_a, priority_a in tiers:
            for tier_b, priority_b in tiers:
                if tier_a < tier_b:
                    assert priority_a < priority_b


# --- locality-weighted balancing and the health-check port (issue 8) ---------------------------------------

def _weights(text: str) -> LocalitySpec:
    document = f"services:\n  - name: web\n    locality: {{weights: {text}}}\n"
    spec = parse_document(document, where="c.yaml")[1].services[0].locality
    assert spec is not None
    return spec


def test_locality_weights_parse_with_the_first_match_winning() -> None:
    spec = _weights("[{region: r1, zone: a, weight: 70}, {region: r1, weight: 20}, {zone: c, weight: 10}]")
    assert [spec.weight_of(where) for where in (A, B, FAR, Locality("r9", "q"))] == [70, 20, 10, 1]


@pytest.mark.parametrize(("text", "reason"), [
    ("[{weight: 5}]", "c.yaml:3:26: services[0].locality.weights[0]: names no locality: give at least one"),
    ("[{zone: a, weight: 5}, {zone: a, weight: 6}]",
     "c.yaml:3:48: services[0].locality.weights[1]: repeats weights[0], whose weight always applies first"),
    ("[{zone: a, weight: 0}]", "c.yaml:3:44: services[0].locality.weights[0].weight: must be an integer "
                               "between 1 and 10000"),
    ("[{zone: a}]", "c.yaml:3:26: services[0].locality.weights[0]: missing required key 'weight'"),
    ("[{zone: a, wieght: 3}]", "c.yaml:3:36: services[0].locality.weights[0].wieght: unknown key 'wieght'"),
    ("[]", "c.yaml:3:25: services[0].locality.weights: must list at least one weights entry"),
    ("{zone: a}", "c.yaml:3:25: services[0].locality.weights: must be a list, got a mapping"),
])
def test_locality_weight_errors_are_located(text: str, reason: str) -> None:
    with pytest.raises(PolicyError) as info:
        _weights(text)
    assert any(str(p).startswith(reason) for p in info.value.problems), info.value.problems


def test_locality_weights_reach_the_assignment_and_the_cluster() -> None:
    world = _world(_weights("[{zone: a, weight: 70}, {region: r2, weight: 10}]"))
    desired = _apply(world, A)
    cla = build_load_assignment(desired.clusters[0])
    assert {lle.locality.zone: lle.load_balancing_weight.value for lle in cla.endpoints} == {
        "a": 70, "b": 1, "c": 10}
    assert build_cluster(desired.clusters[0]).common_lb_config.HasField("locality_weighted_lb_config")
    plain = _apply(_world(None), A)
    assert not build_cluster(plain.clusters[0]).common_lb_config.HasField("locality_weighted_lb_config")
    # Without locality weights each locality still carries one, the sum of its endpoint weights, which
    # Envoy ignores without locality_weighted_lb_config and gRPC clients need (issue 11).
    assert all(lle.load_balancing_weight.value == sum(e.load_balancing_weight.value for e in lle.lb_endpoints)
               for lle in build_load_assignment(plain.clusters[0]).endpoints)
    # Combined with failover, weights split each tier: the proxy's zone alone is priority 0.
    both = _apply(_world(LocalitySpec(failover=True, weights=_weights("[{zone: b, weight: 5}]").weights)), A)
    tiers = {(lle.priority, lle.locality.zone): lle.load_balancing_weight.value
             for lle in build_load_assignment(both.clusters[0]).endpoints}
    assert tiers == {(0, "a"): 1, (1, "b"): 5, (2, "c"): 1}


def test_xds_validate_warns_about_a_locality_no_weight_matches() -> None:
    world = _world(_weights("[{zone: a, weight: 70}]"))
    warnings = explain_warnings(world.catalog, world.policy)
    assert any("'r1/b'" in w and "weight 1" in w for w in warnings), warnings
    assert any("'r2/c'" in w for w in warnings), warnings
    assert not any("'r1/a'" in w for w in warnings), warnings


def test_health_check_port_overrides_the_probed_port_of_every_endpoint() -> None:
    _, policy = parse_document("services:\n  - name: web\n    health_check: {tcp: {}, port: 9901}\n",
                               where="c.yaml")
    check = policy.services[0].health_check
    assert check is not None and check.port == 9901
    world = World(_world(None).catalog, Policy(services=(ServicePolicy("web", health_check=check),),
                                               listeners=_world(None).policy.listeners))
    cla = build_load_assignment(_apply(world, A).clusters[0])
    ports = [(lb.endpoint.address.socket_address.port_value, lb.endpoint.health_check_config.port_value)
             for lle in cla.endpoints for lb in lle.lb_endpoints]
    assert ports == [(80, 9901)] * 3
    with pytest.raises(PolicyError) as info:
        parse_document("services:\n  - name: web\n    health_check: {tcp: {}, port: 65536}\n", where="c.yaml")
    assert str(info.value.problems[0]).startswith("c.yaml:3:35: services[0].health_check.port: must be an "
                                                  "integer between 1 and 65535")
