"""Small real HTTP/1.1 upstreams that say who they are, and misbehave on demand.

Every path answers with body = the server's name and header `x-upstream: <name>`, so a client behind Envoy can
count where each request went. Each server runs aiohttp on its own event loop in a daemon thread: synchronous
demo code and async tests can both use it, and a test's event loop stalling never stalls the upstream.

Faults, each switchable from any thread while the server runs (issue 8's resilience tests):
  status             the status of every traffic answer (e.g. 503 to be ejected by outlier detection);
  delay_s            seconds to wait before answering (a slow backend for timeouts and circuit breakers);
  hang() / release() hold every traffic request, unanswered, until released (per-try timeouts);
  reset_connections  close the connection without answering (a crashed backend: Envoy sees a reset);
  fail_first_attempt(header)
                     answer the first request carrying each value of `header` (e.g. `x-request-id`, which
                     Envoy keeps across retries) with a failure status, and later ones normally: every
                     request fails once, so only a retry makes it succeed;
  health_status      the status of `GET /healthz` alone, so an active HTTP health check can fail while
                     traffic still succeeds, or the other way round;
  health_delay_s     seconds `GET /healthz` waits before answering (a health check that times out).
`/healthz` never sees the traffic faults and is not counted in `hits` or `in_flight`; it has its own counter.
`in_flight` and `max_in_flight` count traffic requests being handled, to check what a circuit breaker let
through.

Load reports (issue 10): `set_orca(OrcaLoad(...), fmt)` makes every traffic answer carry that load in ORCA's
`endpoint-load-metrics` header (harness/orca_report.py), for Envoy's client-side weighted round robin;
`set_orca(None)` stops it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from aiohttp import web

from harness.orca_report import ORCA_HEADER, OrcaFormat, OrcaLoad
from harness.ports import LOOPBACK
from harness.processes import StartStop

UPSTREAM_HEADER = "x-upstream"
HEALTH_PATH = "/healthz"
REQUEST_ID_HEADER = "x-request-id"
# Keys remembered by fail_first_attempt; the oldest are forgotten beyond this, so a long run stays bounded.
_MAX_ATTEMPT_KEYS = 100_000


class UpstreamServer(StartStop):
    def __init__(self, name: str, port: int = 0, *, status: int = 200) -> None:
        self.name = name
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        # Everything below is guarded by _lock: tests flip faults from their own thread while the server's
        # loop thread reads them per request.
        self._status = _check_status(status)
        self._health_status = 200
        self._health_delay_s = 0.0
        self._delay_s = 0.0
        self._reset = False
        self._first_attempt_header: str | None = None
        self._first_attempt_status = 503
        self._seen_attempts: OrderedDict[str, None] = OrderedDict()
        self._hanging = False
        self._orca_header: str | None = None
        self._hits = 0
        self._health_checks = 0
        self._in_flight = 0
        self._max_in_flight = 0
        # What held requests wait on; replaced by each hang(). An asyncio.Event binds to a loop only when
        # first awaited, so creating one in any thread is fine; it is set only on the loop (_set_released).
        self._released = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- address ---------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"upstream {self.name} is not started")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    # -- faults ----------------------------------------------------------------------------------------------

    @property
    def status(self) -> int:
        with self._lock:
            return self._status

    @status.setter
    def status(self, value: int) -> None:
        with self._lock:
            self._status = _check_status(value)

    @property
    def health_status(self) -> int:
        """The status `GET /healthz` answers with, independent of `status`."""
        with self._lock:
            return self._health_status

    @health_status.setter
    def health_status(self, value: int) -> None:
        with self._lock:
            self._health_status = _check_status(value)

    @property
    def health_delay_s(self) -> float:
        with self._lock:
            return self._health_delay_s

    @health_delay_s.setter
    def health_delay_s(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"health_delay_s must be >= 0, got {value}")
        with self._lock:
            self._health_delay_s = float(value)

    @property
    def delay_s(self) -> float:
        with self._lock:
            return self._delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"delay_s must be >= 0, got {value}")
        with self._lock:
            self._delay_s = float(value)

    @property
    def reset_connections(self) -> bool:
        """True: each traffic request gets its connection closed (with a TCP reset) instead of an answer."""
        with self._lock:
            return self._reset

    @reset_connections.setter
    def reset_connections(self, value: bool) -> None:
        with self._lock:
            self._reset = value

    def fail_first_attempt(self, header: str | None = REQUEST_ID_HEADER, *, status: int = 503) -> None:
        """Answer `status` to the first request with each value of `header`; `None` turns this off.

        A request without the header counts as a first attempt every time (it cannot be told apart from a
        new request). The memory of seen values is cleared on every call. Only this server remembers them:
        a retry succeeds here or on any server not failing first attempts itself.
        """
        with self._lock:
            self._first_attempt_header = header.lower() if header is not None else None
            self._first_attempt_status = _check_status(status)
            self._seen_attempts.clear()

    def hang(self) -> None:
        """Hold every traffic request from now on until `release()` (or `stop()`)."""
        with self._lock:
            if not self._hanging:
                self._hanging = True
                self._released = asyncio.Event()

    def release(self) -> None:
        """Let held requests (and later ones) be answered."""
        with self._lock:
            self._hanging = False
            released = self._released
        self._set_released(released)

    @property
    def hanging(self) -> bool:
        with self._lock:
            return self._hanging

    def set_orca(self, load: OrcaLoad | None, fmt: OrcaFormat = "TEXT") -> None:
        """Report `load` in the ORCA header of every traffic answer from now on; None: no header."""
        header = load.header_value(fmt) if load is not None else None
        with self._lock:
            self._orca_header = header

    # -- counters --------------------------------------------------------------------------------------------

    @property
    def hits(self) -> int:
        """Traffic requests received (not `/healthz`), including failed and held ones."""
        with self._lock:
            return self._hits

    def reset_hits(self) -> int:
        """Zero the counter and return what it was."""
        with self._lock:
            hits, self._hits = self._hits, 0
            return hits

    @property
    def health_checks(self) -> int:
        """Requests to `/healthz` received."""
        with self._lock:
            return self._health_checks

    @property
    def in_flight(self) -> int:
        """Traffic requests received and not yet answered (held, delayed, or being written)."""
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The highest `in_flight` seen since start or the last `reset_max_in_flight()`."""
        with self._lock:
            return self._max_in_flight

    def reset_max_in_flight(self) -> int:
        """Restart the maximum from the current `in_flight`; return the old maximum."""
        with self._lock:
            old, self._max_in_flight = self._max_in_flight, self._in_flight
            return old

    # -- lifecycle -------------------------------------------------------------------------------------------

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
        """Close the listener and open connections, then end the thread. Safe to call twice.

        Held requests are released first: otherwise each would hold the shutdown for its whole grace period.
        The fault settings themselves stay as they are, for a restart.
        """
        if self._loop is None:
            return
        with self._lock:
            hanging, held = self._hanging, self._released
        if hanging:
            self._set_released(held)
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            future.result(timeout=timeout_s)
            self._runner = None
        self._shutdown_loop(timeout_s=timeout_s)

    async def _serve(self, port: int) -> int:
        app = web.Application()
        app.router.add_get(HEALTH_PATH, self._handle_health)
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

    async def _handle_health(self, request: web.Request) -> web.Response:
        with self._lock:
            self._health_checks += 1
            status = self._health_status
            delay_s = self._health_delay_s
        if delay_s:
            await asyncio.sleep(delay_s)
        return web.Response(status=status, text=self.name, headers={UPSTREAM_HEADER: self.name})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._hits += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return await self._answer(request)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            if self._reset:
                _reset_connection(request)
                # aiohttp's write of this response fails on the closed transport and is dropped quietly.
                return web.Response(status=500)
            delay_s = self._delay_s
            held = self._released if self._hanging else None
            status = self._first_attempt_failure(request) or self._status
            orca = self._orca_header
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        if held is not None:
            await held.wait()
        headers = {UPSTREAM_HEADER: self.name}
        if orca is not None:
            headers[ORCA_HEADER] = orca
        return web.Response(status=status, text=self.name, headers=headers)

    def _first_attempt_failure(self, request: web.Request) -> int | None:
        """The failure status if this request is a first attempt to fail; call with _lock held."""
        header = self._first_attempt_header
        if header is None:
            return None
        key = request.headers.get(header)
        if key is None:
            return self._first_attempt_status
        if key in self._seen_attempts:
            return None
        self._seen_attempts[key] = None
        if len(self._seen_attempts) > _MAX_ATTEMPT_KEYS:
            self._seen_attempts.popitem(last=False)
        return self._first_attempt_status

    def _set_released(self, event: asyncio.Event) -> None:
        # asyncio.Event is not thread-safe: waiters live on the server loop, so set it there.
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(event.set)
        else:
            event.set()

    def _shutdown_loop(self, *, timeout_s: float) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=timeout_s)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None


def _reset_connection(request: web.Request) -> None:
    """Close the request's connection with a TCP RST rather than an orderly FIN, as a crashed process does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger on, timeout 0: close() discards unsent data and sends RST.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _check_status(status: int) -> int:
    if not 200 <= status <= 599:
        raise ValueError(f"status must be in 200..599, got {status}")
    return status


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

