"""FileSource: one YAML file (catalog + policy), polled, the zero-dependency default source.

Theory of operation: every `poll_interval_s` the file is stat'ed by path. Editors and config-management
tools replace files atomically (write a temporary file, rename it over the old one; Kubernetes ConfigMaps
swap a symlink), so an open file descriptor or an inotify watch on the old inode would miss the change;
stat'ing the path each time sees the new inode. Only when the stamp (mtime, size, inode, device) changes is
the file read, and only when the bytes' hash changes is it parsed. A valid document is published whole; an
invalid one, or a missing file (the gap in a non-atomic save), is reported and the last good state stays in
effect, so a bad edit can never publish a partial or empty catalog.

The path is untrusted like the content (issue 7): anything but a regular file of at most `max_bytes` (a FIFO,
a device such as a symlink to /dev/zero, a directory, a sparse 64 GiB file) is refused without being read
(`policy/reader.py`) and reported like an invalid document. The stat and the read run in a daemon thread
awaited with a timeout (`blocking.py`): a read hung on a dead mount is reported ("read timed out") while the
loop keeps polling it, and at most one read is ever in flight. Parsing runs in a separate worker, outside
the timeout, since a large valid file may take a while to parse but always finishes. Only the services
and listeners whose text changed since the last parse are validated again (`policy/incremental.py`, issue
12): one endpoint edit in a 1000-service file costs milliseconds, not the whole document's parse.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from xds.model.service import Catalog
from xds.policy.errors import PolicyError, Problem
from xds.policy.incremental import IncrementalParser
from xds.policy.load import decode_document
from xds.policy.reader import DEFAULT_MAX_BYTES, read_document_file, refused
from xds.policy.schema import Policy
from xds.secrets import redact
from xds.sources.base import SourceSink, SourceUpdate
from xds.sources.blocking import BlockingCall

_log = logging.getLogger(__name__)

# A file rewritten in place within one timestamp tick keeps its mtime, and with the same size its stamp does
# not change at all (git's "racily clean" problem). While the mtime is this recent the content is hashed on
# every poll anyway; after that, a new write necessarily moves the mtime.
_RACY_WINDOW_NS = 2_000_000_000

# A local disk answers a stat and a read of a few MiB in milliseconds; ten seconds means the file system is
# stuck (a dead NFS server, a hung FUSE daemon), not slow.
DEFAULT_READ_TIMEOUT_S = 10.0


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

    def __init__(self, path: Path, *, poll_interval_s: float = 0.2, max_bytes: int = DEFAULT_MAX_BYTES,
                 read_timeout_s: float = DEFAULT_READ_TIMEOUT_S) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if read_timeout_s <= 0:
            raise ValueError(f"read_timeout_s must be positive, got {read_timeout_s}")
        # Absolute, so the name and the endpoints' source stay the same whatever the working directory.
        self._path = Path(os.path.abspath(path))
        self._poll_interval_s = poll_interval_s
        self._max_bytes = max_bytes
        self._read_timeout_s = read_timeout_s
        # Watch state, touched only by the single run() loop (and the thread it awaits).
        self._stamp: _Stamp | None = None
        self._digest: bytes | None = None  # of the last bytes parsed, valid or not
        self._published: _Parsed | None = None
        self._error: str | None = None  # reported since the last publish
        # Set when a read timed out: the next read starts afresh, so that a file that is unchanged once the
        # mount answers again is still published and the sink learns the source has recovered.
        self._forget = False
        # Remembers each service and listener of the last good document, so that an edit re-validates only
        # the items whose text changed (issue 12, policy/incremental.py). Used by the parse worker only.
        self._parser = IncrementalParser(where=str(self._path))

    @property
    def name(self) -> str:
        return f"file:{self._path}"

    @property
    def path(self) -> Path:
        return self._path

    async def run(self, sink: SourceSink) -> None:
        reader: BlockingCall[bytes | str | None] = BlockingCall(f"read {self._path.name}")
        try:
            while True:
                if not reader.busy:  # a read still stuck from an earlier poll is awaited again, not doubled
                    reader.start(partial(self._read, forget=self._forget))
                    self._forget = False
                outcome: _Parsed | bytes | str | None
                try:
                    outcome = await reader.result(self._read_timeout_s)
                except TimeoutError:
                    self._forget = True
                    outcome = str(refused(str(self._path), f"read timed out after {self._read_timeout_s:g}s "
                                                           "(still waiting for it)"))
                if isinstance(outcome, bytes):
                    # Parsing is off the loop too: a large document must not stall the xDS streams.
                    outcome = await asyncio.to_thread(self._parse, outcome)
                self._deliver(sink, outcome)
                await asyncio.sleep(self._poll_interval_s)
        finally:
            reader.abandon()

    def _read(self, *, forget: bool) -> bytes | str | None:
        """The new bytes of the file, an error message, or None when nothing changed. Runs in the reader
        thread, the only one that touches the stamp and the digest."""
        where = str(self._path)
        if forget:
            self._stamp = self._digest = None
        try:
            stat = os.stat(self._path)
            stamp = _Stamp(stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_dev)
            racy = time.time_ns() - stat.st_mtime_ns < _RACY_WINDOW_NS
            if stamp == self._stamp and not racy:
                return None
            data = read_document_file(self._path, max_bytes=self._max_bytes, where=where).data
        except (OSError, PolicyError) as e:
            # Forget what was seen, so that the file coming back, even unchanged, is parsed and published
            # again and the sink learns the source has recovered.
            self._stamp = self._digest = None
            if isinstance(e, OSError):
                e = refused(where, e.strerror or str(e))
            return str(e)
        except Exception as e:  # MemoryError, or a bug: reported and retried, never the end of the watch
            _log.exception("source_read_failed", extra={"source": self.name})
            self._stamp = self._digest = None
            return str(refused(where, f"{type(e).__name__}: {e}"))
        self._stamp = stamp
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return None
        self._digest = digest
        return data

    def _parse(self, data: bytes) -> _Parsed | str:
        where = str(self._path)
        try:
            catalog, policy = self._parser.parse(decode_document(data, where=where))
        except PolicyError as e:
            return str(e)
        except Exception as e:  # a bug in the loader: the source keeps watching, and the next edit may fix it
            _log.exception("source_parse_failed", extra={"source": self.name})
            return str(PolicyError([Problem(where, None, None, f"internal error while loading the file: "
                                                               f"{type(e).__name__}: {e}")]))
        return _Parsed(catalog, policy)

    def _deliver(self, sink: SourceSink, outcome: _Parsed | str | None) -> None:
        if outcome is None:
            return
        if isinstance(outcome, str):
            # A parse error may quote the file, and a catalog can hold a key or a token by mistake: redact
            # where the message enters (issue 9, docs/security.md).
            outcome = redact(outcome)
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
