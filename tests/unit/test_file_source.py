from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from tests.source_helpers import running_task
from xds.policy.incremental import IncrementalParser
from xds.policy.load import parse_document as real_parse
from xds.policy.reader import read_document_file as real_read
from xds.sources.base import Source, SourceUpdate
from xds.sources.files import FileSource

POLL_S = 0.01
QUIET_S = 0.1  # ten polls: long enough to see an unwanted publish

VALID = """\
services:
  - name: web
    endpoints:
      - address: 127.0.0.1:8081
listeners:
  - name: ingress
    port: 10000
    routes: [{backends: [{service: web}]}]
"""
VALID_OTHER_PORT = VALID.replace("8081", "8082")  # same size, different content
INVALID = VALID.replace("port: 10000", "port: ten")


class FakeSink:
    def __init__(self) -> None:
        self.updates: list[SourceUpdate] = []
        self.errors: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def publish(self, update: SourceUpdate) -> None:
        self.updates.append(update)
        self._changed.set()

    def report_error(self, source: str, message: str) -> None:
        self.errors.append((source, message))
        self._changed.set()

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def ports(self) -> list[int]:
        out = []
        for update in self.updates:
            web = update.catalog.get("web")
            assert web is not None
            out.append(web.endpoints[0].port)
        return out


def running(source: Source, sink: FakeSink) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    return running_task(source.run(sink))


# The edits below block for microseconds; a test that awaited them would only be harder to read.
def write(path: Path, text: str, *, in_place: bool = False) -> None:
    with path.open("r+" if in_place else "w") as f:
        f.write(text)


def replace_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp, text)
    os.replace(tmp, path)


def remove(path: Path) -> None:
    path.unlink()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "catalog.yaml"


async def test_valid_file_is_published(path: Path) -> None:
    write(path, VALID)
    source, sink = FileSource(path, poll_interval_s=POLL_S), FakeSink()
    async with running(source, sink):
        await sink.wait_for(lambda: len(sink.updates) == 1)
    (update,) = sink.updates
    assert source.name == f"file:{path}"
    assert update.source == source.name
    web = update.catalog.get("web")
    assert web is not None
    assert web.endpoints[0].source == source.name
    assert update.policy is not None
    assert [listener.name for listener in update.policy.listeners] == ["ingress"]
    assert sink.errors == []


async def test_bad_edit_is_reported_and_last_good_kept_until_fixed(path: Path) -> None:
    write(path, VALID)
    sink = FakeSink()
    async with running(FileSource(path, poll_interval_s=POLL_S), sink):
        await sink.wait_for(lambda: len(sink.updates) == 1)
        replace_atomically(path, INVALID)
        await sink.wait_for(lambda: len(sink.errors) == 1)
        await asyncio.sleep(QUIET_S)
        assert len(sink.updates) == 1  # nothing partial or empty was published
        assert len(sink.errors) == 1  # and the same problem is not reported on every poll
        source, message = sink.errors[0]
        assert source == f"file:{path}"
        assert message == f"{path}:7:11: listeners[0].port: must be an integer between 1 and 65535, got 'ten'"
        replace_atomically(path, VALID_OTHER_PORT)
        await sink.wait_for(lambda: len(sink.updates) == 2)
    assert sink.ports() == [8081, 8082]


async def test_atomic_rename_is_detected(path: Path) -> None:
    write(path, VALID)
    sink = FakeSink()
    async with running(FileSource(path, poll_interval_s=POLL_S), sink):
        await sink.wait_for(lambda: len(sink.updates) == 1)
        replace_atomically(path, VALID_OTHER_PORT)
        await sink.wait_for(lambda: len(sink.updates) == 2)
    assert sink.ports() == [8081, 8082]


async def test_unchanged_content_is_not_republished(path: Path) -> None:
    write(path, VALID)
    sink = FakeSink()
    async with running(FileSource(path, poll_interval_s=POLL_S), sink):
        await sink.wait_for(lambda: len(sink.updates) == 1)
        replace_atomically(path, VALID)  # new inode, same bytes
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # touched
        await asyncio.sleep(QUIET_S)
        replace_atomically(path, "# a comment changes nothing\n" + VALID)  # same meaning
        await asyncio.sleep(QUIET_S)
    assert len(sink.updates) == 1
    assert sink.errors == []


async def test_invalid_at_start_publishes_nothing_until_fixed(path: Path) -> None:
    write(path, INVALID)
    sink = FakeSink()
    async with running(FileSource(path, poll_interval_s=POLL_S), sink):
        await sink.wait_for(lambda: len(sink.errors) == 1)
        await asyncio.sleep(QUIET_S)
        assert sink.updates == []
        replace_atomically(path, VALID)
        await sink.wait_for(lambda: len(sink.updates) == 1)
    assert len(sink.errors) == 1


