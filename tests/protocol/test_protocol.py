"""The SotW protocol state machine, case by case (docs/protocol.md, cases P1-P11), with no network.

Each test drives StreamProtocol through a FakeClient that behaves like Envoy's xDS client: it echoes the
latest nonce, reports the version it holds, and sends `error_detail` to reject.
"""

from __future__ import annotations

import pytest

from xds.cache.snapshot import InconsistentSnapshotError, make_snapshot
from xds.server.protocol import Acked, Ignored, Nacked, ProtocolError, Request, StreamProtocol
from xds.translate.resource import Translated
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

from .world import FakeClient, names, snapshot

BASE = snapshot(clusters={"a": 1, "b": 1, "c": 1}, listeners={"l1": "r1", "l2": "r2"},
                routes={"r1": ["a"], "r2": ["b"]})


def converged_client(snap=BASE) -> FakeClient:
    """A client that went through Envoy's start-up sequence and ACKed everything."""
    client = FakeClient()
    client.protocol.set_snapshot(snap)
    _, (cds,) = client.request(CLUSTER)
    _, sends = client.ack(cds)
    assert sends == []  # EDS waits for the client to ask for it
    _, (eds,) = client.request(ENDPOINT, sorted(snap.of_type(CLUSTER)))
    client.ack(eds, sorted(snap.of_type(CLUSTER)))
    _, (lds,) = client.request(LISTENER)
    client.ack(lds)
    route_names = sorted(snap.of_type(ROUTE))
    _, (rds,) = client.request(ROUTE, route_names)
    client.ack(rds, route_names)
    client.log.clear()
    return client


# ----------------------------------------------------------------------------------------------- P1


@pytest.mark.parametrize(("first", "message"), [
    (Request(type_url=CLUSTER), "node.id"),
    (Request(type_url=CLUSTER, node_id=""), "node.id"),
    (Request(type_url="", node_id="n1"), "type_url is required"),
    (Request(type_url="type.googleapis.com/envoy.Unknown", node_id="n1"), "unsupported type_url"),
])
def test_p1_first_request_preconditions(first: Request, message: str) -> None:
    protocol = StreamProtocol(ads=True)
    protocol.set_snapshot(BASE)
    with pytest.raises(ProtocolError, match=message):
        protocol.on_request(first)
    assert protocol.next_sends() == []


def test_p1_later_request_without_node_keeps_the_first_node() -> None:
    client = converged_client()
    assert client.protocol.node_id == "n1"
    event, _ = client.request(CLUSTER, nonce="999")  # no node on later requests
    assert isinstance(event, Ignored)
    assert client.protocol.node_id == "n1"


def test_p1_later_request_naming_another_node_is_refused() -> None:
    client = converged_client()
    with pytest.raises(ProtocolError, match=r"node\.id changed"):
        client.protocol.on_request(Request(type_url=CLUSTER, node_id="n2"))


def test_p1_single_type_stream_rejects_other_types() -> None:
    protocol = StreamProtocol(ads=False, stream_type=CLUSTER)
    with pytest.raises(ProtocolError, match="on a stream for"):
        protocol.on_request(Request(type_url=LISTENER, node_id="n1"))


# ----------------------------------------------------------------------------------------------- P2


@pytest.mark.parametrize(("type_url", "expected"), [(CLUSTER, ["a", "b", "c"]), (LISTENER, ["l1", "l2"])])
def test_p2_initial_wildcard_then_silent_ack(type_url, expected) -> None:
    protocol = StreamProtocol(ads=False, stream_type=type_url)
    client = FakeClient(protocol=protocol)
    client.protocol.set_snapshot(BASE)
    _, sends = client.request(type_url)
    assert len(sends) == 1
    (send,) = sends
    assert names(send) == expected
    assert send.version == BASE.version(type_url) and send.version
    assert send.nonce
    event, after_ack = client.ack(send)
    assert isinstance(event, Acked) and event.version == send.version
    assert after_ack == []
    # The same snapshot published again is not news (R13).
    assert client.push(BASE) == []


