"""Server CPU per new xDS stream: plaintext vs mTLS on the xDS port (issue 9's closing note).

    python -m benchmarks.tls_handshake [--streams 200] [--services 50] [--rounds 2]

Theory of operation
-------------------
For each mode (plaintext, then mTLS with certificates made by harness/pki.py), a fresh control plane runs
as a child process (`python -m xds serve`) on 127.0.0.1 with a catalog of `--services` services (one
listener routing to all of them), and a client in this process opens `--streams` streams one after the
other. Each stream is a new channel with its own connection (grpc.use_local_subchannel_pool), so it pays
a TCP connect and, with mTLS, a full TLS 1.3 handshake with client certificate verification plus the
server's identity check (the peer certificate parsed and matched against the node, xds/server/peer_auth.py);
then an ADS request for clusters with a node, the first response (every cluster of the group), and close.

A second measurement, `handshake + health`, replaces the ADS stream by one gRPC health check: the cost of
the connection and handshake with the least RPC work on top.

Measured: the server process's CPU time (utime + stime from /proc/<pid>/stat, in clock ticks) across the
whole batch, divided by the number of streams; and the client's wall time per stream (the client shares
the machine, so wall time includes its own work). The first `--warmup` streams of each batch are not
counted (the group's snapshot is built by the first one). Each batch runs `--rounds` times and the
lowest CPU per stream is reported (noise from other processes only adds). Bounded: at most `--streams`
x `--rounds` x 4 short-lived connections, 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import yaml

from harness import ControlPlaneProcess, free_ports
from harness.pki import CertificateAuthority, Issued, spiffe_id
from harness.xds_tls import first_config, health_ok

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
GROUP = "bench"


def process_cpu_s(pid: int) -> float:
    """utime + stime of `pid` in seconds (fields 14 and 15 of /proc/<pid>/stat, after the command name)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


@dataclass(frozen=True, slots=True)
class Batch:
    mode: str
    what: str
    streams: int
    server_cpu_ms_per_stream: float
    client_wall_ms_per_stream: float


@dataclass(frozen=True, slots=True)
class Tls:
    ca: CertificateAuthority
    client: Issued
    args: tuple[str, ...]


def _catalog(path: Path, services: int) -> None:
    names = [f"svc-{i:03d}" for i in range(services)]
    doc = {
        "version": 1,
        "services": [{"name": n, "endpoints": [{"address": f"127.0.0.1:{20000 + i}"}]}
                     for i, n in enumerate(names)],
        "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": 10000,
                       "routes": [{"name": n, "match": {"prefix": f"/{n}"}, "backends": [{"service": n}]}
                                  for n in names]}],
    }
    path.write_text(yaml.safe_dump(doc))


def _tls(workdir: Path) -> Tls:
    ca = CertificateAuthority.create()
    server = ca.server_cert()
    cert, key = server.write(workdir, "server")
    ca_file = ca.write_ca(workdir / "ca.crt")
    return Tls(ca=ca, client=ca.client_cert(spiffe_id("xds.local", GROUP)),
               args=("--tls-cert", str(cert), "--tls-key", str(key), "--client-ca", str(ca_file)))


async def _batch(pid: int, count: int, warmup: int, one: Callable[[int], Awaitable[object]]
                 ) -> tuple[float, float]:
    for i in range(warmup):
        await one(-1 - i)
    cpu0, wall0 = process_cpu_s(pid), time.perf_counter()
    for i in range(count):
        await one(i)
    cpu1, wall1 = process_cpu_s(pid), time.perf_counter()
    return (cpu1 - cpu0) / count * 1000, (wall1 - wall0) / count * 1000


def run_mode(mode: str, *, workdir: Path, streams: int, services: int, rounds: int, warmup: int,
             tls: Tls | None) -> list[Batch]:
    catalog = workdir / "catalog.yaml"
    _catalog(catalog, services)
    xds_port, admin_port = free_ports(2)
    cp = ControlPlaneProcess(catalog, workdir=workdir, xds_port=xds_port, admin_port=admin_port,
                             extra_args=(*(tls.args if tls else ()), "--log-level", "WARNING"),
                             name=f"control-plane-{mode}")
    cp.start()
    try:
        cp.wait_ready(30)
        pid = cp.process.pid
        assert pid is not None
        ca_pem = tls.ca.cert_pem if tls else None
        client = tls.client if tls else None

        async def stream(i: int) -> object:
            response = await first_config(cp.xds_address, node_id=f"bench-{i}", cluster=GROUP,
                                          ca_pem=ca_pem, client=client)
            if len(response.resources) != services:
                raise AssertionError(f"expected {services} clusters, got {len(response.resources)}")
            return response

        async def health(i: int) -> object:
            if not await health_ok(cp.xds_address, ca_pem=ca_pem, client=client):
                raise AssertionError(f"{mode}: the health check failed")
            return True

        results: list[Batch] = []
        for what, one in (("new stream + first config", stream), ("handshake + health", health)):
            best: tuple[float, float] | None = None
            for _ in range(rounds):
                measured = asyncio.run(_batch(pid, streams, warmup, one))
                best = measured if best is None or measured[0] < best[0] else best
            assert best is not None
            results.append(Batch(mode=mode, what=what, streams=streams, server_cpu_ms_per_stream=best[0],
                                 client_wall_ms_per_stream=best[1]))
        return results
    finally:
        cp.stop()


def render(batches: Sequence[Batch], out: TextIO) -> None:
    out.write(f"{'mode':<10} {'what':<28} {'streams':>7} {'server CPU ms/stream':>21} "
              f"{'client wall ms/stream':>22}\n")
    for b in batches:
        out.write(f"{b.mode:<10} {b.what:<28} {b.streams:>7} {b.server_cpu_ms_per_stream:>21.2f} "
                  f"{b.client_wall_ms_per_stream:>22.2f}\n")
    by = {(b.mode, b.what): b for b in batches}
    for what in dict.fromkeys(b.what for b in batches):
        plain, mtls = by.get(("plaintext", what)), by.get(("mtls", what))
        if plain and mtls and plain.server_cpu_ms_per_stream > 0:
            ratio = mtls.server_cpu_ms_per_stream / plain.server_cpu_ms_per_stream
            extra = mtls.server_cpu_ms_per_stream - plain.server_cpu_ms_per_stream
            out.write(f"{what}: mTLS/plaintext server CPU = {ratio:.2f}x (+{extra:.2f} ms per stream)\n")


def main(argv: Sequence[str] | None = None, *, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200, help="streams per batch (default 200)")
    parser.add_argument("--services", type=int, default=50, help="clusters in the first config (default 50)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="batches per mode; the best is kept (default 2)")
    parser.add_argument("--warmup", type=int, default=10, help="uncounted streams per batch (default 10)")
    args = parser.parse_args(argv)
    if not 1 <= args.streams <= 5000 or not 1 <= args.rounds <= 10:
        parser.error("--streams must be 1-5000 and --rounds 1-10")
    batches: list[Batch] = []
    with tempfile.TemporaryDirectory(prefix="xds-tls-bench-") as tmp:
        workdir = Path(tmp)
        for mode in ("plaintext", "mtls"):
            tls = _tls(workdir) if mode == "mtls" else None
            batches += run_mode(mode, workdir=workdir, streams=args.streams, services=args.services,
                                rounds=args.rounds, warmup=args.warmup, tls=tls)
    out.write(f"server CPU from /proc/<pid>/stat ({_TICKS_PER_S} ticks/s), best of {args.rounds} rounds, "
              f"{args.services} clusters per first config\n")
    render(batches, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
