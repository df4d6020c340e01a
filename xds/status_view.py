"""`xds status`: query a running control plane's management API and render what every proxy holds.

The table follows `istioctl proxy-status`: one row per stream, one column per xDS type, each cell saying
whether the proxy runs what it was last sent.
"""

from __future__ import annotations

import datetime
import json
import textwrap

import grpc

from xds.management.v1 import management_pb2 as pb
from xds.management.v1 import management_pb2_grpc
from xds.typeurls import PUSH_ORDER, short_name

SYNCED = "SYNCED"
NOT_SENT = "NOT SENT"
STALE = "STALE"


class ManagementQueryError(Exception):
    """The management API did not answer: unreachable, timed out, or it refused the request."""


class GroupNotFoundError(ManagementQueryError):
    """The control plane has no snapshot for the group (no proxy of it connected, or every build failed)."""


def _translate(exc: grpc.aio.AioRpcError, address: str) -> ManagementQueryError:
    if exc.code() == grpc.StatusCode.NOT_FOUND:
        return GroupNotFoundError(exc.details() or "not found")
    return ManagementQueryError(f"management API at {address}: {exc.code().name}: {exc.details()}")


# A full server (10 000 streams, each with a node id of up to 1 KiB and four types) lists about 20 MiB of
# status; gRPC's default 4 MiB would refuse it. Snapshots of large meshes are bigger still.
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]


def _metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    # docs/security.md, "The management API and secrets": a bearer token, when the server wants one.
    return (("authorization", f"Bearer {token}"),) if token else None


async def fetch_proxies(address: str, *, timeout_s: float = 5.0, token: str | None = None
                        ) -> pb.ListProxiesResponse:
    """Every live stream of the control plane whose management API listens on `address` (host:port)."""
    async with grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
        stub = management_pb2_grpc.ManagementStub(channel)
        try:
            response: pb.ListProxiesResponse = await stub.ListProxies(pb.ListProxiesRequest(),
                                                                      timeout=timeout_s,
                                                                      metadata=_metadata(token))
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, address) from exc
    return response


async def fetch_snapshot(address: str, group: str, *, timeout_s: float = 5.0, token: str | None = None
                         ) -> pb.GetSnapshotResponse:
    """The snapshot `group` is served; GroupNotFoundError when there is none."""
    async with grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
        stub = management_pb2_grpc.ManagementStub(channel)
        try:
            response: pb.GetSnapshotResponse = await stub.GetSnapshot(pb.GetSnapshotRequest(group=group),
                                                                      timeout=timeout_s,
                                                                      metadata=_metadata(token))
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, address) from exc
    return response


def type_state(status: pb.TypeStatus | None) -> str:
    """SYNCED, NOT SENT, STALE (sent but not yet acknowledged) or NACKED(rejected version)."""
    if status is None or not status.nonce_sent:
        return NOT_SENT
    # Compare nonces, not versions: an EDS/RDS response for a new subscription can carry the version the
    # client already runs, and its NACK then reports that same version (docs/protocol.md R9).
    if status.last_nack_nonce and status.last_nack_nonce == status.nonce_sent:
        return f"NACKED({status.last_nack_version})"
    if status.version_acked == status.version_sent:
        return SYNCED
    return STALE


