"""The demo's closing summary: a table for people and one `DEMO-SUMMARY <json>` line for scripts and tests."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.demo.constants import SUMMARY_MARKER, UPSTREAMS
from harness.demo.ledger import Ledger


def build_summary(ledger: Ledger, *, outcome: str, failures: Sequence[str], pids: Mapping[str, int],
                  workdir: Path) -> dict[str, Any]:
    """The outcome, every phase's counts and convergence, and the pids a script can check are gone."""
    phases = []
    for phase in ledger.phases:
        total = phase.total()
        phases.append({
            "name": phase.name,
            "target": {"web-v1": phase.weights[0], "web-v2": phase.weights[1]},
            "convergence_s": _rounded(phase.convergence_s),
            "applied_s": {e: _rounded(s) for e, s in sorted(phase.applied_s.items())},
            "requests": dict(sorted(total.upstreams.items())),
            "requests_after_convergence": dict(sorted(total.after_convergence.items())),
            "non_2xx": total.non_2xx,
            "errors": total.errors,
            "by_envoy": {e: dict(sorted(c.upstreams.items())) for e, c in sorted(phase.by_envoy.items())},
        })
    return {
        "outcome": outcome,
        "completed": outcome == "completed",
        "phases": phases,
        "non_2xx": sum(p["non_2xx"] for p in phases),
        "errors": sum(p["errors"] for p in phases),
        "convergence_s": [_rounded(p.convergence_s) for p in ledger.phases if p.edited],
        "failures": list(failures),
        "pids": dict(pids),
        "workdir": str(workdir),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    lines = [f"demo: {summary['outcome']}; every process it started is stopped. Logs: {summary['workdir']}"]
    if summary["phases"]:
        lines.append(f"  {'phase':<9} {'converged':>10} {'web-v1':>8} {'web-v2':>8} {'api':>8} "
                     f"{'non-2xx':>8} {'errors':>7}")
        for p in summary["phases"]:
            conv = "-" if p["convergence_s"] is None else f"{p['convergence_s']:.2f} s"
            req = p["requests"]
            counts = " ".join(f"{req.get(name, 0):>8}" for name in UPSTREAMS)
            lines.append(f"  {p['name']:<9} {conv:>10} {counts} {p['non_2xx']:>8} {p['errors']:>7}")
        lines.append(f"  non-2xx total {summary['non_2xx']}, errors total {summary['errors']}; "
                     "convergence = catalog edit -> both Envoys run the new weights")
    for failure in summary["failures"]:
        lines.append(f"  failure: {failure}")
    lines.append(f"{SUMMARY_MARKER} {json.dumps(summary, sort_keys=True)}")
    return "\n".join(lines)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
