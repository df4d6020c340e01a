"""Quarantine: resources a proxy rejected, held back from its node group (issue 11 item 4).

The closed NACK loop (docs/protocol.md NL1-NL4):

* Every snapshot a group is served is remembered by (type, version) for a few versions, so a NACK of
  version V names the exact resources V held, and an ACK of V names the resources the proxies now run.
* A NACK is narrowed to the resources it rejected: Envoy names them in `error_detail` ("Error
  adding/updating listener(s) NAME: ..."). When it names none, the suspects are the resources that differ
  from the last ACKed version of the type (the only ones that can have caused the rejection); one suspect
  is quarantined at once, several are bisected: half of them is sent with its new content while the rest
  is held back, an ACK clears the half sent and a NACK keeps only it, until one resource is left and
  rejected alone (docs/protocol.md NL1).
* `apply` then builds every snapshot of that group with the last ACKed bytes of each rejected resource
  (or without the resource, when no version of it was ever accepted), so the rest of the update goes
  through instead of being re-sent and re-rejected with every later change of the type.
* When the input changes (the resource the pipeline makes for that name has another content hash, or it
  is gone), the entry is lifted: the new content is tried once, and quarantined again if it is rejected
  again. Identical content is never re-sent to be rejected a second time.

Pure and thread-safe: builds call `apply` on a worker thread, the server's callbacks call `acked` and
`nacked` on the event loop.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from xds.cache.snapshot import Resource, Snapshot, version_of
from xds.cache.store import SnapshotBuilder
from xds.typeurls import TypeUrl, short_name

# Versions of one type remembered per group: a NACK or ACK answers one of the last few responses (a
# stream has at most one outstanding response per type, docs/protocol.md R37), so a handful is plenty; each
# kept version holds its resources alive, so more would cost memory under churn (issue 7).
HISTORY_PER_TYPE = 4
# Groups whose served history is kept; the least recently built is forgotten first (issue 7: every
# per-group structure is bounded).
MAX_GROUPS = 4096

SERVING_LAST_ACKED = "last-acked"
SERVING_WITHHELD = "withheld"


@dataclass(slots=True)
class _Bisection:
    """Suspects of a NACK that named no resource, narrowed one probe at a time."""

    pending: list[tuple[str, str]]  # (name, rejected content hash): the culprit is among them
    trying: tuple[str, ...]  # the suspects the current probe sends with their new content
    version: str = ""  # the version the probe was served as (set by `apply`); "" until then


def _half(pending: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(name for name, _ in pending[:max(1, len(pending) // 2)])


@dataclass(frozen=True, slots=True)
class Rejection:
    """One quarantined resource of one node group."""

    group: str
    type_url: str
    name: str
    message: str  # the proxy's error_detail, already truncated by the server (R11)
    node_ids: tuple[str, ...]  # the proxies that rejected this content
    rejected_hash: str  # content hash of the rejected resource: identical content is not re-sent
    nacked_at: float  # Unix time of the first NACK of this content
    quarantined_at: float | None = None  # Unix time a snapshot without the content was first built
    serving: str = ""  # SERVING_LAST_ACKED or SERVING_WITHHELD, once quarantined

    @property
    def short_type(self) -> str:
        return short_name(self.type_url)


def rejected_names(message: str, candidates: Iterable[str]) -> list[str]:
    """The candidate names `message` says were rejected.

    Envoy reports a failed SotW update of listeners or clusters as "Error adding/updating listener(s)
    a: why\\nb: why" (one "name: reason" per rejected resource); other messages quote a name or mention it
    as a word. Names are matched whole, so "web" does not match inside "web2".
    """
    names = sorted(set(candidates), key=len, reverse=True)
    structured = [n for n in names
                  if re.search(r"(?:^|\n|\(s\) )" + re.escape(n) + r": ", message)]
    if structured:
        return sorted(structured)
    quoted = [n for n in names if re.search(r"['\"`]" + re.escape(n) + r"['\"`]", message)]
    if quoted:
        return sorted(quoted)
    return sorted(n for n in names if re.search(r"(?<![\w.-])" + re.escape(n) + r"(?![\w-])", message))


class Quarantine:
    """Served history, last ACKed resources and quarantined resources of every node group."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # group -> type -> version -> resources of that version, newest last.
        self._served: collections.OrderedDict[
            str, dict[TypeUrl, collections.OrderedDict[str, Mapping[str, Resource]]]] = \
            collections.OrderedDict()
        self._acked: dict[str, dict[TypeUrl, Mapping[str, Resource]]] = {}
        self._entries: dict[tuple[str, str, str], Rejection] = {}
        self._bisections: dict[tuple[str, TypeUrl], _Bisection] = {}
        self._generation = 0
        self.quarantined_total = 0  # resources put in quarantine (a re-rejection after a retry counts again)
        self.retried_total = 0  # entries lifted because their input changed
        self.probes_total = 0  # bisection probes answered (ACK or NACK)

    @property
    def generation(self) -> int:
        """Changes whenever the set of rejections (or their state) changes: the cue to report them again."""
        with self._lock:
            return self._generation

    def rejections(self) -> list[Rejection]:
        with self._lock:
            return [self._entries[k] for k in sorted(self._entries)]

    # ------------------------------------------------------------------ from the server's callbacks

    def acked(self, group: str, type_url: str, version: str) -> None:
        """A proxy of `group` runs `version` of `type_url`: its resources are the last ACKed ones."""
        if not version:
            return
        with self._lock:
            resources = self._served_version(group, type_url, version)
            if resources is not None:
                self._acked.setdefault(group, {})[TypeUrl(type_url)] = resources
            probe = self._bisections.get((group, TypeUrl(type_url)))
            if probe is not None and probe.version == version:
                # The half sent was accepted: the culprit is in the half held back.
                self.probes_total += 1
                probe.pending = [p for p in probe.pending if p[0] not in probe.trying]
                if probe.pending:
                    probe.trying, probe.version = _half(probe.pending), ""
                else:  # nothing left to suspect (the rejection did not repeat): done
                    del self._bisections[(group, TypeUrl(type_url))]
                self._generation += 1

    def nacked(self, group: str, type_url: str, *, rejected_version: str, node_id: str, message: str,
               sent_names: Sequence[str] | None = None) -> list[Rejection]:
        """Quarantine what a proxy of `group` rejected in `rejected_version`; returns the entries added or
        joined by this node. `sent_names`: the resources the rejected response carried, if known."""
        with self._lock:
            sent = self._served_version(group, type_url, rejected_version)
            if sent is None:
                return []  # a version this process never served (it restarted): nothing to narrow down
            candidates = [n for n in (sent_names if sent_names is not None else sent) if n in sent]
            names = rejected_names(message, candidates)
            if not names:
                names = self._narrow(group, TypeUrl(type_url), rejected_version, sent, candidates)
            now = self._clock()
            changed: list[Rejection] = []
            for name in names:
                key = (group, type_url, name)
                entry = self._entries.get(key)
                content = sent[name].hash
                if entry is not None and entry.rejected_hash == content:
                    if node_id in entry.node_ids:
                        continue
                    entry = replace(entry, node_ids=tuple(sorted({*entry.node_ids, node_id})))
                else:
                    entry = Rejection(group=group, type_url=type_url, name=name, message=message,
                                      node_ids=(node_id,), rejected_hash=content, nacked_at=now)
                    self.quarantined_total += 1
                self._entries[key] = entry
                changed.append(entry)
            if changed:
                self._generation += 1
            return changed

    def _narrow(self, group: str, type_url: TypeUrl, rejected_version: str, sent: Mapping[str, Resource],
                candidates: Sequence[str]) -> list[str]:
        """The resources to quarantine for a NACK that named none (lock held): a confirmed culprit, or none
        while a bisection goes on (its next probe is cued through the generation)."""
        key = (group, type_url)
        probe = self._bisections.get(key)
        if probe is not None and probe.version and probe.version == rejected_version:
            self.probes_total += 1
            if len(probe.trying) == 1:
                del self._bisections[key]
                return list(probe.trying)  # rejected alone: the culprit
            probe.pending = [p for p in probe.pending if p[0] in probe.trying]
            probe.trying, probe.version = _half(probe.pending), ""
            self._generation += 1
            return []
        if probe is not None:
            return []  # a late answer to an earlier version: the running bisection already covers it
        acked = self._acked_of(group, type_url)
        suspects = sorted(n for n in candidates if n not in acked or acked[n].hash != sent[n].hash)
        if len(suspects) <= 1:
            return suspects
        pending = [(n, sent[n].hash) for n in suspects]
        self._bisections[key] = _Bisection(pending=pending, trying=_half(pending))
        self._generation += 1
        return []

    # ------------------------------------------------------------------------------ from builds

    def apply(self, snapshot: Snapshot) -> Snapshot:
        """`snapshot` with every quarantined resource of its group replaced by its last ACKed version (or
        left out), entries whose input changed lifted, and the result remembered as served."""
        group = snapshot.group
        with self._lock:
            resources: dict[TypeUrl, Mapping[str, Resource]] = dict(snapshot.resources)
            touched: set[TypeUrl] = set()
            now = self._clock()
            for key in [k for k in self._entries if k[0] == group]:
                entry = self._entries[key]
                type_url = TypeUrl(entry.type_url)
                fresh = snapshot.get(type_url, entry.name)
                if fresh is None or fresh.hash != entry.rejected_hash:
                    # The input changed (or the resource is gone): try the new content once (NL3).
                    del self._entries[key]
                    self.retried_total += 1
                    self._generation += 1
                    continue
                serving = self._hold(resources, group, type_url, entry.name, entry.rejected_hash)
                touched.add(type_url)
                if entry.quarantined_at is None or entry.serving != serving:
                    self._entries[key] = replace(entry, quarantined_at=entry.quarantined_at or now,
                                                 serving=serving)
                    self._generation += 1
            probes = [(t, p) for (g, t), p in self._bisections.items() if g == group]
            for type_url, probe in probes:
                if any((fresh := snapshot.get(type_url, name)) is None or fresh.hash != content
                       for name, content in probe.pending):
                    del self._bisections[(group, type_url)]  # the input changed: start over from it
                    self._generation += 1
                    continue
                for name, content in probe.pending:
                    if name not in probe.trying:
                        self._hold(resources, group, type_url, name, content)
                        touched.add(type_url)
            if touched:
                versions = dict(snapshot.versions)
                for type_url in touched:
                    versions[type_url] = version_of(resources[type_url].values())
                snapshot = Snapshot(group=group, resources=resources, versions=versions)
            for type_url, probe in probes:
                if self._bisections.get((group, type_url)) is probe:
                    probe.version = snapshot.version(type_url)
            self._remember(snapshot)
        return snapshot

    def _hold(self, resources: dict[TypeUrl, Mapping[str, Resource]], group: str, type_url: TypeUrl,
              name: str, rejected_hash: str) -> str:
        """Put the last ACKed version of `name` in `resources`, or take it out; returns which it did."""
        bucket = dict(resources.get(type_url, {}))
        last_good = self._acked_of(group, type_url).get(name)
        if last_good is not None and last_good.hash != rejected_hash:
            bucket[name] = last_good
            serving = SERVING_LAST_ACKED
        else:
            bucket.pop(name, None)
            serving = SERVING_WITHHELD
        resources[type_url] = bucket
        return serving

    def _served_version(self, group: str, type_url: str, version: str) -> Mapping[str, Resource] | None:
        by_type = self._served.get(group)
        versions = by_type.get(TypeUrl(type_url)) if by_type is not None else None
        return versions.get(version) if versions is not None else None

    def _acked_of(self, group: str, type_url: str) -> Mapping[str, Resource]:
        by_type = self._acked.get(group)
        return (by_type.get(TypeUrl(type_url)) if by_type is not None else None) or {}

    def _remember(self, snapshot: Snapshot) -> None:
        by_type = self._served.get(snapshot.group)
        if by_type is None:
            by_type = self._served[snapshot.group] = {}
            while len(self._served) > MAX_GROUPS:
                old, _ = self._served.popitem(last=False)
                self._acked.pop(old, None)
        else:
            self._served.move_to_end(snapshot.group)
        for type_url, mapping in snapshot.resources.items():
            versions = by_type.setdefault(type_url, collections.OrderedDict())
            version = snapshot.version(type_url)
            versions[version] = mapping
            versions.move_to_end(version)
            while len(versions) > HISTORY_PER_TYPE:
                versions.popitem(last=False)


def quarantined(builder: SnapshotBuilder, quarantine: Quarantine) -> SnapshotBuilder:
    """`builder` whose every snapshot passes through `quarantine.apply`."""

    def build(group: str, previous: Snapshot | None) -> Snapshot:
        return quarantine.apply(builder(group, previous))

    return build
