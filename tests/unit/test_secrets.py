"""xds/secrets.py and the places it is applied: what is redacted, what is left, and the CLI's refusal of
secrets on the command line (issue 9, docs/security.md "The management API and secrets")."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from xds import secrets
from xds.cli import build_parser, main
from xds.observability.logs import HumanFormatter, JsonFormatter
from xds.secrets import REDACTED, redact, register_secret
from xds.sources.consul.client import ConsulConfig, ConsulError
from xds.sources.kubernetes.client import KubeForbidden, error_for_status

TOKEN = "3f1c2a9e-7b4d-4e21-9c0a-5d8e6f7a1b2c"
PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "-----END PRIVATE KEY-----\n")


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    secrets.forget_all()
    yield
    secrets.forget_all()


def test_a_registered_value_is_redacted_anywhere_also_percent_encoded() -> None:
    register_secret("a+b/c=d&secret-value")
    text = "body: a+b/c=d&secret-value and a%2Bb%2Fc%3Dd%26secret-value"
    assert redact(text) == f"body: {REDACTED} and {REDACTED}"


def test_short_values_are_not_registered_so_logs_stay_readable() -> None:
    register_secret("abc")
    assert redact("abc abc") == "abc abc"


@pytest.mark.parametrize(("text", "expected"), [
    ("X-Consul-Token: 1234-unknown", f"X-Consul-Token: {REDACTED}"),
    ("authorization: Bearer abc.def.ghi", f"authorization: Bearer {REDACTED}"),
    ("Proxy-Authorization: Basic dXNlcjpwYXNz", f"Proxy-Authorization: Basic {REDACTED}"),
    ('{"X-Consul-Token": ["abc"], "Accept": ["*/*"]}',
     f'{{"X-Consul-Token": ["{REDACTED}"], "Accept": ["*/*"]}}'),
    ("{'Authorization': 'Bearer zz'}", f"{{'Authorization': 'Bearer {REDACTED}'}}"),
    ("GET /v1/kv/x?token=abc&recurse=1", f"GET /v1/kv/x?token={REDACTED}&recurse=1"),
    ("https://h/cb?access_token=xyz#frag", f"https://h/cb?access_token={REDACTED}#frag"),
    ("no secret here: token <set>, 8 tokens", "no secret here: token <set>, 8 tokens"),
])
def test_patterns_redact_secrets_the_process_never_saw(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_pem_private_keys_are_redacted_whole_also_when_cut_short_or_json_escaped() -> None:
    assert redact(f"before\n{PEM}after") == (f"before\n-----BEGIN PRIVATE KEY-----{REDACTED}"
                                             "-----END PRIVATE KEY-----\nafter")
    cut = redact('{"error": "' + PEM[:60].replace("\n", "\\n") + '", "n": 1}')
    assert "MIIE" not in cut and json.loads(cut)["n"] == 1
    # A certificate is public and stays readable.
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    assert redact(cert) == cert


def test_redaction_is_idempotent() -> None:
    register_secret(TOKEN)
    once = redact(f'X-Consul-Token: {TOKEN} {{"Authorization": ["Bearer {TOKEN}"]}} token={TOKEN} {PEM}')
    assert TOKEN not in once
    assert redact(once) == once


def test_consul_error_bodies_are_redacted_before_they_are_cut() -> None:
    register_secret(TOKEN)
    config = ConsulConfig("127.0.0.1:8500", token=TOKEN)
    from xds.sources.consul.client import ConsulClient

    client = ConsulClient(config)
    # The token straddles the 200-character cut: cut first, and a prefix of it would survive.
    body = ("x" * 180 + f" X-Consul-Token: {TOKEN}").encode()
    with pytest.raises(ConsulError) as caught:
        client._interpret("/v1/catalog/services", 500, {}, body)
    message = str(caught.value)
    assert TOKEN[:8] not in message and "500" in message
    assert str(ConsulError(f"GET /x?token={TOKEN}")) == f"GET /x?token={REDACTED}"


def test_kubernetes_error_messages_are_redacted() -> None:
    register_secret("kube-bearer-token-value")
    message = "Unauthorized: Authorization: Bearer kube-bearer-token-value"
    error = error_for_status("GET /api/v1/services", 401,
                             payload=json.dumps({"kind": "Status", "message": message}).encode())
    assert isinstance(error, KubeForbidden)
    assert "kube-bearer-token-value" not in str(error) and REDACTED in str(error)


@pytest.mark.parametrize("formatter", [JsonFormatter(), HumanFormatter()])
def test_log_formatters_redact_as_a_safety_net(formatter: logging.Formatter) -> None:
    register_secret(TOKEN)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("test.secrets")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("source_error", extra={"error": f"echo: X-Consul-Token: {TOKEN}", "key": PEM})
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    assert TOKEN not in line and "MIIE" not in line and "source_error" in line
    if isinstance(formatter, JsonFormatter):
        assert json.loads(line)["event"] == "source_error"


@pytest.mark.parametrize(("value", "problem"), [
    ("", "empty"), ("two words-and-more-chars", "one line"), ("tiny-tok", "shorter than 16"),
])
def test_check_token_names_where_and_never_quotes_the_value(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        secrets.check_token(value, where="/etc/xds/token")
    assert str(caught.value).startswith("/etc/xds/token: ")
    if value:
        assert value not in str(caught.value)


def test_consul_token_on_the_command_line_is_refused_with_the_alternatives(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser({}).parse_args(["serve", "--consul-address", "127.0.0.1:8500", "--consul-token", TOKEN])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--consul-token is no longer accepted" in err and "--consul-token-file" in err
    assert "XDS_CONSUL_TOKEN" in err and TOKEN not in err


def test_consul_token_file_is_read_and_registered(tmp_path: Path) -> None:
    from xds.cli_consul import config as _consul_config

    path = tmp_path / "consul.token"
    path.write_text(TOKEN + "\n")
    args = build_parser({}).parse_args(["serve", "--consul-address", "127.0.0.1:8500",
                                        "--consul-token-file", str(path)])
    config = _consul_config(args, {})
    assert config is not None and config.token == TOKEN
    assert redact(TOKEN) == REDACTED
    # From the variable naming the file, and it wins over a token value in the environment.
    env = {"consul_token_file": str(path), "consul_token": "other-token-value"}
    args = build_parser(env).parse_args(["serve", "--consul-address", "127.0.0.1:8500"])
    config = _consul_config(args, env)
    assert config is not None and config.token == TOKEN
    missing = build_parser({}).parse_args(["serve", "--consul-address", "127.0.0.1:8500",
                                           "--consul-token-file", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match=r"nope: cannot read the Consul token file"):
        _consul_config(missing, {})


def test_serve_refuses_a_missing_management_token_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("version: 1\nservices: []\n")
    code = main(["serve", "--config", str(catalog), "--xds-address", "127.0.0.1:0", "--admin-address",
                 "127.0.0.1:0", "--management-address", "127.0.0.1:0", "--management-token-file",
                 str(tmp_path / "absent.token"), "--log-format", "text"])
    assert code == 1
    assert f"{tmp_path / 'absent.token'}: cannot read the token file" in capsys.readouterr().err
