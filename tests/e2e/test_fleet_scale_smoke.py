"""The fleet-scale benchmark (issue 12, benchmarks/fleet_scale.py) at tiny sizes: its code works end to end.

Not a measurement: 20 services x 2 endpoints, 10 streams, 2 changes, SotW and delta, this server and
gcp-server on real processes, the changes through the file and through a real Consul agent. The checks are
that every run completed (every stream synced, every change ACKed by every stream) and that the report and
its JSON are complete, with a ratio on every row.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.testbin import ensure_binary
from tests.backend_support import build_binaries

REPO = Path(__file__).resolve().parents[2]
MODES = ("sotw", "delta")
SCENARIOS = ("storm/10", "change/file", "change/consul")
SERVERS = ("this", "gcp-linear")
ROWS_PER_TABLE = 12  # 4 storm rows + 4 rows per change path
_RUN_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def binaries(pytestconfig: pytest.Config) -> None:
    """Built before the run is timed (the first run of a machine builds them; later runs reuse the cache)."""
    for name in ("xds-load", "gcp-server", "consul"):
        build_binaries(pytestconfig, lambda name=name: ensure_binary(name),  # type: ignore[misc]
                       failure=f"{name} is required by the fleet-scale benchmark and could not be built")


def test_quick_run_is_complete_and_sane(binaries: None, tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    args = [sys.executable, "-m", "benchmarks.fleet_scale", "--quick", "--modes", ",".join(MODES),
            "--json", str(out), "--workdir", str(tmp_path / "work")]
    run = subprocess.run(args, capture_output=True, text=True, timeout=_RUN_TIMEOUT_S, cwd=REPO, check=False)
    assert run.returncode == 0, f"exit {run.returncode}:\n{run.stderr[-4000:]}"

    document = json.loads(out.read_text())
    results = {(r["mode"], r["scenario"], r["server"]): r for r in document["results"]}
    assert set(results) == {(m, s, v) for m in MODES for s in SCENARIOS for v in SERVERS}
    for (mode, scenario, server), result in results.items():
        where = f"{mode} {scenario} {server}"
        (sample,) = result["samples"]  # --quick: one repeat
        assert sample["lost"] == 0, where
        if scenario.startswith("storm/"):
            assert sample["synced"] == 10, where
            assert 0 < sample["sync_s"] < 20, where
            assert sample["cpu_per_stream_ms"] >= 0 and math.isfinite(sample["rss_per_stream_kib"]), where
        else:
            assert sample["not_converged"] == 0, where
            assert 0 < sample["change_p50_s"] <= sample["change_p99_s"] < 60, where
            assert sample["cpu_per_change_s"] >= 0, where
    assert any("go-control-plane v0.14.0" in line for line in document["versions"])
    assert document["setup"]["served"] == {"Cluster": 20, "ClusterLoadAssignment": 20, "Listener": 1,
                                           "RouteConfiguration": 1}

    # The printed table: one per mode, every row with both servers' values and a ratio.
    tables = run.stdout.split("\nmode ")[1:]
    assert [t.split(",")[0] for t in tables] == list(MODES)
    for table in tables:
        rows = [line for line in table.splitlines() if line.startswith(("| storm", "| change"))]
        assert len(rows) == ROWS_PER_TABLE, table
        for row in rows:
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert len(cells) == 4 and all(cells), row
            assert re.fullmatch(r"\d+\.\d\dx|=|inf", cells[3]), row
