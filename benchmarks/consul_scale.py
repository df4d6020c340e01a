"""The Consul source past 200 services (issue 13 section 4): connections held and health-flip latency.

    python -m benchmarks.consul_scale [--services 200,2000] [--flips 10] [--sync-timeout 60] [--keep]

Theory of operation
-------------------
Per size N: a real `consul agent -dev` on loopback (harness/consul.py, binary from the testbin cache); N
services registered over the agent API (`s0000`...), each with one instance and one TTL check, by a bounded
thread pool; a KV policy naming `--flips` of them (spread over the range) so Envoy gets a cluster for each;
the control plane as a process (`python -m xds serve --consul-address ...`) and one real Envoy. Measured:

- sync: seconds from the control plane's start until Envoy holds one healthy host in every flip cluster
  (`cluster.<svc>.membership_healthy` == 1); "no sync" when it never gets there within `--sync-timeout`;
- connections: ESTABLISHED TCP connections from the control plane process to the Consul HTTP port, read
  from /proc (harness/sockets.py: the process's socket inodes matched against /proc/<pid>/net/tcp),
  sampled after sync and after the flips; the
  agent's default per-client limit (`limits.http_max_conns_per_client`) is 200;
- flip latency: for each flip service, its TTL check is set critical and the time until Envoy reports
  `membership_healthy` 0 is taken (then set passing again and waited back); p50/p95 printed.

Bounded everywhere: every wait has a timeout, registrations run 8 at a time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import yaml

_REGISTER_THREADS = 8
_CONSUL_LIMIT = 200  # Consul's default limits.http_max_conns_per_client


def service_name(i: int) -> str:
    return f"s{i:04d}"


def policy(port: int, services: Sequence[str]) -> str:
    return yaml.safe_dump({
        "services": [{"name": s, "connect_timeout": "1s"} for s in services],
        "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": port,
                       # One route per service: a service no route uses gets no cluster.
                       "routes": [{"name": f"r-{s}", "match": {"prefix": f"/{s}"},
                                   "backends": [{"service": s, "weight": 100}]} for s in services]}],
    }, sort_keys=False)


def run_size(n: int, flips: int, sync_timeout_s: float, workdir: Path, out: TextIO) -> dict[str, object]:
    from harness import ControlPlaneProcess, EnvoyProcess, free_port, free_ports
    from harness.consul import ConsulAgent, TtlCheck
    from harness.controlplane import bootstrap_for
    from harness.envoy import unique_base_id
    from harness.sockets import established_connections
    from harness.testbin import ensure_binary

    consul = ConsulAgent(workdir, binary=ensure_binary("consul"), log_level="warn")
    consul.start()
    control_plane: ControlPlaneProcess | None = None
    envoy: EnvoyProcess | None = None
    try:
        started = time.monotonic()

        def register(i: int) -> None:
            consul.register_service(service_name(i), service_id=f"{service_name(i)}-1", address="127.0.0.1",
                                    port=10000 + i, check=TtlCheck(ttl_s=3600.0))
        with ThreadPoolExecutor(_REGISTER_THREADS) as pool:
            list(pool.map(register, range(n)))
        print(f"  N={n}: registered in {time.monotonic() - started:.1f} s", file=out)
        targets = [service_name(i * n // flips) for i in range(flips)]
        consul.kv_put("xds/policies/bench", policy(free_port(), targets))
        xds_port, admin_port = free_ports(2)
        control_plane = ControlPlaneProcess(None, workdir=workdir, xds_port=xds_port, admin_port=admin_port,
                                            extra_args=("--consul-address", consul.url,
                                                        "--consul-kv-prefix", "xds/policies/"))
        t0 = time.monotonic()
        control_plane.start()
        envoy_admin = free_port()
        envoy = EnvoyProcess(bootstrap_for("bench", "bench", xds_port=xds_port, admin_port=envoy_admin),
                             workdir=workdir, admin_port=envoy_admin, base_id=unique_base_id(),
                             binary=Path(sys.executable).parent / "envoy", log_level="warn")
        envoy.start()

        def healthy(svc: str) -> int | None:
            try:
                value = envoy.stats(rf"^cluster\.{svc}\.membership_healthy$").get(
                    f"cluster.{svc}.membership_healthy")
            except OSError:
                return None
            return value if isinstance(value, int) else None

        deadline = t0 + sync_timeout_s
        synced = False
        while time.monotonic() < deadline:
            if all(healthy(s) == 1 for s in targets):
                synced = True
                break
            time.sleep(0.05)
        sync_s = time.monotonic() - t0
        pid = control_plane.process.pid
        assert pid is not None
        conns = established_connections(pid, consul.http_port)
        result: dict[str, object] = {"n": n, "synced": synced, "sync_s": sync_s, "connections": conns}
        print(f"  N={n}: {'synced' if synced else 'NO SYNC'} after {sync_s:.1f} s; control plane -> Consul "
              f"connections: {conns} (Consul's default limit per client: {_CONSUL_LIMIT})", file=out)
        if not synced:
            print("  control plane log tail:\n" + control_plane.tail(8), file=out)
            return result
        samples: list[float] = []
        for svc in targets:
            check = f"service:{svc}-1"
            start = time.monotonic()
            consul.set_check(check, "critical")
            while healthy(svc) != 0:
                if time.monotonic() - start > 30:
                    raise TimeoutError(f"{svc}: Envoy never saw the critical check")
                time.sleep(0.005)
            samples.append(time.monotonic() - start)
            consul.set_check(check, "passing")
            back = time.monotonic()
            while healthy(svc) != 1:
                if time.monotonic() - back > 30:
                    raise TimeoutError(f"{svc}: Envoy never saw the passing check")
                time.sleep(0.01)
        samples.sort()
        p50 = statistics.median(samples)
        p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
        conns = max(conns, established_connections(pid, consul.http_port))
        result.update(p50_ms=p50 * 1000, p95_ms=p95 * 1000, connections=conns)
        print(f"  N={n}: health flip -> Envoy over {len(samples)} flips: p50 {p50 * 1000:.0f} ms, "
              f"p95 {p95 * 1000:.0f} ms; max connections seen {conns}", file=out)
        return result
    finally:
        if envoy is not None:
            envoy.stop()
        if control_plane is not None:
            control_plane.stop()
        consul.stop()


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.consul_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", default="200,2000", help="comma-separated catalog sizes")
    parser.add_argument("--flips", type=int, default=10)
    parser.add_argument("--sync-timeout", type=float, default=60.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    stdout = out if out is not None else sys.stdout
    sizes = [int(s) for s in args.services.split(",") if s]
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="consul-scale-"))
    try:
        for n in sizes:
            workdir = tmp / f"n{n}"
            workdir.mkdir()
            results.append(run_size(n, args.flips, args.sync_timeout, workdir, stdout))
    finally:
        if args.keep:
            print(f"work directory kept: {tmp}", file=stdout)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("summary:", file=stdout)
    for r in results:
        print(f"  N={r['n']}: synced={r['synced']} sync {r['sync_s']:.1f} s, connections {r['connections']}"
              + (f", flip p50 {r['p50_ms']:.0f} ms p95 {r['p95_ms']:.0f} ms" if "p50_ms" in r else ""),
              file=stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