def test_p2_nonces_are_unique_within_a_stream() -> None:
    client = converged_client()
    nonces = [s.nonce for s in client.log]
    for generation in range(2, 6):
        client.push(snapshot(clusters={"a": generation, "b": 1, "c": 1}, listeners={"l1": "r1", "l2": "r2"},
                             routes={"r1": ["a"], "r2": ["b"]}))
        while client.log[len(nonces):]:
            pending = client.log[len(nonces):]
            nonces.extend(s.nonce for s in pending)
            for send in pending:
                sub = sorted(client.protocol.subscribed(send.type_url)[1])
                client.ack(send, sub)
    assert len(nonces) == len(set(nonces)) > 4


# ----------------------------------------------------------------------------------------------- P3


def test_p3_nack_is_recorded_not_repushed_and_recovers() -> None:
    client = converged_client()
    v2 = snapshot(clusters={"a": 2, "b": 1, "c": 1}, listeners={"l1": "r1", "l2": "r2"},
                  routes={"r1": ["a"], "r2": ["b"]})
    cds_v2, eds_a = client.push(v2)
    assert cds_v2.type_url == CLUSTER and names(eds_a) == ["a"]  # a changed: its endpoints follow (R21)
    client.ack(eds_a, ["a", "b", "c"])
    v1_version = client.versions[CLUSTER]
    event, sends = client.nack(cds_v2, message="cluster a: bad")
    assert isinstance(event, Nacked)
    assert event.version == v1_version and event.rejected_version == cds_v2.version
    assert event.message == "cluster a: bad"
    assert sends == []
    # Publishing the same content again, or a no-op request, never re-pushes the rejected content (R10).
    assert client.push(v2) == []
    _, sends = client.request(CLUSTER, nonce=cds_v2.nonce, version=v1_version)
    assert sends == []
    # A fixed V3 goes out and is ACKed.
    v3 = snapshot(clusters={"a": 3, "b": 1, "c": 1}, listeners={"l1": "r1", "l2": "r2"},
                  routes={"r1": ["a"], "r2": ["b"]})
    cds_v3, _ = client.push(v3)
    assert cds_v3.version == v3.version(CLUSTER) != cds_v2.version
    event, _ = client.ack(cds_v3)
    assert isinstance(event, Acked)


def test_p3_nack_message_is_truncated() -> None:
    client = converged_client()
    send, _ = client.push(snapshot(clusters={"a": 9, "b": 1, "c": 1}, listeners={"l1": "r1", "l2": "r2"},
                                   routes={"r1": ["a"], "r2": ["b"]}))
    event, _ = client.nack(send, message="x" * 100_000)
    assert isinstance(event, Nacked) and len(event.message) == 1024


def test_p3_markdroth_case_same_version_new_name_then_error_is_a_nack() -> None:
    # envoy PR #14841: EDS [A] ACKed; the client adds B at the same version; the server sends B under the
    # same version with a new nonce; the client rejects it. Only error_detail can tell this is a NACK.
    protocol = StreamProtocol(ads=False, stream_type=ENDPOINT)
    client = FakeClient(protocol=protocol)
    client.protocol.set_snapshot(BASE)
    _, (first,) = client.request(ENDPOINT, ["a"])
    client.ack(first, ["a"])
    _, (second,) = client.request(ENDPOINT, ["a", "b"], nonce=first.nonce, version=first.version)
    assert names(second) == ["b"] and second.version == first.version and second.nonce != first.nonce
    event, sends = client.request(ENDPOINT, ["a", "b"], nonce=second.nonce, version=first.version,
                                  error="bad b")
    assert isinstance(event, Nacked)
    assert sends == []


# ----------------------------------------------------------------------------------------------- P4


def test_p4_stale_nonce_is_ignored_and_subscription_converges_on_next_ack() -> None:
    protocol = StreamProtocol(ads=False, stream_type=ENDPOINT)
    client = FakeClient(protocol=protocol)
    client.protocol.set_snapshot(BASE)
    _, (n1,) = client.request(ENDPOINT, ["a"])
    client.ack(n1, ["a"])
    (n2,) = client.push(snapshot(clusters={"a": 1, "b": 1, "c": 1}, endpoints={"a": 3},
                                 listeners={"l1": "r1", "l2": "r2"}, routes={"r1": ["a"], "r2": ["b"]}))
    event, sends = client.request(ENDPOINT, ["a", "b"], nonce=n1.nonce, version=n1.version)
    assert isinstance(event, Ignored) and event.reason == "stale_nonce"
    assert sends == []
    assert client.protocol.subscribed(ENDPOINT)[1] == {"a"}
    # The client ACKs N2 restating its subscription: now b is answered.
    _, sends = client.ack(n2, ["a", "b"])
    assert [names(s) for s in sends] == [["b"]]


