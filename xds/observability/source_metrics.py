"""Metrics of every registry source's SourceStatus (issue 13 section 1; sources/registry/status.py), read
at scrape time, so they are as current as the scrape and cost nothing between scrapes.

* `xds_source_synced{source,kind}`: 1 once the source published its full state since it started.
* `xds_source_outage_seconds{source,kind}`: how long some watch of the source has been failing (0: none).
* `xds_source_failing_watches{source,kind}`: watches currently failing.
* `xds_source_seconds_since_answer{source,kind}`: since the registry last answered (absent before the
  first answer).
* `xds_source_resync_grace_remaining_seconds{source,kind}`: time left in the resync grace (removals held).

Labels are bounded by the configured sources; the free-form `details` and the last error are shown on
/status only, never as labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from xds.sources.registry.status import SourceStatus


class SourceStatusCollector(Collector):
    def __init__(self, statuses: Callable[[], Sequence[SourceStatus]]) -> None:
        self._statuses = statuses

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["source", "kind"]
        synced = GaugeMetricFamily("xds_source_synced",
                                   "1 once the registry source published its full state.", labels=labels)
        outage = GaugeMetricFamily("xds_source_outage_seconds",
                                   "How long some watch of the source has been failing; 0 while all answer.",
                                   labels=labels)
        failing = GaugeMetricFamily("xds_source_failing_watches", "Watches of the source failing now.",
                                    labels=labels)
        since = GaugeMetricFamily("xds_source_seconds_since_answer",
                                  "Seconds since the source's registry last answered.", labels=labels)
        grace = GaugeMetricFamily("xds_source_resync_grace_remaining_seconds",
                                  "Time left in the source's resync grace (removals are held back).",
                                  labels=labels)
        for status in self._statuses():
            key = [status.source, status.kind]
            synced.add_metric(key, 1.0 if status.synced else 0.0)
            outage.add_metric(key, status.outage_s)
            failing.add_metric(key, float(status.failing_watches))
            if status.seconds_since_answer is not None:
                since.add_metric(key, status.seconds_since_answer)
            grace.add_metric(key, status.resync_grace_remaining_s)
        yield from (synced, outage, failing, since, grace)
