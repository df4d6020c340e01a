"""The two xDS protocol variants as the stream glue (stream.py) sees them: SotW and delta.

Each variant says how a request payload is decoded, bounded (limits.py, issue 7) and handed to its
protocol machine, and how a response is encoded. Everything else about a stream (inbox, limits, snapshots,
callbacks, identity) is the same code for both (issue 11, item 2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from envoy.service.discovery.v3 import discovery_pb2

from xds.server.delta import DeltaProtocol
from xds.server.delta_wire import (
    check_delta_request,
    decode_delta_request,
    delta_request_cost,
    encode_delta_response,
    to_delta_request,
)
from xds.server.encode import encode_response
from xds.server.limits import (
    StreamLimits,
    check_name_lengths,
    check_request_fields,
    decode_request,
    request_cost,
)
from xds.server.protocol import Event, Placeholder, Request, StreamProtocol
from xds.server.protocol_core import ProtocolCore, Send
from xds.typeurls import TypeUrl

Message: TypeAlias = discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest
# Applies one decoded request to the stream's machine; returns what it meant (ACK, NACK, stale) or None.
Feed: TypeAlias = Callable[[Message], Event | None]


def to_request(message: discovery_pb2.DiscoveryRequest, limits: StreamLimits | None = None) -> Request:
    """The protocol's Request; with `limits`, the length of each name is checked on the tuple made here,
    so the names are turned into strings once per request (the other bounds were checked on read,
    limits.check_request_fields; issue 12)."""
    names = tuple(message.resource_names)
    if limits is not None:
        check_name_lengths(names, limits)
    return Request(
        type_url=message.type_url,
        version_info=message.version_info,
        response_nonce=message.response_nonce,
        resource_names=names,
        node_id=message.node.id if message.HasField("node") else None,
        error_message=message.error_detail.message if message.HasField("error_detail") else None,
    )


@dataclass(frozen=True, slots=True)
class Variant:
    name: str  # "sotw" or "delta"
    decode: Callable[[bytes], Message]
    check: Callable[[Message, StreamLimits], None]
    cost: Callable[[Message, StreamLimits], float]
    encode: Callable[[Send], bytes]
    # (stream type or None for ADS, placeholder maker, the stream's limits): the machine and its feed.
    start: Callable[[TypeUrl | None, Placeholder, StreamLimits], tuple[ProtocolCore, Feed]]


def _sotw_check(message: Message, limits: StreamLimits) -> None:
    assert isinstance(message, discovery_pb2.DiscoveryRequest)
    check_request_fields(message, limits)  # name lengths: in feed, on the one tuple of names


def _sotw_cost(message: Message, limits: StreamLimits) -> float:
    assert isinstance(message, discovery_pb2.DiscoveryRequest)
    return request_cost(message, limits)


def _sotw_start(stream_type: TypeUrl | None, placeholder: Placeholder,
                limits: StreamLimits) -> tuple[ProtocolCore, Feed]:
    machine = StreamProtocol(ads=stream_type is None, stream_type=stream_type, placeholder=placeholder)

    def feed(message: Message) -> Event | None:
        assert isinstance(message, discovery_pb2.DiscoveryRequest)
        return machine.on_request(to_request(message, limits))
    return machine, feed


def _delta_check(message: Message, limits: StreamLimits) -> None:
    assert isinstance(message, discovery_pb2.DeltaDiscoveryRequest)
    check_delta_request(message, limits)


def _delta_cost(message: Message, limits: StreamLimits) -> float:
    assert isinstance(message, discovery_pb2.DeltaDiscoveryRequest)
    return delta_request_cost(message, limits)


def _delta_start(stream_type: TypeUrl | None, placeholder: Placeholder,
                 limits: StreamLimits) -> tuple[ProtocolCore, Feed]:
    machine = DeltaProtocol(ads=stream_type is None, stream_type=stream_type, placeholder=placeholder)

    def feed(message: Message) -> Event | None:
        assert isinstance(message, discovery_pb2.DeltaDiscoveryRequest)
        return machine.on_request(to_delta_request(message))
    return machine, feed


SOTW = Variant(name="sotw", decode=decode_request, check=_sotw_check, cost=_sotw_cost,
               encode=encode_response, start=_sotw_start)
DELTA = Variant(name="delta", decode=decode_delta_request, check=_delta_check, cost=_delta_cost,
                encode=encode_delta_response, start=_delta_start)
