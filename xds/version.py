"""`xds --version` and `xds version` (issue 14 item 5): what is installed, read from package metadata only
(no gRPC import, so it answers at once)."""

from __future__ import annotations

import platform
from importlib import metadata

# Every resource this server sends and every service it implements is the v3 xDS API (xds/typeurls.py).
ENVOY_API = "v3"


def _installed(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def version_info() -> dict[str, str]:
    """Stable keys (docs/operations.md "xds version"): xds, python, grpcio, protobuf, xds_protos,
    envoy_api."""
    return {"xds": _installed("xds-control-plane"), "python": platform.python_version(),
            "grpcio": _installed("grpcio"), "protobuf": _installed("protobuf"),
            "xds_protos": _installed("xds-protos"),
            "envoy_api": ENVOY_API}


def version_line() -> str:
    info = version_info()
    return (f"xds {info['xds']} (Python {info['python']}, grpcio {info['grpcio']}, protobuf "
            f"{info['protobuf']}, xds-protos {info['xds_protos']}, Envoy API {info['envoy_api']})")
