"""Asyncio glue: drives one StreamProtocol from a grpc.aio bidirectional stream and the snapshot store.

One task reads requests into the stream's inbox; snapshot changes of the stream's node group land in the
same inbox; the handler applies each event to the protocol and writes whatever `next_sends()` returns. ADS
and the single-type services, in state of the world and in delta (issue 11), run this same code with a
different protocol machine (variants.py).

What a client can make the server hold is bounded (issue 7; limits.py has every bound):
* requests are decoded here, checked against `StreamLimits`, and the reader stops reading when
  `max_queued_requests` are waiting, so HTTP/2 flow control holds back a client that floods;
* snapshots are coalesced: the inbox keeps only the latest one, so a stream that does not read its
  responses never queues more than one response per type plus one pending snapshot (state of the world
  allows skipping intermediate states, docs/protocol.md R37);
* a stream's first snapshot of a new node group is built on a worker thread, never on the event loop, and
  one build serves every stream of that group that connects meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc

from xds.cache.node import NodeGrouper, client_key, located_key
from xds.cache.snapshot import Snapshot, empty_endpoints
from xds.cache.store import GroupLimitError, SnapshotStore
from xds.model.service import Locality
from xds.server.admission import Admission, AdmissionSettings, EveryInterval, Refusal, Ticket
from xds.server.callbacks import Callbacks, StreamInfo
from xds.server.limits import (
    LimitExceededError,
    PendingBytes,
    PlaceholderBudget,
    StreamLimits,
    TokenBucket,
    metadata_strings,
)
from xds.server.peer_auth import IdentityDeniedError, PeerAuthorizer
from xds.server.protocol import Acked, Ignored, Nacked, ProtocolError
from xds.server.secret_access import secrets_allowed
from xds.server.variants import SOTW, Message, Variant
from xds.translate.delivery import client_kind
from xds.typeurls import SECRET, TypeUrl, short_name

log = logging.getLogger("xds.server")

_stream_ids = itertools.count(1)
# Outstanding nonces whose send time is kept for xds_convergence_seconds; at most one per type can still be
# answered, so a handful is plenty.
_MAX_TRACKED_NONCES = 16

# How long a stream counts as in its initial sync at most, for admission (issue 12; admission.py).
_INITIAL_SYNC_MAX_S = 30.0

# Called with a StreamLimits field name (or "request_decode", "node_groups") each time a client is refused
# or slowed down by it; the app counts them in xds_limit_exceeded_total.
LimitHook = Callable[[str], None]


SHUTDOWN_MESSAGE = "the control plane is shutting down; reconnect (to another replica or to this one)"


def _ignore_limit(limit: str) -> None:
    return None


class _End:
    """Inbox marker: the client closed its side of the stream."""


class _Shutdown:
    """Inbox marker: the server is shutting down; the stream ends with UNAVAILABLE (docs/operations.md)."""


@dataclass(frozen=True, slots=True)
class _Published:
    """A new snapshot of the stream's group, and when the store published it (monotonic seconds)."""

    snapshot: Snapshot
    at: float


_Queued: TypeAlias = Message | _End | BaseException
_Item: TypeAlias = _Queued | _Published


class _Inbox:
    """Requests in arrival order (bounded in count and bytes, the reader waits for room) and the latest
    snapshot only. Each queued request's size stays counted in the server's PendingBytes until it is
    taken out (or the stream ends: `drain`)."""

    def __init__(self, *, max_requests: int, max_bytes: int, pending: PendingBytes) -> None:
        self._requests: collections.deque[tuple[_Queued, int]] = collections.deque()
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._bytes = 0
        self._pending = pending
        self._snapshot: _Published | None = None
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._ended = False  # set by end(): the server is shutting down

    def end(self) -> None:
        """End the stream at its next `get`, ahead of anything queued (graceful shutdown, issue 14 item 6)."""
        self._ended = True
        self._ready.set()

    async def put_request(self, item: _Queued, size: int = 0) -> None:
        """Queue `item`, whose `size` bytes the caller has taken from PendingBytes; they are now ours."""
        while self._requests and (len(self._requests) >= self._max_requests
                                  or self._bytes + size > self._max_bytes):
            self._room.clear()
            await self._room.wait()
        self._requests.append((item, size))
        self._bytes += size
        self._ready.set()

    def put_snapshot(self, published: _Published) -> None:
        # A newer snapshot replaces one not yet applied: the stream only ever needs the latest state.
        self._snapshot = published
        self._ready.set()

    async def get(self) -> _Item | _Shutdown:
        while True:
            if self._ended:
                return _Shutdown()
            if self._snapshot is not None:
                published, self._snapshot = self._snapshot, None
                return published
            if self._requests:
                item, size = self._requests.popleft()
                self._bytes -= size
                self._pending.release(size)
                self._room.set()
                return item
            self._ready.clear()
            await self._ready.wait()

    def drain(self) -> None:
        """Give back the bytes of requests the stream will never process."""
        while self._requests:
            _, size = self._requests.popleft()
            self._pending.release(size)
        self._bytes = 0


