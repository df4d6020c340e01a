"""SnapshotHistory (xds/cache/history.py, issue 14 item 1): what changed per snapshot, bounded."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_pb2

from xds.cache.history import MAX_DIFF_BYTES, MAX_NAMES, SnapshotHistory, recorded
from xds.cache.snapshot import Snapshot, make_snapshot
from xds.server.management import resource_json
from xds.translate.resource import Translated
from xds.typeurls import LISTENER


def _listener(name: str, port: int, stat_prefix: str = "") -> Translated:
    message = listener_pb2.Listener(name=name, stat_prefix=stat_prefix, address=address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)))
    return Translated(type_url=LISTENER, name=name, message=message)


def _snap(group: str = "edge", **ports: int) -> Snapshot:
    return make_snapshot(group, [_listener(n, p) for n, p in ports.items()])


def test_a_change_names_added_changed_removed_and_diffs_the_json() -> None:
    history = SnapshotHistory(render=resource_json, clock=lambda: 42.0)
    first = _snap(a=1000, b=2000)
    history.record("edge", None, first)
    second = _snap(a=1001, c=3000)
    history.record("edge", first, second)
    history.record("edge", second, second)  # no change: not recorded
    newest, initial = history.entries()
    assert initial.initial and initial.added == ("lds/a", "lds/b") and initial.diffs == ()
    assert not newest.initial and newest.at == 42.0 and newest.groups == ("edge",)
    assert (newest.added, newest.changed, newest.removed) == (("lds/c",), ("lds/a",), ("lds/b",))
    assert newest.versions == (("lds", second.version(LISTENER)),)
    by_name = {d.name: d for d in newest.diffs}
    assert by_name["a"].kind == "changed" and newest.diffs[0].name == "a"  # changed ones come first
    assert '-   "port_value": 1000' in by_name["a"].diff and '+   "port_value": 1001' in by_name["a"].diff
    assert by_name["b"].kind == "removed" and by_name["c"].kind == "added"
    assert newest.as_json()["changed"] == ["lds/a"]


def test_groups_receiving_the_same_change_share_one_entry() -> None:
    history = SnapshotHistory(render=resource_json)
    before, after = _snap(a=1), _snap(a=2)
    for i in range(100):
        history.record(f"sidecar-{i}", before, after)
    (entry,) = history.entries()
    assert entry.group_count == 100 and len(entry.groups) == 50 and entry.groups[0] == "sidecar-0"


def test_bounded_in_count() -> None:
    history = SnapshotHistory(render=resource_json, max_entries=5)
    previous = _snap(a=1)
    for port in range(2, 30):
        current = _snap(a=port)
        history.record("edge", previous, current)
        previous = current
    entries = history.entries()
    assert len(entries) == 5 and [e.seq for e in entries] == [28, 27, 26, 25, 24]


def test_bounded_in_bytes_and_each_entry_is_cut() -> None:
    history = SnapshotHistory(render=resource_json, max_bytes=20_000)
    long_prefix = "x" * (MAX_DIFF_BYTES * 2)
    previous = make_snapshot("edge", [_listener(f"l{i}", 1000 + i) for i in range(300)])
    for round_ in range(20):
        current = make_snapshot("edge", [_listener(f"l{i}", 2000 + i + round_,
                                                   stat_prefix=long_prefix + str(round_))
                                         for i in range(300)])
        history.record("edge", previous, current)
        previous = current
    entries = history.entries()
    assert history.bytes <= 20_000 + max(e.size for e in entries)  # the newest always stays
    assert 1 <= len(entries) < 20
    newest = entries[0]
    assert newest.truncated and len(newest.changed) == MAX_NAMES and len(newest.diffs) == 8
    assert all(len(d.diff.encode()) <= MAX_DIFF_BYTES + 32 for d in newest.diffs)


def test_recorded_wraps_a_builder() -> None:
    history = SnapshotHistory(render=resource_json)
    build = recorded(lambda group, previous: _snap(group, a=7), history)
    snapshot = build("edge", None)
    assert snapshot.version(LISTENER) and history.entries()[0].groups == ("edge",)
