"""Limits on everything an xDS client sends, so no client can make the server hold unbounded memory or CPU.

Every field the server reads from a DiscoveryRequest, keeps (registry, logs, `/status`) or answers in
proportion to (resource names, placeholders) has a bound here, with a default chosen so that a real Envoy
or gRPC client never comes near it (docs/operations.md, "Limits"; issue 7). A request over a bound ends
the stream with a gRPC status that says which bound and its value, and the `xds_limit_exceeded_total`
counter is labelled with the limit's name. The request rate is different: a stream over its rate is slowed
down (its next request is read later, and HTTP/2 flow control pushes back on the client), never ended,
because a legitimate Envoy answering a burst of pushes must not lose its stream.

Nothing here does I/O; the stream glue (stream.py) applies these checks and the gRPC server enforces the
message size itself (`ServerOptions.max_receive_message_bytes`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError

from xds.cache.snapshot import Resource
from xds.typeurls import TypeUrl

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Per-stream and per-server guards against misbehaving clients (docs/protocol.md R45, case S7)."""

    # node.id and node.cluster are kept for the stream's life and shown in logs, `/status` and `xds
    # status`. Kubernetes names are at most 253 bytes; Istio's composed ids stay well under 1 KiB.
    max_node_id_bytes: int = 1 * KIB
    max_node_cluster_bytes: int = 1 * KIB
    # node.locality (region, zone, sub_zone, each): a node with a locality gets a snapshot per (group,
    # locality) (issue 8, cache/node.py), so it is part of a store key that is kept and logged. Cloud zone
    # names are under 64 bytes.
    max_node_locality_bytes: int = 256
    # node.metadata: Istio sends a few KiB of labels and annotations, nested three or four levels. Nesting
    # is bounded separately because a deep Struct costs recursion wherever it is read. (Protobuf's decoder
    # stops at 100 nested messages, about 33 Struct levels; deeper is a decode error.)
    max_node_metadata_bytes: int = 64 * KIB
    max_node_metadata_depth: int = 16
    # type_url, version_info and response_nonce: ours are under 100 bytes; a client's are echoed in logs.
    max_field_bytes: int = 1 * KIB
    # resource_names per request, and the length of each: a group rarely has more than a few thousand
    # clusters; a name is a cluster or route name.
    max_resource_names: int = 20_000
    max_name_bytes: int = 1 * KIB
    # Empty ClusterLoadAssignments answered for EDS names the snapshot lacks (R22), per stream. Real Envoys
    # need them only for clusters left over from an earlier server, a handful at most.
    max_placeholders: int = 1_000
    # Requests per second per stream, as a token bucket. A real Envoy sends one request per response it
    # receives (its ACK), so its rate follows the server's pushes (at most ~20 per second per type with
    # the default debounce); floods of NACKs or subscription changes are slowed down to this rate. A
    # request costs one token plus one per `names_per_token` resource names, because the work it causes
    # grows with its names (about 13 ms for an EDS ACK naming 20 000 clusters on a 2-core machine): an
    # Envoy with 1000 clusters still gets 16 EDS ACKs a second, a flood of 20 000-name requests one.
    request_rate_per_s: float = 100.0
    request_burst: int = 200
    names_per_token: int = 200
    # Requests read from the transport but not yet processed, by count and by bytes (one request is
    # always let in, whatever its size). Past this the stream stops reading and HTTP/2 flow control holds
    # the client back, instead of the server buffering what it sends.
    max_queued_requests: int = 8
    max_queued_request_bytes: int = 1 * MIB
    # The same, summed over every stream of the server: past it, a stream whose next request would not
    # fit ends with RESOURCE_EXHAUSTED (the client retries with backoff) rather than the server growing.
    max_pending_request_bytes: int = 256 * MIB
    # Open discovery streams on the whole server. Past it new streams are refused with RESOURCE_EXHAUSTED
    # so that a connect storm fails fast and Envoy retries with backoff.
    max_streams: int = 10_000
    # Seconds a response may wait for the client to read it (HTTP/2 flow control) before the stream is
    # ended with UNAVAILABLE; 0 waits forever (issue 12; writes.py). Envoy reads as it applies, so only
    # a stuck or hostile client comes near it.
    write_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("max_node_id_bytes", "max_node_cluster_bytes", "max_node_locality_bytes",
                     "max_node_metadata_bytes",
                     "max_node_metadata_depth", "max_field_bytes", "max_resource_names", "max_name_bytes",
                     "request_burst", "names_per_token", "max_queued_requests", "max_queued_request_bytes",
                     "max_pending_request_bytes", "max_streams"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_placeholders < 0:
            raise ValueError(f"max_placeholders must not be negative, got {self.max_placeholders}")
        if self.write_timeout_s < 0:
            raise ValueError(f"write_timeout_s must not be negative, got {self.write_timeout_s}")
        if self.request_rate_per_s <= 0:
            raise ValueError(f"request_rate_per_s must be positive, got {self.request_rate_per_s}")


class LimitExceededError(Exception):
    """A client exceeded `limit` (a StreamLimits field name or "request_decode"); the message is for the
    client and the log, and contains no unbounded client-supplied text. `exhausted`: the server is out of
    a shared resource (RESOURCE_EXHAUSTED, worth retrying) rather than the request being bad
    (INVALID_ARGUMENT)."""

    def __init__(self, limit: str, message: str, *, exhausted: bool = False) -> None:
        super().__init__(message)
        self.limit = limit
        self.exhausted = exhausted


class PendingBytes:
    """Bytes of requests read but not yet processed, over every stream of a server (one event loop)."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self.total = 0

    def take(self, size: int) -> None:
        """Count `size` more bytes; LimitExceededError when they would pass the budget."""
        if self.total + size > self._budget:
            raise LimitExceededError(
                "max_pending_request_bytes",
                f"the server holds {self._budget} bytes of unprocessed requests; retry later", exhausted=True)
        self.total += size

    def release(self, size: int) -> None:
        self.total -= size


def decode_request(payload: bytes) -> discovery_pb2.DiscoveryRequest:
    """Parse a DiscoveryRequest from the wire; LimitExceededError("request_decode") when it is not one.

    The server deserializes in the handler rather than in gRPC, so a malformed message ends the stream
    with INVALID_ARGUMENT (a deserializer that raises gives the client UNKNOWN).
    """
    try:
        return discovery_pb2.DiscoveryRequest.FromString(payload)
    except (DecodeError, RecursionError, ValueError) as e:
        raise LimitExceededError("request_decode",
                                 f"the request is not a valid DiscoveryRequest ({len(payload)} bytes): "
                                 f"{_short(str(e))}") from e


def request_cost(message: discovery_pb2.DiscoveryRequest, limits: StreamLimits) -> float:
    """Tokens a request takes from its stream's rate bucket: one, plus one per `names_per_token` names."""
    return 1.0 + len(message.resource_names) // limits.names_per_token


def check_request(message: discovery_pb2.DiscoveryRequest, limits: StreamLimits) -> None:
    """Raise LimitExceededError for the first bound `message` exceeds."""
    check_request_fields(message, limits)
    check_name_lengths(message.resource_names, limits)


def check_request_fields(message: discovery_pb2.DiscoveryRequest, limits: StreamLimits) -> None:
    """`check_request` but for the length of each resource name, which the stream checks on the names
    tuple it decodes once when it applies the request (variants.to_request; issue 12: an ACK restating
    1000 names should not make 1000 strings twice)."""
    for field_name in ("type_url", "version_info", "response_nonce"):
        size = len(getattr(message, field_name).encode())
        if size > limits.max_field_bytes:
            raise LimitExceededError("max_field_bytes",
                                     f"{field_name} is {size} bytes; the limit is {limits.max_field_bytes}")
    names = message.resource_names
    if len(names) > limits.max_resource_names:
        raise LimitExceededError("max_resource_names", f"{len(names)} resource_names exceed the limit of "
                                                       f"{limits.max_resource_names} per request")
    if message.HasField("node"):
        check_node(message.node, limits)


def check_name_lengths(names: Collection[str], limits: StreamLimits) -> None:
    """max_name_bytes for every name, in UTF-8 bytes. An ACK restates up to thousands of names (issue 12):
    no name is encoded unless its length in characters says it might be over (at most 4 bytes each)."""
    lengths = list(map(len, names))
    if not lengths or max(lengths) * 4 <= limits.max_name_bytes:
        return
    for name in names:
        if len(name) > limits.max_name_bytes or len(name.encode()) > limits.max_name_bytes:
            raise LimitExceededError("max_name_bytes",
                                     f"a resource name exceeds {limits.max_name_bytes} bytes")


def check_node(node: base_pb2.Node, limits: StreamLimits) -> None:
    for field_name, bound, limit in (("id", limits.max_node_id_bytes, "max_node_id_bytes"),
                                     ("cluster", limits.max_node_cluster_bytes, "max_node_cluster_bytes")):
        size = len(getattr(node, field_name).encode())
        if size > bound:
            raise LimitExceededError(limit, f"node.{field_name} is {size} bytes; the limit is {bound}")
    if node.HasField("locality"):
        for part in ("region", "zone", "sub_zone"):
            size = len(getattr(node.locality, part).encode())
            bound = limits.max_node_locality_bytes
            if size > bound:
                raise LimitExceededError("max_node_locality_bytes",
                                         f"node.locality.{part} is {size} bytes; the limit is {bound}")
    if node.HasField("metadata"):
        size = node.metadata.ByteSize()
        if size > limits.max_node_metadata_bytes:
            raise LimitExceededError("max_node_metadata_bytes", f"node.metadata is {size} bytes; the limit "
                                                                f"is {limits.max_node_metadata_bytes}")
        depth = struct_depth(node.metadata, stop_at=limits.max_node_metadata_depth + 1)
        if depth > limits.max_node_metadata_depth:
            raise LimitExceededError("max_node_metadata_depth", f"node.metadata is nested deeper than "
                                                                f"{limits.max_node_metadata_depth} levels")


def struct_depth(root: struct_pb2.Struct, *, stop_at: int) -> int:
    """Nesting depth of a Struct (1 for a flat one), counted without recursion and up to `stop_at`."""
    deepest = 1
    pending: list[tuple[struct_pb2.Value, int]] = [(v, 1) for v in root.fields.values()]
    while pending:
        value, depth = pending.pop()
        deepest = max(deepest, depth)
        if deepest >= stop_at:
            return deepest
        kind = value.WhichOneof("kind")
        if kind == "struct_value":
            pending.extend((v, depth + 1) for v in value.struct_value.fields.values())
        elif kind == "list_value":
            pending.extend((v, depth + 1) for v in value.list_value.values)
    return deepest


def metadata_strings(metadata: struct_pb2.Struct) -> dict[str, object]:
    """The top-level string fields of node.metadata (what a `metadata:<field>` group key can use)."""
    return {key: value.string_value for key, value in metadata.fields.items()
            if value.WhichOneof("kind") == "string_value"}


class TokenBucket:
    """`rate` tokens per second up to `burst`; `delay()` says how long to wait before the next request."""

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def delay(self, cost: float = 1.0) -> float:
        """Take `cost` tokens; the seconds to wait first (0.0 when they were available)."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= cost
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self._rate


class PlaceholderBudget:
    """Wraps a placeholder maker so that one stream gets at most `limit` distinct placeholder names.

    Past the budget a missing name gets nothing and the client's own initial-fetch timeout applies, which
    is what a request for a resource that does not exist gets anyway. `on_exhausted` is called once, the
    first time a name is refused (for the metric and the log).
    """

    def __init__(self, make: Callable[[TypeUrl, str], Resource | None], *, limit: int,
                 on_exhausted: Callable[[], None]) -> None:
        self._make = make
        self._limit = limit
        self._granted: set[str] = set()
        self._exhausted = False
        self._on_exhausted = on_exhausted

    def __call__(self, type_url: TypeUrl, name: str) -> Resource | None:
        if name not in self._granted:
            if len(self._granted) >= self._limit:
                if not self._exhausted:
                    self._exhausted = True
                    self._on_exhausted()
                return None
            self._granted.add(name)
        return self._make(type_url, name)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
