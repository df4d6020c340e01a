"""Build a Go example of the docs once and cache the binary outside the repository (as testbin.py does).

The cache key is a hash of every file the build reads from the example (go.mod, go.sum, *.go), so an edit
rebuilds and an unchanged example is reused across test runs: a cold build of a gRPC client takes tens of
seconds on 2 cores (modules from the Go module proxy the first time), a cached one nothing.

Cache: `$XDS_TESTBIN_CACHE/<name>-<key>/<name>` (default ~/.cache/xds-testbin). Publishing is a rename of a
temporary file in the same directory, so a reader never sees a half-written binary and two concurrent
builds of the same key just both produce it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

# The same toolchain lookup and build environment as the registry binaries (GOTOOLCHAIN=local, no cgo).
from harness.testbin import TestbinError, _build_env, _go_command, cache_root

_BUILD_TIMEOUT_S = 15 * 60.0


def source_key(source: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in source.rglob("*")
                   if p.is_file() and (p.suffix == ".go" or p.name in ("go.mod", "go.sum")))
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_go_example(source: Path, name: str) -> Path:
    """The path of `name` built from the Go module in `source`, building it first if not cached."""
    target_dir = cache_root() / f"{name}-{source_key(source)}"
    binary = target_dir / name
    if os.access(binary, os.X_OK):
        return binary
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=target_dir)
    os.close(fd)
    try:
        result = subprocess.run([_go_command(), "build", "-trimpath", "-o", tmp_name, "."], cwd=source,
                                env=_build_env(), capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S,
                                check=False)
        if result.returncode != 0:
            raise TestbinError(f"`go build` of {source} exited {result.returncode}:\n{result.stderr[-4000:]}")
        os.replace(tmp_name, binary)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return binary
