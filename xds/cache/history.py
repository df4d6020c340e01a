"""SnapshotHistory: the last configuration changes, per node group, with a diff of what changed (issue 14).

The web console (docs/console.md) shows "what changed, when, for whom". Each snapshot a builder makes is
compared with the group's previous one: resources added, changed and removed, by type and name, and for a
few of them a unified diff of their JSON. Groups that receive the same change (the same old and new
versions, as groups sharing a plan do, issue 12) share one entry that lists them all, so a thousand
sidecar groups make one entry per change, not a thousand.

Bounded in count AND bytes: at most `max_entries` changes, at most `max_bytes` of names and diff text in
all; the oldest go first. Each list of names and each diff is cut too, so one huge change cannot evict
every other. Pure: no I/O; a lock makes `record` safe from the store's worker threads.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from xds.cache.snapshot import Diff, Resource, ResourceMap, Snapshot
from xds.cache.store import SnapshotBuilder
from xds.typeurls import PUSH_ORDER, short_name

DEFAULT_MAX_ENTRIES = 50
DEFAULT_MAX_BYTES = 1024 * 1024
MAX_NAMES = 100  # per list (added, changed, removed) of one entry
MAX_DIFFS = 8  # resources diffed per entry; the rest are named only
MAX_DIFF_BYTES = 8 * 1024  # per diff text
MAX_GROUPS = 50  # group names listed per entry; `group_count` has them all
_CUT = "\n… (cut)\n"

Render = Callable[[Resource], str]
ChangeKey = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class ResourceDiff:
    type: str  # short name: cds, eds, lds, rds, sds
    name: str
    kind: str  # added, changed, removed
    diff: str  # unified diff of the pretty-printed JSON, cut at MAX_DIFF_BYTES


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    at: float  # Unix seconds of the first group's build
    groups: tuple[str, ...]
    group_count: int
    initial: bool  # the group's first snapshot: everything is new, nothing is diffed
    versions: tuple[tuple[str, str], ...]  # (short type, new version) of the types whose version moved
    added: tuple[str, ...]  # "type/name"
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    diffs: tuple[ResourceDiff, ...]
    truncated: bool  # some names or diffs were left out by the bounds above
    size: int  # the bytes this entry counts against max_bytes

    def as_json(self) -> dict[str, object]:
        return {"seq": self.seq, "at": self.at, "groups": list(self.groups), "group_count": self.group_count,
                "initial": self.initial, "versions": dict(self.versions), "added": list(self.added),
                "changed": list(self.changed), "removed": list(self.removed),
                "diffs": [{"type": d.type, "name": d.name, "kind": d.kind, "diff": d.diff}
                          for d in self.diffs],
                "truncated": self.truncated}


def _pretty(render: Render, resource: Resource | None) -> list[str]:
    if resource is None:
        return []
    text = render(resource)
    with contextlib.suppress(ValueError):  # a renderer's non-JSON answer is diffed as it is
        text = json.dumps(json.loads(text), indent=1, sort_keys=True, ensure_ascii=False)
    return text.splitlines(keepends=True)


def _cut(text: str, limit: int) -> tuple[str, bool]:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text, False
    return encoded[:limit].decode(errors="ignore") + _CUT, True


def resource_diff(render: Render, type_name: str, name: str, old: Resource | None,
                  new: Resource | None) -> tuple[ResourceDiff, bool]:
    """The unified diff of one resource's JSON; whether it was cut."""
    kind = "added" if old is None else "removed" if new is None else "changed"
    lines = difflib.unified_diff(_pretty(render, old), _pretty(render, new),
                                 fromfile=f"{type_name}/{name} (before)",
                                 tofile=f"{type_name}/{name} (after)", n=2)
    text, cut = _cut("".join(lines), MAX_DIFF_BYTES)
    return ResourceDiff(type=type_name, name=name, kind=kind, diff=text), cut


def _diff(old: Mapping[str, Resource], new: Mapping[str, Resource]) -> Diff:
    changed = frozenset(n for n, r in new.items() if (o := old.get(n)) is None or o.hash != r.hash)
    return Diff(changed=changed, removed=frozenset(set(old) - set(new)))


def _versions(snapshot: Snapshot | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(snapshot.versions.items())) if snapshot is not None else ()


