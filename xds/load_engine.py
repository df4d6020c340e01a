"""LoadEngine: where load reports meet the pipeline (issue 10, control-plane mode; docs/load-aware.md).

The app hands it every new world (`set_world`: which endpoints are load-aware, which speak ORCA); the report
API and the ORCA streams hand it reports (`submit`); once per interval it steps the tracker and, when a
service's factors moved, asks the app to rebuild (`on_change`). The app's next build reads `factors()` into
the World, and apply_policy scales those services' endpoint weights. One tick per interval is the churn
bound: at most one new set of weights, so one EDS push, per service per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from xds.load_settings import LoadSettings
from xds.model.service import Catalog
from xds.policy.load_tracker import REJECT_REASONS, LoadRow, LoadTracker, load_aware_endpoints
from xds.policy.load_weights import LoadFactors
from xds.policy.schema import Policy
from xds.sources.orca import OrcaSubscriber

log = logging.getLogger("xds.load")

SOURCE_API = "api"
SOURCE_ORCA = "orca"
SOURCES = (SOURCE_API, SOURCE_ORCA)


class LoadEngine:
    def __init__(self, settings: LoadSettings, *, on_change: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.tracker = LoadTracker(settings.params, min_report_gap_s=settings.min_report_gap_s)
        self._on_change = on_change
        self._clock = clock
        self.orca = OrcaSubscriber(lambda a, c, m: self.submit(a, c, m, source=SOURCE_ORCA),
                                   report_interval_s=settings.orca_interval_s)
        # Read by the metrics at scrape time (xds/observability/load_metrics.py); keys are bounded sets.
        self.accepted: Counter[str] = Counter({s: 0 for s in SOURCES})
        self.rejected: Counter[tuple[str, str]] = Counter(
            {(s, r): 0 for s in SOURCES for r in REJECT_REASONS})
        self.updates: Counter[str] = Counter()  # by service: ticks that changed its weights
        self._started = False

    def set_world(self, catalog: Catalog, policy: Policy) -> None:
        """The load-aware endpoints of the world just built; call from the event loop."""
        endpoints = load_aware_endpoints(catalog, policy)
        if endpoints == self.tracker.endpoints:
            return
        self.tracker.set_endpoints(endpoints)
        live = {e.service for e in endpoints}
        for service in [s for s in self.updates if s not in live]:
            del self.updates[service]
        if self._started:
            self.orca.set_targets((e.address, *e.orca) for e in endpoints if e.orca is not None)

    def submit(self, address: str, cpu: float, memory: float, *, source: str = SOURCE_API) -> str | None:
        reason = self.tracker.submit(address, cpu, memory, source=source, now=self._clock())
        if reason is None:
            self.accepted[source] += 1
        else:
            self.rejected[(source, reason)] += 1
            log.debug("load_report_rejected", extra={"source": source, "reason": reason})
        return reason

    def factors(self) -> LoadFactors:
        return self.tracker.factors()

    def rows(self) -> list[LoadRow]:
        return self.tracker.rows(self._clock())

    def tick(self) -> set[str]:
        changed = self.tracker.tick(self._clock())
        if changed:
            for service in changed:
                self.updates[service] += 1
            log.info("load_weights_changed", extra={"services": sorted(changed)})
            self._on_change()
        return changed

    async def run(self) -> None:
        """Tick once per interval until cancelled, with the ORCA streams alongside."""
        self._started = True
        endpoints = self.tracker.endpoints
        self.orca.set_targets((e.address, *e.orca) for e in endpoints if e.orca is not None)
        try:
            while True:
                await asyncio.sleep(self.settings.interval_s)
                self.tick()
        finally:
            await self.orca.close()
