"""The admin HTTP server on a real loopback port, queried over HTTP with aiohttp's client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from xds import typeurls
from xds.observability.admin import AdminServer
from xds.observability.metrics import Metrics
from xds.server.callbacks import StreamInfo
from xds.server.registry import ProxyRegistry

STREAM = StreamInfo(stream_id=4, node_id="node-a", group="g", peer="ipv4:127.0.0.1:9", method="ads")


class Readiness:
    def __init__(self) -> None:
        self.ready = False

    def __call__(self) -> bool:
        return self.ready


@pytest.fixture
async def started() -> AsyncIterator[list[AdminServer]]:
    servers: list[AdminServer] = []
    yield servers
    for server in servers:
        await server.stop()


async def start(servers: list[AdminServer], server: AdminServer) -> str:
    await server.start()
    servers.append(server)
    return f"http://127.0.0.1:{server.port}"


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
            session.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def test_metrics_endpoint_serves_prometheus_text(started: list[AdminServer]) -> None:
    metrics = Metrics()
    metrics.on_stream_open(STREAM)
    metrics.on_response_sent(STREAM, type_url=typeurls.CLUSTER, version="v1", nonce="1", resource_names=(),
                             size_bytes=42)
    base = await start(started, AdminServer("127.0.0.1:0", metrics=metrics, ready=lambda: True))

    status, content_type, body = await get(f"{base}/metrics")

    assert status == 200
    assert content_type == Metrics.CONTENT_TYPE
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(body) for s in family.samples}
    assert values[("xds_connected_streams", (("method", "ads"),))] == 1
    assert values[("xds_pushes_total", (("type", "cds"),))] == 1
    assert ("process_cpu_seconds_total", ()) in values


async def test_ready_follows_the_callable(started: list[AdminServer]) -> None:
    readiness = Readiness()
    base = await start(started, AdminServer("127.0.0.1:0", metrics=Metrics(), ready=readiness))

    status, _, body = await get(f"{base}/ready")
    assert status == 503
    assert "not ready" in body
    assert "source" in body

    readiness.ready = True
    status, _, body = await get(f"{base}/ready")
    assert (status, body.strip()) == (200, "ready")


async def test_healthz_is_200_even_when_not_ready(started: list[AdminServer]) -> None:
    base = await start(started, AdminServer("127.0.0.1:0", metrics=Metrics(), ready=lambda: False))
    status, _, _ = await get(f"{base}/healthz")
    assert status == 200


async def test_status_serves_registry_as_json(started: list[AdminServer]) -> None:
    registry = ProxyRegistry(clock=lambda: 10.0)
    registry.on_stream_open(STREAM)
    registry.on_response_sent(STREAM, type_url=typeurls.CLUSTER, version="v1", nonce="1", resource_names=(),
                              size_bytes=1)
    base = await start(started, AdminServer("127.0.0.1:0", metrics=Metrics(), ready=lambda: True,
                                            status=registry.list))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
            session.get(f"{base}/status") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        [proxy] = await response.json()
    assert proxy["node_id"] == "node-a"
    assert proxy["connected_at"] == 10.0
    assert proxy["types"][0]["short_name"] == "cds"
    assert proxy["types"][0]["version_sent"] == "v1"


async def test_status_absent_without_callable(started: list[AdminServer]) -> None:
    base = await start(started, AdminServer("127.0.0.1:0", metrics=Metrics(), ready=lambda: True))
    status, _, _ = await get(f"{base}/status")
    assert status == 404


async def test_stop_closes_the_listener() -> None:
    server = AdminServer("127.0.0.1:0", metrics=Metrics(), ready=lambda: True)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    assert (await get(f"{base}/healthz"))[0] == 200
    await server.stop()
    await server.stop()  # idempotent, so shutdown paths need not track whether it ran
    with pytest.raises(aiohttp.ClientConnectorError):
        await get(f"{base}/healthz")


def test_port_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="after start"):
        _ = AdminServer("127.0.0.1:0", metrics=Metrics(), ready=lambda: True).port


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost:http", ""])
def test_malformed_address_is_refused_at_construction(address: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        AdminServer(address, metrics=Metrics(), ready=lambda: True)
