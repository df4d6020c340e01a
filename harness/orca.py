"""A real ORCA out-of-band load report server (`xds.service.orca.v3.OpenRcaService`) for one upstream.

What a backend (or its sidecar agent) runs so that a client can subscribe to its load (issue 10): each
`StreamCoreMetrics` call gets an OrcaLoadReport at once and then one every `report_interval` the client asked
for (at least MIN_INTERVAL_S), carrying the CPU and memory utilization the test sets, until the client goes
away or the server stops. xds-protos ships the messages but no stubs, so the method is registered by name
with grpc's generic handler. It runs in a grpc server with a small thread pool, so it streams while the test
thread blocks; `streams` counts the calls opened, so a test can tell the control plane really subscribed.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc

from harness.ports import LOOPBACK
from harness.processes import StartStop
from xds.data.orca.v3 import orca_load_report_pb2
from xds.service.orca.v3 import orca_pb2

SERVICE = "xds.service.orca.v3.OpenRcaService"
METHOD = "StreamCoreMetrics"
MIN_INTERVAL_S = 0.1  # a client asking for 0 (or nothing) gets this, not a busy loop
_WORKERS = 8
_STOP_GRACE_S = 0.5


class OrcaServer(StartStop):
    """OpenRcaService on 127.0.0.1:`port` (0 = let the OS pick; read `port` after start)."""

    def __init__(self, name: str, port: int = 0, *, cpu: float = 0.0, memory: float = 0.0) -> None:
        self.name = name
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._cpu = cpu
        self._memory = memory
        self._streams = 0
        self._stopping = threading.Event()
        self._server: grpc.Server | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"ORCA server {self.name} is not started")
        return self._port

    @property
    def streams(self) -> int:
        """StreamCoreMetrics calls opened so far."""
        with self._lock:
            return self._streams

    def set_load(self, *, cpu: float, memory: float) -> None:
        """What the next report of every open stream says."""
        with self._lock:
            self._cpu, self._memory = cpu, memory

    def start(self) -> None:
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            METHOD: grpc.unary_stream_rpc_method_handler(
                self._stream, request_deserializer=orca_pb2.OrcaLoadReportRequest.FromString,
                response_serializer=orca_load_report_pb2.OrcaLoadReport.SerializeToString)})
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix=self.name))
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port(f"{LOOPBACK}:{self._requested_port}")
        if port == 0:
            raise OSError(f"ORCA server {self.name} could not bind {LOOPBACK}:{self._requested_port}")
        self._stopping.clear()
        server.start()
        self._server, self._port = server, port

    def stop(self) -> None:
        self._stopping.set()  # ends every stream's wait at once
        if self._server is not None:
            self._server.stop(_STOP_GRACE_S).wait()
            self._server = None

    def _stream(self, request: Any, context: grpc.ServicerContext
                ) -> Any:
        with self._lock:
            self._streams += 1
        interval = request.report_interval.seconds + request.report_interval.nanos / 1e9
        interval = max(interval, MIN_INTERVAL_S)
        while context.is_active() and not self._stopping.is_set():
            with self._lock:
                report = orca_load_report_pb2.OrcaLoadReport(cpu_utilization=self._cpu,
                                                             mem_utilization=self._memory)
            yield report
            self._stopping.wait(interval)
