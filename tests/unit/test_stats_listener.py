"""The opt-in Prometheus stats listener (issue 14 item 3; xds/translate/stats_listener.py): what it routes,
which clients get it, and the bootstrap cluster it needs."""

from __future__ import annotations

import pytest
import yaml
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from xds.bootstrap import render_bootstrap
from xds.cache.node import client_key
from xds.cache.store import SnapshotStore
from xds.pipeline import World, builder_for
from xds.policy.load import parse_document
from xds.translate.delivery import ClientKind
from xds.translate.stats_listener import (
    ADMIN_CLUSTER_NAME,
    STATS_LISTENER_NAME,
    StatsListenerSpec,
    build_stats_listener,
)
from xds.typeurls import LISTENER

CATALOG = """
services:
  - name: web
    endpoints: [{address: 10.0.0.1:80}]
listeners:
  - name: public
    address: 0.0.0.0
    port: 8080
    routes: [{backends: [{service: web}]}]
"""
SPEC = StatsListenerSpec(port=15090)


def _world(spec: StatsListenerSpec | None) -> World:
    catalog, policy = parse_document(CATALOG, where="catalog.yaml")
    return World(catalog=catalog, policy=policy, stats_listener=spec)


def test_routes_only_the_stats_path_to_the_admin_cluster() -> None:
    listener = build_stats_listener(SPEC)
    assert listener.address.socket_address.address == "0.0.0.0"
    assert listener.address.socket_address.port_value == 15090
    manager = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert manager.normalize_path.value and manager.merge_slashes
    config = manager.route_config
    # An Envoy whose bootstrap lacks envoy_admin must not NACK the whole LDS update for it.
    assert config.HasField("validate_clusters") and not config.validate_clusters.value
    (stats, other) = config.virtual_hosts[0].routes
    assert stats.match.path == "/stats/prometheus" and stats.route.cluster == ADMIN_CLUSTER_NAME
    assert other.match.prefix == "/" and other.direct_response.status == 404


@pytest.mark.parametrize(("kind", "expected"), [
    (ClientKind.ENVOY_ADS, True), (ClientKind.ENVOY_SINGLE, True), (ClientKind.GRPC, False)])
def test_envoys_get_it_and_proxyless_grpc_clients_do_not(kind: ClientKind, expected: bool) -> None:
    store = SnapshotStore()
    store.publish(builder_for(_world(SPEC)))
    snapshot = store.get(client_key("edge", kind))
    assert snapshot is not None
    assert (snapshot.get(LISTENER, STATS_LISTENER_NAME) is not None) is expected


def test_off_by_default() -> None:
    store = SnapshotStore()
    store.publish(builder_for(_world(None)))
    snapshot = store.get("edge")
    assert snapshot is not None and snapshot.get(LISTENER, STATS_LISTENER_NAME) is None
    assert snapshot.get(LISTENER, "public") is not None


def test_bootstrap_has_the_admin_cluster_and_node_group_tag() -> None:
    parsed = yaml.safe_load(render_bootstrap(node_id="n", cluster="edge", xds_address="127.0.0.1:1",
                                             admin_address="0.0.0.0:9901"))
    clusters = {c["name"]: c for c in parsed["static_resources"]["clusters"]}
    endpoint = clusters[ADMIN_CLUSTER_NAME]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    # An admin on every address is reached on loopback.
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    assert parsed["stats_config"]["stats_tags"] == [{"tag_name": "xds_node_group", "fixed_value": "edge"}]
    # With admin port 0 the port is unknown when the file is written: no cluster rather than a wrong one.
    parsed = yaml.safe_load(render_bootstrap(node_id="n", cluster="edge", xds_address="127.0.0.1:1",
                                             admin_address="127.0.0.1:0"))
    assert [c["name"] for c in parsed["static_resources"]["clusters"]] == ["xds_cluster"]
