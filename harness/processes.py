"""Child processes for end-to-end tests and the demo: started, logged to a file, and always cleaned up.

Each child runs in its own session (so its own process group): signals go to the whole group, which takes down
anything the child spawned too. Output goes straight to a log file rather than a pipe, because a pipe nobody
drains fills up and blocks the child (Envoy at debug level fills 64 KiB in well under a second).

A process still alive when the interpreter exits normally is killed by an `atexit` hook, even if the caller
dropped its reference, so a crashed demo script does not leave Envoys bound to ports on a shared machine.
A SIGKILLed parent cannot clean up; that case is left to the caller's own supervision.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from harness.ports import PortInUseError

T = TypeVar("T")

# How much of a log file `tail` reads: enough for any sensible line count, bounded for multi-MB debug logs.
_TAIL_READ_BYTES = 256 * 1024
# After SIGKILL the kernel reaps quickly; this only bounds the wait if something is badly wrong.
_KILL_WAIT_S = 5.0


class StartStop:
    """`with thing:` starts it and always stops it, for every harness object with start()/stop()."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ProcessExitedError(RuntimeError):
    """A managed process exited while something was waiting for it to become ready."""


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout_s: float,
    interval_s: float = 0.05,
    message: str | Callable[[], str],
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `predicate` until it returns something truthy, and return that value.

    Exceptions of the types in `ignore` count as "not yet" (an admin port still refusing connections); any
    other exception propagates at once, which is how a predicate aborts the wait (`ProcessExitedError`).
    Raises `TimeoutError` carrying `message` (called lazily if it is a callable, so it can include log tails
    read at failure time) and the last ignored error.
    """
    if timeout_s <= 0 or interval_s <= 0:
        raise ValueError("timeout_s and interval_s must be positive")
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    # Bounded in count as well as time: a predicate that returns instantly still stops after this many polls.
    max_polls = math.ceil(timeout_s / interval_s) + 2
    for _ in range(max_polls):
        try:
            value = predicate()
        except ignore as e:
            last_error = e
        else:
            if value:
                return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval_s, remaining))
    text = message() if callable(message) else message
    detail = f"; last error: {type(last_error).__name__}: {last_error}" if last_error is not None else ""
    raise TimeoutError(f"{text} (gave up after {timeout_s:g} s{detail})")


class ManagedProcess(StartStop):
    """One child process with its output in `<log_dir>/<name>.log`.

    `env` adds to (and overrides) the parent's environment rather than replacing it, so PATH and the venv
    keep working. The log file is appended to, with a header line per start, so a restarted process keeps its
    earlier history in the same file.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        if not args:
            raise ValueError("args must name a program")
        self.name = name
        self.args = [str(a) for a in args]
        self.log_path = log_dir / f"{name}.log"
        self._env = dict(env or {})
        self._cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"=== harness: starting {self.name}: {' '.join(self.args)}\n".encode())
            log.flush()
            # The child gets its own copy of the descriptor; ours closes when this block ends.
            self._popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self._env},
                cwd=self._cwd,
                start_new_session=True,
            )
        _track(self)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the child's whole process group; a no-op if the group is gone."""
        popen = self._require_started()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # The group id is the child's pid (start_new_session). The kernel does not reuse that number
            # while any member of the group is alive, so this cannot hit an unrelated process group.
            os.killpg(popen.pid, sig)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; return the exit code (None if never started)."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self._popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self._popen.wait(timeout=_KILL_WAIT_S)
        # Sweep grandchildren that outlived the leader (they keep the group alive after it exits).
        self.kill(signal.SIGKILL)
        _untrack(self)
        return self._popen.returncode

    def wait(self, timeout_s: float) -> int:
        """Wait for the child to exit on its own; `TimeoutError` if it is still running after `timeout_s`."""
        popen = self._require_started()
        try:
            return popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise TimeoutError(f"{self.name} (pid {popen.pid}) still running after {timeout_s:g} s") from e

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, or None while running or before the first start."""
        return None if self._popen is None else self._popen.poll()

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def check_alive(self) -> None:
        """Raise `ProcessExitedError` with the log tail if the child has exited; for use inside waits."""
        if self._popen is not None and self._popen.poll() is not None:
            raise ProcessExitedError(
                f"{self.name} exited with code {self._popen.returncode}; last log lines:\n{self.tail()}"
            )

    def tail(self, n: int = 40) -> str:
        """The last `n` lines of the log file (for error messages); empty if there is no log yet."""
        return tail_file(self.log_path, n)

    def _require_started(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen


class ProcessOwner:
    """A server the harness runs as one `ManagedProcess` named `name`, its output in `<workdir>/<name>.log`
    (a mixin for the classes that start one on ports of their choosing: `_spawn` starts it)."""

    name: str
    workdir: Path
    _process: ManagedProcess | None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.alive

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def tail(self, n: int = 40) -> str:
        return tail_file(self.log_path, n)

    def kill(self) -> None:
        """SIGKILL; reaped before returning so the ports are free again."""
        process = self._require_process()
        process.kill(signal.SIGKILL)
        process.wait(timeout_s=10.0)

    def _refuse_if_running(self) -> None:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self._require_process().pid})")

    def _spawn(self, args: Sequence[str], *, wait_ready: Callable[[], None], port_error: str,
               env: Mapping[str, str] | None = None) -> None:
        """Start the process and wait with `wait_ready`. If it exits having lost a race for one of its ports,
        raise `PortInUseError` ("<port_error>: <why>") so the caller retries with fresh ones; if the wait
        times out or is interrupted, stop it: a half-started server is never left behind."""
        self._process = ManagedProcess(self.name, args, log_dir=self.workdir, env=env, cwd=self.workdir)
        self._process.start()
        try:
            wait_ready()
        except ProcessExitedError as e:
            if lost_port_race(self.tail(200)):
                raise PortInUseError(f"{port_error}: {e}") from e
            raise
        except BaseException:
            self._process.stop()
            raise

    def _require_process(self) -> ManagedProcess:
        if self._process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._process


def lost_port_race(log_text: str) -> bool:
    """True when a server's log shows it could not bind one of its ports (so retry with fresh ones)."""
    return "address already in use" in log_text.lower()


def tail_file(path: Path, n: int) -> str:
    """The last `n` lines of a text file, decoded leniently; empty if the file does not exist."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_READ_BYTES))
            data = f.read()
    except FileNotFoundError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-n:])


# -- interpreter-exit cleanup -------------------------------------------------------------------------------

# Strong references: a child whose ManagedProcess was dropped must still be found at exit. Stopped ones leave.
_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()
_atexit_registered = False


def _track(process: ManagedProcess) -> None:
    # Registered on first use rather than at import: importing the harness must not change exit behaviour.
    global _atexit_registered
    with _live_lock:
        _live.add(process)
        if not _atexit_registered:
            atexit.register(_kill_leftovers)
            _atexit_registered = True


def _untrack(process: ManagedProcess) -> None:
    with _live_lock:
        _live.discard(process)


def _kill_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live)
    for process in leftovers:
        if process.alive:
            process.kill(signal.SIGKILL)
