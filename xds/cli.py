"""Command line: `xds serve | bootstrap | validate | render | status | schema | diff | version`.

Parses arguments (flags, then XDS_* environment variables, then defaults from settings.py) and hands
them down; no logic of its own beyond presenting results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from xds import settings as defaults
from xds.cli_load import add_load_arguments, load_settings
from xds.cli_secrets import (
    add_management_client_arguments,
    add_management_serve_arguments,
    client_token,
    management_auth_config,
)
from xds.cli_stats import add_envoy_stats_arguments
from xds.settings import Settings, from_environment, split_address
from xds.source_kinds import KINDS
from xds.translate.delivery import DEFAULT_XDS_CLUSTER


def _address(value: str) -> str:
    try:
        split_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return value


def _locality_part(value: str) -> str:
    from xds.server.limits import StreamLimits

    # The server refuses a longer one (StreamLimits.max_node_locality_bytes): fail here, not at connect.
    bound = StreamLimits().max_node_locality_bytes
    if len(value.encode()) > bound:
        raise argparse.ArgumentTypeError(f"at most {bound} bytes, got {len(value.encode())}")
    return value


def _add_locality_arguments(parser: argparse.ArgumentParser) -> None:
    # node.locality: services with `locality: {failover: true}` prefer endpoints in this zone, then region.
    for flag, what in (("--region", "region"), ("--zone", "zone"), ("--sub-zone", "sub-zone")):
        parser.add_argument(flag, type=_locality_part, default="", help=f"node.locality {what} of the Envoy")


def build_parser(env: dict[str, str]) -> argparse.ArgumentParser:
    from xds.cli_diff import add_diff_parser
    from xds.cli_output import add_output_argument
    from xds.version import VersionAction

    parser = argparse.ArgumentParser(prog="xds", description="An Envoy xDS control plane.")
    parser.add_argument("--version", action=VersionAction)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the control plane")
    serve.add_argument("--config", action="append", type=Path,
                       help=f"catalog/policy YAML file (repeatable; env {defaults.ENV_CONFIG}, "
                            "comma-separated)")
    serve.add_argument("--xds-address", type=_address,
                       default=env.get("xds_address", defaults.DEFAULT_XDS_ADDRESS),
                       help=f"gRPC listen address (env {defaults.ENV_XDS_ADDRESS})")
    serve.add_argument("--admin-address", type=_address, default=env.get("admin_address",
                       defaults.DEFAULT_ADMIN_ADDRESS),
                       help=f"/metrics, /ready, /status listen address (env {defaults.ENV_ADMIN_ADDRESS})")
    serve.add_argument("--node-group-key", default=env.get("node_group_key", "cluster"),
                       help="what selects a node's snapshot: cluster | id | metadata:<field> "
                            f"(env {defaults.ENV_NODE_GROUP_KEY})")
    serve.add_argument("--log-level", default=env.get("log_level", "INFO"))
    serve.add_argument("--log-format", choices=("json", "text"), default=env.get("log_format", "json"))
    add_management_serve_arguments(serve, env)
    _add_limit_arguments(serve, env)
    _add_mesh_arguments(serve, env)
    for kind in KINDS:  # every registry kind's flags (xds/source_kinds.py)
        kind.add_arguments(serve, env)
    serve.add_argument("--xds-cluster-name", default=env.get("xds_cluster_name", DEFAULT_XDS_CLUSTER),
                       metavar="NAME",
                       help="the bootstrap cluster through which single-type Envoys reach this server, named "
                            "in their EDS and RDS sources (default xds_cluster, as `xds bootstrap --no-ads` "
                            f"prints; env {defaults.ENV_XDS_CLUSTER_NAME})")
    _add_tls_arguments(serve, env)
    add_load_arguments(serve)
    add_envoy_stats_arguments(serve, env)

    boot = commands.add_parser("bootstrap", help="print an Envoy bootstrap that points at this server")
    boot.add_argument("--node-id", required=True)
    boot.add_argument("--cluster", required=True, help="node.cluster, the node group by default")
    boot.add_argument("--xds-address", type=_address,
                      default=env.get("xds_address", defaults.DEFAULT_XDS_ADDRESS))
    boot.add_argument("--admin-address", type=_address, default="127.0.0.1:9901",
                      help="Envoy's own admin address")
    # mTLS to the server (docs/security.md): paths as Envoy will read them on its own machine.
    boot_tls = boot.add_argument_group("mTLS to the control plane (docs/security.md)")
    boot_tls.add_argument("--tls-cert", type=Path, help="this Envoy's client certificate chain (PEM)")
    boot_tls.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    boot_tls.add_argument("--ca", type=Path, help="CA bundle that signed the control plane's certificate")
    boot_tls.add_argument("--server-san", default="",
                          help="require this SAN in the server's certificate (DNS name, IP address or "
                               "spiffe:// URI); without it any certificate from --ca is accepted")
    _add_locality_arguments(boot)
    # Other xDS clients (issue 11; docs/operations.md "Other xDS clients").
    boot_kind = boot.add_mutually_exclusive_group()
    boot_kind.add_argument("--no-ads", action="store_true",
                           help="an Envoy bootstrap with per-type gRPC sources instead of ADS")
    boot_kind.add_argument("--grpc", action="store_true",
                           help="a gRPC xDS bootstrap (JSON, for GRPC_XDS_BOOTSTRAP) for proxyless clients")
    boot_kind.add_argument("--delta", action="store_true",
                           help="use delta (incremental) xDS: api_type DELTA_GRPC in ads_config "
                                "(docs/protocol.md R28-R30); the default is state of the world (GRPC)")

    validate = commands.add_parser("validate", help="check a catalog/policy file without serving it")
    validate.add_argument("file", type=Path)
    # The same limit as `serve`, so that a file validates exactly when the server would read it.
    validate.add_argument("--max-catalog-bytes", type=int, default=env.get("max_catalog_bytes"),
                          metavar="BYTES",
                          help="largest file read (default 64 MiB; env XDS_MAX_CATALOG_BYTES)")

    render = commands.add_parser("render", help="print exactly what an Envoy of a node group would receive")
    render.add_argument("--cluster", required=True, help="node group (node.cluster)")
    render.add_argument("--config", action="append", type=Path)
    render.add_argument("--client", choices=("envoy", "envoy-single", "grpc"), default="envoy",
                        help="the kind of client (docs/protocol.md C1-C2): an Envoy on ADS (default), an "
                             "Envoy on single-type streams, or a proxyless gRPC client")
    _add_locality_arguments(render)
    add_output_argument(render, default="json")  # json: render's output before issue 14

    schema = commands.add_parser("schema", help="print the schema of catalog and policy documents")
    schema.add_argument("--format", choices=("json-schema", "openapi", "crd"), default="json-schema",
                        help="json-schema: for editors and YAML language servers (default); openapi: the "
                             "TrafficPolicy spec schema; crd: deploy/crd-trafficpolicy.yaml")
    schema.add_argument("--policy-only", action="store_true",
                        help="json-schema of a policy-only document (Consul KV, a TrafficPolicy spec): no "
                             "endpoints")
    schema.add_argument("--update-docs", type=Path, metavar="FILE",
                        help="instead of printing, rewrite the generated reference tables of FILE "
                             "(docs/config.md)")

    status = commands.add_parser("status", help="connected proxies and their sync state")
    add_management_client_arguments(status, env)
    status.add_argument("--group", help="also print the snapshot versions of this node group")
    status.add_argument("--loads", action="store_true",
                        help="also print every load-aware endpoint: its load, report age and weight")
    add_output_argument(status)

    add_diff_parser(commands, env)  # issue 14 item 5 (xds/cli_diff.py)
    version = commands.add_parser("version", help="print the versions of xds and what it runs on")
    add_output_argument(version, default="text", choices=("text", "json", "yaml"))
    return parser


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from exc
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from exc
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {number}")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from exc
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return number


def _workload_cert_ttl(value: str) -> float:
    from xds.pki.workload import MIN_WORKLOAD_CERT_TTL_S

    number = _seconds(value)
    if number < MIN_WORKLOAD_CERT_TTL_S:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_WORKLOAD_CERT_TTL_S:g} seconds, got {value}")
    return number


def _add_mesh_arguments(serve: argparse.ArgumentParser, env: dict[str, str]) -> None:
    """The workload CA (docs/security.md, issue 9)."""
    # --trust-domain is declared with the xDS port's TLS flags (_add_tls_arguments); it names workload
    # identities too.
    mesh = serve.add_argument_group("Workload CA (docs/security.md)")
    mesh.add_argument("--ca-cert", type=Path, default=env.get("ca_cert"), metavar="PATH",
                      help=f"workload CA certificate, PEM (env {defaults.ENV_CA_CERT}); without it and "
                           "--ca-key a development CA is created in memory")
    mesh.add_argument("--ca-key", type=Path, default=env.get("ca_key"), metavar="PATH",
                      help=f"workload CA private key, PEM, unencrypted (env {defaults.ENV_CA_KEY})")
    mesh.add_argument("--workload-cert-ttl", type=_workload_cert_ttl,
                      default=env.get("workload_cert_ttl", defaults.DEFAULT_WORKLOAD_CERT_TTL_S),
                      metavar="SECONDS", help="lifetime of workload certificates, at least 60; they rotate "
                                              f"at half of it (env {defaults.ENV_WORKLOAD_CERT_TTL})")


def _add_limit_arguments(serve: argparse.ArgumentParser, env: dict[str, str]) -> None:
    """What clients may make the server hold (docs/operations.md, "Limits")."""
    limits = serve.add_argument_group("Limits (docs/operations.md)")
    limits.add_argument("--max-node-groups", type=_positive_int,
                        default=env.get("max_node_groups", defaults.DEFAULT_MAX_NODE_GROUPS), metavar="N",
                        help="node groups held at once; a proxy of a new group past it is refused with "
                             f"RESOURCE_EXHAUSTED (env {defaults.ENV_MAX_NODE_GROUPS})")
    limits.add_argument("--node-group-grace", type=_seconds,
                        default=env.get("node_group_grace", defaults.DEFAULT_NODE_GROUP_GRACE_S),
                        metavar="SECONDS", help="how long a group's snapshot is kept after its last proxy "
                                                f"disconnected (env {defaults.ENV_NODE_GROUP_GRACE_S})")
    limits.add_argument("--max-streams", type=_positive_int,
                        default=env.get("max_streams", defaults.DEFAULT_MAX_STREAMS), metavar="N",
                        help=f"open xDS streams on the server (env {defaults.ENV_MAX_STREAMS})")
    limits.add_argument("--max-stream-starts-per-second", type=_seconds,
                        default=env.get("max_stream_starts_per_second",
                                        defaults.DEFAULT_MAX_STREAM_STARTS_PER_S), metavar="RATE",
                        help="new xDS streams admitted per second; more are refused with UNAVAILABLE and "
                             f"retry (0: no limit; env {defaults.ENV_MAX_STREAM_STARTS_PER_S})")
    limits.add_argument("--max-initial-syncs", type=_count,
                        default=env.get("max_initial_syncs", defaults.DEFAULT_MAX_INITIAL_SYNCS), metavar="N",
                        help="new xDS streams in their initial sync at once; more are refused with "
                             f"UNAVAILABLE and retry (0: no limit; env {defaults.ENV_MAX_INITIAL_SYNCS})")
    limits.add_argument("--write-timeout", type=_seconds,
                        default=env.get("write_timeout", defaults.DEFAULT_WRITE_TIMEOUT_S), metavar="SECONDS",
                        help="end a stream whose client has not read a response for this long (0: never; "
                             f"env {defaults.ENV_WRITE_TIMEOUT_S})")
    serve.add_argument("--grpc-reflection", action="store_true",
                       default=env.get("grpc_reflection", "").lower() in ("1", "true", "yes"),
                       help="offer gRPC server reflection on the xDS port, for grpcurl and similar tools "
                            f"(env {defaults.ENV_GRPC_REFLECTION}=1)")
    limits.add_argument("--max-request-bytes", type=_positive_int,
                        default=env.get("max_request_bytes", defaults.DEFAULT_MAX_REQUEST_BYTES),
                        metavar="BYTES", help=f"largest xDS request (env {defaults.ENV_MAX_REQUEST_BYTES})")
    limits.add_argument("--max-catalog-bytes", type=_positive_int,
                        default=env.get("max_catalog_bytes", defaults.DEFAULT_MAX_CATALOG_BYTES),
                        metavar="BYTES",
                        help="largest catalog file read; a bigger one is reported and the last good one "
                             f"keeps serving (env {defaults.ENV_MAX_CATALOG_BYTES})")


def _add_tls_arguments(serve: argparse.ArgumentParser, env: dict[str, str]) -> None:
    """mTLS on the xDS port and node identity binding (issue 9; docs/security.md)."""
    from xds.server.identity import RULE_NAMES

    tls = serve.add_argument_group("mTLS on the xDS port (docs/security.md)")
    tls.add_argument("--tls-cert", type=Path, default=env.get("tls_cert"), metavar="FILE",
                     help=f"server certificate chain, PEM (env {defaults.ENV_TLS_CERT})")
    tls.add_argument("--tls-key", type=Path, default=env.get("tls_key"), metavar="FILE",
                     help=f"its private key, PEM, unencrypted (env {defaults.ENV_TLS_KEY})")
    tls.add_argument("--client-ca", type=Path, default=env.get("client_ca"), metavar="FILE",
                     help="CA bundle client certificates must chain to; with all three files the xDS port "
                          f"requires a client certificate (env {defaults.ENV_CLIENT_CA})")
    tls.add_argument("--trust-domain", default=env.get("trust_domain", defaults.DEFAULT_TRUST_DOMAIN),
                     help=f"SPIFFE trust domain of proxy identities (env {defaults.ENV_TRUST_DOMAIN})")
    tls.add_argument("--identity-rule", choices=RULE_NAMES,
                     default=env.get("identity_rule", defaults.DEFAULT_IDENTITY_RULE),
                     help="which certificate names may claim a node: spiffe (URI SANs "
                          "spiffe://<trust-domain>/group/<group>[/node/<id>]) or dns-group (also DNS SANs "
                          f"<group>.<trust-domain> on certificates without URI SANs) "
                          f"(env {defaults.ENV_IDENTITY_RULE})")
    tls.add_argument("--tls-reload-interval", type=_seconds,
                     default=env.get("tls_reload_interval", defaults.DEFAULT_TLS_RELOAD_INTERVAL_S),
                     metavar="SECONDS", help="how often the TLS files are checked for changes "
                                             f"(env {defaults.ENV_TLS_RELOAD_INTERVAL_S})")


def _tls_files(args: argparse.Namespace) -> None:
    """All three TLS files or none: SystemExit naming what is missing."""
    given = {"--tls-cert": (args.tls_cert, defaults.ENV_TLS_CERT),
             "--tls-key": (args.tls_key, defaults.ENV_TLS_KEY),
             "--client-ca": (args.client_ca, defaults.ENV_CLIENT_CA)}
    missing = [f"{flag} (env {var})" for flag, (value, var) in given.items() if not value]
    if missing and len(missing) < len(given):
        raise SystemExit("xds: error: mTLS on the xDS port needs --tls-cert, --tls-key and --client-ca; "
                         f"missing: {', '.join(missing)}")
    from xds.server.identity import RULE_NAMES

    # argparse checks `choices` on the command line only, not on a default taken from the environment.
    if args.identity_rule not in RULE_NAMES:
        raise SystemExit(f"xds: error: {defaults.ENV_IDENTITY_RULE} must be one of {', '.join(RULE_NAMES)}, "
                         f"got {args.identity_rule!r}")


def _path(value: Path | str | None) -> Path | None:
    return Path(value) if value else None


def _config_files(given: list[Path] | None, env: dict[str, str], *, required: bool = True
                  ) -> tuple[Path, ...]:
    if given:
        return tuple(given)
    if env.get("config"):
        return tuple(Path(p) for p in env["config"].split(",") if p)
    if not required:
        return ()
    raise SystemExit(f"xds: error: give a catalog file with --config PATH (or {defaults.ENV_CONFIG})")


def main(argv: Sequence[str] | None = None) -> int:
    env = from_environment()
    args = build_parser(env).parse_args(argv)
    handler = {"serve": _serve, "bootstrap": _bootstrap, "validate": _validate, "render": _render,
               "status": _status, "schema": _schema, "diff": _diff, "version": _version}[args.command]
    return handler(args, env)


def _serve(args: argparse.Namespace, env: dict[str, str]) -> int:
    from xds.app import App
    from xds.observability.logs import configure_logging

    registries = {kind.name: config for kind in KINDS if (config := kind.config(args, env)) is not None}
    config_files = _config_files(args.config, env, required=False)
    if not config_files and not registries:
        raise SystemExit(f"xds: error: no source configured: give a catalog file with --config PATH (or "
                         f"{defaults.ENV_CONFIG}), " + ", or ".join(kind.hint for kind in KINDS))
    _tls_files(args)
    from xds.server.management_server import ManagementExposureError, check_exposure

    management_auth = management_auth_config(args, env)
    from xds.server.load_report import LoadReportExposureError
    from xds.server.load_report import check_exposure as check_load_exposure

    try:
        check_exposure(args.management_address, auth=management_auth)
        check_load_exposure(args.load_report_address, auth=management_auth)
    except (ManagementExposureError, LoadReportExposureError) as exc:
        raise SystemExit(f"xds: error: {exc}") from exc
    configure_logging(level=args.log_level, json_format=args.log_format == "json")
    settings = Settings(config_files=config_files, xds_address=args.xds_address,
                        admin_address=args.admin_address, management_address=args.management_address,
                        management_auth=management_auth, node_group_key=args.node_group_key,
                        log_level=args.log_level, log_format=args.log_format, registries=registries,
                        max_node_groups=args.max_node_groups,
                        node_group_grace_s=args.node_group_grace, max_streams=args.max_streams,
                        max_stream_starts_per_s=float(args.max_stream_starts_per_second),
                        max_initial_syncs=int(args.max_initial_syncs),
                        write_timeout_s=float(args.write_timeout),
                        grpc_reflection=args.grpc_reflection,
                        max_request_bytes=args.max_request_bytes, max_catalog_bytes=args.max_catalog_bytes,
                        trust_domain=args.trust_domain, tls_cert=_path(args.tls_cert),
                        tls_key=_path(args.tls_key), client_ca=_path(args.client_ca),
                        identity_rule=args.identity_rule,
                        tls_reload_interval_s=float(args.tls_reload_interval),
                        ca_cert=_path(args.ca_cert), ca_key=_path(args.ca_key),
                        workload_cert_ttl_s=float(args.workload_cert_ttl), load=load_settings(args),
                        xds_cluster_name=args.xds_cluster_name,
                        envoy_stats_port=args.envoy_stats_port, envoy_stats_address=args.envoy_stats_address)

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        app = App(settings)
        with contextlib.suppress(asyncio.CancelledError):
            await app.run()

    from xds.server.tls_material import TlsMaterialError

    try:
        asyncio.run(run())
    except TlsMaterialError as exc:
        print(f"xds: error: TLS on the xDS port: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # a port taken, a token or CA file missing or malformed
        print(f"xds: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _bootstrap(args: argparse.Namespace, env: dict[str, str]) -> int:
    from xds.bootstrap import BootstrapError, TlsFiles, render_bootstrap
    from xds.bootstrap_clients import grpc_bootstrap, single_type

    given = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--ca": args.ca}
    missing = [flag for flag, value in given.items() if value is None]
    if missing and (len(missing) < len(given) or args.server_san):
        print(f"xds: error: an mTLS bootstrap needs --tls-cert, --tls-key and --ca; missing: "
              f"{', '.join(missing)}", file=sys.stderr)
        return 2
    tls = None if missing else TlsFiles(ca_file=args.ca, cert_file=args.tls_cert, key_file=args.tls_key,
                                        server_san=args.server_san)
    try:
        if args.grpc:
            text = grpc_bootstrap(node_id=args.node_id, cluster=args.cluster, xds_address=args.xds_address,
                                  tls=tls, region=args.region, zone=args.zone, sub_zone=args.sub_zone)
        else:
            text = render_bootstrap(node_id=args.node_id, cluster=args.cluster, xds_address=args.xds_address,
                                    admin_address=args.admin_address, tls=tls, region=args.region,
                                    zone=args.zone, sub_zone=args.sub_zone, delta=args.delta)
            if args.no_ads:
                text = single_type(text)
    except BootstrapError as exc:
        print(f"xds: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def _validate(args: argparse.Namespace, env: dict[str, str]) -> int:
    from xds.policy.apply import explain_warnings
    from xds.policy.errors import PolicyError, escape_control
    from xds.policy.load import DEFAULT_MAX_BYTES, load_file
    from xds.sources.tls_files import check_tls_files

    # The same safe reader as the file source: a FIFO, a device or a huge file is one located error line
    # with status 1, never a hang or a traceback (issue 7).
    name = escape_control(str(args.file))
    max_bytes = DEFAULT_MAX_BYTES if args.max_catalog_bytes is None else args.max_catalog_bytes
    if max_bytes <= 0:
        print(f"xds: error: --max-catalog-bytes must be positive, got {max_bytes}", file=sys.stderr)
        return 1
    try:
        catalog, policy = load_file(args.file, max_bytes=max_bytes)
        check_tls_files(policy)  # the CA bundles and certificates it names (issue 9 item 7)
        warnings = explain_warnings(catalog, policy)
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, but still an answer an operator can act on
        print(f"{name}: internal error: {escape_control(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"{name}: warning: {escape_control(warning)}", file=sys.stderr)
    print(f"{name}: OK ({len(catalog)} services, {len(policy.listeners)} listeners)")
    return 0


def _schema(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Everything printed here is derived from the field declarations (xds/policy/fields.py, issue 8)."""
    from xds.policy.openapi import policy_schema, render_crd
    from xds.policy.reference import update_file
    from xds.policy.schemagen import json_schema

    if args.update_docs is not None:
        try:
            changed = update_file(args.update_docs)
        except (OSError, ValueError) as exc:
            print(f"xds: error: {args.update_docs}: {exc}", file=sys.stderr)
            return 1
        print(f"{args.update_docs}: {'updated' if changed else 'already up to date'}")
        return 0
    if args.format == "crd":
        sys.stdout.write(render_crd())
    elif args.format == "openapi":
        sys.stdout.write(json.dumps(policy_schema(), indent=2) + "\n")
    else:
        sys.stdout.write(json.dumps(json_schema(file_format=not args.policy_only), indent=2) + "\n")
    return 0


