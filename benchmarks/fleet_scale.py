"""Fleet scale side by side (issue 12): this server against go-control-plane v0.14.0 on the same resources.

    python -m benchmarks.fleet_scale [--services 1000] [--endpoints 10] [--storm 100,1000,2000]
                                     [--changes 20] [--change-streams 1000] [--sources file,consul]
                                     [--modes sotw] [--groups 1] [--repeats 3] [--with-snapshot-cache]
                                     [--profile-server] [--json OUT] [--workdir DIR] [--keep] [--quick]

Theory of operation
-------------------
The World is snapshot_build's: N services x M endpoints, one listener with a prefix route per service, written
as catalog.yaml. This server runs `python -m xds serve --config catalog.yaml` pinned to core 0 (taskset); the
reference, tools/testbin/gcp-server (`-cache linear`: a LinearCache per type behind a MuxCache, and
`-cache snapshot` with --with-snapshot-cache), is pinned to core 0 too and serves the resources this project's
own snapshot build makes of the same catalog (benchmarks/fleet_world.py), byte for byte. The load,
tools/testbin/xds-load (simulated Envoys, one gRPC connection each, ADS SotW or delta, no retries), is pinned
to core 1.

Scenarios, for every mode (--modes) and node-group count (--groups), each run for every server in turn
(this, gcp, this, gcp, ...) --repeats times, a fresh server process per run; medians are reported:

1. connect storm at each N of --storm: all N streams at once; time until all are synced (xds-load's
   "synced"), server CPU per stream (utime+stime from /proc/<pid>/stat, before connecting and at sync,
   divided by N), RSS per stream (server RSS with N idle synced streams, read --idle seconds after the
   sync, minus RSS before connecting, divided by N), streams lost (never synced).
2. change convergence at --change-streams streams: --changes steps, each `mark` (T0) then one endpoint
   change; per step xds-load reports p50/p99/max over the streams of T0 -> ACK of the new EDS version. The
   table gives p50 and p99 over the steps of the per-step p99, and server CPU per change. The change enters
   through the file (catalog.yaml rewritten with one endpoint's weight changed) or through a registry (a real
   Consul agent; this server also watches it, and each step registers or deregisters one instance). For
   gcp-server the step is `update FILE` with the ClusterLoadAssignment our build makes of the changed
   catalog.

With --profile-server, one more change run of this server (file path, first mode and group count) runs
under cProfile (start-up, the sync of the streams and the changes); the top 15 functions of the xds package
by cumulative time are printed. That run is not in the medians.
"""

from __future__ import annotations

import argparse
import math
import pstats
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from benchmarks.fleet_procs import (
    Children,
    GcpServer,
    JsonLineChild,
    OurServer,
    cpu_seconds,
    rss_bytes,
    start_load,
)
from benchmarks.fleet_report import Results, print_report, write_json
from benchmarks.fleet_world import ChangePlan, FleetWorld, served_counts

THIS = "this"
GCP_LINEAR = "gcp-linear"
GCP_SNAPSHOT = "gcp-snapshot"
SERVER_CORE = 0
LOAD_CORE = 1
_READY_TIMEOUT_S = 120.0
_CONVERGE_TIMEOUT_S = 75.0  # xds-load gives up on a mark after 60 s and reports what it has


@dataclass(frozen=True, slots=True)
class Options:
    services: int = 1000
    endpoints: int = 10
    storm: tuple[int, ...] = (100, 1000, 2000)
    changes: int = 20
    change_streams: int = 1000
    sources: tuple[str, ...] = ("file", "consul")
    modes: tuple[str, ...] = ("sotw",)
    groups: tuple[int, ...] = (1,)
    repeats: int = 3
    snapshot_cache: bool = False
    reference: bool = True  # run gcp-server at all (--no-reference: this server alone, e.g. while tuning)
    profile_server: bool = False
    sync_timeout_s: float = 120.0
    idle_s: float = 1.0
    pin: bool = True
    json_out: Path | None = None
    workdir: Path | None = None
    keep: bool = False

    @property
    def servers(self) -> tuple[str, ...]:
        if not self.reference:
            return (THIS,)
        return (THIS, GCP_LINEAR, *((GCP_SNAPSHOT,) if self.snapshot_cache else ()))


