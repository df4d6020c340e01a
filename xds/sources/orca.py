"""ORCA out-of-band load reports: the control plane subscribes to the endpoints of load-aware services
(issue 10, report path (a); docs/load-aware.md).

For each endpoint of a service with `load_balancer: {weights: load_aware, orca_port: N}`, one server-streaming
call `xds.service.orca.v3.OpenRcaService/StreamCoreMetrics` to host:N (or the port in the endpoint's metadata
`orca_port`), asking for a report every `report_interval_s`. Each OrcaLoadReport's cpu_utilization and
mem_utilization go through the same checks as the report API's (a value above 1, which ORCA allows for CPU
past a soft limit, is refused and counted like any other).

xds-protos ships the messages but no gRPC stubs, so the call is made by its method path with the messages'
own serializers. A stream that fails or ends is reopened after a full-jitter backoff (sources/backoff.py),
so an endpoint that is down costs a connection attempt every few seconds at most. The number of streams is
capped (`max_streams`): an endpoint beyond the cap gets none, and the cap is logged once per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import grpc
from google.protobuf import duration_pb2

from xds.data.orca.v3 import orca_load_report_pb2
from xds.service.orca.v3 import orca_pb2
from xds.sources.backoff import Backoff

log = logging.getLogger("xds.sources.orca")

METHOD = "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics"
DEFAULT_REPORT_INTERVAL_S = 1.0
DEFAULT_MAX_STREAMS = 1000
# A stream that delivered a report is healthy: the next failure starts the backoff from the beginning.
_BACKOFF_INITIAL_S = 0.5
_BACKOFF_MAX_S = 10.0
_MAX_MESSAGE_BYTES = 64 * 1024  # an OrcaLoadReport with a few named metrics is well under 1 KiB

# (address, cpu, memory) -> None when taken, else the reason it was refused.
Submit = Callable[[str, float, float], "str | None"]
# (endpoint address as reports name it, ORCA host, ORCA port)
OrcaTarget = tuple[str, str, int]


def _grpc_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class OrcaSubscriber:
    """Keeps one ORCA stream per target open while the target is wanted."""

    def __init__(self, submit: Submit, *, report_interval_s: float = DEFAULT_REPORT_INTERVAL_S,
                 max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        self._submit = submit
        self._interval_s = report_interval_s
        self._max_streams = max_streams
        self._tasks: dict[OrcaTarget, asyncio.Task[None]] = {}
        self.connected: set[OrcaTarget] = set()

    def set_targets(self, targets: Iterable[OrcaTarget]) -> None:
        """Open streams to new targets and close the ones no longer wanted. Call from the event loop."""
        wanted = sorted(set(targets))
        if len(wanted) > self._max_streams:
            log.warning("orca_streams_capped",
                        extra={"wanted": len(wanted), "max_streams": self._max_streams})
            wanted = wanted[: self._max_streams]
        keep = set(wanted)
        for target in [t for t in self._tasks if t not in keep]:
            self._tasks.pop(target).cancel()
            self.connected.discard(target)
        for target in wanted:
            if target not in self._tasks:
                self._tasks[target] = asyncio.get_running_loop().create_task(
                    self._follow(target), name=f"orca:{target[0]}")

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _follow(self, target: OrcaTarget) -> None:
        address, host, port = target
        backoff = Backoff(initial_s=_BACKOFF_INITIAL_S, max_s=_BACKOFF_MAX_S)
        request = orca_pb2.OrcaLoadReportRequest(
            report_interval=duration_pb2.Duration(seconds=int(self._interval_s),
                                                  nanos=int(self._interval_s % 1 * 1e9)))
        while True:
            try:
                async with grpc.aio.insecure_channel(
                        _grpc_target(host, port),
                        options=[("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES)]) as channel:
                    call = channel.unary_stream(
                        METHOD, request_serializer=orca_pb2.OrcaLoadReportRequest.SerializeToString,
                        response_deserializer=orca_load_report_pb2.OrcaLoadReport.FromString)(request)
                    async for report in call:
                        if target not in self.connected:
                            self.connected.add(target)
                            log.info("orca_stream_open", extra={"endpoint": address, "orca_port": port})
                        backoff.reset()
                        self._submit(address, report.cpu_utilization, report.mem_utilization)
                log.info("orca_stream_ended", extra={"endpoint": address, "orca_port": port})
            except grpc.aio.AioRpcError as exc:
                log.info("orca_stream_failed", extra={"endpoint": address, "orca_port": port,
                                                      "code": exc.code().name, "details": exc.details()})
            except Exception as exc:  # never let one endpoint's odd failure end its reconnect loop
                log.warning("orca_stream_error", extra={"endpoint": address, "orca_port": port,
                                                        "error": f"{type(exc).__name__}: {exc}"})
            self.connected.discard(target)
            await asyncio.sleep(max(backoff.next_delay_s(), _BACKOFF_INITIAL_S / 2))
