"""`envoy --mode validate` accepts every shape of the mTLS bootstrap's server name check (issue 9, item 2):
`--server-san` as a DNS name (also sent as SNI), an IP address and a SPIFFE URI, and a host-name xDS
address sent as SNI. The e2e test (tests/e2e/test_xds_mtls_e2e.py) runs the DNS form against the server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.envoy import envoy_binary
from harness.pki import CertificateAuthority, spiffe_id
from xds.bootstrap import TlsFiles, render_bootstrap


@pytest.mark.parametrize(("xds_address", "server_san"), [
    ("127.0.0.1:18000", "localhost"),
    ("127.0.0.1:18000", "127.0.0.1"),
    ("127.0.0.1:18000", "spiffe://xds.local/control-plane"),
    ("xds.internal:18000", ""),
])
def test_mtls_bootstrap_with_server_name_checks_is_valid(tmp_path: Path, xds_address: str,
                                                         server_san: str) -> None:
    ca = CertificateAuthority.create()
    cert, key = ca.client_cert(spiffe_id("xds.local", "web", "n1")).write(tmp_path, "envoy")
    config = render_bootstrap(node_id="n1", cluster="web", xds_address=xds_address,
                              tls=TlsFiles(ca_file=ca.write_ca(tmp_path / "ca.crt"), cert_file=cert,
                                           key_file=key, server_san=server_san))
    path = tmp_path / "bootstrap.yaml"
    path.write_text(config)
    result = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(path),
                             "--disable-hot-restart", "--log-level", "warn"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
