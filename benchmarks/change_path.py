"""The whole in-process path of one endpoint change, through the file and through a registry (issue 12).

    python -m benchmarks.change_path [--services 1000] [--endpoints 10] [--groups 4] [--runs 5] [--profile]

Theory of operation
-------------------
Both paths end where the server takes over: `SnapshotStore.publish` of a new builder, which rebuilds every
live node group (`--groups` of them, each watched) and wakes the watchers. Before that, as `App._build` does:
`Pipeline.world()` merges the sources, `with_tls_material` resolves the TLS files the policy names.

* file: the catalog file (N services x M endpoints, one listener routing to every service, as
  benchmarks/snapshot_build.py writes it) is edited on disk, one endpoint address changed; then read,
  hashed, decoded and parsed as `FileSource` does, compared with the last publish, accepted by the pipeline.
  Timed twice: with the incremental parser the source uses (policy/incremental.py) and with the whole-
  document parse it replaced (`parse_document`), the "before" of issue 12.
* registry: the file holds only the policy (services without endpoints, the listener); a registry source
  publishes the N x M endpoints, and one of them changes, as a Consul or Kubernetes update arrives
  (sources/base.py: a source always publishes its full state).

The runs alternate between two versions of the change, so every publish is a real change. `--profile` prints
the top of a cProfile of each path after the timings.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from benchmarks.snapshot_build import (
    ENDPOINT_PORT,
    Recorder,
    Sizes,
    make_catalog,
    make_document,
    service_name,
)
from xds.cache.snapshot import Snapshot
from xds.cache.store import SnapshotStore
from xds.model.service import Catalog, Endpoint, Service, ServiceName
from xds.pipeline import Pipeline, builder_for, with_tls_material
from xds.policy.incremental import IncrementalParser
from xds.policy.load import decode_document, parse_document
from xds.policy.reader import read_document_file
from xds.policy.schema import Policy
from xds.sources.base import SourceUpdate
from xds.sources.tls_files import TlsFiles

REGISTRY = "consul:bench"
# Row labels; `{groups}` is the number of live node groups rebuilt per change.
FILE_ROW = "change via file, incremental parse, {groups} groups"
FILE_FULL_ROW = "change via file, whole-document parse, {groups} groups"
REGISTRY_ROW = "change via registry, {groups} groups"
_CHANGED_HOST = "10.255.255.254"  # outside every host the World uses


@dataclass(frozen=True, slots=True)
class ChangeSizes:
    services: int
    endpoints: int
    groups: int
    runs: int


def _edit(document: str, sizes: Sizes, version: int) -> str:
    """The document with the first service's first endpoint moved to another address (or back)."""
    if version == 0:
        return document
    first = make_catalog(sizes).services[0].endpoints[0]
    return document.replace(f"address: {first.host}:{ENDPOINT_PORT}\n",
                            f"address: {_CHANGED_HOST}:{ENDPOINT_PORT}\n", 1)


def _registry_catalog(catalog: Catalog, version: int) -> Catalog:
    if version == 0:
        return catalog
    first = catalog.services[0]
    moved = (replace(first.endpoints[0], host=_CHANGED_HOST), *first.endpoints[1:])
    return Catalog((Service(first.name, moved), *catalog.services[1:]))


def _policy_only(document: str, sizes: Sizes) -> str:
    """The file of the registry path: the same services and listener, no endpoints."""
    lines = ["version: 1", "services:"]
    lines += [f"- name: {service_name(i)}" for i in range(sizes.services)]
    listeners = document[document.index("listeners:"):]
    return "\n".join(lines) + "\n" + listeners


class _Server:
    """The pipeline and a store with `groups` live node groups, fed as App._build feeds them."""

    def __init__(self, sources: Sequence[str], groups: int) -> None:
        self.pipeline = Pipeline(list(sources))
        self.tls_files = TlsFiles()
        self.store = SnapshotStore()
        self.notified: list[Snapshot] = []
        for index in range(groups):
            self.store.watch(f"group-{index}", self.notified.append)

    def accept(self, update: SourceUpdate) -> None:
        self.pipeline.accept(update)

    def build(self) -> None:
        world = with_tls_material(self.pipeline.world(), self.tls_files)
        self.store.publish(builder_for(world))


class _FileChange:
    """FileSource's steps after a poll saw a new stamp: read, hash, decode, parse, compare, publish."""

    def __init__(self, path: Path, server: _Server, parse: Callable[[str], tuple[Catalog, Policy]]) -> None:
        self.path, self.server, self.parse = path, server, parse
        self.published: tuple[Catalog, Policy] | None = None
        self.digest = b""

    def __call__(self) -> None:
        where = str(self.path)
        data = read_document_file(self.path, max_bytes=64 << 20, where=where).data
        digest = hashlib.sha256(data).digest()
        if digest == self.digest:
            raise RuntimeError("the edit did not change the file")
        self.digest = digest
        parsed = self.parse(decode_document(data, where=where))
        if parsed == self.published:
            raise RuntimeError("the edit did not change the parse")
        self.published = parsed
        self.server.accept(SourceUpdate(source=f"file:{where}", catalog=parsed[0], policy=parsed[1]))
        self.server.build()


