"""The Eureka row of the source kinds (xds/source_kinds.py): `xds serve`'s --eureka-* flags, their
XDS_EUREKA_* variables, and the EurekaConfig they make (docs/eureka.md). Imports no HTTP client."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from xds.cli_source_args import environment_flags, optional_path, switch

if TYPE_CHECKING:
    from xds.sources.base import Source
    from xds.sources.eureka.client import EurekaConfig

ENV_EUREKA_URL = "XDS_EUREKA_URL"  # comma-separated, as Spring's defaultZone
ENV_EUREKA_USERNAME = "XDS_EUREKA_USERNAME"
ENV_EUREKA_PASSWORD = "XDS_EUREKA_PASSWORD"
ENV_EUREKA_PASSWORD_FILE = "XDS_EUREKA_PASSWORD_FILE"
ENV_EUREKA_CA_FILE = "XDS_EUREKA_CA_FILE"
ENV_EUREKA_REFRESH_S = "XDS_EUREKA_REFRESH_S"
ENV_EUREKA_PREFER_SECURE_PORT = "XDS_EUREKA_PREFER_SECURE_PORT"
ENV_EUREKA_RESYNC_GRACE_S = "XDS_EUREKA_RESYNC_GRACE_S"

# Environment variable -> flag name (settings.from_environment merges these).
_ENVIRONMENT = {
    ENV_EUREKA_URL: "eureka_url", ENV_EUREKA_USERNAME: "eureka_username",
    ENV_EUREKA_PASSWORD: "eureka_password", ENV_EUREKA_PASSWORD_FILE: "eureka_password_file",
    ENV_EUREKA_CA_FILE: "eureka_ca_file", ENV_EUREKA_REFRESH_S: "eureka_refresh",
    ENV_EUREKA_PREFER_SECURE_PORT: "eureka_prefer_secure_port",
    ENV_EUREKA_RESYNC_GRACE_S: "eureka_resync_grace",
}
HINT = f"a Eureka server with --eureka-url URL (or {ENV_EUREKA_URL})"


def from_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The Eureka settings given through the environment, by flag name."""
    return environment_flags(env, _ENVIRONMENT)


def source(config: EurekaConfig) -> Source:
    from xds.sources.eureka.watcher import EurekaSource

    return EurekaSource(config)


def secrets(config: EurekaConfig) -> tuple[str | None, ...]:
    return (config.password,)


def add_arguments(serve: argparse.ArgumentParser, env: dict[str, str]) -> None:
    eureka = serve.add_argument_group("Eureka source (docs/eureka.md)")
    eureka.add_argument("--eureka-url", action="append", metavar="URL",
                        help="Eureka server, http(s)://host:port/eureka (repeatable or comma-separated: "
                             "peers tried in order, with failover); when unset there is no Eureka source "
                             f"(env {ENV_EUREKA_URL})")
    eureka.add_argument("--eureka-username", default=env.get("eureka_username"), metavar="NAME",
                        help=f"basic-auth user (env {ENV_EUREKA_USERNAME})")
    eureka.add_argument("--eureka-password-file", type=Path, default=env.get("eureka_password_file"),
                        metavar="PATH",
                        help="file holding the basic-auth password (env "
                             f"{ENV_EUREKA_PASSWORD_FILE}; or the password itself in {ENV_EUREKA_PASSWORD})")
    eureka.add_argument("--eureka-ca-file", type=Path, default=env.get("eureka_ca_file"), metavar="PATH",
                        help=f"CA bundle for https:// servers (env {ENV_EUREKA_CA_FILE})")
    eureka.add_argument("--eureka-refresh", type=float, default=env.get("eureka_refresh"), metavar="SECONDS",
                        help=f"delta fetch interval (default 5; env {ENV_EUREKA_REFRESH_S})")
    eureka.add_argument("--eureka-prefer-secure-port", action="store_true", default=None,
                        help="serve an instance's securePort when both ports are enabled "
                             f"(env {ENV_EUREKA_PREFER_SECURE_PORT}=true)")
    eureka.add_argument("--eureka-resync-grace", type=float, default=env.get("eureka_resync_grace"),
                        metavar="SECONDS",
                        help="after a Eureka restart, outage or failover, hold removals this long (default "
                             f"30; env {ENV_EUREKA_RESYNC_GRACE_S})")


def config(args: argparse.Namespace, env: dict[str, str]) -> EurekaConfig | None:
    """The Eureka source's configuration, or None when no URL is given. SystemExit on a bad value."""
    urls = args.eureka_url or ([env["eureka_url"]] if env.get("eureka_url") else [])
    if not urls:
        return None
    from xds.sources.eureka.client import EurekaConfig, read_password

    try:
        password = read_password(file=args.eureka_password_file or None, env=env.get("eureka_password"))
        prefer_secure = switch(args.eureka_prefer_secure_port, env, "eureka_prefer_secure_port")
        config = EurekaConfig(tuple(urls), username=args.eureka_username or "", password=password,
                            ca_file=optional_path(args.eureka_ca_file),
                            prefer_secure_port=prefer_secure)
        if args.eureka_refresh is not None:
            config = dataclasses.replace(config, refresh_s=float(args.eureka_refresh))
        if args.eureka_resync_grace is not None:
            config = dataclasses.replace(config, resync_grace_s=float(args.eureka_resync_grace))
        return config
    except ValueError as exc:
        raise SystemExit(f"xds: error: Eureka: {exc}") from exc
