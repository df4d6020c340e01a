"""`xds bootstrap --delta`: ADS in delta mode (api_type DELTA_GRPC; docs/protocol.md R28-R30, issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from xds.bootstrap import BootstrapError, TlsFiles, render_bootstrap
from xds.cli import main


def _ads(text: str) -> dict[str, object]:
    ads = yaml.safe_load(text)["dynamic_resources"]["ads_config"]
    assert isinstance(ads, dict)
    return ads


@pytest.mark.parametrize("tls", [None, TlsFiles(ca_file=Path("/ca.pem"), cert_file=Path("/c.pem"),
                                                key_file=Path("/k.pem"))], ids=["plain", "mtls"])
def test_delta_sets_the_ads_api_type_and_nothing_else(tls: TlsFiles | None) -> None:
    args = dict(node_id="n", cluster="c", xds_address="127.0.0.1:18000", tls=tls)
    sotw, delta = render_bootstrap(**args), render_bootstrap(**args, delta=True)  # type: ignore[arg-type]
    assert _ads(sotw)["api_type"] == "GRPC"
    assert _ads(delta)["api_type"] == "DELTA_GRPC"
    assert sotw.replace("api_type: GRPC", "api_type: DELTA_GRPC") == delta


def test_custom_template_without_the_api_type_placeholder_is_refused_with_delta(tmp_path: Path) -> None:
    template = tmp_path / "mine.tmpl"
    template.write_text("node: {id: $node_id, cluster: $node_cluster}\n")
    with pytest.raises(BootstrapError, match=r"\$ads_api_type"):
        render_bootstrap(node_id="n", cluster="c", xds_address="127.0.0.1:1", template=template, delta=True)


def test_cli_bootstrap_delta(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bootstrap", "--node-id", "n", "--cluster", "c", "--xds-address", "127.0.0.1:18000",
                 "--delta"]) == 0
    assert _ads(capsys.readouterr().out)["api_type"] == "DELTA_GRPC"