def _rows_to_text(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def format_proxy_table(resp: pb.ListProxiesResponse) -> str:
    """One row per stream (NODE, GROUP, then one column per type), then every NACK message on record."""
    sources = _quarantine_text(resp) + _sources_text(resp)
    if not resp.proxies:
        return "no proxies connected" + sources
    header = ["NODE", "GROUP", *(short_name(t).upper() for t in PUSH_ORDER), "METHOD", "ENVOY"]
    rows = [header]
    nacks: list[str] = []
    for proxy in resp.proxies:
        by_type = {t.type_url: t for t in proxy.types}
        rows.append([proxy.node_id, proxy.group, *(type_state(by_type.get(t)) for t in PUSH_ORDER),
                     proxy.method.upper(), proxy.envoy_version or "-"])
        for t in proxy.types:
            if t.nack_count:
                at = t.last_nack_at.ToDatetime(tzinfo=datetime.UTC).isoformat(timespec="seconds")
                kind = t.short_name or short_name(t.type_url)
                nacks.append(f"{proxy.node_id} {kind} rejected version {t.last_nack_version} "
                             f"(NACKs: {t.nack_count}, last at {at}):\n"
                             + textwrap.indent(t.last_nack_message, "    "))
    text = _rows_to_text(rows)
    if nacks:
        text += "\n\nNACKS\n" + "\n".join(nacks)
    return text + sources


def _quarantine_text(resp: pb.ListProxiesResponse) -> str:
    """A QUARANTINED table: resources proxies rejected, held back per group (issue 11 item 4)."""
    if not resp.quarantined:
        return ""
    rows = [["QUARANTINED", "TYPE", "GROUP", "SERVING", "NODES", "ERROR"]]
    for q in resp.quarantined:
        first_line = q.message.strip().splitlines()[0] if q.message.strip() else "-"
        rows.append([q.name, q.short_name.upper(), q.group, q.serving or "-", ",".join(q.node_ids),
                     first_line])
    return "\n\n" + _rows_to_text(rows)


def _sources_text(resp: pb.ListProxiesResponse) -> str:
    """A SOURCE table: whether each source synced, whether it is stale (serving its last good state)."""
    if not resp.sources:
        return ""
    rows = [["SOURCE", "STATE", "LAST SYNC", "ERROR"]]
    for source in resp.sources:
        state = "STALE" if source.stale else ("SYNCED" if source.synced else "NOT SYNCED")
        last = (source.last_sync.ToDatetime(tzinfo=datetime.UTC).isoformat(timespec="seconds")
                if source.HasField("last_sync") else "-")
        first_line = source.error.splitlines()[0] if source.error else "-"
        rows.append([source.name, state, last, first_line])
    return "\n\n" + _rows_to_text(rows) + _registries_text(resp)


def _registries_text(resp: pb.ListProxiesResponse) -> str:
    """A REGISTRY table: each registry source's own view (issue 13): failing watches, how long its outage
    has lasted, since when its registry last answered, and the resync grace left."""
    rows = [["REGISTRY", "KIND", "FAILING WATCHES", "OUTAGE", "LAST ANSWER", "GRACE LEFT"]]
    for source in resp.sources:
        if not source.HasField("registry"):
            continue
        r = source.registry
        answer = f"{r.seconds_since_answer:.1f}s ago" if r.HasField("seconds_since_answer") else "never"
        rows.append([source.name, r.kind, str(r.failing_watches), f"{r.outage_seconds:.1f}s", answer,
                     f"{r.resync_grace_remaining_seconds:.1f}s"])
    return "\n\n" + _rows_to_text(rows) if len(rows) > 1 else ""


def format_snapshot(resp: pb.GetSnapshotResponse) -> str:
    """The group's versions, build error if any, then every resource as indented JSON."""
    lines = [f"group {resp.group}"]
    lines += [f"  {short_name(v.type_url):<4} {v.version}" for v in resp.versions]
    if resp.error:
        lines.append(f"last build failed (serving the snapshot below): {resp.error}")
    for r in resp.resources:
        body = json.dumps(json.loads(r.json), indent=2, sort_keys=True)
        lines.append(f"\n# {short_name(r.type_url)} {r.name} ({r.version})\n{body}")
    return "\n".join(lines)


async def fetch_loads(address: str, *, timeout_s: float = 5.0, token: str | None = None
                      ) -> pb.ListLoadsResponse:
    """Every load-aware endpoint with its load and weight (issue 10, docs/load-aware.md)."""
    async with grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
        stub = management_pb2_grpc.ManagementStub(channel)
        try:
            response: pb.ListLoadsResponse = await stub.ListLoads(pb.ListLoadsRequest(), timeout=timeout_s,
                                                                  metadata=_metadata(token))
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, address) from exc
    return response


def format_loads(resp: pb.ListLoadsResponse) -> str:
    """One row per load-aware endpoint: its last CPU and memory, the smoothed value the weight follows,
    the report's age and source, and its base and served weights."""
    if not resp.endpoints:
        return "no load-aware endpoints (no service has `load_balancer: {weights: load_aware}`)"
    rows = [["SERVICE", "ENDPOINT", "CPU", "MEMORY", "SMOOTHED", "AGE", "SOURCE", "BASE", "WEIGHT"]]
    for e in resp.endpoints:
        if e.reported:
            load = [f"{e.cpu_utilization:.2f}", f"{e.memory_utilization:.2f}", f"{e.utilization:.2f}",
                    f"{e.report_age_seconds:.1f}s", e.source]
        else:
            load = ["-", "-", "-", "-", "-"]
        rows.append([e.service, e.address, *load, str(e.base_weight), str(e.weight)])
    return _rows_to_text(rows)
