"""SDS on the ADS stream (docs/protocol.md R46, R47): secrets named by clusters and listeners are answered
without waiting for the parent's ACK, LDS and RDS wait for them, a rotated secret is pushed alone, and a
snapshot's view without secrets sends none."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from xds.cache.snapshot import Snapshot, make_snapshot
from xds.translate.resource import Translated
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET

from .world import FakeClient, names

CERT, BUNDLE, SERVING = "xds-workload-cert", "xds-trust-bundle", "serving-cert"


def world(*, cert: str = "cert-1", listener_secret: bool = True) -> Snapshot:
    """Cluster `b` (mTLS: names CERT and BUNDLE), listener `in` (names SERVING), route `in` -> b."""
    items: list[Translated] = []
    cluster = cluster_pb2.Cluster(name="b", type=cluster_pb2.Cluster.EDS)
    items.append(Translated(CLUSTER, "b", cluster, refs=((ENDPOINT, "b"), (SECRET, CERT), (SECRET, BUNDLE))))
    items.append(Translated(ENDPOINT, "b", endpoint_pb2.ClusterLoadAssignment(cluster_name="b")))
    for name, text in ((CERT, cert), (BUNDLE, "bundle"), (SERVING, "serving")):
        secret = secret_pb2.Secret(name=name)
        secret.tls_certificate.certificate_chain.inline_bytes = text.encode()
        items.append(Translated(SECRET, name, secret))
    refs = ((ROUTE, "in"), (SECRET, SERVING)) if listener_secret else ((ROUTE, "in"),)
    items.append(Translated(LISTENER, "in", listener_pb2.Listener(name="in"), refs=refs))
    rc = route_pb2.RouteConfiguration(name="in")
    items.append(Translated(ROUTE, "in", rc, refs=((CLUSTER, "b"),)))
    return make_snapshot("g", items)


def start(snap: Snapshot) -> FakeClient:
    client = FakeClient()
    client.protocol.set_snapshot(snap)
    return client


def test_secrets_named_by_clusters_go_out_before_the_cds_ack_and_hold_back_lds() -> None:
    client = start(world())
    _, (cds,) = client.request(CLUSTER)
    _, sends = client.request(LISTENER)
    assert sends == []  # LDS waits: the clusters' endpoints and secrets are not subscribed to yet
    # Envoy asks for the endpoints and secrets while holding the CDS ACK (warming).
    _, (eds,) = client.request(ENDPOINT, ["b"])
    _, (sds,) = client.request(SECRET, [CERT, BUNDLE])
    assert sds.type_url == SECRET and names(sds) == [BUNDLE, CERT]
    client.ack(eds, ["b"])
    _, sends = client.ack(sds, [CERT, BUNDLE])
    assert sends == []  # still the CDS ACK missing
    _, (lds,) = client.ack(cds)
    assert lds.type_url == LISTENER


def test_secrets_named_by_listeners_are_answered_before_the_lds_ack_and_before_rds() -> None:
    client = start(world())
    _, (cds,) = client.request(CLUSTER)
    _, (eds,) = client.request(ENDPOINT, ["b"])
    _, (sds,) = client.request(SECRET, [CERT, BUNDLE])
    client.ack(eds, ["b"])
    client.ack(sds, [CERT, BUNDLE])
    client.ack(cds)
    _, (lds,) = client.request(LISTENER)
    _, sends = client.request(ROUTE, ["in"])
    assert sends == []  # RDS waits until the listener's secret is subscribed to and answered
    _, (sds2,) = client.request(SECRET, [CERT, BUNDLE, SERVING], nonce=sds.nonce, version=sds.version)
    assert names(sds2) == [SERVING]
    _, (rds,) = client.ack(sds2, [CERT, BUNDLE, SERVING])
    assert rds.type_url == ROUTE
    client.ack(lds)


def converged() -> FakeClient:
    client = start(world())
    _, (cds,) = client.request(CLUSTER)
    _, (eds,) = client.request(ENDPOINT, ["b"])
    _, (sds,) = client.request(SECRET, [CERT, BUNDLE, SERVING])
    client.ack(eds, ["b"])
    client.ack(sds, [CERT, BUNDLE, SERVING])
    client.request(LISTENER)
    _, (lds, again) = client.ack(cds)
    # A new listener gets the secrets it names again, even unchanged (R46).
    assert (lds.type_url, again.type_url, names(again)) == (LISTENER, SECRET, [SERVING])
    client.ack(again, [CERT, BUNDLE, SERVING])
    _, (rds,) = client.request(ROUTE, ["in"])
    client.ack(rds, ["in"])
    client.ack(lds)
    client.log.clear()
    return client


def test_a_rotated_secret_is_pushed_alone() -> None:
    client = converged()
    sends = client.push(world(cert="cert-2"))
    assert [(s.type_url, names(s)) for s in sends] == [(SECRET, [CERT])]
    assert sends[0].resources[0].body != world().get(SECRET, CERT).body  # type: ignore[union-attr]


def test_a_changed_listener_gets_its_secrets_again() -> None:
    client = converged()
    changed = world()
    items = [Translated(r.type_url, r.name, _message(r.type_url, r.body), refs=r.refs)
             for t in (CLUSTER, ENDPOINT, SECRET, ROUTE) for r in changed.of_type(t).values()]
    listener = listener_pb2.Listener(name="in", stat_prefix="changed")
    items.append(Translated(LISTENER, "in", listener, refs=((ROUTE, "in"), (SECRET, SERVING))))
    sends = client.push(make_snapshot("g", items))
    assert [(s.type_url, names(s)) for s in sends] == [(LISTENER, ["in"]), (SECRET, [SERVING])]


def test_a_view_without_secrets_sends_none_and_blocks_nothing() -> None:
    client = start(world().without(SECRET))
    _, (cds,) = client.request(CLUSTER)
    _, (eds,) = client.request(ENDPOINT, ["b"])
    _, sends = client.request(SECRET, [CERT, BUNDLE])
    assert sends == []
    client.ack(eds, ["b"])
    client.request(LISTENER)
    _, (lds,) = client.ack(cds)
    assert lds.type_url == LISTENER
    assert all(s.type_url != SECRET for s in client.log)


def _message(type_url: str, body: bytes) -> object:
    message = {CLUSTER: cluster_pb2.Cluster, ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
               SECRET: secret_pb2.Secret, ROUTE: route_pb2.RouteConfiguration}[type_url]()
    message.ParseFromString(body)
    return message
