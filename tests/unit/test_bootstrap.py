"""Bootstrap rendering: the templates in envoy-configs/ filled in, parsed back and checked field by field.

tests/component/test_envoy_validate.py runs the same output through `envoy --mode validate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from xds.bootstrap import BootstrapError, TlsFiles, envoy_configs_dir, render_bootstrap

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _render(**kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"node_id": "sidecar-1", "cluster": "web", "xds_address": "127.0.0.1:18000"}
    args.update(kwargs)
    parsed = yaml.safe_load(render_bootstrap(**args))
    assert isinstance(parsed, dict)
    return parsed


def _xds_cluster(bootstrap: dict[str, Any]) -> dict[str, Any]:
    # The second static cluster is envoy_admin, for the stats listener (issue 14, test_bootstrap_stats.py).
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] != "envoy_admin"]
    assert cluster["name"] == "xds_cluster"
    assert isinstance(cluster, dict)
    return cluster


def _xds_endpoint(cluster: dict[str, Any]) -> dict[str, Any]:
    endpoint: dict[str, Any] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    socket_address: dict[str, Any] = endpoint["address"]["socket_address"]
    return socket_address


def test_plain_bootstrap_fields() -> None:
    bootstrap = _render()
    assert bootstrap["node"] == {"id": "sidecar-1", "cluster": "web"}
    assert bootstrap["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    dynamic = bootstrap["dynamic_resources"]
    assert dynamic["ads_config"] == {
        "api_type": "GRPC",
        "transport_api_version": "V3",
        "set_node_on_first_message_only": True,
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
    }
    assert dynamic["cds_config"] == dynamic["lds_config"] == {"ads": {}, "resource_api_version": "V3"}
    assert "initial_fetch_timeout" not in dynamic["cds_config"]

    cluster = _xds_cluster(bootstrap)
    assert cluster["type"] == "STATIC"
    assert cluster["connect_timeout"] == "1s"
    assert _xds_endpoint(cluster) == {"address": "127.0.0.1", "port_value": 18000}
    http2 = cluster["typed_extension_protocol_options"][HTTP_OPTIONS]["explicit_http_config"]
    assert http2["http2_protocol_options"]["connection_keepalive"] == {"interval": "30s", "timeout": "10s"}
    assert "tcp_keepalive" in cluster["upstream_connection_options"]
    assert "transport_socket" not in cluster


def test_host_name_uses_strict_dns() -> None:
    cluster = _xds_cluster(_render(xds_address="xds.internal:18000"))
    assert cluster["type"] == "STRICT_DNS"
    assert _xds_endpoint(cluster)["address"] == "xds.internal"


def test_ipv6_addresses() -> None:
    bootstrap = _render(xds_address="[::1]:18000", admin_address="[::1]:0")
    assert _xds_cluster(bootstrap)["type"] == "STATIC"
    assert _xds_endpoint(_xds_cluster(bootstrap)) == {"address": "::1", "port_value": 18000}
    assert bootstrap["admin"]["address"]["socket_address"] == {"address": "::1", "port_value": 0}


@pytest.mark.parametrize("node_id", ["web: 1 #comment", 'quote"d\\', "ünïcode {x}", "- [a]", "*alias"])
def test_awkward_node_ids_survive(node_id: str) -> None:
    assert _render(node_id=node_id, cluster="c: d")["node"] == {"id": node_id, "cluster": "c: d"}


def test_tls_selects_the_mtls_template() -> None:
    tls = TlsFiles(ca_file=Path("/etc/xds/ca.pem"), cert_file=Path("/etc/xds/tls.crt"),
                   key_file=Path("/etc/xds/tls.key"))
    socket = _xds_cluster(_render(tls=tls))["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    context = socket["typed_config"]["common_tls_context"]
    assert context["alpn_protocols"] == ["h2"]
    assert context["tls_certificates"] == [{"certificate_chain": {"filename": "/etc/xds/tls.crt"},
                                            "private_key": {"filename": "/etc/xds/tls.key"}}]
    assert context["validation_context"]["trusted_ca"] == {"filename": "/etc/xds/ca.pem"}


@pytest.mark.parametrize("address", [
    "localhost", "host:", ":80", "::1:80", "host:0", "host:70000", "host:http",
])
def test_bad_xds_address(address: str) -> None:
    with pytest.raises(BootstrapError, match="xds_address"):
        render_bootstrap(node_id="n", cluster="c", xds_address=address)


def test_empty_node_id_is_refused() -> None:
    with pytest.raises(BootstrapError, match="node_id"):
        render_bootstrap(node_id="", cluster="c", xds_address="127.0.0.1:1")


def test_missing_template_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(BootstrapError, match="not found"):
        render_bootstrap(node_id="n", cluster="c", xds_address="127.0.0.1:1", template=tmp_path / "nope.tmpl")


def test_mtls_template_without_tls_files_says_so() -> None:
    with pytest.raises(BootstrapError, match=r"\$cert_file.*tls=TlsFiles"):
        render_bootstrap(node_id="n", cluster="c", xds_address="127.0.0.1:1",
                         template=envoy_configs_dir() / "bootstrap-mtls.yaml.tmpl")


def test_template_that_is_not_yaml(tmp_path: Path) -> None:
    template = tmp_path / "bad.tmpl"
    template.write_text("node: [$node_id\n")
    with pytest.raises(BootstrapError, match="valid YAML"):
        render_bootstrap(node_id="n", cluster="c", xds_address="127.0.0.1:1", template=template)


def test_custom_template(tmp_path: Path) -> None:
    template = tmp_path / "mine.tmpl"
    template.write_text("node: {id: $node_id, cluster: $node_cluster}\n")
    text = render_bootstrap(node_id="n", cluster="c", xds_address="127.0.0.1:1", template=template)
    assert yaml.safe_load(text) == {"node": {"id": "n", "cluster": "c"}}
