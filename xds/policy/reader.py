"""Reading a document file safely: only a regular file, only up to a size limit, never blocking on open.

A catalog path is whatever the operator (or a config-management tool, or a mistake) put there: a symlink to
`/dev/zero` would be read forever, a sparse 64 GiB file would be read into memory, a FIFO blocks `open()`
until a writer appears, and a directory cannot be read at all (issue 7). So the path is stat'ed first and
anything but a regular file within `max_bytes` is refused before it is opened; the file is opened with
O_NONBLOCK (a path swapped for a FIFO between the stat and the open cannot block), checked again on the
open descriptor (what is read is what was checked), and read at most `max_bytes + 1` bytes, so a file that
grows while it is read, or whose size lies (procfs, some FUSE mounts), is still bounded.

Every refusal is a PolicyError with one located problem, like any invalid document, so the file source,
`xds validate` and `xds render` report it the same way. A read that hangs (a dead network mount) cannot be
bounded from here; the file source runs this in a worker with a timeout (`sources/files.py`).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from xds.policy.errors import PolicyError, Problem

# The one place for the default limit (issue 7): far above any real catalog (1000 services x 10 endpoints
# with policy is about 1 MiB), far below what would hurt the process.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

_CHUNK = 1024 * 1024
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


@dataclass(frozen=True, slots=True)
class FileContent:
    data: bytes
    stat: os.stat_result  # of the open file that was read


def _kind(mode: int) -> str | None:
    """What the file is when it is not a regular file, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _size(n: int) -> str:
    return f"{n} bytes ({n / (1024 * 1024):.1f} MiB)" if n >= 1024 * 1024 else f"{n} bytes"


def _check(where: str, st: os.stat_result, max_bytes: int) -> None:
    kind = _kind(st.st_mode)
    if kind is not None:
        raise refused(where, f"it is {kind}, not a regular file")
    if st.st_size > max_bytes:
        raise refused(where, f"it is {_size(st.st_size)}, more than the limit of {_size(max_bytes)}")


def refused(where: str, reason: str) -> PolicyError:
    """The error for a file that is not read, located at the file."""
    return PolicyError([Problem(where, None, None, f"cannot read the file: {reason}")])


def read_document_file(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, where: str | None = None
                       ) -> FileContent:
    """The bytes of the regular file at `path` (symlinks followed), at most `max_bytes` of them. Raises
    PolicyError (located at `where`, default the path) for anything else, and when the file cannot be read."""
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    where = str(path) if where is None else where
    try:
        _check(where, os.stat(path), max_bytes)
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        raise refused(where, e.strerror or str(e)) from e
    try:
        st = os.fstat(fd)
        _check(where, st, max_bytes)
        chunks: list[bytes] = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(_CHUNK, remaining))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as e:
        if e.errno == errno.EAGAIN:  # only a non-regular file answers so; kept for completeness
            raise refused(where, "it would block") from e
        raise refused(where, e.strerror or str(e)) from e
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise refused(where, f"it grew past the limit of {_size(max_bytes)} while being read")
    return FileContent(data, st)
