"""Bearer-token authentication and roles for the management API (issue 9; docs/security.md, "The management
API and secrets").

A client sends `authorization: Bearer <token>` as gRPC metadata. Tokens come from files or the environment,
never from a command-line value (`ps` shows those to every local user). Two roles:

- `read`: may call read-only methods. Every method of xds.management.v1.Management today is read-only
  (ListProxies, GetSnapshot), so a read token can do everything the API offers;
- `admin`: may call every method, including any mutating one added later.

A method not listed in METHOD_ROLES needs `admin`: a new method is denied to read tokens until someone
decides it is read-only. Tokens are compared with hmac.compare_digest against every configured token, so
the time taken tells a caller neither how much of a guess was right nor which token it was close to.

Token files hold one token per line (blank lines and `#` comments ignored), so a rotation can list the old and
the new token for a while. A file is re-read when its size, mtime or inode changes; a change that leaves it
unreadable or invalid is logged and the last good tokens stay in force.
"""

from __future__ import annotations

import enum
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from xds.secrets import check_token, register_secret

log = logging.getLogger("xds.management.auth")

SERVICE = "xds.management.v1.Management"


class Role(enum.IntEnum):
    """Ordered: a higher role may do everything a lower one may."""

    READ = 1
    ADMIN = 2


# Every current method is read-only (issue 9: "define the role model and enforce read-only for all current
# methods"). Anything else, such as a method added to the proto later, needs ADMIN.
METHOD_ROLES: dict[str, Role] = {
    f"/{SERVICE}/ListProxies": Role.READ,
    f"/{SERVICE}/GetSnapshot": Role.READ,
    f"/{SERVICE}/ListLoads": Role.READ,  # issue 10: loads and weights, read-only
}

# Values of the `reason` label of xds_management_denied_total.
DENY_MISSING = "missing_token"
DENY_INVALID = "invalid_token"
DENY_ROLE = "insufficient_role"
DENY_REASONS = (DENY_MISSING, DENY_INVALID, DENY_ROLE)


@dataclass(frozen=True, slots=True)
class ManagementAuthConfig:
    """Where the management API's tokens come from. `*_env` hold token values read from the environment;
    repr shows only how many there are."""

    read_files: tuple[Path, ...] = ()
    admin_files: tuple[Path, ...] = ()
    read_env: tuple[str, ...] = ()
    admin_env: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (f"ManagementAuthConfig(read_files={[str(p) for p in self.read_files]}, "
                f"admin_files={[str(p) for p in self.admin_files]}, read_env=<{len(self.read_env)}>, "
                f"admin_env=<{len(self.admin_env)}>)")

    @property
    def configured(self) -> bool:
        return bool(self.read_files or self.admin_files or self.read_env or self.admin_env)


