"""SnapshotStore: the latest consistent Snapshot per node group, and who to wake when it changes.

The pipeline publishes a *builder* (group -> Snapshot) each time the sources or the policy change. The
store builds snapshots only for groups that a proxy has asked for (plus any built before), keeps the last
good snapshot of a group whose build fails, and calls each group's listeners when its snapshot changes.
Nothing is served before the first builder arrives: `get` returns None until then (XDS-RULES R26, F2).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from xds.cache.snapshot import Snapshot

log = logging.getLogger("xds.cache")

SnapshotBuilder = Callable[[str, Snapshot | None], Snapshot]
Listener = Callable[[Snapshot], None]


@dataclass(frozen=True, slots=True)
class BuildReport:
    group: str
    seconds: float
    ok: bool
    error: str = ""


class SnapshotStore:
    """Thread-safe holder of snapshots; listener callbacks run on the publishing thread."""

    def __init__(self, *, on_build: Callable[[BuildReport], None] | None = None) -> None:
        self._builder: SnapshotBuilder | None = None
        self._snapshots: dict[str, Snapshot] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.RLock()
        self._on_build = on_build

    @property
    def ready(self) -> bool:
        return self._builder is not None

    def publish(self, builder: SnapshotBuilder) -> None:
        """Adopt a new world and rebuild every group that is in use."""
        with self._lock:
            self._builder = builder
            groups = set(self._snapshots) | set(self._listeners)
        for group in sorted(groups):
            self._rebuild(group)

    def get(self, group: str) -> Snapshot | None:
        """The current snapshot of `group`, built on first use; None before the first publish."""
        with self._lock:
            snapshot = self._snapshots.get(group)
            if snapshot is not None or self._builder is None:
                return snapshot
        return self._rebuild(group)

    def error(self, group: str) -> str:
        """The last build error of `group`, or "" if its last build succeeded."""
        with self._lock:
            return self._errors.get(group, "")

    def groups(self) -> list[str]:
        with self._lock:
            return sorted(self._snapshots)

    def watch(self, group: str, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every new snapshot of `group`; returns the function that stops it."""
        with self._lock:
            self._listeners.setdefault(group, []).append(listener)

        def cancel() -> None:
            with self._lock:
                listeners = self._listeners.get(group, [])
                if listener in listeners:
                    listeners.remove(listener)
                if not listeners:
                    self._listeners.pop(group, None)

        return cancel

    def _rebuild(self, group: str) -> Snapshot | None:
        # Builds run outside the lock (they take milliseconds to seconds), so a publish on another thread
        # can replace the builder meanwhile: a result made with a superseded builder is built again rather
        # than stored over the newer one.
        while True:
            with self._lock:
                builder = self._builder
            result = self._build_once(group, builder)
            with self._lock:
                if self._builder is builder:
                    return result

    def _build_once(self, group: str, builder: SnapshotBuilder | None) -> Snapshot | None:
        with self._lock:
            previous = self._snapshots.get(group)
        if builder is None:
            return None
        started = time.perf_counter()
        try:
            snapshot = builder(group, previous)
        except Exception as exc:  # a bad build must never take down serving: keep the last good one
            elapsed = time.perf_counter() - started
            log.error("snapshot_build_failed", extra={"group": group, "error": str(exc)})
            with self._lock:
                self._errors[group] = str(exc)
            if self._on_build:
                self._on_build(BuildReport(group=group, seconds=elapsed, ok=False, error=str(exc)))
            return previous
        elapsed = time.perf_counter() - started
        if self._on_build:
            self._on_build(BuildReport(group=group, seconds=elapsed, ok=True))
        with self._lock:
            if self._builder is not builder:
                return previous  # superseded while building: the caller builds again
            self._errors.pop(group, None)
            changed = previous is None or previous.versions != snapshot.versions
            if changed:
                self._snapshots[group] = snapshot
            listeners = list(self._listeners.get(group, ()))
        if changed:
            for listener in listeners:
                listener(snapshot)
        return self._snapshots[group]
