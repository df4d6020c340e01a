"""A load-reporting agent for tests and the demo: calls the control plane's report API (issue 10,
protos/xds/load/v1/load.proto) for several endpoints, from a thread, as an agent on each host would.

`set(endpoint, cpu=..., memory=...)` changes what is reported for an endpoint from the next round on,
`forget(endpoint)` stops reporting it (for TTL tests), and `jitter` adds uniform noise of that amplitude to
every value (clamped to [0, 1]) from a seeded generator, so a noisy run is reproducible. `report()` sends one
report synchronously and returns the server's reply (accepted/rejected and why).
"""

from __future__ import annotations

import random
import threading

import grpc

from harness.processes import StartStop
from xds.load.v1 import load_pb2, load_pb2_grpc

_TIMEOUT_S = 2.0


class LoadReporter(StartStop):
    def __init__(self, report_address: str, *, interval_s: float = 0.2, jitter: float = 0.0,
                 seed: int = 10) -> None:
        self._address = report_address
        self._interval_s = interval_s
        self._jitter = jitter
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._loads: dict[str, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._channel = grpc.insecure_channel(report_address)
        self._stub = load_pb2_grpc.LoadReportingStub(self._channel)
        self.sent = 0
        self.errors = 0

    def set(self, endpoint: str, *, cpu: float, memory: float) -> None:
        with self._lock:
            self._loads[endpoint] = (cpu, memory)

    def set_jitter(self, jitter: float) -> None:
        """Noise of this amplitude on every value from the next round on."""
        with self._lock:
            self._jitter = jitter

    def forget(self, endpoint: str) -> None:
        with self._lock:
            self._loads.pop(endpoint, None)

    def report(self, endpoint: str, cpu: float, memory: float) -> load_pb2.ReportReply:
        reply: load_pb2.ReportReply = self._stub.Report(
            load_pb2.LoadReport(address=endpoint, cpu_utilization=cpu, memory_utilization=memory),
            timeout=_TIMEOUT_S)
        return reply

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="load-reporter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._channel.close()

    def _noisy(self, value: float, jitter: float) -> float:
        if not jitter:
            return value
        return min(1.0, max(0.0, value + self._random.uniform(-jitter, jitter)))

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                loads, jitter = dict(self._loads), self._jitter
            for endpoint, (cpu, memory) in sorted(loads.items()):
                try:
                    self.report(endpoint, self._noisy(cpu, jitter), self._noisy(memory, jitter))
                    self.sent += 1
                except grpc.RpcError:
                    self.errors += 1  # the server restarting, say: the next round tries again
