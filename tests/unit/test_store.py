"""SnapshotStore: build on demand, keep the last good snapshot, never store a superseded build."""

from __future__ import annotations

from tests.protocol.world import snapshot
from xds.cache.snapshot import Snapshot
from xds.cache.store import SnapshotStore
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
