"""NackLoop: the Callbacks implementation closing the NACK loop (issue 11 item 4, docs/protocol.md NL1).

It feeds ACKs and NACKs of every stream to the Quarantine (xds/cache/quarantine.py), and tells the app when
the set of quarantined resources changed, so it rebuilds (the rebuilt snapshots carry the last ACKed
versions) and reports the rejections to the sources that produced them. It hooks in through the server's
existing callbacks only, so the protocol and stream code are untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from xds.cache.quarantine import Quarantine, Rejection
from xds.secrets import redact
from xds.server.callbacks import StreamInfo
from xds.server.registry import truncate_message

log = logging.getLogger("xds.nack")


class NackLoop:
    """Per stream, the names of the last response of each type, so a NACK is narrowed to what it carried."""

    def __init__(self, quarantine: Quarantine, *, on_change: Callable[[Sequence[Rejection]], None]) -> None:
        self._quarantine = quarantine
        self._on_change = on_change
        # stream id -> type_url -> (nonce, resource names) of the last response sent.
        self._sent: dict[int, dict[str, tuple[str, tuple[str, ...]]]] = {}

    def on_stream_open(self, stream: StreamInfo) -> None:
        self._sent[stream.stream_id] = {}

    def on_stream_closed(self, stream: StreamInfo) -> None:
        self._sent.pop(stream.stream_id, None)

    def on_response_sent(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
                         resource_names: Sequence[str], size_bytes: int) -> None:
        sent = self._sent.get(stream.stream_id)
        if sent is not None:
            sent[type_url] = (nonce, tuple(resource_names))

    def on_ack(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
               convergence_s: float | None = None) -> None:
        before = self._quarantine.generation
        self._quarantine.acked(stream.group, type_url, version)
        if self._quarantine.generation != before:  # a bisection probe was accepted: send the next one
            log.info("nack_bisection_step", extra={"group": stream.group, "type_url": type_url,
                                                   "accepted_version": version})
            self._on_change(())

    def on_nack(self, stream: StreamInfo, *, type_url: str, version: str, nonce: str,
                rejected_version: str, message: str) -> None:
        # The NACK's version_info is what the proxy still runs (R8): that is its last ACKed version.
        before = self._quarantine.generation
        self._quarantine.acked(stream.group, type_url, version)
        last = self._sent.get(stream.stream_id, {}).get(type_url)
        names = last[1] if last is not None and last[0] == nonce else None
        changed = self._quarantine.nacked(stream.group, type_url, rejected_version=rejected_version,
                                          node_id=stream.node_id,
                                          # It reaches Kubernetes and Consul status: bounded (R11) and
                                          # redacted like every error the app shows (issue 9).
                                          message=redact(truncate_message(message)),
                                          sent_names=names)
        if not changed:
            if self._quarantine.generation != before:  # a bisection started or narrowed: next probe
                log.info("nack_bisection_step", extra={"group": stream.group, "type_url": type_url,
                                                       "rejected_version": rejected_version})
                self._on_change(())
            return
        for entry in changed:
            log.warning("resource_quarantined", extra={
                "group": entry.group, "type": entry.short_type, "resource": entry.name,
                "node_id": stream.node_id, "error": entry.message})
        self._on_change(changed)
