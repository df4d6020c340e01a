"""The processes of the fleet-scale benchmark (issue 12): this server, gcp-server, xds-load; /proc readings.

Every child runs in its own process group and is registered with a `Children` owner, whose close() ends them
all (SIGTERM, then SIGKILL), so an error or Ctrl-C in the driver leaves nothing running on the shared machine.
xds-load and gcp-server speak JSON lines on stdout and take commands on stdin (the interface of
tools/testbin/README.md); a reader thread per child queues the lines, so a wait is always bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from harness.ports import LOOPBACK, free_ports
from harness.processes import ManagedProcess, tail_file, wait_until

_STOP_TIMEOUT_S = 10.0
_ADMIN_TIMEOUT_S = 2.0


def pinned(core: int | None, args: Sequence[str]) -> list[str]:
    """`taskset -c CORE args...` (taskset execs the program, so the pid is the program's own)."""
    if core is None or shutil.which("taskset") is None:
        return list(args)
    return ["taskset", "-c", str(core), *args]


# --- /proc ------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (proc(5): fields 14 and 15 of /proc/<pid>/stat, after the command name)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- JSON-line children -----------------------------------------------------------------------------------


class ChildFailedError(RuntimeError):
    """A child exited, or did not print the expected event in time."""


class JsonLineChild:
    """A child that prints one JSON object per line and reads commands from stdin."""

    def __init__(self, name: str, args: Sequence[str], *, log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        self._popen = subprocess.Popen(list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=self._log, start_new_session=True, text=True, bufsize=1)
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._popen.pid

    def _read(self) -> None:
        assert self._popen.stdout is not None
        for line in self._popen.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "unparsed", "line": line[:200]}
            self._lines.put(event if isinstance(event, dict) else {"event": "unparsed", "line": line[:200]})
        self._lines.put(None)

    def send(self, command: str) -> None:
        assert self._popen.stdin is not None
        try:
            self._popen.stdin.write(command + "\n")
            self._popen.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise ChildFailedError(f"{self.name}: cannot send {command!r}: {e}; "
                                   f"log tail:\n{self.tail()}") from e

    def expect(self, event: str, *, timeout_s: float, key: str | None = None,
               value: object = None) -> dict[str, Any]:
        """The next line whose "event" is `event` (and whose `key` equals `value`); skips the others."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildFailedError(f"{self.name}: no {event!r} event within {timeout_s:g} s; log tail:\n"
                                  f"{self.tail()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self._lines.put(None)  # later waits fail at once too
                raise ChildFailedError(f"{self.name} exited (code {self._popen.poll()}) before {event!r}; "
                                  f"log tail:\n{self.tail()}")
            if line.get("event") == event and (key is None or str(line.get(key)) == str(value)):
                return line

    def tail(self, n: int = 20) -> str:
        self._log.flush()
        return tail_file(self.log_path, n)

    def close(self) -> None:
        """`quit`, then SIGTERM and SIGKILL to the group if it does not exit."""
        if self._popen.poll() is None:
            with contextlib.suppress(ChildFailedError):
                self.send("quit")
            try:
                self._popen.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._popen.pid, signal.SIGKILL)
                self._popen.wait(timeout=_STOP_TIMEOUT_S)
        with contextlib.suppress(OSError):
            assert self._popen.stdin is not None
            self._popen.stdin.close()
        self._log.close()


class Children:
    """Owns every child process of a run; close() ends them all, newest first."""

    def __init__(self) -> None:
        self._children: list[JsonLineChild | ManagedProcess] = []

    def add(self, child: JsonLineChild | ManagedProcess) -> None:
        self._children.append(child)

    def close(self) -> None:
        while self._children:
            child = self._children.pop()
            with contextlib.suppress(Exception):
                child.close() if isinstance(child, JsonLineChild) else child.stop(_STOP_TIMEOUT_S)


# --- the two servers and the load client ------------------------------------------------------------------


class OurServer:
    """`python -m xds serve --config catalog.yaml` on free loopback ports, pinned to `core`."""

    def __init__(self, children: Children, *, config: Path, workdir: Path, core: int | None, name: str,
                 extra_args: Sequence[str] = (), profile_out: Path | None = None) -> None:
        xds, admin, management, load = free_ports(4)
        self.xds_address = f"{LOOPBACK}:{xds}"
        self._admin_port = admin
        python = [sys.executable, *(("-m", "cProfile", "-o", str(profile_out)) if profile_out else ())]
        args = [*python, "-m", "xds", "serve", "--config", str(config),
                "--xds-address", self.xds_address, "--admin-address", f"{LOOPBACK}:{admin}",
                "--management-address", f"{LOOPBACK}:{management}",
                "--load-report-address", f"{LOOPBACK}:{load}", "--log-level", "warning", *extra_args]
        self.process = ManagedProcess(name, pinned(core, args), log_dir=workdir,
                                      env={"PYTHONUNBUFFERED": "1"})
        children.add(self.process)
        self.process.start()

    @property
    def pid(self) -> int:
        pid = self.process.pid
        if pid is None:
            raise RuntimeError("server not started")
        return pid

    def wait_ready(self, timeout_s: float) -> None:
        def ready() -> bool:
            self.process.check_alive()
            conn = http.client.HTTPConnection(LOOPBACK, self._admin_port, timeout=_ADMIN_TIMEOUT_S)
            try:
                conn.request("GET", "/ready")
                return conn.getresponse().status == 200
            finally:
                conn.close()

        wait_until(ready, timeout_s=timeout_s, interval_s=0.1, ignore=(OSError,),
                   message=lambda: f"this server not ready; log tail:\n{self.process.tail()}")

    def stop(self) -> None:
        # SIGTERM: the server cancels its main task and returns, so cProfile writes its file.
        self.process.stop(_STOP_TIMEOUT_S * 3)


class GcpServer:
    """gcp-server (go-control-plane v0.14.0) serving `resources`, pinned to `core`."""

    def __init__(self, children: Children, binary: Path, *, resources: Path, cache: str, groups: int,
                 workdir: Path, core: int | None, name: str) -> None:
        args = [str(binary), "-port", "0", "-resources", str(resources), "-cache", cache,
                "-groups", str(groups)]
        self.child = JsonLineChild(name, pinned(core, args), log_dir=workdir)
        children.add(self.child)
        self.xds_address = ""

    @property
    def pid(self) -> int:
        return self.child.pid

    def wait_ready(self, timeout_s: float) -> None:
        port = self.child.expect("listening", timeout_s=timeout_s)["port"]
        self.xds_address = f"{LOOPBACK}:{port}"

    def update(self, path: Path, timeout_s: float) -> int:
        self.child.send(f"update {path}")
        return int(self.child.expect("updated", timeout_s=timeout_s)["n"])

    def stop(self) -> None:
        self.child.close()


def start_load(children: Children, binary: Path, *, server: str, streams: int, mode: str, groups: int,
               timeout_s: float, workdir: Path, core: int | None, name: str) -> JsonLineChild:
    """xds-load with N simulated Envoys, no retries (a failed stream is lost and counted)."""
    args = [str(binary), "-server", server, "-streams", str(streams), "-mode", mode, "-groups", str(groups),
            "-connect-rate", "0", "-timeout", f"{timeout_s:g}s"]
    child = JsonLineChild(name, pinned(core, args), log_dir=workdir)
    children.add(child)
    return child
