"""The delta xDS protocol state machine (docs/protocol.md R28-R30; cases P12, P13 and the delta variants of
P2-P10), with no network. A DeltaClient plays Envoy's delta client."""

from __future__ import annotations

import pytest

from xds.server.delta import DeltaProtocol, DeltaRequest
from xds.server.protocol_core import Acked, Ignored, Nacked, ProtocolError
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

from .delta_world import DeltaClient, names
from .world import snapshot

BASE_SPEC = dict(clusters={"a": 1, "b": 1, "c": 1}, listeners={"l1": "r1", "l2": "r2"},
                 routes={"r1": ["a"], "r2": ["b"]})
BASE = snapshot(**BASE_SPEC)  # type: ignore[arg-type]


def converged(snap=BASE) -> DeltaClient:
    """A delta client through Envoy's start-up sequence, everything ACKed."""
    client = DeltaClient()
    client.protocol.set_snapshot(snap)
    _, (cds,) = client.request(CLUSTER)
    client.ack(cds)
    _, (eds,) = client.request(ENDPOINT, sorted(snap.of_type(CLUSTER)))
    client.ack(eds)
    _, (lds,) = client.request(LISTENER)
    client.ack(lds)
    _, (rds,) = client.request(ROUTE, sorted(snap.of_type(ROUTE)))
    client.ack(rds)
    client.log.clear()
    return client


# ------------------------------------------------------------------------------------- P1, P2 (delta)


