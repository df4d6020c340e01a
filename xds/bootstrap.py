"""Render the Envoy bootstrap that points a sidecar at this control plane.

The templates ship as package data in `xds/templates/` (linked from `envoy-configs/` at the repository
root), so operators can read and adapt them without reading Python. Every string substituted into a
template is emitted as a double-quoted YAML scalar (JSON string syntax, which YAML 1.2 accepts), so a node
id such as `web: 1 #a` cannot change the document's structure.
"""

from __future__ import annotations

import ipaddress
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

PLAIN_TEMPLATE: Final = "bootstrap.yaml.tmpl"
MTLS_TEMPLATE: Final = "bootstrap-mtls.yaml.tmpl"
DEFAULT_ADMIN_ADDRESS: Final = "127.0.0.1:9901"


class BootstrapError(ValueError):
    """A bootstrap cannot be rendered: bad address, missing template, or a template that is not valid."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for mutual TLS between Envoy and the control plane, as paths Envoy can read."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    # The name the server's certificate must carry as a SAN (DNS name, IP address or spiffe:// URI). Empty:
    # any certificate that chains to `ca_file` is accepted as the server (docs/security.md).
    server_san: str = ""


def envoy_configs_dir() -> Path:
    """Where the bootstrap templates are: package data (`xds/templates/`), so an installed `xds` finds them
    too. `envoy-configs/` at the repository root links to the same files for operators to read."""
    return Path(__file__).resolve().parent / "templates"


def split_host_port(address: str, *, what: str, allow_port_zero: bool = False) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); `what` names the setting in error messages.

    Port 0 (let the kernel choose) only makes sense for something Envoy listens on, such as admin.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise BootstrapError(f"{what} must look like host:port or [ipv6]:port, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise BootstrapError(f"{what}: write an IPv6 address in brackets, as [{host}]:{port_text}")
    port = int(port_text)
    lowest = 0 if allow_port_zero else 1
    if not lowest <= port < 65536:
        raise BootstrapError(f"{what}: port {port} is outside {lowest}-65535")
    return host, port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _quote(value: str) -> str:
    return json.dumps(value)


def _load_template(template: Path) -> string.Template:
    try:
        return string.Template(template.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise BootstrapError(
            f"bootstrap template {template} not found; the templates ship in the package (xds/templates/), "
            "pass template=... to use another") from e


def _san_type(name: str) -> str:
    if _is_ip(name):
        return "IP_ADDRESS"
    return "URI" if "://" in name else "DNS"


def _server_name_lines(xds_host: str, server_san: str) -> dict[str, str]:
    """$tls_sni and $server_san_match: whole YAML lines (placed after a fixed line of the template, indented
    for it) or empty. SNI carries a host name only (RFC 6066 forbids IP literals): the --server-san when it
    is a DNS name, else the xDS host when that is a name."""
    sni = server_san if server_san and _san_type(server_san) == "DNS" else (
        xds_host if not _is_ip(xds_host) else "")
    san = ""
    if server_san:
        matcher = f"{{ san_type: {_san_type(server_san)}, matcher: {{ exact: {_quote(server_san)} }} }}"
        san = "\n            match_typed_subject_alt_names: [" + matcher + "]"
    return {"tls_sni": f"\n        sni: {_quote(sni)}" if sni else "", "server_san_match": san}


def _locality_lines(region: str, zone: str, sub_zone: str) -> str:
    # Placed right after `cluster:` by $node_locality (node is at the top level, two-space indent); empty
    # without a locality, so such bootstraps stay byte for byte what they were.
    parts = [f"{key}: {_quote(value)}" for key, value in (("region", region), ("zone", zone),
                                                          ("sub_zone", sub_zone)) if value]
    return "\n  locality: { " + ", ".join(parts) + " }" if parts else ""


def _admin_cluster_lines(admin_host: str, admin_port: int) -> str:
    # The static cluster `envoy_admin` that the opt-in stats listener routes /stats/prometheus to (issue 14,
    # xds/translate/stats_listener.py). Placed after the xds_cluster's last line by $admin_cluster. With
    # admin port 0 the kernel picks the port after this file is written, so no cluster can name it.
    if admin_port == 0:
        return ""
    # An admin bound to every address is reached on loopback; a STATIC cluster takes only IP literals, so a
    # host name is resolved by Envoy (STRICT_DNS), as for xds_cluster.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(admin_host, admin_host)
    kind = "STATIC" if _is_ip(host) else "STRICT_DNS"
    return (
        "\n  # The Envoy's own admin, for the stats listener `xds serve --envoy-stats-port` adds over LDS;"
        "\n  # only /stats/prometheus is routed to it (docs/operations.md, Envoy stats for Prometheus)."
        f"\n  - name: envoy_admin\n    type: {kind}\n    connect_timeout: 1s"
        "\n    load_assignment:\n      cluster_name: envoy_admin\n      endpoints:\n      - lb_endpoints:"
        "\n        - endpoint:\n            address:"
        f"\n              socket_address: {{ address: {_quote(host)}, port_value: {admin_port} }}"
    )


def _stats_config_lines(cluster: str) -> str:
    # A fixed tag on every stat, so a Prometheus query can select or sum by node group (issue 14); Envoy's
    # default tag extractors already label the cluster (service), listener and response code. Placed after
    # the admin address line by $stats_config, as a top-level key.
    return ("\n\n# Every stat carries the node group as the label xds_node_group (docs/operations.md)."
            "\nstats_config:\n  stats_tags:"
            f"\n  - {{ tag_name: xds_node_group, fixed_value: {_quote(cluster)} }}")


def render_bootstrap(*, node_id: str, cluster: str, xds_address: str,
                     admin_address: str = DEFAULT_ADMIN_ADDRESS, template: Path | None = None,
                     tls: TlsFiles | None = None, region: str = "", zone: str = "",
                     sub_zone: str = "", delta: bool = False) -> str:
    """The bootstrap YAML for one Envoy: its node identity, its admin listener and ADS at `xds_address`.

    With `delta`, ADS uses the delta protocol (api_type DELTA_GRPC; issue 11). With `tls`, the default
    template is the mutual-TLS one; an explicit `template` always wins. The result
    is parsed once before it is returned, so a broken custom template fails here rather than in Envoy.
    """
    if not node_id:
        raise BootstrapError("node_id must not be empty: the server rejects streams without node.id (R1)")
    xds_host, xds_port = split_host_port(xds_address, what="xds_address")
    admin_host, admin_port = split_host_port(admin_address, what="admin_address", allow_port_zero=True)
    if template is None:
        template = envoy_configs_dir() / (MTLS_TEMPLATE if tls is not None else PLAIN_TEMPLATE)
    values: dict[str, str | int] = {
        "node_id": _quote(node_id),
        "node_cluster": _quote(cluster),
        # node.locality: where this Envoy runs, for `locality.failover` services (issue 8).
        "node_locality": _locality_lines(region, zone, sub_zone),
        "xds_host": _quote(xds_host),
        "xds_port": xds_port,
        # A STATIC cluster takes only IP addresses; a name has to be resolved (cluster.proto, DiscoveryType).
        "xds_cluster_type": "STATIC" if _is_ip(xds_host) else "STRICT_DNS",
        "admin_host": _quote(admin_host),
        "admin_port": admin_port,
        "admin_cluster": _admin_cluster_lines(admin_host, admin_port),
        "stats_config": _stats_config_lines(cluster),
        "ads_api_type": "DELTA_GRPC" if delta else "GRPC",
    }
    # Always provided (empty without TLS), so a TLS template used without files reports $cert_file.
    values |= _server_name_lines(xds_host, tls.server_san if tls is not None else "")
    if tls is not None:
        values |= {
            "ca_file": _quote(str(tls.ca_file)),
            "cert_file": _quote(str(tls.cert_file)),
            "key_file": _quote(str(tls.key_file)),
        }
    try:
        text = _load_template(template).substitute(values)
    except KeyError as e:
        hint = " (it needs tls=TlsFiles(...))" if tls is None else ""
        raise BootstrapError(
            f"bootstrap template {template} uses ${e.args[0]}, which is not provided{hint}") from e
    except ValueError as e:
        raise BootstrapError(f"bootstrap template {template}: {e}") from e
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BootstrapError(f"bootstrap template {template} does not render to valid YAML: {e}") from e
    if not isinstance(parsed, dict):
        raise BootstrapError(f"bootstrap template {template} does not render to a YAML mapping")
    ads = (parsed.get("dynamic_resources") or {}).get("ads_config") or {}
    if delta and (not isinstance(ads, dict) or ads.get("api_type") != "DELTA_GRPC"):
        raise BootstrapError(f"bootstrap template {template} does not place $ads_api_type in "
                             "dynamic_resources.ads_config.api_type, so --delta would be lost")
    wanted = {k: v for k, v in (("region", region), ("zone", zone), ("sub_zone", sub_zone)) if v}
    node = parsed.get("node")
    if wanted and (not isinstance(node, dict) or node.get("locality") != wanted):
        raise BootstrapError(f"bootstrap template {template} does not place $node_locality in `node` (after "
                             "`cluster: $node_cluster`), so the locality would be lost")
    return text
