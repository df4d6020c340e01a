"""Smoke test of the snapshot benchmark's code at tiny sizes: it runs and prints a complete table.

Timings are not asserted (they depend on the machine); only that every timed step printed a positive
number and that the sanity checks the benchmark makes on its own data passed. The convergence benchmark
starts real processes and is not run here: the end-to-end tests cover convergence correctness.
"""

from __future__ import annotations

import io
import re

from benchmarks import snapshot_build

STEPS = (
    "parse_document (YAML file source)",
    "policy apply",
    "translate (cold)",
    "make_snapshot (serialize+hash+check)",
    "total build (build_snapshot)",
    "rebuild, 1 endpoint changed, previous=",
    "store.publish, 100 watchers",
    "3 streams: protocol + encode",
    "3 streams: encode_response only",
    "3 streams: naive Pack+Serialize",
)
_NUMBER = r"(\d+(?:\.\d+)?)"


def _run(*args: str) -> str:
    out = io.StringIO()
    assert snapshot_build.main(list(args), out=out) == 0
    return out.getvalue()


def test_snapshot_benchmark_prints_a_table_of_positive_numbers() -> None:
    text = _run("--services", "20", "--endpoints", "2", "--runs", "1", "--streams", "3")

    for step in STEPS:
        match = re.search(rf"^{re.escape(step)}\s+{_NUMBER}\s+{_NUMBER}\s+{_NUMBER}\s+{_NUMBER}\s*$",
                          text, re.MULTILINE)
        assert match is not None, f"no row for {step!r} in:\n{text}"
        median, low, high, cpu = (float(g) for g in match.groups())
        assert median > 0 and cpu > 0, match.group(0)
        assert low <= median <= high, match.group(0)

    for ratio in ("rebuild with previous= / full build", "naive / (protocol + encode)",
                  "naive / encode_response only"):
        match = re.search(rf"{re.escape(ratio)}: {_NUMBER}x", text)
        assert match is not None and float(match.group(1)) > 0, ratio

    for kind, count in (("CDS", 20), ("EDS", 20), ("LDS", 1), ("RDS", 1)):
        match = re.search(rf"^  {kind}: {count} resources, {_NUMBER} B", text, re.MULTILINE)
        assert match is not None and float(match.group(1)) > 0, kind
    # One endpoint changed: every resource but that service's ClusterLoadAssignment is shared.
    assert "CDS 20/20, EDS 19/20, LDS 1/1, RDS 1/1" in text
    assert "parses to the same World as built in memory: yes" in text
    assert "cached and naive responses carry the same resources: yes" in text
    assert "notified 100 of 100 watchers" in text
    assert re.search(r"protobuf \S+ \(backend \w+\)", text)
    assert re.search(r"cores: \d+", text)


def test_snapshot_benchmark_spreads_services_over_listeners() -> None:
    text = _run("--services", "6", "--endpoints", "1", "--listeners", "3", "--runs", "1", "--streams", "1",
                "--watchers", "2")

    assert "3 listener(s)" in text
    assert re.search(r"^  LDS: 3 resources", text, re.MULTILINE)
    assert re.search(r"^  RDS: 3 resources", text, re.MULTILINE)
    assert "notified 2 of 2 watchers" in text
