from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

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


@contextlib.asynccontextmanager
async def running(source: Source, sink: FakeSink) -> AsyncIterator[None]:
    task = asyncio.create_task(source.run(sink))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
