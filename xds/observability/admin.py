"""AdminServer: the HTTP side door for Prometheus and the orchestrator's probes.

    GET /metrics   Prometheus text format
    GET /ready     200 "ready" once every source has synced and a snapshot is published, else 503
    GET /healthz   200 while the process serves HTTP at all (liveness)
    GET /status    JSON of what the `status` callable returns (dataclasses included), when one is given
    GET /          the read-only web console, when one is given (xds/console/web.py, docs/console.md)

Readiness and liveness are separate on purpose: a control plane waiting for a slow registry is alive
(restarting it would not help) but must not receive Envoys yet (docs/protocol.md R26).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable

from aiohttp import web

from xds.addresses import is_loopback_host
from xds.console.web import ConsoleRoutes
from xds.observability.metrics import Metrics
from xds.settings import split_address

log = logging.getLogger("xds.admin")

NOT_READY_REASON = "not ready: waiting for every source to sync once and a snapshot to be published"


def _jsonable(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class AdminServer:
    """Serves the endpoints above on `address` ("host:port"; port 0 picks a free port, see `.port`)."""

    def __init__(self, address: str, *, metrics: Metrics, ready: Callable[[], bool],
                 status: Callable[[], object] | None = None, console: ConsoleRoutes | None = None) -> None:
        self._host, self._requested_port = split_address(address)
        self._metrics = metrics
        self._ready = ready
        self._status = status
        self._console = console
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port; only known after start()."""
        if self._port is None:
            raise RuntimeError("AdminServer.port is known only after start()")
        return self._port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/ready", self._handle_ready)
        app.router.add_get("/healthz", self._handle_healthz)
        if self._status is not None:
            app.router.add_get("/status", self._handle_status)
        if self._console is not None:
            self._console.add_to(app)
        # No access log: Prometheus and kubelet probes hit these every few seconds, which would drown the
        # control plane's own events.
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        sockname = runner.addresses[0]
        self._port = int(sockname[1])
        log.info("admin_listening", extra={"address": f"{self._host}:{self._port}"})
        if not is_loopback_host(self._host):
            # /status names every proxy and source error, /metrics the node groups; neither is authenticated
            # (docs/security.md, "The management API and secrets").
            log.warning("admin_not_loopback", extra={
                "address": f"{self._host}:{self._port}",
                "hint": "the admin HTTP server has no authentication; keep it on 127.0.0.1 or firewall it"})

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": Metrics.CONTENT_TYPE})

    async def _handle_ready(self, request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text=NOT_READY_REASON + "\n")

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _handle_status(self, request: web.Request) -> web.Response:
        assert self._status is not None  # the route exists only when a status callable was given
        body = json.dumps(self._status(), default=_jsonable, sort_keys=True)
        return web.Response(text=body, content_type="application/json")
