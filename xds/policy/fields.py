"""One declaration per policy field: its YAML key, kind (type and bounds), default and one-line doc.

Before issue 8, adding one field meant editing the dataclass, the walker, the rules, the OpenAPI generator
and the tables of docs/config.md by hand, kept in agreement only by tests. Now a field is declared once,
next to its attribute, as dataclass field metadata (`declare`); its default is the dataclass default, so
that is written once too. From the declarations:

- the loader (`walker.py`) checks every field whose kind it knows generically, in declaration order;
- `openapi.py` derives the TrafficPolicy CRD schema and the JSON Schema for editors;
- `reference.py` renders the reference tables of docs/config.md.

A `Shape` is the declared fields of one YAML mapping, in document order. Keys without an attribute of their
own (`present` of a header match, `endpoints` of a service) and classes that live below the policy layer
(`xds.model`'s Endpoint) are declared as explicit `FieldSpec` rows of a shape instead: the same declaration,
only not attached to a dataclass field. Rules across fields (weights summing to 100, exactly one of `exact`
and `present`, listeners sharing a port) are not declarations: they stay named functions in `walker.py`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeAlias, TypeVar, cast

from xds.policy.rules import TEXT_RE, TEXT_RULE

# --- kinds: what a value is, with its bounds -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Duration:
    """'250ms', '1.5s', '2m' or a number of seconds, more than 0 and at most `max_s`; read as seconds."""

    max_s: float


@dataclass(frozen=True, slots=True)
class Integer:
    low: int
    high: int | None = None


@dataclass(frozen=True, slots=True)
class Number:
    """A real number from `low` to `high`, both included (a multiplier such as issue 10's
    `error_utilization_penalty`)."""

    low: float
    high: float


@dataclass(frozen=True, slots=True, eq=False)
class Choice:
    """One of a few words, each standing for a value (`http2` for True)."""

    choices: Mapping[str, object]

    def word(self, value: object) -> str | None:
        return next((w for w, v in self.choices.items() if v == value), None)


@dataclass(frozen=True, slots=True)
class Boolean:
    only_true: bool = False  # `present: true`: false is refused with a hint (walker.py)


@dataclass(frozen=True, slots=True, eq=False)
class Text:
    pattern: re.Pattern[str] = TEXT_RE
    rule: str = TEXT_RULE
    # The pattern published in schemas, when it differs from the one checked (a case-insensitive spelling).
    schema_pattern: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class Name:
    """A name of a service, listener or route (rules.NAME_RE, at most MAX_NAME_LENGTH characters)."""


@dataclass(frozen=True, slots=True)
class IpAddress:
    """An IPv4 or IPv6 address literal, without brackets."""


@dataclass(frozen=True, slots=True)
class HostPort:
    """`host:port` with an IP host (rules.parse_host_port)."""


@dataclass(frozen=True, slots=True, eq=False)
class Pairs:
    """A mapping of strings to strings (metadata, subsets); keys follow rules.PAIR_KEY_RE."""

    value_pattern: re.Pattern[str]
    value_rule: str
    value_doc: str


@dataclass(frozen=True, slots=True)
class Exactly:
    """This one integer and no other (the format version)."""

    value: int


@dataclass(frozen=True, slots=True)
class ListOf:
    item: Kind
    item_doc: str = ""  # for lists of scalars: what one item is
    nonempty: bool = False
    # Kubernetes list semantics: "set" (no duplicate items), "map" (items unique by `map_keys`).
    list_type: Literal["", "set", "map"] = ""
    map_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Nested:
    """A mapping of its own, with the fields of `shape`."""

    shape: Shape[object]


@dataclass(frozen=True, slots=True)
class CountOr:
    """A bounded integer, or a mapping of `shape` saying more (`retries: 2` or `retries: {num_retries: 2,
    ...}`, issue 8). The walker reads it with a handler of its own."""

    count: Integer
    shape: Shape[object]


Kind: TypeAlias = ("Duration | Integer | Number | Choice | Boolean | Text | Name | IpAddress | HostPort | "
                   "Pairs | Exactly | ListOf | Nested | CountOr")

# --- the declaration ----------------------------------------------------------------------------------------

_META = "xds.policy.field"


class _Missing:
    """No default: the key is required, or its default depends on the document (`route-<index>`)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


@dataclass(frozen=True, slots=True)
class FieldSpec:
    key: str
    kind: Kind
    doc: str  # one line; the Meaning column of docs/config.md and the description in schemas
    required: bool = False
    # How docs/config.md shows the default when the value itself would not say it ("every group").
    shown_default: str | None = None
    # The mapping within the object the key is written in: "match" for a route's `match.prefix`.
    group: str = ""
    # Only in the file format (docs/config.md); refused in a policy-only document, absent from the CRD.
    file_only: bool = False
    refused_because: str = ""  # the message for a file_only key in a policy-only document


