"""`xds --version` and `xds version` (issue 14 item 5): what is installed, read from package metadata only
(no gRPC import, so it answers at once)."""

from __future__ import annotations

import argparse
import platform
from collections.abc import Sequence
from importlib import metadata
from typing import Any

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


class VersionAction(argparse.Action):
    """`--version`: prints version_line() unwrapped (argparse's own "version" action wraps it to the
    terminal width, splitting one line a script would read) and exits 0."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the versions of xds, Python, grpcio and the Envoy API, and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        print(version_line())
        parser.exit(0)


def version_line() -> str:
    info = version_info()
    return (f"xds {info['xds']} (Python {info['python']}, grpcio {info['grpcio']}, protobuf "
            f"{info['protobuf']}, xds-protos {info['xds_protos']}, Envoy API {info['envoy_api']})")
