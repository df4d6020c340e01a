"""What every source test needs around a `Source.run(sink)`: a sink that records what the source publishes
and reports, a poll on a condition (never a sleep as synchronization), the source's task for the length of a
`with`, the hosts of one service in a catalog, a fake registry's server on loopback, and a self-signed
certificate for its TLS.

One module for the Consul, Kubernetes, Eureka, DNS, file and registry-engine tests (issue 13 clean-up: the
same sink had been written once per test file).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from xds.model.service import Catalog, Health
from xds.sources.base import SourceUpdate


class RecordingSink:
    """A `SourceSink` that keeps every update and every reported error, in order."""

    def __init__(self) -> None:
        self.updates: list[SourceUpdate] = []
        self.errors: list[str] = []

    def publish(self, update: SourceUpdate) -> None:
        self.updates.append(update)

    def report_error(self, source: str, message: str) -> None:
        self.errors.append(message)

    @property
    def catalog(self) -> Catalog:
        """The last published catalog (the test has waited for a publish before it reads this)."""
        return self.updates[-1].catalog

    def endpoints(self, service: str) -> dict[int, int]:
        """Port -> weight of `service` in the last publish ({} before any, or when it is absent)."""
        catalog = self.updates[-1].catalog if self.updates else Catalog()
        found = catalog.get(service)
        return {} if found is None else {e.port: e.weight for e in found.endpoints}


async def until(condition: Callable[[], bool], *, what: str = "condition", timeout_s: float = 5.0,
                interval_s: float = 0.01) -> None:
    """Poll `condition` on the running loop until it holds; fail naming `what` after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(interval_s)


def hosts(catalog: Catalog, service: str) -> dict[tuple[str, int], Health]:
    """(address, port) -> health of every endpoint of `service` ({} when the catalog lacks it)."""
    found = catalog.get(service)
    return {} if found is None else {e.address: e.health for e in found.endpoints}


@contextlib.asynccontextmanager
async def running_task(coro: Coroutine[Any, Any, None], *,
                       name: str = "source-under-test") -> AsyncIterator[asyncio.Task[None]]:
    """Run `coro` (a source's or engine's `run(sink)`) as a task for the `with` block, then cancel it."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def self_signed(tmp_path: Path, name: str, *, san: str) -> tuple[Path, Path]:
    """(certificate, key) files of a one-day self-signed P-256 certificate for CN `name` with the
    subjectAltName `san` (e.g. "IP:127.0.0.1", "DNS:consul.test"), written under `tmp_path`."""
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30)
    return cert, key


async def serve_on_loopback(app: web.Application, port: int = 0, *,
                            ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    """Serve `app` on 127.0.0.1:`port` (0: any free port) and return (runner, the port bound). SO_REUSEADDR
    so a fake that restarts gets its old port back at once (a registry restart on the same address)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    return runner, int(sock.getsockname()[1])