# ----------------------------------------------------------------------------------------------- P5


def test_p5_named_subscription_changes_answer_exactly_the_new_names() -> None:
    protocol = StreamProtocol(ads=False, stream_type=ROUTE)
    client = FakeClient(protocol=protocol)
    client.protocol.set_snapshot(BASE)
    steps = [(["r1"], [["r1"]]), (["r2"], [["r2"]]), (["r1", "r2"], [["r1"]]), (["r1"], []), ([], [])]
    last = None
    for requested, expected in steps:
        if last is None:
            _, sends = client.request(ROUTE, requested)
        else:
            _, sends = client.ack(last, requested)
        assert [names(s) for s in sends] == expected, requested
        if sends:
            last = sends[0]
            _, extra = client.ack(last, requested)
            assert extra == []
    # Re-requesting r1 with the old version and nonce is answered even though r1 never changed.
    _, sends = client.request(ROUTE, ["r1"], nonce=last.nonce, version=last.version)
    assert [names(s) for s in sends] == [["r1"]]


# ----------------------------------------------------------------------------------------------- P6


def test_p6_requested_resource_that_does_not_exist_yet() -> None:
    protocol = StreamProtocol(ads=False, stream_type=ROUTE)
    client = FakeClient(protocol=protocol)
    only_r1 = snapshot(clusters={"a": 1}, listeners={"l1": "r1"}, routes={"r1": ["a"]})
    client.protocol.set_snapshot(only_r1)
    _, (first,) = client.request(ROUTE, ["r1", "r9"])
    assert names(first) == ["r1"]  # not held back waiting for r9
    client.ack(first, ["r1", "r9"])
    later = snapshot(clusters={"a": 1}, listeners={"l1": "r1", "l9": "r9"}, routes={"r1": ["a"], "r9": ["a"]})
    assert [names(s) for s in client.push(later)] == [["r9"]]


def test_p6_unknown_eds_name_gets_an_empty_assignment_then_the_real_one() -> None:
    protocol = StreamProtocol(ads=False, stream_type=ENDPOINT,
                              placeholder=FakeClient().protocol._placeholder)
    client = FakeClient(protocol=protocol)
    client.protocol.set_snapshot(snapshot(clusters={"foo": 1}))
    _, (first,) = client.request(ENDPOINT, ["foo", "bar"])
    assert names(first) == ["bar", "foo"]
    bar = next(r for r in first.resources if r.name == "bar")
    from envoy.config.endpoint.v3 import endpoint_pb2
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(bar.body)
    assert cla.cluster_name == "bar" and len(cla.endpoints) == 0
    client.ack(first, ["foo", "bar"])
    (pushed,) = client.push(snapshot(clusters={"foo": 1, "bar": 1}, endpoints={"bar": 2}))
    assert names(pushed) == ["bar"]


# ----------------------------------------------------------------------------------------------- P7


def test_p7_legacy_wildcard_sequence_for_cds() -> None:
    protocol = StreamProtocol(ads=False, stream_type=CLUSTER)
    client = FakeClient(protocol=protocol)
    client.protocol.set_snapshot(BASE)
    _, (s1,) = client.request(CLUSTER, [])  # unset: legacy wildcard
    assert protocol.subscribed(CLUSTER) == (True, frozenset())
    assert names(s1) == ["a", "b", "c"]
    _, (s2,) = client.ack(s1, ["*", "a"])  # explicit wildcard plus a name: same content, same set
    assert protocol.subscribed(CLUSTER) == (True, {"a"})
    assert names(s2) == ["a", "b", "c"]
    _, (s3,) = client.ack(s2, ["a"])
    assert protocol.subscribed(CLUSTER) == (False, {"a"})
    assert names(s3) == ["a"]
    _, (s4,) = client.ack(s3, [])  # after names were used, empty means nothing, not wildcard
    assert protocol.subscribed(CLUSTER) == (False, frozenset())
    assert names(s4) == []


