"""This project's snapshot as the resource file of tools/testbin/gcp-server (issue 12).

The fleet-scale benchmark runs go-control-plane on the very resources this server sends, so both serve the
same bytes: one JSON object per line, {"type_url", "name", "body": base64 of the serialized resource}
(tools/testbin/README.md). `changed_lines` gives what `gcp-server`'s `update FILE` takes: only the resources
that changed or were added between two snapshots.

    python -m harness.xds_resources CATALOG.yaml OUT.jsonl [--group GROUP]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from xds.cache.snapshot import Snapshot
from xds.pipeline import World, build_snapshot
from xds.policy.load import parse_document
from xds.typeurls import PUSH_ORDER

DEFAULT_GROUP = "group-0"


def snapshot_of(catalog_path: Path, *, group: str = DEFAULT_GROUP) -> Snapshot:
    """The snapshot `xds serve --config catalog_path` builds for a node of `group` (file source only)."""
    catalog, policy = parse_document(catalog_path.read_text(), where=str(catalog_path))
    return build_snapshot(World(catalog=catalog, policy=policy), group)


def resource_lines(snapshot: Snapshot, previous: Snapshot | None = None) -> Iterator[str]:
    """One JSON line per resource of the snapshot; with `previous`, only those whose bytes changed or that
    are new (removals are not part of the format: the benchmark's changes only update and add)."""
    for type_url in PUSH_ORDER:
        for name, resource in sorted(snapshot.of_type(type_url).items()):
            before = previous.get(type_url, name) if previous is not None else None
            if before is not None and before.body == resource.body:
                continue
            yield json.dumps({"type_url": type_url, "name": name,
                              "body": base64.b64encode(resource.body).decode("ascii")})


def write_lines(lines: Iterator[str], out: Path) -> int:
    """Write atomically (a reader never sees half a file); returns the number of resources."""
    text = [line + "\n" for line in lines]
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(text))
    os.replace(tmp, out)
    return len(text)


def changed_lines(before: Snapshot, after: Snapshot) -> Iterator[str]:
    return resource_lines(after, previous=before)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.xds_resources", description=__doc__)
    parser.add_argument("catalog", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--group", default=DEFAULT_GROUP)
    args = parser.parse_args(argv)
    count = write_lines(resource_lines(snapshot_of(args.catalog, group=args.group)), args.out)
    print(f"{count} resources -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
