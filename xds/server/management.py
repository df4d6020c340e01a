"""ManagementService: the grpc.aio servicer of protos/xds/management/v1/management.proto.

ListProxies reads the ProxyRegistry; GetSnapshot reads the SnapshotStore and renders each resource as
proto3 JSON, so an operator sees what a group is served without an Envoy config dump.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from xds import typeurls
from xds.cache.quarantine import Rejection
from xds.cache.snapshot import Resource, Snapshot
from xds.cache.store import SnapshotStore
from xds.management.v1 import management_pb2 as pb
from xds.management.v1 import management_pb2_grpc
from xds.policy.load_tracker import LoadRow
from xds.secrets import redact
from xds.server.registry import ProxyRegistry, ProxyStatus, TypeStatus
from xds.translate.secrets import redact as redact_secret

MANAGEMENT_SERVICE: str = pb.DESCRIPTOR.services_by_name["Management"].full_name

MESSAGE_CLASSES: dict[str, type[Message]] = {
    typeurls.CLUSTER: cluster_pb2.Cluster,
    typeurls.ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    typeurls.LISTENER: listener_pb2.Listener,
    typeurls.ROUTE: route_pb2.RouteConfiguration,
    typeurls.SECRET: secret_pb2.Secret,
}


def _timestamp(unix_s: float) -> Timestamp:
    # Split before scaling: unix_s * 1e9 exceeds a double's 53-bit mantissa and would smear the nanos.
    seconds = math.floor(unix_s)
    nanos = min(round((unix_s - seconds) * 1e9), 999_999_999)
    return Timestamp(seconds=seconds, nanos=nanos)


def _type_to_proto(t: TypeStatus) -> pb.TypeStatus:
    return pb.TypeStatus(
        type_url=t.type_url, short_name=t.short_name, version_sent=t.version_sent, nonce_sent=t.nonce_sent,
        version_acked=t.version_acked, last_nack_message=t.last_nack_message,
        last_nack_version=t.last_nack_version, last_nack_nonce=t.last_nack_nonce,
        last_nack_at=_timestamp(t.last_nack_at) if t.last_nack_at is not None else None,
        nack_count=t.nack_count, pushes=t.pushes)


def proxy_to_proto(p: ProxyStatus) -> pb.Proxy:
    return pb.Proxy(
        stream_id=p.stream_id, node_id=p.node_id, group=p.group, peer=p.peer, method=p.method,
        envoy_version=p.envoy_version, connected_at=_timestamp(p.connected_at),
        types=[_type_to_proto(t) for t in p.types])


def resource_json(resource: Resource) -> str:
    """The resource as compact proto3 JSON with sorted keys and proto field names (as Envoy's config dump).

    A resource that cannot be rendered (an Any whose type this process never imported) yields a JSON object
    naming the problem instead: one odd resource must not hide the rest of the snapshot.
    """
    cls = MESSAGE_CLASSES.get(resource.type_url)
    try:
        if cls is None:
            raise TypeError(f"no message class for {resource.type_url}")
        message = cls.FromString(resource.body)
        if isinstance(message, secret_pb2.Secret):
            message = redact_secret(message)  # a private key never leaves in JSON (docs/security.md, issue 9)
        data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    except (TypeError, KeyError, ValueError) as exc:  # json_format raises these for unknown Any types
        data = {"@type": resource.type_url, "@error": f"cannot render as JSON: {exc}",
                "@size_bytes": len(resource.body)}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def snapshot_to_proto(snapshot: Snapshot, *, error: str = "") -> pb.GetSnapshotResponse:
    ordered = [*typeurls.PUSH_ORDER, *sorted(set(snapshot.versions) - typeurls.KNOWN)]
    return pb.GetSnapshotResponse(
        group=snapshot.group,
        versions=[pb.TypeVersion(type_url=t, version=snapshot.version(t)) for t in ordered],
        resources=[
            pb.SnapshotResource(type_url=t, name=name, version=res.hash, json=resource_json(res))
            for t in ordered
            for name, res in sorted(snapshot.of_type(t).items())
        ],
        error=error,
    )


@dataclass(frozen=True, slots=True)
class RegistryState:
    """A registry source's own view (issue 13; the app copies it from the source's SourceStatus)."""

    kind: str
    outage_s: float
    failing_watches: int
    resync_grace_remaining_s: float
    seconds_since_answer: float | None


@dataclass(frozen=True, slots=True)
class SourceState:
    """What `xds status` shows of one source; the app fills it in."""

    name: str
    synced: bool
    stale: bool
    error: str = ""
    last_sync_unix: float | None = None
    registry: RegistryState | None = None  # registry sources only


def source_to_proto(source: SourceState) -> pb.SourceStatus:
    # Redacted again here: ListProxies is read by operators and scripts (issue 9, docs/security.md).
    out = pb.SourceStatus(name=source.name, synced=source.synced, stale=source.stale,
                          error=redact(source.error))
    if source.last_sync_unix is not None:
        out.last_sync.CopyFrom(_timestamp(source.last_sync_unix))
    if (registry := source.registry) is not None:
        out.registry.CopyFrom(pb.RegistryStatus(
            kind=registry.kind, outage_seconds=registry.outage_s, failing_watches=registry.failing_watches,
            resync_grace_remaining_seconds=registry.resync_grace_remaining_s,
            seconds_since_answer=registry.seconds_since_answer))
    return out


def rejection_to_proto(r: Rejection) -> pb.QuarantinedResource:
    out = pb.QuarantinedResource(group=r.group, type_url=r.type_url, short_name=r.short_type, name=r.name,
                                 node_ids=list(r.node_ids), message=redact(r.message), serving=r.serving)
    out.nacked_at.CopyFrom(_timestamp(r.nacked_at))
    if r.quarantined_at is not None:
        out.quarantined_at.CopyFrom(_timestamp(r.quarantined_at))
    return out


def load_to_proto(row: LoadRow) -> pb.EndpointLoad:
    reported = row.age_s is not None
    return pb.EndpointLoad(service=row.service, address=row.address, reported=reported,
                           cpu_utilization=row.cpu or 0.0, memory_utilization=row.memory or 0.0,
                           utilization=row.utilization or 0.0, report_age_seconds=row.age_s or 0.0,
                           source=row.source, base_weight=row.base_weight, weight=row.weight)


class ManagementService:
    """Implements xds.management.v1.Management over a ProxyRegistry and a SnapshotStore."""

    def __init__(self, registry: ProxyRegistry, store: SnapshotStore, *,
                 sources: Callable[[], Sequence[SourceState]] = tuple,
                 loads: Callable[[], Sequence[LoadRow]] = tuple,
                 quarantined: Callable[[], Sequence[Rejection]] = tuple) -> None:
        self._registry = registry
        self._quarantined = quarantined
        self._store = store
        self._sources = sources
        self._loads = loads

    def add_to_server(self, server: grpc.aio.Server) -> None:
        management_pb2_grpc.add_ManagementServicer_to_server(self, server)

    async def ListProxies(  # noqa: N802 (the generated handler table calls it by its proto name)
        self, request: pb.ListProxiesRequest, context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.ListProxiesResponse:
        return pb.ListProxiesResponse(proxies=[proxy_to_proto(p) for p in self._registry.list()],
                                      sources=[source_to_proto(s) for s in self._sources()],
                                      quarantined=[rejection_to_proto(r) for r in self._quarantined()])

    async def GetSnapshot(  # noqa: N802 (the generated handler table calls it by its proto name)
        self, request: pb.GetSnapshotRequest, context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.GetSnapshotResponse:
        group = request.group
        # Only groups already built: store.get() would build (and from then on keep rebuilding) a snapshot
        # for any name a caller types.
        # A group idle since the last change is rebuilt by get(): on a worker thread, off the event loop.
        snapshot = await asyncio.to_thread(self._store.get, group) if group in self._store.groups() else None
        error = self._store.error(group)
        if snapshot is None:
            details = f"no snapshot for group {group!r}"
            if error:
                details += f"; last build error: {error}"
            await context.abort(grpc.StatusCode.NOT_FOUND, details)
        # Parsing and rendering every resource is CPU work proportional to the snapshot (seconds at 10k
        # clusters); a worker thread keeps xDS streams on the event loop moving meanwhile. The snapshot is
        # immutable, so sharing it with the thread is safe.
        return await asyncio.to_thread(snapshot_to_proto, snapshot, error=error)

    async def ListLoads(  # noqa: N802 (the generated handler table calls it by its proto name)
        self, request: pb.ListLoadsRequest, context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.ListLoadsResponse:
        return pb.ListLoadsResponse(endpoints=[load_to_proto(row) for row in self._loads()])
