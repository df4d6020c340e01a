"""Rules across the fields of `load_balancer`, `upstream_connection` and `locality` (docs/config.md, issue 8).

The kinds declared in lb_fields.py check each key alone; these check what one key says about another: a
knob only its own `lb_policy` reads (Envoy would silently ignore it elsewhere), a maglev table size that is
not prime (Envoy rejects the cluster), ring bounds the wrong way round, keepalive times in fractions of
a second (Envoy counts them in whole seconds, address.proto TcpKeepalive), and locality weight entries that
match every locality or repeat an earlier one (the first match wins, so a repeat could never apply).
"""

from __future__ import annotations

from collections.abc import Callable

from xds.policy.desired import LbPolicy, LoadBalancerSpec, LocalitySpec, UpstreamConnectionSpec, WeightsMode
from xds.policy.document import Map, Node, Pos, Seq, join, value_pos
from xds.policy.rules import MIN_WEIGHT_UPDATE_PERIOD_S

Add = Callable[[Pos, str, str], None]

# Which policies read each knob (cluster.proto: LeastRequestLbConfig, RingHashLbConfig, MaglevLbConfig,
# RoundRobinLbConfig.slow_start_config); healthy_panic_threshold applies to every policy. The knobs of
# client_side_weighted are those of Envoy's ClientSideWeightedRoundRobin (issue 10, docs/load-aware.md);
# slow start is not among them: that policy balances by reported load, and its blackout period is its ramp.
_CSWRR = (LbPolicy.CLIENT_SIDE_WEIGHTED,)
KNOB_POLICIES: dict[str, tuple[LbPolicy, ...]] = {
    "choice_count": (LbPolicy.LEAST_REQUEST,),
    "minimum_ring_size": (LbPolicy.RING_HASH,),
    "maximum_ring_size": (LbPolicy.RING_HASH,),
    "table_size": (LbPolicy.MAGLEV,),
    "slow_start_window": (LbPolicy.ROUND_ROBIN, LbPolicy.LEAST_REQUEST),
    "blackout_period": _CSWRR,
    "weight_expiration_period": _CSWRR,
    "weight_update_period": _CSWRR,
    "error_utilization_penalty": _CSWRR,
    "oob_reporting": _CSWRR,
    "oob_reporting_period": _CSWRR,
}
_ATTRS = {"slow_start_window": "slow_start_window_s", "blackout_period": "blackout_period_s",
          "weight_expiration_period": "weight_expiration_period_s",
          "weight_update_period": "weight_update_period_s", "oob_reporting_period": "oob_reporting_period_s"}


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


def check_load_balancer(spec: LoadBalancerSpec, policy: LbPolicy, node: Node, path: str, add: Add) -> bool:
    """Report every rule `spec` breaks, at the key that breaks it; True when none."""
    ok = True
    if spec.table_size is not None and not is_prime(spec.table_size):
        add(value_pos(node, "table_size"), join(path, "table_size"),
            f"must be a prime number (Envoy's maglev needs one), got {spec.table_size}")
        ok = False
    for key, policies in KNOB_POLICIES.items():
        if getattr(spec, _ATTRS.get(key, key)) is not None and policy not in policies:
            names = " and ".join(f"`{p.value}`" for p in policies)
            add(value_pos(node, key), join(path, key),
                f"applies to lb_policy {names} only; this service uses `{policy.value}`")
            ok = False
    ok = _check_client_side_weighted(spec, node, path, add) and ok
    if spec.orca_port is not None and spec.weights is not WeightsMode.LOAD_AWARE:
        # ORCA reports only move the weights of a load-aware service (docs/load-aware.md).
        add(value_pos(node, "orca_port"), join(path, "orca_port"),
            "applies with `weights: load_aware` only; this service uses `weights: static`")
        ok = False
    low, high = spec.minimum_ring_size, spec.maximum_ring_size
    if low is not None and high is not None and low > high:
        add(value_pos(node, "minimum_ring_size"), join(path, "minimum_ring_size"),
            f"must be at most maximum_ring_size ({high}), got {low}")
        ok = False
    return ok


def _check_client_side_weighted(spec: LoadBalancerSpec, node: Node, path: str, add: Add) -> bool:
    """Knob values Envoy would change or ignore without a word (client_side_weighted_round_robin.proto)."""
    ok = True
    update = spec.weight_update_period_s
    if update is not None and update < MIN_WEIGHT_UPDATE_PERIOD_S:
        add(value_pos(node, "weight_update_period"), join(path, "weight_update_period"),
            f"must be at least {MIN_WEIGHT_UPDATE_PERIOD_S * 1000:g}ms (Envoy raises shorter periods to it), "
            f"got {update * 1000:g}ms")
        ok = False
    if spec.oob_reporting_period_s is not None and spec.oob_reporting is not True:
        add(value_pos(node, "oob_reporting_period"), join(path, "oob_reporting_period"),
            "applies only with `oob_reporting: true` (reports come in response headers otherwise)")
        ok = False
    return ok


def check_locality_for_policy(spec: LocalitySpec, policy: LbPolicy, node: Node, path: str, add: Add) -> bool:
    """Locality weights need `common_lb_config.locality_weighted_lb_config`, which Envoy refuses next to a
    typed `load_balancing_policy` ("load_balancing_policy cannot be combined with partial fields ... of
    common_lb_config", seen from Envoy 1.40 in issue 10): the cluster would be rejected, so the loader is."""
    if spec.weights and policy is LbPolicy.CLIENT_SIDE_WEIGHTED:
        add(value_pos(node, "weights"), join(path, "weights"),
            "cannot be combined with lb_policy `client_side_weighted`: Envoy rejects locality-weighted "
            "balancing next to a typed load balancing policy; use failover, or another lb_policy")
        return False
    return True


def check_upstream_connection(spec: UpstreamConnectionSpec, node: Node, path: str, add: Add) -> bool:
    keepalive = spec.tcp_keepalive
    if keepalive is None:
        return True
    inner = _child(node, "tcp_keepalive")
    inner_path = join(path, "tcp_keepalive")
    ok = True
    for key, seconds in (("time", keepalive.time_s), ("interval", keepalive.interval_s)):
        if seconds is not None and seconds != int(seconds):
            add(value_pos(inner, key), join(inner_path, key),
                f"must be whole seconds (Envoy counts keepalive in seconds), got {seconds:g}s")
            ok = False
    return ok


def check_locality(spec: LocalitySpec, node: Node, path: str, add: Add) -> bool:
    listed = _child(node, "weights")
    items = listed.items if isinstance(listed, Seq) else ()
    seen: dict[tuple[str, str, str], int] = {}
    ok = True
    for index, (entry, item) in enumerate(zip(spec.weights, items, strict=False)):
        where = f"{join(path, 'weights')}[{index}]"
        parts = (entry.region, entry.zone, entry.sub_zone)
        if parts == ("", "", ""):
            add(item.pos, where, "names no locality: give at least one of region, zone and sub_zone")
            ok = False
        elif parts in seen:
            add(item.pos, where, f"repeats weights[{seen[parts]}], whose weight always applies first")
            ok = False
        else:
            seen[parts] = index
    return ok


def _child(node: Node, key: str) -> Node:
    if isinstance(node, Map):
        for entry in node.entries:
            if entry.key == key:
                return entry.value
    return node