def test_p7_eds_empty_list_means_no_interest() -> None:
    protocol = StreamProtocol(ads=False, stream_type=ENDPOINT)
    client = FakeClient(protocol=protocol)
    client.protocol.set_snapshot(BASE)
    _, (first,) = client.request(ENDPOINT, ["a"])
    _, sends = client.ack(first, [])
    assert sends == []
    assert client.push(snapshot(clusters={"a": 1, "b": 1, "c": 1}, endpoints={"a": 5})) == []


# ----------------------------------------------------------------------------------------------- P8


def test_p8_full_state_without_removed_cluster_and_no_duplicates() -> None:
    protocol = StreamProtocol(ads=False, stream_type=CLUSTER)
    client = FakeClient(protocol=protocol)
    client.protocol.set_snapshot(BASE)
    _, (first,) = client.request(CLUSTER)
    client.ack(first)
    (second,) = client.push(snapshot(clusters={"a": 1, "b": 1}))
    assert names(second) == ["a", "b"]  # complete, and lacking c
    for send in client.log:
        assert len(names(send)) == len(set(names(send)))
    from envoy.config.cluster.v3 import cluster_pb2
    with pytest.raises(InconsistentSnapshotError, match="both named 'x'"):
        make_snapshot("g", [Translated(CLUSTER, "x", cluster_pb2.Cluster(name="x")),
                            Translated(CLUSTER, "x", cluster_pb2.Cluster(name="x"))])


def test_p8_dangling_reference_is_refused() -> None:
    from envoy.config.route.v3 import route_pb2
    with pytest.raises(InconsistentSnapshotError, match="refers to missing cds 'ghost'"):
        make_snapshot("g", [Translated(ROUTE, "r", route_pb2.RouteConfiguration(name="r"),
                                       refs=((CLUSTER, "ghost"),))])


# ----------------------------------------------------------------------------------------------- P9


def test_p9_make_before_break_order_on_a_traffic_switch() -> None:
    before = snapshot(clusters={"x": 1}, listeners={"l": "r"}, routes={"r": ["x"]})
    client = converged_client(before)
    after = snapshot(clusters={"y": 1}, listeners={"l": "r"}, routes={"r": ["y"]})
    (cds,) = client.push(after)
    assert cds.type_url == CLUSTER and names(cds) == ["x", "y"]  # x kept: the route still uses it
    # Like Envoy: y warms, so the CDS ACK is held; the client asks for y's endpoints first.
    _, (eds,) = client.request(ENDPOINT, ["x", "y"], nonce=client.nonces[ENDPOINT],
                               version=client.versions[ENDPOINT])
    assert names(eds) == ["y"]
    _, sends = client.ack(eds, ["x", "y"])
    assert sends == []  # routes wait until the CDS is ACKed, i.e. y is warm
    _, (rds,) = client.ack(cds)  # LDS is unchanged, so RDS is next
    assert rds.type_url == ROUTE and names(rds) == ["r"]
    _, (final,) = client.ack(rds, ["r"])
    assert final.type_url == CLUSTER and names(final) == ["y"]  # the removal comes last
    assert [s.type_url for s in client.log] == [CLUSTER, ENDPOINT, ROUTE, CLUSTER]


def test_eds_is_answered_while_the_cds_ack_is_held_for_warming() -> None:
    client = converged_client()
    (cds,) = client.push(snapshot(clusters={"a": 1, "b": 1, "c": 1, "d": 1},
                                  listeners={"l1": "r1", "l2": "r2"}, routes={"r1": ["a"], "r2": ["b"]}))
    assert names(cds) == ["a", "b", "c", "d"]
    _, (eds,) = client.request(ENDPOINT, ["a", "b", "c", "d"], nonce=client.nonces[ENDPOINT],
                               version=client.versions[ENDPOINT])
    assert names(eds) == ["d"]


