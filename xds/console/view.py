"""The web console's JSON documents (docs/console.md, issue 14 item 1), built from what the app holds.

Pure functions of the inputs a `ConsoleData` hands out: no I/O, nothing built (a group's snapshot is read
with `current`, never `get`, so looking at the console never makes the store build or keep a group). Every
string passes through the secret redaction before it leaves (docs/security.md, issue 9).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from envoy.config.route.v3 import route_pb2

from xds import typeurls
from xds.cache.history import Change
from xds.cache.quarantine import Rejection
from xds.cache.snapshot import Snapshot
from xds.secrets import redact_value
from xds.server.management import SourceState, resource_json
from xds.server.registry import ProxyStatus, TypeStatus

SYNCED = "SYNCED"
STALE = "STALE"
NACKED = "NACKED"
NOT_SENT = "NOT SENT"


@dataclass(frozen=True, slots=True)
class ConsoleData:
    """Read-only views of the app's state; the app wires them (xds/app.py)."""

    ready: Callable[[], bool]
    proxies: Callable[[], Sequence[ProxyStatus]]
    sources: Callable[[], Sequence[SourceState]]
    groups: Callable[[], Sequence[str]]
    snapshot: Callable[[str], Snapshot | None]  # the current snapshot, never building one
    group_error: Callable[[str], str]
    history: Callable[[], Sequence[Change]]
    quarantined: Callable[[], Sequence[Rejection]]


def type_state(status: TypeStatus) -> str:
    """SYNCED, STALE (sent, not yet acknowledged), NACKED or NOT SENT, as `xds status` shows them.

    Nonces, not versions, decide NACKED: a response for a new subscription can carry the version the client
    already runs, and its NACK then names that same version (docs/protocol.md R9)."""
    if not status.nonce_sent:
        return NOT_SENT
    if status.last_nack_nonce and status.last_nack_nonce == status.nonce_sent:
        return NACKED
    return SYNCED if status.version_acked == status.version_sent else STALE


def _proxy(p: ProxyStatus) -> dict[str, object]:
    return {"node_id": p.node_id, "group": p.group, "peer": p.peer, "method": p.method,
            "envoy_version": p.envoy_version, "connected_at": p.connected_at,
            "types": [{"type": t.short_name, "state": type_state(t), "version_sent": t.version_sent,
                       "version_acked": t.version_acked, "pushes": t.pushes, "nack_count": t.nack_count,
                       "nack_version": t.last_nack_version, "nack_message": t.last_nack_message,
                       "nack_at": t.last_nack_at}
                      for t in p.types]}


def _source(s: SourceState) -> dict[str, object]:
    state = "STALE" if s.stale else ("SYNCED" if s.synced else "NOT SYNCED")
    registry = None
    if (r := s.registry) is not None:
        registry = {"kind": r.kind, "outage_s": r.outage_s, "failing_watches": r.failing_watches,
                    "resync_grace_remaining_s": r.resync_grace_remaining_s,
                    "seconds_since_answer": r.seconds_since_answer}
    return {"name": s.name, "state": state, "last_sync": s.last_sync_unix, "error": s.error,
            "registry": registry}


def _match(match: route_pb2.RouteMatch) -> str:
    which = match.WhichOneof("path_specifier")
    if which == "prefix":
        return f"prefix {match.prefix}"
    if which == "path":
        return f"path {match.path}"
    if which == "safe_regex":
        return f"regex {match.safe_regex.regex}"
    return which or "-"


def route_splits(snapshot: Snapshot) -> list[dict[str, object]]:
    """Per route of every RouteConfiguration: its match and where its traffic goes, with weights."""
    rows: list[dict[str, object]] = []
    for name, resource in sorted(snapshot.of_type(typeurls.ROUTE).items()):
        config = route_pb2.RouteConfiguration.FromString(resource.body)
        for vhost in config.virtual_hosts:
            for route in vhost.routes:
                split: list[dict[str, object]] = []
                if route.HasField("route"):
                    action = route.route
                    if action.HasField("weighted_clusters"):
                        split = [{"cluster": c.name, "weight": c.weight.value}
                                 for c in action.weighted_clusters.clusters]
                    elif action.cluster:
                        split = [{"cluster": action.cluster, "weight": None}]
                    elif action.cluster_header:
                        split = [{"cluster": f"(header {action.cluster_header})", "weight": None}]
                kind = route.WhichOneof("action") or "-"
                rows.append({"route_config": name, "virtual_host": vhost.name, "route": route.name,
                             "match": _match(route.match), "action": kind, "split": split})
    return rows


def _group(data: ConsoleData, name: str) -> dict[str, object]:
    snapshot = data.snapshot(name)
    out: dict[str, object] = {"name": name, "error": data.group_error(name), "versions": {}, "counts": {},
                              "routes": [], "building": snapshot is None}
    if snapshot is not None:
        ordered = [*typeurls.PUSH_ORDER, *sorted(set(snapshot.versions) - typeurls.KNOWN)]
        out["versions"] = {typeurls.short_name(t): snapshot.version(t)
                           for t in ordered if t in snapshot.versions}
        out["counts"] = {typeurls.short_name(t): len(snapshot.of_type(t)) for t in ordered}
        out["routes"] = route_splits(snapshot)
    return out


def _rejection(r: Rejection) -> dict[str, object]:
    return {"group": r.group, "type": r.short_type, "name": r.name, "node_ids": list(r.node_ids),
            "message": r.message, "serving": r.serving, "nacked_at": r.nacked_at}


def state(data: ConsoleData, *, now: Callable[[], float] = time.time) -> dict[str, object]:
    """The console's live document: everything but the resources' JSON (see `resources`)."""
    document: dict[str, object] = {
        "now": now(),
        "ready": data.ready(),
        "proxies": [_proxy(p) for p in data.proxies()],
        "sources": [_source(s) for s in data.sources()],
        "groups": [_group(data, g) for g in data.groups()],
        "quarantined": [_rejection(r) for r in data.quarantined()],
        "history": [c.as_json() for c in data.history()],
    }
    return {k: redact_value(v) for k, v in document.items()}


def resources(data: ConsoleData, group: str) -> dict[str, object] | None:
    """The config `group` receives, resource by resource, as JSON (secrets redacted); None if not held."""
    snapshot = data.snapshot(group) if group in data.groups() else None
    if snapshot is None:
        return None
    ordered = [*typeurls.PUSH_ORDER, *sorted(set(snapshot.versions) - typeurls.KNOWN)]
    items = [{"type": typeurls.short_name(t), "name": name, "version": res.hash,
              "json": redact_value(resource_json(res))}
             for t in ordered for name, res in sorted(snapshot.of_type(t).items())]
    return {"group": group, "versions": {typeurls.short_name(t): snapshot.version(t)
                                         for t in ordered if t in snapshot.versions},
            "resources": items}