def declare(key: str, kind: Kind, doc: str, *, required: bool = False, shown_default: str | None = None,
            group: str = "") -> dict[str, FieldSpec]:
    """The metadata of a dataclass field: `x: int = field(default=1, metadata=declare("x", ...))`."""
    return {_META: FieldSpec(key, kind, doc, required=required, shown_default=shown_default, group=group)}


@dataclass(frozen=True, slots=True)
class Declared:
    """A declaration together with the attribute it fills and that attribute's default."""

    spec: FieldSpec
    attr: str | None  # None: the key fills no attribute of its own (a walker method uses its value)
    default: object = MISSING

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def optional(self) -> bool:
        """None is a valid value (`timeout` absent: Envoy's default)."""
        return self.default is None


_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Shape(Generic[_T]):
    """The declared keys of one YAML mapping, in document order, and the class they build."""

    cls: type[_T]
    doc: str
    fields: tuple[Declared, ...]
    # Keys of which exactly one must be given (published as `oneOf`; the walker checks it by name).
    one_of: tuple[str, ...] = ()
    group: str = ""  # set on the shape of a group such as a route's `match`
    # (key, other, word): `key` is required unless `other` is `word` (a listener's `port` unless `kind:
    # grpc`, issue 11); published as anyOf, checked by the walker.
    required_unless: tuple[tuple[str, str, str], ...] = ()

    def keys(self, *, file_format: bool = True) -> tuple[str, ...]:
        return tuple(f.key for f in self.fields if file_format or not f.spec.file_only)

    def required(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.fields if f.spec.required)

    def field(self, key: str) -> Declared:
        return next(f for f in self.fields if f.key == key)

    def needed(self) -> tuple[str, ...]:
        """Attributes that must not be None for the object to be built."""
        return tuple(f.attr for f in self.fields if f.attr is not None and not f.optional)

    def build(self, values: Mapping[str, object]) -> _T:
        """An instance from checked values by attribute. The kind of each declaration decides the type of the
        value the walker's check returns (checks.py `_check`); tests/unit/test_policy_fields.py checks that
        every attribute is declared and that the published defaults are the ones the loader uses."""
        return cast(Callable[..., _T], self.cls)(**values)


def _default(f: dataclasses.Field[object]) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING


def shape(cls: type[_T], doc: str, *, group: str = "", groups: Mapping[str, Shape[object]] | None = None,
          extra: Sequence[tuple[str | None, FieldSpec]] = (), one_of: tuple[str, ...] = (),
          required_unless: tuple[tuple[str, str, str], ...] = ()) -> Shape[_T]:
    """The shape of the declared fields of dataclass `cls` that are written in `group` ("" for the mapping
    itself), in attribute order. A nested group (a route's `match`) takes the place of its first field, as
    a Nested field of `groups[name]`. `extra` adds keys without attributes, each after the key named (""
    for the start, None for the end, so that fields added later still come before it)."""
    fields: list[Declared] = []
    seen_groups: set[str] = set()
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        spec = f.metadata.get(_META)
        if not isinstance(spec, FieldSpec):
            continue
        if spec.group == group:
            fields.append(Declared(spec, f.name, _default(f)))
        elif not group and spec.group not in seen_groups:
            seen_groups.add(spec.group)
            nested = (groups or {})[spec.group]
            fields.append(Declared(FieldSpec(spec.group, Nested(nested), nested.doc), None))
    for after, spec in extra:
        if after is None:
            index = len(fields)
        else:
            index = next(i + 1 for i, f in enumerate(fields) if f.key == after) if after else 0
        fields.insert(index, Declared(spec, None))
    return Shape(cls, doc, tuple(fields), one_of=one_of, group=group, required_unless=required_unless)


def table(cls: type[_T], doc: str, rows: Sequence[tuple[str | None, FieldSpec]], *,
          one_of: tuple[str, ...] = ()) -> Shape[_T]:
    """The shape of a class that cannot carry declarations itself (it lives below the policy layer): rows
    of (attribute or None, declaration); defaults are still read from the class."""
    defaults = {f.name: _default(f) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return Shape(cls, doc, tuple(Declared(spec, attr, defaults[attr] if attr else MISSING)
                                 for attr, spec in rows), one_of=one_of)


def erase(s: Shape[_T]) -> Shape[object]:
    """`s` as a shape of some object, for nesting (Shape is invariant in its class)."""
    return cast(Shape[object], s)
