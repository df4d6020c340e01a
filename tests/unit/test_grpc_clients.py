"""Proxyless gRPC and single-type Envoy (issue 11 item 3): the listener kind, its checks, the snapshot
variants per client kind and what each variant puts on the wire."""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from xds.bootstrap import render_bootstrap
from xds.bootstrap_clients import grpc_bootstrap, single_type
from xds.cache.node import client_key, located_key, split_client, split_key
from xds.cache.snapshot import Snapshot
from xds.model.service import Locality
from xds.pipeline import World, build_snapshot
from xds.policy.errors import PolicyError
from xds.policy.load import parse_document
from xds.translate.delivery import ClientKind, client_kind
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

DOCUMENT = """
services:
  - name: greeter
    endpoints:
      - address: 127.0.0.1:50051
listeners:
  - name: ingress
    port: 10000
    routes:
      - name: all
        backends: [{service: greeter}]
  - name: greeter
    kind: grpc
    routes:
      - name: all
        timeout: 3s
        retries: 2
        backends: [{service: greeter}]
"""


def _world(text: str = DOCUMENT) -> World:
    catalog, policy = parse_document(textwrap.dedent(text).lstrip("\n"), where="catalog.yaml")
    return World(catalog=catalog, policy=policy)


def _problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        _world(text)
    return [str(p) for p in info.value.problems]


def test_client_kind_comes_from_the_stream_and_the_user_agent() -> None:
    assert client_kind(aggregated=True, user_agent="envoy") is ClientKind.ENVOY_ADS
    assert client_kind(aggregated=False, user_agent="envoy") is ClientKind.ENVOY_SINGLE
    assert client_kind(aggregated=True, user_agent="gRPC Go") is ClientKind.GRPC
    assert client_kind(aggregated=True, user_agent="gRPC C-core linux") is ClientKind.GRPC


@pytest.mark.parametrize("kind", list(ClientKind))
def test_store_keys_round_trip_with_a_locality(kind: ClientKind) -> None:
    where = Locality(region="r", zone="z")
    key = located_key(client_key("web|x", kind), where)
    group, locality = split_key(key)
    assert locality == where and split_client(group) == ("web|x", kind)


def test_each_client_kind_gets_its_own_listeners_and_config_sources() -> None:
    world = _world()
    envoy = build_snapshot(world, "edge")
    single = build_snapshot(world, client_key("edge", ClientKind.ENVOY_SINGLE), donor=envoy)
    grpc = build_snapshot(world, client_key("edge", ClientKind.GRPC), donor=single)
    assert set(envoy.of_type(LISTENER)) == set(single.of_type(LISTENER)) == {"ingress"}
    assert set(grpc.of_type(LISTENER)) == {"greeter"} and set(grpc.of_type(ROUTE)) == {"greeter"}

    def eds_source(snapshot: Snapshot) -> str | None:
        cluster = cluster_pb2.Cluster.FromString(snapshot.get(CLUSTER, "greeter").body)
        return cluster.eds_cluster_config.eds_config.WhichOneof("config_source_specifier")

    assert eds_source(envoy) == "ads" and eds_source(grpc) == "ads"
    assert eds_source(single) == "api_config_source"
    api = cluster_pb2.Cluster.FromString(single.get(CLUSTER, "greeter").body).eds_cluster_config.eds_config
    assert api.api_config_source.grpc_services[0].envoy_grpc.cluster_name == "xds_cluster"
    listener = listener_pb2.Listener.FromString(single.get(LISTENER, "ingress").body)
    manager = hcm.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert manager.rds.config_source.WhichOneof("config_source_specifier") == "api_config_source"
    # What does not depend on the client kind is the same object, serialized once for every variant.
    assert single.get(ENDPOINT, "greeter") is envoy.get(ENDPOINT, "greeter")
    assert grpc.get(ENDPOINT, "greeter") is envoy.get(ENDPOINT, "greeter")


def test_grpc_listener_is_an_api_listener_with_grpc_route_semantics() -> None:
    snapshot = build_snapshot(_world(), client_key("edge", ClientKind.GRPC))
    listener = listener_pb2.Listener.FromString(snapshot.get(LISTENER, "greeter").body)
    assert not listener.HasField("address") and not listener.filter_chains
    manager = hcm.HttpConnectionManager()
    listener.api_listener.api_listener.Unpack(manager)
    assert manager.rds.config_source.WhichOneof("config_source_specifier") == "ads"
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]
    action = route_pb2.RouteConfiguration.FromString(
        snapshot.get(ROUTE, "greeter").body).virtual_hosts[0].routes[0].route
    assert action.max_stream_duration.max_stream_duration.seconds == 3 and not action.HasField("timeout")
    assert action.retry_policy.retry_on == "unavailable" and action.retry_policy.num_retries.value == 2
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(snapshot.get(ENDPOINT, "greeter").body)
    assert all(lle.HasField("locality") and lle.load_balancing_weight.value >= 1 for lle in cla.endpoints)


