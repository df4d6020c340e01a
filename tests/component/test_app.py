"""The whole app in-process: file source -> snapshot -> ADS, with health, /ready and the F2 gate."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xds.app import App
from xds.load_settings import LoadSettings
from xds.settings import Settings
from xds.status_view import fetch_proxies, format_proxy_table
from xds.typeurls import CLUSTER

from .ads_client import AdsClient, resource_names

GOOD = """
services:
  - name: web
    endpoints: [{address: 127.0.0.1:8081}]
listeners:
  - name: ingress
    address: 127.0.0.1
    port: 10000
    routes: [{backends: [{service: web}]}]
"""


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("services: [oops\n")  # invalid from the start
    instance = App(Settings(config_files=(catalog,), xds_address="127.0.0.1:0",
                            management_address="127.0.0.1:0", admin_address="127.0.0.1:0",
                            file_poll_interval_s=0.05, load=LoadSettings(report_address="127.0.0.1:0")))
    task = asyncio.create_task(instance.run())
    await asyncio.wait_for(instance.started.wait(), 10)
    try:
        yield instance
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def health_status(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(
            service="envoy.service.discovery.v3.AggregatedDiscoveryService"), timeout=5)
        return int(response.status)


async def ready_code(port: int) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/ready") as r:
        return r.status


async def test_nothing_is_served_until_the_source_loads_then_everything_is(app: App, tmp_path: Path) -> None:
    assert app.xds_port and app.admin_port
    await asyncio.sleep(0.3)  # the source has read the bad file by now
    assert "catalog.yaml:2:1: invalid YAML" in app.source_errors[f"file:{tmp_path / 'catalog.yaml'}"]
    assert await health_status(app.xds_port) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await ready_code(app.admin_port) == 503
    (source,) = (await fetch_proxies(f"127.0.0.1:{app.management_port}")).sources
    assert source.stale and not source.synced and "invalid YAML" in source.error

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.xds_port}") as channel:
        client = AdsClient(channel, cluster="edge")
        client.send(CLUSTER)
        await client.expect_silence()  # held open: never an empty CDS (F2)
        (tmp_path / "catalog.yaml").write_text(GOOD)
        cds = await client.recv(timeout_s=10)
        assert resource_names(cds) == ["web"]
        client.close()

    assert await health_status(app.xds_port) == health_pb2.HealthCheckResponse.SERVING
    assert await ready_code(app.admin_port) == 200
    assert app.source_errors == {}
    listing = await fetch_proxies(f"127.0.0.1:{app.management_port}")
    (source,) = listing.sources
    assert source.synced and not source.stale and source.HasField("last_sync")
    assert "SYNCED" in format_proxy_table(listing)
