"""RSS and CPU per idle synced stream of the real server (`python -m xds serve`), issue 12.

    python -m benchmarks.idle_rss [--services 1000] [--endpoints 10] [--streams 1000] [--modes sotw,delta]
                                  [--runs 3] [--idle 2]

Theory of operation
-------------------
The connect-storm scenario of benchmarks/fleet_scale.py alone, for this server only: a catalog file of the
fleet World (N services x M endpoints, one listener), the server pinned to core 0 and `xds-load` with one
connection per stream pinned to core 1 (tools/testbin/xds-load). Per run: server RSS and CPU from /proc
before connecting; S streams sync (CDS, EDS, LDS, RDS, each ACKed); after `--idle` seconds (the idle steady
state, not the sync's garbage) RSS again. Printed per run and as medians: server CPU per stream, RSS per
stream ((after - before) / S), streams lost. Issue 12's target: RSS per idle stream below 100 KiB.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from benchmarks.fleet_scale import THIS, Bench, Options
from benchmarks.fleet_world import FleetWorld


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idle_rss", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--modes", default="sotw,delta", help="comma-separated: sotw, delta")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=2.0, help="seconds after the sync before reading RSS")
    args = parser.parse_args(argv)
    stdout = out if out is not None else sys.stdout
    from harness.testbin import ensure_binary

    modes = tuple(m for m in args.modes.split(",") if m)
    with tempfile.TemporaryDirectory(prefix="idle-rss-") as tmp:
        workdir = Path(tmp)
        options = Options(services=args.services, endpoints=args.endpoints, storm=(args.streams,),
                          modes=modes, sources=("file",), repeats=args.runs, reference=False,
                          idle_s=args.idle)
        world = FleetWorld(args.services, args.endpoints, workdir / "catalog.yaml")
        bench = Bench(options, workdir, world, workdir / "resources.jsonl", {}, ensure_binary("xds-load"),
                      None, None)
        print(f"{args.services} services x {args.endpoints} endpoints, S = {args.streams} streams",
              file=stdout)
        for mode in modes:
            samples = [bench.storm(THIS, args.streams, mode, 1) for _ in range(args.runs)]
            for s in samples:
                print(f"  {mode}: CPU {s['cpu_per_stream_ms']:.2f} ms/stream, RSS "
                      f"{s['rss_per_stream_kib']:.1f} KiB/stream, lost {s['lost']:.0f}", file=stdout)
            cpu = statistics.median(s["cpu_per_stream_ms"] for s in samples)
            rss = statistics.median(s["rss_per_stream_kib"] for s in samples)
            print(f"{mode} median: server CPU {cpu:.2f} ms per stream, RSS {rss:.1f} KiB per idle stream",
                  file=stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
