"""`lb_policy: client_side_weighted` (issue 10, proxy-side mode; docs/load-aware.md): its knobs under
`load_balancer` are read, bounded and refused with a location where they do not apply; the Cluster gets
Envoy's ClientSideWeightedRoundRobin as its typed `load_balancing_policy` and no `lb_policy` enum value; the
ORCA header the harness sends is one Envoy parses, and the weight formula the e2e test predicts with is
Envoy's."""

from __future__ import annotations

import base64
import json

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (
    client_side_weighted_round_robin_pb2 as cswrr_pb2,
)
from hypothesis import given
from hypothesis import strategies as st

from harness.orca_report import OrcaLoad, expected_shares, expected_weight
from tests.unit.service_settings import loaded_service as _service
from tests.unit.service_settings import service_problems as _problems
from xds.data.orca.v3 import orca_load_report_pb2
from xds.model.service import Catalog
from xds.policy.apply import explain_warnings
from xds.policy.desired import ClusterSpec, LbPolicy, LoadBalancerSpec
from xds.policy.load import parse_document
from xds.translate.client_side_weighted import POLICY_NAME
from xds.translate.clusters import build_cluster, cluster_key

_ALL_KNOBS = ("lb_policy: client_side_weighted\nload_balancer: {blackout_period: 1s, "
              "weight_expiration_period: 3m, weight_update_period: 250ms, error_utilization_penalty: 0.5, "
              "oob_reporting: true, oob_reporting_period: 2s, healthy_panic_threshold: 0}")


def _config(cluster: cluster_pb2.Cluster) -> cswrr_pb2.ClientSideWeightedRoundRobin:
    (policy,) = cluster.load_balancing_policy.policies
    assert policy.typed_extension_config.name == POLICY_NAME
    config = cswrr_pb2.ClientSideWeightedRoundRobin()
    assert policy.typed_extension_config.typed_config.Unpack(config)
    return config


def test_every_knob_is_read() -> None:
    service = _service(_ALL_KNOBS)
    assert service.lb_policy is LbPolicy.CLIENT_SIDE_WEIGHTED
    assert service.load_balancer == LoadBalancerSpec(
        blackout_period_s=1.0, weight_expiration_period_s=180.0, weight_update_period_s=0.25,
        error_utilization_penalty=0.5, oob_reporting=True, oob_reporting_period_s=2.0,
        healthy_panic_threshold=0)


def test_the_cluster_gets_the_typed_policy_and_no_enum_value() -> None:
    spec = ClusterSpec(name="web", service="web", lb_policy=LbPolicy.CLIENT_SIDE_WEIGHTED,
                       load_balancer=_service(_ALL_KNOBS).load_balancer)
    cluster = build_cluster(spec)
    # lb_policy stays at its zero value: Envoy reads only load_balancing_policy, and the enum value
    # LOAD_BALANCING_POLICY_CONFIG is deprecated (cluster.proto).
    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert not cluster.HasField("round_robin_lb_config")
    config = _config(cluster)
    assert config.blackout_period.ToMilliseconds() == 1000
    assert config.weight_expiration_period.ToSeconds() == 180
    assert config.weight_update_period.ToMilliseconds() == 250
    assert config.error_utilization_penalty.value == pytest.approx(0.5)
    assert config.enable_oob_load_report.value is True
    assert config.oob_reporting_period.ToMilliseconds() == 2000
    assert cluster.common_lb_config.healthy_panic_threshold.value == 0.0
    assert cluster.common_lb_config.HasField("healthy_panic_threshold")


def test_unset_knobs_are_envoys_defaults() -> None:
    bare = build_cluster(ClusterSpec(name="web", service="web", lb_policy=LbPolicy.CLIENT_SIDE_WEIGHTED))
    assert _config(bare) == cswrr_pb2.ClientSideWeightedRoundRobin()
    assert not bare.HasField("common_lb_config")
    # Byte-stable: the snapshot version hash depends on the Cluster's bytes.
    again = build_cluster(ClusterSpec(name="web", service="web", lb_policy=LbPolicy.CLIENT_SIDE_WEIGHTED))
    assert bare.SerializeToString(deterministic=True) == again.SerializeToString(deterministic=True)


