"""A real Jaeger for tests, on loopback, all storage in memory (issue 14 item 2; docs/tracing.md).

Jaeger v2 is an OpenTelemetry collector with Jaeger's storage and query extensions, built once from the Go
module proxy into the testbin cache (`harness.testbin.ensure_binary("jaeger")`, tools/testbin/jaeger). It is
started with a config of our own instead of its built-in all-in-one one, because that one binds fixed ports
(4317, 16686, 8888, ...) that parallel tests would fight over: here every endpoint is a free loopback port,
the collector's own metrics are off, and traces live in the in-memory store only.

- `otlp_grpc_port`: OTLP/gRPC receiver (what Envoy's envoy.tracers.opentelemetry exports to);
- `zipkin_port`: Zipkin v2 JSON receiver (envoy.tracers.zipkin posts to /api/v2/spans);
- `query_port`: the query service's HTTP API; `traces(service)` reads GET /api/traces?service=..., the
  API Jaeger's UI uses, whose answer groups spans by trace id with each span's process (service) and tags.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.ports import LOOPBACK, free_ports, retry_port_race
from harness.processes import ManagedProcess, ProcessOwner, StartStop, wait_until
from harness.testbin import ensure_binary

_READY_TIMEOUT_S = 30.0
_HTTP_TIMEOUT_S = 5.0
_PORT_ATTEMPTS = 3
_MEMORY_STORE = "memstore"


@dataclass(frozen=True)
class Span:
    """One span of a trace as the query API reports it."""

    trace_id: str
    span_id: str
    operation: str
    service: str
    tags: dict[str, str]
    parent_span_ids: tuple[str, ...]


def _config(*, otlp: int, zipkin: int, query: int, query_grpc: int, health: int) -> dict[str, Any]:
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {"traces": {"receivers": ["otlp", "zipkin"], "processors": ["batch"],
                                     "exporters": ["jaeger_storage_exporter"]}},
            # No self-metrics listener (its default is the fixed port 8888), no collector self-traces.
            "telemetry": {"metrics": {"level": "none"}, "traces": {"level": "none"},
                          "logs": {"level": "info"}},
        },
        "extensions": {
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"{LOOPBACK}:{health}"}},
            "jaeger_storage": {"backends": {_MEMORY_STORE: {"memory": {"max_traces": 10000}}}},
            "jaeger_query": {"storage": {"traces": _MEMORY_STORE},
                             "http": {"endpoint": f"{LOOPBACK}:{query}"},
                             "grpc": {"endpoint": f"{LOOPBACK}:{query_grpc}"}},
        },
        "receivers": {
            "otlp": {"protocols": {"grpc": {"endpoint": f"{LOOPBACK}:{otlp}"}}},
            "zipkin": {"endpoint": f"{LOOPBACK}:{zipkin}"},
        },
        # A short batch so a span is queryable well within a test's bound.
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": _MEMORY_STORE}},
    }


class Jaeger(ProcessOwner, StartStop):
    def __init__(self, workdir: Path, *, name: str = "jaeger") -> None:
        self.workdir = workdir
        self.name = name
        self._process: ManagedProcess | None = None
        self.otlp_grpc_port = self.zipkin_port = self.query_port = self.health_port = 0

    def start(self, *, timeout_s: float = _READY_TIMEOUT_S) -> None:
        self._refuse_if_running()
        binary = ensure_binary("jaeger")

        def attempt() -> None:
            ports = free_ports(5)
            self.otlp_grpc_port, self.zipkin_port, self.query_port, self.health_port, query_grpc = ports
            config_path = self.workdir / f"{self.name}.yaml"
            config_path.write_text(yaml.safe_dump(_config(otlp=self.otlp_grpc_port, zipkin=self.zipkin_port,
                                                          query=self.query_port, query_grpc=query_grpc,
                                                          health=self.health_port)))

            def wait_ready() -> None:
                wait_until(self._ready, timeout_s=timeout_s, ignore=(OSError,),
                           message=lambda: f"Jaeger never became ready:\n{self.tail()}")

            # Jaeger's query service traces itself with the OpenTelemetry SDK, by default to the fixed port
            # 4317, which may be another test's collector: it samples nothing and would export to its own
            # receiver.
            self_tracing = {"OTEL_TRACES_SAMPLER": "always_off",
                            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LOOPBACK}:{self.otlp_grpc_port}"}
            self._spawn([str(binary), "--config", str(config_path)], port_error="Jaeger lost a port race",
                        wait_ready=wait_ready, env=self_tracing)

        retry_port_race(attempt, attempts=_PORT_ATTEMPTS)

    def _ready(self) -> bool:
        self._require_process().check_alive()
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.health_port}/status",
                                    timeout=_HTTP_TIMEOUT_S) as response:
            health_ok = response.status == 200
        # The query API answers too (it starts after the health extension).
        return health_ok and self._get("/api/services") is not None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self._process is None:
            return None
        return self._process.stop(timeout_s)

    @property
    def query_url(self) -> str:
        return f"http://{LOOPBACK}:{self.query_port}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.query_url + path, timeout=_HTTP_TIMEOUT_S) as response:
            return json.loads(response.read())

    def services(self) -> list[str]:
        return sorted(self._get("/api/services").get("data") or [])

    def traces(self, service: str, *, limit: int = 100) -> dict[str, list[Span]]:
        """The traces holding a span of `service`, by trace id, each with ALL its spans (any service)."""
        query = urllib.parse.urlencode({"service": service, "limit": limit, "lookback": "1h"})
        try:
            answer = self._get(f"/api/traces?{query}")
        except urllib.error.HTTPError as e:
            if e.code == 404:  # no such service (yet)
                return {}
            raise
        out: dict[str, list[Span]] = {}
        for trace in answer.get("data") or []:
            processes = trace.get("processes", {})
            spans = []
            for span in trace.get("spans", []):
                process = processes.get(span.get("processID"), {})
                spans.append(Span(
                    trace_id=span["traceID"], span_id=span["spanID"], operation=span.get("operationName", ""),
                    service=process.get("serviceName", ""),
                    tags={t["key"]: str(t.get("value")) for t in span.get("tags", [])},
                    parent_span_ids=tuple(r["spanID"] for r in span.get("references", [])
                                          if r.get("refType") == "CHILD_OF")))
            out[trace["traceID"]] = spans
        return out
