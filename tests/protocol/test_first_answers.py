"""A stream's first answers are the snapshot's whole sets, shared rather than rebuilt name by name (issue 12;
docs/architecture.md, "First answers are whole sets").

What the answers contain is checked by the other protocol tests (and the stateful ones against a model);
these check that a first answer is the snapshot's own ordered tuple, that recording it leaves the stream
holding the snapshot's mapping, and the SotW name-length bound now applied where names are decoded once.
"""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from benchmarks.stream_state import Sizes, _snapshots
from xds.cache.snapshot import Resource, ResourceMap, Snapshot
from xds.server.delta import DeltaProtocol, DeltaRequest
from xds.server.limits import LimitExceededError, StreamLimits, check_request, check_request_fields
from xds.server.protocol import Request, StreamProtocol
from xds.server.variants import SOTW
from xds.typeurls import CLUSTER, ENDPOINT

SIZES = Sizes(services=30, endpoints=2, streams=1, runs=1)


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return _snapshots(SIZES)[0]


def _fresh(names: tuple[str, ...]) -> tuple[str, ...]:
    # Names as a client sends them: equal strings, not the snapshot's objects.
    return tuple("".join(list(n)) for n in names)


def test_sotw_first_cds_and_eds_answers_are_the_snapshots_ordered_tuples(snapshot: Snapshot) -> None:
    clusters, endpoints = snapshot.of_type(CLUSTER), snapshot.of_type(ENDPOINT)
    assert isinstance(clusters, ResourceMap) and isinstance(endpoints, ResourceMap)
    machine = StreamProtocol(ads=True)
    machine.set_snapshot(snapshot)
    machine.on_request(Request(type_url=CLUSTER, node_id="n1"))
    (cds,) = machine.next_sends()
    assert cds.resources is clusters.ordered and cds.whole is clusters
    machine.on_request(Request(type_url=ENDPOINT, resource_names=_fresh(tuple(sorted(endpoints)))))
    (eds,) = machine.next_sends()
    assert eds.resources is endpoints.ordered and eds.whole is endpoints
    state = machine._types[ENDPOINT]
    assert state.sent is endpoints and state.names is endpoints.names and not state.due


def test_delta_first_answers_are_the_snapshots_ordered_tuples(snapshot: Snapshot) -> None:
    clusters, endpoints = snapshot.of_type(CLUSTER), snapshot.of_type(ENDPOINT)
    assert isinstance(clusters, ResourceMap) and isinstance(endpoints, ResourceMap)
    machine = DeltaProtocol(ads=True)
    machine.set_snapshot(snapshot)
    machine.on_request(DeltaRequest(type_url=CLUSTER, node_id="n1"))
    (cds,) = machine.next_sends()
    assert cds.resources is clusters.ordered and cds.whole is clusters and cds.removed == ()
    assert machine._types[CLUSTER].sent is clusters
    machine.on_request(DeltaRequest(type_url=ENDPOINT, subscribe=_fresh(tuple(sorted(endpoints)))))
    (eds,) = machine.next_sends()
    assert eds.resources is endpoints.ordered and eds.whole is endpoints
    state = machine._types[ENDPOINT]
    assert state.sent is endpoints and state.names is endpoints.names and not state.due


def test_delta_first_answer_of_an_empty_type_still_goes_out() -> None:
    # Nothing to send, yet a first delta answer is due (full_due): the general path makes the empty one.
    empty = Snapshot(group="g", resources={CLUSTER: ResourceMap({})}, versions={CLUSTER: "v0"})
    machine = DeltaProtocol(ads=True)
    machine.set_snapshot(empty)
    machine.on_request(DeltaRequest(type_url=CLUSTER, node_id="n1"))
    (send,) = machine.next_sends()
    assert send.resources == () and send.removed == () and send.version == "v0"


def test_sotw_name_length_is_checked_once_on_the_decoded_names() -> None:
    limits = StreamLimits(max_name_bytes=16)
    message = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["ok", "n" * 17],
                                             node=base_pb2.Node(id="n1"))
    check_request_fields(message, limits)  # the other bounds: on read
    with pytest.raises(LimitExceededError, match="a resource name exceeds 16 bytes") as caught:
        check_request(message, limits)  # the whole check keeps its meaning
    assert caught.value.limit == "max_name_bytes"
    _, feed = SOTW.start(None, lambda t, n: None, limits)
    with pytest.raises(LimitExceededError, match="a resource name exceeds 16 bytes") as caught:
        feed(message)
    assert caught.value.limit == "max_name_bytes"


class _CountingMap(ResourceMap):
    """A ResourceMap that counts lookups by name, the per-name work a whole-set answer should not do."""

    lookups = 0

    def __getitem__(self, name: str) -> Resource:
        _CountingMap.lookups += 1
        return super().__getitem__(name)


@pytest.mark.parametrize("variant", ["sotw", "delta"])
def test_a_first_eds_answer_looks_up_no_resource_by_name(variant: str, snapshot: Snapshot) -> None:
    endpoints = _CountingMap(dict(snapshot.of_type(ENDPOINT)))
    names = _fresh(tuple(sorted(endpoints)))
    assert len(endpoints.ordered) == len(names) and endpoints.names  # facts made once, for every stream
    counted = Snapshot(group=snapshot.group, resources={**snapshot.resources, ENDPOINT: endpoints},
                       versions=snapshot.versions)
    machine: StreamProtocol | DeltaProtocol
    if variant == "sotw":
        machine = StreamProtocol(ads=True)
        machine.set_snapshot(counted)
        machine.on_request(Request(type_url=CLUSTER, node_id="n1"))
        machine.next_sends()
        _CountingMap.lookups = 0
        machine.on_request(Request(type_url=ENDPOINT, resource_names=names))
    else:
        machine = DeltaProtocol(ads=True)
        machine.set_snapshot(counted)
        machine.on_request(DeltaRequest(type_url=CLUSTER, node_id="n1"))
        machine.next_sends()
        _CountingMap.lookups = 0
        machine.on_request(DeltaRequest(type_url=ENDPOINT, subscribe=names))
    (eds,) = machine.next_sends()
    assert eds.resources is endpoints.ordered
    assert machine._types[ENDPOINT].sent is endpoints
    assert _CountingMap.lookups == 0
