"""deploy/prometheus/alerts.yaml passes `promtool check rules` and its unit tests (`promtool test rules
alerts_test.yaml`), and those tests cover every alert both firing and quiet (issue 14 item 4). promtool is
built once from the Go module proxy into the testbin cache (tools/testbin/promtool, harness/testbin.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.testbin import ensure_binary
from tests.backend_support import build_binaries

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.fixture(scope="session")
def promtool(pytestconfig: pytest.Config) -> Path:
    return build_binaries(pytestconfig, lambda: ensure_binary("promtool"),
                          failure="promtool is required to check the alert rules and could not be built")


def _run(promtool: Path, *args: str) -> str:
    result = subprocess.run([str(promtool), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_rules_pass_promtool_check(promtool: Path) -> None:
    output = _run(promtool, "check", "rules", "alerts.yaml")
    assert "SUCCESS" in output


def test_rule_unit_tests_pass(promtool: Path) -> None:
    output = _run(promtool, "test", "rules", "alerts_test.yaml")
    assert "SUCCESS" in output


def test_every_alert_is_tested_firing_and_quiet() -> None:
    rules = yaml.safe_load((RULES_DIR / "alerts.yaml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    tests = yaml.safe_load((RULES_DIR / "alerts_test.yaml").read_text())
    cases: list[dict[str, Any]] = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert alerts - fires == set(), "alerts without a firing test"
    assert alerts - quiet == set(), "alerts without a test where they stay quiet"
