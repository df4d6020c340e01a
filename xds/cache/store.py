"""SnapshotStore: the latest consistent Snapshot per node group, and who to wake when it changes.

Theory of operation
-------------------
The pipeline publishes a *builder* (group -> Snapshot) each time the sources or the policy change. A node
group exists in the store from the moment something asks for it, and it is in one of two states:

* **live**: at least one stream watches it. Every publish rebuilds it and wakes its watchers.
* **idle**: nobody watches it (its last stream closed, or it was only looked at: `xds render`, the
  management API). Publishes do not rebuild it; its snapshot is rebuilt on the next `get` if the builder
  changed meanwhile, and it is forgotten once it has been idle for `idle_grace_s` (`sweep`). The grace
  keeps a reconnecting Envoy (a control-plane restart, `max_connection_age`) from paying a cold build.

The number of groups held is capped (`max_groups`, issue 7): the group key comes from the client
(node.cluster by default), so without a cap any client could make the server build and keep a snapshot per
name it invents. A new group at the cap first evicts the longest-idle group; when every group is live it is
refused with `GroupLimitError`, which the server turns into RESOURCE_EXHAUSTED.

Nothing is served before the first builder arrives: `get` returns None until then (docs/protocol.md R26).
A build of one group runs at most once at a time (a per-group lock), so a connect storm of one new group
builds it once, and a result made with a superseded builder is never stored over a newer one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from xds.cache.snapshot import Snapshot

log = logging.getLogger("xds.cache")

SnapshotBuilder = Callable[[str, Snapshot | None], Snapshot]
Listener = Callable[[Snapshot], None]

DEFAULT_MAX_GROUPS = 1000
DEFAULT_IDLE_GRACE_S = 60.0


class GroupLimitError(Exception):
    """A new node group would exceed the store's cap and no idle group can make room."""


@dataclass(frozen=True, slots=True)
class BuildReport:
    group: str
    seconds: float
    ok: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class GroupCounts:
    live: int
    idle: int


@dataclass(slots=True)
class _Group:
    snapshot: Snapshot | None = None
    # The builder of the last attempt, successful or not: the group is fresh while it is the current one.
    attempted_with: SnapshotBuilder | None = None
    error: str = ""
    listeners: list[Listener] = field(default_factory=list)
    idle_since: float | None = None  # monotonic seconds; None while live
    # Reentrant: a builder may publish (tests do), which refreshes this group again on the same thread.
    build_lock: threading.RLock = field(default_factory=threading.RLock)