def test_p9_route_is_held_until_new_cluster_has_endpoints() -> None:
    before = snapshot(clusters={"x": 1}, listeners={"l": "r"}, routes={"r": ["x"]})
    client = converged_client(before)
    (cds,) = client.push(snapshot(clusters={"x": 1, "y": 1}, listeners={"l": "r"}, routes={"r": ["x", "y"]}))
    client.ack(cds)
    # No RDS may go out while the client has not even asked for y's endpoints.
    assert client.flush() == []
    assert all(s.type_url != ROUTE for s in client.log)


# ---------------------------------------------------------------------------------------------- P10


def test_p10a_cluster_change_forces_eds_resend_with_unchanged_endpoints() -> None:
    client = converged_client()
    changed = snapshot(clusters={"a": 7, "b": 1, "c": 1}, listeners={"l1": "r1", "l2": "r2"},
                       routes={"r1": ["a"], "r2": ["b"]})
    assert changed.version(ENDPOINT) == BASE.version(ENDPOINT)
    cds, eds = client.push(changed)
    assert cds.type_url == CLUSTER
    assert eds.type_url == ENDPOINT and names(eds) == ["a"]


def test_p10b_cluster_with_zero_endpoints_gets_an_explicit_empty_assignment() -> None:
    client = converged_client()
    with_z = snapshot(clusters={"a": 1, "b": 1, "c": 1, "z": 1}, endpoints={"z": 0},
                      listeners={"l1": "r1", "l2": "r2"}, routes={"r1": ["a"], "r2": ["b"]})
    (cds,) = client.push(with_z)
    client.ack(cds)
    _, (eds,) = client.request(ENDPOINT, ["a", "b", "c", "z"], nonce=client.nonces[ENDPOINT],
                               version=client.versions[ENDPOINT])
    assert names(eds) == ["z"]
    from envoy.config.endpoint.v3 import endpoint_pb2
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(eds.resources[0].body)
    assert cla.cluster_name == "z" and sum(len(g.lb_endpoints) for g in cla.endpoints) == 0


# ---------------------------------------------------------------------------------------------- P11


def test_p11a_reconnect_with_eds_first_and_old_nonce() -> None:
    client = FakeClient()
    client.protocol.set_snapshot(BASE)
    _, sends = client.request(ENDPOINT, ["a", "b"], nonce="41", version="old-version")
    assert [names(s) for s in sends] == [["a", "b"]]
    client.ack(sends[0], ["a", "b"])
    _, (cds, eds) = client.request(CLUSTER, nonce="40", version="old-version")
    assert names(cds) == ["a", "b", "c"]
    # Warming of the (re)created clusters needs their assignments again, even though EDS looks ACKed.
    assert names(eds) == ["a", "b"]


def test_p11b_streams_of_one_node_are_independent() -> None:
    first, second = converged_client(), converged_client()
    changed = snapshot(clusters={"a": 5, "b": 1, "c": 1}, listeners={"l1": "r1", "l2": "r2"},
                       routes={"r1": ["a"], "r2": ["b"]})
    # The first stream goes away mid-flight; the survivor still gets the push.
    first.protocol.set_snapshot(changed)
    del first
    cds, _ = second.push(changed)
    assert names(cds) == ["a", "b", "c"]


def test_p3_reverting_to_the_accepted_content_after_a_nack_is_confirmed_once() -> None:
    client = converged_client()
    accepted = client.versions[LISTENER]
    (bad,) = client.push(snapshot(clusters={"a": 1, "b": 1, "c": 1},
                                  listeners={"l1": "r1", "l2": "r2", "l3": "r1"},
                                  routes={"r1": ["a"], "r2": ["b"]}))
    assert bad.type_url == LISTENER
    client.nack(bad, message="cannot bind")
    # The operator reverts: the desired state is what the client already runs. One response confirms it,
    # so sent == ACKed again, and nothing more follows.
    (confirm,) = client.push(BASE)
    assert confirm.type_url == LISTENER and confirm.version == accepted
    event, sends = client.ack(confirm)
    assert isinstance(event, Acked) and sends == []
    assert client.push(BASE) == []
