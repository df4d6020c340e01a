"""The application examples of docs/load-aware.md ("Reporting load from an application"), run for real.

examples/load_report.py (Python) and examples/go-load-report (Go, built once into the test-binary cache by
harness/go_example.py) each send one report of their own CPU and memory utilization to a real control plane's
report API (`--load-report-address`), exactly as documented; the control plane's /metrics must then show the
report under the endpoint's address. A report for an address the catalog does not have is refused, and the
examples exit 1 for it, so "exit 0" really means "accepted".
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harness import ControlPlaneProcess, free_port, wait_until
from harness.go_example import build_go_example

ROOT = Path(__file__).resolve().parents[2]
PYTHON_EXAMPLE = ROOT / "examples" / "load_report.py"
GO_EXAMPLE = ROOT / "examples" / "go-load-report"
SERVICE = "web"
_RUN_TIMEOUT_S = 20


@pytest.fixture
def control_plane(control_plane_factory: Callable[..., ControlPlaneProcess], workdir: Path
                  ) -> tuple[ControlPlaneProcess, str, str]:
    """A control plane with one load-aware service; returns it, its report API address and the endpoint."""
    endpoint = f"127.0.0.1:{free_port()}"
    catalog = workdir / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({
        "version": 1,
        "services": [{"name": SERVICE, "load_balancer": {"weights": "load_aware"},
                      "endpoints": [{"address": endpoint}]}],
        "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": free_port(),
                       "routes": [{"name": "all", "match": {"prefix": "/"},
                                   "backends": [{"service": SERVICE, "weight": 100}]}]}],
    }))
    control_plane = control_plane_factory(catalog)  # with --load-report-address on a free port
    return control_plane, f"127.0.0.1:{control_plane.load_report_port}", endpoint


def _utilization(control_plane: ControlPlaneProcess, endpoint: str, resource: str) -> float | None:
    for family in text_string_to_metric_families(control_plane.metrics_text()):
        for sample in family.samples:
            labels = sample.labels
            if (sample.name == "xds_load_endpoint_utilization" and labels.get("address") == endpoint
                    and labels.get("resource") == resource and labels.get("service") == SERVICE):
                return float(sample.value)
    return None


def _accepted_reports(control_plane: ControlPlaneProcess) -> float:
    total = 0.0
    for family in text_string_to_metric_families(control_plane.metrics_text()):
        for sample in family.samples:
            if sample.name == "xds_load_reports_total" and sample.labels.get("source") == "api":
                total += sample.value
    return total


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=_RUN_TIMEOUT_S, check=False)


def _check_example(command: list[str], control_plane: ControlPlaneProcess, report_address: str,
                   endpoint: str) -> None:
    before = _accepted_reports(control_plane)
    args = ["--control-plane", report_address, "--every", "0.2", "--once"]

    result = _run([*command, *args, "--address", endpoint])

    assert result.returncode == 0, result.stdout + result.stderr
    assert "accepted 1, rejected 0" in result.stdout + result.stderr
    assert _accepted_reports(control_plane) == before + 1
    # The example's own memory (a process holds some) reached the control plane under the catalog address.
    memory = wait_until(lambda: _utilization(control_plane, endpoint, "memory"), timeout_s=5,
                        message="no memory utilization for the endpoint in /metrics")
    assert 0 < memory < 1
    cpu = _utilization(control_plane, endpoint, "cpu")
    assert cpu is not None and 0 <= cpu <= 1

    refused = _run([*command, *args, "--address", "127.0.0.1:1"])  # not in the catalog

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "unknown_endpoint" in refused.stdout + refused.stderr
    assert _accepted_reports(control_plane) == before + 1


def test_python_example_reports_cpu_and_memory(control_plane: tuple[ControlPlaneProcess, str, str]) -> None:
    _check_example([sys.executable, str(PYTHON_EXAMPLE)], *control_plane)


def test_go_example_builds_and_reports_cpu_and_memory(
        control_plane: tuple[ControlPlaneProcess, str, str]) -> None:
    binary = build_go_example(GO_EXAMPLE, "go-load-report")

    _check_example([str(binary)], *control_plane)
