"""The field declarations (xds/policy/fields.py): complete, consistent, and enough on their own.

The last test is issue 8's point: a field declared once, with nothing else written for it, is checked by
the loader with located messages, published in both schemas and given a row in the reference tables.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from xds.policy.catalog_fields import ENDPOINT, LOCALITY
from xds.policy.checks import Checker
from xds.policy.document import Report, compose
from xds.policy.errors import PolicyError
from xds.policy.fields import Duration, Integer, ListOf, Nested, Shape, declare, erase, shape
from xds.policy.load import parse_document, policy_from_data
from xds.policy.reference import render_table
from xds.policy.schema import (
    BACKEND,
    COOKIE,
    DOCUMENT,
    FAULT,
    FAULT_ABORT,
    FAULT_DELAY,
    HASH,
    HEADER,
    LISTENER,
    RETRY,
    ROUTE,
    ROUTE_MATCH,
    ROUTE_TIMEOUTS,
    SERVICE,
)
from xds.policy.schemagen import json_schema, object_schema

SHAPES: list[Shape[Any]] = [DOCUMENT, SERVICE, LISTENER, ROUTE, ROUTE_MATCH, ROUTE_TIMEOUTS, HEADER, BACKEND,
                            ENDPOINT, LOCALITY, RETRY, HASH, COOKIE, FAULT, FAULT_DELAY, FAULT_ABORT]
# Attributes that no document key fills: where the policy came from, and what the catalog adds itself.
UNDECLARED = {("Policy", "origin"), ("Endpoint", "host"), ("Endpoint", "port"), ("Endpoint", "source"),
              ("Endpoint", "priority")}


def test_every_attribute_is_declared_once() -> None:
    by_class: dict[type, list[str]] = {}
    for s in SHAPES:
        by_class.setdefault(s.cls, []).extend(f.attr for f in s.fields if f.attr is not None)
    for cls, attrs in by_class.items():
        assert len(attrs) == len(set(attrs)), cls
        expected = {f.name for f in dataclasses.fields(cls) if f.init}
        assert set(attrs) == expected - {a for c, a in UNDECLARED if c == cls.__name__}, cls


def test_keys_are_unique_within_a_mapping() -> None:
    for s in SHAPES:
        assert len(s.keys()) == len(set(s.keys())), s.cls


def _fill_defaults(schema: dict[str, Any], document: Any) -> Any:
    """`document` with every default the JSON Schema publishes written out."""
    if isinstance(document, dict) and "properties" in schema:
        out = dict(document)
        for key, sub in schema["properties"].items():
            if key in out:
                out[key] = _fill_defaults(sub, out[key])
            elif "default" in sub:
                out[key] = sub["default"]
        return out
    if isinstance(document, list) and "items" in schema:
        return [_fill_defaults(schema["items"], item) for item in document]
    return document


def test_published_defaults_are_the_loaders_defaults() -> None:
    from tests.unit.test_policy_openapi import EVERY_KEY

    document = {"services": [{"name": "a"}], "listeners": [
        {"name": "l", "port": 80, "routes": [{"backends": [{"service": "a"}]}]}]}
    for doc in (document, EVERY_KEY):
        filled = _fill_defaults(json_schema(file_format=False), doc)
        assert policy_from_data(filled, where="filled") == policy_from_data(doc, where="plain")
    catalog = {"services": [{"name": "a", "endpoints": [{"address": "10.0.0.1:80"}]}]}
    filled = _fill_defaults(json_schema(), catalog)
    assert filled["services"][0]["endpoints"][0]["health"] == "healthy"
    assert parse_document(yaml.safe_dump(filled), where="f") == parse_document(yaml.safe_dump(catalog),
                                                                               where="f")


# --- issue 8, the worked example: one declaration and nothing else -------------------------------------


@dataclass(frozen=True, slots=True)
class _Upstream:
    name: str = field(metadata=declare("name", Integer(0), "Required for the test.", required=True))
    idle_timeout_s: float | None = field(default=None, metadata=declare(
        "idle_timeout", Duration(3600.0), "Close an upstream connection idle this long.",
        shown_default="Envoy's (1 h)"))


_UPSTREAM = shape(_Upstream, "A made-up mapping with one new field.")


def _check(text: str) -> tuple[dict[str, object] | None, list[str]]:
    report = Report("new.yaml")
    root = compose(text, report)
    assert root is not None
    checker = Checker(report)
    fields = checker._mapping(root, "", what="an upstream", keys=_UPSTREAM.keys(),
                              required=_UPSTREAM.required())
    assert fields is not None
    values = checker._fields(fields, _UPSTREAM)
    return values, [str(p) for p in report.problems]


def test_a_new_field_needs_only_its_declaration() -> None:
    assert _check("name: 1\nidle_timeout: 90s\n") == ({"name": 1, "idle_timeout_s": 90.0}, [])
    assert _check("name: 1\n")[0] == {"name": 1, "idle_timeout_s": None}
    assert _check("name: 1\nidle_timeout: 2h\n")[1] == [
        "new.yaml:2:15: idle_timeout: must be a duration such as '250ms', '1s', '1.5s' or a number of "
        "seconds, got '2h'"]
    assert _check("name: 1\nidel_timeout: 9s\n")[1] == [
        "new.yaml:2:1: idel_timeout: unknown key 'idel_timeout' in an upstream; did you mean 'idle_timeout'?"]
    for dialect in ("openapi", "json-schema"):
        published = object_schema(_UPSTREAM, dialect, file_format=False)["properties"]["idle_timeout"]
        assert published["description"].startswith("Close an upstream connection idle this long.")
    assert "| `idle_timeout` | Envoy's (1 h) | Close an upstream connection idle this long. |" in (
        render_table(_UPSTREAM))


def test_nested_declared_mappings_compose() -> None:
    outer = shape(_Outer, "Holds upstreams.")
    schema = object_schema(outer, "json-schema", file_format=True)
    assert schema["properties"]["upstreams"]["items"]["properties"]["idle_timeout"]["anyOf"]


@dataclass(frozen=True, slots=True)
class _Outer:
    upstreams: tuple[_Upstream, ...] = field(default=(), metadata=declare(
        "upstreams", ListOf(Nested(erase(_UPSTREAM))), "Upstreams."))


def test_invalid_documents_still_raise() -> None:
    with pytest.raises(PolicyError):
        policy_from_data({"services": [{"name": "a", "connect_timeout": 0}]}, where="x")
