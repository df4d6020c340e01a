"""The reference tables of docs/config.md, rendered from the field declarations (issue 8).

Each table sits between two marker comments naming it; everything else in docs/config.md (the prose, the
examples, the notes below a table) stays hand-written. tests/unit/test_policy_reference.py checks that the
file holds what the declarations render. Regenerate after changing a declaration with
`xds schema --update-docs docs/config.md` (or `python -m xds.policy.reference docs/config.md`).
"""

from __future__ import annotations

import enum
import re
import sys
from pathlib import Path
from typing import TypeVar

from xds.policy.catalog_fields import ENDPOINT
from xds.policy.cluster_fields import (
    CIRCUIT_BREAKERS,
    GRPC_HEALTH_CHECK,
    HEALTH_CHECK,
    HTTP_HEALTH_CHECK,
    LOCALITY_POLICY,
    LOCALITY_WEIGHT,
    OUTLIER_DETECTION,
    RETRY_BUDGET,
)
from xds.policy.dns_fields import DNS
from xds.policy.fields import MISSING, Choice, Declared, Duration, Nested, Shape, erase
from xds.policy.lb_fields import LOAD_BALANCER, TCP_KEEPALIVE, UPSTREAM_CONNECTION
from xds.policy.schema import (
    AUTHORIZATION_RULE,
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
    SERVICE,
)
from xds.policy.tracing_fields import TRACING, TRACING_TAG

_T = TypeVar("_T")

# The tables by the name their markers use, in the order docs/config.md has them.
TABLES: dict[str, Shape[object]] = {
    "top-level": erase(DOCUMENT), "services": erase(SERVICE), "endpoints": erase(ENDPOINT),
    "outlier-detection": erase(OUTLIER_DETECTION), "circuit-breakers": erase(CIRCUIT_BREAKERS),
    "retry-budget": erase(RETRY_BUDGET), "health-check": erase(HEALTH_CHECK),
    "http-health-check": erase(HTTP_HEALTH_CHECK), "grpc-health-check": erase(GRPC_HEALTH_CHECK),
    "load-balancer": erase(LOAD_BALANCER), "upstream-connection": erase(UPSTREAM_CONNECTION),
    "tcp-keepalive": erase(TCP_KEEPALIVE),
    "listeners": erase(LISTENER), "routes": erase(ROUTE), "header-conditions": erase(HEADER),
    "backends": erase(BACKEND), "retries": erase(RETRY), "hash-policy": erase(HASH),
    "hash-cookie": erase(COOKIE), "fault": erase(FAULT), "fault-delay": erase(FAULT_DELAY),
    "fault-abort": erase(FAULT_ABORT), "locality": erase(LOCALITY_POLICY),
    "locality-weights": erase(LOCALITY_WEIGHT), "dns": erase(DNS),
    "authorization": erase(AUTHORIZATION_RULE),
    "tracing": erase(TRACING), "tracing-tags": erase(TRACING_TAG),
}

_BEGIN = "<!-- BEGIN generated table {name}: xds schema --update-docs docs/config.md -->"
_END = "<!-- END generated table {name} -->"


def _shown_default(field: Declared) -> str:
    spec, value = field.spec, field.default
    if spec.required:
        return "required"
    if spec.shown_default is not None:
        return spec.shown_default
    if isinstance(spec.kind, Choice):
        return f"`{spec.kind.word(value)}`"
    if isinstance(spec.kind, Duration) and isinstance(value, float):
        return f"`{value:g}s`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if value is MISSING or value is None:
        return ""
    return f"`{value}`"


def _rows(shape: Shape[_T], prefix: str = "") -> list[str]:
    rows: list[str] = []
    for field in shape.fields:
        kind = field.spec.kind
        if isinstance(kind, Nested) and kind.shape.group:
            # A group such as a route's `match` is flattened into `match.prefix`, `match.headers`.
            rows += _rows(kind.shape, f"{prefix}{field.key}.")
            continue
        cells = (f"`{prefix}{field.key}`", _shown_default(field), field.spec.doc)
        rows.append("| " + " | ".join(cells).replace("|  |", "| |") + " |")
    return rows


def render_table(shape: Shape[_T]) -> str:
    return "\n".join(["| Key | Default | Meaning |", "|---|---|---|", *_rows(shape)])


def _block(name: str) -> re.Pattern[str]:
    return re.compile(re.escape(_BEGIN.format(name=name)) + r"\n.*?" + re.escape(_END.format(name=name)),
                      flags=re.S)


def update(text: str) -> str:
    """`text` (docs/config.md) with every generated table replaced by what the declarations render. Raises
    ValueError when a table's markers are missing, so a table cannot silently stop being generated."""
    for name, shape in TABLES.items():
        found = _block(name).search(text)
        if found is None:
            raise ValueError(f"the markers of table {name!r} are missing: {_BEGIN.format(name=name)}")
        rendered = f"{_BEGIN.format(name=name)}\n{render_table(shape)}\n{_END.format(name=name)}"
        text = text[:found.start()] + rendered + text[found.end():]
    return text


def update_file(path: Path) -> bool:
    """Rewrite the generated tables of `path`; whether anything changed."""
    old = path.read_text()
    new = update(old)
    if new != old:
        path.write_text(new)
    return new != old


def main() -> None:
    for arg in sys.argv[1:] or ["docs/config.md"]:
        update_file(Path(arg))


if __name__ == "__main__":
    main()
