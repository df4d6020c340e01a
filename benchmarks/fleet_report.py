"""Results of the fleet-scale benchmark (issue 12): medians per scenario and server, the table, the JSON."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from benchmarks.snapshot_build import environment

if TYPE_CHECKING:
    from benchmarks.fleet_scale import Options

_TOOLS = Path(__file__).resolve().parents[1] / "tools" / "testbin"
_GCP_MODULE = "github.com/envoyproxy/go-control-plane"

Key = tuple[str, int, str, str]  # mode, groups, scenario, server


@dataclass(slots=True)
class Results:
    samples: dict[Key, list[dict[str, float]]] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)
    profile: str = ""

    def add(self, mode: str, groups: int, scenario: str, server: str, sample: dict[str, float]) -> None:
        self.samples.setdefault((mode, groups, scenario, server), []).append(sample)

    def median(self, key: Key, metric: str) -> float:
        values = [s[metric] for s in self.samples.get(key, []) if metric in s]
        return statistics.median(values) if values else math.nan


# (scenario prefix, metric, row label, unit, format)
_STORM_ROWS = (
    ("cpu_per_stream_ms", "server CPU per stream", "ms"),
    ("sync_s", "time to all synced", "s"),
    ("rss_per_stream_kib", "RSS per idle stream", "KiB"),
    ("lost", "streams lost (never synced)", ""),
)
_CHANGE_ROWS = (
    ("change_p50_s", "all ACKed, p50 over changes of per-change p99", "s"),
    ("change_p99_s", "all ACKed, p99 over changes of per-change p99", "s"),
    ("cpu_per_change_s", "server CPU per change", "CPU-s"),
    ("not_converged", "stream-changes not ACKed in 60 s", ""),
)


def _number(value: float, unit: str) -> str:
    if value != value:
        return "-"
    if unit == "":
        return f"{value:.0f}"
    text = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{text} {unit}"


def _ratio(ours: float, theirs: float) -> str:
    if ours != ours or theirs != theirs:
        return "-"
    if theirs == 0:
        return "=" if ours == 0 else "inf"
    return f"{ours / theirs:.2f}x"


def gcp_version() -> str:
    try:
        from harness.testbin import required_version

        return required_version(_TOOLS / "gcp-server" / "go.mod", _GCP_MODULE)
    except Exception:  # the wrapper module is not there (yet): say so rather than fail the report
        return "unknown"


def versions(pinned: bool) -> list[str]:
    placement = ("servers pinned to core 0, xds-load to core 1 (taskset)" if pinned
                 else "not pinned (fewer than 2 usable cores, or --no-pin)")
    return [*environment(), f"go-control-plane {gcp_version()} (tools/testbin/gcp-server); {placement}"]


def table_rows(results: Results, options: Options, mode: str, groups: int) -> list[list[str]]:
    servers = options.servers
    rows = []
    entries: list[tuple[str, str, str, str]] = []
    for streams in options.storm:
        entries += [(f"storm/{streams}", metric, f"storm N={streams}: {label}", unit)
                    for metric, label, unit in _STORM_ROWS]
    for source in options.sources:
        entries += [(f"change/{source}", metric, f"change via {source}, N={options.change_streams}: {label}",
                     unit) for metric, label, unit in _CHANGE_ROWS]
    for scenario, metric, label, unit in entries:
        values = [results.median((mode, groups, scenario, server), metric) for server in servers]
        row = [label, _number(values[0], unit)]
        if len(values) > 1:
            row += [_number(values[1], unit), _ratio(values[0], values[1])]
            row += [_number(v, unit) for v in values[2:]]
        rows.append(row)
    return rows


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |", file=out)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |", file=out)


def print_report(results: Results, options: Options, out: TextIO) -> None:
    served = results.setup.get("served", {})
    print(f"fleet_scale: {options.services} services x {options.endpoints} endpoints "
          f"({', '.join(f'{n} {t}' for t, n in served.items())}); medians of {options.repeats} run(s), "
          f"servers run alternately, a fresh process per run", file=out)
    for line in versions(options.pin):
        print(line, file=out)
    header = ["", "this server"]
    if options.reference:
        header += ["gcp LinearCache", "this/gcp"]
    if options.reference and options.snapshot_cache:
        header.append("gcp SnapshotCache")
    for mode in options.modes:
        for groups in options.groups:
            print(file=out)
            print(f"mode {mode}, {groups} node group(s):", file=out)
            _print_table(header, table_rows(results, options, mode, groups), out)
    if results.profile:
        print(file=out)
        print("this server under cProfile, change run via file (top 15 xds functions by cumulative time):",
              file=out)
        print(results.profile.rstrip(), file=out)


def write_json(results: Results, options: Options, path: Path) -> None:
    document = {
        "versions": versions(options.pin),
        "setup": results.setup,
        "results": [
            {"mode": mode, "groups": groups, "scenario": scenario, "server": server, "samples": samples,
             "median": {metric: results.median((mode, groups, scenario, server), metric)
                        for metric in samples[0]} if samples else {}}
            for (mode, groups, scenario, server), samples in results.samples.items()
        ],
        "profile": results.profile,
    }
    path.write_text(json.dumps(document, indent=1, allow_nan=True) + "\n")
