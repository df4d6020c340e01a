"""`xds_ready`: 1 while this replica answers `GET /ready` with 200, read at scrape time (issue 14).

The alert "no ready replica" (deploy/prometheus/alerts.yaml, XdsNoReadyReplica) needs readiness as a series:
a replica that is up but has not synced every source yet is not serving Envoys (docs/operations.md
"Readiness and liveness"), and Prometheus' own `up` cannot tell it from a ready one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class ReadyCollector(Collector):
    def __init__(self, ready: Callable[[], bool]) -> None:
        self._ready = ready

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "xds_ready", "1 when this replica answers /ready with 200 (every source synced once and a "
            "snapshot published), else 0.", value=1.0 if self._ready() else 0.0)
