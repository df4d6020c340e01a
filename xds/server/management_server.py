"""The management API's own gRPC listener, apart from the xDS port (issue 9).

The xDS port serves Envoys, which may sit anywhere; the management API shows every node group's full
configuration, so it listens separately (default 127.0.0.1:18001) and either authenticates its callers or
stays on loopback. The rule (docs/security.md, "The management API and secrets"):

- with bearer tokens configured, any address is allowed;
- with `client_authenticated=True` (server credentials that require a client certificate: the seam for mTLS,
  issue 9 item 1), any address is allowed;
- with neither, only a loopback address: anything else is refused before binding, with an error saying how
  to fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc

from xds.addresses import host_of, is_loopback_host
from xds.server.management import ManagementService
from xds.server.management_auth import BearerAuthInterceptor, ManagementAuthConfig, TokenAuthenticator


class ManagementExposureError(ValueError):
    """The management API would listen beyond loopback with nothing to authenticate its callers."""


def check_exposure(address: str, *, auth: ManagementAuthConfig | None, client_authenticated: bool = False
                   ) -> None:
    """Raise ManagementExposureError when `address` is not loopback and nothing authenticates callers."""
    if is_loopback_host(host_of(address)) or client_authenticated or (auth is not None and auth.configured):
        return
    raise ManagementExposureError(
        f"--management-address {address} is not a loopback address and no management token is configured: "
        f"anyone who can reach it could read every node group's configuration. Give a token file "
        "(--management-token-file PATH or XDS_MANAGEMENT_TOKEN_FILE) or listen on 127.0.0.1")


def build_management_server(
    service: ManagementService, *, address: str, auth: ManagementAuthConfig | None,
    on_deny: Callable[[str], None], credentials: grpc.ServerCredentials | None = None,
    client_authenticated: bool = False, options: list[tuple[str, int]] | None = None,
    extra: Sequence[Callable[[grpc.aio.Server], None]] = (),
) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server with only the management service, bound to `address`; returns it and the port.

    `credentials`, when given, makes the port TLS (grpc.ssl_server_credentials); pass
    `client_authenticated=True` when they require and verify a client certificate. Token files are read
    here, so a missing or malformed one fails startup with an error naming the file.
    """
    check_exposure(address, auth=auth, client_authenticated=client_authenticated)
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if auth is not None and auth.configured:
        interceptors.append(BearerAuthInterceptor(TokenAuthenticator(auth), on_deny=on_deny))
    server = grpc.aio.server(interceptors=interceptors, options=options or [])
    service.add_to_server(server)
    for add in extra:  # health (issue 11 item 3)
        add(server)
    port = (server.add_secure_port(address, credentials) if credentials is not None
            else server.add_insecure_port(address))
    if port == 0:
        raise OSError(f"could not bind the management API to {address}")
    return server, port
