"""Drive tools/testbin/xds-load and gcp-server over their JSON-lines stdin/stdout protocol (issue 12).

Both programs print one JSON object per line on stdout and take commands on stdin (tools/testbin/README.md).
`LineTool` starts one, keeps its stderr in `<workdir>/<name>.log`, and reads events with a deadline: a
reader thread queues every stdout line, so a wait never blocks past its timeout even when the program
hangs, and the program's exit is reported with its log's tail.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.processes import tail_file

_STOP_TIMEOUT_S = 15.0
_LOG_TAIL_LINES = 30


class LineToolError(RuntimeError):
    """The program exited, printed something that is not a JSON object, or an event did not come in time."""


class LineTool:
    def __init__(self, name: str, args: Sequence[str], *, workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self._popen = subprocess.Popen(
            [str(a) for a in args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True, bufsize=1,
        )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._popen.stdout is not None
        for line in self._popen.stdout:
            self._lines.put(line)
        self._lines.put(None)  # EOF: the program closed stdout (exited)

    def tail(self, n: int = _LOG_TAIL_LINES) -> str:
        return tail_file(self.log_path, n)

    def send(self, command: str) -> None:
        assert self._popen.stdin is not None
        self._popen.stdin.write(command + "\n")
        self._popen.stdin.flush()

    def event(self, expected: str, *, timeout_s: float) -> dict[str, Any]:
        """The next stdout event, which must be `expected`; raises LineToolError otherwise."""
        deadline = time.monotonic() + timeout_s
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise LineToolError(f"{self.name}: no {expected!r} event within {timeout_s:g} s; "
                                f"stderr tail:\n{self.tail()}") from None
        if line is None:
            raise LineToolError(f"{self.name} exited ({self._popen.poll()}) before its {expected!r} event; "
                                f"stderr tail:\n{self.tail()}")
        try:
            value = json.loads(line)
        except ValueError:
            raise LineToolError(f"{self.name} printed a line that is not JSON: {line!r}") from None
        if not isinstance(value, dict) or value.get("event") != expected:
            raise LineToolError(f"{self.name}: expected a {expected!r} event, got {line.strip()}")
        return value

    def command(self, command: str, expected: str, *, timeout_s: float) -> dict[str, Any]:
        self.send(command)
        return self.event(expected, timeout_s=timeout_s)

    def stop(self) -> int | None:
        """`quit`, then a bounded wait; killed if it does not exit."""
        if self._popen.poll() is None:
            try:
                self.send("quit")
                self._popen.stdin.close()  # type: ignore[union-attr]
            except (BrokenPipeError, OSError):
                pass
            try:
                self._popen.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(timeout=_STOP_TIMEOUT_S)
        self._reader.join(timeout=_STOP_TIMEOUT_S)
        self._log.close()
        return self._popen.returncode

    def __enter__(self) -> LineTool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
