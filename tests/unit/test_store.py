"""SnapshotStore: build on demand, keep the last good snapshot, never store a superseded build."""

from __future__ import annotations

import pytest

from tests.protocol.world import snapshot
from xds.cache.snapshot import Snapshot
from xds.cache.store import GroupCounts, GroupLimitError, SnapshotBuilder, SnapshotStore
from xds.typeurls import CLUSTER


def test_nothing_before_the_first_publish_then_built_on_demand() -> None:
    store = SnapshotStore()
    assert store.get("g") is None and not store.ready
    store.publish(lambda group, previous: snapshot(clusters={"a": 1}, group=group))
    got = store.get("g")
    assert got is not None and got.group == "g" and list(got.of_type(CLUSTER)) == ["a"]


def test_failed_build_keeps_the_last_good_snapshot_and_reports() -> None:
    store = SnapshotStore()
    good = snapshot(clusters={"a": 1})
    store.publish(lambda group, previous: good)
    assert store.get("g") is good

    def broken(group: str, previous: Snapshot | None) -> Snapshot:
        raise ValueError("route names missing cluster 'x'")

    store.publish(broken)
    assert store.get("g") is good
    assert "missing cluster" in store.error("g")


def test_listeners_hear_changes_only() -> None:
    store = SnapshotStore()
    heard: list[str] = []
    store.watch("g", lambda s: heard.append(s.key))
    store.publish(lambda group, previous: snapshot(clusters={"a": 1}))
    store.publish(lambda group, previous: snapshot(clusters={"a": 1}))  # same content: no news
    store.publish(lambda group, previous: snapshot(clusters={"a": 2}))
    assert len(heard) == 2 and heard[0] != heard[1]


def test_a_build_superseded_while_running_is_not_stored() -> None:
    # A build of group "g" with the old world is still running when a new world is published (another
    # thread in the app; simulated here by publishing from inside the old builder). The old result must
    # not overwrite the new one.
    store = SnapshotStore()
    old = snapshot(clusters={"old": 1})
    new = snapshot(clusters={"new": 1})
    store.watch("g", lambda s: None)  # "g" is in use, so publish builds it

    def new_world(group: str, previous: Snapshot | None) -> Snapshot:
        return new

    def old_world(group: str, previous: Snapshot | None) -> Snapshot:
        store.publish(new_world)
        return old

    store.publish(old_world)
    assert store.get("g") is new


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counting_builder(built: list[str]) -> SnapshotBuilder:
    def build(group: str, previous: Snapshot | None) -> Snapshot:
        built.append(group)
        return snapshot(clusters={"a": len(built)}, group=group)

    return build


def test_an_idle_group_is_dropped_after_the_grace_and_a_live_one_never() -> None:
    clock = Clock()
    store = SnapshotStore(idle_grace_s=30, clock=clock)
    store.publish(counting_builder([]))
    cancel = store.watch("left", lambda s: None)
    store.watch("stays", lambda s: None)
    assert store.get("left") is not None and store.get("stays") is not None
    cancel()
    clock.now += 29.9
    assert store.sweep() == [] and store.counts() == GroupCounts(live=1, idle=1)
    clock.now += 0.2
    assert store.sweep() == ["left"]
    assert store.groups() == ["stays"] and store.counts() == GroupCounts(live=1, idle=0)


def test_a_stream_returning_within_the_grace_finds_its_group_kept() -> None:
    clock = Clock()
    store = SnapshotStore(idle_grace_s=30, clock=clock)
    built: list[str] = []
    store.publish(counting_builder(built))
    cancel = store.watch("g", lambda s: None)
    first = store.get("g")
    cancel()
    clock.now += 10
    store.watch("g", lambda s: None)
    clock.now += 100  # live again: the grace no longer applies
    store.sweep()
    assert store.current("g") is first and built == ["g"]


def test_publish_rebuilds_live_groups_only_and_an_idle_one_on_its_next_get() -> None:
    store = SnapshotStore()
    built: list[str] = []
    store.watch("live", lambda s: None)
    store.publish(counting_builder(built))
    assert store.get("idle") is not None  # looked at once (xds render, GetSnapshot): kept as idle
    built.clear()
    store.publish(counting_builder(built))
    assert built == ["live"]
    assert store.current("idle") is None  # stale: the builder changed since it was built
    fresh = store.get("idle")
    assert built == ["live", "idle"] and fresh is not None and store.current("idle") is fresh


def test_the_group_cap_evicts_the_longest_idle_group_then_refuses() -> None:
    clock = Clock()
    store = SnapshotStore(max_groups=2, clock=clock)
    store.publish(counting_builder([]))
    cancel_a = store.watch("a", lambda s: None)
    store.watch("b", lambda s: None)
    with pytest.raises(GroupLimitError, match="node group limit reached: 2 groups"):
        store.watch("c", lambda s: None)
    cancel_a()
    store.watch("c", lambda s: None)  # "a" is idle: it makes room
    assert store.counts() == GroupCounts(live=2, idle=0)
    # At the cap, a lookup of another group is answered but not kept.
    assert store.get("d") is not None and "d" not in store.groups()


def test_a_failed_build_is_not_retried_until_the_world_changes() -> None:
    store = SnapshotStore()
    calls: list[str] = []

    def broken(group: str, previous: Snapshot | None) -> Snapshot:
        calls.append(group)
        raise ValueError("listener 'l' refers to missing route 'r'")

    store.publish(broken)
    assert store.get("g") is None and store.get("g") is None
    assert calls == ["g"] and "missing route" in store.error("g")
