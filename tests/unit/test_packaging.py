"""Our `xds` package shares its top-level name with the CNCF `xds` protos that xds-protos installs."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import xds

ROOT = Path(__file__).resolve().parents[2]


def test_envoy_protos_that_import_cncf_xds_still_load() -> None:
    # envoy's cluster proto imports xds.core.v3: it must resolve next to our own modules.
    from envoy.config.cluster.v3 import cluster_pb2

    import xds.server.protocol
    from xds.core.v3 import collection_entry_pb2

    assert cluster_pb2.Cluster.DESCRIPTOR.full_name == "envoy.config.cluster.v3.Cluster"
    assert collection_entry_pb2.DESCRIPTOR.package == "xds.core.v3"
    assert xds.server.protocol.__file__ is not None


def test_no_subpackage_name_is_shared() -> None:
    ours = {m.name for m in pkgutil.iter_modules([str(ROOT / "xds")])}
    theirs: set[str] = set()
    for entry in xds.__path__:
        if Path(entry).resolve() != (ROOT / "xds").resolve():
            theirs |= {m.name for m in pkgutil.iter_modules([entry])}
    assert theirs, "the CNCF xds protos were not found beside our package"
    assert not (ours & theirs - {"__init__"}), ours & theirs


def test_both_resolve_from_another_working_directory(tmp_path: Path) -> None:
    # The installed (editable) package must work outside the repository, as the console script does.
    program = ("import xds.cli, xds.core.v3.collection_entry_pb2, envoy.config.cluster.v3.cluster_pb2;"
               "print('ok')")
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.stdout.strip() == "ok", result.stderr
