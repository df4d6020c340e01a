"""FileSource: one YAML file (catalog + policy), polled, the zero-dependency default source.

Theory of operation: every `poll_interval_s` the file is stat'ed by path. Editors and config-management
tools replace files atomically (write a temporary file, rename it over the old one; Kubernetes ConfigMaps
swap a symlink), so an open file descriptor or an inotify watch on the old inode would miss the change;
stat'ing the path each time sees the new inode. Only when the stamp (mtime, size, inode, device) changes is
the file read, and only when the bytes' hash changes is it parsed. A valid document is published whole; an
invalid one, or a missing file (the gap in a non-atomic save), is reported and the last good state stays in
effect, so a bad edit can never publish a partial or empty catalog.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from xds.model.service import Catalog
from xds.policy.errors import PolicyError
from xds.policy.load import decode_document, parse_document
from xds.policy.schema import Policy
from xds.sources.base import SourceSink, SourceUpdate

_log = logging.getLogger(__name__)

# A file rewritten in place within one timestamp tick keeps its mtime, and with the same size its stamp does
# not change at all (git's "racily clean" problem). While the mtime is this recent the content is hashed on
# every poll anyway; after that, a new write necessarily moves the mtime.
_RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class _Stamp:
    mtime_ns: int
    size: int
    inode: int
    device: int


@dataclass(frozen=True, slots=True)
class _Parsed:
    catalog: Catalog
    policy: Policy


class FileSource:
    """Publishes the services and policy of one file, re-reading it within about `poll_interval_s` of a
    change."""

    def __init__(self, path: Path, *, poll_interval_s: float = 0.2) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s}")
        # Absolute, so the name and the endpoints' source stay the same whatever the working directory.
        self._path = Path(os.path.abspath(path))
        self._poll_interval_s = poll_interval_s
        # Watch state, touched only by the single run() loop (and the thread it awaits).
        self._stamp: _Stamp | None = None
        self._digest: bytes | None = None  # of the last bytes parsed, valid or not
        self._published: _Parsed | None = None
        self._error: str | None = None  # reported since the last publish

    @property
    def name(self) -> str:
        return f"file:{self._path}"

    @property
    def path(self) -> Path:
        return self._path

    async def run(self, sink: SourceSink) -> None:
        while True:
            # stat, read and parse off the loop: a slow disk or network mount must not stall the xDS streams.
            outcome = await asyncio.to_thread(self._check)
            self._deliver(sink, outcome)
            await asyncio.sleep(self._poll_interval_s)

    def _check(self) -> _Parsed | str | None:
        """The new content of the file, an error message, or None when nothing changed."""
        where = str(self._path)
        try:
            stat = os.stat(self._path)
            stamp = _Stamp(stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_dev)
            racy = time.time_ns() - stat.st_mtime_ns < _RACY_WINDOW_NS
            if stamp == self._stamp and not racy:
                return None
            data = self._path.read_bytes()
        except OSError as e:
            # Forget what was seen, so that the file coming back, even unchanged, is parsed and published
            # again and the sink learns the source has recovered.
            self._stamp = self._digest = None
            return f"{where}: cannot read the file: {e.strerror or e}"
        self._stamp = stamp
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return None
        self._digest = digest
        try:
            catalog, policy = parse_document(decode_document(data, where=where), where=where)
        except PolicyError as e:
            return str(e)
        return _Parsed(catalog, policy)

    def _deliver(self, sink: SourceSink, outcome: _Parsed | str | None) -> None:
        if outcome is None:
            return
        if isinstance(outcome, str):
            if outcome != self._error:  # the same problem is reported once, not on every poll
                self._error = outcome
                _log.warning("source_rejected", extra={"source": self.name, "error": outcome})
                sink.report_error(self.name, outcome)
            return
        # A change that means the same (a comment, reordered keys) is not news, unless an error was
        # reported meanwhile: then the publish is how the sink learns the source is healthy again.
        if outcome == self._published and self._error is None:
            return
        self._published = outcome
        self._error = None
        _log.info("source_published", extra={"source": self.name, "services": len(outcome.catalog),
                                             "listeners": len(outcome.policy.listeners)})
        sink.publish(SourceUpdate(source=self.name, catalog=outcome.catalog, policy=outcome.policy))
