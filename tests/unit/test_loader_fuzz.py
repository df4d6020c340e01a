"""Fuzzing the loader (issue 7): whatever the input, a valid document or located, printable problems.

Two kinds of input. Structural: documents built from the schema's own keys (and a few unknown ones) with
values of every kind (strings with control characters, huge integers, NaN, nested junk), loaded as data
(`policy_from_data`, as a Kubernetes object or Consul KV JSON would be) and as YAML text (`parse_document`,
`parse_policy`). Textual: byte flips, insertions, deletions and truncations of valid catalogs (the example
in examples/ and the suite's fixtures), which reach the YAML reader, the decoder and the walk.

The property is the same for all: the loader returns, or raises PolicyError whose every problem names where
it is (the file, and the line when the input was text) and renders as one line without any raw control
character. Any other exception is a bug in the loader. Example counts are bounded so the file runs in a few
seconds; hypothesis keeps the failures it finds in its database and replays them first.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xds.policy.errors import PolicyError
from xds.policy.load import decode_document, parse_document, parse_policy, policy_from_data

from .test_file_source import VALID as FILE_SOURCE_FIXTURE

ROOT = Path(__file__).resolve().parents[2]
WHERE = "fuzz/catalog.yaml"

# Every field of the schema, once; together with the example and the file source's fixture, the seeds of
# the textual fuzzing.
EVERY_FIELD = """\
version: 1
services:
  - name: web
    lb_policy: ring_hash
    connect_timeout: 1.5s
    protocol: http2
    endpoints:
      - address: "[2001:db8::1]:8081"
        weight: 3
        health: draining
        locality: {region: eu-west, zone: eu-west-1a, sub_zone: rack-1}
        metadata: {version: v1, track: stable}
  - name: api
    endpoints: []
listeners:
  - name: ingress
    address: "::"
    port: 10000
    groups: [frontend, edge]
    domains: ["*.example.com", "example.com:10000"]
    routes:
      - name: canary
        match:
          prefix: /app
          headers:
            - {name: X-Canary, exact: "yes"}
            - {name: x-debug, present: true, invert: true}
        timeout: 250ms
        retries: 2
        backends:
          - {service: web, subset: {version: v1, track: stable}, weight: 90}
          - {service: web, subset: {version: v2}, weight: 10}
