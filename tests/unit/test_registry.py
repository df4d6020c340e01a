"""ProxyRegistry: per-stream status driven through the Callbacks hook, as the xDS server drives it."""

from __future__ import annotations

from xds import typeurls
from xds.server.callbacks import Callbacks, StreamInfo
from xds.server.registry import MAX_NACK_MESSAGE_BYTES, ProxyRegistry, TypeStatus, truncate_message


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stream(stream_id: int, node_id: str, *, method: str = "ads") -> StreamInfo:
    return StreamInfo(stream_id=stream_id, node_id=node_id, group="default", peer="ipv4:127.0.0.1:5000",
                      method=method, envoy_version="1.31.0")


def sent(reg: Callbacks, s: StreamInfo, type_url: str, version: str, nonce: str) -> None:
    reg.on_response_sent(s, type_url=type_url, version=version, nonce=nonce, resource_names=(), size_bytes=10)


def only_type(reg: ProxyRegistry, type_url: str) -> TypeStatus:
    [proxy] = reg.list()
    [status] = [t for t in proxy.types if t.type_url == type_url]
    return status


def test_open_records_stream_and_close_forgets_it() -> None:
    reg = ProxyRegistry(clock=FakeClock(123.5))
    s = stream(7, "node-a")
    reg.on_stream_open(s)
    [proxy] = reg.list()
    assert (proxy.stream_id, proxy.node_id, proxy.group, proxy.method, proxy.envoy_version) == (
        7, "node-a", "default", "ads", "1.31.0")
    assert proxy.connected_at == 123.5
    assert proxy.types == ()
    reg.on_stream_closed(s)
    assert reg.list() == []
    assert len(reg) == 0


def test_list_is_sorted_by_node_then_stream() -> None:
    reg = ProxyRegistry()
    for sid, node in [(3, "b"), (1, "b"), (2, "a"), (9, "c")]:
        reg.on_stream_open(stream(sid, node))
    assert [(p.node_id, p.stream_id) for p in reg.list()] == [("a", 2), ("b", 1), ("b", 3), ("c", 9)]


def test_push_then_ack() -> None:
    reg = ProxyRegistry()
    s = stream(1, "n")
    reg.on_stream_open(s)
    sent(reg, s, typeurls.CLUSTER, "v1", "1")
    t = only_type(reg, typeurls.CLUSTER)
    assert (t.version_sent, t.nonce_sent, t.version_acked, t.pushes) == ("v1", "1", "", 1)
    assert t.short_name == "cds"
    reg.on_ack(s, type_url=typeurls.CLUSTER, version="v1", nonce="1")
    sent(reg, s, typeurls.CLUSTER, "v2", "2")
    t = only_type(reg, typeurls.CLUSTER)
    assert (t.version_sent, t.nonce_sent, t.version_acked, t.pushes) == ("v2", "2", "v1", 2)
    assert t.nack_count == 0
    assert t.last_nack_at is None


def test_nack_records_rejection_and_keeps_accepted_version() -> None:
    clock = FakeClock(50.0)
    reg = ProxyRegistry(clock=clock)
    s = stream(1, "n")
    reg.on_stream_open(s)
    sent(reg, s, typeurls.ENDPOINT, "v1", "1")
    reg.on_ack(s, type_url=typeurls.ENDPOINT, version="v1", nonce="1")
    sent(reg, s, typeurls.ENDPOINT, "v2", "2")
    clock.now = 60.0
    reg.on_nack(s, type_url=typeurls.ENDPOINT, version="v1", nonce="2", rejected_version="v2",
                message="bad endpoint")
    t = only_type(reg, typeurls.ENDPOINT)
    assert t.version_acked == "v1"
    assert (t.last_nack_version, t.last_nack_nonce, t.last_nack_message) == ("v2", "2", "bad endpoint")
    assert t.last_nack_at == 60.0
    assert t.nack_count == 1
    reg.on_nack(s, type_url=typeurls.ENDPOINT, version="v1", nonce="2", rejected_version="v2", message="x")
    assert only_type(reg, typeurls.ENDPOINT).nack_count == 2


def test_nack_message_is_truncated_to_one_kib() -> None:
    reg = ProxyRegistry()
    s = stream(1, "n")
    reg.on_stream_open(s)
    reg.on_nack(s, type_url=typeurls.LISTENER, version="", nonce="1", rejected_version="v1",
                message="é" * 5000)
    message = only_type(reg, typeurls.LISTENER).last_nack_message
    assert len(message.encode()) <= MAX_NACK_MESSAGE_BYTES
    assert message.endswith("…")
    assert message.startswith("éé")


def test_truncate_message_table() -> None:
    assert truncate_message("short") == "short"
    assert truncate_message("x" * 1024) == "x" * 1024
    cut = truncate_message("x" * 1025)
    assert len(cut.encode()) == 1024
    assert cut.endswith("…")
    # A multi-byte character split by the limit is dropped whole, never half-decoded.
    assert truncate_message("aé" * 10, limit=8) == "aéa…"


def test_types_listed_in_push_order() -> None:
    reg = ProxyRegistry()
    s = stream(1, "n")
    reg.on_stream_open(s)
    for i, type_url in enumerate([typeurls.ROUTE, typeurls.LISTENER, typeurls.ENDPOINT, typeurls.CLUSTER]):
        sent(reg, s, type_url, "v", str(i))
    [proxy] = reg.list()
    assert [t.short_name for t in proxy.types] == ["cds", "eds", "lds", "rds"]


def test_events_for_unknown_or_closed_streams_are_ignored() -> None:
    reg = ProxyRegistry()
    s = stream(1, "n")
    reg.on_stream_open(s)
    reg.on_stream_closed(s)
    sent(reg, s, typeurls.CLUSTER, "v1", "1")
    reg.on_ack(s, type_url=typeurls.CLUSTER, version="v1", nonce="1")
    reg.on_nack(s, type_url=typeurls.CLUSTER, version="", nonce="1", rejected_version="v1", message="m")
    reg.on_stream_closed(s)
    assert reg.list() == []


def test_streams_are_independent() -> None:
    reg = ProxyRegistry()
    a, b = stream(1, "a"), stream(2, "b", method="eds")
    reg.on_stream_open(a)
    reg.on_stream_open(b)
    sent(reg, a, typeurls.CLUSTER, "v1", "1")
    reg.on_stream_closed(a)
    [proxy] = reg.list()
    assert proxy.node_id == "b"
    assert proxy.method == "eds"
    assert proxy.types == ()