def _nearest_rank(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(slots=True)
class Bench:
    options: Options
    workdir: Path
    world: FleetWorld
    all_resources: Path
    plans: dict[str, ChangePlan]
    xds_load: Path
    gcp_server: Path | None
    consul: Any = None  # harness.consul.ConsulAgent when the registry path runs
    results: Results = field(default_factory=Results)
    log: TextIO = sys.stderr
    _runs: int = 0

    def core(self, which: int) -> int | None:
        return which if self.options.pin else None

    def _name(self, what: str) -> str:
        self._runs += 1
        return f"{self._runs:03d}-{what}"

    def start_server(self, children: Children, server: str, *, groups: int, source: str,
                     profile_out: Path | None = None) -> OurServer | GcpServer:
        if server == THIS:
            self.world.write()  # every run starts from the unchanged catalog
            extra = (["--consul-address", f"http://{self.consul.http_address}"]
                     if source == "consul" and self.consul is not None else [])
            ours = OurServer(children, config=self.world.catalog_path, workdir=self.workdir,
                             core=self.core(SERVER_CORE), name=self._name("this-server"), extra_args=extra,
                             profile_out=profile_out)
            ours.wait_ready(_READY_TIMEOUT_S)
            return ours
        cache = "linear" if server == GCP_LINEAR else "snapshot"
        assert self.gcp_server is not None, "a reference run without the gcp-server binary"
        gcp = GcpServer(children, self.gcp_server, resources=self.all_resources, cache=cache, groups=groups,
                        workdir=self.workdir, core=self.core(SERVER_CORE), name=self._name(server))
        gcp.wait_ready(_READY_TIMEOUT_S)
        return gcp

    def load(self, children: Children, server: OurServer | GcpServer, *, streams: int, mode: str,
             groups: int) -> tuple[JsonLineChild, dict[str, Any]]:
        load = start_load(children, self.xds_load, server=server.xds_address, streams=streams, mode=mode,
                          groups=groups, timeout_s=self.options.sync_timeout_s, workdir=self.workdir,
                          core=self.core(LOAD_CORE), name=self._name("xds-load"))
        synced = load.expect("synced", timeout_s=self.options.sync_timeout_s + 30.0)
        return load, synced

    # -- scenario 1 ----------------------------------------------------------------------------------------

    def storm(self, server: str, streams: int, mode: str, groups: int) -> dict[str, float]:
        children = Children()
        try:
            running = self.start_server(children, server, groups=groups, source="file")
            pid = running.pid
            cpu0, rss0 = cpu_seconds(pid), rss_bytes(pid)
            _, synced = self.load(children, running, streams=streams, mode=mode, groups=groups)
            cpu1 = cpu_seconds(pid)
            time.sleep(self.options.idle_s)  # the idle streams' steady state, not the sync's garbage
            rss1 = rss_bytes(pid)
            return {
                "cpu_per_stream_ms": (cpu1 - cpu0) / streams * 1e3,
                "sync_s": float(synced["seconds"]),
                "rss_per_stream_kib": (rss1 - rss0) / streams / 1024,
                "lost": float(synced["lost"]),
                "synced": float(synced["synced"]),
                "stream_p99_ms": float(synced.get("p99_ms", float("nan"))),
            }
        finally:
            children.close()

    # -- scenario 2 ----------------------------------------------------------------------------------------

    def apply(self, server: OurServer | GcpServer, source: str, step: int) -> None:
        plan = self.plans[source]
        if isinstance(server, GcpServer):
            server.update(plan.updates[step], timeout_s=30.0)
        elif source == "file":
            self.world.write_text(plan.documents[step])
        else:
            change = plan.registry[step]
            if change.register:
                self.consul.register_service(change.service, service_id=change.instance_id,
                                             address=change.address, port=change.port)
            else:
                self.consul.deregister_service(change.instance_id)

    def _clean_registry(self, source: str) -> None:
        if source != "consul" or self.consul is None:
            return
        from harness.consul import ConsulApiError

        for change in self.plans[source].registry:
            if change.register:
                try:
                    self.consul.deregister_service(change.instance_id)
                except ConsulApiError as e:
                    if e.status != 404:  # 404: not registered, which is the state wanted
                        raise

    def change(self, server: str, source: str, mode: str, groups: int, *,
               profile_out: Path | None = None) -> dict[str, float]:
        children = Children()
        streams, steps = self.options.change_streams, self.options.changes
        try:
            self._clean_registry(source)
            running = self.start_server(children, server, groups=groups, source=source,
                                        profile_out=profile_out)
            load, synced = self.load(children, running, streams=streams, mode=mode, groups=groups)
            p99s, p50s, short = [], [], 0
            cpu0 = cpu_seconds(running.pid)
            for step in range(steps):
                load.send(f"mark {step} eds")
                load.expect("marked", timeout_s=10.0, key="id", value=step)
                self.apply(running, source, step)
                converged = load.expect("converged", timeout_s=_CONVERGE_TIMEOUT_S, key="id", value=step)
                p99s.append(float(converged["p99_ms"]) / 1e3)
                p50s.append(float(converged["p50_ms"]) / 1e3)
                short += int(converged["streams"]) - int(converged["received"])
            cpu1 = cpu_seconds(running.pid)
            return {
                "change_p50_s": statistics.median(p99s),
                "change_p99_s": _nearest_rank(p99s, 0.99),
                "change_stream_p50_s": statistics.median(p50s),
                "cpu_per_change_s": (cpu1 - cpu0) / steps,
                "not_converged": float(short),
                "lost": float(synced["lost"]),
            }
        finally:
            children.close()
            self._clean_registry(source)

    # -- the whole run -------------------------------------------------------------------------------------

    def run(self) -> None:
        o = self.options
        for mode in o.modes:
            for groups in o.groups:
                for repeat in range(o.repeats):
                    for streams in o.storm:
                        for server in o.servers:
                            self.progress(f"storm N={streams}", server, mode, groups, repeat)
                            sample = self.storm(server, streams, mode, groups)
                            self.results.add(mode, groups, f"storm/{streams}", server, sample)
                    for source in o.sources:
                        for server in o.servers:
                            self.progress(f"change via {source}", server, mode, groups, repeat)
                            sample = self.change(server, source, mode, groups)
                            self.results.add(mode, groups, f"change/{source}", server, sample)
        if o.profile_server:
            self.profile()

    def profile(self) -> None:
        o = self.options
        out = self.workdir / "this-server.cprofile"
        self.progress("change via file, under cProfile", THIS, o.modes[0], o.groups[0], 0)
        self.change(THIS, "file", o.modes[0], o.groups[0], profile_out=out)
        if not out.exists():
            self.results.profile = f"(no profile written to {out}: the server did not exit cleanly)"
            return
        text = _StringSink()
        stats = pstats.Stats(str(out), stream=text)
        # This project's functions only: the top of an asyncio server's profile is the event loop itself.
        stats.sort_stats("cumulative").print_stats(r"xds[/\\]", 15)
        self.results.profile = text.value()

    def progress(self, what: str, server: str, mode: str, groups: int, repeat: int) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {what}: {server}, {mode}, {groups} group(s), "
              f"run {repeat + 1}/{self.options.repeats}", file=self.log, flush=True)