def _render(args: argparse.Namespace, env: dict[str, str]) -> int:
    from xds.cache.node import client_key, located_key
    from xds.model.catalog import merge_catalogs
    from xds.model.service import Locality
    from xds.pipeline import World, build_snapshot, with_tls_material
    from xds.policy.errors import PolicyError
    from xds.policy.load import load_file
    from xds.policy.schema import merge_policies
    from xds.server.management import resource_json
    from xds.sources.tls_files import TlsFiles
    from xds.typeurls import PUSH_ORDER, SECRET, short_name

    try:
        loaded = [load_file(path) for path in _config_files(args.config, env)]
        # Workload certificates (sidecar mTLS) are rendered as issued by a throwaway development CA, with
        # their private keys redacted (resource_json).
        from xds.pki.ca import generate_ca
        from xds.pki.workload import WorkloadIdentities

        world = World(catalog=merge_catalogs([c for c, _ in loaded]),
                      policy=merge_policies([p for _, p in loaded]),
                      workload=WorkloadIdentities(generate_ca("xds.local")))
        world = with_tls_material(world, TlsFiles())
        where = Locality(region=args.region, zone=args.zone, sub_zone=args.sub_zone)
        from xds.translate.delivery import ClientKind

        key = client_key(args.cluster, ClientKind(args.client))
        snapshot = build_snapshot(world, located_key(key, where))
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"xds: error: {exc}", file=sys.stderr)
        return 1
    rendered = {
        "group": snapshot.group,
        "types": [{"type": short_name(t), "type_url": t, "version": snapshot.version(t),
                   "resources": [json.loads(resource_json(r))
                                 for _, r in sorted(snapshot.of_type(t).items())]}
                  for t in PUSH_ORDER if t != SECRET or snapshot.of_type(t)],
    }
    if args.output == "table":
        from xds.cli_output import render_table

        print(render_table(snapshot.group, [(short_name(t), name, r.hash) for t in PUSH_ORDER
                                            for name, r in sorted(snapshot.of_type(t).items())]))
    elif args.output == "yaml":
        from xds.cli_output import dump

        sys.stdout.write(dump(rendered, "yaml"))
    else:
        json.dump(rendered, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


def _diff(args: argparse.Namespace, env: dict[str, str]) -> int:
    from xds.cli_diff import run

    return run(args, env)


def _version(args: argparse.Namespace, env: dict[str, str]) -> int:
    from xds.version import version_info, version_line

    if args.output == "text":
        print(version_line())
    else:
        from xds.cli_output import dump

        sys.stdout.write(dump(version_info(), args.output))
    return 0


def _status(args: argparse.Namespace, env: dict[str, str]) -> int:
    from xds.status_view import (
        ManagementQueryError,
        fetch_loads,
        fetch_proxies,
        fetch_snapshot,
        format_loads,
        format_proxy_table,
        format_snapshot,
    )

    try:
        token = client_token(args, env)
    except ValueError as exc:
        print(f"xds: error: {exc}", file=sys.stderr)
        return 1

    if args.output != "table":
        return _status_data(args, token)

    async def run() -> str:
        address = args.management_address
        text = format_proxy_table(await fetch_proxies(address, token=token))
        if args.group:
            text += "\n\n" + format_snapshot(await fetch_snapshot(address, args.group, token=token))
        if args.loads:
            text += "\n\n" + format_loads(await fetch_loads(address, token=token))
        return text

    try:
        print(asyncio.run(run()))
    except ManagementQueryError as exc:
        print(f"xds: {exc}", file=sys.stderr)
        return 1
    return 0


def _status_data(args: argparse.Namespace, token: str | None) -> int:
    """`xds status -o json|yaml`: the shape of docs/operations.md "CLI output formats"."""
    from xds.cli_output import dump, loads_to_dict, proxies_to_dict, snapshot_to_dict
    from xds.status_view import ManagementQueryError, fetch_loads, fetch_proxies, fetch_snapshot

    async def run() -> dict[str, object]:
        address = args.management_address
        data: dict[str, object] = dict(proxies_to_dict(await fetch_proxies(address, token=token)))
        if args.group:
            data["snapshot"] = snapshot_to_dict(await fetch_snapshot(address, args.group, token=token))
        if args.loads:
            data["loads"] = loads_to_dict(await fetch_loads(address, token=token))
        return data

    try:
        sys.stdout.write(dump(asyncio.run(run()), args.output))
    except ManagementQueryError as exc:
        print(f"xds: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