@dataclass(slots=True)
class ChangeReport:
    sizes: ChangeSizes
    recorder: Recorder
    document_bytes: int
    profiles: dict[str, str]


def _profile(step: Callable[[], None], rows: int = 18) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    step()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(rows)
    return out.getvalue()


def measure(sizes: ChangeSizes, recorder: Recorder, *, profile: bool = False) -> ChangeReport:
    """Time FILE_ROW, FILE_FULL_ROW and REGISTRY_ROW, `sizes.runs` times each after a warm-up."""
    file_row, file_full_row, registry_row = (label.format(groups=sizes.groups)
                                             for label in (FILE_ROW, FILE_FULL_ROW, REGISTRY_ROW))
    world_sizes = Sizes(services=sizes.services, endpoints=sizes.endpoints, listeners=1, runs=1, streams=1,
                        watchers=0)
    document = make_document(world_sizes)
    versions = (document, _edit(document, world_sizes, 1))
    profiles: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="change-path-") as tmp:
        path = Path(tmp) / "catalog.yaml"
        def whole(text: str) -> tuple[Catalog, Policy]:
            return parse_document(text, where=str(path))

        for label, parse in ((file_row, IncrementalParser(where=str(path)).parse), (file_full_row, whole)):
            server = _Server([f"file:{path}"], sizes.groups)
            change = _FileChange(path, server, parse)
            for run in range(sizes.runs + 2):  # the first load, a warm-up edit, then the timed edits
                path.write_text(versions[run % 2])
                if run < 2:
                    change()
                else:
                    recorder.time(label, change)
            if profile:
                path.write_text(versions[sizes.runs % 2])  # the other version than the last run's
                profiles[label] = _profile(change)

        policy_path = Path(tmp) / "policy.yaml"
        policy_path.write_text(_policy_only(document, world_sizes))
        server = _Server([f"file:{policy_path}", REGISTRY], sizes.groups)
        _, policy = parse_document(policy_path.read_text(), where=str(policy_path))
        server.accept(SourceUpdate(source=f"file:{policy_path}", catalog=Catalog(), policy=policy))
        registry = tuple(_registry_catalog(_as_registry(make_catalog(world_sizes)), v) for v in (0, 1))

        def update(version: int) -> Callable[[], None]:
            def step() -> None:
                server.accept(SourceUpdate(source=REGISTRY, catalog=registry[version], policy=None))
                server.build()
            return step

        for run in range(sizes.runs + 2):
            if run < 2:
                update(run % 2)()
            else:
                recorder.time(registry_row, update(run % 2))
        if profile:
            profiles[registry_row] = _profile(update(sizes.runs % 2))
    return ChangeReport(sizes, recorder, len(document.encode()), profiles)


def _as_registry(catalog: Catalog) -> Catalog:
    return Catalog(tuple(Service(ServiceName(s.name), tuple(Endpoint(e.host, e.port, source=REGISTRY)
                                                          for e in s.endpoints)) for s in catalog.services))


def print_report(report: ChangeReport, out: TextIO) -> None:
    sizes = report.sizes
    print(f"change_path: one endpoint change, {sizes.services} services x {sizes.endpoints} endpoints, "
          f"{sizes.groups} live node group(s); file {report.document_bytes} B; median (min-max) of "
          f"{sizes.runs} runs in ms, wall (and process CPU: on a shared machine the steadier figure)",
          file=out)
    for label, samples in report.recorder.rows.items():
        wall = [s * 1e3 for s in samples.wall_s]
        cpu = statistics.median(samples.cpu_s) * 1e3
        print(f"  {label:<50}{statistics.median(wall):>9.1f}  ({min(wall):.1f}-{max(wall):.1f})  "
              f"cpu {cpu:.1f}", file=out)
    for label, text in report.profiles.items():
        print(f"\nprofile, {label}:\n{text}", file=out)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.change_path", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--groups", type=int, default=4, help="live node groups rebuilt per change")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of each path")
    args = parser.parse_args(argv)
    sizes = ChangeSizes(args.services, args.endpoints, args.groups, args.runs)
    if min(sizes.services, sizes.endpoints, sizes.groups, sizes.runs) < 1:
        parser.error("--services, --endpoints, --groups and --runs must be at least 1")
    started = time.perf_counter()
    report = measure(sizes, Recorder(), profile=args.profile)
    print_report(report, out if out is not None else sys.stdout)
    print(f"(took {time.perf_counter() - started:.1f} s)", file=out if out is not None else sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
