"""The declared keys of a service's `load_balancer` and `upstream_connection` (docs/config.md, issue 8).

`load_balancer` holds the knobs of the policy that `lb_policy` picks; it does not pick a policy itself, so
there is one way to say which policy a service uses, and `lb_policy` works exactly as before. A knob given
for a policy that has no use for it is a located error (walker.py). As in cluster_fields.py the specs live in
`desired.py`, so their keys are declared here as rows; unset means Envoy's default and nothing is emitted.
"""

from __future__ import annotations

from xds.policy.desired import LoadBalancerSpec, TcpKeepaliveSpec, UpstreamConnectionSpec, WeightsMode
from xds.policy.fields import Boolean, Choice, Duration, FieldSpec, Integer, Nested, Number, erase, table
from xds.policy.rules import (
    MAX_CHOICE_COUNT,
    MAX_CIRCUIT_LIMIT,
    MAX_CSWRR_PERIOD_S,
    MAX_ERROR_UTILIZATION_PENALTY,
    MAX_IDLE_TIMEOUT_S,
    MAX_KEEPALIVE_PROBES,
    MAX_KEEPALIVE_S,
    MAX_MAGLEV_TABLE_SIZE,
    MAX_RING_SIZE,
    MAX_SLOW_START_WINDOW_S,
)

# `client_side_weighted` only (issue 10, docs/load-aware.md "Proxy-side mode"): the knobs of Envoy's
# ClientSideWeightedRoundRobin, each row's key the proto field's name except `oob_reporting`
# (enable_oob_load_report).
_CSWRR = "`client_side_weighted` only: "
_PERIOD = f"at most {MAX_CSWRR_PERIOD_S / 3600:g} h"
CLIENT_SIDE_WEIGHTED_ROWS: list[tuple[str | None, FieldSpec]] = [
    ("blackout_period_s", FieldSpec(
        "blackout_period", Duration(MAX_CSWRR_PERIOD_S),
        f"{_CSWRR}an endpoint must report load this long before its weight is used (until then it gets the "
        f"median weight); {_PERIOD}.", shown_default="Envoy's (10s)")),
    ("weight_expiration_period_s", FieldSpec(
        "weight_expiration_period", Duration(MAX_CSWRR_PERIOD_S),
        f"{_CSWRR}an endpoint without a report for this long loses its weight and gets the median again; "
        f"{_PERIOD}.", shown_default="Envoy's (3m)")),
    ("weight_update_period_s", FieldSpec(
        "weight_update_period", Duration(MAX_CSWRR_PERIOD_S),
        f"{_CSWRR}how often Envoy recomputes the weights from the latest reports; 100ms to "
        f"{MAX_CSWRR_PERIOD_S / 3600:g} h.", shown_default="Envoy's (1s)")),
    ("error_utilization_penalty", FieldSpec(
        "error_utilization_penalty", Number(0.0, MAX_ERROR_UTILIZATION_PENALTY),
        f"{_CSWRR}weight = qps / (utilization + eps/qps x this): how much an endpoint's error rate lowers "
        f"its weight; 0 to {MAX_ERROR_UTILIZATION_PENALTY:g}, 0 ignores errors.",
        shown_default="Envoy's (1.0)")),
    ("oob_reporting", FieldSpec(
        "oob_reporting", Boolean(),
        f"{_CSWRR}Envoy asks each endpoint for a stream of ORCA reports (OpenRcaService.StreamCoreMetrics) "
        "instead of reading them from response headers.", shown_default="`false`")),
    ("oob_reporting_period_s", FieldSpec(
        "oob_reporting_period", Duration(MAX_CSWRR_PERIOD_S),
        f"{_CSWRR}with `oob_reporting: true`, the report interval Envoy asks for; {_PERIOD}.",
        shown_default="Envoy's (10s)")),
]

