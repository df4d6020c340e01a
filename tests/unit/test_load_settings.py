"""`xds serve`'s --load-* flags and XDS_LOAD_* variables, and the report API's exposure rule (issue 10)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from xds.cli_load import add_load_arguments, load_settings
from xds.policy.load_weights import Combine
from xds.server.load_report import LoadReportExposureError, check_exposure
from xds.server.management_auth import ManagementAuthConfig


def _parse(argv: list[str], env: dict[str, str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_load_arguments(parser, env or {})
    return parser.parse_args(argv)


def test_defaults_flags_and_environment() -> None:
    settings = load_settings(_parse([]))
    assert (settings.interval_s, settings.report_address, settings.params.combine) == (
        2.0, "127.0.0.1:18002", Combine.MAX)
    env = {"XDS_LOAD_TTL": "30s", "XDS_LOAD_FLOOR": "0.2", "XDS_LOAD_INTERVAL": "9"}
    settings = load_settings(_parse(["--load-interval", "500ms", "--load-combine", "mean"], env))
    assert settings.interval_s == 0.5 and settings.params.combine is Combine.MEAN
    assert settings.params.ttl_s == 30.0 and settings.params.floor == 0.2


@pytest.mark.parametrize("argv", [["--load-floor", "0"], ["--load-dead-band", "1"], ["--load-interval", "-1"],
                                  ["--load-smoothing", "nan"], ["--load-report-address", "nowhere"]])
def test_out_of_range_values_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(argv)
    assert argv[0] in capsys.readouterr().err


def test_the_report_api_stays_on_loopback_without_tokens(tmp_path: Path) -> None:
    check_exposure("127.0.0.1:18002", auth=None)
    with pytest.raises(LoadReportExposureError, match=re.escape("--load-report-address 0.0.0.0:18002")):
        check_exposure("0.0.0.0:18002", auth=None)
    token = tmp_path / "admin.token"
    token.write_text("a-long-enough-admin-token-value-1234567890\n")
    check_exposure("0.0.0.0:18002", auth=ManagementAuthConfig(admin_files=(token,)))