async def test_missing_file_is_an_error_not_an_empty_catalog(path: Path) -> None:
    sink = FakeSink()
    async with running(FileSource(path, poll_interval_s=POLL_S), sink):
        await sink.wait_for(lambda: len(sink.errors) == 1)
        assert "cannot read the file" in sink.errors[0][1]
        replace_atomically(path, VALID)
        await sink.wait_for(lambda: len(sink.updates) == 1)
        remove(path)  # e.g. an editor that moves the old file away before writing the new one
        await sink.wait_for(lambda: len(sink.errors) == 2)
        await asyncio.sleep(QUIET_S)
        assert len(sink.updates) == 1
        replace_atomically(path, VALID)  # back, unchanged: published again so the sink sees the recovery
        await sink.wait_for(lambda: len(sink.updates) == 2)
    assert sink.updates[0] == sink.updates[1]


async def test_same_size_rewrite_within_one_timestamp_tick_is_detected(path: Path) -> None:
    write(path, VALID)
    stat = os.stat(path)
    sink = FakeSink()
    async with running(FileSource(path, poll_interval_s=POLL_S), sink):
        await sink.wait_for(lambda: len(sink.updates) == 1)
        write(path, VALID_OTHER_PORT, in_place=True)  # same inode, same size
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
        assert os.stat(path).st_mtime_ns == stat.st_mtime_ns
        await sink.wait_for(lambda: len(sink.updates) == 2)
    assert sink.ports() == [8081, 8082]


def test_name_is_absolute_and_constructor_does_no_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = FileSource(Path("does-not-exist.yaml"))
    assert source.name == f"file:{tmp_path / 'does-not-exist.yaml'}"
    with pytest.raises(ValueError, match="poll_interval_s"):
        FileSource(Path("x"), poll_interval_s=0)


# --- broken paths (issue 7): refused without reading, reported, last good kept, recovered from --------------

BROKEN_PATHS = ("fifo", "dev-zero-symlink", "sparse-64gib", "directory")


def make_broken(path: Path, kind: str) -> str:
    """Put `kind` where the catalog was (as an operator's mistake or a bad deploy would); returns the words
    the report must contain."""
    tmp = path.with_name(path.name + ".broken")
    if kind == "directory":
        path.unlink()
        path.mkdir()
        return "it is a directory, not a regular file"
    if kind == "fifo":
        os.mkfifo(tmp)
        expected = "it is a FIFO (named pipe), not a regular file"
    elif kind == "dev-zero-symlink":
        os.symlink("/dev/zero", tmp)
        expected = "it is a character device, not a regular file"
    else:
        tmp.touch()
        os.truncate(tmp, 64 * 1024**3)  # sparse: no disk space used, but reading it would take 64 GiB
        expected = "it is 68719476736 bytes (65536.0 MiB), more than the limit of 67108864 bytes (64.0 MiB)"
    os.replace(tmp, path)
    return expected


def restore(path: Path, text: str) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    replace_atomically(path, text)


@pytest.mark.parametrize("kind", BROKEN_PATHS)
async def test_broken_path_is_reported_last_good_kept_and_recovered_from(path: Path, kind: str) -> None:
    write(path, VALID)
    sink = FakeSink()
    async with running(FileSource(path, poll_interval_s=POLL_S), sink):
        await sink.wait_for(lambda: len(sink.updates) == 1)
        expected = make_broken(path, kind)
        await sink.wait_for(lambda: len(sink.errors) == 1)
        await asyncio.sleep(QUIET_S)  # ten more polls of the broken path
        assert len(sink.updates) == 1  # the last good state stays in effect
        assert sink.errors == [(f"file:{path}", f"{path}: cannot read the file: {expected}")]
        restore(path, VALID_OTHER_PORT)
        await sink.wait_for(lambda: len(sink.updates) == 2)
        restore(path, VALID)  # and it keeps watching after the recovery
        await sink.wait_for(lambda: len(sink.updates) == 3)
    assert sink.ports() == [8081, 8082, 8081]
    assert len(sink.errors) == 1


async def test_broken_path_at_start_publishes_nothing_until_fixed(path: Path) -> None:
    os.mkfifo(path)  # no writer ever opens it: a blocking open() would wait forever
    sink = FakeSink()
    async with running(FileSource(path, poll_interval_s=POLL_S), sink):
        await sink.wait_for(lambda: len(sink.errors) == 1)
        assert "FIFO" in sink.errors[0][1]
        replace_atomically(path, VALID)
        await sink.wait_for(lambda: len(sink.updates) == 1)


