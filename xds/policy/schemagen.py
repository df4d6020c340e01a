"""Schemas derived from the field declarations: OpenAPI v3 for the TrafficPolicy CRD, JSON Schema for editors.

Both are generated from the same declarations the loader checks (schema.py, catalog_fields.py; issue 8), so
a new field appears in both without touching this module. The loader stays the judge of every document:
a schema may be more permissive than the loader where its language cannot say a rule, never stricter
(tests/unit/test_policy_openapi.py and test_policy_json_schema.py check both directions).

The two dialects differ where Kubernetes restricts OpenAPI (openapi.py's module doc has the details):

- A CRD schema is structural: no `additionalProperties: false` (unknown keys are pruned, and refused by
  `kubectl apply`'s strict field validation), and a duration, "number or string", is an untyped node with
  `x-kubernetes-preserve-unknown-fields`. JSON Schema says both directly (`additionalProperties: false`,
  `anyOf`), so an editor flags a misspelt key and completes the known ones.
- Kubernetes' list types (`x-kubernetes-list-type: set`, `map`) become `uniqueItems` in JSON Schema where
  they can (a set); uniqueness by key is left to the loader.
- Subset and metadata keys: JSON Schema checks them (`propertyNames`); OpenAPI cannot.
- The CRD publishes defaults only for words and flags, as it did before issue 8, since the API server
  writes a published default into the stored object; JSON Schema publishes every default (editors show
  them).
"""

from __future__ import annotations

import enum
import re
from typing import Any, Literal, TypeVar

from xds.policy import rules
from xds.policy.fields import (
    MISSING,
    Boolean,
    Choice,
    CountOr,
    Declared,
    Duration,
    Exactly,
    HostPort,
    Integer,
    IpAddress,
    Kind,
    ListOf,
    Name,
    Number,
    Pairs,
    Shape,
    Text,
)
from xds.policy.schema import DOCUMENT

# A schema is JSON data: its values are of many types, read only by validators and editors.
Schema = dict[str, Any]
Dialect = Literal["openapi", "json-schema"]

_T = TypeVar("_T")

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Listener addresses are IP literals; no schema format means "IPv4 or IPv6", so this only rules out what can
# never be one (the loader checks the rest). A scope id is allowed as Python's ipaddress does.
_IP_CHARS_RE = re.compile(r"[0-9A-Fa-f.:]+(%[^\s%]+)?")
# An endpoint address: an IPv4 address or a host name (issue 13), or IPv6 in brackets, and a port;
# parse_host_port checks the rest (octet ranges, label lengths).
_HOST_PORT_RE = re.compile(
    r"(\[[0-9A-Fa-f.:]+(%[^\s%\]]+)?\]|" + rules.HOST_NAME_RE.pattern + r"):[0-9]{1,5}")
_DURATION_DOC = " A duration: '250ms', '1.5s', '2m', or a number of seconds."


def anchored(pattern: re.Pattern[str]) -> str:
    """Schema patterns are searched (unanchored), where the loader matches the whole value."""
    return f"^(?:{pattern.pattern})$"


def _string(description: str, *, pattern: re.Pattern[str] | None = rules.TEXT_RE,
            max_length: int | None = None, enum_: list[str] | None = None) -> Schema:
    schema: Schema = {"type": "string", "description": description}
    if enum_ is not None:
        schema["enum"] = enum_
    elif pattern is not None:
        schema["pattern"] = anchored(pattern)
    if max_length is not None:
        schema["maxLength"] = max_length
    return schema


def _duration(description: str, max_s: float, dialect: Dialect) -> Schema:
    pattern = "^\\s*(?:" + rules.DURATION_RE.pattern + ")\\s*$"
    if dialect == "json-schema":
        return {"description": description + _DURATION_DOC, "anyOf": [
            {"type": "number", "exclusiveMinimum": 0, "maximum": max_s},
            {"type": "string", "pattern": pattern}]}
    # "Number or string" cannot be typed in a structural schema, so the node is left untyped: `pattern`
    # applies to strings only and the bounds to numbers only (JSON Schema validation semantics).
    return {"description": description + _DURATION_DOC, "x-kubernetes-preserve-unknown-fields": True,
            "pattern": pattern, "minimum": 0, "exclusiveMinimum": True, "maximum": max_s}


def _array(items: Schema, description: str, kind: ListOf, dialect: Dialect) -> Schema:
    schema: Schema = {"type": "array", "description": description, "items": items}
    if kind.nonempty:
        schema["minItems"] = 1
    if dialect == "openapi" and kind.list_type:
        schema["x-kubernetes-list-type"] = kind.list_type
        if kind.map_keys:
            schema["x-kubernetes-list-map-keys"] = list(kind.map_keys)
    elif kind.list_type == "set":
        schema["uniqueItems"] = True
    return schema


