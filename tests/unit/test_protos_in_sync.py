"""The committed generated code is exactly what protos/ compiles to with the pinned grpcio-tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ["protos/xds/management/v1/management.proto", "protos/xds/load/v1/load.proto"]
GENERATED = [f"xds/{api}/v1/{api}_pb2{suffix}" for api in ("management", "load")
             for suffix in (".py", ".pyi", "_grpc.py")]
FIX = "run scripts/gen-protos from the repository root and commit the result"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("protos")
    # The same arguments as scripts/gen-protos, from the repository root, with the outputs redirected: the
    # generated files embed the proto's path relative to -I, so anything else would differ.
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", f"--python_out={out}", f"--pyi_out={out}",
         f"--grpc_python_out={out}", *PROTOS],
        cwd=ROOT, check=True, capture_output=True, timeout=60,
    )
    return out


@pytest.mark.parametrize("path", GENERATED)
def test_generated_file_matches_proto(regenerated: Path, path: str) -> None:
    committed = ROOT / path
    assert committed.exists(), f"{path} is missing: {FIX}"
    assert committed.read_bytes() == (regenerated / path).read_bytes(), f"{path} is out of date: {FIX}"
