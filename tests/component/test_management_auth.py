"""The management listener's roles, in process over real gRPC on loopback (issue 9; docs/security.md, "The
management API and secrets"): read tokens may call the read-only methods, anything else needs admin."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from xds import status_view
from xds.cache.store import SnapshotStore
from xds.server.management import ManagementService
from xds.server.management_auth import ManagementAuthConfig
from xds.server.management_server import ManagementExposureError, build_management_server, check_exposure
from xds.server.registry import ProxyRegistry

# A mutating method that does not exist yet: the role model must deny it to read tokens by default.
RELOAD = "/xds.management.v1.Management/Reload"


@dataclass
class Plane:
    address: str
    read: str
    admin: str
    env_read: str
    denied: list[str] = field(default_factory=list)


async def _reload(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return b"reloaded"


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    read, admin, env_read = (secrets.token_urlsafe(24) for _ in range(3))
    (tmp_path / "read").write_text(f"{read}\n")
    (tmp_path / "admin").write_text(f"# ops\n{admin}\n")
    auth = ManagementAuthConfig(read_files=(tmp_path / "read",), admin_files=(tmp_path / "admin",),
                                read_env=(env_read,))
    denied: list[str] = []
    server, port = build_management_server(
        ManagementService(ProxyRegistry(), SnapshotStore()), address="127.0.0.1:0", auth=auth,
        on_deny=denied.append)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "xds.management.v1.Management", {"Reload": grpc.unary_unary_rpc_method_handler(_reload)})])
    await server.start()
    try:
        yield Plane(f"127.0.0.1:{port}", read, admin, env_read, denied)
    finally:
        await server.stop(None)


async def _reload_call(plane: Plane, token: str) -> bytes:
    async with grpc.aio.insecure_channel(plane.address) as channel:
        call = channel.unary_unary(RELOAD)
        result: bytes = await call(b"", timeout=5, metadata=(("authorization", f"Bearer {token}"),))
        return result


async def test_read_and_admin_tokens_both_list(plane: Plane) -> None:
    for token in (plane.read, plane.admin, plane.env_read):
        assert (await status_view.fetch_proxies(plane.address, token=token)).proxies == []
    assert plane.denied == []


async def test_a_method_not_declared_read_only_needs_the_admin_role(plane: Plane) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _reload_call(plane, plane.read)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs the admin role" in (caught.value.details() or "")
    assert await _reload_call(plane, plane.admin) == b"reloaded"
    assert plane.denied == ["insufficient_role"]


async def test_scheme_and_token_must_both_match(plane: Plane) -> None:
    for metadata in ((("authorization", f"Basic {plane.read}"),), (("authorization", plane.read),),
                     (("x-token", plane.read),)):
        async with grpc.aio.insecure_channel(plane.address) as channel:
            call = channel.unary_unary("/xds.management.v1.Management/ListProxies")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(b"", timeout=5, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert plane.denied == ["missing_token"] * 3
    with pytest.raises(status_view.ManagementQueryError, match="UNAUTHENTICATED: invalid bearer token"):
        await status_view.fetch_proxies(plane.address, token=plane.read + "x")


def test_exposure_rule() -> None:
    tokens = ManagementAuthConfig(read_env=("x" * 20,))
    for loopback in ("127.0.0.1:18001", "[::1]:18001", "localhost:18001", "127.0.0.2:1"):
        check_exposure(loopback, auth=None)
    for exposed in ("0.0.0.0:18001", "[::]:18001", "10.0.0.5:18001", "xds.internal:18001"):
        with pytest.raises(ManagementExposureError, match="not a loopback address"):
            check_exposure(exposed, auth=ManagementAuthConfig())
        check_exposure(exposed, auth=tokens)
        check_exposure(exposed, auth=None, client_authenticated=True)


def test_auth_config_repr_hides_token_values() -> None:
    config = ManagementAuthConfig(read_files=(Path("/etc/xds/read"),), read_env=("a-secret-token-value",))
    assert "a-secret-token-value" not in repr(config) and "/etc/xds/read" in repr(config)