def test_other_policies_keep_their_enum_and_no_typed_policy() -> None:
    cluster = build_cluster(ClusterSpec(name="web", service="web", lb_policy=LbPolicy.LEAST_REQUEST))
    assert cluster.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert not cluster.HasField("load_balancing_policy")


def test_cluster_key_sees_the_policy_and_its_knobs() -> None:
    def key(**knobs: float) -> object:
        return cluster_key(ClusterSpec(name="web", service="web", lb_policy=LbPolicy.CLIENT_SIDE_WEIGHTED,
                                       load_balancer=LoadBalancerSpec(**knobs) if knobs else None))
    plain = cluster_key(ClusterSpec(name="web", service="web"))
    assert len({plain, key(), key(blackout_period_s=1.0), key(blackout_period_s=2.0)}) == 4


@pytest.mark.parametrize(("settings", "expected"), [
    ("load_balancer: {blackout_period: 1s}",
     "c.yaml:3:38: services[0].load_balancer.blackout_period: applies to lb_policy `client_side_weighted` "
     "only; this service uses `round_robin`"),
    ("lb_policy: least_request\nload_balancer: {oob_reporting: false}",
     "c.yaml:4:36: services[0].load_balancer.oob_reporting: applies to lb_policy `client_side_weighted` "
     "only; this service uses `least_request`"),
    ("lb_policy: client_side_weighted\nload_balancer: {slow_start_window: 10s}",
     "c.yaml:4:40: services[0].load_balancer.slow_start_window: applies to lb_policy `round_robin` and "
     "`least_request` only; this service uses `client_side_weighted`"),
    ("lb_policy: client_side_weighted\nload_balancer: {choice_count: 3}",
     "c.yaml:4:35: services[0].load_balancer.choice_count: applies to lb_policy `least_request` only; this "
     "service uses `client_side_weighted`"),
    ("lb_policy: client_side_weighted\nload_balancer: {weight_update_period: 50ms}",
     "c.yaml:4:43: services[0].load_balancer.weight_update_period: must be at least 100ms (Envoy raises "
     "shorter periods to it), got 50ms"),
    ("lb_policy: client_side_weighted\nload_balancer: {oob_reporting_period: 5s}",
     "c.yaml:4:43: services[0].load_balancer.oob_reporting_period: applies only with `oob_reporting: true` "
     "(reports come in response headers otherwise)"),
    ("lb_policy: client_side_weighted\nload_balancer: {oob_reporting: false, oob_reporting_period: 5s}",
     "c.yaml:4:65: services[0].load_balancer.oob_reporting_period: applies only with `oob_reporting: true` "
     "(reports come in response headers otherwise)"),
    ("lb_policy: client_side_weighted\nload_balancer: {error_utilization_penalty: -0.5}",
     "c.yaml:4:48: services[0].load_balancer.error_utilization_penalty: must be a number from 0 to 100, got "
     "number -0.5"),
    ("lb_policy: client_side_weighted\nload_balancer: {error_utilization_penalty: .nan}",
     "c.yaml:4:48: services[0].load_balancer.error_utilization_penalty: must be a number from 0 to 100, got "
     "number nan"),
    ("lb_policy: client_side_weighted\nload_balancer: {error_utilization_penalty: yes}",
     "c.yaml:4:48: services[0].load_balancer.error_utilization_penalty: must be a number from 0 to 100, got "
     "boolean true"),
    # Envoy 1.40 rejects the cluster: "load_balancing_policy cannot be combined with partial fields
    # (zone_aware_lb_config, locality_weighted_lb_config, ...) of common_lb_config".
    ("lb_policy: client_side_weighted\nlocality: {weights: [{zone: a, weight: 80}]}",
     "c.yaml:4:25: services[0].locality.weights: cannot be combined with lb_policy `client_side_weighted`: "
     "Envoy rejects locality-weighted balancing next to a typed load balancing policy; use failover, or "
     "another lb_policy"),
    ("lb_policy: client_side_weighted\nload_balancer: {weight_expiration_period: 61m}",
     "c.yaml:4:47: services[0].load_balancer.weight_expiration_period: must be more than 0 and at most "
     "3600s, got '61m'"),
])
def test_located_errors(settings: str, expected: str) -> None:
    assert _problems(settings) == [expected]


