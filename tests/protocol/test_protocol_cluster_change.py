"""A changed cluster costs each synced stream what changed, not the catalog (issue 12).

Its ClusterLoadAssignment is due again (docs/protocol.md R21), and the shortcut of a stream in sync with its
snapshot now answers names due again too: neither variant takes the general path, which walks every
subscribed name. What is sent is checked against the rules here and, for every other sequence, by the
stateful protocol tests, which compare the shortcut with the general path's answers.
"""

from __future__ import annotations

import pytest

from benchmarks.stream_state import Sizes, _Client, _snapshots
from xds.cache.snapshot import Snapshot, diff
from xds.server.delta import DeltaProtocol
from xds.server.protocol import StreamProtocol
from xds.server.protocol_core import Send
from xds.typeurls import CLUSTER, ENDPOINT

SIZES = Sizes(services=30, endpoints=2, streams=3, runs=1)


@pytest.fixture(scope="module")
def snapshots() -> tuple[Snapshot, Snapshot, Snapshot]:
    return _snapshots(SIZES)


def _changed_cluster(before: Snapshot, after: Snapshot) -> str:
    moved = diff(before.of_type(CLUSTER), after.of_type(CLUSTER))
    assert len(moved.changed) == 1 and not moved.removed
    return str(next(iter(moved.changed)))


@pytest.mark.parametrize("variant", ["sotw", "delta"])
def test_a_changed_cluster_sends_it_and_its_endpoints_without_the_general_path(
        variant: str, snapshots: tuple[Snapshot, Snapshot, Snapshot],
        monkeypatch: pytest.MonkeyPatch) -> None:
    first, _, changed = snapshots
    name = _changed_cluster(first, changed)
    clients = [_Client(variant, i) for i in range(SIZES.streams)]
    for client in clients:
        client.start(first)

    def general_path(*args: object) -> object:
        raise AssertionError("the general path walked every subscribed name")

    monkeypatch.setattr(StreamProtocol, "_desired", general_path)
    monkeypatch.setattr(DeltaProtocol, "_desired", general_path)
    for client in clients:
        client.machine.set_snapshot(changed)
        sends = client.machine.next_sends()
        by_type: dict[str, Send] = {s.type_url: s for s in sends}
        assert sorted(by_type) == sorted([CLUSTER, ENDPOINT]), [s.type_url for s in sends]
        clusters = by_type[CLUSTER].resources
        # SotW CDS carries the whole state (R18), delta only the changed cluster (R28).
        expected = len(changed.of_type(CLUSTER)) if variant == "sotw" else 1
        assert len(clusters) == expected and changed.get(CLUSTER, name) in clusters
        # The unchanged ClusterLoadAssignment is sent again, and only it (R21).
        assert [r.name for r in by_type[ENDPOINT].resources] == [name]
        assert by_type[ENDPOINT].version == changed.version(ENDPOINT)
        client._answer(sends)
        assert client.machine.next_sends() == []
        for type_url in (CLUSTER, ENDPOINT):
            state = client.machine._types[type_url]
            assert state.sent is changed.of_type(type_url) and state.acked is state.sent, type_url
            assert not state.due
