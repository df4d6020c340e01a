"""Metrics of load-aware weights (issue 10; docs/load-aware.md), read at scrape time.

* `xds_load_reports_total{source}`: reports taken (source `api` or `orca`).
* `xds_load_reports_rejected_total{source, reason}`: reports refused, by reason (a closed set:
  policy/load_tracker.py REJECT_REASONS); a refused report changes nothing.
* `xds_load_weight_updates_total{service}`: intervals in which the service's weights changed (each is at
  most one EDS push per proxy).
* `xds_load_endpoint_utilization{service, address, resource}`: the last reported `cpu` and `memory`, and
  the smoothed `combined` value the weight follows.
* `xds_load_endpoint_report_age_seconds{service, address}`, `xds_load_endpoint_weight{service, address}`.

Label sets stay bounded: `service` and `address` come from the catalog's load-aware endpoints, never from a
report (a report naming an unknown address is refused before it is counted by address), and a series
disappears with its endpoint, since every scrape reads the tracker afresh.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from xds.policy.load_tracker import LoadRow


class LoadCollector(Collector):
    def __init__(self, *, rows: Callable[[], Sequence[LoadRow]], accepted: Counter[str],
                 rejected: Counter[tuple[str, str]], updates: Counter[str]) -> None:
        self._rows = rows
        self._accepted = accepted
        self._rejected = rejected
        self._updates = updates

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        accepted = CounterMetricFamily("xds_load_reports", "Load reports taken.", labels=["source"])
        for source, count in sorted(self._accepted.items()):
            accepted.add_metric([source], count)
        yield accepted
        rejected = CounterMetricFamily("xds_load_reports_rejected",
                                       "Load reports refused (NaN, out of [0, 1], unknown endpoint, too "
                                       "frequent); they changed nothing.", labels=["source", "reason"])
        for (source, reason), count in sorted(self._rejected.items()):
            rejected.add_metric([source, reason], count)
        yield rejected
        updates = CounterMetricFamily("xds_load_weight_updates",
                                      "Intervals in which a load-aware service's weights changed.",
                                      labels=["service"])
        for service, count in sorted(self._updates.items()):
            updates.add_metric([service], count)
        yield updates
        utilization = GaugeMetricFamily("xds_load_endpoint_utilization",
                                        "Last reported utilization (cpu, memory) and the smoothed combined "
                                        "value the weight follows, 0 to 1.",
                                        labels=["service", "address", "resource"])
        age = GaugeMetricFamily("xds_load_endpoint_report_age_seconds",
                                "Seconds since the endpoint's last accepted load report.",
                                labels=["service", "address"])
        weight = GaugeMetricFamily("xds_load_endpoint_weight", "The EDS weight a load-aware endpoint is "
                                   "served with.", labels=["service", "address"])
        for row in self._rows():
            for resource, value in (("cpu", row.cpu), ("memory", row.memory), ("combined", row.utilization)):
                if value is not None:
                    utilization.add_metric([row.service, row.address, resource], value)
            if row.age_s is not None:
                age.add_metric([row.service, row.address], row.age_s)
            weight.add_metric([row.service, row.address], row.weight)
        yield utilization
        yield age
        yield weight
