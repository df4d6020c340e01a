"""Callbacks: the hook through which the xDS server reports what happens on its streams.

Metrics, the proxy registry behind `xds status`, and tests implement it. Every method is called on the event
loop thread and must return quickly without blocking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StreamInfo:
    stream_id: int
    node_id: str
    group: str  # node group key the stream's snapshot is selected by
    peer: str
    method: str  # "ads", "cds", "eds", "lds", "rds" or "sds"; delta streams add "-delta" ("ads-delta")
    envoy_version: str = ""


class Callbacks(Protocol):
    def on_stream_open(self, stream: StreamInfo) -> None:
        """A stream passed its first-request checks and is being served."""

    def on_stream_closed(self, stream: StreamInfo) -> None:
        """The stream ended, for any reason."""

    def on_response_sent(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
                         resource_names: Sequence[str], size_bytes: int) -> None:
        """A DiscoveryResponse was written to the stream."""

    def on_ack(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
               convergence_s: float | None = None) -> None:
        """The client accepted the response carrying `nonce` (R8). `convergence_s`: time from the moment
        the stream had the content to send (a new snapshot, or the request asking for it) to this ACK."""

    def on_nack(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
                rejected_version: str, message: str) -> None:
        """The client rejected `rejected_version`; it keeps `version` (R8-R11). `message` is truncated."""


class MultiCallbacks:
    """Fans every callback out to several implementations, in order."""

    def __init__(self, *targets: Callbacks) -> None:
        self._targets = targets

    def on_stream_open(self, stream: StreamInfo) -> None:
        for t in self._targets:
            t.on_stream_open(stream)

    def on_stream_closed(self, stream: StreamInfo) -> None:
        for t in self._targets:
            t.on_stream_closed(stream)

    def on_response_sent(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
                         resource_names: Sequence[str], size_bytes: int) -> None:
        for t in self._targets:
            t.on_response_sent(stream, type_url=type_url, version=version, nonce=nonce,
                               resource_names=resource_names, size_bytes=size_bytes)

    def on_ack(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
               convergence_s: float | None = None) -> None:
        for t in self._targets:
            t.on_ack(stream, type_url=type_url, version=version, nonce=nonce, convergence_s=convergence_s)

    def on_nack(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
                rejected_version: str, message: str) -> None:
        for t in self._targets:
            t.on_nack(stream, type_url=type_url, version=version, nonce=nonce,
                      rejected_version=rejected_version, message=message)
