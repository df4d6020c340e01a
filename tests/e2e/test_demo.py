"""`python -m harness.demo` end to end: the real demo as a user runs it, real Envoys, nothing left over.

The demo writes one final `DEMO-SUMMARY {json}` line; the assertions read that rather than the screen text,
except for the per-phase lines a person watching relies on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.demo import SUMMARY_MARKER, WORKDIR_NAME
from harness.demo.upstreams import TOUR_UPSTREAMS

REPO = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_S = 120.0
PHASES = ("90/10", "50/50", "0/100")


def _env() -> dict[str, str]:
    # The demo runs from a scratch directory (its .demo/ goes there); it must still import this checkout.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _summary(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.startswith(SUMMARY_MARKER + " ")]
    assert lines, f"no {SUMMARY_MARKER} line in the output:\n{output[-3000:]}"
    summary: dict[str, Any] = json.loads(lines[-1].removeprefix(SUMMARY_MARKER + " "))
    return summary


def _cmdline(pid: int) -> str | None:
    """The command line of a live process, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _leftovers(workdir: Path, pids: dict[str, int]) -> list[str]:
    """Processes the demo started that still run: by pid, and by any process naming the work dir."""
    found = []
    for name, pid in pids.items():
        cmdline = _cmdline(pid)
        # A reused pid belongs to someone else; ours name files in the work dir on their command line.
        if cmdline is not None and str(workdir) in cmdline:
            found.append(f"{name} (pid {pid}): {cmdline}")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in pids.values():
            cmdline = _cmdline(int(entry.name))
            if cmdline is not None and str(workdir) in cmdline:
                found.append(f"pid {entry.name}: {cmdline}")
    return found


def _assert_nothing_left(workdir: Path, pids: dict[str, int]) -> None:
    assert {"control-plane", "envoy-1", "envoy-2"} <= pids.keys(), pids
    # Stopping is synchronous in the demo, but give the kernel a moment to finish reaping.
    deadline = time.monotonic() + 5.0
    left = _leftovers(workdir, pids)
    for _ in range(50):
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
        left = _leftovers(workdir, pids)
    assert not left, "processes started by the demo survived it:\n" + "\n".join(left)


def _web_total(counts: dict[str, int]) -> int:
    return counts.get("web-v1", 0) + counts.get("web-v2", 0)


def test_once_runs_every_phase_converges_and_cleans_up(tmp_path: Path) -> None:
    stale = tmp_path / WORKDIR_NAME / "left-from-last-run"
    stale.parent.mkdir()
    stale.write_text("the demo wipes its work dir at start")

    result = subprocess.run(
        [sys.executable, "-m", "harness.demo", "--once", "--plain", "--phase-seconds", "4"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, check=False,
    )
    output = result.stdout
    assert result.returncode == 0, (
        f"exit {result.returncode}\n{output[-4000:]}\nstderr:\n{result.stderr[-4000:]}")
    summary = _summary(output)
    workdir = tmp_path / WORKDIR_NAME

    # The start-up lines tell a person where to look.
    assert f"work dir {workdir}" in output
    assert "/metrics" in output
    assert "admin http://127.0.0.1:" in output
    assert not stale.exists()
    assert (workdir / "catalog.yaml").is_file()

    # Every phase is announced, with its edit and its convergence.
    for number, name in enumerate(PHASES, 1):
        assert f"phase {number}/3 {name}: edited catalog.yaml" in output, output[-4000:]
        assert f"{name} applied: envoy-1 " in output, output[-4000:]

    assert summary["completed"] is True
    assert summary["failures"] == []
    phases = {p["name"]: p for p in summary["phases"]}
    assert list(phases) == ["baseline", *PHASES]
    for name in PHASES:
        convergence = phases[name]["convergence_s"]
        assert convergence is not None and 0 < convergence < 10, (name, convergence)
        assert set(phases[name]["applied_s"]) == {"envoy-1", "envoy-2"}
    assert summary["convergence_s"] == [phases[n]["convergence_s"] for n in PHASES]

    assert summary["non_2xx"] == 0, summary
    assert summary["errors"] == 0, summary
    for phase in phases.values():
        assert phase["requests"].get("api", 0) > 0, phase  # the /api route kept serving throughout

    # Before the canary, v1 takes everything.
    assert phases["baseline"]["requests"].get("web-v2", 0) == 0, phases["baseline"]

    # Once both Envoys run 50/50 the split is even; the bounds are over 4 standard deviations wide.
    even = phases["50/50"]["requests_after_convergence"]
    assert _web_total(even) > 100, even
    assert 0.3 < even.get("web-v1", 0) / _web_total(even) < 0.7, even

    # At 0/100, v1 gets nothing once the edit is applied (a request racing the switch at most).
    done = phases["0/100"]["requests_after_convergence"]
    assert done.get("web-v2", 0) > 100, done
    assert done.get("web-v1", 0) <= max(1, _web_total(done) // 100), done
    # And over the whole phase, only what was in flight during the sub-second convergence went to v1.
    whole = phases["0/100"]["requests"]
    assert whole.get("web-v1", 0) / _web_total(whole) < 0.1, whole

    _assert_nothing_left(workdir, summary["pids"])


def test_sigint_stops_every_process_and_prints_the_summary(tmp_path: Path) -> None:
    log = tmp_path / "demo-output.txt"
    with log.open("w") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "harness.demo", "--plain", "--phase-seconds", "2"],
            cwd=tmp_path, env=_env(), stdout=out, stderr=subprocess.STDOUT, text=True,
        )
    try:
        # Interrupt in the middle of the run: after the first edit has been applied.
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        for _ in range(int(DEMO_TIMEOUT_S / 0.2)):
            if "90/10 applied:" in log.read_text() or demo.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert demo.poll() is None, f"the demo exited early:\n{log.read_text()[-4000:]}"
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0, log.read_text()[-4000:]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=10)

    summary = _summary(log.read_text())
    assert summary["outcome"] == "stopped by SIGINT"
    assert summary["completed"] is False
    assert summary["non_2xx"] == 0, summary
    _assert_nothing_left(tmp_path / WORKDIR_NAME, summary["pids"])


def _run_upstreams(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.demo", "upstreams", *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=30, check=False)


def test_upstreams_command_names_a_port_in_use_and_exits_1() -> None:
    # The tour's upstreams use examples/catalog.yaml's fixed ports; a second copy must say which is taken.
    port = dict(TOUR_UPSTREAMS)["web-v2"]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = _run_upstreams()
    assert result.returncode == 1, result
    assert f"cannot serve web-v2 on 127.0.0.1:{port}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_upstreams_command_rejects_arguments_and_documents_its_ports() -> None:
    rejected = _run_upstreams("--port", "1")
    assert rejected.returncode == 2, rejected
    assert "takes no arguments" in rejected.stderr
    usage = _run_upstreams("--help")
    assert usage.returncode == 0, usage
    for name, port in TOUR_UPSTREAMS:
        assert f"{name} on 127.0.0.1:{port}" in usage.stdout, usage.stdout
