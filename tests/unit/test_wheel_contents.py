"""The product wheel holds the product only: no harness, demo, tests or benchmarks (issue 14 item 7).

pyproject.toml's `[tool.setuptools.packages.find] include = ["xds*"]` is what keeps them out; this builds
the wheel for real, from a copy of the sources in a scratch directory (the build writes `build/` and
`*.egg-info` beside the sources, which must not land in the checkout), and lists what is inside.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The copy includes the directories that must stay out, so that the test proves they are left out.
_SOURCES = ("pyproject.toml", "README.md", "xds", "harness", "tests", "benchmarks")
_LEFT_OUT = {"harness", "tests", "benchmarks"}
_BUILD_TIMEOUT_S = 120.0


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    for name in _SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path / "wheel"
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--quiet", "-w", str(out)]
    # With setuptools already installed, build without fetching it again: quicker and offline.
    if importlib.util.find_spec("setuptools") is not None:
        command.append("--no-build-isolation")
    result = subprocess.run(command, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, check=False)
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_contains_the_product_and_nothing_else(tmp_path: Path) -> None:
    with zipfile.ZipFile(_build_wheel(tmp_path)) as wheel:
        names = wheel.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        console_scripts = wheel.read(entry_points).decode()
    top_level = {name.split("/")[0] for name in names}
    packages = {name for name in top_level if not name.endswith(".dist-info")}
    assert packages == {"xds"}, sorted(top_level)
    assert not _LEFT_OUT & top_level, sorted(top_level)
    # Not nested under xds/ either (the layout before issue 14 shipped xds/harness/ and xds/demo.py).
    nested = [n for n in names if n.startswith(("xds/harness/", "xds/demo", "xds/tests/", "xds/benchmarks/"))]
    assert nested == [], nested
    # The product itself is whole: the CLI entry point and the generated management API are inside.
    assert "xds/cli.py" in names
    assert "xds/management/v1/management_pb2.py" in names
    assert "xds = xds.cli:main" in console_scripts
