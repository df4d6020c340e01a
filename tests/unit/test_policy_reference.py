"""docs/config.md's reference tables are what the field declarations render (xds/policy/reference.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds.cli import main
from xds.policy.reference import TABLES, render_table, update

ROOT = Path(__file__).resolve().parents[2]
CONFIG_MD = ROOT / "docs" / "config.md"


def test_config_md_tables_match_the_declarations() -> None:
    text = CONFIG_MD.read_text()
    assert update(text) == text, "docs/config.md is stale: run `xds schema --update-docs docs/config.md`"


def test_every_declared_key_has_a_row() -> None:
    text = CONFIG_MD.read_text()
    for name, shape in TABLES.items():
        table = render_table(shape)
        assert table in text, name
        for field in shape.fields:
            assert f"`{field.key}" in table or f".{field.key}`" in table, (name, field.key)


def test_update_refuses_a_file_without_the_markers() -> None:
    with pytest.raises(ValueError, match="markers of table 'top-level' are missing"):
        update("# no tables here\n")


def test_update_docs_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = CONFIG_MD.read_text()
    stale = tmp_path / "config.md"
    stale.write_text(text.replace("| `retries` | `0` |", "| `retries` | `7` |"))
    assert main(["schema", "--update-docs", str(stale)]) == 0
    assert stale.read_text() == text
    assert "updated" in capsys.readouterr().out
    assert main(["schema", "--update-docs", str(stale)]) == 0
    assert "already up to date" in capsys.readouterr().out
