"""The pure parts of the client limits (xds/server/limits.py): bucket, depth, budget, request checks."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from xds.cache.snapshot import empty_endpoints
from xds.server.limits import (
    LimitExceededError,
    PendingBytes,
    PlaceholderBudget,
    StreamLimits,
    TokenBucket,
    check_request,
    decode_request,
    metadata_strings,
    request_cost,
    struct_depth,
)
from xds.typeurls import CLUSTER, ENDPOINT


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_the_burst_then_spaces_requests_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.delay() == pytest.approx(0.1)
    assert bucket.delay() == pytest.approx(0.2)  # debt accumulates: a flood waits longer and longer
    clock.now += 10  # a quiet period refills the bucket, but never past the burst
    assert [bucket.delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.delay() > 0


def nested(depth: int) -> struct_pb2.Struct:
    root = struct_pb2.Struct()
    inner = root
    for _ in range(depth - 1):
        inner = inner.fields["x"].struct_value
    inner.fields["leaf"].string_value = "v"
    return root


@pytest.mark.parametrize("depth", [1, 2, 5, 16])
def test_struct_depth_counts_levels(depth: int) -> None:
    assert struct_depth(nested(depth), stop_at=100) == depth


def test_struct_depth_counts_lists_and_stops_early() -> None:
    value = struct_pb2.Struct()
    value.fields["l"].list_value.values.add().struct_value.fields["k"].string_value = "v"
    assert struct_depth(value, stop_at=100) == 3
    assert struct_depth(nested(30), stop_at=5) == 5
    assert struct_depth(struct_pb2.Struct(), stop_at=5) == 1


def test_metadata_strings_keeps_top_level_strings_only() -> None:
    metadata = struct_pb2.Struct()
    metadata.fields["team"].string_value = "payments"
    metadata.fields["replicas"].number_value = 3
    metadata.fields["labels"].struct_value.fields["app"].string_value = "web"
    assert metadata_strings(metadata) == {"team": "payments"}


def test_placeholder_budget_grants_distinct_names_up_to_the_limit() -> None:
    exhausted: list[int] = []
    budget = PlaceholderBudget(empty_endpoints, limit=2, on_exhausted=lambda: exhausted.append(1))
    assert budget(ENDPOINT, "a") is not None and budget(ENDPOINT, "b") is not None
    assert budget(ENDPOINT, "a") is not None  # a name already granted stays granted
    assert budget(ENDPOINT, "c") is None and budget(ENDPOINT, "d") is None
    assert exhausted == [1]


def test_check_request_names_the_field_and_the_bound_without_echoing_the_value() -> None:
    limits = StreamLimits(max_field_bytes=8)
    message = discovery_pb2.DiscoveryRequest(type_url=CLUSTER, node=base_pb2.Node(id="n"))
    expected = f"type_url is {len(CLUSTER)} bytes; the limit is 8"
    with pytest.raises(LimitExceededError, match=expected) as caught:
        check_request(message, limits)
    assert caught.value.limit == "max_field_bytes"
    bad_nonce = discovery_pb2.DiscoveryRequest(response_nonce="\x1b[2J" * 300)
    with pytest.raises(LimitExceededError) as caught:
        check_request(bad_nonce, StreamLimits())
    assert "\x1b" not in str(caught.value)


def test_a_request_within_every_bound_passes() -> None:
    message = discovery_pb2.DiscoveryRequest(type_url=CLUSTER, resource_names=["a", "b"],
                                             node=base_pb2.Node(id="n1", cluster="g", metadata=nested(3)))
    check_request(message, StreamLimits())


def test_decode_request_refuses_garbage_with_a_bounded_message() -> None:
    with pytest.raises(LimitExceededError) as caught:
        decode_request(b"\x0a\xff\xff\x03" + b"\x1b" * 5000)
    assert caught.value.limit == "request_decode" and len(str(caught.value)) < 400


@pytest.mark.parametrize("field", ["max_streams", "max_resource_names", "request_burst"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must be at least 1"):
        StreamLimits(**{field: 0})  # type: ignore[arg-type]


def test_a_request_costs_more_tokens_the_more_names_it_carries() -> None:
    limits = StreamLimits(names_per_token=100)
    assert request_cost(discovery_pb2.DiscoveryRequest(), limits) == 1
    assert request_cost(discovery_pb2.DiscoveryRequest(resource_names=["n"] * 99), limits) == 1
    assert request_cost(discovery_pb2.DiscoveryRequest(resource_names=["n"] * 2000), limits) == 21
    clock = Clock()
    bucket = TokenBucket(rate=100, burst=200, clock=clock)
    assert bucket.delay(150) == 0.0
    assert bucket.delay(150) == pytest.approx(1.0)  # 100 tokens short at 100 per second


def test_pending_bytes_refuse_past_the_budget_and_come_back_when_released() -> None:
    pending = PendingBytes(100)
    pending.take(60)
    with pytest.raises(LimitExceededError, match="holds 100 bytes of unprocessed requests") as caught:
        pending.take(50)
    assert caught.value.exhausted and caught.value.limit == "max_pending_request_bytes"
    pending.release(60)
    pending.take(100)
    assert pending.total == 100


async def test_the_inbox_bounds_queued_bytes_lets_one_big_request_in_and_gives_bytes_back() -> None:
    import asyncio

    from xds.server.stream import _Inbox

    pending = PendingBytes(10_000)
    inbox = _Inbox(max_requests=8, max_bytes=100, pending=pending)
    first, second = discovery_pb2.DiscoveryRequest(type_url="a"), discovery_pb2.DiscoveryRequest(type_url="b")
    pending.take(500)
    await inbox.put_request(first, 500)  # bigger than the stream's budget, but alone: it goes in
    pending.take(10)
    blocked = asyncio.ensure_future(inbox.put_request(second, 10))
    await asyncio.sleep(0.01)
    assert not blocked.done()  # no room until the first is taken out
    assert await inbox.get() is first
    await asyncio.wait_for(blocked, 1)
    assert pending.total == 10
    inbox.drain()  # the stream ended with the second one unprocessed
    assert pending.total == 0
