"""`xds --version`, `xds version`, `xds render -o` and `xds diff --against` (issue 14 item 5), through
xds.cli.main as a user runs them."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from xds.cli import main


def _catalog(path: Path, *, weights: tuple[int, int] = (80, 20), extra_service: bool = False) -> Path:
    services: list[dict[str, Any]] = [
        {"name": "web", "endpoints": [{"address": "127.0.0.1:8081", "metadata": {"version": "v1"}},
                                      {"address": "127.0.0.1:8082", "metadata": {"version": "v2"}}]}]
    if extra_service:
        services.append({"name": "api", "endpoints": [{"address": "127.0.0.1:8083"}]})
    doc: dict[str, Any] = {"version": 1, "services": services, "listeners": [{
        "name": "ingress", "address": "127.0.0.1", "port": 10000, "routes": [{
            "name": "all", "match": {"prefix": "/"},
            "backends": [{"service": "web", "subset": {"version": "v1"}, "weight": weights[0]},
                         {"service": "web", "subset": {"version": "v2"}, "weight": weights[1]}]}]}]}
    if extra_service:  # only services a route names are served
        doc["listeners"][0]["routes"].insert(0, {"name": "api", "match": {"prefix": "/api"},
                                                 "backends": [{"service": "api", "weight": 100}]})
    path.write_text(yaml.safe_dump(doc))
    return path


def test_version_flag_names_package_python_grpcio_and_api(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"xds {metadata.version('xds-control-plane')} (Python {platform.python_version()}, "
                          f"grpcio {metadata.version('grpcio')}, ")
    assert out.endswith(", Envoy API v3)\n") and out.count("\n") == 1  # one line, never wrapped


def test_version_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version", "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"xds", "python", "grpcio", "protobuf", "xds_protos", "envoy_api"}
    assert data["grpcio"] == metadata.version("grpcio") and data["envoy_api"] == "v3"


def test_render_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(_catalog(tmp_path / "c.yaml"))
    assert main(["render", "--cluster", "edge", "--config", config]) == 0
    default = json.loads(capsys.readouterr().out)
    assert main(["render", "--cluster", "edge", "--config", config, "-o", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == default
    assert main(["render", "--cluster", "edge", "--config", config, "-o", "table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "group edge" and lines[1].split() == ["TYPE", "NAME", "VERSION"]
    rows = [row.split() for row in lines[2:]]
    assert len(rows) == sum(len(t["resources"]) for t in default["types"])
    assert rows[[r[0] for r in rows].index("LDS")][:2] == ["LDS", "ingress"]
    lds = next(t for t in default["types"] if t["type"] == "lds")
    assert lds["resources"][0]["name"] == "ingress"


def test_diff_against_files_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current = str(_catalog(tmp_path / "current.yaml"))
    same = str(_catalog(tmp_path / "same.yaml"))
    shifted = str(_catalog(tmp_path / "shifted.yaml", weights=(50, 50), extra_service=True))

    assert main(["diff", "--config", same, "--against", current, "--group", "edge"]) == 0
    assert capsys.readouterr().out.strip() == "group edge: no changes"

    assert main(["diff", "--config", shifted, "--against", current, "--group", "edge", "-o", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["changed"] is True
    changes = {(c["type"], c["name"]): c for c in data["groups"][0]["changes"]}
    assert changes[("cds", "api")]["change"] == "added"
    assert changes[("eds", "api")]["change"] == "added"
    route = next(c for (t, _), c in changes.items() if t == "rds")
    assert route["change"] == "changed"
    assert '"weight": 80' in route["diff"] and '"weight": 50' in route["diff"]

    assert main(["diff", "--config", shifted, "--against", current, "--group", "edge", "--type", "lds"]) == 0
    capsys.readouterr()


def test_diff_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current = str(_catalog(tmp_path / "current.yaml"))
    missing = str(tmp_path / "missing.yaml")
    assert main(["diff", "--config", missing, "--against", current, "--group", "edge"]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert main(["diff", "--config", current, "--against", current]) == 2
    assert "--group" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nservices: [{name: web}]\nlisteners: nope\n")
    assert main(["diff", "--config", str(broken), "--against", current, "--group", "edge"]) == 2
    assert "broken.yaml" in capsys.readouterr().err


def test_diff_builds_single_type_variants_with_the_given_xds_cluster(tmp_path: Path) -> None:
    from xds.cache.node import client_key
    from xds.cli_diff import load_world, view_of_world
    from xds.translate.delivery import ClientKind

    paths = [_catalog(tmp_path / "c.yaml")]
    key = client_key("edge", ClientKind("envoy-single"))
    default = view_of_world(load_world(paths), key)
    named = view_of_world(load_world(paths, xds_cluster="cp-cluster"), key)
    assert default["cds"].keys() == named["cds"].keys() and default["cds"]
    assert all("xds_cluster" in text and "cp-cluster" not in text for text in default["cds"].values())
    assert all("cp-cluster" in text for text in named["cds"].values())
