"""`xds serve` flags of the Envoys' Prometheus stats listener (issue 14; docs/operations.md "Envoy stats for
Prometheus"; the listener itself is translate/stats_listener.py)."""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Mapping

from xds import settings as defaults


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not in 0-65535 (env XDS_ENVOY_STATS_PORT or the flag)")
    return port


def _ip(value: str) -> str:
    # An Envoy listener's socket_address takes an IP literal only (address.proto, SocketAddress.address).
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an IP address (env XDS_ENVOY_STATS_ADDRESS or the flag)") from None


def add_envoy_stats_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    # String defaults: argparse converts them with `type`, so a bad XDS_ENVOY_STATS_* value is reported like
    # a bad flag, not as a traceback.
    parser.add_argument(
        "--envoy-stats-port", type=_port, default=env.get("envoy_stats_port", "0"), metavar="PORT",
        help="give every Envoy a listener on PORT that serves only its /stats/prometheus (e.g. 15090; needs "
             "the envoy_admin cluster of `xds bootstrap`); 0, the default, turns it off "
             f"(env {defaults.ENV_ENVOY_STATS_PORT})")
    parser.add_argument(
        "--envoy-stats-address", type=_ip, default=env.get("envoy_stats_address", "0.0.0.0"),
        metavar="IP", help="the IP the stats listener binds (default 0.0.0.0, so Prometheus can reach it; "
                           f"env {defaults.ENV_ENVOY_STATS_ADDRESS})")
