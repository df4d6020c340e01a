"""The located tree: a document as mappings, lists and scalars that remember where they were written.

YAML text is composed (not loaded) with libyaml's SafeLoader when PyYAML has it, which keeps the start mark
of every node; plain data parsed elsewhere (a Kubernetes object, JSON from Consul KV) has no marks, so its
nodes carry `NO_POS` and its problems only a path. Either way the result is the same small tree (`Map`,
`Seq`, `Scalar`, and `Broken` for a node already reported), bounded in size and depth, which the validating
walk reads. `Report` collects the problems of one document, each with its file, line, column and YAML path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

import yaml

from xds.policy.errors import PolicyError, Problem

# Aliases let a short document expand into a huge tree ("billion laughs"); the budget bounds the work.
MAX_NODES = 1_000_000
MAX_DEPTH = 64

_EMPTY_DOCUMENT = "the document is empty; expected a mapping with 'services' and/or 'listeners'"

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp"))

# libyaml's loader keeps the same node marks and composes about 10x faster than the pure-Python one
# (benchmarks/README.md: a 1000-service file took ~1 s to parse); PyYAML builds without it fall back.
_COMPOSER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# --- the nodes ----------------------------------------------------------------------------------------------

Pos: TypeAlias = tuple[int | None, int | None]  # 1-based (line, column), or (None, None)
NO_POS: Pos = (None, None)


@dataclass(frozen=True, slots=True)
class Scalar:
    value: object
    pos: Pos


@dataclass(frozen=True, slots=True)
class Seq:
    items: tuple[Node, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    key_pos: Pos
    value: Node


@dataclass(frozen=True, slots=True)
class Map:
    entries: tuple[Entry, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Broken:
    """A node that was already reported while building the tree; the walk skips it silently."""

    pos: Pos


Node: TypeAlias = "Scalar | Seq | Map | Broken"


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def first_at(line: int | None) -> str:
    return f" (first at line {line})" if line is not None else ""


def text_at(node: Node, key: str) -> str | None:
    """The string value of `key` in a mapping node, if it has one."""
    if isinstance(node, Map):
        for entry in node.entries:
            if entry.key == key and isinstance(entry.value, Scalar) and isinstance(entry.value.value, str):
                return entry.value.value
    return None


def value_pos(node: Node, key: str) -> Pos:
    """Where the value of `key` is in a mapping node, falling back to the node itself."""
    if isinstance(node, Map):
        for entry in node.entries:
            if entry.key == key:
                return entry.value.pos
    return node.pos


# --- the problem report -------------------------------------------------------------------------------------


class Report:
    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[Problem] = []

    def add(self, pos: Pos, path: str, message: str) -> None:
        text = f"{path}: {message}" if path else message
        self.problems.append(Problem(self.where, pos[0], pos[1], text))

    def raise_if_any(self) -> None:
        if self.problems:
            # Document order reads best; problems found late (conflicts between listeners) slot in.
            ordered = sorted(self.problems, key=lambda p: (p.line or 0, p.column or 0))
            raise PolicyError(ordered)


# --- building the tree --------------------------------------------------------------------------------------


class _TooLargeError(Exception):
    def __init__(self, pos: Pos) -> None:
        super().__init__(pos)
        self.pos = pos  # where the budget ran out: an operator looks there first


class _Builder:
    """Builds the located tree from YAML nodes or plain data, reporting what cannot be represented."""

    def __init__(self, report: Report, max_nodes: int) -> None:
        self._report = report
        self._budget = max_nodes
        self._loader: yaml.SafeLoader | None = None

    def _spend(self, depth: int, pos: Pos) -> None:
        self._budget -= 1
        if self._budget < 0 or depth > MAX_DEPTH:
            raise _TooLargeError(pos)

    def _construct(self, node: yaml.ScalarNode) -> object:
        if self._loader is None:
            self._loader = yaml.SafeLoader("")
        try:
            return self._loader.construct_object(node, deep=True)
        except Exception:
            # The resolver guesses types from the text alone: `2024-13-45` looks like a date and is not one.
            # And an explicit tag on a value it does not fit (`!!bool maybe`, `!!int ""`, `!!timestamp x`)
            # makes PyYAML's constructors fail with whatever their code happens to hit (KeyError, IndexError,
            # AttributeError; found by tests/unit/test_loader_fuzz.py). Such a value is just text, which
            # the walk then reports where it is not what the schema expects. The loader may be left
            # mid-construction; a fresh one serves the next value.
            self._loader = None
            return str(node.value)

    def from_yaml(self, node: yaml.Node, path: str, depth: int = 0) -> Node:
        pos: Pos = (node.start_mark.line + 1, node.start_mark.column + 1)
        self._spend(depth, pos)
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                self._report.add(pos, path, f"unsupported YAML tag {node.tag!r}")
                return Broken(pos)
            return Scalar(self._construct(node), pos)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _TAG + "seq":
                self._report.add(pos, path, f"unsupported YAML tag {node.tag!r}")
                return Broken(pos)
            return Seq(
                tuple(self.from_yaml(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node.value)),
                pos,
            )
        if isinstance(node, yaml.MappingNode) and node.tag == _TAG + "map":
            entries: list[Entry] = []
            seen: dict[str, Pos] = {}
            for key_node, value_node in node.value:
                key_pos: Pos = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                key = self._key(key_node, key_pos, path)
                if key is None:
                    continue
                if key in seen:
                    # PyYAML silently keeps the last value; a repeated key is almost always an edit mistake.
                    self._report.add(key_pos, join(path, key),
                                     f"duplicate key {key!r}{first_at(seen[key][0])}")
                    continue
                seen[key] = key_pos
                entries.append(Entry(key, key_pos, self.from_yaml(value_node, join(path, key), depth + 1)))
            return Map(tuple(entries), pos)
        self._report.add(pos, path, f"unsupported YAML tag {node.tag!r}")
        return Broken(pos)

    def _key(self, node: yaml.Node, pos: Pos, path: str) -> str | None:
        if node.tag == _TAG + "merge":
            self._report.add(pos, path, "YAML merge keys ('<<') are not supported; repeat the keys instead")
            return None
        value: object = None
        if isinstance(node, yaml.ScalarNode) and node.tag in _SCALAR_TAGS:
            value = self._construct(node)
        if not isinstance(value, str):
            self._report.add(pos, path, "mapping keys must be strings; quote it")
            return None
        return value

    def from_data(self, data: object, path: str, depth: int = 0) -> Node:
        self._spend(depth, NO_POS)
        if isinstance(data, Mapping):
            entries: list[Entry] = []
            for key, value in data.items():
                if not isinstance(key, str):
                    self._report.add(NO_POS, path, f"mapping keys must be strings, got {key!r}")
                    continue
                entries.append(Entry(key, NO_POS, self.from_data(value, join(path, key), depth + 1)))
            return Map(tuple(entries), NO_POS)
        if isinstance(data, list | tuple):
            return Seq(
                tuple(self.from_data(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(data)), NO_POS
            )
        return Scalar(data, NO_POS)


def _build(report: Report, max_nodes: int, build: Callable[[_Builder], Node]) -> Node | None:
    try:
        node = build(_Builder(report, max_nodes))
    except _TooLargeError as e:
        report.add(e.pos, "", f"the document is too large or nested too deeply (more than {max_nodes} "
                               f"values after expanding aliases, or more than {MAX_DEPTH} levels)")
        return None
    return node


def compose(text: str, report: Report, *, max_nodes: int = MAX_NODES) -> Node | None:
    """The located tree of `text`, or None when there is none to walk (the reason is already reported):
    the YAML itself is unreadable, the document is empty, or it is too large."""
    try:
        root = yaml.compose(text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        pos: Pos = (mark.line + 1, mark.column + 1) if mark else NO_POS
        detail = ", ".join(part for part in (e.context, e.problem) if part)
        report.add(pos, "", f"invalid YAML: {detail}")
        return None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        column = e.position - text.rfind("\n", 0, e.position)
        char = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        report.add((line, column), "", f"invalid YAML: unacceptable character {char} ({e.reason})")
        return None
    except yaml.YAMLError as e:
        report.add(NO_POS, "", f"invalid YAML: {e}")
        return None
    except RecursionError:
        report.add(NO_POS, "", "invalid YAML: the document is nested too deeply")
        return None
    if root is None:
        # An empty file is far more often a half-written one than an intent to remove everything.
        report.add((1, 1), "", _EMPTY_DOCUMENT)
        return None
    return _build(report, max_nodes, lambda b: b.from_yaml(root, ""))


def from_data(data: object, report: Report, *, max_nodes: int = MAX_NODES) -> Node | None:
    """The located tree of already-parsed data, without lines and columns; None as for `compose`."""
    root = _build(report, max_nodes, lambda b: b.from_data(data, ""))
    if isinstance(root, Scalar) and root.value is None:
        report.add(NO_POS, "", _EMPTY_DOCUMENT)
        return None
    return root
