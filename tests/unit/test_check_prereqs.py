"""scripts/check-prereqs (issue 14 item 6): `make test` checks the machine first and names what is missing
and how to get it. A fake `go` (XDS_TESTBIN_GO) stands in for an older local Go; the other tools are the
machine's own, which `make test` needs anyway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check-prereqs"


def _run(tmp_path: Path, go_version: str, **env: str) -> subprocess.CompletedProcess[str]:
    fake_go = tmp_path / "go"
    fake_go.write_text(f"#!/bin/sh\necho go{go_version}\n")
    fake_go.chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if k != "GOTOOLCHAIN"}
    environ.update(XDS_TESTBIN_GO=str(fake_go), PYTHON=sys.executable, **env)
    return subprocess.run([str(SCRIPT)], capture_output=True, text=True, env=environ, timeout=30, check=False)


def test_an_older_go_that_can_fetch_go_1_26_passes(tmp_path: Path) -> None:
    result = _run(tmp_path, "1.22.1")
    assert result.returncode == 0, result.stderr
    assert "Go 1.22.1 (Go 1.26 is fetched from the Go module proxy" in result.stdout


@pytest.mark.parametrize(("version", "env", "says"), [
    ("1.20.3", {}, "too old to fetch Go 1.26 itself"),
    ("1.22.1", {"GOTOOLCHAIN": "local"}, "GOTOOLCHAIN=local forbids fetching it"),
])
def test_a_go_that_cannot_build_is_named_with_the_fix(
        tmp_path: Path, version: str, env: dict[str, str], says: str) -> None:
    result = _run(tmp_path, version, **env)
    assert result.returncode == 1
    assert says in result.stderr and "https://go.dev/dl/" in result.stderr
    assert "1 prerequisite(s) missing for make test" in result.stderr


def test_demo_needs_only_python(tmp_path: Path) -> None:
    result = subprocess.run([str(SCRIPT), "--demo"], capture_output=True, text=True, timeout=30, check=False,
                            env={**os.environ, "PYTHON": sys.executable, "XDS_TESTBIN_GO": "/nonexistent"})
    assert result.returncode == 0, result.stderr
    assert "Go" not in result.stdout
