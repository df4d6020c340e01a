"""ProxyRegistry: what every live xDS stream was sent, accepted and rejected, for `xds status`.

It is a Callbacks implementation (xds/server/callbacks.py), so it sees exactly what the server reports and
nothing else. State lives only as long as the stream: a closed stream is forgotten, which keeps memory
bounded by the number of connected Envoys (about 1 KB per stream).

All methods run on the event loop thread (the Callbacks contract), so there is no locking. The callbacks
are on the push hot path and update small mutable records in place; `list()` is the rare reader and pays
for freezing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xds.server.callbacks import StreamInfo
from xds.typeurls import PUSH_ORDER, short_name

# docs/protocol.md R11: `error_detail` can be arbitrarily large; gRPC trailers cap at 8 KiB (envoy #9785).
MAX_NACK_MESSAGE_BYTES = 1024
_ELLIPSIS = "…"


def truncate_message(message: str, *, limit: int = MAX_NACK_MESSAGE_BYTES) -> str:
    """`message` cut to at most `limit` UTF-8 bytes, marked with a trailing ellipsis when cut."""
    encoded = message.encode()
    if len(encoded) <= limit:
        return message
    room = limit - len(_ELLIPSIS.encode())
    # errors="ignore" drops a multi-byte character split by the cut rather than emitting U+FFFD.
    return encoded[:room].decode(errors="ignore") + _ELLIPSIS


@dataclass(frozen=True, slots=True)
class TypeStatus:
    """One resource type on one stream. Versions and nonces are "" until the event that sets them."""

    type_url: str
    short_name: str
    version_sent: str = ""
    nonce_sent: str = ""
    version_acked: str = ""
    last_nack_message: str = ""
    last_nack_version: str = ""
    last_nack_nonce: str = ""
    last_nack_at: float | None = None  # Unix time
    nack_count: int = 0
    pushes: int = 0


@dataclass(frozen=True, slots=True)
class ProxyStatus:
    stream_id: int
    node_id: str
    group: str
    peer: str
    method: str
    envoy_version: str
    connected_at: float  # Unix time
    types: tuple[TypeStatus, ...]  # push order (CDS, EDS, LDS, RDS), then any other type by URL


class _TypeState:
    """Mutable twin of TypeStatus, so the per-push callbacks do not rebuild a frozen record each time."""

    __slots__ = ("last_nack_at", "last_nack_message", "last_nack_nonce", "last_nack_version", "nack_count",
                 "nonce_sent", "pushes", "type_url", "version_acked", "version_sent")

    def __init__(self, type_url: str) -> None:
        self.type_url = type_url
        self.version_sent = ""
        self.nonce_sent = ""
        self.version_acked = ""
        self.last_nack_message = ""
        self.last_nack_version = ""
        self.last_nack_nonce = ""
        self.last_nack_at: float | None = None
        self.nack_count = 0
        self.pushes = 0

    def freeze(self) -> TypeStatus:
        return TypeStatus(
            type_url=self.type_url, short_name=short_name(self.type_url), version_sent=self.version_sent,
            nonce_sent=self.nonce_sent, version_acked=self.version_acked,
            last_nack_message=self.last_nack_message, last_nack_version=self.last_nack_version,
            last_nack_nonce=self.last_nack_nonce, last_nack_at=self.last_nack_at,
            nack_count=self.nack_count, pushes=self.pushes)


@dataclass(slots=True)
class _StreamState:
    info: StreamInfo
    connected_at: float
    types: dict[str, _TypeState]

    def type_state(self, type_url: str) -> _TypeState:
        state = self.types.get(type_url)
        if state is None:
            state = self.types[type_url] = _TypeState(type_url)
        return state


_ORDER: dict[str, int] = {t: i for i, t in enumerate(PUSH_ORDER)}


def _type_order(type_url: str) -> tuple[int, str]:
    return _ORDER.get(type_url, len(_ORDER)), type_url


class ProxyRegistry:
    """Per-stream xDS status, fed by the Callbacks hook. `clock` returns Unix time (injectable for tests)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._streams: dict[int, _StreamState] = {}
        self._clock = clock

    def list(self) -> list[ProxyStatus]:
        """Every live stream, sorted by node_id then stream_id."""
        out = [
            ProxyStatus(
                stream_id=s.info.stream_id, node_id=s.info.node_id, group=s.info.group, peer=s.info.peer,
                method=s.info.method, envoy_version=s.info.envoy_version, connected_at=s.connected_at,
                types=tuple(s.types[t].freeze() for t in sorted(s.types, key=_type_order)))
            for s in self._streams.values()
        ]
        out.sort(key=lambda p: (p.node_id, p.stream_id))
        return out

    def __len__(self) -> int:
        return len(self._streams)

    # Callbacks. Events for a stream the registry does not know (already closed, or opened before the
    # registry was attached) are dropped: recreating an entry would resurrect a closed stream forever.

    def on_stream_open(self, stream: StreamInfo) -> None:
        self._streams[stream.stream_id] = _StreamState(info=stream, connected_at=self._clock(), types={})

    def on_stream_closed(self, stream: StreamInfo) -> None:
        self._streams.pop(stream.stream_id, None)

    def on_response_sent(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
                         resource_names: Sequence[str], size_bytes: int) -> None:
        state = self._streams.get(stream.stream_id)
        if state is None:
            return
        t = state.type_state(type_url)
        t.version_sent = version
        t.nonce_sent = nonce
        t.pushes += 1

    def on_ack(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
               convergence_s: float | None = None) -> None:
        state = self._streams.get(stream.stream_id)
        if state is None:
            return
        state.type_state(type_url).version_acked = version

    def on_nack(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
                rejected_version: str, message: str) -> None:
        state = self._streams.get(stream.stream_id)
        if state is None:
            return
        t = state.type_state(type_url)
        # A NACK's version_info is the last version the client accepted and still runs (R8).
        t.version_acked = version
        t.last_nack_version = rejected_version
        t.last_nack_nonce = nonce
        # The server truncates already (R11); this bound holds even if a caller forgets.
        t.last_nack_message = truncate_message(message)
        t.last_nack_at = self._clock()
        t.nack_count += 1