def test_grpc_listener_fields_are_checked() -> None:
    base = DOCUMENT.replace("    kind: grpc\n", "    kind: grpc\n    port: 8080\n")
    assert any("listeners[1].port: a grpc listener has no `port`" in p for p in _problems(base))
    no_port = DOCUMENT.replace("    port: 10000\n", "")
    assert any("listeners[0].port: an http listener needs `port`" in p for p in _problems(no_port))


@pytest.mark.parametrize("policy", ["random", "maglev", "least_request"])
def test_lb_policies_grpc_clients_reject_are_refused(policy: str) -> None:
    text = DOCUMENT.replace("  - name: greeter\n    endpoints:",
                            f"  - name: greeter\n    lb_policy: {policy}\n    endpoints:")
    assert any("services[0].lb_policy:" in p and "grpc listener 'greeter'" in p
               for p in _problems(text))


def test_bootstraps_for_other_clients() -> None:
    text = single_type(render_bootstrap(node_id="n", cluster="c", xds_address="127.0.0.1:18000"))
    assert "ads_config" not in text and "ads: {}" not in text and "&id" not in text
    document = json.loads(grpc_bootstrap(node_id="n", cluster="c", xds_address="127.0.0.1:18000", zone="z"))
    server = document["xds_servers"][0]
    assert server["server_uri"] == "127.0.0.1:18000" and server["channel_creds"] == [{"type": "insecure"}]
    assert document["node"] == {"id": "n", "cluster": "c", "locality": {"zone": "z"}}


def test_variant_benchmark_shows_each_variant_serialized_once(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.client_variants import main

    assert main(["--services", "20", "--endpoints", "2", "--streams", "3"]) == 0
    lines = {line.split(":")[0].strip(): line for line in capsys.readouterr().out.splitlines()}
    # Endpoints are shared by every variant; a second group's variants serialize nothing at all.
    assert "eds 0/20" in lines["edge|client=envoy-single"] and "eds 0/20" in lines["edge|client=grpc"]
    assert "cds 0/20" in lines["edge|client=grpc"]  # ADS Envoy and gRPC clients share Clusters
    for kind in ("other", "other|client=envoy-single", "other|client=grpc"):
        assert "cds 0/20, eds 0/20, lds 0/1, rds 0/1" in lines[kind], lines[kind]


def test_single_type_sources_name_the_configured_xds_cluster() -> None:
    world = replace(_world(), xds_cluster="control-plane")
    snapshot = build_snapshot(world, client_key("edge", ClientKind.ENVOY_SINGLE))
    cluster = cluster_pb2.Cluster.FromString(snapshot.get(CLUSTER, "greeter").body)
    source = cluster.eds_cluster_config.eds_config.api_config_source
    assert source.grpc_services[0].envoy_grpc.cluster_name == "control-plane"


def test_single_type_sds_references_name_the_per_type_source() -> None:
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    from xds.policy.desired import UpstreamMeshTlsSpec
    from xds.translate.delivery import delivery_for
    from xds.translate.mesh_tls import upstream_transport_socket

    socket = upstream_transport_socket(UpstreamMeshTlsSpec(peer_identity="spiffe://x/group/web"),
                                       delivery_for(ClientKind.ENVOY_SINGLE))
    context = tls_pb2.UpstreamTlsContext()
    socket.typed_config.Unpack(context)
    sds = context.common_tls_context.tls_certificate_sds_secret_configs[0].sds_config
    assert sds.api_config_source.grpc_services[0].envoy_grpc.cluster_name == "xds_cluster"


def test_grpc_listener_retries_name_grpc_statuses_only() -> None:
    http_words = DOCUMENT.replace("        retries: 2\n", "        retries: {num_retries: 2}\n")
    assert any("listeners[1].routes[0].retries.retry_on: gRPC clients retry on gRPC status names only" in p
               for p in _problems(http_words))
    statuses = DOCUMENT.replace("        retries: 2\n",
                                "        retries: {num_retries: 2, retry_on: [unavailable, cancelled]}\n")
    snapshot = build_snapshot(_world(statuses), client_key("edge", ClientKind.GRPC))
    action = route_pb2.RouteConfiguration.FromString(
        snapshot.get(ROUTE, "greeter").body).virtual_hosts[0].routes[0].route
    assert action.retry_policy.retry_on == "unavailable,cancelled"
