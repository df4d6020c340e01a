"""The CLI's offline commands: validate, render, bootstrap (serve and status run in the e2e tests)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from xds.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog.yaml"


def test_validate_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    assert "OK (2 services, 1 listeners)" in capsys.readouterr().out


def test_validate_names_file_line_and_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  - name: web\n    endpoints:\n      - address: 127.0.0.1:99999\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:4:" in err and "port" in err


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml" in capsys.readouterr().err


def test_render_prints_what_a_node_group_receives(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--cluster", "edge", "--config", str(EXAMPLE)]) == 0
    rendered = json.loads(capsys.readouterr().out)
    by_type = {t["type"]: t for t in rendered["types"]}
    assert [t["type"] for t in rendered["types"]] == ["cds", "eds", "lds", "rds"]
    assert {c["name"] for c in by_type["cds"]["resources"]} == {"api", "web|version=v1", "web|version=v2"}
    weights = {c["name"]: c["weight"] for vh in by_type["rds"]["resources"][0]["virtual_hosts"]
               for r in vh["routes"] for c in r["route"].get("weighted_clusters", {}).get("clusters", [])}
    assert weights == {"web|version=v1": 90, "web|version=v2": 10}
    assert all(t["version"] for t in rendered["types"])


def test_render_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    main(["render", "--cluster", "edge", "--config", str(EXAMPLE)])
    first = capsys.readouterr().out
    main(["render", "--cluster", "edge", "--config", str(EXAMPLE)])
    assert capsys.readouterr().out == first


def test_bootstrap_points_envoy_at_the_server(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bootstrap", "--node-id", "n1", "--cluster", "edge", "--xds-address", "127.0.0.1:18000"]
    assert main(args) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["node"] == {"id": "n1", "cluster": "edge"}
    assert doc["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"


def test_serve_requires_a_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDS_CONFIG", raising=False)
    with pytest.raises(SystemExit, match="--config"):
        main(["serve"])


def _broken(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)  # with no writer: a blocking open() would wait forever
    elif kind == "dev-zero-symlink":
        os.symlink("/dev/zero", path)  # read_bytes() would never end
    elif kind == "sparse-64gib":
        path.touch()
        os.truncate(path, 64 * 1024**3)
    else:
        path.mkdir()


@pytest.mark.parametrize(("kind", "reason"), [
    ("fifo", "it is a FIFO (named pipe), not a regular file"),
    ("dev-zero-symlink", "it is a character device, not a regular file"),
    ("sparse-64gib",
     "it is 68719476736 bytes (65536.0 MiB), more than the limit of 67108864 bytes (64.0 MiB)"),
    ("directory", "it is a directory, not a regular file"),
])
def test_validate_refuses_a_broken_path_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    kind: str, reason: str) -> None:
    path = tmp_path / "catalog.yaml"
    _broken(path, kind)
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{path}: cannot read the file: {reason}\n"


def test_validate_escapes_control_characters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('services:\n  - name: web\n    "\\e[2J\\x9b31m\\u2028": 1\n')
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    key = "\\x1b[2J\\x9b31m\\u2028"
    assert err == f"{bad}:3:5: services[0].{key}: unknown key '{key}' in service 'web'\n"
    assert err.isascii() and err.count("\n") == 1


def test_validate_reports_a_crash_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(path: Path, **kwargs: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("xds.policy.load.load_file", crash)
    assert main(["validate", str(EXAMPLE)]) == 1
    assert capsys.readouterr().err == f"{EXAMPLE}: internal error: RuntimeError: boom\\x0asecond line\n"


def test_validate_uses_the_same_size_limit_as_serve(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    size = EXAMPLE.stat().st_size
    assert main(["validate", "--max-catalog-bytes", str(size), str(EXAMPLE)]) == 0
    assert main(["validate", "--max-catalog-bytes", str(size - 1), str(EXAMPLE)]) == 1
    assert capsys.readouterr().err == (f"{EXAMPLE}: cannot read the file: it is {size} bytes, more than the "
                                       f"limit of {size - 1} bytes\n")
    monkeypatch.setenv("XDS_MAX_CATALOG_BYTES", str(size - 1))
    assert main(["validate", str(EXAMPLE)]) == 1
    assert "more than the limit" in capsys.readouterr().err
    assert main(["validate", "--max-catalog-bytes", "0", str(EXAMPLE)]) == 1
    assert capsys.readouterr().err == "xds: error: --max-catalog-bytes must be positive, got 0\n"
