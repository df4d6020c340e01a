"""The idle-stream RSS benchmark (issue 12, benchmarks/idle_rss.py) at tiny sizes: its code works end to end.

Not a measurement: 20 services x 2 endpoints, 10 streams, one run each of SotW and delta against the real
server and the real xds-load client. The checks are that every stream synced and the report is complete.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.testbin import ensure_binary
from tests.backend_support import build_binaries

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def xds_load(pytestconfig: pytest.Config) -> None:
    build_binaries(pytestconfig, lambda: ensure_binary("xds-load"),
                   failure="xds-load is required by the idle-stream RSS benchmark and could not be built")


def test_quick_run_reports_every_mode_with_no_stream_lost(xds_load: None) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.idle_rss", "--services", "20", "--endpoints", "2",
         "--streams", "10", "--runs", "1", "--idle", "0.2"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    for mode in ("sotw", "delta"):
        runs = re.findall(rf"^  {mode}: CPU [\d.]+ ms/stream, RSS -?[\d.]+ KiB/stream, lost (\d+)$",
                          run.stdout, re.MULTILINE)
        assert runs == ["0"], run.stdout
        median = rf"^{mode} median: server CPU [\d.]+ ms per stream, RSS -?[\d.]+ KiB per idle stream$"
        assert re.search(median, run.stdout, re.MULTILINE), run.stdout
