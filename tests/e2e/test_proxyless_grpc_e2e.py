"""Proxyless gRPC clients (issue 11 item 3): a real client with an `xds:///greeter` target, bootstrapped by
`xds bootstrap --grpc`, calls two real grpcio servers through the split of a `kind: grpc` listener and
follows an edit of it. No Envoy is involved: the client balances itself from what the server sends. Two
clients: grpcio (Python, gRPC C-core) and grpc-go (tools/testbin/grpc-xds-client, built once from the Go
module proxy and cached by harness/testbin.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.grpc_named import NamedGrpcServer, ProxylessClient
from harness.testbin import ensure_binary
from harness.xds_clients import bootstrap_text

CALLS = 1000


def _document(pool: dict[str, NamedGrpcServer], v1: int, v2: int) -> str:
    return yaml.safe_dump({"version": 1, "services": [{"name": "greeter", "endpoints": [
        {"address": f"127.0.0.1:{pool['v1'].port}", "metadata": {"version": "v1"}},
        {"address": f"127.0.0.1:{pool['v2'].port}", "metadata": {"version": "v2"}}]}],
        "listeners": [{"name": "greeter", "kind": "grpc", "routes": [{"name": "all", "backends": [
            {"service": "greeter", "subset": {"version": "v1"}, "weight": v1},
            {"service": "greeter", "subset": {"version": "v2"}, "weight": v2}]}]}]}, sort_keys=False)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def servers() -> Iterator[dict[str, NamedGrpcServer]]:
    pool = {name: NamedGrpcServer(f"greeter-{name}") for name in ("v1", "v2")}
    for server in pool.values():
        server.start()
    yield pool
    for server in pool.values():
        server.stop()


def _share(counts: dict[str, int]) -> float:
    assert set(counts) <= {"greeter-v1", "greeter-v2"}, counts  # no failed call
    return counts.get("greeter-v1", 0) / sum(counts.values())


def _command(client: str, target: str) -> list[str]:
    if client == "grpcio":
        return [sys.executable, "-m", "harness.grpc_named", target]
    return [str(ensure_binary("grpc-xds-client")), target]


@pytest.mark.parametrize("client_kind", ["grpcio", "grpc-go"])
def test_proxyless_client_follows_an_80_20_split_and_an_edit(
        client_kind: str, workdir: Path, servers: dict[str, NamedGrpcServer],
        control_plane_factory: Any) -> None:
    catalog = workdir / "catalog.yaml"
    _write(catalog, _document(servers, 80, 20))
    control_plane = control_plane_factory(catalog)
    bootstrap = workdir / "grpc-bootstrap.json"
    bootstrap.write_text(bootstrap_text(f"{client_kind}-1", "edge", xds_port=control_plane.xds_port,
                                        mode="--grpc"))
    client = ProxylessClient(_command(client_kind, "xds:///greeter"), bootstrap=bootstrap,
                             log_path=workdir / f"{client_kind}-client.log")
    try:
        before = client.calls(CALLS)
        # 1000 weighted picks: one standard deviation is 1.3 points, +-5 points is a 3.9-sigma band.
        print(f"{client_kind} 80/20: {before}")
        assert 0.75 <= _share(before) <= 0.85, before
        assert set(control_plane.status()["groups"]) == {"edge|client=grpc"}

        _write(catalog, _document(servers, 50, 50))
        # Polled on the condition itself: a batch of 200 calls under 80/20 lands at or under 65 % v1 with
        # probability below 1e-7, so the first such batch means the client applied the edit.
        for _ in range(50):
            if _share(client.calls(200)) <= 0.65:
                break
        else:
            pytest.fail(f"the {client_kind} client never followed the edit to 50/50")
        after = client.calls(CALLS)
        print(f"{client_kind} 50/50: {after}")
        assert 0.45 <= _share(after) <= 0.55, after
    finally:
        client.stop()
