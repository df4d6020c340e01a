"""README.md's "A two-minute tour", followed exactly as written, so the README cannot rot (issue 14).

The tour once ended in 503/502: nothing listened on the catalog's upstream ports, `api` was declared
HTTP/2 against a plain HTTP/1.1 server, and two `serve` lines fought over the same ports. This test reads
the tour's fenced `sh` blocks out of README.md and runs every line in order, in a scratch directory that
looks like the repository root (`.venv`, `examples`, `harness`), with the tour's own fixed ports. The
conventions it relies on are the README's own:
- a line ending in `&` runs in the background (the shell's meaning); the test starts it as a process group;
- `kill %1 %2` stops those background jobs by number, as in an interactive shell;
- a comment `# -> a or b` is the output the line must print: one of the alternatives, exactly;
- every other line must exit 0. A person types the next line after the previous one is up, so a line that
  fails is retried until it passes or `_LINE_TIMEOUT_S` ends: a poll on the line's own success.
`curl` lines must also answer 200, checked with a request of our own to the same URL.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import LOOPBACK

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
TOUR_HEADING = "## A two-minute tour"
# The fixed ports the tour uses: examples/catalog.yaml's upstreams and listener, `xds serve`'s defaults
# (xDS, management API, admin) and the Envoy admin port of `xds bootstrap`'s default.
TOUR_PORTS = (8081, 8082, 8083, 10000, 18000, 18001, 19005, 9901)
_LINE_TIMEOUT_S = 20.0
_RUN_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
_RETRY_S = 0.2

# What a line's output must show beyond exiting 0, for lines whose comment cannot say it briefly.
_EXTRA_CHECKS: dict[str, Callable[[str], bool]] = {
    # The tour's Envoy is connected and has accepted what it was sent: a NACK would mean a broken example.
    "xds status": lambda out: re.search(r"^envoy-1\b.*SYNCED", out, re.M) is not None and "NACKED" not in out,
    "xds render": lambda out: "ingress" in out and "api" in out,
    "/metrics": lambda out: "xds_" in out,
}


@dataclass(frozen=True, slots=True)
class TourLine:
    command: str
    background: bool
    expected: tuple[str, ...]  # from `# -> a or b`; empty: no output check


@dataclass(frozen=True, slots=True)
class Job:
    command: str
    process: subprocess.Popen[bytes]
    output: Path


def tour_lines(readme: str) -> list[TourLine]:
    """The shell lines of the tour section, in order; comment-only lines are left out."""
    start = readme.index(TOUR_HEADING)
    end = readme.find("\n## ", start + len(TOUR_HEADING))
    section = readme[start:] if end == -1 else readme[start:end]
    lines = []
    for block in re.findall(r"^```sh\n(.*?)^```", section, flags=re.M | re.S):
        for raw in block.splitlines():
            # A comment starts at a `#` that begins a word, as in the shell.
            mark = re.search(r"(?:^|\s)#", raw)
            command, comment = (raw[:mark.start()], raw[mark.end():]) if mark else (raw, "")
            command = command.strip()
            if not command:
                continue
            background = command.endswith("&") and not command.endswith("&&")
            command = command.removesuffix("&").strip() if background else command
            expected: tuple[str, ...] = ()
            if comment.strip().startswith("->"):
                wanted = comment.strip().removeprefix("->").split("(")[0]
                expected = tuple(part.strip() for part in wanted.split(" or ") if part.strip())
            lines.append(TourLine(command, background, expected))
    return lines


def test_tour_lines_are_parsed_with_their_markers() -> None:
    readme = f"{TOUR_HEADING}\n\n```sh\nserve --x &   # runs\n  # a comment\nget /  # -> a or b (c)\n" \
             "a && b\n```\n\n## Next\n```sh\nnot this\n```\n"
    assert tour_lines(readme) == [TourLine("serve --x", True, ()), TourLine("get /", False, ("a", "b")),
                                  TourLine("a && b", False, ())]


def _port_holder(port: int) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers themselves bind: connections of an earlier run in TIME-WAIT do not block them.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError as exc:
            return f"{LOOPBACK}:{port} ({exc.strerror})"
    return None


@pytest.fixture
def tour_dir(tmp_path: Path) -> Path:
    """A scratch directory that looks like the repository root to the tour's relative paths."""
    venv = Path(sys.prefix)
    assert (venv / "bin" / "xds").exists(), f"the tests must run from the project's venv, not {venv}"
    for name, target in ((".venv", venv), ("examples", REPO / "examples"), ("harness", REPO / "harness")):
        (tmp_path / name).symlink_to(target, target_is_directory=True)
    return tmp_path


@pytest.fixture
def jobs() -> Iterator[list[Job]]:
    started: list[Job] = []
    yield started
    for job in started:
        if job.process.poll() is None:
            os.killpg(job.process.pid, signal.SIGKILL)
            job.process.wait(timeout=_STOP_TIMEOUT_S)


