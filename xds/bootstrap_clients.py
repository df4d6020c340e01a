"""Bootstraps for the other xDS clients (issue 11): Envoy on single-type streams, and proxyless gRPC.

`xds bootstrap --no-ads` is the usual Envoy bootstrap with every `ads: {}` source replaced by the per-type
gRPC source the ADS one used, so the Envoy opens one CDS, one LDS and per-cluster EDS / per-listener RDS
streams (the server then names the same source in what it sends: xds/translate/delivery.py).

`xds bootstrap --grpc` prints the JSON a gRPC library reads from the file named by `GRPC_XDS_BOOTSTRAP`
(gRFC A27 "xDS-Based Global Load Balancing", bootstrap file; A65 for `tls` channel credentials).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from xds.bootstrap import BootstrapError, TlsFiles, split_host_port


def single_type(bootstrap_yaml: str) -> str:
    """`bootstrap_yaml` (an ADS bootstrap from render_bootstrap) turned into per-type gRPC sources."""
    document: Any = yaml.safe_load(bootstrap_yaml)
    dynamic = document.get("dynamic_resources") if isinstance(document, dict) else None
    ads = dynamic.pop("ads_config", None) if isinstance(dynamic, dict) else None
    if not isinstance(dynamic, dict) or not isinstance(ads, dict):
        raise BootstrapError("the bootstrap has no dynamic_resources.ads_config to turn into per-type "
                             "sources")
    source = {"api_config_source": ads, "resource_api_version": "V3"}
    for key in ("cds_config", "lds_config"):
        dynamic[key] = copy.deepcopy(source)  # two plain mappings, no YAML anchor
    header = ("# Envoy bootstrap for the single-type xDS services (no ADS): `xds bootstrap --no-ads`.\n"
              "# The server points every cluster's EDS and listener's RDS at the same xds_cluster.\n")
    return header + yaml.safe_dump(document, sort_keys=False)


def grpc_bootstrap(*, node_id: str, cluster: str, xds_address: str, tls: TlsFiles | None = None,
                   region: str = "", zone: str = "", sub_zone: str = "") -> str:
    """The gRPC xDS bootstrap JSON for one proxyless client of this server."""
    if not node_id:
        raise BootstrapError("node_id must not be empty: the server rejects streams without node.id (R1)")
    host, port = split_host_port(xds_address, what="xds_address")
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    creds: dict[str, Any] = {"type": "insecure"}
    if tls is not None:
        creds = {"type": "tls", "config": {"ca_certificate_file": str(tls.ca_file),
                                           "certificate_file": str(tls.cert_file),
                                           "private_key_file": str(tls.key_file)}}
    node: dict[str, Any] = {"id": node_id, "cluster": cluster}
    locality = {k: v for k, v in (("region", region), ("zone", zone), ("sub_zone", sub_zone)) if v}
    if locality:
        node["locality"] = locality
    document = {
        # "xds_v3" asks older gRPC releases for the v3 transport; newer ones use v3 always.
        "xds_servers": [{"server_uri": target, "channel_creds": [creds], "server_features": ["xds_v3"]}],
        "node": node,
    }
    return json.dumps(document, indent=2) + "\n"
