"""The closed NACK loop's pure core (xds/cache/quarantine.py; docs/protocol.md NL1-NL4)."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_pb2

from xds.cache.quarantine import SERVING_LAST_ACKED, SERVING_WITHHELD, Quarantine, quarantined, rejected_names
from xds.cache.snapshot import Snapshot, make_snapshot
from xds.policy.schema import ListenerPolicy, Policy
from xds.sources.consul.status import wanted_statuses
from xds.sources.rejections import produced_by
from xds.translate.resource import Translated
from xds.typeurls import LISTENER

GROUP = "edge"


def _listener(name: str, port: int) -> Translated:
    message = listener_pb2.Listener(name=name, address=address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)))
    return Translated(type_url=LISTENER, name=name, message=message)


def _snap(**ports: int) -> Snapshot:
    return make_snapshot(GROUP, [_listener(n, p) for n, p in ports.items()])


def _port(snapshot: Snapshot, name: str) -> int | None:
    res = snapshot.get(LISTENER, name)
    if res is None:
        return None
    return int(listener_pb2.Listener.FromString(res.body).address.socket_address.port_value)


def test_names_come_from_envoys_error_detail() -> None:
    message = ("Error adding/updating listener(s) web: cannot bind '127.0.0.1:80': Address already in use\n"
               "web2-admin: other\n")
    assert rejected_names(message, ["web", "web2", "web2-admin", "api"]) == ["web", "web2-admin"]
    assert rejected_names("Unknown cluster 'api'", ["web", "api"]) == ["api"]
    assert rejected_names("no name here", ["web"]) == []


def test_rejected_listener_falls_back_to_its_last_acked_version_and_the_rest_goes_through() -> None:
    q = Quarantine(clock=lambda: 100.0)
    first = q.apply(_snap(a=1000, b=2000))
    q.acked(GROUP, LISTENER, first.version(LISTENER))
    second = q.apply(_snap(a=1001, b=2001))
    added = q.nacked(GROUP, LISTENER, rejected_version=second.version(LISTENER), node_id="envoy-1",
                     message="Error adding/updating listener(s) a: cannot bind: Address already in use")
    assert [(r.name, r.node_ids) for r in added] == [("a", ("envoy-1",))]
    third = q.apply(_snap(a=1001, b=2001))
    assert _port(third, "a") == 1000 and _port(third, "b") == 2001  # a held back, b goes through
    assert third.version(LISTENER) != second.version(LISTENER)
    (entry,) = q.rejections()
    assert entry.serving == SERVING_LAST_ACKED and entry.quarantined_at == 100.0
    # The same content is never re-sent; a second node joining is recorded.
    assert q.nacked(GROUP, LISTENER, rejected_version=second.version(LISTENER), node_id="envoy-2",
                    message="Error adding/updating listener(s) a: x")[0].node_ids == ("envoy-1", "envoy-2")
    assert _port(q.apply(_snap(a=1001, b=2002)), "a") == 1000


def test_new_input_is_tried_once_and_a_never_accepted_resource_is_withheld() -> None:
    q = Quarantine()
    first = q.apply(_snap(b=2000))
    q.acked(GROUP, LISTENER, first.version(LISTENER))
    bad = q.apply(_snap(a=1001, b=2000))
    # No name in the message: the resources that differ from the last ACKed version are the suspects.
    q.nacked(GROUP, LISTENER, rejected_version=bad.version(LISTENER), node_id="n", message="bad config")
    held = q.apply(_snap(a=1001, b=2000))
    assert _port(held, "a") is None and q.rejections()[0].serving == SERVING_WITHHELD
    retried = q.apply(_snap(a=1002, b=2000))  # the input changed: try it
    assert _port(retried, "a") == 1002 and q.rejections() == [] and q.retried_total == 1


def test_builder_wrapper_and_source_status() -> None:
    q = Quarantine()
    build = quarantined(lambda group, previous: _snap(a=1), q)
    snap = build(GROUP, None)
    q.nacked(GROUP, LISTENER, rejected_version=snap.version(LISTENER), node_id="n",
             message="Error adding/updating listener(s) a: no")
    (entry,) = q.rejections()
    policy = Policy(listeners=(ListenerPolicy("a", port=1),))
    assert produced_by(policy, entry)
    assert not produced_by(Policy(listeners=(ListenerPolicy("b", port=1),)), entry)
    statuses = wanted_statuses({"xds/a": policy}, [entry])
    assert list(statuses) == ["xds/a.status"] and b'"programmed": false' in statuses["xds/a.status"]


def test_a_nack_naming_nothing_is_bisected_down_to_the_one_rejected_resource() -> None:
    q = Quarantine()
    base = q.apply(_snap(keep=1))
    q.acked(GROUP, LISTENER, base.version(LISTENER))
    wanted = {"keep": 1, "a": 11, "b": 12, "c": 13, "d": 14, "e": 15}
    rounds = 0
    snapshot = q.apply(_snap(**wanted))
    # A client that rejects any update holding listener c on port 13, and says nothing useful about why.
    while rounds < 10:
        rounds += 1
        version = snapshot.version(LISTENER)
        if _port(snapshot, "c") == 13:
            q.nacked(GROUP, LISTENER, rejected_version=version, node_id="n", message="invalid config")
        else:
            q.acked(GROUP, LISTENER, version)
        if q.rejections():
            break
        snapshot = q.apply(_snap(**wanted))
    assert [r.name for r in q.rejections()] == ["c"]
    assert rounds <= 4  # five suspects: log2 rounds, not one per resource
    final = q.apply(_snap(**wanted))
    assert {n: _port(final, n) for n in wanted} == {**wanted, "c": None}
    assert q.rejections()[0].serving == SERVING_WITHHELD


def test_traffic_policy_programmed_condition_follows_the_quarantine() -> None:
    from xds.cache.quarantine import Rejection
    from xds.sources.kubernetes.policies import TrafficPolicies, parse_traffic_policy

    def obj(conditions: list[dict[str, object]] | None = None) -> Any:
        spec = {"services": [{"name": "web"}], "listeners": [
            {"name": "edge", "port": 10000, "routes": [{"backends": [{"service": "web"}]}]}]}
        raw: dict[str, object] = {"metadata": {"name": "edge", "namespace": "shop", "generation": 3},
                                  "spec": spec, "status": {"conditions": conditions or []}}
        return parse_traffic_policy(raw)

    policies = TrafficPolicies(source="kube", clock=lambda: 0.0)
    policies.update({("shop", "edge"): obj()})
    (patch,) = policies.status_patches()
    assert patch.programmed is None  # never rejected: no Programmed condition at all
    rejection = Rejection(group="edge", type_url=LISTENER, name="edge", message="cannot bind: in use",
                          node_ids=("envoy-1", "envoy-2"), rejected_hash="h", nacked_at=1.0,
                          quarantined_at=1.0, serving=SERVING_LAST_ACKED)
    policies.set_rejections([rejection])
    (patch,) = policies.status_patches()
    assert patch.programmed is not None and patch.programmed.status == "False"
    assert patch.programmed.reason == "Rejected" and patch.programmed.observed_generation == 3
    message = patch.programmed.message
    assert "envoy-1, envoy-2" in message and "cannot bind: in use" in message
    # Written and seen back through the watch: no further patch.
    policies.update({("shop", "edge"): obj(patch.body()["conditions"])})  # type: ignore[arg-type]
    assert policies.status_patches() == ()
    policies.set_rejections([])
    (patch,) = policies.status_patches()
    assert patch.programmed is not None and patch.programmed.status == "True"
