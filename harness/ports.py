"""Free loopback ports for the processes a test or the demo starts.

`free_port` binds 127.0.0.1:0, reads the port the kernel chose and closes the socket. That leaves a race:
between the close and the child's own bind, another process on this shared machine may take the port. The
harness does not pretend otherwise: whoever starts a process on a port from here retries the start with a
fresh port when the child reports the address in use (see `EnvoyProcess.start` and `PortInUseError`).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports.

    All sockets stay bound until every port is chosen, so the kernel cannot hand out the same port twice in
    one call; the race with other processes after they are closed remains (see the module docstring).
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


class PortInUseError(OSError):
    """A child process could not bind a port the harness picked for it; retry with a fresh port."""


def retry_port_race(start: Callable[[], None], *, attempts: int,
                    before_retry: Callable[[], None] | None = None) -> None:
    """Call `start`, which picks fresh ports each time, until it does not raise `PortInUseError`: at most
    `attempts` times, the last one's error propagating. `before_retry` cleans up between attempts."""
    for attempt in range(1, attempts + 1):
        try:
            start()
        except PortInUseError:
            if attempt == attempts:
                raise
            if before_retry is not None:
                before_retry()
            continue
        return
