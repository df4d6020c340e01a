"""What the per-client-kind snapshot variants cost (issue 11 item 3; docs/protocol.md C1, C2).

    python -m benchmarks.client_variants [--services 2000] [--endpoints 10] [--streams 200]

A World of N services x M endpoints (benchmarks/snapshot_build.py) plus one `kind: grpc` listener routing
to every service is built through the server's own builder (pipeline.builder_for) for the three client
kinds of a node group `edge` (an ADS Envoy, a single-type Envoy, a gRPC client, in that order, as they
connect), then the same for a second group `other`. For each build it prints the time and, per type, how
many resources had to be serialized: a resource that is the same object as one in an earlier snapshot was
not serialized again. Then S streams start on the single-type variant: they only concatenate its cached
bytes, so serializations stay one per resource per variant whatever S is.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Sequence
from dataclasses import replace

from benchmarks.snapshot_build import Sizes, make_catalog, make_policy, serve_streams, service_name
from xds.cache.node import client_key
from xds.cache.snapshot import Snapshot
from xds.pipeline import World, builder_for
from xds.policy.desired import ListenerKind
from xds.policy.schema import BackendRef, ListenerPolicy, RoutePolicy
from xds.translate.delivery import ClientKind
from xds.typeurls import PUSH_ORDER, short_name


def make_world(sizes: Sizes) -> World:
    policy = make_policy(sizes)
    grpc = ListenerPolicy("grpc-0", kind=ListenerKind.GRPC, routes=tuple(
        RoutePolicy(service_name(i), f"/{service_name(i)}/", backends=(BackendRef(service_name(i)),))
        for i in range(sizes.services)))
    return World(catalog=make_catalog(sizes), policy=replace(policy, listeners=(*policy.listeners, grpc)))


def serialized(new: Snapshot, earlier: Sequence[Snapshot]) -> str:
    """Per type: resources serialized for `new` (not the same object as in an earlier snapshot) / all."""
    seen = {id(r) for snapshot in earlier for t in PUSH_ORDER for r in snapshot.of_type(t).values()}
    counts = {t: (sum(1 for r in new.of_type(t).values() if id(r) not in seen), len(new.of_type(t)))
              for t in PUSH_ORDER if new.of_type(t)}
    return ", ".join(f"{short_name(t)} {fresh}/{total}" for t, (fresh, total) in counts.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--streams", type=int, default=200)
    args = parser.parse_args(argv)
    sizes = Sizes(services=args.services, endpoints=args.endpoints, listeners=1, runs=1, streams=args.streams,
                  watchers=1)
    build = builder_for(make_world(sizes))
    built: list[Snapshot] = []
    print(f"{args.services} services x {args.endpoints} endpoints, one http and one grpc listener; "
          "serialized/total per type")
    for group in ("edge", "other"):
        for kind in (ClientKind.ENVOY_ADS, ClientKind.ENVOY_SINGLE, ClientKind.GRPC):
            key = client_key(group, kind)
            gc.collect()
            started = time.perf_counter()
            snapshot = build(key, None)
            elapsed = time.perf_counter() - started
            print(f"{key:>20}: {elapsed * 1000:7.1f} ms; {serialized(snapshot, built)}")
            built.append(snapshot)
    gc.collect()
    started = time.perf_counter()
    encoded = serve_streams(built[1], args.streams)
    elapsed = time.perf_counter() - started
    print(f"{args.streams} streams on edge's single-type variant: {elapsed * 1000:.1f} ms, "
          f"{encoded / 1e6:.1f} MB encoded from cached bytes, 0 serializations "
          f"({elapsed / args.streams * 1000:.2f} ms/stream)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
