"""Asyncio glue: drives one StreamProtocol from a grpc.aio bidirectional stream and the snapshot store.

One task reads requests into a queue; snapshot changes of the stream's node group land in the same queue;
the handler applies each event to the protocol and writes whatever `next_sends()` returns. ADS and the
single-type services run this same code with a different `StreamProtocol` configuration.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeAlias

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from xds.cache.node import NodeGrouper
from xds.cache.snapshot import Snapshot, empty_endpoints
from xds.cache.store import SnapshotStore
from xds.server.callbacks import Callbacks, StreamInfo
from xds.server.encode import encode_response
from xds.server.protocol import Acked, Ignored, Nacked, ProtocolError, Request, StreamProtocol
from xds.typeurls import TypeUrl, short_name

log = logging.getLogger("xds.server")

_stream_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Per-stream guards against misbehaving clients (XDS-RULES R45, case S7)."""

    max_resource_names: int = 100_000
    max_name_length: int = 4096


class _End:
    """Queue marker: the client closed its side of the stream."""


@dataclass(frozen=True, slots=True)
class _Published:
    """A new snapshot of the stream's group, and when the store published it (monotonic seconds)."""

    snapshot: Snapshot
    at: float


_Item: TypeAlias = discovery_pb2.DiscoveryRequest | _Published | _End | BaseException


def to_request(message: discovery_pb2.DiscoveryRequest) -> Request:
    return Request(
        type_url=message.type_url,
        version_info=message.version_info,
        response_nonce=message.response_nonce,
        resource_names=tuple(message.resource_names),
        node_id=message.node.id if message.HasField("node") else None,
        error_message=message.error_detail.message if message.HasField("error_detail") else None,
    )


class StreamHandler:
    """Serves SotW xDS streams from a SnapshotStore."""

    def __init__(self, store: SnapshotStore, *, grouper: NodeGrouper, callbacks: Callbacks,
                 limits: StreamLimits | None = None) -> None:
        self._store = store
        self._grouper = grouper
        self._callbacks = callbacks
        self._limits = limits or StreamLimits()

    async def handle(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
                     context: grpc.aio.ServicerContext[object, object], *,
                     method: str, stream_type: TypeUrl | None) -> AsyncIterator[bytes]:
        protocol = StreamProtocol(ads=stream_type is None, stream_type=stream_type,
                                  placeholder=empty_endpoints)
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        # When the stream had each outstanding response's content: a snapshot's arrival, or the request that
        # asked for it. An ACK of that nonce closes the interval (xds_convergence_seconds).
        content_since: dict[str, float] = {}
        origin = time.monotonic()
        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(self._read(requests, queue))
        info: StreamInfo | None = None
        cancel_watch = None
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _Published):
                    protocol.set_snapshot(item.snapshot)
                    origin = item.at
                else:
                    origin = time.monotonic()
                    self._check_limits(item)
                    if info is None:
                        info = self._open(item, context, method=method)
                        self._callbacks.on_stream_open(info)
                        log.info("stream_opened", extra=_fields(info))

                        def on_snapshot(snapshot: Snapshot) -> None:
                            # Runs on the publishing thread: stamp the time there, hand over to the loop.
                            published = _Published(snapshot, time.monotonic())
                            loop.call_soon_threadsafe(queue.put_nowait, published)

                        cancel_watch = self._store.watch(info.group, on_snapshot)
                        current = self._store.get(info.group)
                        if current is not None:
                            protocol.set_snapshot(current)
                    event = protocol.on_request(to_request(item))
                    answered = event.nonce if isinstance(event, Acked | Nacked) else None
                    since = content_since.pop(answered, None) if answered is not None else None
                    elapsed = None if since is None else time.monotonic() - since
                    self._report(info, event, convergence_s=elapsed)
                if info is None:
                    continue
                for send in protocol.next_sends():
                    content_since[send.nonce] = origin
                    payload = encode_response(send)
                    yield payload
                    names = [r.name for r in send.resources]
                    self._callbacks.on_response_sent(info, type_url=send.type_url, version=send.version,
                                                     nonce=send.nonce, resource_names=names,
                                                     size_bytes=len(payload))
                    log.debug("response_sent", extra={**_fields(info), "type_url": send.type_url,
                                                      "version": send.version, "nonce": send.nonce,
                                                      "resources": len(names)})
        except ProtocolError as exc:
            log.warning("stream_rejected", extra={**(_fields(info) if info else {}), "error": str(exc)})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            reader.cancel()
            if cancel_watch is not None:
                cancel_watch()
            if info is not None:
                self._callbacks.on_stream_closed(info)
                log.info("stream_closed", extra=_fields(info))

    def _open(self, first: discovery_pb2.DiscoveryRequest, context: grpc.aio.ServicerContext[object, object],
              *, method: str) -> StreamInfo:
        node = first.node
        if not first.HasField("node") or not node.id:
            raise ProtocolError("the first request on a stream must carry node.id (xDS: node identity)")
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        group = self._grouper.group_of(node_id=node.id, cluster=node.cluster, metadata=metadata)
        version = ""
        if node.HasField("user_agent_build_version"):
            v = node.user_agent_build_version.version
            version = f"{v.major_number}.{v.minor_number}.{v.patch}"
        return StreamInfo(stream_id=next(_stream_ids), node_id=node.id, group=group, peer=context.peer(),
                          method=method, envoy_version=version)

    def _check_limits(self, message: discovery_pb2.DiscoveryRequest) -> None:
        names = message.resource_names
        if len(names) > self._limits.max_resource_names:
            raise ProtocolError(f"{len(names)} resource_names exceed the limit of "
                                f"{self._limits.max_resource_names}")
        if any(len(n) > self._limits.max_name_length for n in names):
            raise ProtocolError(f"a resource name exceeds {self._limits.max_name_length} characters")

    def _report(self, info: StreamInfo, event: Acked | Nacked | Ignored | None, *,
                convergence_s: float | None) -> None:
        if isinstance(event, Acked):
            self._callbacks.on_ack(info, type_url=event.type_url, version=event.version, nonce=event.nonce,
                                   convergence_s=convergence_s)
            log.debug("ack_received", extra={**_fields(info), "type_url": event.type_url,
                                             "version": event.version, "nonce": event.nonce})
        elif isinstance(event, Nacked):
            self._callbacks.on_nack(info, type_url=event.type_url, version=event.version, nonce=event.nonce,
                                    rejected_version=event.rejected_version, message=event.message)
            log.warning("nack_received", extra={**_fields(info), "type_url": event.type_url,
                                                "version": event.version, "nonce": event.nonce,
                                                "rejected_version": event.rejected_version,
                                                "error": event.message})
        elif isinstance(event, Ignored):
            log.debug("request_ignored", extra={**_fields(info), "type": short_name(event.type_url),
                                                "nonce": event.nonce, "reason": event.reason})

    @staticmethod
    async def _read(requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
                    queue: asyncio.Queue[_Item]) -> None:
        try:
            async for message in requests:
                queue.put_nowait(message)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the transport failed: end the handler with it
            queue.put_nowait(exc)
            return
        queue.put_nowait(_End())


def _fields(info: StreamInfo) -> dict[str, object]:
    return {"node_id": info.node_id, "group": info.group, "stream_id": info.stream_id, "method": info.method}
