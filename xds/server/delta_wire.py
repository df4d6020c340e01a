"""Wire side of delta xDS: decoding and bounding a DeltaDiscoveryRequest, encoding a DeltaDiscoveryResponse.

The response is spliced from the snapshot's cached bytes like a SotW one (encode.py): each
`Resource{name, version, resource}` is the resource's name and content hash in front of the very
`resource` Any entry the snapshot pre-encoded (both messages number that field 2), so a delta push costs no
per-stream serialization either.
"""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from xds.cache.snapshot import Resource, length_delimited
from xds.server.delta import DeltaRequest
from xds.server.limits import LimitExceededError, StreamLimits, check_name_lengths, check_node
from xds.server.protocol_core import Send

# envoy/service/discovery/v3/discovery.proto, message DeltaDiscoveryResponse.
_SYSTEM_VERSION_INFO = 1
_RESOURCES = 2
_TYPE_URL = 4
_NONCE = 5
_REMOVED_RESOURCES = 6
# message Resource; its `resource` Any is field 2, as in DiscoveryResponse.resources.
_RESOURCE_VERSION = 1
_RESOURCE_NAME = 3


def _entries(resources: tuple[Resource, ...]) -> bytes:
    parts = []
    for r in resources:
        body = (length_delimited(_RESOURCE_NAME, r.name.encode())
                + length_delimited(_RESOURCE_VERSION, r.hash.encode()) + r.encoded)
        parts.append(length_delimited(_RESOURCES, body))
    return b"".join(parts)


def encode_delta_response(send: Send) -> bytes:
    parts = [length_delimited(_SYSTEM_VERSION_INFO, send.version.encode()),
             length_delimited(_TYPE_URL, send.type_url.encode()),
             length_delimited(_NONCE, send.nonce.encode())]
    # A snapshot's whole set is encoded once for all streams; only the header is per stream (issue 12).
    parts.append(send.whole.body("delta", _entries) if send.whole is not None else _entries(send.resources))
    parts.extend(length_delimited(_REMOVED_RESOURCES, name.encode()) for name in send.removed)
    return b"".join(parts)


def decode_delta_request(payload: bytes) -> discovery_pb2.DeltaDiscoveryRequest:
    """Parse a DeltaDiscoveryRequest; LimitExceededError("request_decode") when it is not one."""
    try:
        return discovery_pb2.DeltaDiscoveryRequest.FromString(payload)
    except (DecodeError, RecursionError, ValueError) as e:
        raise LimitExceededError("request_decode",
                                 f"the request is not a valid DeltaDiscoveryRequest ({len(payload)} bytes): "
                                 f"{str(e)[:200]}") from e


def _names(message: discovery_pb2.DeltaDiscoveryRequest) -> int:
    return (len(message.resource_names_subscribe) + len(message.resource_names_unsubscribe)
            + len(message.initial_resource_versions))


def delta_request_cost(message: discovery_pb2.DeltaDiscoveryRequest, limits: StreamLimits) -> float:
    """Tokens from the stream's rate bucket, as for SotW (limits.request_cost): one plus one per
    `names_per_token` names, counting subscribed, unsubscribed and initially held names alike."""
    return 1.0 + _names(message) // limits.names_per_token


def check_delta_request(message: discovery_pb2.DeltaDiscoveryRequest, limits: StreamLimits) -> None:
    """The SotW bounds (limits.check_request) applied to a delta request's fields (issue 7, R45)."""
    for field_name in ("type_url", "response_nonce"):
        size = len(getattr(message, field_name).encode())
        if size > limits.max_field_bytes:
            raise LimitExceededError("max_field_bytes",
                                     f"{field_name} is {size} bytes; the limit is {limits.max_field_bytes}")
    count = _names(message)
    if count > limits.max_resource_names:
        raise LimitExceededError("max_resource_names", f"{count} resource names (subscribe, unsubscribe and "
                                                       "initial_resource_versions) exceed the limit of "
                                                       f"{limits.max_resource_names} per request")
    held = message.initial_resource_versions
    check_name_lengths((*message.resource_names_subscribe, *message.resource_names_unsubscribe, *held),
                       limits)
    for version in held.values():
        if len(version.encode()) > limits.max_field_bytes:
            raise LimitExceededError("max_field_bytes", "a version in initial_resource_versions exceeds "
                                                        f"{limits.max_field_bytes} bytes")
    if message.HasField("node"):
        check_node(message.node, limits)


def to_delta_request(message: discovery_pb2.DeltaDiscoveryRequest) -> DeltaRequest:
    return DeltaRequest(
        type_url=message.type_url,
        response_nonce=message.response_nonce,
        subscribe=tuple(message.resource_names_subscribe),
        unsubscribe=tuple(message.resource_names_unsubscribe),
        initial_versions=dict(message.initial_resource_versions),
        node_id=message.node.id if message.HasField("node") else None,
        error_message=message.error_detail.message if message.HasField("error_detail") else None,
    )