class SnapshotStore:
    """Thread-safe holder of snapshots; listener callbacks run on the thread that built the snapshot."""

    def __init__(self, *, on_build: Callable[[BuildReport], None] | None = None,
                 max_groups: int = DEFAULT_MAX_GROUPS, idle_grace_s: float = DEFAULT_IDLE_GRACE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_groups < 1:
            raise ValueError(f"max_groups must be at least 1, got {max_groups}")
        if idle_grace_s < 0:
            raise ValueError(f"idle_grace_s must not be negative, got {idle_grace_s}")
        self._builder: SnapshotBuilder | None = None
        self._groups: dict[str, _Group] = {}
        self._lock = threading.RLock()
        self._on_build = on_build
        self._max_groups = max_groups
        self._idle_grace_s = idle_grace_s
        self._clock = clock

    @property
    def ready(self) -> bool:
        return self._builder is not None

    @property
    def max_groups(self) -> int:
        return self._max_groups

    def publish(self, builder: SnapshotBuilder) -> None:
        """Adopt a new world and rebuild every live group (idle ones are rebuilt when next asked for)."""
        with self._lock:
            self._builder = builder
            live = sorted(name for name, g in self._groups.items() if g.listeners)
        self.sweep()
        for name in live:
            self._refresh(name)

    def get(self, group: str) -> Snapshot | None:
        """The current snapshot of `group`, built if it is missing or stale; None before the first publish
        or when the group has never built. A group not held yet is kept as idle (subject to the cap; at
        the cap the snapshot is built and returned without being kept)."""
        with self._lock:
            if self._builder is None:
                return None
            state = self._groups.get(group)
            if state is not None and state.attempted_with is self._builder:
                return state.snapshot
            if state is None:
                try:
                    self._admit(group, live=False)
                except GroupLimitError:
                    return self._build_unkept(group)
        return self._refresh(group)

    def current(self, group: str) -> Snapshot | None:
        """The snapshot of `group` if it is up to date, without building; None if a build is needed."""
        with self._lock:
            state = self._groups.get(group)
            if state is None or self._builder is None or state.attempted_with is not self._builder:
                return None
            return state.snapshot

    def error(self, group: str) -> str:
        """The last build error of `group`, or "" if its last build succeeded."""
        with self._lock:
            state = self._groups.get(group)
            return state.error if state is not None else ""

    def groups(self) -> list[str]:
        """Groups holding a snapshot, live or idle."""
        with self._lock:
            return sorted(name for name, g in self._groups.items() if g.snapshot is not None)

    def counts(self) -> GroupCounts:
        with self._lock:
            live = sum(1 for g in self._groups.values() if g.listeners)
            return GroupCounts(live=live, idle=len(self._groups) - live)

    def watch(self, group: str, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every new snapshot of `group`; returns the function that stops it.

        Raises GroupLimitError when `group` is new and the store is full of live groups.
        """
        with self._lock:
            state = self._groups.get(group) or self._admit(group, live=True)
            state.listeners.append(listener)
            state.idle_since = None

        def cancel() -> None:
            with self._lock:
                current = self._groups.get(group)
                if current is None or listener not in current.listeners:
                    return
                current.listeners.remove(listener)
                if not current.listeners:
                    current.idle_since = self._clock()

        return cancel

    def sweep(self) -> list[str]:
        """Forget groups idle for longer than the grace; returns their names."""
        now = self._clock()
        with self._lock:
            expired = [name for name, g in self._groups.items()
                       if g.idle_since is not None and now - g.idle_since >= self._idle_grace_s]
            for name in expired:
                del self._groups[name]
        if expired:
            log.info("node_groups_dropped", extra={"count": len(expired), "groups": expired[:10]})
        return expired

    # ----------------------------------------------------------------- helpers

    def _admit(self, group: str, *, live: bool) -> _Group:
        """Add `group` (lock held), evicting the longest-idle group at the cap."""
        if len(self._groups) >= self._max_groups:
            idle = [(g.idle_since, name) for name, g in self._groups.items() if g.idle_since is not None]
            if not idle:
                raise GroupLimitError(f"node group limit reached: {self._max_groups} groups have connected "
                                      "proxies")
            del self._groups[min(idle)[1]]
        state = self._groups[group] = _Group(idle_since=None if live else self._clock())
        return state

    def _build_unkept(self, group: str) -> Snapshot | None:
        builder = self._builder
        assert builder is not None
        try:
            return builder(group, None)
        except Exception:
            return None

    def _refresh(self, group: str) -> Snapshot | None:
        # Builds run outside the store lock (they take milliseconds to seconds), so a publish on another
        # thread can replace the builder meanwhile: a result made with a superseded builder is built again
        # rather than stored over the newer one. The group's own lock makes concurrent refreshes of one
        # group (a publish and a new stream's get) build once: the second finds the group fresh.
        with self._lock:
            state = self._groups.get(group)
        if state is None:
            return None
        with state.build_lock:
            while True:
                with self._lock:
                    builder = self._builder
                    if self._groups.get(group) is not state:
                        return state.snapshot  # swept or evicted meanwhile
                    if state.attempted_with is builder:
                        return state.snapshot
                if builder is None:
                    return None
                self._build_once(group, state, builder)

    def _build_once(self, group: str, state: _Group, builder: SnapshotBuilder) -> None:
        previous = state.snapshot
        started = time.perf_counter()
        try:
            snapshot = builder(group, previous)
        except Exception as exc:  # a bad build must never take down serving: keep the last good one
            elapsed = time.perf_counter() - started
            log.error("snapshot_build_failed", extra={"group": group, "error": str(exc)})
            with self._lock:
                if self._builder is builder:
                    state.error = str(exc)
                    state.attempted_with = builder
            if self._on_build:
                self._on_build(BuildReport(group=group, seconds=elapsed, ok=False, error=str(exc)))
            return
        elapsed = time.perf_counter() - started
        if self._on_build:
            self._on_build(BuildReport(group=group, seconds=elapsed, ok=True))
        with self._lock:
            if self._builder is not builder:
                return  # superseded while building: the caller builds again
            state.error = ""
            state.attempted_with = builder
            changed = previous is None or previous.versions != snapshot.versions
            if changed:
                state.snapshot = snapshot
            listeners = list(state.listeners)
        if changed:
            for listener in listeners:
                listener(snapshot)
