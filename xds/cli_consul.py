"""The Consul row of the source kinds (xds/source_kinds.py): `xds serve`'s --consul-* flags, their
XDS_CONSUL_* variables, and the ConsulConfig they make (docs/consul.md). No Consul client import."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from xds import settings as defaults
from xds.cli_secrets import add_consul_token_arguments, consul_token
from xds.cli_source_args import env_list, environment_flags, optional_path, switch

if TYPE_CHECKING:
    from xds.sources.base import Source
    from xds.sources.consul.client import ConsulConfig

# Environment variable -> flag name (settings.from_environment merges these).
_ENVIRONMENT = {
    defaults.ENV_CONSUL_ADDRESS: "consul_address", defaults.ENV_CONSUL_DATACENTER: "consul_datacenter",
    defaults.ENV_CONSUL_CONSISTENCY: "consul_consistency", defaults.ENV_CONSUL_CA_FILE: "consul_ca_file",
    defaults.ENV_CONSUL_CERT_FILE: "consul_cert_file", defaults.ENV_CONSUL_KEY_FILE: "consul_key_file",
    defaults.ENV_CONSUL_TLS_SERVER_NAME: "consul_tls_server_name",
    defaults.ENV_CONSUL_KV_PREFIX: "consul_kv_prefix", defaults.ENV_CONSUL_WARNING_AS: "consul_warning_as",
    defaults.ENV_CONSUL_INCLUDE_CONNECT: "consul_include_connect",
    defaults.ENV_CONSUL_RESYNC_GRACE_S: "consul_resync_grace",
}
HINT = f"a Consul agent with --consul-address URL (or {defaults.ENV_CONSUL_ADDRESS})"


def from_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The Consul settings given through the environment, by flag name; Consul's own CONSUL_HTTP_TOKEN(_FILE)
    are honoured when ours are unset."""
    found = environment_flags(env, _ENVIRONMENT)
    token = env.get(defaults.ENV_CONSUL_TOKEN) or env.get(defaults.ENV_CONSUL_HTTP_TOKEN)
    if token:
        found["consul_token"] = token
    token_file = env.get(defaults.ENV_CONSUL_TOKEN_FILE) or env.get(defaults.ENV_CONSUL_HTTP_TOKEN_FILE)
    if token_file:
        found["consul_token_file"] = token_file
    return found


def source(config: ConsulConfig) -> Source:
    from xds.sources.consul import ConsulSource

    return ConsulSource(config)


def secrets(config: ConsulConfig) -> tuple[str | None, ...]:
    return (config.token,)


def add_arguments(serve: argparse.ArgumentParser, env: dict[str, str]) -> None:
    consul = serve.add_argument_group("Consul source (docs/consul.md)")
    consul.add_argument("--consul-address", default=env.get("consul_address"), metavar="URL",
                        help="Consul agent HTTP API, http(s)://host:port; when unset there is no Consul "
                             f"source (env {defaults.ENV_CONSUL_ADDRESS})")
    add_consul_token_arguments(consul, env)
    consul.add_argument("--consul-datacenter", action="append", metavar="DC",
                        help="datacenter to watch (repeatable; the first is local, priority 0, the others "
                             "priority 1); default the agent's own "
                             f"(env {defaults.ENV_CONSUL_DATACENTER}, comma-separated)")
    consul.add_argument("--consul-consistency", default=env.get("consul_consistency", "default"),
                        choices=("default", "stale", "consistent"),
                        help=f"read consistency mode (env {defaults.ENV_CONSUL_CONSISTENCY})")
    consul.add_argument("--consul-ca-file", type=Path, default=env.get("consul_ca_file"),
                        help=f"CA bundle for https (env {defaults.ENV_CONSUL_CA_FILE})")
    consul.add_argument("--consul-cert-file", type=Path, default=env.get("consul_cert_file"),
                        help=f"client certificate for https (env {defaults.ENV_CONSUL_CERT_FILE})")
    consul.add_argument("--consul-key-file", type=Path, default=env.get("consul_key_file"),
                        help=f"client certificate key (env {defaults.ENV_CONSUL_KEY_FILE})")
    consul.add_argument("--consul-tls-server-name", default=env.get("consul_tls_server_name"),
                        help="expected name in Consul's certificate "
                             f"(env {defaults.ENV_CONSUL_TLS_SERVER_NAME})")
    consul.add_argument("--consul-kv-prefix", default=env.get("consul_kv_prefix"), metavar="PREFIX",
                        help="read policy documents from every key under this KV prefix "
                             f"(env {defaults.ENV_CONSUL_KV_PREFIX})")
    consul.add_argument("--consul-warning-as", default=env.get("consul_warning_as", "healthy"),
                        choices=("healthy", "degraded"),
                        help="how to serve an instance whose worst check is a warning "
                             f"(env {defaults.ENV_CONSUL_WARNING_AS})")
    consul.add_argument("--consul-include-connect", action="store_true", default=None,
                        help="also serve Connect sidecar proxies and gateways as endpoints "
                             f"(env {defaults.ENV_CONSUL_INCLUDE_CONNECT}=true)")
    consul.add_argument("--consul-resync-grace", type=float, default=env.get("consul_resync_grace"),
                        metavar="SECONDS",
                        help="after a Consul restart or outage, hold removals this long (default 30; "
                             f"env {defaults.ENV_CONSUL_RESYNC_GRACE_S})")


def config(args: argparse.Namespace, env: dict[str, str]) -> ConsulConfig | None:
    """The Consul source's configuration, or None when no address is given. SystemExit on a bad value."""
    if not args.consul_address:
        return None
    from xds.sources.consul.client import ConsulConfig

    datacenters = args.consul_datacenter or env_list(env.get("consul_datacenter", ""))
    try:
        include_connect = switch(args.consul_include_connect, env, "consul_include_connect")
        config = ConsulConfig(
            args.consul_address, token=consul_token(args, env), datacenters=tuple(datacenters),
            consistency=args.consul_consistency, ca_file=optional_path(args.consul_ca_file),
            cert_file=optional_path(args.consul_cert_file), key_file=optional_path(args.consul_key_file),
            tls_server_name=args.consul_tls_server_name or None, kv_prefix=args.consul_kv_prefix or None,
            warning_health=args.consul_warning_as, include_connect=include_connect)
        if args.consul_resync_grace is not None:
            config = dataclasses.replace(config, resync_grace_s=float(args.consul_resync_grace))
        return config
    except ValueError as exc:
        raise SystemExit(f"xds: error: Consul: {exc}") from exc
