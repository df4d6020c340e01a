"""The fleet-scale benchmark's Go programs (issue 12) against real servers on loopback.

xds-load (tools/testbin/xds-load) runs 20 simulated Envoys, each on its own connection, against this
project's control plane (as a process, SotW and delta) and against go-control-plane (tools/testbin/gcp-server)
serving the same resources; every stream must sync, and after a `mark` a real endpoint change (the catalog
file rewritten, or the changed resources handed to gcp-server) must reach all 20.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import wait_until
from harness.linetool import LineTool
from harness.testbin import ensure_binary
from harness.xds_resources import changed_lines, resource_lines, snapshot_of, write_lines
from tests.e2e.conftest import ControlPlaneFactory

STREAMS = 20
SERVICES = 20
# Bounds: 20 streams sync in well under a second here; these leave room for a loaded 2-core machine.
SYNC_TIMEOUT_S = 20.0
CONVERGE_TIMEOUT_S = 20.0
START_TIMEOUT_S = 10.0


def catalog_document(first_port: int) -> dict[str, Any]:
    """SERVICES services of two endpoints each on one listener (docs/config.md); `first_port` is the first
    endpoint's port, the one a change moves."""
    return {
        "version": 1,
        "services": [
            {"name": f"svc-{i}", "endpoints": [{"address": f"10.0.{i}.1:{first_port if i == 0 else 8080}"},
                                               {"address": f"10.0.{i}.2:8080"}]}
            for i in range(SERVICES)
        ],
        "listeners": [{"name": "ingress", "port": 10000, "routes": [
            {"name": f"svc-{i}", "match": {"prefix": f"/svc-{i}/"}, "backends": [{"service": f"svc-{i}"}]}
            for i in range(SERVICES)]}],
    }


def write_catalog(path: Path, first_port: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(catalog_document(first_port), sort_keys=False))
    os.replace(tmp, path)  # atomically, as an editor does


def start_load(workdir: Path, server: str, mode: str) -> LineTool:
    load = LineTool("xds-load", [ensure_binary("xds-load"), "-server", server, "-streams", str(STREAMS),
                                 "-mode", mode, "-groups", "2", "-timeout", f"{SYNC_TIMEOUT_S:g}s"],
                    workdir=workdir)
    started = load.event("started", timeout_s=START_TIMEOUT_S)
    assert started["pid"] > 0
    return load


def assert_all_synced(load: LineTool) -> None:
    synced = load.event("synced", timeout_s=SYNC_TIMEOUT_S + 5)
    assert (synced["streams"], synced["synced"], synced["lost"]) == (STREAMS, STREAMS, 0), synced
    assert synced["errors"] == {}, synced
    assert 0 < synced["p50_ms"] <= synced["p99_ms"] <= synced["max_ms"] <= SYNC_TIMEOUT_S * 1000


def assert_converged(converged: dict[str, Any]) -> None:
    got = (converged["id"], converged["streams"], converged["received"])
    assert got == ("c1", STREAMS, STREAMS), converged
    assert 0 < converged["p50_ms"] <= converged["max_ms"] <= CONVERGE_TIMEOUT_S * 1000


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_xds_load_syncs_and_converges_on_this_server(
    mode: str, workdir: Path, control_plane_factory: ControlPlaneFactory
) -> None:
    catalog = workdir / "catalog.yaml"
    write_catalog(catalog, 8080)
    control_plane = control_plane_factory(catalog)
    with start_load(workdir, control_plane.xds_address, mode) as load:
        assert_all_synced(load)
        marked = load.command("mark c1 eds", "marked", timeout_s=START_TIMEOUT_S)
        assert marked == {"event": "marked", "id": "c1"}
        write_catalog(catalog, 9090)  # svc-0's first endpoint moves: one ClusterLoadAssignment changes
        assert_converged(load.event("converged", timeout_s=CONVERGE_TIMEOUT_S + 5))
        status = load.command("status", "status", timeout_s=START_TIMEOUT_S)
        assert (status["live"], status["synced"], status["errors"]) == (STREAMS, STREAMS, {}), status
        load.send("quit")
        load.event("bye", timeout_s=START_TIMEOUT_S)
        assert load.stop() == 0


