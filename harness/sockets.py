"""TCP connections of a process, read from /proc: how many it holds open to a port (issue 13 section 4
counts the control plane's connections to the Consul agent). Linux only; no external tools."""

from __future__ import annotations

import os
from pathlib import Path

_TCP_ESTABLISHED = "01"


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets among the open file descriptors of `pid`."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def established_connections(pid: int, remote_port: int) -> int:
    """ESTABLISHED TCP connections (IPv4 and IPv6) of process `pid` to `remote_port` on any host."""
    inodes = socket_inodes(pid)
    count = 0
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            port = int(fields[2].rsplit(":", 1)[1], 16)
            if port == remote_port and fields[3] == _TCP_ESTABLISHED and fields[9] in inodes:
                count += 1
    return count
