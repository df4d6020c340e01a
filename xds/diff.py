"""The `xds diff` engine: resource by resource, what a candidate configuration changes for a node group.

Pure (issue 14 item 5): it compares two views of a group, each a mapping type -> name -> the resource as
canonical JSON text (server/management.py resource_json, the same text GetSnapshot returns), and knows
nothing of gRPC, files or how the views were obtained (cli_diff.py does that).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

# type (short name, e.g. "cds") -> resource name -> canonical JSON text of the resource
View = Mapping[str, Mapping[str, str]]

ChangeKind = Literal["added", "removed", "changed"]
_MARK: dict[str, str] = {"added": "+", "removed": "-", "changed": "~"}


@dataclass(frozen=True, slots=True)
class ResourceChange:
    """One resource that differs. `diff` is a unified diff of the pretty JSON (empty for opaque types)."""

    type: str
    name: str
    change: ChangeKind
    diff: str = ""


@dataclass(frozen=True, slots=True)
class GroupDiff:
    """Every change of one node group (store key), in push order of the types, then by name."""

    group: str
    changes: tuple[ResourceChange, ...]

    def count(self, kind: ChangeKind) -> int:
        return sum(1 for c in self.changes if c.change == kind)


def _pretty(text: str) -> list[str]:
    # Sorted keys and a fixed indent: the same resource always prints the same lines, so only real
    # differences show in the unified diff.
    pretty = json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    return pretty.splitlines(keepends=True)


def _unified(type_: str, name: str, before: str | None, after: str | None) -> str:
    old = _pretty(before) if before is not None else []
    new = _pretty(after) if after is not None else []
    lines = difflib.unified_diff(old, new, fromfile=f"current/{type_}/{name}",
                                 tofile=f"candidate/{type_}/{name}", n=3)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _same(before: str, after: str) -> bool:
    # Compare parsed values, not text: key order or spacing of the two sides must not count as a change.
    return before == after or bool(json.loads(before) == json.loads(after))


def diff_group(group: str, current: View, candidate: View, *, type_order: Iterable[str] = (),
               opaque: frozenset[str] = frozenset()) -> GroupDiff:
    """What `candidate` adds, removes and changes against `current` for `group`.

    Types in `opaque` are compared by name only: their content differs between processes for reasons that
    are no change of configuration (workload certificates are issued per process; docs/operations.md
    "xds diff").
    """
    order = list(dict.fromkeys([*type_order, *sorted(set(current) | set(candidate))]))
    changes: list[ResourceChange] = []
    for type_ in order:
        before, after = current.get(type_, {}), candidate.get(type_, {})
        for name in sorted(set(before) | set(after)):
            old, new = before.get(name), after.get(name)
            with_diff = type_ not in opaque
            if old is None and new is not None:
                changes.append(ResourceChange(type_, name, "added",
                                              _unified(type_, name, None, new) if with_diff else ""))
            elif new is None and old is not None:
                changes.append(ResourceChange(type_, name, "removed",
                                              _unified(type_, name, old, None) if with_diff else ""))
            elif old is not None and new is not None and with_diff and not _same(old, new):
                changes.append(ResourceChange(type_, name, "changed", _unified(type_, name, old, new)))
    return GroupDiff(group=group, changes=tuple(changes))


def has_changes(diffs: Iterable[GroupDiff]) -> bool:
    return any(d.changes for d in diffs)


def diffs_to_dict(diffs: Iterable[GroupDiff]) -> dict[str, object]:
    """The `-o json|yaml` shape of `xds diff` (docs/operations.md "xds diff"): stable keys, one entry per
    group, one per changed resource."""
    groups = [{"group": d.group,
               "summary": {k: d.count(k) for k in ("added", "removed", "changed")},
               "changes": [{"type": c.type, "name": c.name, "change": c.change, "diff": c.diff}
                           for c in d.changes]}
              for d in diffs]
    return {"changed": any(g["changes"] for g in groups), "groups": groups}


def format_diffs(diffs: Iterable[GroupDiff], *, summary_only: bool = False) -> str:
    """Human output: per group a summary line, one line per changed resource, then its unified diff."""
    out: list[str] = []
    for d in diffs:
        if not d.changes:
            out.append(f"group {d.group}: no changes")
            continue
        out.append(f"group {d.group}: {d.count('added')} added, {d.count('removed')} removed, "
                   f"{d.count('changed')} changed")
        for c in d.changes:
            out.append(f"  {_MARK[c.change]} {c.type} {c.name} ({c.change})")
            if c.diff and not summary_only:
                out.append("".join("    " + line for line in c.diff.splitlines(keepends=True)).rstrip("\n"))
    return "\n".join(out)
