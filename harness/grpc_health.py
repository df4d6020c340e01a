"""A real gRPC health server (`grpc.health.v1.Health`) on its own loopback port, for Envoy's gRPC checks.

It runs grpcio's own `HealthServicer` in a grpc server with a small thread pool, so it answers while the test
thread blocks. The serving status of each service name can be flipped at any time; the empty name `""` is
the server as a whole, which is what a gRPC health check without `service_name` asks about. Check calls are
counted by an interceptor, so a test can tell that Envoy really probed it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from harness.ports import LOOPBACK
from harness.processes import StartStop

CHECK_METHOD = "/grpc.health.v1.Health/Check"
_WORKERS = 4
_STOP_GRACE_S = 0.5


class GrpcHealthServer(StartStop):
    """`grpc.health.v1` on 127.0.0.1:`port` (0 = let the OS pick; read `port` after start)."""

    def __init__(self, name: str, port: int = 0, *, serving: bool = True) -> None:
        self.name = name
        self._requested_port = port
        self._port: int | None = None
        self._servicer = health.HealthServicer()
        self._statuses: dict[str, bool] = {"": serving}
        self._lock = threading.Lock()
        self._checks = 0
        self._server: grpc.Server | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"gRPC health server {self.name} is not started")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    @property
    def checks(self) -> int:
        """`Check` calls received so far."""
        with self._lock:
            return self._checks

    def set_serving(self, serving: bool, service: str = "") -> None:
        """SERVING or NOT_SERVING for `service` (`""` = the whole server); takes effect for the next Check."""
        with self._lock:
            self._statuses[service] = serving
        self._servicer.set(service, _status(serving))

    def serving(self, service: str = "") -> bool | None:
        """The status last set for `service`, or None if never set (Check then answers NOT_FOUND)."""
        with self._lock:
            return self._statuses.get(service)

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"gRPC health server {self.name} is already started")
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix=f"grpc-health-{self.name}"),
            interceptors=[_CountChecks(self._count_check)],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
        # A restart comes back on the port it had, so Envoy's health-check port for it stays valid.
        port = self._port if self._port is not None else self._requested_port
        bound = server.add_insecure_port(f"{LOOPBACK}:{port}")
        if bound == 0:
            raise OSError(f"gRPC health server {self.name} could not bind {LOOPBACK}:{port}")
        with self._lock:
            statuses = dict(self._statuses)
        for service, serving in statuses.items():
            self._servicer.set(service, _status(serving))
        server.start()
        self._server, self._port = server, bound

    def stop(self) -> None:
        """Stop answering (in-flight calls get a short grace); safe to call twice."""
        if self._server is None:
            return
        self._server.stop(grace=_STOP_GRACE_S).wait()
        self._server = None

    def _count_check(self) -> None:
        with self._lock:
            self._checks += 1


def _status(serving: bool) -> Any:
    response = health_pb2.HealthCheckResponse
    return response.SERVING if serving else response.NOT_SERVING


class _CountChecks(grpc.ServerInterceptor):
    """Calls `on_check` for every Check RPC before passing it on unchanged."""

    def __init__(self, on_check: Callable[[], None]) -> None:
        self._on_check = on_check

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if handler_call_details.method == CHECK_METHOD:
            self._on_check()
        return continuation(handler_call_details)