class _StringSink:
    def __init__(self) -> None:
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        self._parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def value(self) -> str:
        return "".join(self._parts)


# --- command line -----------------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers >= 1")
    return values


def _choices(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        wrong = [v for v in values if v not in allowed]
        if not values or wrong:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated subset of "
                                             f"{', '.join(allowed)}")
        return values
    return parse


QUICK = ["--services", "20", "--endpoints", "2", "--storm", "10", "--changes", "2", "--change-streams",
         "10", "--repeats", "1", "--idle", "0.2", "--sync-timeout", "20"]


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints per service")
    parser.add_argument("--storm", type=_ints, default=(100, 1000, 2000), help="connect storm sizes N")
    parser.add_argument("--changes", type=int, default=20, help="endpoint changes per change run")
    parser.add_argument("--change-streams", type=int, default=1000, help="streams during the change runs")
    parser.add_argument("--sources", type=_choices(("file", "consul")), default=("file", "consul"),
                        help="where the changes enter: file, consul (a real Consul agent)")
    parser.add_argument("--modes", type=_choices(("sotw", "delta")), default=("sotw",))
    parser.add_argument("--groups", type=_ints, default=(1,), help="node-group counts, e.g. 1,4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true",
                        help="run this server alone (no gcp-server, no ratios)")
    parser.add_argument("--with-snapshot-cache", action="store_true",
                        help="also run gcp-server with -cache snapshot")
    parser.add_argument("--profile-server", action="store_true",
                        help="one more change run of this server under cProfile; print the top 15")
    parser.add_argument("--sync-timeout", type=float, default=120.0, help="xds-load -timeout, seconds")
    parser.add_argument("--idle", type=float, default=1.0, help="seconds after the sync before reading RSS")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load to cores 0 and 1")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write results as JSON")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the workdir (logs, catalog, profile)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes for a smoke run (" + " ".join(QUICK) + "); later flags override")
    args_list = list(argv if argv is not None else sys.argv[1:])
    if "--quick" in args_list:
        args_list = QUICK + args_list
    args = parser.parse_args(args_list)
    if min(args.services, args.endpoints, args.changes, args.change_streams, args.repeats) < 1:
        parser.error("--services, --endpoints, --changes, --change-streams and --repeats must be >= 1")
    return Options(
        services=args.services, endpoints=args.endpoints, storm=args.storm, changes=args.changes,
        change_streams=args.change_streams, sources=args.sources, modes=args.modes, groups=args.groups,
        repeats=args.repeats, snapshot_cache=args.with_snapshot_cache,
        reference=not args.no_reference, profile_server=args.profile_server,
        sync_timeout_s=args.sync_timeout, idle_s=args.idle, pin=not args.no_pin and _two_cores(),
        json_out=args.json, workdir=args.workdir, keep=args.keep,
    )