@pytest.mark.parametrize(("cache", "mode"), [("linear", "sotw"), ("linear", "delta"), ("snapshot", "sotw")])
def test_xds_load_syncs_and_converges_on_go_control_plane(cache: str, mode: str, workdir: Path) -> None:
    catalog = workdir / "catalog.yaml"
    write_catalog(catalog, 8080)
    before = snapshot_of(catalog)
    resources = workdir / "resources.jsonl"
    # 20 clusters, 20 ClusterLoadAssignments, one listener, one route configuration.
    assert write_lines(resource_lines(before), resources) == 2 * SERVICES + 2
    with LineTool("gcp-server", [ensure_binary("gcp-server"), "-resources", resources, "-cache", cache,
                                 "-groups", "2"], workdir=workdir) as server:
        port = server.event("listening", timeout_s=START_TIMEOUT_S)["port"]
        with start_load(workdir, f"127.0.0.1:{port}", mode) as load:
            assert_all_synced(load)
            load.command("mark c1 eds", "marked", timeout_s=START_TIMEOUT_S)
            write_catalog(catalog, 9090)
            update = workdir / "update.jsonl"
            assert write_lines(changed_lines(before, snapshot_of(catalog)), update) == 1
            assert server.command(f"update {update}", "updated", timeout_s=START_TIMEOUT_S)["n"] == 1
            assert_converged(load.event("converged", timeout_s=CONVERGE_TIMEOUT_S + 5))
            assert load.stop() == 0
        assert server.stop() == 0


def test_xds_load_counts_refused_streams_as_lost(
    workdir: Path, control_plane_factory: ControlPlaneFactory
) -> None:
    """Without -retry a refused stream is lost and its gRPC status counted (the server admits 10 streams)."""
    catalog = workdir / "catalog.yaml"
    write_catalog(catalog, 8080)
    control_plane = control_plane_factory(catalog, extra_args=("--max-streams", "10"))
    with start_load(workdir, control_plane.xds_address, "sotw") as load:
        synced = load.event("synced", timeout_s=SYNC_TIMEOUT_S + 5)
        got = (synced["streams"], synced["synced"], synced["lost"], synced["errors"])
        assert got == (STREAMS, 10, 10, {"ResourceExhausted": 10}), synced
        assert load.command("status", "status", timeout_s=START_TIMEOUT_S)["live"] == 10


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_xds_load_retry_reconnects_after_a_server_restart(
    mode: str, workdir: Path, control_plane_factory: ControlPlaneFactory
) -> None:
    """With -retry, streams ended by the server (UNAVAILABLE while it restarts) all come back, resuming with
    what they hold (delta: initial_resource_versions), and a later change still reaches all 20."""
    catalog = workdir / "catalog.yaml"
    write_catalog(catalog, 8080)
    control_plane = control_plane_factory(catalog)
    load = LineTool("xds-load", [ensure_binary("xds-load"), "-server", control_plane.xds_address,
                                 "-streams", str(STREAMS), "-mode", mode, "-retry"], workdir=workdir)
    with load:
        load.event("started", timeout_s=START_TIMEOUT_S)
        assert_all_synced(load)
        control_plane.restart()

        def status() -> dict[str, Any]:
            return load.command("status", "status", timeout_s=START_TIMEOUT_S)

        wait_until(lambda: status()["live"] == STREAMS, timeout_s=SYNC_TIMEOUT_S,
                   message=lambda: f"streams did not all come back: {status()}")
        errors = status()["errors"]
        assert set(errors) <= {"Unavailable", "Canceled"} and errors.get("Unavailable", 0) >= STREAMS, errors
        load.command("mark c1 eds", "marked", timeout_s=START_TIMEOUT_S)
        write_catalog(catalog, 9090)
        assert_converged(load.event("converged", timeout_s=CONVERGE_TIMEOUT_S + 5))
