"""Per-stream state shares the snapshot's structures (issue 12; docs/architecture.md).

A stream in sync with its snapshot holds the snapshot's own ResourceMap as what it was sent and ACKed, its
subscription to every name is the snapshot's name set, and one endpoint change costs each stream work
proportional to that change: the diff between two snapshots is computed once for all streams. What the
streams send is checked by the protocol tests; these check the sharing itself.
"""

from __future__ import annotations

import pytest

from benchmarks.stream_state import Sizes, _Client, _snapshots
from xds.cache import snapshot as snapshot_module
from xds.cache.snapshot import Resource, ResourceMap, Snapshot, diff
from xds.server.delta import DeltaProtocol
from xds.server.encode import encode_response
from xds.server.protocol import Request, StreamProtocol
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

SIZES = Sizes(services=30, endpoints=2, streams=4, runs=1)


@pytest.fixture(scope="module")
def snapshots() -> tuple[Snapshot, Snapshot]:
    return _snapshots(SIZES)


@pytest.mark.parametrize("variant", ["sotw", "delta"])
def test_a_synced_stream_holds_the_snapshots_mappings_not_copies(
        variant: str, snapshots: tuple[Snapshot, Snapshot]) -> None:
    client = _Client(variant, 0)
    client.start(snapshots[0])

    machine = client.machine
    assert isinstance(machine, StreamProtocol | DeltaProtocol)
    for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        state = machine._types[type_url]
        assert state.sent is snapshots[0].of_type(type_url), type_url
        assert state.acked is state.sent, type_url
    assert machine._types[ENDPOINT].names is snapshots[0].of_type(ENDPOINT).names


@pytest.mark.parametrize("variant", ["sotw", "delta"])
def test_one_endpoint_change_is_diffed_once_for_all_streams(
        variant: str, snapshots: tuple[Snapshot, Snapshot], monkeypatch: pytest.MonkeyPatch) -> None:
    clients = [_Client(variant, i) for i in range(SIZES.streams)]
    for client in clients:
        client.start(snapshots[0])
    calls: list[int] = []
    real = snapshot_module._diff

    def counting(old: object, new: object) -> object:
        calls.append(1)
        return real(old, new)  # type: ignore[arg-type]

    monkeypatch.setattr(snapshot_module, "_diff", counting)

    sent = [client.change(snapshots[1]) for client in clients]

    assert sent == [1] * SIZES.streams  # the one ClusterLoadAssignment, to every stream
    # At most one diff per type between the two snapshots, whatever the number of streams.
    assert len(calls) <= 4, len(calls)
    for client in clients:
        state = client.machine._types[ENDPOINT]
        assert state.sent is snapshots[1].of_type(ENDPOINT)
        assert state.names is snapshots[1].of_type(ENDPOINT).names


def test_a_whole_set_is_encoded_once_and_shared(snapshots: tuple[Snapshot, Snapshot]) -> None:
    bodies = []
    for index in range(2):
        machine = StreamProtocol(ads=True)
        machine.set_snapshot(snapshots[0])
        machine.on_request(Request(type_url=CLUSTER, node_id=f"n{index}"))
        (send,) = machine.next_sends()
        assert send.whole is snapshots[0].of_type(CLUSTER)
        payload = encode_response(send)
        bodies.append(payload)
        assert payload.endswith(b"".join(r.encoded for r in snapshots[0].of_type(CLUSTER).ordered))
    whole = snapshots[0].of_type(CLUSTER)
    assert isinstance(whole, ResourceMap)
    assert whole.body("sotw", lambda _: b"not made again") is whole.body("sotw", lambda _: b"")


def test_a_snapshot_mapping_refuses_changes_and_diffs_by_hash(snapshots: tuple[Snapshot, Snapshot]) -> None:
    old, new = snapshots[0].of_type(ENDPOINT), snapshots[1].of_type(ENDPOINT)
    assert isinstance(new, ResourceMap)
    some: Resource = next(iter(new.values()))
    with pytest.raises(TypeError, match="never changes"):
        new[some.name] = some  # type: ignore[index]
    with pytest.raises(TypeError):
        new.pop(some.name)  # type: ignore[attr-defined]

    moved = diff(old, new)
    assert len(moved.changed) == 1 and not moved.removed
    assert diff(old, new) is moved  # memoized for the next stream
    assert diff(dict(old), new) == moved  # a private copy gives the same answer, computed
    assert not diff(new, new).changed and not diff(new, new).removed