def _two_cores() -> bool:
    try:
        return {SERVER_CORE, LOAD_CORE} <= set(__import__("os").sched_getaffinity(0))
    except AttributeError:
        return False


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    options = parse_args(argv)
    stdout = out if out is not None else sys.stdout
    signal.signal(signal.SIGTERM, _terminate)  # so every child is ended on `kill` too, not only on Ctrl-C
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="fleet-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    consul = None
    try:
        from harness.testbin import ensure_binary

        xds_load = ensure_binary("xds-load")
        gcp_server = ensure_binary("gcp-server") if options.reference else None
        world = FleetWorld(options.services, options.endpoints, workdir / "catalog.yaml")
        all_resources = workdir / "resources.jsonl"
        world.dump_all(all_resources)
        plans = {"file": world.file_plan(options.changes, workdir)}
        if "consul" in options.sources:
            from harness.consul import ConsulAgent

            plans["consul"] = world.registry_plan(options.changes, workdir)
            consul = ConsulAgent(workdir / "consul", binary=ensure_binary("consul"), log_level="warn")
            consul.start()
        bench = Bench(options, workdir, world, all_resources, plans, xds_load, gcp_server, consul)
        bench.results.setup = {"served": served_counts(world.snapshot), "workdir": str(workdir),
                               "options": {k: (str(v) if isinstance(v, Path) else v)
                                           for k, v in asdict(options).items()}}
        bench.run()
        print_report(bench.results, options, stdout)
        if options.json_out is not None:
            write_json(bench.results, options, options.json_out)
        return 0
    finally:
        if consul is not None:
            consul.stop()
        if options.workdir is None and not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