class StreamHandler:
    """Serves SotW and delta xDS streams from a SnapshotStore."""

    def __init__(self, store: SnapshotStore, *, grouper: NodeGrouper, callbacks: Callbacks,
                 limits: StreamLimits | None = None, on_limit: LimitHook = _ignore_limit,
                 authorizer: PeerAuthorizer | None = None, admission: Admission | None = None) -> None:
        self._store = store
        # Connect-storm admission and its rate-limited log (issue 12; admission.py).
        self._admission = admission or Admission(AdmissionSettings())
        self._refusal_log = EveryInterval()
        # With mTLS on the xDS port, every node a stream claims is checked against the connection's client
        # certificate (issue 9; docs/security.md). None: plaintext, no identity to bind.
        self._authorizer = authorizer
        self._grouper = grouper
        self._callbacks = callbacks
        self._limits = limits or StreamLimits()
        self._on_limit = on_limit
        self._open_streams = 0
        self._inboxes: set[_Inbox] = set()  # of the open streams, for end_streams()
        self._pending = PendingBytes(self._limits.max_pending_request_bytes)
        # Builds of a group's first snapshot: one worker (builds are CPU-bound under the GIL, more threads
        # would not make them faster) and one pending build per group, shared by its streams.
        self._builder = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-build")
        self._pending_builds: dict[str, asyncio.Future[Snapshot | None]] = {}

    @property
    def open_streams(self) -> int:
        return self._open_streams

    @property
    def write_timeout_s(self) -> float:
        return self._limits.write_timeout_s

    def write_timed_out(self, method: str) -> None:
        """A stream's client did not read a response within the write timeout (grpc_server.py ends it)."""
        self._on_limit("write_timeout_s")
        log.warning("stream_write_timeout",
                    extra={"method": method, "timeout_s": self._limits.write_timeout_s})

    async def _refuse(self, refusal: Refusal, context: grpc.aio.ServicerContext[object, object]) -> None:
        self._on_limit(refusal.limit)
        folded = self._refusal_log.due()
        if folded:
            log.warning("streams_refused", extra={"limit": refusal.limit, "refused": folded,
                                                  "syncing": self._admission.syncing})
        await context.abort(grpc.StatusCode.UNAVAILABLE, refusal.message)

    def end_streams(self) -> int:
        """End every open stream with UNAVAILABLE ("shutting down"), the status gRPC clients retry, instead
        of letting the server's stop cancel it (graceful shutdown, issue 14 item 6; docs/operations.md);
        returns how many."""
        for inbox in self._inboxes:
            inbox.end()
        return len(self._inboxes)

    def close(self) -> None:
        """Stop the build worker (the app calls this at shutdown)."""
        self._builder.shutdown(wait=False, cancel_futures=True)

    async def handle(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[object, object],
                     *, method: str, stream_type: TypeUrl | None,
                     variant: Variant = SOTW) -> AsyncGenerator[bytes, None]:
        if self._open_streams >= self._limits.max_streams:
            self._on_limit("max_streams")
            limit = self._limits.max_streams
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the server holds its limit of {limit} streams; retry later")
        ticket = self._admission.admit()
        if isinstance(ticket, Refusal):
            await self._refuse(ticket, context)
            return
        self._open_streams += 1
        # aclosing: when the caller closes this generator (a write timeout, grpc_server._bind), the inner
        # one is closed right here, so the stream's close is reported before it stops counting as open,
        # not whenever the event loop finalizes an abandoned generator.
        serving = self._serve(requests, context, method=method, stream_type=stream_type, variant=variant,
                              ticket=ticket)
        try:
            async with contextlib.aclosing(serving):
                async for payload in serving:
                    yield payload
                    # Not held while the stream idles: a response is tens of KiB (issue 12, idle memory).
                    del payload
        finally:
            ticket.release()
            self._open_streams -= 1

    async def _serve(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[object, object],
                     *, method: str, stream_type: TypeUrl | None, variant: Variant,
                     ticket: Ticket) -> AsyncGenerator[bytes, None]:
        info: StreamInfo | None = None
        # The initial sync ends (and the stream's admission ticket is given back) once it has ACKed a
        # response of each of CDS, EDS, LDS and RDS, or its one type on a single-type stream, or after
        # _INITIAL_SYNC_MAX_S whatever it asked for (a proxy with no listeners never asks for RDS).
        acked_types: set[str] = set()
        sync_types = 1 if stream_type is not None else 4
        sync_over = asyncio.get_running_loop().call_later(_INITIAL_SYNC_MAX_S, ticket.release)
        placeholder = PlaceholderBudget(empty_endpoints, limit=self._limits.max_placeholders,
                                        on_exhausted=lambda: self._limit_hit("max_placeholders", info))
        protocol, feed = variant.start(stream_type, placeholder, self._limits)
        inbox = _Inbox(max_requests=self._limits.max_queued_requests,
                       max_bytes=self._limits.max_queued_request_bytes, pending=self._pending)
        # When the stream had each outstanding response's content: a snapshot's arrival, or the request that
        # asked for it. An ACK of that nonce closes the interval (xds_convergence_seconds).
        content_since: dict[str, float] = {}
        origin = time.monotonic()
        loop = asyncio.get_running_loop()
        self._inboxes.add(inbox)
        reader = asyncio.create_task(self._read(requests, inbox, lambda: info, variant))
        cancel_watch = None
        # Secrets carry private keys: only authenticated or loopback streams get them (R47, secret_access.py).
        may_have_secrets, why = secrets_allowed(context.auth_context(), context.peer())

        def visible(snapshot: Snapshot) -> Snapshot:
            return snapshot if may_have_secrets else snapshot.without(SECRET)
        try:
            while True:
                item = await inbox.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, _Shutdown):
                    # UNAVAILABLE, not OK: OK says the RPC is complete, and some xDS clients (grpc-go based
                    # ones among them) do not reconnect after it; UNAVAILABLE is the code gRPC defines as
                    # "transient, retry", which every xDS client honours (docs/protocol.md R27).
                    await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTDOWN_MESSAGE)
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _Published):
                    protocol.set_snapshot(visible(item.snapshot))
                    origin = item.at
                else:
                    origin = time.monotonic()
                    if info is None:
                        opening = self._open(item, context, method=method, aggregated=stream_type is None)
                        try:
                            cancel_watch = self._watch(opening.group, inbox, loop)
                        except GroupLimitError as exc:
                            # Refused before it was opened: no open/closed callbacks for it.
                            self._limit_hit("node_groups", opening)
                            log.warning("stream_refused", extra={**_fields(opening), "error": str(exc)})
                            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc}; retry later")
                        info = opening
                        self._callbacks.on_stream_open(info)
                        log.info("stream_opened", extra=_fields(info))
                        if not may_have_secrets:
                            log.warning("stream_secrets_withheld", extra={**_fields(info), "reason": why,
                                                                          "peer": context.peer()})
                        current = self._store.current(info.group)
                        if current is not None:
                            protocol.set_snapshot(visible(current))
                        else:
                            self._build_first(info.group, inbox)
                    elif item.HasField("node") and self._authorizer is not None:
                        # Later requests normally carry no node (R1); one that does is checked again, so a
                        # stream cannot start as its own node and continue as another.
                        self._claimed_group(item.node, context)
                    event = feed(item)
                    if ticket.held and isinstance(event, Acked):
                        acked_types.add(event.type_url)
                        if len(acked_types) >= sync_types:
                            ticket.release()
                    answered = event.nonce if isinstance(event, Acked | Nacked) else None
                    since = content_since.pop(answered, None) if answered is not None else None
                    elapsed = None if since is None else time.monotonic() - since
                    self._report(info, event, convergence_s=elapsed)
                if info is None:
                    continue
                for send in protocol.next_sends():
                    content_since[send.nonce] = origin
                    if len(content_since) > _MAX_TRACKED_NONCES:
                        # Nonces the client never answers (superseded by a re-request) are dropped, oldest
                        # first: only the latest per type can still be ACKed.
                        del content_since[next(iter(content_since))]
                    payload = variant.encode(send)
                    size = len(payload)
                    yield payload
                    del payload  # as in handle(): the frame must not keep the last response alive
                    # The whole set's names are one tuple shared by all streams (callbacks may keep them).
                    names = (send.whole.ordered_names if send.whole is not None
                             else tuple(r.name for r in send.resources))
                    self._callbacks.on_response_sent(info, type_url=send.type_url, version=send.version,
                                                     nonce=send.nonce, resource_names=names,
                                                     size_bytes=size)
                    log.debug("response_sent", extra={**_fields(info), "type_url": send.type_url,
                                                      "version": send.version, "nonce": send.nonce,
                                                      "resources": len(names)})
        except LimitExceededError as exc:
            self._limit_hit(exc.limit, info)
            log.warning("stream_rejected", extra={**(_fields(info) if info else {}), "limit": exc.limit,
                                                  "error": str(exc)})
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if exc.exhausted else grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, str(exc))
        except IdentityDeniedError as exc:
            log.warning("stream_denied", extra={
                **(_fields(info) if info else {}), "claimed_node_id": exc.node_id, "claimed_group": exc.group,
                "peer": context.peer(), "reason": exc.denial.reason.value, "error": str(exc)})
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except ProtocolError as exc:
            log.warning("stream_rejected", extra={**(_fields(info) if info else {}), "error": str(exc)})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            self._inboxes.discard(inbox)
            sync_over.cancel()
            reader.cancel()
            inbox.drain()
            if cancel_watch is not None:
                cancel_watch()
            if info is not None:
                self._callbacks.on_stream_closed(info)
                log.info("stream_closed", extra=_fields(info))

    def _watch(self, group: str, inbox: _Inbox, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        def on_snapshot(snapshot: Snapshot) -> None:
            # Runs on the building thread: stamp the time there, hand over to the loop.
            published = _Published(snapshot, time.monotonic())
            loop.call_soon_threadsafe(inbox.put_snapshot, published)

        return self._store.watch(group, on_snapshot)

    def _build_first(self, group: str, inbox: _Inbox) -> None:
        """Deliver the group's snapshot to `inbox` once built off the loop; one build per group at a time."""
        pending = self._pending_builds.get(group)
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = asyncio.ensure_future(loop.run_in_executor(self._builder, self._store.get, group))
            self._pending_builds[group] = pending
            pending.add_done_callback(lambda _: self._pending_builds.pop(group, None))

        def deliver(done: asyncio.Future[Snapshot | None]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            snapshot = done.result()
            if snapshot is not None:
                inbox.put_snapshot(_Published(snapshot, time.monotonic()))

        pending.add_done_callback(deliver)

    def _open(self, first: Message, context: grpc.aio.ServicerContext[object, object],
              *, method: str, aggregated: bool = True) -> StreamInfo:
        node = first.node
        if not first.HasField("node") or not node.id:
            raise ProtocolError("the first request on a stream must carry node.id (xDS: node identity)")
        group = self._claimed_group(node, context)
        # A node's locality (bounded by check_node) makes its own store key: `locality.failover` services
        # order their endpoints relative to it (issue 8; cache/node.py).
        where = node.locality
        # Single-type Envoys and proxyless gRPC clients get their own snapshot variant (issue 11).
        group = client_key(group, client_kind(aggregated=aggregated, user_agent=node.user_agent_name))
        group = located_key(group, Locality(region=where.region, zone=where.zone, sub_zone=where.sub_zone))
        version = ""
        if node.HasField("user_agent_build_version"):
            v = node.user_agent_build_version.version
            version = f"{v.major_number}.{v.minor_number}.{v.patch}"
        return StreamInfo(stream_id=next(_stream_ids), node_id=node.id, group=group, peer=context.peer(),
                          method=method, envoy_version=version)

    def _claimed_group(self, node: Any, context: grpc.aio.ServicerContext[object, object]) -> str:
        """The node group `node` selects; IdentityDeniedError when the peer's certificate may not claim it
        (checked on the group before a locality is attached: the locality is not a boundary)."""
        metadata = metadata_strings(node.metadata) if node.HasField("metadata") else {}
        group = self._grouper.group_of(node_id=node.id, cluster=node.cluster, metadata=metadata)
        if self._authorizer is not None:
            self._authorizer.require(context, node_id=node.id, group=group)
        return group

    def _limit_hit(self, limit: str, info: StreamInfo | None) -> None:
        self._on_limit(limit)
        if limit in ("request_rate_per_s", "max_placeholders"):
            log.warning("stream_limited", extra={**(_fields(info) if info else {}), "limit": limit})

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

    async def _read(self, requests: AsyncIterator[bytes], inbox: _Inbox,
                    info: Callable[[], StreamInfo | None], variant: Variant) -> None:
        bucket = TokenBucket(rate=self._limits.request_rate_per_s, burst=self._limits.request_burst)
        throttled = False
        try:
            async for payload in requests:
                size = len(payload)
                self._pending.take(size)
                try:
                    message = variant.decode(payload)
                    del payload  # the decoded message is what stays queued
                    variant.check(message, self._limits)
                    wait_s = bucket.delay(variant.cost(message, self._limits))
                    if wait_s > 0:
                        # Over its rate: read this stream's next request later (flow control holds the
                        # client).
                        if not throttled:
                            throttled = True
                            self._limit_hit("request_rate_per_s", info())
                        await asyncio.sleep(wait_s)
                    else:
                        throttled = False
                    await inbox.put_request(message, size)
                except BaseException:
                    self._pending.release(size)
                    raise
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bad request or a failed transport: end the handler with it
            await inbox.put_request(exc)
            return
        await inbox.put_request(_End())


def _fields(info: StreamInfo) -> dict[str, object]:
    return {"node_id": info.node_id, "group": info.group, "stream_id": info.stream_id, "method": info.method}
