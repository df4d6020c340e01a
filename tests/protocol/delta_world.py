"""A fake delta xDS client that drives DeltaProtocol the way Envoy's delta client does."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from xds.cache.snapshot import Snapshot, empty_endpoints
from xds.server.delta import DeltaProtocol, DeltaRequest
from xds.server.protocol_core import Event, Send
from xds.typeurls import TypeUrl


@dataclass
class DeltaClient:
    """Plays one delta stream: remembers the latest nonce per type and, on ACK, what it holds."""

    protocol: DeltaProtocol = field(
        default_factory=lambda: DeltaProtocol(ads=True, placeholder=empty_endpoints))
    node_id: str = "n1"
    nonces: dict[TypeUrl, str] = field(default_factory=dict)
    # What the client holds per type: name -> version (as an accepting Envoy would after each response).
    held: dict[TypeUrl, dict[str, str]] = field(default_factory=dict)
    log: list[Send] = field(default_factory=list)
    first: bool = True

    def request(self, type_url: TypeUrl, subscribe: Iterable[str] = (), unsubscribe: Iterable[str] = (), *,
                nonce: str | None = None, error: str | None = None,
                initial: Mapping[str, str] | None = None) -> tuple[Event | None, list[Send]]:
        node = self.node_id if self.first else None
        self.first = False
        event = self.protocol.on_request(DeltaRequest(
            type_url=type_url, subscribe=tuple(subscribe), unsubscribe=tuple(unsubscribe), node_id=node,
            response_nonce=nonce if nonce is not None else "", error_message=error,
            initial_versions=dict(initial or {})))
        return event, self.flush()

    def ack(self, send: Send, subscribe: Iterable[str] = ()) -> tuple[Event | None, list[Send]]:
        held = self.held.setdefault(send.type_url, {})
        for r in send.resources:
            held[r.name] = r.hash
        for name in send.removed:
            held.pop(name, None)
        return self.request(send.type_url, subscribe, nonce=send.nonce)

    def nack(self, send: Send, message: str = "rejected") -> tuple[Event | None, list[Send]]:
        return self.request(send.type_url, nonce=send.nonce, error=message)

    def push(self, snap: Snapshot) -> list[Send]:
        self.protocol.set_snapshot(snap)
        return self.flush()

    def flush(self) -> list[Send]:
        sends = self.protocol.next_sends()
        for s in sends:
            self.nonces[s.type_url] = s.nonce
        self.log.extend(sends)
        return sends


def names(send: Send) -> list[str]:
    return [r.name for r in send.resources]
