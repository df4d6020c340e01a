"""Small real HTTP/1.1 upstreams that say who they are.

Every path answers with body = the server's name and header `x-upstream: <name>`, so a client behind Envoy can
count where each request went. Each server runs aiohttp on its own event loop in a daemon thread: synchronous
demo code and async tests can both use it, and a test's event loop stalling never stalls the upstream.

`status` can be changed while running (e.g. to 503) to play an unhealthy backend for outlier detection and
retries.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator, Sequence

from aiohttp import web

from harness.ports import LOOPBACK
from harness.processes import StartStop

UPSTREAM_HEADER = "x-upstream"


class UpstreamServer(StartStop):
    def __init__(self, name: str, port: int = 0, *, status: int = 200) -> None:
        self.name = name
        self.status = status
        self._requested_port = port
        self._port: int | None = None
        self._hits = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"upstream {self.name} is not started")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    @property
    def hits(self) -> int:
        with self._lock:
            return self._hits

    def reset_hits(self) -> int:
        """Zero the counter and return what it was."""
        with self._lock:
            hits, self._hits = self._hits, 0
            return hits

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Bind and serve; returns once the port is bound. Bind errors (`OSError`) are raised here.

        Can be called again after `stop()`: the server then rebinds the port it had before.
        """
        if self._thread is not None:
            raise RuntimeError(f"upstream {self.name} is already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"upstream-{self.name}", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        # A restart comes back on the port it had, so Envoy's endpoint for it stays valid.
        port = self._port if self._port is not None else self._requested_port
        try:
            future = asyncio.run_coroutine_threadsafe(self._serve(port), loop)
            self._port = future.result(timeout=timeout_s)
        except BaseException:
            self.stop(timeout_s=timeout_s)
            raise

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Close the listener and open connections, then end the thread. Safe to call twice."""
        if self._loop is None:
            return
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            future.result(timeout=timeout_s)
            self._runner = None
        self._shutdown_loop(timeout_s=timeout_s)

    async def _serve(self, port: int) -> int:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown timeout: Envoy holds pooled keep-alive connections open, and stop() must not wait
        # aiohttp's default 60 s for them.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        # Binding the socket ourselves gives the chosen port without reaching into aiohttp's internals.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # As asyncio does for its own listeners: a restart on a fixed port must not trip over TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LOOPBACK, port))
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            raise
        return int(sock.getsockname()[1])

    async def _handle(self, request: web.Request) -> web.Response:
        with self._lock:
            self._hits += 1
        return web.Response(status=self.status, text=self.name, headers={UPSTREAM_HEADER: self.name})

    def _shutdown_loop(self, *, timeout_s: float) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=timeout_s)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None


class UpstreamPool(StartStop):
    """Several named upstreams started and stopped together."""

    def __init__(self, names: Sequence[str]) -> None:
        if len(set(names)) != len(names):
            raise ValueError(f"upstream names must be unique: {list(names)}")
        self.servers = [UpstreamServer(name) for name in names]

    def start(self, *, timeout_s: float = 10.0) -> None:
        try:
            for server in self.servers:
                server.start(timeout_s=timeout_s)
        except BaseException:
            self.stop(timeout_s=timeout_s)
            raise

    def stop(self, *, timeout_s: float = 10.0) -> None:
        for server in self.servers:
            server.stop(timeout_s=timeout_s)

    def __getitem__(self, name: str) -> UpstreamServer:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    def __iter__(self) -> Iterator[UpstreamServer]:
        return iter(self.servers)

    def __len__(self) -> int:
        return len(self.servers)

    def hits(self) -> dict[str, int]:
        return {server.name: server.hits for server in self.servers}

    def reset_hits(self) -> dict[str, int]:
        return {server.name: server.reset_hits() for server in self.servers}