def test_locality_failover_works_with_the_policy() -> None:
    # Failover is EDS priorities, which every load balancer reads; only locality weights are refused.
    service = _service("lb_policy: client_side_weighted\nlocality: {failover: true}")
    assert service.locality is not None and service.locality.failover


@given(st.floats(min_value=0.0, max_value=100.0, allow_nan=False))
def test_error_penalty_within_bounds_is_accepted(penalty: float) -> None:
    # Fixed-point text: PyYAML reads an exponent without a dot ("1e-05") as a string, which a number key
    # refuses, as the published schema does.
    text = f"{penalty:.6f}"
    service = _service("lb_policy: client_side_weighted\n"
                       f"load_balancer: {{error_utilization_penalty: {text}}}")
    assert service.load_balancer == LoadBalancerSpec(error_utilization_penalty=float(text))


def test_a_hash_policy_on_a_client_side_weighted_service_is_a_warning() -> None:
    catalog, policy = parse_document("""
services:
  - {name: web, lb_policy: client_side_weighted, endpoints: [{address: "127.0.0.1:8080"}]}
listeners:
  - {name: edge, port: 10000, routes: [{hash_policy: [{header: x-user}], backends: [{service: web}]}]}
""", where="c.yaml")
    warnings = explain_warnings(catalog or Catalog(), policy)
    assert any("hash_policy has no effect on service 'web', whose lb_policy is client_side_weighted" in w
               for w in warnings), warnings


# --- the harness's ORCA header and Envoy's weight formula (harness/orca_report.py) ---------------------


def test_text_header_is_envoys_native_format() -> None:
    load = OrcaLoad(cpu_utilization=0.9, mem_utilization=0.3, rps_fractional=100)
    assert load.header_value("TEXT") == "TEXT cpu_utilization=0.9,mem_utilization=0.3,rps_fractional=100"


def test_json_and_binary_headers_carry_the_same_report() -> None:
    load = OrcaLoad(cpu_utilization=0.25, mem_utilization=0.5, rps_fractional=42.5, eps=1.5)
    prefix, _, body = load.header_value("BIN").partition(" ")
    assert prefix == "BIN"
    binary = orca_load_report_pb2.OrcaLoadReport.FromString(base64.b64decode(body))
    prefix, _, body = load.header_value("JSON").partition(" ")
    assert prefix == "JSON"
    assert json.loads(body) == {"cpuUtilization": 0.25, "memUtilization": 0.5, "rpsFractional": 42.5,
                                "eps": 1.5}
    assert binary == load.proto()
    assert (binary.cpu_utilization, binary.mem_utilization, binary.rps_fractional, binary.eps) == (
        0.25, 0.5, 42.5, 1.5)


@pytest.mark.parametrize("bad", [float("nan"), -0.1, float("inf")])
def test_a_bad_load_is_refused_before_it_is_sent(bad: float) -> None:
    with pytest.raises(ValueError, match="cpu_utilization"):
        OrcaLoad(cpu_utilization=bad, rps_fractional=1)


def test_weight_formula() -> None:
    # qps / (utilization + eps/qps * penalty), truncated to an integer as Envoy stores host weights.
    assert expected_weight(OrcaLoad(cpu_utilization=0.9, rps_fractional=100)) == 111
    assert expected_weight(OrcaLoad(cpu_utilization=0.3, rps_fractional=100)) == 333
    assert expected_weight(OrcaLoad(cpu_utilization=0.3, rps_fractional=100, eps=10), penalty=1.0) == 250
    # application_utilization wins over cpu when set; mem_utilization never enters the weight.
    app = OrcaLoad(cpu_utilization=0.9, application_utilization=0.5, rps_fractional=100)
    assert expected_weight(app) == 200
    assert expected_weight(OrcaLoad(cpu_utilization=0.3, mem_utilization=0.99, rps_fractional=100)) == 333
    # No qps or no utilization: Envoy drops the report, so no weight of its own.
    assert expected_weight(OrcaLoad(cpu_utilization=0.3)) is None
    assert expected_weight(OrcaLoad(rps_fractional=100)) is None
    shares = expected_shares({"a": 333, "b": 333, "hot": 111})
    assert shares["hot"] == pytest.approx(100 * 111 / 777)
    assert sum(shares.values()) == pytest.approx(100)
