"""A real ORCA out-of-band server (`xds.service.orca.v3.OpenRcaService`) for Envoy's client-side weighted
round robin with `oob_reporting: true` (issue 10, proxy-side mode; docs/load-aware.md).

Envoy opens one `StreamCoreMetrics` stream per host, over HTTP/2 to the host's own address, asks for a
`report_interval`, and reads the OrcaLoadReports streamed back. This server answers such streams on its own
loopback port (which is then the endpoint's address in the catalog), sending its current load (settable at
any time with `set_load`) once at the start of each stream and then once per interval the client asked for
(at least `MIN_INTERVAL_S`, so a zero interval cannot spin). It counts the streams and the reports sent, and
keeps the intervals asked for, so a test can tell what Envoy requested.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc

from harness.orca_report import OrcaLoad
from harness.ports import LOOPBACK
from harness.processes import StartStop
from xds.data.orca.v3 import orca_load_report_pb2
from xds.service.orca.v3 import orca_pb2

STREAM_CORE_METRICS = "StreamCoreMetrics"
SERVICE = "xds.service.orca.v3.OpenRcaService"
MIN_INTERVAL_S = 0.05
_WORKERS = 8  # one thread per open stream: Envoy holds one stream per host
_STOP_GRACE_S = 0.5


class OrcaOobServer(StartStop):
    """OpenRcaService on 127.0.0.1:`port` (0 = let the OS pick; read `port` after start)."""

    def __init__(self, name: str, load: OrcaLoad, port: int = 0) -> None:
        self.name = name
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._load = load  # guarded by _lock, as every counter below
        self._changed = threading.Condition(self._lock)
        self._streams = 0
        self._reports = 0
        self._intervals: list[float] = []
        self._stopping = threading.Event()
        self._server: grpc.Server | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"ORCA OOB server {self.name} is not started")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    def set_load(self, load: OrcaLoad) -> None:
        """Report `load` from now on; open streams send it at once rather than at their next interval."""
        with self._changed:
            self._load = load
            self._changed.notify_all()

    @property
    def streams(self) -> int:
        """StreamCoreMetrics calls received so far."""
        with self._lock:
            return self._streams

    @property
    def reports(self) -> int:
        """Reports sent so far, over every stream."""
        with self._lock:
            return self._reports

    @property
    def intervals(self) -> list[float]:
        """The report intervals the clients asked for, in seconds, one per stream."""
        with self._lock:
            return list(self._intervals)

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"ORCA OOB server {self.name} is already started")
        self._stopping.clear()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=_WORKERS,
                                                        thread_name_prefix=f"orca-oob-{self.name}"))
        handler = grpc.unary_stream_rpc_method_handler(
            self._stream_core_metrics,
            request_deserializer=orca_pb2.OrcaLoadReportRequest.FromString,
            response_serializer=orca_load_report_pb2.OrcaLoadReport.SerializeToString)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {STREAM_CORE_METRICS: handler}),))
        port = self._port if self._port is not None else self._requested_port
        bound = server.add_insecure_port(f"{LOOPBACK}:{port}")
        if bound == 0:
            raise OSError(f"ORCA OOB server {self.name} could not bind {LOOPBACK}:{port}")
        server.start()
        self._server, self._port = server, bound

    def stop(self) -> None:
        """End every stream and stop answering; safe to call twice."""
        if self._server is None:
            return
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        self._server.stop(grace=_STOP_GRACE_S).wait()
        self._server = None

    def _stream_core_metrics(self, request: Any, context: grpc.ServicerContext) -> Any:
        asked = request.report_interval.ToNanoseconds() / 1e9 if request.HasField("report_interval") else 0.0
        interval = max(asked, MIN_INTERVAL_S)
        with self._lock:
            self._streams += 1
            self._intervals.append(asked)
        while context.is_active() and not self._stopping.is_set():
            with self._changed:
                load = self._load
                self._reports += 1
            yield load.proto()
            self._wait_change(load, interval)

    def _wait_change(self, sent: OrcaLoad, interval: float) -> None:
        """Block for one interval, or less when the load changes from `sent` or the server stops."""
        with self._changed:
            self._changed.wait_for(lambda: self._load is not sent or self._stopping.is_set(),
                                   timeout=interval)
