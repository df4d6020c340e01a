"""Phases of the canary and the requests counted under each of them."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness import (
    Sample,
)
from harness.demo.constants import Weights
from harness.demo.traffic import Hit


def is_2xx(sample: Sample) -> bool:
    return sample.status is not None and 200 <= sample.status < 300


@dataclass
class Counts:
    upstreams: Counter[str] = field(default_factory=Counter)
    after_convergence: Counter[str] = field(default_factory=Counter)
    non_2xx: int = 0
    errors: int = 0

    def add(self, sample: Sample, *, converged: bool) -> None:
        if sample.status is None:
            self.errors += 1
            return
        if not is_2xx(sample):
            self.non_2xx += 1
            return
        name = sample.upstream or "?"
        self.upstreams[name] += 1
        if converged:
            self.after_convergence[name] += 1


@dataclass
class Phase:
    name: str
    weights: Weights
    started_at: float  # the catalog edit (for the baseline: the start of load), monotonic
    edited: bool = True  # False for the baseline, which no edit started
    converged_at: float | None = None  # when both Envoys were seen running `weights`
    applied_s: dict[str, float] = field(default_factory=dict)  # envoy -> seconds from edit to applied
    by_envoy: dict[str, Counts] = field(default_factory=dict)

    @property
    def convergence_s(self) -> float | None:
        if not self.edited or self.converged_at is None:
            return None
        return self.converged_at - self.started_at

    def total(self) -> Counts:
        total = Counts()
        for counts in self.by_envoy.values():
            total.upstreams.update(counts.upstreams)
            total.after_convergence.update(counts.after_convergence)
            total.non_2xx += counts.non_2xx
            total.errors += counts.errors
        return total


class Ledger:
    """Every phase so far, and the requests of finished load segments filed under the phase they began in."""

    def __init__(self) -> None:
        self.phases: list[Phase] = []

    def begin(self, name: str, weights: Weights, *, at: float, edited: bool = True) -> Phase:
        # A phase no edit started (the baseline) runs its weights from the first request.
        phase = Phase(name, weights, started_at=at, edited=edited, converged_at=None if edited else at)
        self.phases.append(phase)
        return phase

    def file(self, envoy: str, hits: Sequence[Hit]) -> None:
        starts = [p.started_at for p in self.phases]
        for at, _, sample in hits:
            phase = self.phases[max(0, bisect.bisect_right(starts, at) - 1)]
            counts = phase.by_envoy.setdefault(envoy, Counts())
            converged = phase.converged_at is not None and at >= phase.converged_at
            counts.add(sample, converged=converged)

    def failed_requests(self, envoy: str) -> tuple[int, int]:
        """(non-2xx, errors) filed so far for `envoy`."""
        counts = [p.by_envoy[envoy] for p in self.phases if envoy in p.by_envoy]
        return sum(c.non_2xx for c in counts), sum(c.errors for c in counts)

