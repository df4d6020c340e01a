"""Metrics of the closed NACK loop (issue 11 item 4; docs/operations.md "Quarantined resources"), read at
scrape time from the Quarantine (xds/cache/quarantine.py).

* `xds_quarantined_resources{group,type,resource}`: 1 for each resource a proxy rejected that the group is
  served its last ACKed version of (or none). Labels are bounded by what the catalog produces.
* `xds_quarantined_total`: resources put in quarantine (again after a retry that was rejected again).
* `xds_quarantine_retries_total`: quarantined resources tried again because their input changed.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from xds.cache.quarantine import Quarantine


class QuarantineCollector(Collector):
    def __init__(self, quarantine: Quarantine) -> None:
        self._quarantine = quarantine

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        gauge = GaugeMetricFamily("xds_quarantined_resources",
                                  "Resources a proxy rejected; the group is served the last ACKed version.",
                                  labels=["group", "type", "resource"])
        for entry in self._quarantine.rejections():
            gauge.add_metric([entry.group, entry.short_type, entry.name], 1.0)
        yield gauge
        yield CounterMetricFamily("xds_quarantined", "Resources put in quarantine after a NACK.",
                                  value=self._quarantine.quarantined_total)
        yield CounterMetricFamily("xds_quarantine_retries",
                                  "Quarantined resources tried again because their input changed.",
                                  value=self._quarantine.retried_total)