def _start(line: TourLine, cwd: Path, number: int) -> Job:
    output = cwd / f"background-{number}.out"
    with output.open("wb") as out:
        # Its own process group, like a shell job: `kill %N` and the cleanup reach bash and its child.
        process = subprocess.Popen(["bash", "-c", line.command], cwd=cwd, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return Job(line.command, process, output)


def _check_alive(jobs: list[Job]) -> None:
    for number, job in enumerate(jobs, 1):
        code = job.process.poll()
        assert code is None, (f"background job %{number} `{job.command}` exited with {code}:\n"
                              f"{job.output.read_text(errors='replace')[-3000:]}")


def _curl_url(command: str) -> str | None:
    words = shlex.split(command)
    if words[0] != "curl":
        return None
    return "http://" + next(w for w in words[1:] if not w.startswith("-"))


def _problem(line: TourLine, result: subprocess.CompletedProcess[str]) -> str | None:
    """Why this run of `line` does not pass yet; None when it passes."""
    if result.returncode != 0:
        return f"exit {result.returncode}: {result.stderr[-2000:]}"
    out = result.stdout.strip()
    if line.expected and out not in line.expected:
        return f"printed {out[:300]!r}, the README says one of {line.expected}"
    for marker, check in _EXTRA_CHECKS.items():
        if marker in line.command and not check(result.stdout):
            return f"unexpected output for {marker!r}: {result.stdout[-2000:]}"
    url = _curl_url(line.command)
    if url is not None:
        try:
            with urllib.request.urlopen(url, timeout=_RUN_TIMEOUT_S) as response:
                if response.status != 200:
                    return f"{url} answered {response.status}"
        except OSError as exc:  # urllib's HTTPError (a non-2xx answer) is an OSError too
            return f"{url}: {exc}"
    return None


def _run_until_it_passes(line: TourLine, cwd: Path, jobs: list[Job]) -> str:
    deadline = time.monotonic() + _LINE_TIMEOUT_S
    problem = "never ran"
    while time.monotonic() < deadline:
        _check_alive(jobs)
        result = subprocess.run(["bash", "-c", line.command], cwd=cwd, capture_output=True, text=True,
                                timeout=_RUN_TIMEOUT_S, check=False)
        problem = _problem(line, result) or ""
        if not problem:
            return result.stdout
        time.sleep(_RETRY_S)  # between polls of the line's own success, not a wait for an event
    logs = "\n".join(f"--- %{n} {j.command}\n{j.output.read_text(errors='replace')[-1500:]}"
                     for n, j in enumerate(jobs, 1))
    raise AssertionError(f"README tour line `{line.command}` did not pass within {_LINE_TIMEOUT_S:g} s: "
                         f"{problem}\nbackground jobs:\n{logs}")


def _kill(line: TourLine, jobs: list[Job]) -> None:
    numbers = [int(word.removeprefix("%")) for word in line.command.split()[1:]]
    for number in numbers:
        os.killpg(jobs[number - 1].process.pid, signal.SIGTERM)
    for number in numbers:
        job = jobs[number - 1]
        try:
            job.process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`{line.command}` did not stop %{number} `{job.command}` within "
                                 f"{_STOP_TIMEOUT_S:g} s") from None


def test_every_line_of_the_readme_tour_works_as_written(tour_dir: Path, jobs: list[Job]) -> None:
    lines = tour_lines(README.read_text(encoding="utf-8"))
    commands = [line.command for line in lines]
    # The tour's promises, so that a rewrite cannot quietly drop what this test is for.
    assert sum(line.background for line in lines) == 3, commands
    assert sum(c.startswith(".venv/bin/xds serve") for c in commands) == 1, commands
    assert [line.expected for line in lines if line.command.startswith("curl") and line.expected], commands
    assert re.fullmatch(r"kill( %\d+)+", commands[-1]), commands

    taken = [holder for port in TOUR_PORTS if (holder := _port_holder(port)) is not None]
    assert not taken, f"the tour's fixed ports are in use, so it cannot run here: {', '.join(taken)}"

    outputs: dict[str, str] = {}
    for line in lines:
        if line.background:
            jobs.append(_start(line, tour_dir, len(jobs) + 1))
        elif re.fullmatch(r"kill( %\d+)+", line.command):
            _kill(line, jobs)
        else:
            outputs[line.command] = _run_until_it_passes(line, tour_dir, jobs)

    # After the tour's own `kill`, every job it started is gone.
    assert all(job.process.poll() is not None for job in jobs)
    # The canary line reached a web upstream and the /api line reached api: no 503 "no healthy upstream".
    bodies = {c: out.strip() for c, out in outputs.items() if c.startswith("curl") and "/metrics" not in c}
    assert set(bodies.values()) <= {"web-v1", "web-v2", "api"}, bodies
    assert "api" in bodies.values(), bodies
