"""`xds serve --eureka-*` flags and XDS_EUREKA_* variables -> EurekaConfig (xds/cli_eureka.py), and the
client config's own checks (xds/sources/eureka/client.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds.secrets import redact
from xds.sources.eureka.client import EurekaConfig, display_url, split_url


def _serve(argv: list[str], env: dict[str, str]) -> EurekaConfig | None:
    from xds.cli import build_parser
    from xds.cli_eureka import config, from_environment

    flags = from_environment(env)
    return config(build_parser(flags).parse_args(["serve", *argv]), flags)


def test_no_url_no_eureka_source() -> None:
    assert _serve([], {}) is None


def test_flags_repeatable_and_comma_separated_with_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "eureka.password"
    secret.write_text("pa55-from-file\n")
    config = _serve(["--eureka-url", "http://a:8761/eureka/,http://b:8761/eureka", "--eureka-url",
                     "https://c/eureka", "--eureka-username", "xds", "--eureka-password-file", str(secret),
                     "--eureka-refresh", "2", "--eureka-prefer-secure-port", "--eureka-resync-grace", "10"],
                    {})
    assert config is not None
    assert config.urls == ("http://a:8761/eureka", "http://b:8761/eureka", "https://c/eureka")
    assert (config.username, config.password) == ("xds", "pa55-from-file")
    assert config.refresh_s == 2 and config.prefer_secure_port and config.resync_grace_s == 10
    assert "pa55-from-file" not in repr(config) and redact("x pa55-from-file y") == "x [REDACTED] y"


def test_environment() -> None:
    config = _serve([], {"XDS_EUREKA_URL": "http://a:8761/eureka", "XDS_EUREKA_USERNAME": "xds",
                         "XDS_EUREKA_PASSWORD": "pa55-from-env", "XDS_EUREKA_REFRESH_S": "3"})
    assert config is not None and config.password == "pa55-from-env" and config.refresh_s == 3


def test_userinfo_in_url_becomes_credentials_and_is_never_shown() -> None:
    config = EurekaConfig(("http://xds:pa55-in-url@a:8761/eureka/",))
    assert config.urls == ("http://a:8761/eureka",) and config.username == "xds"
    assert config.password == "pa55-in-url"
    assert display_url("http://xds:pa55-in-url@a:8761/eureka") == "http://***@a:8761/eureka"
    with pytest.raises(ValueError, match="must start with http") as info:
        split_url("ftp://xds:pa55-in-url@a/eureka")
    assert "pa55-in-url" not in str(info.value) and "ftp://***@a/eureka" in str(info.value)


@pytest.mark.parametrize(("argv", "message"), [
    (["--eureka-url", "a:8761"], "must start with http:// or https://"),
    (["--eureka-url", "http://a/eureka", "--eureka-url", "http://a/eureka/"], "listed twice"),
    (["--eureka-url", "http://a/eureka", "--eureka-refresh", "0"], "refresh_s must be positive"),
    (["--eureka-url", "http://a/eureka", "--eureka-ca-file", "/ca.pem"], "no Eureka URL is https://"),
    (["--eureka-url", "http://a/eureka", "--eureka-password-file", "/nonexistent/pw"],
     "cannot read the Eureka password file /nonexistent/pw"),
])
def test_bad_values_exit_saying_what(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as info:
        _serve(argv, {})
    assert message in str(info.value) and str(info.value).startswith("xds: error: Eureka:")