@pytest.mark.parametrize(("first", "message"), [
    (DeltaRequest(type_url=CLUSTER), "node.id"),
    (DeltaRequest(type_url="", node_id="n1"), "type_url is required"),
    (DeltaRequest(type_url="type.googleapis.com/envoy.Unknown", node_id="n1"), "unsupported type_url"),
])
def test_p1_delta_first_request_preconditions(first: DeltaRequest, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        DeltaProtocol(ads=True).on_request(first)


def test_p2_delta_initial_wildcard_carries_per_resource_versions_and_ack_is_silent() -> None:
    client = DeltaClient()
    client.protocol.set_snapshot(BASE)
    _, (cds,) = client.request(CLUSTER)
    assert names(cds) == ["a", "b", "c"] and cds.removed == ()
    # Each resource's version is its content hash; the system version is the snapshot's CDS version.
    assert [r.hash for r in cds.resources] == [BASE.of_type(CLUSTER)[n].hash for n in "abc"]
    assert cds.version == BASE.version(CLUSTER)
    event, sends = client.ack(cds)
    assert isinstance(event, Acked) and sends == []
    assert client.push(BASE) == []  # nothing changed, nothing sent (R13)


def test_delta_first_answer_goes_out_even_when_empty() -> None:
    # The client's initial fetch ends only with a response; an empty LDS must still be answered.
    client = DeltaClient()
    client.protocol.set_snapshot(snapshot(clusters={"a": 1}))
    _, (cds,) = client.request(CLUSTER)
    client.ack(cds)
    _, (eds,) = client.request(ENDPOINT, ["a"])
    client.ack(eds)
    _, (lds,) = client.request(LISTENER)
    assert lds.resources == () and lds.removed == ()


# ------------------------------------------------------------------------------------------ P3 (delta)


def test_p3_delta_nack_is_recorded_not_resent_and_recovers() -> None:
    client = converged()
    cds, eds = client.push(snapshot(**{**BASE_SPEC, "clusters": {"a": 9, "b": 1, "c": 1}}))  # type: ignore[arg-type]
    assert names(cds) == ["a"] and names(eds) == ["a"]  # R21
    client.ack(eds)
    event, sends = client.nack(cds, "bad cluster a")
    assert isinstance(event, Nacked) and event.message == "bad cluster a" and sends == []
    # The same content again (an unrelated rebuild) is not re-sent (R10).
    assert client.push(snapshot(**{**BASE_SPEC, "clusters": {"a": 9, "b": 1, "c": 1}})) == []  # type: ignore[arg-type]
    # New content is.
    # Back to what the client runs: an empty response whose ACK ends the NACK (R10).
    (back,) = client.push(BASE)
    assert back.type_url == CLUSTER and back.resources == () and back.removed == ()
    event, _ = client.ack(back)
    assert isinstance(event, Acked)
    assert client.push(BASE) == []
    fixed, *_ = client.push(snapshot(**{**BASE_SPEC, "clusters": {"a": 3, "b": 1, "c": 1}}))  # type: ignore[arg-type]
    assert fixed.type_url == CLUSTER and names(fixed) == ["a"]


# ------------------------------------------------------------------------------------------ P4 (delta)


def test_p4_delta_subscription_change_on_a_stale_nonce_is_honoured() -> None:
    client = converged()
    (rds_new,) = client.push(snapshot(**{**BASE_SPEC, "routes": {"r1": ["b"], "r2": ["b"]}}))  # type: ignore[arg-type]
    # The client answers an older nonce while subscribing to nothing new but dropping r2 (R28).
    event, sends = client.request(ROUTE, unsubscribe=["r2"], nonce="1")
    assert isinstance(event, Ignored) and sends == []
    assert client.protocol.subscribed(ROUTE) == (False, frozenset({"r1"}))
    event, sends = client.ack(rds_new)
    assert isinstance(event, Acked) and sends == []


# ------------------------------------------------------------------------------------------ P6 (delta)


def test_p6_delta_missing_name_is_removed_once_then_delivered_when_created() -> None:
    client = converged()
    _, (rds,) = client.request(ROUTE, ["rx"], nonce=client.nonces[ROUTE])
    assert names(rds) == [] and rds.removed == ("rx",)
    client.ack(rds)
    # An unrelated change does not repeat the removal (R30: answered once).
    (eds,) = client.push(snapshot(**{**BASE_SPEC, "clusters": {"a": 1, "b": 1, "c": 1}},  # type: ignore[arg-type]
                                  endpoints={"c": 2}))
    assert eds.type_url == ENDPOINT
    client.ack(eds)
    # Created later: delivered, although the client never asked again (go-control-plane #488).
    spec = {**BASE_SPEC, "routes": {"r1": ["a"], "r2": ["b"], "rx": ["c"]}}
    (created,) = client.push(snapshot(**spec, endpoints={"c": 2}))  # type: ignore[arg-type]
    assert created.type_url == ROUTE and names(created) == ["rx"] and created.removed == ()


def test_p6_delta_unknown_eds_name_gets_the_empty_assignment() -> None:
    client = converged()
    _, (eds,) = client.request(ENDPOINT, ["ghost"], nonce=client.nonces[ENDPOINT])
    assert names(eds) == ["ghost"] and eds.removed == ()  # R22: a cluster leaves warming only with one


# ------------------------------------------------------------------------------------------ P7 (delta)


def test_p7_delta_wildcard_sequence() -> None:
    client = DeltaClient()
    client.protocol.set_snapshot(BASE)
    _, (cds,) = client.request(CLUSTER)  # legacy wildcard
    assert client.protocol.subscribed(CLUSTER) == (True, frozenset())
    client.ack(cds, subscribe=["a"])  # wildcard plus a
    assert client.protocol.subscribed(CLUSTER) == (True, frozenset({"a"}))
    _, sends = client.request(CLUSTER, unsubscribe=["*"])  # a only now
    assert client.protocol.subscribed(CLUSTER) == (False, frozenset({"a"}))
    for send in sends:
        client.ack(send)
    assert all(set(s.removed) <= {"b", "c"} for s in sends)


# ------------------------------------------------------------------------------------------ P8 (delta)


def test_p8_delta_deleted_cluster_is_in_removed_resources() -> None:
    client = converged()
    spec = {**BASE_SPEC, "clusters": {"a": 1, "b": 1}}
    (cds,) = client.push(snapshot(**spec))  # type: ignore[arg-type]
    assert names(cds) == [] and cds.removed == ("c",)


# ------------------------------------------------------------------------------------------ P9 (delta)


def test_p9_delta_make_before_break() -> None:
    client = converged()
    spec = {"clusters": {"b": 1, "c": 1, "y": 1}, "listeners": {"l1": "r1", "l2": "r2"},
            "routes": {"r1": ["y"], "r2": ["b"]}}
    (cds,) = client.push(snapshot(**spec))  # type: ignore[arg-type]
    # y is added but a, still used by r1 on the client, is not removed yet.
    assert names(cds) == ["y"] and cds.removed == ()
    _, sends = client.request(ENDPOINT, ["y"], nonce=client.nonces[ENDPOINT])
    order = [(s.type_url, tuple(names(s)), s.removed) for s in sends]
    assert order[0] == (ENDPOINT, ("y",), ())
    client.ack(cds)
    for _ in range(4):
        for send in [s for s in client.log if s.nonce == client.nonces[s.type_url]]:
            if client.protocol.status()[send.type_url][2]:
                client.ack(send)
    kinds = [(s.type_url, s.removed) for s in client.log]
    rds_at = next(i for i, (t, _) in enumerate(kinds) if t == ROUTE)
    removal_at = next(i for i, (t, removed) in enumerate(kinds) if t == CLUSTER and "a" in removed)
    assert rds_at < removal_at


# ----------------------------------------------------------------------------------------- P10 (delta)


def test_p10_delta_changed_cluster_resends_its_endpoints() -> None:
    client = converged()
    spec = {**BASE_SPEC, "clusters": {"a": 5, "b": 1, "c": 1}}
    sends = client.push(snapshot(**spec))  # type: ignore[arg-type]
    assert [(s.type_url, names(s)) for s in sends] == [(CLUSTER, ["a"]), (ENDPOINT, ["a"])]


# ----------------------------------------------------------------------------------------------- P12


@pytest.mark.parametrize(("a_version", "a_changed", "expect_a"), [
    ("old", True, True),  # a changed while the client was away: sent
    ("current", False, False),  # the client already has a's content: not sent (R29)
])
def test_p12_reconnect_with_initial_resource_versions(a_version: str, a_changed: bool,
                                                      expect_a: bool) -> None:
    before = converged()
    held = dict(before.held[CLUSTER])
    assert set(held) == {"a", "b", "c"}
    clusters = {"a": 7 if a_changed else 1, "c": 1}
    after = snapshot(clusters=clusters, listeners={"l1": "r1"}, routes={"r1": ["a"]})
    initial = dict(held)
    if a_version == "current":
        initial["a"] = after.of_type(CLUSTER)["a"].hash
    client = DeltaClient()
    client.protocol.set_snapshot(after)
    _, (cds,) = client.request(CLUSTER, initial=initial)
    assert ("a" in names(cds)) is expect_a
    assert "c" not in names(cds)  # unchanged: not sent again
    assert cds.removed == ("b",)  # deleted while away (Istio #41494)
    # The dependent EDS is sent (Istio TestDeltaReconnectRequests): a changed cluster needs it (R21).
    kept = {n: v for n, v in before.held[ENDPOINT].items() if n in ("a", "c")}
    _, (eds,) = client.request(ENDPOINT, ["a", "c"], initial=kept)
    if expect_a:
        assert names(eds) == ["a"]
    else:
        assert names(eds) == [] and eds.removed == ()


# ----------------------------------------------------------------------------------------------- P13


def _resubscribe(client: DeltaClient) -> tuple[list[str], tuple[str, ...]]:
    _, (rds,) = client.request(ROUTE, ["r1"], nonce=client.nonces[ROUTE])
    return names(rds), rds.removed


def _phantom(client: DeltaClient) -> tuple[list[str], tuple[str, ...]]:
    _, sends = client.request(ROUTE, unsubscribe=["never"], nonce=client.nonces[ROUTE])
    assert client.protocol.subscribed(ROUTE) == (False, frozenset({"r1", "r2"}))
    return ([n for s in sends for n in names(s)], tuple(n for s in sends for n in s.removed))


def _overlap(existing: bool) -> object:
    def run(client: DeltaClient) -> tuple[list[str], tuple[str, ...]]:
        target = "a" if existing else "zz"
        _, (cds,) = client.request(CLUSTER, [target], nonce=client.nonces[CLUSTER])
        client.ack(cds)
        _, (after,) = client.request(CLUSTER, unsubscribe=[target], nonce=client.nonces[CLUSTER])
        return names(after), after.removed
    return run


@pytest.mark.parametrize(("action", "resources", "removed"), [
    (_resubscribe, ["r1"], ()),  # a fresh copy of a name already held (Consul)
    (_phantom, [], ()),  # unsubscribing a name never subscribed: a no-op, no error
    (_overlap(True), ["a"], ()),  # "*" + "a", drop "a": a answered again
    (_overlap(False), [], ("zz",)),  # "*" + "zz" (absent), drop "zz": answered as removed
], ids=["resubscribe", "phantom-unsubscribe", "wildcard-overlap", "wildcard-overlap-absent"])
def test_p13_delta_subscription_edge_cases(action, resources: list[str], removed: tuple[str, ...]) -> None:
    client = converged()
    assert action(client) == (resources, removed)


def test_p12_reconnect_before_the_first_snapshot_is_built() -> None:
    # The group's snapshot is built off the event loop, so the reconnect request can come first: what the
    # client kept is matched once the snapshot arrives, and unchanged clusters still hold back LDS until
    # their endpoints are asked for (R23), as if they had been sent on this stream.
    before = converged()
    client = DeltaClient()
    _, sends = client.request(CLUSTER, initial=before.held[CLUSTER])
    assert sends == []
    (cds,) = client.push(BASE)
    assert cds.resources == () and cds.removed == ()  # nothing differs (R29)
    client.ack(cds)
    _, sends = client.request(LISTENER)
    assert sends == []  # held until EDS is subscribed for the kept clusters
    _, (eds,) = client.request(ENDPOINT, ["a", "b", "c"], initial=before.held[ENDPOINT])
    assert eds.type_url == ENDPOINT and eds.resources == ()  # the first answer, empty: nothing differs
    _, (lds,) = client.ack(eds)
    assert lds.type_url == LISTENER and names(lds) == ["l1", "l2"]
