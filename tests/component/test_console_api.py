"""The web console's HTTP side (xds/console/, docs/console.md, issue 14 item 1): the whole app in-process,
its admin port queried over real HTTP, an ADS client on its xDS port keeping a node group live."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from xds import typeurls
from xds.app import App
from xds.console.view import ConsoleData, state
from xds.load_settings import LoadSettings
from xds.secrets import REDACTED
from xds.server.callbacks import StreamInfo
from xds.server.management_auth import ManagementAuthConfig
from xds.server.registry import ProxyRegistry
from xds.settings import Settings
from xds.typeurls import CLUSTER

from .ads_client import AdsClient

CATALOG = """
services:
  - name: web
    endpoints: [{address: 127.0.0.1:8081}]
  - name: api
    endpoints: [{address: 127.0.0.1:8082}]
listeners:
  - name: ingress
    address: 127.0.0.1
    port: 10000
    routes: [{name: split, backends: [{service: web, weight: %d}, {service: api, weight: %d}]}]
"""


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG % (90, 10))
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


async def get(port: int, path: str) -> tuple[int, aiohttp.typedefs.LooseHeaders, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
            session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, dict(response.headers), await response.text()


async def get_json(port: int, path: str) -> Any:
    status, _, body = await get(port, path)
    assert status == 200, body
    return json.loads(body)


async def poll(port: int, path: str, condition: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        document = await get_json(port, path)
        if condition(document):
            return document
        assert time.monotonic() < deadline, f"{path} never met the condition; last: {document}"
        await asyncio.sleep(0.05)


async def test_page_state_resources_and_history(app: App, tmp_path: Path) -> None:
    assert app.admin_port and app.xds_port
    status, headers, body = await get(app.admin_port, "/")
    assert status == 200 and "<title>xds console</title>" in body
    assert "default-src 'self'" in str(headers["Content-Security-Policy"])
    for name in ("console.js", "console.css"):
        assert (await get(app.admin_port, f"/console/static/{name}"))[0] == 200
    assert (await get(app.admin_port, "/console/static/..%2Fview.py"))[0] == 404
    assert (await get(app.admin_port, "/console/api/resources"))[0] == 400
    assert (await get(app.admin_port, "/console/api/resources?group=nobody"))[0] == 404

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.xds_port}") as channel:
        client = AdsClient(channel, node_id="envoy-1", cluster="edge")
        client.send(CLUSTER)
        cds = await client.recv(timeout_s=10)
        client.ack(cds)
        doc = await poll(app.admin_port, "/console/api/state",
                         lambda d: d["proxies"] and d["proxies"][0]["types"][0]["state"] == "SYNCED")
        (proxy,) = doc["proxies"]
        assert proxy["node_id"] == "envoy-1" and proxy["group"] == "edge"
        (source,) = doc["sources"]
        assert source["state"] == "SYNCED" and source["last_sync"] and source["error"] == ""
        (group,) = [g for g in doc["groups"] if g["name"] == "edge"]
        assert group["versions"]["cds"] == cds.version_info and group["counts"]["cds"] == 2
        (route,) = group["routes"]
        assert route["route"] == "split" and route["match"] == "prefix /"
        assert {c["cluster"]: c["weight"] for c in route["split"]} == {"web": 90, "api": 10}

        browsed = await get_json(app.admin_port, "/console/api/resources?group=edge")
        names = {(r["type"], r["name"]) for r in browsed["resources"]}
        assert {("cds", "web"), ("cds", "api"), ("lds", "ingress")} <= names
        web = next(r for r in browsed["resources"] if r["name"] == "web" and r["type"] == "cds")
        assert json.loads(web["json"])["name"] == "web"

        # A weight change shows up as one change of the route, with the diff of its JSON.
        (tmp_path / "catalog.yaml").write_text(CATALOG % (50, 50))
        doc = await poll(app.admin_port, "/console/api/state",
                         lambda d: any("rds/ingress" in c["changed"] for c in d["history"]))
        change = next(c for c in doc["history"] if "rds/ingress" in c["changed"])
        assert "edge" in change["groups"] and not change["initial"]
        (diff,) = [d for d in change["diffs"] if d["name"] == "ingress"]
        assert '-         "weight": 10' in diff["diff"] and '+         "weight": 50' in diff["diff"]
        (route,) = next(g for g in doc["groups"] if g["name"] == "edge")["routes"]
        assert {c["cluster"]: c["weight"] for c in route["split"]} == {"web": 50, "api": 50}
        client.close()


def test_nack_text_is_shown_and_redacted() -> None:
    registry = ProxyRegistry()
    stream = StreamInfo(stream_id=1, node_id="envoy-1", group="edge", peer="ipv4:127.0.0.1:9", method="ads")
    registry.on_stream_open(stream)
    registry.on_response_sent(stream, type_url=typeurls.LISTENER, version="v2", nonce="2", resource_names=(),
                              size_bytes=1)
    registry.on_nack(stream, type_url=typeurls.LISTENER, version="v1", nonce="2", rejected_version="v2",
                     message="cannot bind: Address already in use; Authorization: Bearer s3cr3t-t0ken-value")
    data = ConsoleData(ready=lambda: True, proxies=registry.list, sources=tuple, groups=lambda: [],
                       snapshot=lambda g: None, group_error=lambda g: "", history=tuple, quarantined=tuple)
    doc = state(data)
    (proxy,) = doc["proxies"]  # type: ignore[misc]
    (lds,) = [t for t in proxy["types"] if t["type"] == "lds"]
    assert lds["state"] == "NACKED" and lds["nack_version"] == "v2"
    assert "Address already in use" in lds["nack_message"]
    assert "s3cr3t" not in json.dumps(doc) and REDACTED in lds["nack_message"]


async def test_the_api_wants_a_management_token_when_the_management_api_does(tmp_path: Path) -> None:
    token = "console-read-token-0123456789abcdef"
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG % (90, 10))
    instance = App(Settings(config_files=(catalog,), xds_address="127.0.0.1:0",
                            management_address="127.0.0.1:0", admin_address="127.0.0.1:0",
                            management_auth=ManagementAuthConfig(read_env=(token,)),
                            load=LoadSettings(report_address="127.0.0.1:0")))
    task = asyncio.create_task(instance.run())
    await asyncio.wait_for(instance.started.wait(), 10)
    try:
        port = instance.admin_port
        assert port
        assert (await get(port, "/"))[0] == 200  # the page itself holds no data
        for path in ("/console/api/state", "/console/api/resources?group=edge"):
            status, headers, body = await get(port, path)
            assert status == 401 and "Bearer" in str(headers["WWW-Authenticate"]) and token not in body
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            url = f"http://127.0.0.1:{port}/console/api/state"
            async with session.get(url, headers={"Authorization": "Bearer wrong-token-0123456789"}) as r:
                assert r.status == 401
            async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200 and token not in await r.text()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
