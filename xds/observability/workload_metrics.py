"""Metrics of the workload CA (issue 9; docs/security.md "Workload certificates (SDS)"), read at scrape time.

* `xds_workload_certs_issued_total`: workload certificates issued (first issue and every rotation).
* `xds_workload_ca_expiry_timestamp_seconds`: when the CA in use expires (alert well before it).
* `xds_workload_ca_reload_errors_total`: CA file changes refused; the last good CA kept serving.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class WorkloadCaCollector(Collector):
    def __init__(self, *, issued: Callable[[], int], ca_expiry_unix: Callable[[], float],
                 reload_errors: Callable[[], int]) -> None:
        self._issued = issued
        self._ca_expiry_unix = ca_expiry_unix
        self._reload_errors = reload_errors

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield CounterMetricFamily("xds_workload_certs_issued",
                                  "Workload certificates issued (first issue and every rotation).",
                                  value=self._issued())
        yield GaugeMetricFamily("xds_workload_ca_expiry_timestamp_seconds",
                                "Unix time at which the workload CA in use expires.",
                                value=self._ca_expiry_unix())
        yield CounterMetricFamily("xds_workload_ca_reload_errors",
                                  "Changes of the CA files that were refused; the last good CA kept serving.",
                                  value=self._reload_errors())