"""
SEEDS = [
    *(p.read_bytes() for p in sorted((ROOT / "examples").glob("*.yaml"))),
    EVERY_FIELD.encode(),
    FILE_SOURCE_FIXTURE.encode(),
]

# Characters a problem must never print raw: C0, DEL, C1, the line and paragraph separators, the
# bidirectional controls and lone surrogates. Checked here by Unicode category, independently of how the
# loader escapes them.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _raw_controls(text: str) -> list[str]:
    return [c for c in text
            if unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs") or c in _BIDI]


def check_loader(load: Callable[[], object], *, lines: bool) -> None:
    """The property: `load` returns, or raises PolicyError with located, printable problems."""
    try:
        load()
    except PolicyError as e:
        error = e
    else:
        return
    for problem in error.problems:
        assert problem.where == WHERE, problem
        if lines:
            assert problem.line is not None and problem.line >= 1, problem
            assert problem.column is None or problem.column >= 1, problem
        rendered = str(problem)
        assert rendered.startswith(WHERE + (f":{problem.line}" if problem.line is not None else "")), rendered
        assert not _raw_controls(rendered), rendered
    assert len(str(error).splitlines()) == len(error.problems)  # one line per problem, never more


# --- structural: documents made of the schema's keys ------------------------------------------------------

_NASTY_TEXT = st.sampled_from([
    "", " ", "\x1b[31mred\x1b[0m", "a\x00b", "line\nbreak", "cr\rlf", "\x7f", "\x85", "\x9b2J", "\u2028",
    "\u202eevil", "\ud800", "\ufeff", "é", "☃", "-" * 300, "web", "127.0.0.1:8080", "[::1]:80", "1s", "250ms",
    "round_robin", "http2", "healthy", "/", "*", "x-canary", "yes", "~", "null", "0x1f", "1e999", "&a", "*a",
])
_SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, 1, 90, 100, 65535, 65536, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -0.0, 1e300]),
    _NASTY_TEXT, st.text(max_size=12),
)
_JUNK = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.one_of(_NASTY_TEXT, st.text(max_size=6), st.integers(0, 3)), inner, max_size=3),
), max_leaves=8)


def _obj(fields: dict[str, st.SearchStrategy[object]]) -> st.SearchStrategy[dict[object, object]]:
    """A mapping with some of `fields` (each value usually of the right shape, sometimes junk), and now
    and then an unknown key."""
    keys = st.lists(st.sampled_from(sorted(fields)), unique=True)

    def build(chosen: list[str]) -> st.SearchStrategy[dict[object, object]]:
        shaped = st.fixed_dictionaries({k: st.one_of(fields[k], fields[k], _JUNK) for k in chosen})
        extra = st.dictionaries(st.one_of(_NASTY_TEXT, st.sampled_from(["nmae", "<<", "endpoint"])), _JUNK,
                                max_size=1)
        return st.tuples(shaped, extra).map(lambda t: {**t[1], **t[0]})

    return keys.flatmap(build)


def _list_of(item: st.SearchStrategy[object]) -> st.SearchStrategy[list[object]]:
    return st.lists(item, max_size=3)


_NAME = st.sampled_from(["web", "api", "web:80", "Web", "", "a" * 254, "web\x1b"])
_PAIRS = st.dictionaries(st.one_of(st.sampled_from(["version", "zone", "a,b", "k=v"]), _NASTY_TEXT),
                         st.one_of(st.sampled_from(["v1", "v2", ""]), _SCALARS), max_size=2)
_DURATION = st.one_of(st.sampled_from(["250ms", "1s", "1.5s", "1m", "0s", "61s", "1h", " 1s "]),
                      st.floats(), st.integers())
_ENDPOINT = _obj({
    "address": st.sampled_from(["127.0.0.1:8081", "[::1]:8080", "::1:80", "host:80", "1.2.3.4:0",
                                "[1.2.3.4]:1"]),
    "weight": st.integers(-1, 10_001), "health": st.sampled_from(["healthy", "draining", "sick"]),
    "locality": _obj({"region": _NASTY_TEXT, "zone": _NASTY_TEXT, "sub_zone": _NASTY_TEXT}),
    "metadata": _PAIRS,
})
_SERVICE = _obj({
    "name": _NAME, "lb_policy": st.sampled_from(["round_robin", "least_request", "maglev", "fastest"]),
    "connect_timeout": _DURATION, "protocol": st.sampled_from(["http1", "http2", "h3"]),
    "endpoints": _list_of(_ENDPOINT),
})
_HEADER = _obj({"name": st.sampled_from(["x-canary", "X-A", ":path", "bad header"]), "exact": _NASTY_TEXT,
                "present": st.booleans(), "invert": st.booleans()})
_BACKEND = _obj({"service": _NAME, "subset": _PAIRS, "weight": st.integers(-1, 101)})
# Issue 8: the mapping form of `retries`, `timeouts` and `hash_policy`, with their durations and bounds.
_RETRY = _obj({
    "num_retries": st.integers(-1, 11), "per_try_timeout": _DURATION, "backoff_base": _DURATION,
    "backoff_max": _DURATION, "different_host": st.one_of(st.booleans(), _SCALARS),
    "retry_on": _list_of(st.sampled_from(["5xx", "reset", "gateway_error", "retriable-status-codes", ""])),
    "retriable_status_codes": _list_of(st.integers(99, 600)), "host_selection_attempts": st.integers(0, 11),
})
_HASH = _obj({
    "header": st.sampled_from(["x-user", "X-U", "bad header"]),
    "source_ip": st.one_of(st.booleans(), _SCALARS),
    "cookie": _obj({"name": st.sampled_from(["s", "a;b", ""]), "ttl": _DURATION,
                    "path": st.sampled_from(["/", "x", "/a b"])}),
    "query_parameter": st.one_of(st.sampled_from(["u", "a=b"]), _NASTY_TEXT), "terminal": st.booleans(),
})
_ROUTE = _obj({
    "name": _NAME, "match": _obj({"prefix": st.sampled_from(["/", "/api", "api", "/a b"]),
                                  "headers": _list_of(_HEADER)}),
    "timeout": _DURATION, "timeouts": _obj({"request": _DURATION, "idle": _DURATION}),
    "retries": st.one_of(st.integers(-1, 11), _RETRY), "hash_policy": _list_of(_HASH),
    "backends": _list_of(_BACKEND),
})
_LISTENER = _obj({
    "name": _NAME, "address": st.sampled_from(["0.0.0.0", "::", "localhost", "1.2.3"]),
    "port": st.integers(-1, 65536), "groups": _list_of(_NASTY_TEXT),
    "domains": _list_of(st.sampled_from(["*", "*.example.com", "a.*", "a*b", "example.com:80",
                                         "EXAMPLE.com"])),
    "routes": _list_of(_ROUTE),
})
DOCUMENTS = st.one_of(
    _obj({"version": st.sampled_from([1, 2, "1", None]), "services": _list_of(_SERVICE),
          "listeners": _list_of(_LISTENER)}),
    _JUNK,
)


def _as_yaml(data: object) -> str | None:
    try:
        return yaml.safe_dump(data, default_flow_style=None, allow_unicode=True)
    except (yaml.YAMLError, UnicodeEncodeError):
        return None  # not representable as YAML text; the data path still covers it


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_structural_documents_give_a_policy_or_located_problems(data: object) -> None:
    check_loader(lambda: policy_from_data(data, where=WHERE), lines=False)
    text = _as_yaml(data)
    if text is not None:
        check_loader(lambda: parse_document(text, where=WHERE), lines=True)
        check_loader(lambda: parse_policy(text, where=WHERE), lines=True)


# --- textual: mutations of valid catalogs -----------------------------------------------------------------

_INTERESTING_BYTES = b"{}[]:,-&*!|>'\"#%@`?~\t\n\r \x00\x1b\x7f\x85\xc2\xe2\x80\xa8\xff\xfe"
# Whole YAML constructs a byte at a time would rarely spell: explicit tags (whose constructors fail in their
# own ways on a bad value), anchors and aliases, merge keys, complex keys, directives, document markers.
_TOKENS = [b"!!bool ", b"!!int ", b"!!float ", b"!!timestamp ", b"!!null ", b"!!str ", b"!!binary ",
           b"!!set ", b"!!omap ", b"!!python/name:os.system ", b"!local ", b"&a ", b"*a", b"<<: *a\n",
           b"? ", b"--- ", b"...\n", b"%YAML 1.1\n", b'""', b"''", b"|\n", b">-\n", b"[", b"{", b"\\x1b"]
_MUTATION = st.tuples(
    st.sampled_from(["flip", "insert", "token", "delete", "truncate", "duplicate"]),
    st.floats(min_value=0.0, max_value=1.0),  # where, as a fraction of the length
    st.one_of(st.sampled_from(list(_INTERESTING_BYTES)), st.integers(0, 255)),
    st.integers(1, 40),  # how many bytes a deletion or duplication spans; which token to insert
)


def mutate(seed: bytes, mutations: list[tuple[str, float, int, int]]) -> bytes:
    data = bytearray(seed)
    for kind, where, byte, span in mutations:
        at = min(int(where * len(data)), len(data))
        if kind == "flip" and data:
            data[min(at, len(data) - 1)] = byte
        elif kind == "insert":
            data[at:at] = bytes([byte])
        elif kind == "token":
            data[at:at] = _TOKENS[span % len(_TOKENS)]
        elif kind == "delete":
            del data[at:at + span]
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            data[at:at] = data[at:at + span]
    return bytes(data)


def _load_text(data: bytes) -> None:
    parse_document(decode_document(data, where=WHERE), where=WHERE)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(_MUTATION, min_size=1, max_size=6))
def test_mutated_catalogs_give_a_document_or_located_problems(
        seed: bytes, mutations: list[tuple[str, float, int, int]]) -> None:
    check_loader(lambda: _load_text(mutate(seed, mutations)), lines=True)


_VALUE_SPOT = re.compile(rb"(?<=[:-]) ")  # after "key: " or "- ": where a tag or an anchor may go


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS),
       st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(_TOKENS)), min_size=1, max_size=3))
def test_yaml_constructs_in_value_positions_give_a_document_or_located_problems(
        seed: bytes, inserts: list[tuple[int, bytes]]) -> None:
    """Aimed mutations: a tag, an anchor or an alias in front of a value, which random bytes rarely reach."""
    data = bytearray(seed)
    for index, token in inserts:
        spots = [m.end() for m in _VALUE_SPOT.finditer(data)]
        at = spots[index % len(spots)]
        data[at:at] = token
    check_loader(lambda: _load_text(bytes(data)), lines=True)


def test_seeds_are_valid() -> None:
    """The mutations start from valid documents, so what they find is what the mutations did."""
    assert len(SEEDS) >= 3
    for seed in SEEDS:
        _load_text(seed)


def test_the_problems_found_by_fuzzing_stay_fixed() -> None:
    """Inputs that fuzzing showed to give an unlocated or raw problem, kept as plain regressions."""
    cases = {
        # A recursive alias used to be reported without a line.
        "services: &a [*a]\n": "fuzz/catalog.yaml:1:11: the document is too large",
        # A key with a terminal escape and a line separator used to reach the terminal raw.
        '"\\e[2J\\u2028": 1\n': "fuzz/catalog.yaml:1:1: \\x1b[2J\\u2028: unknown key '\\x1b[2J\\u2028'",
    }
    for text, start in cases.items():
        with pytest.raises(PolicyError) as info:
            parse_document(text, where=WHERE)
        assert str(info.value).startswith(start), str(info.value)
