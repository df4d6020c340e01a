"""Every registry source's SourceStatus (issue 13 section 1) reaches the admin /status JSON, /metrics and
`xds status` (the management API's ListProxies, formatted by status_view): a real App with a ConsulSource
against the scripted fake Consul of test_consul_fake.py, queried over HTTP and gRPC on loopback, before and
during an outage of that Consul."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.component.test_consul_fake import FakeConsul, config, instance
from xds import status_view
from xds.app import App
from xds.load_settings import LoadSettings
from xds.settings import Settings

TOKEN = "s3cr3t-consul-token-for-status"


@pytest.fixture
async def fake() -> AsyncIterator[FakeConsul]:
    consul = FakeConsul()
    consul.set_service("web", [instance("web-1", "10.0.0.1", 8080)])
    await consul.start()
    yield consul
    await consul.down()


@pytest.fixture
async def app(fake: FakeConsul) -> AsyncIterator[App]:
    instance_ = App(Settings(consul=config(fake, token=TOKEN), xds_address="127.0.0.1:0",
                             management_address="127.0.0.1:0", admin_address="127.0.0.1:0",
                             load=LoadSettings(report_address="127.0.0.1:0")))
    task = asyncio.create_task(instance_.run())
    await asyncio.wait_for(instance_.started.wait(), 10)
    try:
        yield instance_
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def fetch(port: int, path: str) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
            session.get(f"http://127.0.0.1:{port}{path}") as response:
        assert response.status == 200, path
        return await response.text()


async def registry_status(app: App) -> dict[str, object]:
    assert app.admin_port is not None
    body = json.loads(await fetch(app.admin_port, "/status"))
    entry = body["sources"][f"consul:{app.settings.consul.address}"]  # type: ignore[union-attr]
    assert isinstance(entry, dict)
    registry = entry["registry"]
    assert isinstance(registry, dict)
    return registry


async def source_metrics(app: App) -> dict[str, float]:
    assert app.admin_port is not None
    text = await fetch(app.admin_port, "/metrics")
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("xds_source_") and s.labels.get("kind") == "consul"}


async def eventually(app: App, predicate: str, *, timeout_s: float = 10.0) -> dict[str, object]:
    """Poll /status until the registry entry satisfies `predicate` (a key that must be truthy or "calm")."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        status = await registry_status(app)
        ok = (status["synced"] and status["failing_watches"] == 0) if predicate == "calm" else \
            bool(status[predicate])
        if ok:
            return status
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}: {status}")
        await asyncio.sleep(0.05)


async def test_consul_status_reaches_status_page_and_metrics_then_shows_the_outage(
        app: App, fake: FakeConsul) -> None:
    status = await eventually(app, "calm")
    assert status["kind"] == "consul"
    assert status["outage_s"] == 0
    assert status["seconds_since_answer"] is not None
    details = status["details"]
    assert isinstance(details, dict) and details["watched_services"] == 1
    metrics = await source_metrics(app)
    assert metrics["xds_source_synced"] == 1.0
    assert metrics["xds_source_failing_watches"] == 0.0
    assert metrics["xds_source_outage_seconds"] == 0.0

    assert app.management_port is not None
    proxies = await status_view.fetch_proxies(f"127.0.0.1:{app.management_port}")
    registry = next(s.registry for s in proxies.sources if s.HasField("registry"))
    assert (registry.kind, registry.failing_watches, registry.outage_seconds) == ("consul", 0, 0.0)
    table = status_view.format_proxy_table(proxies)
    assert "REGISTRY" in table and "consul" in table

    await fake.down()
    status = await eventually(app, "failing_watches")
    assert status["synced"] is True  # the last state keeps serving (docs/protocol.md R36)
    assert isinstance(status["last_error"], str) and status["last_error"]
    assert TOKEN not in json.dumps(status)
    metrics = await source_metrics(app)
    assert metrics["xds_source_failing_watches"] >= 1.0
    assert metrics["xds_source_outage_seconds"] > 0.0
    proxies = await status_view.fetch_proxies(f"127.0.0.1:{app.management_port}")
    registry = next(s.registry for s in proxies.sources if s.HasField("registry"))
    assert registry.failing_watches >= 1 and registry.outage_seconds > 0.0

    await fake.up()
    await eventually(app, "calm")
    assert (await source_metrics(app))["xds_source_failing_watches"] == 0.0
