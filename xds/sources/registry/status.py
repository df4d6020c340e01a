"""SourceStatus: the one health summary every source reports (issue 13 section 1), read by metrics
(observability/source_metrics.py) and by the /status page and `xds status`.

Pure data: the engine (engine.py) fills it; a registry adds its own few items under `details` (Consul's
known_leader and last_contact_s, a Kubernetes reflector count), which is shown as is but never labelled in
metrics, so it can stay free-form without growing cardinality.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Detail = str | float | int | bool | None


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """How current one source's view of its registry is (docs/protocol.md R33, R36)."""

    source: str  # the source's name, as in SourceUpdate.source
    kind: str  # its row in xds/source_kinds.py: "consul", "kubernetes", ...
    synced: bool  # published at least once since run() started
    outage_s: float  # how long some watch has been failing; 0 while every watch answers
    seconds_since_answer: float | None  # since the registry last answered anything; None: never
    failing_watches: int
    resync_grace_remaining_s: float
    last_error: str  # the last problem reported to the sink, secrets redacted; "" when none since publish
    details: Mapping[str, Detail] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        """For /status: plain JSON types, rounded for humans."""
        return {"kind": self.kind, "synced": self.synced, "outage_s": round(self.outage_s, 3),
                "seconds_since_answer": (None if self.seconds_since_answer is None
                                         else round(self.seconds_since_answer, 3)),
                "failing_watches": self.failing_watches,
                "resync_grace_remaining_s": round(self.resync_grace_remaining_s, 3),
                "last_error": self.last_error, "details": dict(self.details)}


@runtime_checkable
class ReportsStatus(Protocol):
    """A source that can say how current it is (every registry source on the engine)."""

    def status(self) -> SourceStatus:
        """The current status; cheap, no I/O."""
