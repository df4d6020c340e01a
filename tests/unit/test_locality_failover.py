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
