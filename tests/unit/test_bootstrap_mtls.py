"""`xds bootstrap --tls-cert --tls-key --ca [--server-san]` (issue 9, item 2): the SNI and the server SAN
check rendered into the mTLS template. tests/e2e/test_xds_mtls_e2e.py runs the output in a real Envoy
against the real server; tests/component/test_envoy_validate.py validates the template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from xds.bootstrap import TlsFiles, render_bootstrap
from xds.cli import main

FILES = {"ca_file": Path("/etc/xds/ca.pem"), "cert_file": Path("/etc/xds/tls.crt"),
         "key_file": Path("/etc/xds/tls.key")}


def _tls_context(xds_address: str = "127.0.0.1:18000", server_san: str = "") -> dict[str, Any]:
    text = render_bootstrap(node_id="n1", cluster="web", xds_address=xds_address,
                            tls=TlsFiles(**FILES, server_san=server_san))
    clusters = yaml.safe_load(text)["static_resources"]["clusters"]
    (cluster,) = [c for c in clusters if c["name"] != "envoy_admin"]
    context: dict[str, Any] = cluster["transport_socket"]["typed_config"]
    return context


def test_without_server_san_only_the_chain_is_checked_and_an_ip_gets_no_sni() -> None:
    context = _tls_context()
    assert "sni" not in context
    validation = context["common_tls_context"]["validation_context"]
    assert validation == {"trusted_ca": {"filename": "/etc/xds/ca.pem"}}


def test_a_host_name_address_is_sent_as_sni() -> None:
    assert _tls_context("xds.internal:18000")["sni"] == "xds.internal"


@pytest.mark.parametrize(("san", "san_type", "sni"), [
    ("xds.example.com", "DNS", "xds.example.com"),
    ("127.0.0.1", "IP_ADDRESS", None),
    ("spiffe://xds.local/control-plane", "URI", None),
])
def test_server_san_is_required_of_the_server_certificate(san: str, san_type: str, sni: str | None) -> None:
    context = _tls_context(server_san=san)
    assert context.get("sni") == sni
    validation = context["common_tls_context"]["validation_context"]
    assert validation["match_typed_subject_alt_names"] == [{"san_type": san_type, "matcher": {"exact": san}}]


def test_a_hostile_server_san_cannot_change_the_document() -> None:
    san = 'x" }, { san_type: DNS, matcher: { prefix: "'
    validation = _tls_context(server_san=san)["common_tls_context"]["validation_context"]
    assert validation["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": san}}]


def test_cli_renders_mtls_and_names_missing_flags(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["bootstrap", "--node-id", "n1", "--cluster", "web"]
    assert main([*base, "--tls-cert", "/c.crt", "--tls-key", "/c.key", "--ca", "/ca.crt",
                 "--server-san", "localhost"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    socket = doc["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert socket["sni"] == "localhost"
    assert socket["common_tls_context"]["tls_certificates"][0]["private_key"] == {"filename": "/c.key"}

    assert main([*base, "--tls-cert", "/c.crt"]) == 2
    assert "missing: --tls-key, --ca" in capsys.readouterr().err
    assert main([*base, "--server-san", "localhost"]) == 2
    assert "missing: --tls-cert, --tls-key, --ca" in capsys.readouterr().err


def test_serve_names_the_missing_tls_flag_and_a_bad_rule(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDS_CLIENT_CA", raising=False)
    catalog = tmp_path / "c.yaml"
    catalog.write_text("version: 1\nservices: []\n")
    with pytest.raises(SystemExit, match=r"missing: --client-ca \(env XDS_CLIENT_CA\)"):
        main(["serve", "--config", str(catalog), "--tls-cert", "a", "--tls-key", "b"])
    monkeypatch.setenv("XDS_IDENTITY_RULE", "anything-goes")
    with pytest.raises(SystemExit, match="XDS_IDENTITY_RULE must be one of spiffe, dns-group"):
        main(["serve", "--config", str(catalog)])
