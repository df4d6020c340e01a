"""Loading the YAML file format (catalog + policy) and policy-only documents, with located problems.

Theory of operation: the text is composed (not loaded) with PyYAML's SafeLoader, which keeps the start mark
of every node; those nodes, or plain data that was parsed elsewhere (a Kubernetes object, JSON from Consul
KV), are turned into one small located tree (`document.py`). A single validating walk over that tree
(`walker.py`, built on the generic checks of `checks.py` and the bounds and patterns of `rules.py`) collects
every problem, each with its file, line, column and YAML path, and only a document without any problem
becomes a Catalog and a Policy. Nothing partial is ever returned: a document is accepted whole or rejected
whole (docs/protocol.md R38), so the last good configuration keeps serving.

This module is the public entry point; the schema's bounds are re-exported here for the other layers.
"""

from __future__ import annotations

from pathlib import Path

from xds.model.service import Catalog, Service, ServiceName
from xds.policy import document
from xds.policy.errors import PolicyError, Problem
from xds.policy.reader import DEFAULT_MAX_BYTES, read_document_file
from xds.policy.rules import (
    MAX_CONNECT_TIMEOUT_S,
    MAX_ENDPOINT_WEIGHT,
    MAX_NAME_LENGTH,
    MAX_RETRIES,
    MAX_ROUTE_TIMEOUT_S,
    NAME_RE,
    VERSION,
)
from xds.policy.schema import Policy
from xds.policy.walker import ServiceEntry, walk

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_CONNECT_TIMEOUT_S",
    "MAX_ENDPOINT_WEIGHT",
    "MAX_NAME_LENGTH",
    "MAX_RETRIES",
    "MAX_ROUTE_TIMEOUT_S",
    "VERSION",
    "decode_document",
    "load_file",
    "parse_document",
    "parse_document_tree",
    "parse_policy",
    "policy_from_data",
]

_NAME_RE = NAME_RE
# Read on every call rather than bound into document.py, so the bound can be lowered here (tests do).
_MAX_NODES = document.MAX_NODES


def parse_document(text: str, *, where: str) -> tuple[Catalog, Policy]:
    """Parse the file format (services with endpoints, plus listeners): the catalog part carries the
    endpoints with `source="file:<where>"`; services listed without an `endpoints` key are settings only and
    stay out of the catalog. Raises PolicyError listing every problem."""
    _, _, catalog, policy = parse_document_tree(text, where=where)
    return catalog, policy


def node_budget() -> int:
    """The bound on a document's values that the parse enforces (document.MAX_NODES unless lowered)."""
    return _MAX_NODES


def parse_document_tree(text: str, *, where: str
                        ) -> tuple[document.Node | None, list[ServiceEntry], Catalog, Policy]:
    """`parse_document`, also returning the located tree and the walk's service entries, from which
    policy/incremental.py remembers each item of the document (issue 12)."""
    report = document.Report(where)
    root = document.compose(text, report, max_nodes=_MAX_NODES)
    services, policy = walk(report, root, endpoint_source=f"file:{where}")
    catalog = Catalog(tuple(Service(ServiceName(s.policy.name), s.endpoints) for s in services
                            if s.endpoints is not None))
    return root, services, catalog, policy


def parse_policy(text: str, *, where: str) -> Policy:
    """Parse a policy-only YAML or JSON document (service settings and listeners, no endpoints), keeping
    line numbers in the problems. Raises PolicyError."""
    report = document.Report(where)
    return walk(report, document.compose(text, report, max_nodes=_MAX_NODES), endpoint_source=None)[1]


def policy_from_data(data: object, *, where: str) -> Policy:
    """Validate an already-parsed policy-only document (a Kubernetes object, JSON from Consul KV).
    Problems carry the YAML path but no line. Raises PolicyError."""
    report = document.Report(where)
    return walk(report, document.from_data(data, report, max_nodes=_MAX_NODES), endpoint_source=None)[1]


def decode_document(data: bytes, *, where: str) -> str:
    """UTF-8 text of a document (a leading byte-order mark is dropped); PolicyError when it is not."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise PolicyError([Problem(where, line, None, f"not valid UTF-8 at byte {e.start}")]) from e


def load_file(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Catalog, Policy]:
    """Read and parse one file in the file format. Raises PolicyError, also when it cannot be read or is
    not a regular file of at most `max_bytes` (`reader.py`)."""
    where = str(path)
    data = read_document_file(path, max_bytes=max_bytes, where=where).data
    return parse_document(decode_document(data, where=where), where=where)