def _kind(kind: Kind, doc: str, dialect: Dialect, file_format: bool) -> Schema:
    if isinstance(kind, Duration):
        return _duration(doc, kind.max_s, dialect)
    if isinstance(kind, Integer):
        schema: Schema = {"type": "integer", "description": doc, "minimum": kind.low}
        if kind.high is not None:
            schema["maximum"] = kind.high
        return schema
    if isinstance(kind, Number):
        return {"type": "number", "description": doc, "minimum": kind.low, "maximum": kind.high}
    if isinstance(kind, Choice):
        return _string(doc, enum_=sorted(kind.choices))
    if isinstance(kind, Boolean):
        return {"type": "boolean", "description": doc, **({"enum": [True]} if kind.only_true else {})}
    if isinstance(kind, Text):
        return _string(doc, pattern=kind.schema_pattern or kind.pattern)
    if isinstance(kind, Name):
        return _string(doc, pattern=rules.NAME_RE, max_length=rules.MAX_NAME_LENGTH)
    if isinstance(kind, IpAddress):
        return _string(doc, pattern=_IP_CHARS_RE)
    if isinstance(kind, HostPort):
        return _string(doc, pattern=_HOST_PORT_RE)
    if isinstance(kind, Pairs):
        schema = {"type": "object", "description": doc,
                  "additionalProperties": _string(kind.value_doc, pattern=kind.value_pattern)}
        if dialect == "json-schema":
            schema["propertyNames"] = {"pattern": anchored(rules.PAIR_KEY_RE)}
        return schema
    if isinstance(kind, Exactly):
        return {"type": "integer", "description": doc, "enum": [kind.value]}
    if isinstance(kind, CountOr):
        return _count_or(kind, doc, dialect, file_format)
    if isinstance(kind, ListOf):
        return _array(_kind(kind.item, kind.item_doc, dialect, file_format), doc, kind, dialect)
    return object_schema(kind.shape, dialect, file_format=file_format, description=doc)


def _count_or(kind: CountOr, doc: str, dialect: Dialect, file_format: bool) -> Schema:
    count: Schema = {"type": "integer", "minimum": kind.count.low}
    if kind.count.high is not None:
        count["maximum"] = kind.count.high
    if dialect == "json-schema":
        return {"description": doc, "anyOf": [
            count, object_schema(kind.shape, dialect, file_format=file_format)]}
    # "Integer or mapping" cannot be typed in a structural schema either (see _duration): the bounds apply to
    # integers only, and the mapping form is left to the loader, which checks it when the policy is read.
    return {"description": doc, "x-kubernetes-preserve-unknown-fields": True,
            **{k: v for k, v in count.items() if k != "type"}}


def _default(field: Declared, dialect: Dialect) -> object:
    """The default as the document would spell it, or MISSING when none is published."""
    kind, value = field.spec.kind, field.default
    if value is MISSING or value is None:
        return MISSING
    if isinstance(kind, Choice):
        return kind.word(value)
    if dialect == "openapi":
        return value if isinstance(kind, Text | IpAddress | Boolean) else MISSING
    if isinstance(kind, Duration | Integer | Text | IpAddress | Boolean):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(kind, ListOf) and isinstance(value, tuple) and value:
        return list(value)
    return MISSING


def field_schema(field: Declared, dialect: Dialect, *, file_format: bool) -> Schema:
    kind = field.spec.kind
    schema = _kind(kind, field.spec.doc, dialect, file_format)
    default = _default(field, dialect)
    if default is not MISSING:
        schema["default"] = default
    return schema


def object_schema(shape: Shape[_T], dialect: Dialect, *, file_format: bool, description: str = ""
                  ) -> Schema:
    """The schema of a mapping of `shape`'s keys; `file_format` keeps the keys only files accept."""
    fields = [f for f in shape.fields if file_format or not f.spec.file_only]
    schema: Schema = {"type": "object", "description": description or shape.doc,
                      "properties": {f.key: field_schema(f, dialect, file_format=file_format)
                                     for f in fields}}
    required = [f.key for f in fields if f.spec.required]
    if required:
        schema["required"] = required
    if dialect == "json-schema":
        schema["additionalProperties"] = False
    if shape.one_of:
        schema["oneOf"] = [{"required": [key]} for key in shape.one_of]
    for key, other, word in shape.required_unless:
        # Only `required` and `enum` inside the junctor, which keeps the CRD schema structural.
        schema.setdefault("allOf", []).append({"anyOf": [
            {"required": [key]}, {"required": [other], "properties": {other: {"enum": [word]}}}]})
    return schema


def json_schema(*, file_format: bool = True) -> Schema:
    """The JSON Schema (2020-12) of a catalog file (`file_format`) or of a policy-only document, for editors
    and YAML language servers: `# yaml-language-server: $schema=<file>` at the top of a catalog file."""
    what = "catalog and policy file" if file_format else "policy-only document"
    schema = object_schema(DOCUMENT, "json-schema", file_format=file_format,
                           description=f"An xds {what} (docs/config.md).")
    return {"$schema": JSON_SCHEMA_DIALECT, "title": f"xds {what}", **schema}
