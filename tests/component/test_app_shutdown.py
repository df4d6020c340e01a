"""The app's graceful shutdown in-process (issue 14 item 6; docs/operations.md "Rolling restarts and
shutdown"): on cancellation the xDS port's health turns NOT_SERVING before anything stops, an open ADS
stream ends with status UNAVAILABLE and a message saying why (not CANCELLED), and nothing is logged at
ERROR."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xds.app import App
from xds.load_settings import LoadSettings
from xds.settings import Settings
from xds.typeurls import CLUSTER

from .ads_client import AdsClient, resource_names
from .test_app import GOOD

ADS = "envoy.service.discovery.v3.AggregatedDiscoveryService"


async def test_cancel_reports_not_serving_then_ends_streams_with_ok(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(GOOD)
    app = App(Settings(config_files=(catalog,), xds_address="127.0.0.1:0", management_address="127.0.0.1:0",
                       admin_address="127.0.0.1:0", load=LoadSettings(report_address="127.0.0.1:0")))
    task = asyncio.create_task(app.run())
    await asyncio.wait_for(app.started.wait(), 10)
    caplog.set_level(logging.INFO)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.xds_port}") as channel:
        client = AdsClient(channel, cluster="edge")
        client.send(CLUSTER)
        assert resource_names(await client.recv(timeout_s=10)) == ["web"]
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=ADS))
        first = await asyncio.wait_for(watch.read(), 5)
        assert first.status == health_pb2.HealthCheckResponse.SERVING

        task.cancel()
        second = await asyncio.wait_for(watch.read(), 5)
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await client.status(timeout_s=5) == grpc.StatusCode.UNAVAILABLE
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
        watch.cancel()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    events = [r.getMessage() for r in caplog.records]
    assert "shutting_down" in events and events[-1] == "stopped"
