"""LoadTracker: load reports per endpoint in, published factors per load-aware service out (issue 10).

Pure and synchronous, with time passed in: the report API (xds/server/load_report.py) and the ORCA client
(xds/sources/orca.py) call `submit`, the engine (xds/load_engine.py) calls `tick` once per --load-interval.
That is the whole churn bound: factors change only in `tick`, so a service's endpoints get at most one new
set of weights, hence one EDS push, per interval however many reports arrive (docs/load-aware.md).

A report is rejected, with a reason from REJECT_REASONS, when a utilization is not a finite number in
[0, 1], when its address is not an endpoint of a load-aware service, or when it comes sooner than
`min_report_gap_s` after the endpoint's last accepted report. A rejected report changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from xds.model.service import Catalog
from xds.policy.desired import WeightsMode
from xds.policy.load_weights import (
    LoadFactors,
    LoadParams,
    combine,
    endpoint_address,
    scaled_weight,
    service_step,
    smooth,
)
from xds.policy.schema import Policy

REJECT_NOT_A_NUMBER = "not_a_number"
REJECT_NEGATIVE = "negative"
REJECT_ABOVE_ONE = "above_one"
REJECT_UNKNOWN_ENDPOINT = "unknown_endpoint"
REJECT_RATE_LIMITED = "rate_limited"
# The `reason` label of xds_load_reports_rejected_total: a closed set, so the series stay bounded.
REJECT_REASONS = (REJECT_NOT_A_NUMBER, REJECT_NEGATIVE, REJECT_ABOVE_ONE, REJECT_UNKNOWN_ENDPOINT,
                  REJECT_RATE_LIMITED)
# Ten reports a second per endpoint is far more than a weight can use (one change per interval); more is a
# flood and is refused before it costs anything.
DEFAULT_MIN_REPORT_GAP_S = 0.1
# Endpoint metadata that overrides a service's `load_balancer.orca_port` (several instances on one host).
ORCA_PORT_KEY = "orca_port"


@dataclass(frozen=True, slots=True)
class LoadAwareEndpoint:
    service: str
    address: str  # "host:port", how reports name it
    base_weight: int
    orca: tuple[str, int] | None = None  # (host, port) of its ORCA out-of-band service, when opted in


def load_aware_endpoints(catalog: Catalog, policy: Policy) -> tuple[LoadAwareEndpoint, ...]:
    """Every endpoint of every service with `load_balancer: {weights: load_aware}`, from the merged catalog
    (so file, Consul and Kubernetes endpoints alike), sorted."""
    out: list[LoadAwareEndpoint] = []
    for settings in policy.services:
        lb = settings.load_balancer
        service = catalog.get(settings.name)
        if lb is None or lb.weights is not WeightsMode.LOAD_AWARE or service is None:
            continue
        for endpoint in service.endpoints:
            orca = None
            if lb.orca_port is not None:
                port = _port(dict(endpoint.metadata).get(ORCA_PORT_KEY)) or lb.orca_port
                orca = (endpoint.host, port)
            out.append(LoadAwareEndpoint(settings.name, endpoint_address(endpoint), endpoint.weight, orca))
    return tuple(sorted(out, key=lambda e: (e.service, e.address)))


def _port(text: str | None) -> int | None:
    if text is None or not text.isdigit() or not 0 < int(text) < 65536:
        return None
    return int(text)


def check_utilization(cpu: float, memory: float) -> str | None:
    """The reason a pair of utilizations is refused, or None."""
    values = (cpu, memory)
    if not all(math.isfinite(v) for v in values):
        return REJECT_NOT_A_NUMBER
    if any(v < 0 for v in values):
        return REJECT_NEGATIVE
    if any(v > 1 for v in values):
        return REJECT_ABOVE_ONE
    return None


@dataclass
class _Reports:
    """What one address reported: the latest values, and the sum of the ones since the last tick."""

    cpu: float = 0.0
    memory: float = 0.0
    source: str = ""
    at: float | None = None  # when the latest accepted report arrived
    pending_sum: float = 0.0
    pending_count: int = 0
    smoothed: float | None = None  # EWMA of the combined utilization; None: nothing fresh


@dataclass(frozen=True, slots=True)
class LoadRow:
    """One endpoint of one load-aware service, as `xds status --loads` and the metrics show it."""

    service: str
    address: str
    base_weight: int
    weight: int
    factor: float
    cpu: float | None  # the last reported value; None: no fresh report
    memory: float | None
    utilization: float | None  # the smoothed, combined value the weight follows
    age_s: float | None  # since the last accepted report; None: never (or forgotten after the TTL)
    source: str  # "api" or "orca", or "" without a fresh report


class LoadTracker:
    def __init__(self, params: LoadParams, *, min_report_gap_s: float = DEFAULT_MIN_REPORT_GAP_S) -> None:
        self.params = params
        self._min_gap_s = min_report_gap_s
        self._endpoints: tuple[LoadAwareEndpoint, ...] = ()
        self._addresses: frozenset[str] = frozenset()
        self._reports: dict[str, _Reports] = {}
        self._published: dict[str, dict[str, float]] = {}
        self._factors = LoadFactors()

    # ------------------------------------------------------------------ inputs

    def set_endpoints(self, endpoints: Iterable[LoadAwareEndpoint]) -> None:
        """The load-aware endpoints of the latest world. Reports of addresses that left are forgotten."""
        self._endpoints = tuple(endpoints)
        self._addresses = frozenset(e.address for e in self._endpoints)
        for address in list(self._reports):
            if address not in self._addresses:
                del self._reports[address]

    @property
    def endpoints(self) -> tuple[LoadAwareEndpoint, ...]:
        return self._endpoints

    def submit(self, address: str, cpu: float, memory: float, *, source: str, now: float) -> str | None:
        """Take one report; None when accepted, else the reason it was refused (nothing changed)."""
        reason = check_utilization(cpu, memory)
        if reason is not None:
            return reason
        if address not in self._addresses:
            return REJECT_UNKNOWN_ENDPOINT
        reports = self._reports.setdefault(address, _Reports())
        if reports.at is not None and now - reports.at < self._min_gap_s:
            return REJECT_RATE_LIMITED
        reports.cpu, reports.memory, reports.source, reports.at = cpu, memory, source, now
        reports.pending_sum += combine(cpu, memory, self.params.combine)
        reports.pending_count += 1
        return None

    # ------------------------------------------------------------------ the interval

    def tick(self, now: float) -> set[str]:
        """Advance one interval: smooth, forget reports older than the TTL, step every service's factors.
        Returns the services whose factors changed (their weights need a push)."""
        for reports in self._reports.values():
            if reports.at is None or now - reports.at > self.params.ttl_s:
                reports.smoothed = None
            elif reports.pending_count:
                mean = reports.pending_sum / reports.pending_count
                reports.smoothed = smooth(reports.smoothed, mean, self.params.smoothing)
            reports.pending_sum, reports.pending_count = 0.0, 0
        by_service: dict[str, dict[str, float | None]] = {}
        for endpoint in self._endpoints:
            latest = self._reports.get(endpoint.address)
            by_service.setdefault(endpoint.service, {})[endpoint.address] = (
                latest.smoothed if latest is not None else None)
        changed: set[str] = set()
        published: dict[str, dict[str, float]] = {}
        for service, utilization in by_service.items():
            before = self._published.get(service, {})
            after = service_step(before, utilization, self.params)
            if any(after[a] != before.get(a, 1.0) for a in after):
                changed.add(service)
            published[service] = after
        self._published = published
        # Only factors other than 1.0 need carrying: 1.0 is what LoadFactors answers for anything unlisted.
        self._factors = LoadFactors({s: {a: f for a, f in factors.items() if f != 1.0}
                                     for s, factors in published.items()})
        return changed

    def factors(self) -> LoadFactors:
        return self._factors

    # ------------------------------------------------------------------ views

    def rows(self, now: float) -> list[LoadRow]:
        rows = []
        for endpoint in self._endpoints:
            reports = self._reports.get(endpoint.address)
            fresh = reports is not None and reports.at is not None and now - reports.at <= self.params.ttl_s
            factor = self._factors.factor(endpoint.service, endpoint.address)
            rows.append(LoadRow(
                service=endpoint.service, address=endpoint.address, base_weight=endpoint.base_weight,
                weight=scaled_weight(endpoint.base_weight, factor), factor=factor,
                cpu=reports.cpu if fresh and reports else None,
                memory=reports.memory if fresh and reports else None,
                utilization=reports.smoothed if reports else None,
                age_s=now - reports.at if fresh and reports and reports.at is not None else None,
                source=reports.source if fresh and reports else ""))
        return rows

