"""`lb_policy: client_side_weighted` -> the Cluster's typed `load_balancing_policy` (issue 10, proxy-side
mode; docs/load-aware.md "Proxy-side mode").

Envoy's client-side weighted round robin exists only as a load balancing policy extension
(envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3): there is no `lb_policy` enum
value for it. The Cluster's `lb_policy` enum is left at its zero value and is not read once
`load_balancing_policy` is set; the enum value LOAD_BALANCING_POLICY_CONFIG that once had to accompany it is
deprecated (cluster.proto), so it is not set either. The router needs nothing: when this policy picks a host
it asks the request for the ORCA report, and the router parses the `endpoint-load-metrics` response header
itself (docs/load-aware.md, "The header").

`common_lb_config` (healthy_panic_threshold, locality_weighted_lb_config) is still set by lb.py and
clusters.py: the policy's worker balancers are Envoy's round robin, built with the cluster's common config.
Unset knobs are not emitted, so Envoy's defaults apply.
"""

from __future__ import annotations

from typing import Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (
    client_side_weighted_round_robin_pb2 as cswrr_pb2,
)
from google.protobuf import any_pb2

from xds.policy.desired import LoadBalancerSpec
from xds.translate.resilience import duration

# The extension's name (Envoy's extensions list, envoy.load_balancing_policies category).
POLICY_NAME: Final = "envoy.load_balancing_policies.client_side_weighted_round_robin"


def client_side_weighted_config(spec: LoadBalancerSpec | None) -> cswrr_pb2.ClientSideWeightedRoundRobin:
    config = cswrr_pb2.ClientSideWeightedRoundRobin()
    if spec is None:
        return config
    if spec.blackout_period_s is not None:
        config.blackout_period.CopyFrom(duration(spec.blackout_period_s))
    if spec.weight_expiration_period_s is not None:
        config.weight_expiration_period.CopyFrom(duration(spec.weight_expiration_period_s))
    if spec.weight_update_period_s is not None:
        config.weight_update_period.CopyFrom(duration(spec.weight_update_period_s))
    if spec.error_utilization_penalty is not None:
        config.error_utilization_penalty.value = spec.error_utilization_penalty
    if spec.oob_reporting is not None:
        config.enable_oob_load_report.value = spec.oob_reporting
    if spec.oob_reporting_period_s is not None:
        config.oob_reporting_period.CopyFrom(duration(spec.oob_reporting_period_s))
    return config


def apply_client_side_weighted(cluster: cluster_pb2.Cluster, spec: LoadBalancerSpec | None) -> None:
    # Not cached here: clusters.py already reuses a whole Cluster while its cluster_key is unchanged.
    packed = any_pb2.Any()
    # Deterministic, as clusters.py packs its options: the Cluster's bytes, and so the snapshot version
    # hash, must not depend on serialization order.
    packed.Pack(client_side_weighted_config(spec), deterministic=True)
    entry = cluster.load_balancing_policy.policies.add().typed_extension_config
    entry.name = POLICY_NAME
    entry.typed_config.CopyFrom(packed)