LOAD_BALANCER = table(LoadBalancerSpec, "Knobs of the service's `lb_policy`, which still picks the policy.", [
    ("choice_count", FieldSpec(
        "choice_count", Integer(2, MAX_CHOICE_COUNT),
        f"`least_request` only: hosts sampled per pick, the least loaded wins; 2 to {MAX_CHOICE_COUNT}.",
        shown_default="Envoy's (2)")),
    ("minimum_ring_size", FieldSpec(
        "minimum_ring_size", Integer(1, MAX_RING_SIZE),
        f"`ring_hash` only: the fewest entries of the hash ring, 1 to {MAX_RING_SIZE}; at most "
        "`maximum_ring_size`.", shown_default="Envoy's (1024)")),
    ("maximum_ring_size", FieldSpec(
        "maximum_ring_size", Integer(1, MAX_RING_SIZE),
        f"`ring_hash` only: the most entries of the hash ring, 1 to {MAX_RING_SIZE}.",
        shown_default=f"Envoy's ({MAX_RING_SIZE})")),
    ("table_size", FieldSpec(
        "table_size", Integer(2, MAX_MAGLEV_TABLE_SIZE),
        f"`maglev` only: the lookup table size, a prime number up to {MAX_MAGLEV_TABLE_SIZE}; larger "
        "tables move fewer keys when hosts change.", shown_default="Envoy's (65537)")),
    ("slow_start_window_s", FieldSpec(
        "slow_start_window", Duration(MAX_SLOW_START_WINDOW_S),
        "`round_robin` and `least_request` only: a new host's share of traffic ramps up over this window "
        "(from 10% of its weight), counted from when it joins or, with a `health_check`, from when it "
        "passes; the hosts of a newly created cluster ramp up together, so they keep equal shares; at most "
        f"{MAX_SLOW_START_WINDOW_S / 3600:g} h.", shown_default="off")),
    ("healthy_panic_threshold", FieldSpec(
        "healthy_panic_threshold", Integer(0, 100),
        "Percent: with fewer healthy hosts than this, Envoy balances over all hosts, healthy or not; 0 to "
        "100, 0 turns panic mode off.", shown_default="Envoy's (50)")),
    *CLIENT_SIDE_WEIGHTED_ROWS,
    ("weights", FieldSpec(
        "weights", Choice({m.value: m for m in WeightsMode}),
        "Where endpoint weights come from: `static`, the catalog's; `load_aware`, the catalog's scaled by "
        "the control plane from each endpoint's CPU and memory reports, pushed over EDS "
        "(docs/load-aware.md).")),
    ("orca_port", FieldSpec(
        "orca_port", Integer(1, 65535),
        "`weights: load_aware` only: the control plane subscribes to ORCA out-of-band load reports "
        "(`OpenRcaService/StreamCoreMetrics`) on this port of each endpoint's host; an endpoint's metadata "
        "`orca_port` overrides it.", shown_default="off")),
])

_KEEPALIVE = f"whole seconds, at most {MAX_KEEPALIVE_S:g}"

TCP_KEEPALIVE = table(TcpKeepaliveSpec, "TCP keepalive on connections to the service; `{}` turns it on "
                                        "with the operating system's settings.", [
    ("probes", FieldSpec(
        "probes", Integer(1, MAX_KEEPALIVE_PROBES),
        f"Unanswered probes before the connection is dropped, 1 to {MAX_KEEPALIVE_PROBES}.",
        shown_default="the OS's (9 on Linux)")),
    ("time_s", FieldSpec(
        "time", Duration(MAX_KEEPALIVE_S), f"Idle time before the first probe; {_KEEPALIVE}.",
        shown_default="the OS's (2 h on Linux)")),
    ("interval_s", FieldSpec(
        "interval", Duration(MAX_KEEPALIVE_S), f"Time between probes; {_KEEPALIVE}.",
        shown_default="the OS's (75 s on Linux)")),
])

UPSTREAM_CONNECTION = table(UpstreamConnectionSpec, "Settings of Envoy's connections to the service's "
                                                    "endpoints.", [
    ("idle_timeout_s", FieldSpec(
        "idle_timeout", Duration(MAX_IDLE_TIMEOUT_S),
        f"Close a connection with no request in flight for this long; at most {MAX_IDLE_TIMEOUT_S / 3600:g} "
        "h.", shown_default="Envoy's (1 h)")),
    ("max_requests_per_connection", FieldSpec(
        "max_requests_per_connection", Integer(1, MAX_CIRCUIT_LIMIT),
        f"Close a connection after this many requests, 1 to {MAX_CIRCUIT_LIMIT}.",
        shown_default="unlimited")),
    ("tcp_keepalive", FieldSpec(
        "tcp_keepalive", Nested(erase(TCP_KEEPALIVE)), "`{probes, time, interval}` (below).",
        shown_default="off")),
])
