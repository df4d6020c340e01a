"""Machine-readable CLI output (`-o table|json|yaml`, issue 14 item 5; shapes in docs/operations.md "CLI
output formats").

The JSON and YAML shapes are built from the management API's messages with proto field names, plus a
computed `state` per type, so scripts read the same names the proto documents. Nothing here reads secrets:
the server redacts source errors and Secret resources before they leave it (docs/security.md).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from xds.typeurls import short_name

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from xds.management.v1 import management_pb2 as pb

# yaml, protobuf and the generated messages are imported where used: every `xds` command builds the parser
# that imports this module, and `xds --version` should answer without loading them.

FORMATS = ("table", "json", "yaml")


def add_output_argument(parser: argparse.ArgumentParser, *, default: str = "table",
                        choices: tuple[str, ...] = FORMATS) -> None:
    parser.add_argument("-o", "--output", choices=choices, default=default,
                        help=f"output format: {' | '.join(choices)} (default {default}; docs/operations.md)")


def dump(data: object, fmt: str) -> str:
    """`data` (plain dicts, lists, strings, numbers) as JSON (2-space indent) or block-style YAML."""
    if fmt == "yaml":
        import yaml

        return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False))
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _message(message: Message) -> dict[str, Any]:
    # Proto field names (snake_case), as in management.proto; fields left at their default are omitted,
    # as proto3 JSON does.
    from google.protobuf import json_format

    return dict(json_format.MessageToDict(message, preserving_proto_field_name=True))


def proxies_to_dict(resp: pb.ListProxiesResponse) -> dict[str, Any]:
    """ListProxiesResponse, each type status with its computed `state` (SYNCED, STALE, NOT SENT,
    NACKED(<version>)) as the table shows it."""
    from xds.status_view import type_state

    data = _message(resp)
    for proxy_msg, proxy in zip(resp.proxies, data.get("proxies", []), strict=True):
        for type_msg, type_dict in zip(proxy_msg.types, proxy.get("types", []), strict=True):
            type_dict["state"] = type_state(type_msg)
    return {"proxies": data.get("proxies", []), "sources": data.get("sources", []),
            "quarantined": data.get("quarantined", [])}


def snapshot_to_dict(resp: pb.GetSnapshotResponse) -> dict[str, Any]:
    """GetSnapshotResponse with each resource's JSON text parsed into `resource`."""
    return {"group": resp.group,
            "versions": [{"type": short_name(v.type_url), "type_url": v.type_url,
                          "version": v.version} for v in resp.versions],
            "error": resp.error,
            "resources": [{"type_url": r.type_url, "name": r.name, "version": r.version,
                           "resource": json.loads(r.json)} for r in resp.resources]}


def loads_to_dict(resp: pb.ListLoadsResponse) -> list[dict[str, Any]]:
    return list(_message(resp).get("endpoints", []))


def rows_to_text(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def render_table(group: str, rows: list[tuple[str, str, str]]) -> str:
    """`xds render -o table`: the group, then one row per resource (type, name, content hash)."""
    if not rows:
        return f"group {group}\nno resources"
    table = [["TYPE", "NAME", "VERSION"], *([t.upper(), n, v] for t, n, v in rows)]
    return f"group {group}\n" + rows_to_text(table)
