"""The load-aware weight function (issue 10, control-plane mode; the formula is in docs/load-aware.md).

Pure: no clock, no I/O. The tracker (load_tracker.py) feeds it one interval at a time; everything here is a
function of its arguments, so the invariants (floor, bounded move, equal when equal, TTL) are property-tested
in tests/unit/test_load_weights.py.

In short, per service and per interval:

    u_i      = EWMA of combine(cpu_i, memory_i)  (None: no report younger than the TTL)
    h_i      = 1 - u_i                           (headroom)
    target_i = h_i / max_j h_j                   (1 for the coolest endpoint, and for one without data)
               -> 1 when within the dead band of 1, then at least the floor
    factor_i = moves a fraction `gain` of the way to target_i (at least the dead band, at most max_step;
               the last short gap in one step), and not at all when the gap is smaller than the dead band
               (unless the target is exactly 1: base weight is always reachable)
    weight_i = max(1, round(base_i * RESOLUTION * factor_i))

Why headroom relative to the coolest endpoint: weights only matter relative to each other inside a
cluster, so normalising by the coolest keeps an equally loaded fleet at exactly its base weights, and an
endpoint the control plane knows nothing about (never reported, or its report expired) keeps its base
weight: load-aware weights only ever take traffic away from endpoints known to be hotter than the rest.

Why a gain below 1: the utilization a target is computed from was caused by the current weights, so the
target is the output of a feedback loop. Jumping to it (or moving by a fixed step) overshoots: the hot
endpoint's weight falls, its load falls, its target jumps back to 1, and the weights cycle (measured by
benchmarks/closed_loop.py: the slow upstream's factor swung between 0.14 and 1 on a 12 s cycle). Moving a
fraction of the gap each interval is a damped controller that settles where the target and the load it
causes agree (docs/load-aware.md, "The weight function").
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from xds.model.service import Endpoint

# Weights are the catalog's times this, so a factor of 0.14 is still a weight of 14 for a base weight of 1
# (Envoy's weights are integers >= 1, endpoint_components.proto LbEndpoint.load_balancing_weight).
RESOLUTION = 100


class Combine(enum.Enum):
    """How one endpoint's CPU and memory utilization become one number."""

    MAX = "max"  # the scarcer resource decides (the default)
    CPU = "cpu"
    MEMORY = "memory"
    MEAN = "mean"


@dataclass(frozen=True, slots=True)
class LoadParams:
    """The weight function's parameters: server settings (--load-* flags), not per-service keys."""

    combine: Combine = Combine.MAX
    smoothing: float = 0.5  # EWMA weight of the newest interval, in (0, 1]; 1: no smoothing
    dead_band: float = 0.05  # factor changes smaller than this push nothing, in [0, 1)
    max_step: float = 0.25  # the most a factor moves per interval, in (0, 1]
    floor: float = 0.1  # the smallest factor load alone can give, in (0, 1]
    gain: float = 0.25  # the fraction of the gap to its target a factor moves per interval, in (0, 1]
    ttl_s: float = 10.0  # a report older than this is forgotten: the endpoint goes back to its base weight

    def __post_init__(self) -> None:
        checks = (("smoothing", 0 < self.smoothing <= 1, "in (0, 1]"),
                  ("dead_band", 0 <= self.dead_band < 1, "in [0, 1)"),
                  ("max_step", 0 < self.max_step <= 1, "in (0, 1]"),
                  ("floor", 0 < self.floor <= 1, "in (0, 1]"),
                  ("gain", 0 < self.gain <= 1, "in (0, 1]"),
                  ("ttl_s", self.ttl_s > 0, "more than 0"))
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"load weights: {name} must be {rule}, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class LoadFactors:
    """The published factor of each endpoint of each load-aware service; 1.0 for anything not listed.
    Replaced whole by the tracker, never mutated, so a snapshot build can read it from a worker thread."""

    by_service: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def factor(self, service: str, address: str) -> float:
        return self.by_service.get(service, {}).get(address, 1.0)


NO_LOADS = LoadFactors()


def endpoint_address(endpoint: Endpoint) -> str:
    """How load reports name an endpoint: "host:port" as the catalog has it ("[v6]:port" for IPv6)."""
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"{host}:{endpoint.port}"


def combine(cpu: float, memory: float, how: Combine) -> float:
    if how is Combine.CPU:
        return cpu
    if how is Combine.MEMORY:
        return memory
    if how is Combine.MEAN:
        return (cpu + memory) / 2
    return max(cpu, memory)


def valid_utilization(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


def smooth(previous: float | None, observed: float, alpha: float) -> float:
    """One EWMA step; the first observation seeds the average."""
    return observed if previous is None else alpha * observed + (1 - alpha) * previous


def target_factors(utilization: Mapping[str, float | None], params: LoadParams) -> dict[str, float]:
    """Where each endpoint's factor is heading, from its smoothed utilization (None: no fresh report)."""
    headroom = {a: 1.0 - u for a, u in utilization.items() if u is not None}
    top = max(headroom.values(), default=0.0)
    targets: dict[str, float] = {}
    for address in utilization:
        h = headroom.get(address)
        if h is None or top <= 0.0:
            # No data, or every endpoint with data is fully busy: nothing to prefer, base weight.
            targets[address] = 1.0
            continue
        target = h / top
        if target > 1.0 - params.dead_band:
            target = 1.0  # as cool as the coolest, within noise: exactly base, so noise there pushes nothing
        targets[address] = max(params.floor, target)
    return targets


# The last gap closed in one step is at least this, so a zero dead band still reaches its target.
_MIN_SNAP = 0.02


def _snap(params: LoadParams) -> float:
    return min(params.max_step, max(2 * params.dead_band, _MIN_SNAP))


def move(current: float, target: float, params: LoadParams) -> float:
    """The next factor: `gain` of the way toward `target`, at least the dead band and at most max_step per
    interval, and the final short gap in one step; unchanged within the dead band (except toward exactly 1,
    so base weight is always reached again)."""
    gap = target - current
    if gap == 0 or (target != 1.0 and abs(gap) < params.dead_band):
        return current
    if abs(gap) <= _snap(params):
        return target
    step = min(params.max_step, max(params.dead_band, params.gain * abs(gap)))
    return current + math.copysign(step, gap)


def max_ticks_to_target(params: LoadParams) -> int:
    """An upper bound on the intervals a factor needs to reach a fixed target from anywhere in [floor, 1]:
    until the gap is within the snap distance every step is at least `min_step`."""
    min_step = min(params.max_step, max(params.dead_band, params.gain * _snap(params)))
    return math.ceil(1 / min_step) + 1


def service_step(published: Mapping[str, float], utilization: Mapping[str, float | None],
                 params: LoadParams) -> dict[str, float]:
    """One interval of one service: the new factor of each endpoint in `utilization` (endpoints no longer in
    the service are dropped; new ones start at 1.0, their base weight)."""
    targets = target_factors(utilization, params)
    return {address: move(published.get(address, 1.0), target, params) for address, target in targets.items()}


def scaled_weight(base: int, factor: float) -> int:
    """The EDS weight of an endpoint of catalog weight `base` at `factor`."""
    return max(1, round(base * RESOLUTION * factor))
