"""Metric names that PromQL expressions refer to, and the names a Prometheus text exposition exports.

Test helpers for issue 14 item 4 (tests/e2e/test_envoy_stats_e2e.py): every metric a dashboard panel or an
alert rule names must be one the running control plane or Envoy actually exports, so a renamed metric breaks
a test instead of a dashboard. Not a full PromQL parser: strings, label matchers (`{...}`), ranges and
subqueries (`[...]`), grouping label lists (`by (...)`, `on (...)`, ...) and Grafana variables are removed
first; what remains that looks like an identifier is a metric name unless a `(` follows it (a function or
an aggregation) or it is a keyword or operator word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Words that are not metric names wherever they appear outside `{}` and `[]` (PromQL's operators and
# modifiers; aggregations and functions are recognised by the `(` after them, or by `by`/`without`).
KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "atan2", "inf", "nan", "start", "end",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "limitk", "limit_ratio",
})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
# An identifier not preceded by a word character, a dot or a colon (so `4e6` and `1.5e3` are numbers).
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)")


def metric_names(expression: str) -> set[str]:
    """The metric names `expression` selects."""
    text = _VARIABLE.sub(" ", _STRING.sub(" ", expression))
    text = _RANGE.sub(" ", _MATCHERS.sub(" ", text))
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(1)
        rest = text[match.end():].lstrip()
        if name.lower() in KEYWORDS or rest.startswith("("):
            continue
        names.add(name)
    return names


def exported_names(exposition: str) -> set[str]:
    """Every series name a Prometheus text exposition offers: the sample names, and for each `# TYPE` line
    the names that family can have (a histogram's `_bucket`, `_sum`, `_count`; a counter with and without
    `_total`), so a family whose labelled children have no sample yet still counts as exported."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = [*line.split(), ""][:4]
            names.add(family)
            if kind in ("histogram", "summary"):
                names.update(f"{family}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            elif kind == "counter":
                names.add(family if family.endswith("_total") else f"{family}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def missing_names(expressions: Iterable[str], exported: set[str]) -> dict[str, set[str]]:
    """Per expression, the metric names it uses that `exported` lacks (empty dict: all present)."""
    missing: dict[str, set[str]] = {}
    for expression in expressions:
        absent = metric_names(expression) - exported
        if absent:
            missing[expression] = absent
    return missing
