"""Every tunable default in one place, with the environment variable that overrides it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_XDS_ADDRESS = "127.0.0.1:18000"
DEFAULT_ADMIN_ADDRESS = "127.0.0.1:19005"

ENV_CONFIG = "XDS_CONFIG"
ENV_XDS_ADDRESS = "XDS_XDS_ADDRESS"
ENV_ADMIN_ADDRESS = "XDS_ADMIN_ADDRESS"
ENV_NODE_GROUP_KEY = "XDS_NODE_GROUP_KEY"
ENV_LOG_LEVEL = "XDS_LOG_LEVEL"
ENV_LOG_FORMAT = "XDS_LOG_FORMAT"


@dataclass(frozen=True, slots=True)
class Settings:
    config_files: tuple[Path, ...] = ()
    xds_address: str = DEFAULT_XDS_ADDRESS
    admin_address: str = DEFAULT_ADMIN_ADDRESS
    node_group_key: str = "cluster"
    log_level: str = "INFO"
    log_format: str = "json"  # "json" or "text"
    # Coalesce bursts of source changes into one snapshot build (XDS-RULES R37; Istio uses 100 ms).
    debounce_s: float = 0.05
    file_poll_interval_s: float = 0.2
    extra: Mapping[str, str] = field(default_factory=dict)


def from_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings given through XDS_* environment variables, by CLI flag name."""
    env = os.environ if env is None else env
    names = {ENV_CONFIG: "config", ENV_XDS_ADDRESS: "xds_address", ENV_ADMIN_ADDRESS: "admin_address",
             ENV_NODE_GROUP_KEY: "node_group_key", ENV_LOG_LEVEL: "log_level", ENV_LOG_FORMAT: "log_format"}
    return {flag: env[var] for var, flag in names.items() if env.get(var)}


def split_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port), with a clear error."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in {address!r}")
    return host, number
