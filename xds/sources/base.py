"""The contract between sources (registries, files) and the pipeline that merges what they publish.

A source publishes the *full* current state it knows, never a delta, and the latest publish wins; a source
that cannot read its input (bad edit, outage) reports an error instead and the pipeline keeps serving the
last good state of that source (docs/protocol.md R36: "source unreachable" must never become "zero
endpoints").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from xds.model.service import Catalog
from xds.policy.schema import Policy


@dataclass(frozen=True, slots=True)
class SourceUpdate:
    source: str  # the publishing source's name, e.g. "file:/abs/path/catalog.yaml"
    catalog: Catalog
    policy: Policy | None  # None when the source carries no policy (a plain registry)


class SourceSink(Protocol):
    """Where sources deliver. Called on the event loop thread; must return quickly."""

    def publish(self, update: SourceUpdate) -> None:
        """A full new state of `update.source`, replacing everything it published before."""

    def report_error(self, source: str, message: str) -> None:
        """`source` rejected its input or lost its registry; its last published state stays in effect.
        `message` is for humans (logs, `xds status`). A later publish means the source recovered."""


class Source(Protocol):
    @property
    def name(self) -> str:
        """Stable, unique name used as `SourceUpdate.source` ("file:/etc/xds/catalog.yaml", "consul:dc1")."""

    async def run(self, sink: SourceSink) -> None:
        """Watch until cancelled, publishing once synced and after every change. Never returns normally and
        never raises for bad input or outages: those go to `sink.report_error` and are retried."""
