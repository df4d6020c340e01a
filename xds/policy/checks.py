"""Generic checks of located values: the shapes every part of a document is made of.

A mapping with known, required and refused keys; a list; a string matching a pattern; a name; a bounded
integer; a boolean; a duration; one of a few words; a mapping of string pairs; and duplicates within a list.
Each problem is reported where the value was written, in words that quote what was found (`describe`) and
suggest the closest known word (`suggest`). The schema walk (`walker.py`) builds on these.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from xds.policy.document import Broken, Map, Node, Report, Scalar, Seq, first_at, join, value_pos
from xds.policy.fields import (
    MISSING,
    Boolean,
    Choice,
    CountOr,
    Declared,
    Duration,
    FieldSpec,
    Integer,
    IpAddress,
    ListOf,
    Name,
    Nested,
    Number,
    Pairs,
    Shape,
    Text,
)
from xds.policy.rules import (
    DURATION_RE,
    DURATION_UNITS_S,
    MAX_NAME_LENGTH,
    NAME_RE,
    NAME_RULE,
    PAIR_KEY_RE,
    PAIR_KEY_RULE,
    TEXT_RE,
    TEXT_RULE,
)

_MAX_QUOTED = 80


def describe(node: Node) -> str:
    text = _describe_untruncated(node)
    # Messages quote what they got; a pasted blob should not drown the rest of the report.
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."


def _describe_untruncated(node: Node) -> str:
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    value = node.value if isinstance(node, Scalar) else None
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return repr(value)
    return f"{type(value).__name__} {value}"


def suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True, slots=True)
class Fields:
    """The known keys of one mapping, with the YAML path of the mapping."""

    nodes: dict[str, Node]
    path: str

    def at(self, key: str) -> tuple[Node | None, str]:
        return self.nodes.get(key), join(self.path, key)

    def __contains__(self, key: str) -> bool:
        return key in self.nodes


_T = TypeVar("_T")
_K = TypeVar("_K")

# Checks a key that no generic check covers (a list with rules of its own, a group such as `match`).
Handler: TypeAlias = "Callable[[Node | None, str], object]"


class Checker:
    """Checks values of the located tree against generic shapes. Each check reports its problems and returns
    None for an invalid value; an absent optional value (node None) yields the default. A composite is built
    only when no problem was reported while checking its parts, which `_mark` tracks."""

    def __init__(self, report: Report) -> None:
        self._report = report

    @property
    def _mark(self) -> int:
        return len(self._report.problems)

    def _bad(self, node: Node, path: str, message: str) -> None:
        self._report.add(node.pos, path, message)

    def _duplicate(self, seen: dict[_K, int | None], key: _K | None, item: Node, path: str, *, field: str,
                   what: str) -> bool:
        """Remember `key` (None: no usable key), reporting it when an earlier item of the list had it.
        Works on the raw value, so a duplicate is found even while the item has other problems."""
        if key is None:
            return False
        if key in seen:
            self._report.add(value_pos(item, field), path, f"duplicate {what}{first_at(seen[key])}")
            return True
        seen[key] = item.pos[0]
        return False

    def _mapping(self, node: Node, path: str, *, what: str, keys: Sequence[str],
                 required: Sequence[str] = (), refused: Mapping[str, str] | None = None) -> Fields | None:
        if isinstance(node, Broken):
            return None
        if not isinstance(node, Map):
            self._bad(node, path, f"{what} must be a mapping, got {describe(node)}")
            return None
        nodes: dict[str, Node] = {}
        for entry in node.entries:
            if entry.key in keys:
                nodes[entry.key] = entry.value
            elif refused and entry.key in refused:
                self._report.add(entry.key_pos, join(path, entry.key), refused[entry.key])
            else:
                self._report.add(entry.key_pos, join(path, entry.key),
                                 f"unknown key {entry.key!r} in {what}{suggest(entry.key, keys)}")
        for key in required:
            if key not in nodes:
                self._bad(node, path, f"missing required key {key!r} in {what}")
        return Fields(nodes, path)

    def _list(self, node: Node | None, path: str, *, nonempty: str | None) -> tuple[Node, ...] | None:
        """The items of a list; `nonempty` names what at least one item must be, None when none is fine."""
        if node is None:
            return ()
        if isinstance(node, Broken):
            return None
        if not isinstance(node, Seq):
            null = isinstance(node, Scalar) and node.value is None
            hint = " (write [] for none)" if nonempty is None and null else ""
            self._bad(node, path, f"must be a list, got {describe(node)}{hint}")
            return None
        if nonempty is not None and not node.items:
            self._bad(node, path, f"must list at least one {nonempty}")
            return None
        return node.items

    def _string(self, node: Node | None, path: str, *, default: str | None = None,
                pattern: re.Pattern[str] = TEXT_RE, rule: str = TEXT_RULE) -> str | None:
        if node is None:
            return default
        if isinstance(node, Broken):
            return None
        if not isinstance(node, Scalar) or not isinstance(node.value, str):
            # YAML 1.1 reads `yes`, `2`, `1.10` and `2024-01-01` as non-strings; quoting is the fix.
            hint = "; quote it" if isinstance(node, Scalar) and node.value is not None else ""
            self._bad(node, path, f"must be a string, got {describe(node)}{hint}")
            return None
        if not pattern.fullmatch(node.value):
            self._bad(node, path, f"{rule}, got {node.value!r}")
            return None
        return node.value

    def _name(self, node: Node | None, path: str, *, default: str | None = None) -> str | None:
        name = self._string(node, path, default=default, pattern=NAME_RE, rule=f"must be {NAME_RULE}")
        if node is not None and name is not None and len(name) > MAX_NAME_LENGTH:
            self._bad(node, path, f"must be at most {MAX_NAME_LENGTH} characters long")
            return None
        return name

    def _integer(self, node: Node | None, path: str, *, default: int | None = None, low: int,
                 high: int | None = None) -> int | None:
        if node is None:
            return default
        if isinstance(node, Broken):
            return None
        value = node.value if isinstance(node, Scalar) else None
        # bool is an int in Python, but `weight: yes` is certainly a mistake.
        if (isinstance(value, int) and not isinstance(value, bool) and value >= low
                and (high is None or value <= high)):
            return value
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        self._bad(node, path, f"must be an integer {bound}, got {describe(node)}")
        return None

    def _number(self, node: Node | None, path: str, *, default: float | None, low: float,
                high: float) -> float | None:
        if node is None:
            return default
        if isinstance(node, Broken):
            return None
        value = node.value if isinstance(node, Scalar) else None
        # bool is an int in Python, but `penalty: yes` is certainly a mistake; NaN and inf fail the bounds.
        if (isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e300
                and low <= float(value) <= high):
            return float(value)
        self._bad(node, path, f"must be a number from {low:g} to {high:g}, got {describe(node)}")
        return None

    def _boolean(self, node: Node | None, path: str, *, default: bool | None = None) -> bool | None:
        if node is None:
            return default
        if isinstance(node, Scalar) and isinstance(node.value, bool):
            return node.value
        if not isinstance(node, Broken):
            self._bad(node, path, f"must be true or false, got {describe(node)}")
        return None

    def _duration(self, node: Node | None, path: str, *, default: float | None = None,
                  max_s: float) -> float | None:
        if node is None:
            return default
        if isinstance(node, Broken):
            return None
        value = node.value if isinstance(node, Scalar) else None
        seconds: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            # An integer too large for a float (from JSON) is simply out of range.
            seconds = float(value) if abs(value) < 1e300 else math.inf
        elif isinstance(value, str) and (match := DURATION_RE.fullmatch(value.strip())):
            seconds = float(match.group(1)) * DURATION_UNITS_S[match.group(2)]
        if seconds is None:
            self._bad(node, path, "must be a duration such as '250ms', '1s', '1.5s' or a number of seconds, "
                                  f"got {describe(node)}")
            return None
        if not (math.isfinite(seconds) and 0 < seconds <= max_s):
            self._bad(node, path, f"must be more than 0 and at most {max_s:g}s, got {describe(node)}")
            return None
        return seconds

    def _choice(self, node: Node | None, path: str, *, default: _T, choices: Mapping[str, _T]) -> _T | None:
        text = self._string(node, path)
        if node is None:
            return default
        if text is None:
            return None
        if text not in choices:
            names = list(choices)
            self._bad(node, path, f"must be one of {', '.join(names)}; got {text!r}{suggest(text, names)}")
            return None
        return choices[text]

    def _pairs(self, node: Node | None, path: str, *, what: str,
               value_pattern: re.Pattern[str], value_rule: str) -> tuple[tuple[str, str], ...] | None:
        if node is None:
            return ()
        if isinstance(node, Broken):
            return None
        if not isinstance(node, Map):
            self._bad(node, path, f"{what} must be a mapping of strings, got {describe(node)}")
            return None
        mark = self._mark
        pairs: list[tuple[str, str]] = []
        for entry in node.entries:
            entry_path = join(path, entry.key)
            if not PAIR_KEY_RE.fullmatch(entry.key):
                self._report.add(entry.key_pos, entry_path, f"keys {PAIR_KEY_RULE}")
            value = self._string(entry.value, entry_path, pattern=value_pattern, rule=value_rule)
            if value is not None:
                pairs.append((entry.key, value))
        return tuple(pairs) if self._mark == mark else None

    def _ip(self, node: Node | None, path: str, *, default: str | None = None) -> str | None:
        text = self._string(node, path, default=default)
        if node is None or text is None:
            return text
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            self._bad(node, path, f"must be an IP address such as 0.0.0.0 or ::, got {text!r}")
            return None

    # --- declared fields (fields.py) ------------------------------------------------------------------------

    def _check(self, field: Declared, node: Node | None, path: str) -> object:
        """The value of one declared key, checked by its kind; the declared default when absent."""
        kind = field.spec.kind
        default = None if field.default is MISSING else field.default
        if isinstance(kind, Duration):
            return self._duration(node, path, default=_float_or_none(default), max_s=kind.max_s)
        if isinstance(kind, Integer):
            return self._integer(node, path, default=_int_or_none(default), low=kind.low, high=kind.high)
        if isinstance(kind, Number):
            return self._number(node, path, default=_float_or_none(default), low=kind.low, high=kind.high)
        if isinstance(kind, Choice):
            return self._choice(node, path, default=default, choices=kind.choices)
        if isinstance(kind, Boolean):
            return self._boolean(node, path, default=default if isinstance(default, bool) else None)
        if isinstance(kind, Text):
            return self._string(node, path, default=_str_or_none(default), pattern=kind.pattern,
                                rule=kind.rule)
        if isinstance(kind, Name):
            return self._name(node, path, default=_str_or_none(default))
        if isinstance(kind, IpAddress):
            return self._ip(node, path, default=_str_or_none(default))
        if isinstance(kind, Pairs):
            return self._pairs(node, path, what=field.key, value_pattern=kind.value_pattern,
                               value_rule=kind.value_rule)
        if isinstance(kind, Nested) and not kind.shape.group:
            return self._nested(kind.shape, node, path, what=field.key, default=default)
        if isinstance(kind, ListOf) and not isinstance(kind.item, Nested | ListOf | CountOr):
            return self._scalars(field, kind, node, path)
        if isinstance(kind, ListOf) and isinstance(kind.item, Nested) and not kind.item.shape.group:
            return self._mappings(field, kind, kind.item.shape, node, path)
        raise TypeError(f"{field.key!r} ({type(kind).__name__}) needs a handler of its own")

    def _nested(self, shape: Shape[_T], node: Node | None, path: str, *, what: str,
                default: object) -> object:
        """A mapping of `shape`'s declared keys, built when none of them has a problem; `default` when absent
        (None for `outlier_detection`: off, and `{}` is on with every default)."""
        if node is None:
            return default
        mark = self._mark
        f = self._mapping(node, path, what=what, keys=shape.keys(), required=shape.required())
        if f is None:
            return None
        if shape.one_of and sum(key in f for key in shape.one_of) != 1:
            names = [repr(key) for key in shape.one_of]
            self._bad(node, path, f"{what} needs exactly one of {', '.join(names[:-1])} or {names[-1]}")
        values = self._fields(f, shape)
        return shape.build(values) if self._complete(mark, shape, values) else None

    def _scalars(self, field: Declared, kind: ListOf, node: Node | None,
                 path: str) -> tuple[object, ...] | None:
        """A list of scalars of one kind (`retry_on`, `retriable_status_codes`); a "set" has no repeats."""
        if node is None:
            return field.default if isinstance(field.default, tuple) else ()
        # "An Envoy retry condition." -> "must list at least one Envoy retry condition".
        what = re.sub(r"^(an?|the) ", "", kind.item_doc.rstrip("."), flags=re.I) or "item"
        items = self._list(node, path, nonempty=what if kind.nonempty else None)
        if items is None:
            return None
        mark = self._mark
        item_field = Declared(FieldSpec(field.key, kind.item, kind.item_doc), None)
        values: list[object] = []
        for i, item in enumerate(items):
            value = self._check(item_field, item, f"{path}[{i}]")
            if value is None:
                continue
            if kind.list_type == "set" and value in values:
                self._bad(item, f"{path}[{i}]", f"duplicate {describe(item)}")
                continue
            values.append(value)
        return tuple(values) if self._mark == mark else None

    def _mappings(self, field: Declared, kind: ListOf, shape: Shape[_T], node: Node | None,
                  path: str) -> tuple[object, ...] | None:
        """A list of mappings of one declared shape (`locality.weights`), each checked as `_nested` does;
        None when any item has a problem, so a half-read list is never used."""
        if node is None:
            return field.default if isinstance(field.default, tuple) else ()
        items = self._list(node, path, nonempty=f"{field.key} entry" if kind.nonempty else None)
        if items is None:
            return None
        mark = self._mark
        values = [self._nested(shape, item, f"{path}[{i}]", what=f"a {field.key} entry", default=None)
                  for i, item in enumerate(items)]
        return tuple(values) if self._mark == mark else None

    def _fields(self, f: Fields, shape: Shape[_T], custom: Mapping[str, Handler] | None = None, *,
                into: dict[str, object] | None = None) -> dict[str, object]:
        """Every declared key of `shape` in document order, checked by its kind or by `custom[key]`, by
        attribute. A key without an attribute keeps its value under the key, except a group (`match`),
        whose handler returns the values of its own fields, by attribute, to merge. The values go `into` a
        given dict as they are checked, so a handler can use those of the keys before its own."""
        values: dict[str, object] = {} if into is None else into
        for field in shape.fields:
            node, path = f.at(field.key)
            handler = (custom or {}).get(field.key)
            value = handler(node, path) if handler is not None else self._check(field, node, path)
            if field.attr is not None:
                values[field.attr] = value
            elif isinstance(field.spec.kind, Nested) and field.spec.kind.shape.group:
                values.update(value if isinstance(value, dict) else {})
            else:
                values[field.key] = value
        return values

    def _complete(self, mark: int, shape: Shape[_T], values: Mapping[str, object]) -> bool:
        """No problem was reported since `mark`, and every attribute without a None default has a value."""
        return self._mark == mark and all(values.get(attr) is not None for attr in shape.needed())


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