async def test_size_limit_is_a_parameter(path: Path) -> None:
    write(path, VALID)
    sink = FakeSink()
    async with running(FileSource(path, poll_interval_s=POLL_S, max_bytes=len(VALID)), sink):
        await sink.wait_for(lambda: len(sink.updates) == 1)  # exactly at the limit is fine
        replace_atomically(path, VALID + "#")
        await sink.wait_for(lambda: len(sink.errors) == 1)
        assert sink.errors[0][1] == (f"{path}: cannot read the file: it is {len(VALID) + 1} bytes, more than "
                                     f"the limit of {len(VALID)} bytes")
        replace_atomically(path, VALID_OTHER_PORT)
        await sink.wait_for(lambda: len(sink.updates) == 2)
    with pytest.raises(ValueError, match="max_bytes"):
        FileSource(path, max_bytes=0)
    with pytest.raises(ValueError, match="read_timeout_s"):
        FileSource(path, read_timeout_s=0)


async def test_a_hung_read_is_reported_never_doubled_and_recovered_from(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read stuck in the kernel (a dead network mount) cannot be interrupted; the source reports it, keeps
    its loop alive, never starts a second read meanwhile, and publishes once the file answers again."""
    hang = threading.Event()
    release = threading.Event()
    lock = threading.Lock()
    in_flight = 0
    most_in_flight = 0

    def read(*args: object, **kwargs: object) -> object:
        nonlocal in_flight, most_in_flight
        with lock:
            in_flight += 1
            most_in_flight = max(most_in_flight, in_flight)
        try:
            if hang.is_set():
                release.wait(10)  # bounded, so a broken test cannot leave the thread behind for long
            return real_read(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr("xds.sources.files.read_document_file", read)
    write(path, VALID)
    sink = FakeSink()
    async with running(FileSource(path, poll_interval_s=POLL_S, read_timeout_s=0.05), sink):
        await sink.wait_for(lambda: len(sink.updates) == 1)
        hang.set()
        replace_atomically(path, VALID_OTHER_PORT)  # a change, so the next poll reads (and hangs)
        await sink.wait_for(lambda: len(sink.errors) == 1)
        assert sink.errors[0][1] == (f"{path}: cannot read the file: read timed out after 0.05s "
                                     "(still waiting for it)")
        await asyncio.sleep(QUIET_S * 3)  # many polls while the read hangs
        assert len(sink.errors) == 1 and len(sink.updates) == 1
        hang.clear()
        release.set()
        await sink.wait_for(lambda: len(sink.updates) == 2)
    assert sink.ports() == [8081, 8082]
    assert most_in_flight == 1


async def test_a_hung_read_of_an_unchanged_file_still_ends_the_error(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mount comes back and the file did not change: the sink must still learn the source recovered."""
    real_stat = os.stat
    hang = threading.Event()
    release = threading.Event()

    def stat(target: object, *args: object, **kwargs: object) -> os.stat_result:
        if hang.is_set() and str(target) == str(path):
            release.wait(10)
        return real_stat(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)  # the source's stat, and the reader's
    write(path, VALID)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # old: outside the racy window, so stamps decide
    sink = FakeSink()
    async with running(FileSource(path, poll_interval_s=POLL_S, read_timeout_s=0.05), sink):
        await sink.wait_for(lambda: len(sink.updates) == 1)
        hang.set()
        await sink.wait_for(lambda: len(sink.errors) == 1)
        assert "read timed out" in sink.errors[0][1]
        hang.clear()
        release.set()
        await sink.wait_for(lambda: len(sink.updates) == 2)
    assert sink.updates[0] == sink.updates[1]


async def test_an_unexpected_failure_is_reported_and_the_watch_goes_on(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure nobody foresaw (MemoryError reading, a bug in the loader) must not end the watch silently."""
    failures = {"read": True, "parse": True}

    def read(*args: object, **kwargs: object) -> object:
        if failures["read"]:
            raise MemoryError("no room")
        return real_read(*args, **kwargs)  # type: ignore[arg-type]

    def parse(self: IncrementalParser, text: str) -> object:
        if failures["parse"]:
            raise RuntimeError("loader bug")
        return real_parse(text, where=str(path))

    monkeypatch.setattr("xds.sources.files.read_document_file", read)
    monkeypatch.setattr("xds.sources.files.IncrementalParser.parse", parse)
    write(path, VALID)
    sink = FakeSink()
    async with running(FileSource(path, poll_interval_s=POLL_S), sink):
        await sink.wait_for(lambda: len(sink.errors) == 1)
        assert sink.errors[0][1] == f"{path}: cannot read the file: MemoryError: no room"
        failures["read"] = False
        await sink.wait_for(lambda: len(sink.errors) == 2)
        assert sink.errors[1][1] == f"{path}: internal error while loading the file: RuntimeError: loader bug"
        failures["parse"] = False
        replace_atomically(path, VALID_OTHER_PORT)
        await sink.wait_for(lambda: len(sink.updates) == 1)
    assert sink.ports() == [8082]
