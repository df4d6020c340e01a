"""`xds diff` and `xds status -o json` against a running control plane (issue 14 item 5): the control plane as
a process serving a real Envoy on loopback, the CLI as a process, as a CI step would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from harness import UpstreamPool, free_port, wait_until

from .stack import Stack, start_stack

V1 = {"version": "v1"}
V2 = {"version": "v2"}


def _xds(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xds", *args], capture_output=True, text=True, timeout=30,
                          check=False)


def _diff(stack: Stack, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _xds("diff", "--config", str(config), "--management-address",
                stack.control_plane.management_address, *extra)


def _candidate(stack: Stack, path: Path, backends: Sequence[tuple[str, dict[str, str], int]]) -> Path:
    document: dict[str, Any] = stack.catalog.document()
    document["listeners"][0]["routes"][-1]["backends"] = [
        {"service": s, "subset": dict(sub), "weight": w} for s, sub, w in backends]
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_diff_against_the_running_server(workdir: Path, upstreams: Callable[..., UpstreamPool],
                                         control_plane_factory: Any, envoy_factory: Any) -> None:
    stack = start_stack(workdir=workdir, pool=upstreams("web-v1", "web-v2"),
                        services={"web": [("web-v1", V1), ("web-v2", V2)]},
                        backends=[("web", V1, 80), ("web", V2, 20)],
                        control_plane_factory=control_plane_factory, envoy_factory=envoy_factory)

    # The file the server reads, as the candidate: no change, exit 0.
    same = _diff(stack, stack.catalog.path)
    assert same.returncode == 0, same.stderr
    assert same.stdout.strip() == "group edge: no changes"

    # A real change: the split moves to 50/50 and a listener is added.
    candidate = _candidate(stack, workdir / "candidate.yaml", [("web", V1, 50), ("web", V2, 50)])
    document = yaml.safe_load(candidate.read_text())
    document["listeners"].append({"name": "extra", "address": "127.0.0.1", "port": free_port(),
                                  "routes": [{"name": "x", "backends": [{"service": "web", "subset": V1,
                                                                         "weight": 100}]}]})
    candidate.write_text(yaml.safe_dump(document, sort_keys=False))
    changed = _diff(stack, candidate, "-o", "json")
    assert changed.returncode == 1, changed.stderr
    data = json.loads(changed.stdout)
    assert data["changed"] is True and [g["group"] for g in data["groups"]] == ["edge"]
    kinds = {(c["type"], c["name"]): c["change"] for c in data["groups"][0]["changes"]}
    assert kinds[("lds", "extra")] == "added"
    assert ("rds", "ingress") in kinds and kinds[("rds", "ingress")] == "changed"
    route = next(c for c in data["groups"][0]["changes"] if (c["type"], c["name"]) == ("rds", "ingress"))
    removed = [line for line in route["diff"].splitlines() if line.startswith("-") and '"weight"' in line]
    added = [line for line in route["diff"].splitlines() if line.startswith("+") and '"weight"' in line]
    assert any("80" in line for line in removed) and any("50" in line for line in added)

    # The human output names the same resources; --type narrows the comparison.
    text = _diff(stack, candidate)
    assert text.returncode == 1 and "  + lds extra (added)" in text.stdout
    # The new listener routes to an existing subset cluster: clusters and endpoints stay as they are.
    only_cds = _diff(stack, candidate, "--type", "cds", "--type", "eds")
    assert only_cds.returncode == 0, only_cds.stdout + only_cds.stderr
    assert _diff(stack, candidate, "--type", "lds", "--summary").stdout.splitlines() == [
        "group edge: 1 added, 0 removed, 0 changed", "  + lds extra (added)"]

    # The server did not change: the diff only read it.
    assert _diff(stack, stack.catalog.path).returncode == 0


def test_status_json_and_diff_errors(workdir: Path, upstreams: Callable[..., UpstreamPool],
                                     control_plane_factory: Any, envoy_factory: Any) -> None:
    stack = start_stack(workdir=workdir, pool=upstreams("web-v1"), services={"web": [("web-v1", V1)]},
                        backends=[("web", V1, 100)], control_plane_factory=control_plane_factory,
                        envoy_factory=envoy_factory)
    address = stack.control_plane.management_address

    def synced() -> dict[str, Any] | None:
        result = _xds("status", "--management-address", address, "-o", "json", "--group", "edge")
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        states = {t["short_name"]: t["state"] for p in data["proxies"] for t in p["types"]}
        return data if states and all(s == "SYNCED" for s in states.values()) else None

    data = wait_until(synced, timeout_s=15, message="status -o json never showed every type SYNCED")
    assert [p["node_id"] for p in data["proxies"]] == ["envoy-1"]
    assert data["proxies"][0]["group"] == "edge"
    assert {s["name"] for s in data["sources"]} and all(s["synced"] for s in data["sources"])
    assert data["snapshot"]["group"] == "edge"
    assert any(r["name"] == "ingress" and r["resource"]["name"] == "ingress"
               for r in data["snapshot"]["resources"])
    as_yaml = _xds("status", "--management-address", address, "-o", "yaml")
    assert as_yaml.returncode == 0 and yaml.safe_load(as_yaml.stdout)["proxies"][0]["node_id"] == "envoy-1"

    # Errors exit 2: a group the server does not serve, a server that is not there.
    unknown = _diff(stack, stack.catalog.path, "--group", "nobody")
    assert unknown.returncode == 2 and "nobody" in unknown.stderr
    gone = _xds("diff", "--config", str(stack.catalog.path),
                "--management-address", f"127.0.0.1:{free_port()}")
    assert gone.returncode == 2 and "management API" in gone.stderr
