"""Steady load through each Envoy, in bounded segments so memory stays flat however long the demo runs."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence

from harness import (
    Sample,
    SteadyLoad,
)
from harness.demo.catalog import Edge
from harness.demo.constants import API_SHARE, CONVERGENCE_TIMEOUT_S, REQUEST_TIMEOUT_S, SEGMENT_S, WINDOW_S

# (monotonic time the request started, "web" or "api", the sample)
Hit = tuple[float, str, Sample]


class _Segment:
    """Load to `/` and `/api` of one Envoy for a while; sample times are turned into monotonic time."""

    def __init__(self, url: str, *, rate_per_s: float, max_duration_s: float) -> None:
        self._loads = {
            "web": SteadyLoad(f"{url}/", rate_per_s=rate_per_s * (1 - API_SHARE), concurrency=4,
                              timeout_s=REQUEST_TIMEOUT_S, max_duration_s=max_duration_s),
            "api": SteadyLoad(f"{url}/api", rate_per_s=rate_per_s * API_SHARE, concurrency=2,
                              timeout_s=REQUEST_TIMEOUT_S, max_duration_s=max_duration_s),
        }
        self._origins: dict[str, float] = {}
        self.started_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        for kind, load in self._loads.items():
            # Taken just before start(), which sets the load's own origin: times may read early by
            # microseconds, never late, so a request is never counted as after a convergence it preceded.
            self._origins[kind] = time.monotonic()
            load.start()

    def hits(self) -> list[Hit]:
        return self._collect({kind: load.snapshot().samples for kind, load in self._started()})

    def stop(self) -> list[Hit]:
        return self._collect({kind: load.stop().samples for kind, load in self._started()})

    def _started(self) -> Iterator[tuple[str, SteadyLoad]]:
        return ((kind, load) for kind, load in self._loads.items() if kind in self._origins)

    def _collect(self, samples: Mapping[str, Sequence[Sample]]) -> list[Hit]:
        return [(self._origins[kind] + s.started_s, kind, s) for kind, ss in samples.items() for s in ss]


class EnvoyTraffic:
    """Steady load through one Envoy. `rotate()` starts a fresh segment and hands back the finished one."""

    def __init__(self, edge: Edge, *, rate_per_s: float, phase_s: float) -> None:
        self.edge = edge
        self._rate_per_s = rate_per_s
        # A segment outlives SEGMENT_S while an edit is pending (rotation waits for convergence).
        self._max_duration_s = max(SEGMENT_S, phase_s) + CONVERGENCE_TIMEOUT_S + 60.0
        self._current: _Segment | None = None
        self._recent: list[Hit] = []  # the end of the previous segment, for the sliding window

    def start(self) -> None:
        self._current = self._new_segment()
        self._current.start()

    @property
    def segment_age_s(self) -> float:
        return 0.0 if self._current is None else time.monotonic() - self._current.started_at

    def rotate(self) -> list[Hit]:
        old, self._current = self._current, self._new_segment()
        # Started after it is recorded as current: an interrupt mid-start still leaves it for stop().
        self._current.start()
        return self._finish(old)

    def stop(self) -> list[Hit]:
        old, self._current = self._current, None
        return self._finish(old)

    def current_hits(self) -> list[Hit]:
        return [] if self._current is None else self._current.hits()

    def window(self, now: float, current: list[Hit]) -> list[Hit]:
        since = now - WINDOW_S
        return [h for h in self._recent if h[0] >= since] + [h for h in current if h[0] >= since]

    def _new_segment(self) -> _Segment:
        return _Segment(self.edge.url, rate_per_s=self._rate_per_s, max_duration_s=self._max_duration_s)

    def _finish(self, segment: _Segment | None) -> list[Hit]:
        if segment is None:
            return []
        hits = segment.stop()
        cutoff = time.monotonic() - WINDOW_S
        self._recent = [h for h in hits if h[0] >= cutoff]
        return hits

