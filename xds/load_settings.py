"""Settings of load-aware weights (issue 10, docs/load-aware.md): flags and XDS_LOAD_* variables.

The weight function's parameters are server settings, not per-service keys: one fleet, one notion of "hot".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xds.policy.load_tracker import DEFAULT_MIN_REPORT_GAP_S
from xds.policy.load_weights import LoadParams

DEFAULT_LOAD_REPORT_ADDRESS = "127.0.0.1:18002"
DEFAULT_LOAD_INTERVAL_S = 2.0
DEFAULT_ORCA_INTERVAL_S = 1.0

# Flag name (argparse dest) -> environment variable.
ENVIRONMENT = {
    "load_report_address": "XDS_LOAD_REPORT_ADDRESS",
    "load_interval": "XDS_LOAD_INTERVAL",
    "load_combine": "XDS_LOAD_COMBINE",
    "load_smoothing": "XDS_LOAD_SMOOTHING",
    "load_dead_band": "XDS_LOAD_DEAD_BAND",
    "load_max_step": "XDS_LOAD_MAX_STEP",
    "load_gain": "XDS_LOAD_GAIN",
    "load_floor": "XDS_LOAD_FLOOR",
    "load_ttl": "XDS_LOAD_TTL",
    "load_report_gap": "XDS_LOAD_REPORT_GAP",
    "load_orca_interval": "XDS_LOAD_ORCA_INTERVAL",
}


@dataclass(frozen=True, slots=True)
class LoadSettings:
    params: LoadParams = field(default_factory=LoadParams)
    # Weights change at most once per interval per service: the bound on EDS pushes load causes.
    interval_s: float = DEFAULT_LOAD_INTERVAL_S
    report_address: str = DEFAULT_LOAD_REPORT_ADDRESS
    # The shortest time between two accepted reports of one endpoint (a flood is refused and counted).
    min_report_gap_s: float = DEFAULT_MIN_REPORT_GAP_S
    # The report interval asked of ORCA out-of-band servers.
    orca_interval_s: float = DEFAULT_ORCA_INTERVAL_S

    def __post_init__(self) -> None:
        for name in ("interval_s", "orca_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"load settings: {name} must be more than 0, got {getattr(self, name)!r}")
        if not self.min_report_gap_s >= 0:
            raise ValueError(f"load settings: min_report_gap_s must be >= 0, got {self.min_report_gap_s!r}")