def read_token_file(path: Path) -> tuple[str, ...]:
    """The tokens in `path`; ValueError naming the file (and line) on anything wrong, never the value."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"{path}: cannot read the token file: {reason}") from None
    tokens = tuple(check_token(line, where=f"{path}:{number}")
                   for number, line in enumerate(text.splitlines(), 1)
                   if line.strip() and not line.lstrip().startswith("#"))
    if not tokens:
        raise ValueError(f"{path}: the token file holds no token")
    return tokens


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class _TokenFile:
    def __init__(self, path: Path, role: Role) -> None:
        self.path = path
        self.role = role
        self._stamp = _stamp(path)
        self.tokens = read_token_file(path)  # raises at startup: a bad file is a configuration error
        for token in self.tokens:
            register_secret(token)
        _warn_if_shared(path)

    def refresh(self) -> None:
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            tokens = read_token_file(self.path)
        except ValueError as exc:
            log.error("management_token_file_invalid", extra={"error": str(exc), "kept": len(self.tokens)})
            return
        for token in tokens:
            register_secret(token)
        self.tokens = tokens
        log.info("management_token_file_reloaded", extra={"path": str(self.path), "tokens": len(tokens),
                                                          "role": self.role.name.lower()})


def _warn_if_shared(path: Path) -> None:
    # A token file other local users can read defeats the point of not passing the token as a flag.
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning("management_token_file_permissions",
                    extra={"path": str(path), "mode": oct(mode & 0o777), "hint": "chmod 600"})


class TokenAuthenticator:
    """Decides which role, if any, a presented token grants."""

    def __init__(self, config: ManagementAuthConfig) -> None:
        self._files = [_TokenFile(p, Role.READ) for p in config.read_files]
        self._files += [_TokenFile(p, Role.ADMIN) for p in config.admin_files]
        self._env: list[tuple[str, Role]] = []
        for role, values, name in ((Role.READ, config.read_env, "XDS_MANAGEMENT_TOKEN"),
                                   (Role.ADMIN, config.admin_env, "XDS_MANAGEMENT_ADMIN_TOKEN")):
            for value in values:
                token = check_token(value, where=name)
                register_secret(token)
                self._env.append((token, role))

    def role_of(self, presented: str) -> Role | None:
        """The highest role `presented` grants, or None. Compares against every token, whatever matches."""
        for token_file in self._files:
            token_file.refresh()
        candidates = [(t, f.role) for f in self._files for t in f.tokens] + self._env
        given = presented.encode()
        best: Role | None = None
        for token, role in candidates:
            if hmac.compare_digest(given, token.encode()) and (best is None or role > best):
                best = role
        return best


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` metadata entry, or None."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def _peer_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    try:
        return str(context.peer())
    except Exception:  # a peer is for the log only; never fail a request for it
        return ""


def _deny_handler(kind: grpc.RpcMethodHandler[Any, Any], code: grpc.StatusCode, details: str,
                  on_deny: Callable[[str], None], reason: str, method: str
                  ) -> grpc.RpcMethodHandler[Any, Any]:
    async def deny(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        on_deny(reason)
        log.warning("management_denied", extra={"method": method, "reason": reason,
                                                "peer": _peer_of(context)})
        await context.abort(code, details)

    async def deny_stream(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await deny(request, context)
        yield  # pragma: no cover - abort raises first; the yield makes this an async generator

    # The same kind of handler as the method's own, so gRPC reads the request the way the client sends it.
    if kind.request_streaming and kind.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny_stream)
    if kind.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if kind.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny_stream)
    return grpc.unary_unary_rpc_method_handler(deny)


# gRPC health says SERVING or NOT_SERVING and nothing else; probes (kubelet, load balancers) cannot send a
# token, so it answers without one (issue 11 item 3; docs/operations.md "Readiness and liveness").
UNAUTHENTICATED_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through when its bearer token grants the method's role; else UNAUTHENTICATED (no or an
    unknown token) or PERMISSION_DENIED (a read token on an admin method), counted by `on_deny(reason)`."""

    def __init__(self, authenticator: TokenAuthenticator, *, on_deny: Callable[[str], None]) -> None:
        self._authenticator = authenticator
        self._on_deny = on_deny

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails],
                               Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED, nothing to guard
            return handler
        method = handler_call_details.method
        if method in UNAUTHENTICATED_METHODS:
            return handler
        needed = METHOD_ROLES.get(method, Role.ADMIN)
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is None:
            return _deny_handler(handler, grpc.StatusCode.UNAUTHENTICATED,
                                 "the management API needs 'authorization: Bearer <token>' metadata "
                                 "(xds status: --token-file PATH or XDS_MANAGEMENT_TOKEN)",
                                 self._on_deny, DENY_MISSING, method)
        role = self._authenticator.role_of(token)
        if role is None:
            return _deny_handler(handler, grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token",
                                 self._on_deny, DENY_INVALID, method)
        if role < needed:
            return _deny_handler(handler, grpc.StatusCode.PERMISSION_DENIED,
                                 f"{method} needs the {needed.name.lower()} role",
                                 self._on_deny, DENY_ROLE, method)
        return handler

