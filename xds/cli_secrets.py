"""Command-line pieces for secrets: management API tokens, the Consul token file, and the refusal of secret
values given as flags (issue 9; docs/security.md, "The management API and secrets").

A value on the command line is visible to every local user in `ps` and /proc/PID/cmdline, and lands in shell
history; so tokens are read from files or the environment, and the old `--consul-token VALUE` is an error
that says what to use instead.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xds import settings as defaults
from xds.secrets import check_token, register_secret

if TYPE_CHECKING:
    from xds.server.management_auth import ManagementAuthConfig


class RefuseSecretFlag(argparse.Action):
    """A removed flag that used to take a secret value: parsing it fails with `hint`, without echoing it."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, hint: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("nargs", "?")
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.hint = hint

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        parser.error(f"{option_string} is no longer accepted: a secret on the command line is visible to "
                     f"every local user in `ps`. {self.hint}")


def _address(value: str) -> str:
    try:
        defaults.split_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return value


def add_consul_token_arguments(group: argparse._ArgumentGroup, env: dict[str, str]) -> None:
    group.add_argument("--consul-token-file", type=Path, default=env.get("consul_token_file"),
                       metavar="PATH",
                       help="file holding the ACL token, sent as X-Consul-Token (env "
                            f"{defaults.ENV_CONSUL_TOKEN_FILE} or {defaults.ENV_CONSUL_HTTP_TOKEN_FILE}; "
                            f"or the token itself in {defaults.ENV_CONSUL_TOKEN} or "
                            f"{defaults.ENV_CONSUL_HTTP_TOKEN})")
    group.add_argument("--consul-token", action=RefuseSecretFlag,
                       hint=f"Put the token in a file and pass --consul-token-file PATH, or set "
                            f"{defaults.ENV_CONSUL_TOKEN} (or {defaults.ENV_CONSUL_HTTP_TOKEN}).")


def consul_token(args: argparse.Namespace, env: dict[str, str]) -> str:
    """The Consul ACL token: from --consul-token-file (or its variables), else the token variables.

    ValueError naming the file when it cannot be read. The token is registered for redaction.
    """
    path = getattr(args, "consul_token_file", None)
    if path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ValueError(f"{path}: cannot read the Consul token file: {reason}") from None
        if not token or any(c.isspace() for c in token):
            raise ValueError(f"{path}: the Consul token file must hold one token on one line")
    else:
        token = env.get("consul_token", "")
    register_secret(token)
    return token


def add_management_serve_arguments(parser: argparse.ArgumentParser, env: dict[str, str]) -> None:
    group = parser.add_argument_group("Management API (docs/security.md)")
    group.add_argument("--management-address", type=_address,
                       default=env.get("management_address", defaults.DEFAULT_MANAGEMENT_ADDRESS),
                       help="gRPC listen address of the management API (xds status); without a token it "
                            f"must be loopback (env {defaults.ENV_MANAGEMENT_ADDRESS})")
    group.add_argument("--management-token-file", type=Path, action="append", metavar="PATH",
                       help="file of read-only bearer tokens, one per line (repeatable; env "
                            f"{defaults.ENV_MANAGEMENT_TOKEN_FILE}, or the token in "
                            f"{defaults.ENV_MANAGEMENT_TOKEN})")
    group.add_argument("--management-admin-token-file", type=Path, action="append", metavar="PATH",
                       help="file of admin bearer tokens, one per line (repeatable; env "
                            f"{defaults.ENV_MANAGEMENT_ADMIN_TOKEN_FILE}, or the token in "
                            f"{defaults.ENV_MANAGEMENT_ADMIN_TOKEN})")


def management_auth_config(args: argparse.Namespace, env: dict[str, str]) -> ManagementAuthConfig:
    from xds.server.management_auth import ManagementAuthConfig

    def files(given: list[Path] | None, key: str) -> tuple[Path, ...]:
        if given:
            return tuple(given)
        return tuple(Path(p) for p in env.get(key, "").split(",") if p.strip())

    return ManagementAuthConfig(
        read_files=files(args.management_token_file, "management_token_file"),
        admin_files=files(args.management_admin_token_file, "management_admin_token_file"),
        read_env=(env["management_token"],) if env.get("management_token") else (),
        admin_env=(env["management_admin_token"],) if env.get("management_admin_token") else ())


def add_management_client_arguments(parser: argparse.ArgumentParser, env: dict[str, str]) -> None:
    parser.add_argument("--management-address", type=_address,
                        default=env.get("management_address", defaults.DEFAULT_MANAGEMENT_ADDRESS),
                        help=f"the control plane's management API (env {defaults.ENV_MANAGEMENT_ADDRESS})")
    parser.add_argument("--token-file", type=Path, default=None, metavar="PATH",
                        help="file whose first token is sent as 'authorization: Bearer' (env "
                             f"{defaults.ENV_MANAGEMENT_TOKEN_FILE}, or the token in "
                             f"{defaults.ENV_MANAGEMENT_TOKEN} or {defaults.ENV_MANAGEMENT_ADMIN_TOKEN})")
    parser.add_argument("--xds-address", action=RefuseMovedFlag,
                        hint="The management API has its own listener since issue 9: use "
                             f"--management-address (default {defaults.DEFAULT_MANAGEMENT_ADDRESS}).")


class RefuseMovedFlag(argparse.Action):
    """A flag whose meaning moved elsewhere: parsing it fails with `hint`."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, hint: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.hint = hint

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        parser.error(f"{option_string} is not where the management API listens. {self.hint}")


def client_token(args: argparse.Namespace, env: dict[str, str]) -> str | None:
    """The bearer token `xds status` sends: --token-file, else the token file or token variables.

    ValueError naming the file or variable on a bad one; None when no token is configured.
    """
    from xds.server.management_auth import read_token_file

    path = args.token_file or (Path(env["management_token_file"].split(",")[0])
                               if env.get("management_token_file") else None)
    if path is not None:
        return read_token_file(path)[0]
    for key, name in (("management_token", defaults.ENV_MANAGEMENT_TOKEN),
                      ("management_admin_token", defaults.ENV_MANAGEMENT_ADMIN_TOKEN)):
        if env.get(key):
            return check_token(env[key], where=name)
    return None