def compare(previous: Snapshot | None, snapshot: Snapshot, render: Render) -> tuple[
        tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[ResourceDiff, ...], bool]:
    """(added, changed, removed, diffs, truncated) from `previous` to `snapshot`, bounded as above."""
    added: list[str] = []
    changed: list[str] = []
    removed: list[str] = []
    pending: list[tuple[str, str, Resource | None, Resource | None]] = []
    types = [*PUSH_ORDER, *sorted((set(snapshot.versions) | set(previous.versions if previous else ()))
                                  - set(PUSH_ORDER))]
    for type_url in types:
        new = snapshot.of_type(type_url)
        old = previous.of_type(type_url) if previous is not None else {}
        if previous is not None and previous.version(type_url) == snapshot.version(type_url):
            continue  # equal content hashes: nothing of this type moved (docs/protocol.md R14)
        short = short_name(type_url)
        # ResourceMap.diff_from is memoized and the streams ask for the same diff to push it (docs/protocol.md
        # R14), so naming what moved costs nothing more than the names that moved.
        moved = new.diff_from(old) if isinstance(new, ResourceMap) else _diff(old, new)
        for name in sorted(moved.changed):
            before = old.get(name)
            if before is None:
                added.append(f"{short}/{name}")
            else:
                changed.append(f"{short}/{name}")
            pending.append((short, name, before, new[name]))
        for name in sorted(moved.removed):
            removed.append(f"{short}/{name}")
            pending.append((short, name, old[name], None))
    truncated = any(len(names) > MAX_NAMES for names in (added, changed, removed))
    diffs: list[ResourceDiff] = []
    if previous is not None:
        # Changed resources first: an operator asks "what is different" before "what is new".
        pending.sort(key=lambda p: (p[2] is None or p[3] is None))
        truncated = truncated or len(pending) > MAX_DIFFS
        for short, name, before, after in pending[:MAX_DIFFS]:
            diff, cut = resource_diff(render, short, name, before, after)
            diffs.append(diff)
            truncated = truncated or cut
    return (tuple(added[:MAX_NAMES]), tuple(changed[:MAX_NAMES]), tuple(removed[:MAX_NAMES]), tuple(diffs),
            truncated)


def _size(change: Change) -> int:
    names = sum(len(n) for n in (*change.added, *change.changed, *change.removed, *change.groups))
    return names + sum(len(d.diff) + len(d.name) for d in change.diffs) + 200


class SnapshotHistory:
    """The last changes, newest last; see the module docstring for the bounds."""

    def __init__(self, *, render: Render, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"history bounds must be positive, got {max_entries} entries, {max_bytes} bytes")
        self._render = render
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[ChangeKey, Change] = OrderedDict()
        self._bytes = 0
        self._seq = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        return self._bytes

    def record(self, group: str, previous: Snapshot | None, snapshot: Snapshot) -> None:
        """Note `snapshot` replacing `previous` for `group`; an unchanged snapshot is no change."""
        if previous is not None and previous.versions == snapshot.versions:
            return
        key: ChangeKey = (_versions(previous), _versions(snapshot))
        with self._lock:
            known = self._entries.get(key)
            if known is not None:
                if group not in known.groups:
                    groups = known.groups if len(known.groups) >= MAX_GROUPS else (*known.groups, group)
                    self._replace(key, replace(known, groups=groups, group_count=known.group_count + 1))
                return
        # Diffing renders JSON: done outside the lock, so concurrent builds of other groups do not wait.
        added, changed, removed, diffs, truncated = compare(previous, snapshot, self._render)
        moved = tuple((short_name(t), v) for t, v in sorted(snapshot.versions.items())
                      if previous is None or previous.version(t) != v)
        with self._lock:
            if key in self._entries:  # another thread recorded the same change meanwhile
                return
            self._seq += 1
            change = Change(seq=self._seq, at=self._clock(), groups=(group,), group_count=1,
                            initial=previous is None, versions=moved, added=added, changed=changed,
                            removed=removed, diffs=diffs, truncated=truncated, size=0)
            change = replace(change, size=_size(change))
            self._entries[key] = change
            self._bytes += change.size
            while len(self._entries) > self._max_entries or (self._bytes > self._max_bytes
                                                             and len(self._entries) > 1):
                _, oldest = self._entries.popitem(last=False)
                self._bytes -= oldest.size

    def _replace(self, key: ChangeKey, change: Change) -> None:
        """Swap an entry in place (lock held), keeping the byte count right."""
        old = self._entries[key]
        change = replace(change, size=_size(change))
        self._entries[key] = change
        self._bytes += change.size - old.size

    def entries(self) -> list[Change]:
        """Every change held, newest first."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda c: c.seq, reverse=True)


def recorded(builder: SnapshotBuilder, history: SnapshotHistory) -> SnapshotBuilder:
    """`builder` whose every snapshot is recorded in `history` against the group's previous one."""

    def build(group: str, previous: Snapshot | None) -> Snapshot:
        snapshot = builder(group, previous)
        history.record(group, previous, snapshot)
        return snapshot

    return build
