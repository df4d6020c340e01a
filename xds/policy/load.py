"""Loading the YAML file format (catalog + policy) and policy-only documents, with located problems.

Theory of operation: the text is composed (not loaded) with PyYAML's SafeLoader, which keeps the start mark
of every node; those nodes, or plain data that was parsed elsewhere (a Kubernetes object, JSON from Consul
KV), are turned into one small located tree (`_Map`, `_Seq`, `_Scalar`). A single validating walk over that
tree collects every problem, each with its file, line, column and YAML path, and only a document without
any problem becomes a Catalog and a Policy. Nothing partial is ever returned: a document is accepted whole
or rejected whole (XDS-RULES R38), so the last good configuration keeps serving.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias, TypeVar

import yaml

from xds.model.service import Catalog, Endpoint, Health, Locality, Service, ServiceName
from xds.policy.desired import LbPolicy
from xds.policy.errors import PolicyError, Problem
from xds.policy.schema import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_DOMAINS,
    DEFAULT_LB_POLICY,
    DEFAULT_LISTENER_ADDRESS,
    DEFAULT_PREFIX,
    BackendRef,
    HeaderMatch,
    ListenerPolicy,
    Policy,
    RoutePolicy,
    ServicePolicy,
    describe_groups,
    find_port_conflicts,
)
from xds.policy.weights import TOTAL_WEIGHT

VERSION = 1
MAX_CONNECT_TIMEOUT_S = 60.0
MAX_ROUTE_TIMEOUT_S = 3600.0
MAX_RETRIES = 10
MAX_ENDPOINT_WEIGHT = 10_000
MAX_NAME_LENGTH = 253
# Aliases let a short document expand into a huge tree ("billion laughs"); the budget bounds the work.
_MAX_NODES = 1_000_000
_MAX_DEPTH = 64

# An optional `:<port>` suffix lets policies name Kubernetes services as the source catalogs them
# (`web.shop:80`, docs/kubernetes.md).
_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]{1,5})?")
_NAME_RULE = ("lowercase letters, digits, '.', '_' and '-', starting and ending with a letter or digit, "
              "optionally followed by ':' and a port number")
# Subset pairs become part of a cluster name ("web|version=v1,zone=a"), so the separators are excluded.
_PAIR_KEY_RE = re.compile(r"[^\s,=|\x00-\x1f\x7f]+")
_PAIR_VALUE_RE = re.compile(r"[^\s,=|\x00-\x1f\x7f]*")
_PAIR_KEY_RULE = "must not contain whitespace, ',', '=', '|' or control characters"
# Control characters in values that end up in Envoy config are refused outright (XDS-RULES S6).
_TEXT_RE = re.compile(r"[^\x00-\x1f\x7f]*")
_TEXT_RULE = "must not contain control characters"
_HEADER_NAME_RE = re.compile(r":?[a-z0-9!#$%&'*+.^_`|~-]+")
_HEADER_NAME_RULE = "must be an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)"
_DOMAIN_RE = re.compile(r"\*|(\*[.-])?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?([.-]\*)?(:[0-9]{1,5})?")
_DOMAIN_RULE = "must be a host name, optionally with one leading or trailing '*' wildcard and a port"
_PREFIX_RE = re.compile(r"/[^\s\x00-\x1f\x7f]*")
_PREFIX_RULE = "must start with '/' and contain no whitespace or control characters"
_GROUP_RE = re.compile(r"[^\x00-\x1f\x7f]+")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m)")
_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0}

_MAX_QUOTED = 80
_EMPTY_DOCUMENT = "the document is empty; expected a mapping with 'services' and/or 'listeners'"

_LB_POLICIES = {p.value: p for p in LbPolicy}
_HEALTH_VALUES = {h.value: h for h in Health}
_PROTOCOLS = {"http1": False, "http2": True}  # value: whether to speak HTTP/2 upstream

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp"))

# --- the located tree -----------------------------------------------------------------------------------

_Pos: TypeAlias = tuple[int | None, int | None]  # 1-based (line, column), or (None, None)
_NO_POS: _Pos = (None, None)


@dataclass(frozen=True, slots=True)
class _Scalar:
    value: object
    pos: _Pos


@dataclass(frozen=True, slots=True)
class _Seq:
    items: tuple[_Node, ...]
    pos: _Pos


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    key_pos: _Pos
    value: _Node


@dataclass(frozen=True, slots=True)
class _Map:
    entries: tuple[_Entry, ...]
    pos: _Pos


@dataclass(frozen=True, slots=True)
class _Broken:
    """A node that was already reported while building the tree; the walk skips it silently."""

    pos: _Pos


_Node: TypeAlias = "_Scalar | _Seq | _Map | _Broken"


class _TooLargeError(Exception):
    pass


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Report:
    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[Problem] = []

    def add(self, pos: _Pos, path: str, message: str) -> None:
        text = f"{path}: {message}" if path else message
        self.problems.append(Problem(self.where, pos[0], pos[1], text))

    def raise_if_any(self) -> None:
        if self.problems:
            # Document order reads best; problems found late (conflicts between listeners) slot in.
            ordered = sorted(self.problems, key=lambda p: (p.line or 0, p.column or 0))
            raise PolicyError(ordered)


class _Builder:
    """Builds the located tree from YAML nodes or plain data, reporting what cannot be represented."""

    def __init__(self, report: _Report) -> None:
        self._report = report
        self._budget = _MAX_NODES
        self._loader: yaml.SafeLoader | None = None

    def _spend(self, depth: int) -> None:
        self._budget -= 1
        if self._budget < 0 or depth > _MAX_DEPTH:
            raise _TooLargeError

    def _construct(self, node: yaml.ScalarNode) -> object:
        if self._loader is None:
            self._loader = yaml.SafeLoader("")
        try:
            return self._loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError):
            # The resolver guesses types from the text alone: `2024-13-45` looks like a date and is not one.
            # Such a value is just text.
            return str(node.value)

    def from_yaml(self, node: yaml.Node, path: str, depth: int = 0) -> _Node:
        self._spend(depth)
        pos: _Pos = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                self._report.add(pos, path, f"unsupported YAML tag {node.tag!r}")
                return _Broken(pos)
            return _Scalar(self._construct(node), pos)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _TAG + "seq":
                self._report.add(pos, path, f"unsupported YAML tag {node.tag!r}")
                return _Broken(pos)
            return _Seq(
                tuple(self.from_yaml(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node.value)),
                pos,
            )
        if isinstance(node, yaml.MappingNode) and node.tag == _TAG + "map":
            entries: list[_Entry] = []
            seen: dict[str, _Pos] = {}
            for key_node, value_node in node.value:
                key_pos: _Pos = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                key = self._key(key_node, key_pos, path)
                if key is None:
                    continue
                if key in seen:
                    # PyYAML silently keeps the last value; a repeated key is almost always an edit mistake.
                    self._report.add(key_pos, _join(path, key),
                                     f"duplicate key {key!r}{_first_at(seen[key][0])}")
                    continue
                seen[key] = key_pos
                entries.append(_Entry(key, key_pos, self.from_yaml(value_node, _join(path, key), depth + 1)))
            return _Map(tuple(entries), pos)
        self._report.add(pos, path, f"unsupported YAML tag {node.tag!r}")
        return _Broken(pos)

    def _key(self, node: yaml.Node, pos: _Pos, path: str) -> str | None:
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

    def from_data(self, data: object, path: str, depth: int = 0) -> _Node:
        self._spend(depth)
        if isinstance(data, Mapping):
            entries: list[_Entry] = []
            for key, value in data.items():
                if not isinstance(key, str):
                    self._report.add(_NO_POS, path, f"mapping keys must be strings, got {key!r}")
                    continue
                entries.append(_Entry(key, _NO_POS, self.from_data(value, _join(path, key), depth + 1)))
            return _Map(tuple(entries), _NO_POS)
        if isinstance(data, list | tuple):
            return _Seq(
                tuple(self.from_data(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(data)), _NO_POS
            )
        return _Scalar(data, _NO_POS)


# --- the validating walk -----------------------------------------------------------------------------------


def _describe(node: _Node) -> str:
    text = _describe_untruncated(node)
    # Messages quote what they got; a pasted blob should not drown the rest of the report.
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."


def _describe_untruncated(node: _Node) -> str:
    if isinstance(node, _Map):
        return "a mapping"
    if isinstance(node, _Seq):
        return "a list"
    value = node.value if isinstance(node, _Scalar) else None
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


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True, slots=True)
class _ServiceEntry:
    policy: ServicePolicy
    endpoints: tuple[Endpoint, ...] | None  # None: the document says nothing about this service's endpoints


@dataclass(frozen=True, slots=True)
class _ListenerEntry:
    policy: ListenerPolicy
    port_pos: _Pos
    path: str


@dataclass(frozen=True, slots=True)
class _Fields:
    """The known keys of one mapping, with the YAML path of the mapping."""

    nodes: dict[str, _Node]
    path: str

    def at(self, key: str) -> tuple[_Node | None, str]:
        return self.nodes.get(key), _join(self.path, key)

    def __contains__(self, key: str) -> bool:
        return key in self.nodes


_T = TypeVar("_T")
_K = TypeVar("_K")


class _Walker:
    """Validates the located tree. Each check reports its problems and returns None for an invalid value;
    an absent optional value (node None) yields the default. A composite is built only when no problem was
    reported while checking its parts, which `_mark` tracks."""

    def __init__(self, report: _Report, *, endpoint_source: str | None) -> None:
        self._report = report
        # None: a policy-only document, in which endpoints are refused (they come from registries).
        self._endpoint_source = endpoint_source
        # Service names the document declares; backends may only name these (XDS-RULES B1).
        self._declared: frozenset[str] = frozenset()

    @property
    def _mark(self) -> int:
        return len(self._report.problems)

    def _bad(self, node: _Node, path: str, message: str) -> None:
        self._report.add(node.pos, path, message)

    def _duplicate(self, seen: dict[_K, int | None], key: _K | None, item: _Node, path: str, *, field: str,
                   what: str) -> bool:
        """Remember `key` (None: no usable key), reporting it when an earlier item of the list had it.
        Works on the raw value, so a duplicate is found even while the item has other problems."""
        if key is None:
            return False
        if key in seen:
            self._report.add(_value_pos(item, field), path, f"duplicate {what}{_first_at(seen[key])}")
            return True
        seen[key] = item.pos[0]
        return False

    # generic shapes

    def _mapping(self, node: _Node, path: str, *, what: str, keys: Sequence[str],
                 required: Sequence[str] = (), refused: Mapping[str, str] | None = None) -> _Fields | None:
        if isinstance(node, _Broken):
            return None
        if not isinstance(node, _Map):
            self._bad(node, path, f"{what} must be a mapping, got {_describe(node)}")
            return None
        nodes: dict[str, _Node] = {}
        for entry in node.entries:
            if entry.key in keys:
                nodes[entry.key] = entry.value
            elif refused and entry.key in refused:
                self._report.add(entry.key_pos, _join(path, entry.key), refused[entry.key])
            else:
                self._report.add(entry.key_pos, _join(path, entry.key),
                                 f"unknown key {entry.key!r} in {what}{_suggest(entry.key, keys)}")
        for key in required:
            if key not in nodes:
                self._bad(node, path, f"missing required key {key!r} in {what}")
        return _Fields(nodes, path)

    def _list(self, node: _Node | None, path: str, *, nonempty: str | None) -> tuple[_Node, ...] | None:
        """The items of a list; `nonempty` names what at least one item must be, None when none is fine."""
        if node is None:
            return ()
        if isinstance(node, _Broken):
            return None
        if not isinstance(node, _Seq):
            null = isinstance(node, _Scalar) and node.value is None
            hint = " (write [] for none)" if nonempty is None and null else ""
            self._bad(node, path, f"must be a list, got {_describe(node)}{hint}")
            return None
        if nonempty is not None and not node.items:
            self._bad(node, path, f"must list at least one {nonempty}")
            return None
        return node.items

    def _string(self, node: _Node | None, path: str, *, default: str | None = None,
                pattern: re.Pattern[str] = _TEXT_RE, rule: str = _TEXT_RULE) -> str | None:
        if node is None:
            return default
        if isinstance(node, _Broken):
            return None
        if not isinstance(node, _Scalar) or not isinstance(node.value, str):
            # YAML 1.1 reads `yes`, `2`, `1.10` and `2024-01-01` as non-strings; quoting is the fix.
            hint = "; quote it" if isinstance(node, _Scalar) and node.value is not None else ""
            self._bad(node, path, f"must be a string, got {_describe(node)}{hint}")
            return None
        if not pattern.fullmatch(node.value):
            self._bad(node, path, f"{rule}, got {node.value!r}")
            return None
        return node.value

    def _name(self, node: _Node | None, path: str, *, default: str | None = None) -> str | None:
        name = self._string(node, path, default=default, pattern=_NAME_RE, rule=f"must be {_NAME_RULE}")
        if node is not None and name is not None and len(name) > MAX_NAME_LENGTH:
            self._bad(node, path, f"must be at most {MAX_NAME_LENGTH} characters long")
            return None
        return name

    def _integer(self, node: _Node | None, path: str, *, default: int | None = None, low: int,
                 high: int | None = None) -> int | None:
        if node is None:
            return default
        if isinstance(node, _Broken):
            return None
        value = node.value if isinstance(node, _Scalar) else None
        # bool is an int in Python, but `weight: yes` is certainly a mistake.
        if (isinstance(value, int) and not isinstance(value, bool) and value >= low
                and (high is None or value <= high)):
            return value
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        self._bad(node, path, f"must be an integer {bound}, got {_describe(node)}")
        return None

    def _boolean(self, node: _Node | None, path: str, *, default: bool | None = None) -> bool | None:
        if node is None:
            return default
        if isinstance(node, _Scalar) and isinstance(node.value, bool):
            return node.value
        if not isinstance(node, _Broken):
            self._bad(node, path, f"must be true or false, got {_describe(node)}")
        return None

    def _duration(self, node: _Node | None, path: str, *, default: float | None = None,
                  max_s: float) -> float | None:
        if node is None:
            return default
        if isinstance(node, _Broken):
            return None
        value = node.value if isinstance(node, _Scalar) else None
        seconds: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            # An integer too large for a float (from JSON) is simply out of range.
            seconds = float(value) if abs(value) < 1e300 else math.inf
        elif isinstance(value, str) and (match := _DURATION_RE.fullmatch(value.strip())):
            seconds = float(match.group(1)) * _DURATION_UNITS_S[match.group(2)]
        if seconds is None:
            self._bad(node, path, "must be a duration such as '250ms', '1s', '1.5s' or a number of seconds, "
                                  f"got {_describe(node)}")
            return None
        if not (math.isfinite(seconds) and 0 < seconds <= max_s):
            self._bad(node, path, f"must be more than 0 and at most {max_s:g}s, got {_describe(node)}")
            return None
        return seconds

    def _choice(self, node: _Node | None, path: str, *, default: _T, choices: Mapping[str, _T]) -> _T | None:
        text = self._string(node, path)
        if node is None:
            return default
        if text is None:
            return None
        if text not in choices:
            names = list(choices)
            self._bad(node, path, f"must be one of {', '.join(names)}; got {text!r}{_suggest(text, names)}")
            return None
        return choices[text]

    def _pairs(self, node: _Node | None, path: str, *, what: str,
               value_pattern: re.Pattern[str], value_rule: str) -> tuple[tuple[str, str], ...] | None:
        if node is None:
            return ()
        if isinstance(node, _Broken):
            return None
        if not isinstance(node, _Map):
            self._bad(node, path, f"{what} must be a mapping of strings, got {_describe(node)}")
            return None
        mark = self._mark
        pairs: list[tuple[str, str]] = []
        for entry in node.entries:
            entry_path = _join(path, entry.key)
            if not _PAIR_KEY_RE.fullmatch(entry.key):
                self._report.add(entry.key_pos, entry_path, f"keys {_PAIR_KEY_RULE}")
            value = self._string(entry.value, entry_path, pattern=value_pattern, rule=value_rule)
            if value is not None:
                pairs.append((entry.key, value))
        return tuple(pairs) if self._mark == mark else None

    # the document

    def document(self, root: _Node) -> tuple[list[_ServiceEntry], list[ListenerPolicy]]:
        f = self._mapping(root, "", what="the document", keys=("version", "services", "listeners"))
        if f is None:
            return [], []
        version, _ = f.at("version")
        supported = isinstance(version, _Scalar) and type(version.value) is int and version.value == VERSION
        if version is not None and not supported:
            self._bad(version, "version",
                      f"unsupported version {_describe(version)}; only {VERSION} is supported")
        services_node, _ = f.at("services")
        if isinstance(services_node, _Seq):
            self._declared = frozenset(
                name for item in services_node.items if (name := _text_at(item, "name")) is not None)
        return self._services(*f.at("services")), self._listeners(*f.at("listeners"))

    def _services(self, node: _Node | None, path: str) -> list[_ServiceEntry]:
        out: list[_ServiceEntry] = []
        seen: dict[str, int | None] = {}
        for index, item in enumerate(self._list(node, path, nonempty=None) or ()):
            item_path = f"{path}[{index}]"
            entry = self._service(item, item_path)
            name = _text_at(item, "name")
            duplicate = self._duplicate(seen, name, item, f"{item_path}.name", field="name",
                                        what=f"service {name!r}")
            if entry is not None and not duplicate:
                out.append(entry)
        return out

    def _service(self, node: _Node, path: str) -> _ServiceEntry | None:
        mark = self._mark
        what = _label("service", node)
        keys: tuple[str, ...] = ("name", "lb_policy", "connect_timeout", "protocol")
        refused: dict[str, str] = {}
        if self._endpoint_source is None:
            refused["endpoints"] = ("endpoints are not accepted in a policy-only document; "
                                    "they come from the service registry")
        else:
            keys += ("endpoints",)
        f = self._mapping(node, path, what=what, keys=keys, required=("name",), refused=refused)
        if f is None:
            return None
        name = self._name(*f.at("name"))
        lb = self._choice(*f.at("lb_policy"), default=DEFAULT_LB_POLICY, choices=_LB_POLICIES)
        timeout_s = self._duration(*f.at("connect_timeout"), default=DEFAULT_CONNECT_TIMEOUT_S,
                                   max_s=MAX_CONNECT_TIMEOUT_S)
        http2 = self._choice(*f.at("protocol"), default=False, choices=_PROTOCOLS)
        endpoints: tuple[Endpoint, ...] | None = None
        if "endpoints" in f and self._endpoint_source is not None:
            endpoints = self._endpoints(*f.at("endpoints"), service=name or what,
                                        source=self._endpoint_source)
        if self._mark != mark or name is None or lb is None or timeout_s is None or http2 is None:
            return None
        return _ServiceEntry(ServicePolicy(name, lb, connect_timeout_s=timeout_s, http2=http2), endpoints)

    def _endpoints(self, node: _Node | None, path: str, *, service: str,
                   source: str) -> tuple[Endpoint, ...] | None:
        items = self._list(node, path, nonempty=None)
        if items is None:
            return None
        out: list[Endpoint] = []
        seen: dict[tuple[str, int], int | None] = {}
        for index, item in enumerate(items):
            endpoint = self._endpoint(item, f"{path}[{index}]", service=service, source=source)
            host, port, problem = _parse_host_port(_text_at(item, "address") or "")
            address = None if problem else (host, port)
            duplicate = self._duplicate(seen, address, item, f"{path}[{index}].address", field="address",
                                        what=f"endpoint {_host_port(host, port)} in service {service!r}")
            if endpoint is not None and not duplicate:
                out.append(endpoint)
        return tuple(out)

    def _endpoint(self, node: _Node, path: str, *, service: str, source: str) -> Endpoint | None:
        mark = self._mark
        f = self._mapping(node, path, what=f"an endpoint of service {service!r}",
                          keys=("address", "weight", "health", "locality", "metadata"), required=("address",))
        if f is None:
            return None
        address = self._address(*f.at("address"))
        weight = self._integer(*f.at("weight"), default=1, low=1, high=MAX_ENDPOINT_WEIGHT)
        health = self._choice(*f.at("health"), default=Health.HEALTHY, choices=_HEALTH_VALUES)
        locality = self._locality(*f.at("locality"))
        metadata = self._pairs(*f.at("metadata"), what="metadata", value_pattern=_TEXT_RE,
                               value_rule=_TEXT_RULE)
        if (self._mark != mark or address is None or weight is None or health is None or locality is None
                or metadata is None):
            return None
        return Endpoint(host=address[0], port=address[1], weight=weight, health=health, locality=locality,
                        metadata=metadata, source=source)

    def _address(self, node: _Node | None, path: str) -> tuple[str, int] | None:
        text = self._string(node, path)
        if node is None or text is None:
            return None
        host, port, problem = _parse_host_port(text)
        if problem:
            self._bad(node, path, f"{problem}, got {text!r}")
            return None
        return host, port

    def _locality(self, node: _Node | None, path: str) -> Locality | None:
        if node is None:
            return Locality()
        mark = self._mark
        f = self._mapping(node, path, what="locality", keys=("region", "zone", "sub_zone"))
        if f is None:
            return None
        region = self._string(*f.at("region"), default="")
        zone = self._string(*f.at("zone"), default="")
        sub_zone = self._string(*f.at("sub_zone"), default="")
        if self._mark != mark or region is None or zone is None or sub_zone is None:
            return None
        return Locality(region=region, zone=zone, sub_zone=sub_zone)

    def _listeners(self, node: _Node | None, path: str) -> list[ListenerPolicy]:
        entries: list[_ListenerEntry] = []
        seen: dict[str, int | None] = {}
        for index, item in enumerate(self._list(node, path, nonempty=None) or ()):
            item_path = f"{path}[{index}]"
            entry = self._listener(item, item_path)
            name = _text_at(item, "name")
            duplicate = self._duplicate(seen, name, item, f"{item_path}.name", field="name",
                                        what=f"listener {name!r}")
            if entry is not None and not duplicate:
                entries.append(entry)
        for first, second in find_port_conflicts([e.policy for e in entries]):
            a, b = entries[first], entries[second]
            self._report.add(b.port_pos, f"{b.path}.port",
                             f"{b.policy.address}:{b.policy.port} is already used by listener "
                             f"{a.policy.name!r}{_first_at(a.port_pos[0])} "
                             f"{describe_groups(a.policy.groups, b.policy.groups)}")
        return [e.policy for e in entries]

    def _listener(self, node: _Node, path: str) -> _ListenerEntry | None:
        mark = self._mark
        what = _label("listener", node)
        f = self._mapping(node, path, what=what,
                          keys=("name", "address", "port", "groups", "domains", "routes"),
                          required=("name", "port", "routes"))
        if f is None:
            return None
        name = self._name(*f.at("name"))
        address = self._ip(*f.at("address"))
        port = self._integer(*f.at("port"), low=1, high=65535)
        groups = self._groups(*f.at("groups"))
        domains = self._domains(*f.at("domains"))
        routes = self._routes(*f.at("routes"), listener=name or what)
        port_node, _ = f.at("port")
        if (self._mark != mark or name is None or address is None or port is None or port_node is None
                or domains is None or routes is None):
            return None
        policy = ListenerPolicy(name, address, port=port, groups=groups, domains=domains, routes=routes)
        return _ListenerEntry(policy, port_node.pos, path)

    def _ip(self, node: _Node | None, path: str) -> str | None:
        text = self._string(node, path, default=DEFAULT_LISTENER_ADDRESS)
        if node is None or text is None:
            return text
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            self._bad(node, path, f"must be an IP address such as 0.0.0.0 or ::, got {text!r}")
            return None

    def _groups(self, node: _Node | None, path: str) -> frozenset[str] | None:
        if node is None:
            return None  # every group
        items = self._list(node, path, nonempty="group (omit 'groups' to serve every group)")
        groups = [self._string(item, f"{path}[{i}]", pattern=_GROUP_RE,
                               rule="must be a non-empty group name without control characters")
                  for i, item in enumerate(items or ())]
        return frozenset(g for g in groups if g is not None)

    def _domains(self, node: _Node | None, path: str) -> tuple[str, ...] | None:
        if node is None:
            return DEFAULT_DOMAINS
        mark = self._mark
        domains: list[str] = []
        for i, item in enumerate(self._list(node, path, nonempty="domain") or ()):
            domain = self._string(item, f"{path}[{i}]", pattern=_DOMAIN_RE, rule=_DOMAIN_RULE)
            if domain is None:
                continue
            # Envoy rejects a route configuration that names one domain twice.
            if domain.lower() in (d.lower() for d in domains):
                self._bad(item, f"{path}[{i}]", f"duplicate domain {domain!r}")
                continue
            domains.append(domain)
        return tuple(domains) if self._mark == mark else None

    def _routes(self, node: _Node | None, path: str, *, listener: str) -> tuple[RoutePolicy, ...] | None:
        mark = self._mark
        routes: list[RoutePolicy] = []
        seen: dict[str, int | None] = {}
        for index, item in enumerate(self._list(node, path, nonempty="route") or ()):
            route = self._route(item, f"{path}[{index}]", index=index, listener=listener)
            # An unnamed route is "route-<index>", which an explicit name may also use.
            name = _text_at(item, "name") or f"route-{index}"
            duplicate = self._duplicate(seen, name, item, f"{path}[{index}].name", field="name",
                                        what=f"route name {name!r} in listener {listener!r}")
            if route is not None and not duplicate:
                routes.append(route)
        return tuple(routes) if self._mark == mark and node is not None else None

    def _route(self, node: _Node, path: str, *, index: int, listener: str) -> RoutePolicy | None:
        mark = self._mark
        what = _label("route", node, default=str(index)) + f" of listener {listener!r}"
        f = self._mapping(node, path, what=what, keys=("name", "match", "timeout", "retries", "backends"),
                          required=("backends",))
        if f is None:
            return None
        name = self._name(*f.at("name"), default=f"route-{index}")
        prefix, headers = self._match(*f.at("match"))
        timeout_s = self._duration(*f.at("timeout"), max_s=MAX_ROUTE_TIMEOUT_S)
        retries = self._integer(*f.at("retries"), default=0, low=0, high=MAX_RETRIES)
        backends = self._backends(*f.at("backends"))
        if (self._mark != mark or name is None or prefix is None or headers is None or retries is None
                or backends is None):
            return None
        return RoutePolicy(name, prefix, headers=headers, backends=backends, timeout_s=timeout_s,
                           retries=retries)

    def _match(self, node: _Node | None, path: str) -> tuple[str | None, tuple[HeaderMatch, ...] | None]:
        if node is None:
            return DEFAULT_PREFIX, ()
        f = self._mapping(node, path, what="a route match", keys=("prefix", "headers"))
        if f is None:
            return None, None
        prefix = self._string(*f.at("prefix"), default=DEFAULT_PREFIX, pattern=_PREFIX_RE, rule=_PREFIX_RULE)
        headers_node, headers_path = f.at("headers")
        items = self._list(headers_node, headers_path, nonempty=None)
        found = [self._header(item, f"{headers_path}[{i}]") for i, item in enumerate(items or ())]
        headers = tuple(h for h in found if h is not None)
        return prefix, headers if items is not None and len(headers) == len(found) else None

    def _header(self, node: _Node, path: str) -> HeaderMatch | None:
        mark = self._mark
        f = self._mapping(node, path, what="a header match", keys=("name", "exact", "present", "invert"),
                          required=("name",))
        if f is None:
            return None
        name_node, name_path = f.at("name")
        if isinstance(name_node, _Scalar) and isinstance(name_node.value, str):
            # Header names are case-insensitive (RFC 9110 section 5.1); Envoy compares them lowercased.
            name_node = _Scalar(name_node.value.lower(), name_node.pos)
        name = self._string(name_node, name_path, pattern=_HEADER_NAME_RE, rule=_HEADER_NAME_RULE)
        exact: str | None = None
        if ("exact" in f) == ("present" in f):
            self._bad(node, path, "a header match needs exactly one of 'exact' or 'present'")
        elif "exact" in f:
            exact = self._string(*f.at("exact"))
        else:
            present_node, present_path = f.at("present")
            if self._boolean(present_node, present_path) is False and present_node is not None:
                self._bad(present_node, present_path, "must be true; to match requests without the header, "
                                                      "write present: true, invert: true")
        invert = self._boolean(*f.at("invert"), default=False)
        if self._mark != mark or name is None or invert is None:
            return None
        return HeaderMatch(name, exact, invert=invert)

    def _backends(self, node: _Node | None, path: str) -> tuple[BackendRef, ...] | None:
        if node is None:
            return None  # required; already reported
        items = self._list(node, path, nonempty="backend")
        if items is None:
            return None
        found = [self._backend(item, f"{path}[{i}]") for i, item in enumerate(items)]
        backends = tuple(b for b in found if b is not None)
        if len(backends) != len(found):
            return None
        total = sum(b.weight for b in backends)
        if len(backends) > 1 and total != TOTAL_WEIGHT:
            # Percentages, as in Istio's VirtualService: a split summing to 90 is a mistake to report,
            # not a ratio to guess at (XDS-RULES B1).
            self._bad(node, path, f"backend weights are percentages and must sum to {TOTAL_WEIGHT}, "
                                  f"got {total} ({' + '.join(str(b.weight) for b in backends)})")
            return None
        if total == 0:
            self._bad(node, path, "the only backend of a route needs a weight > 0")
            return None
        return backends

    def _backend(self, node: _Node, path: str) -> BackendRef | None:
        mark = self._mark
        f = self._mapping(node, path, what="a backend", keys=("service", "subset", "weight"),
                          required=("service",))
        if f is None:
            return None
        service = self._name(*f.at("service"))
        subset = self._pairs(*f.at("subset"), what="subset", value_pattern=_PAIR_VALUE_RE,
                             value_rule=f"values {_PAIR_KEY_RULE}")
        weight = self._integer(*f.at("weight"), default=1, low=0)
        if service is not None and service not in self._declared:
            # A typo would otherwise become an empty cluster and 503s. A service that another source
            # provides is declared too, with no `endpoints` key.
            service_node, service_path = f.at("service")
            assert service_node is not None
            self._bad(service_node, service_path,
                      f"unknown service {service!r}: declare it under `services:` (without `endpoints` if "
                      f"a registry provides them){_suggest(service, sorted(self._declared))}")
        if self._mark != mark or service is None or subset is None or weight is None:
            return None
        return BackendRef(service, subset, weight=weight)


def _label(kind: str, node: _Node, *, default: str = "") -> str:
    """"service 'web'" when the entry has a usable name, so messages read like the document."""
    name = _text_at(node, "name")
    if name is not None:
        return f"{kind} {name!r}"
    return f"{kind} {default}" if default else f"a {kind}"


def _text_at(node: _Node, key: str) -> str | None:
    """The string value of `key` in a mapping node, if it has one."""
    if isinstance(node, _Map):
        for entry in node.entries:
            if entry.key == key and isinstance(entry.value, _Scalar) and isinstance(entry.value.value, str):
                return entry.value.value
    return None


def _value_pos(node: _Node, key: str) -> _Pos:
    """Where the value of `key` is in a mapping node, falling back to the node itself."""
    if isinstance(node, _Map):
        for entry in node.entries:
            if entry.key == key:
                return entry.value.pos
    return node.pos


def _first_at(line: int | None) -> str:
    return f" (first at line {line})" if line is not None else ""


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_host_port(text: str) -> tuple[str, int, str]:
    """(host, port, "") or ("", 0, problem). Hosts must be IP literals: EDS endpoints are not resolved by
    Envoy, which rejects a host name there and would NACK the whole update."""
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            return "", 0, "must be host:port, with an IPv6 host in brackets as [::1]:8080"
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            return "", 0, "must be host:port, such as 127.0.0.1:8080"
        if ":" in host:
            return "", 0, "an IPv6 address must be in brackets, as [::1]:8080"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "", 0, "the host must be an IP address (Envoy does not resolve names of EDS endpoints)"
    if text.startswith("[") and ip.version != 6:
        return "", 0, "only IPv6 addresses go in brackets"
    if not _PORT_RE.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        return "", 0, "the port must be a number from 1 to 65535"
    return str(ip), int(port_text), ""


# --- entry points -------------------------------------------------------------------------------------------


# libyaml's loader keeps the same node marks and composes about 10x faster than the pure-Python one
# (benchmarks/README.md: a 1000-service file took ~1 s to parse); PyYAML builds without it fall back.
_COMPOSER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _compose(text: str, report: _Report) -> _Node | None:
    """The located tree of `text`, or None when the YAML itself is unreadable (already reported)."""
    try:
        root = yaml.compose(text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        pos: _Pos = (mark.line + 1, mark.column + 1) if mark else _NO_POS
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
        report.add(_NO_POS, "", f"invalid YAML: {e}")
        return None
    except RecursionError:
        report.add(_NO_POS, "", "invalid YAML: the document is nested too deeply")
        return None
    if root is None:
        # An empty file is far more often a half-written one than an intent to remove everything.
        report.add((1, 1), "", _EMPTY_DOCUMENT)
        return None
    return _build(report, lambda b: b.from_yaml(root, ""))


def _build(report: _Report, build: Callable[[_Builder], _Node]) -> _Node | None:
    try:
        node = build(_Builder(report))
    except _TooLargeError:
        report.add(_NO_POS, "", f"the document is too large or nested too deeply (more than {_MAX_NODES} "
                                f"values after expanding aliases, or more than {_MAX_DEPTH} levels)")
        return None
    return node


def _walk(report: _Report, root: _Node | None, *, endpoint_source: str | None
          ) -> tuple[list[_ServiceEntry], Policy]:
    services: list[_ServiceEntry] = []
    listeners: list[ListenerPolicy] = []
    if root is not None:
        services, listeners = _Walker(report, endpoint_source=endpoint_source).document(root)
    report.raise_if_any()
    policy = Policy(tuple(s.policy for s in services), tuple(listeners), origin=report.where)
    return services, policy


def parse_document(text: str, *, where: str) -> tuple[Catalog, Policy]:
    """Parse the file format (services with endpoints, plus listeners): the catalog part carries the
    endpoints with `source="file:<where>"`; services listed without an `endpoints` key are settings only and
    stay out of the catalog. Raises PolicyError listing every problem."""
    report = _Report(where)
    services, policy = _walk(report, _compose(text, report), endpoint_source=f"file:{where}")
    catalog = Catalog(tuple(Service(ServiceName(s.policy.name), s.endpoints) for s in services
                            if s.endpoints is not None))
    return catalog, policy


def parse_policy(text: str, *, where: str) -> Policy:
    """Parse a policy-only YAML or JSON document (service settings and listeners, no endpoints), keeping
    line numbers in the problems. Raises PolicyError."""
    report = _Report(where)
    return _walk(report, _compose(text, report), endpoint_source=None)[1]


def policy_from_data(data: object, *, where: str) -> Policy:
    """Validate an already-parsed policy-only document (a Kubernetes object, JSON from Consul KV).
    Problems carry the YAML path but no line. Raises PolicyError."""
    report = _Report(where)
    root = _build(report, lambda b: b.from_data(data, ""))
    if isinstance(root, _Scalar) and root.value is None:
        report.add(_NO_POS, "", _EMPTY_DOCUMENT)
        root = None
    return _walk(report, root, endpoint_source=None)[1]


def decode_document(data: bytes, *, where: str) -> str:
    """UTF-8 text of a document (a leading byte-order mark is dropped); PolicyError when it is not."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise PolicyError([Problem(where, line, None, f"not valid UTF-8 at byte {e.start}")]) from e


def load_file(path: Path) -> tuple[Catalog, Policy]:
    """Read and parse one file in the file format. Raises PolicyError, also when it cannot be read."""
    where = str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PolicyError([Problem(where, None, None, f"cannot read the file: {e.strerror or e}")]) from e
    return parse_document(decode_document(data, where=where), where=where)
