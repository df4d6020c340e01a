"""EurekaSource against a scripted fake Eureka: an aiohttp server on 127.0.0.1:0 that answers `/eureka/apps`
and `/eureka/apps/delta` in Eureka's JSON (one-element lists written as objects, as Eureka's codec does),
keeps a queue of recent changes as Eureka's delta does, and lets each test break it on purpose: a refused
port, 5xx, a delta that misses a change (hashcode mismatch), a restart that comes back empty, basic auth.

The real-Eureka end-to-end tests live elsewhere; these pin down the poll loop (docs/eureka.md, docs/
protocol.md R36) quickly and deterministically.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.source_helpers import RecordingSink, hosts, running_task, self_signed, serve_on_loopback, until
from xds.model.service import Health
from xds.sources.eureka.client import EurekaConfig
from xds.sources.eureka.watcher import EurekaSource

LOOPBACK = "127.0.0.1"
PASSWORD = "s3cret-eureka-pass"


def instance(app: str, ip: str, port: int = 8080, *, status: str = "UP",
             metadata: dict[str, str] | None = None) -> dict[str, Any]:
    return {"instanceId": f"{ip}:{app.lower()}:{port}", "hostName": ip, "app": app, "ipAddr": ip,
            "status": status, "overriddenStatus": "UNKNOWN", "port": {"$": port, "@enabled": "true"},
            "securePort": {"$": 443, "@enabled": "false"},
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                               "name": "MyOwn"},
            "metadata": metadata or {"@class": "java.util.Collections$EmptyMap"}}


@dataclass(frozen=True)
class Request:
    path: str
    authorization: str | None


class FakeEureka:
    def __init__(self) -> None:
        self.registry: dict[tuple[str, str], dict[str, Any]] = {}
        self.queue: list[tuple[str, dict[str, Any]]] = []  # recent changes, as /apps/delta returns them
        self.version = 1
        self.requests: list[Request] = []
        self.fail_status: int | None = None
        self.credentials: tuple[str, str] | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/eureka"

    async def start(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_get("/eureka/apps", self._apps)
        app.router.add_get("/eureka/apps/delta", self._delta)
        self._runner, self.port = await serve_on_loopback(app, self.port, ssl_context=ssl_context)

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---------------------------------------------------------------- registry changes

    def register(self, body: dict[str, Any], *, in_delta: bool = True) -> None:
        key = (body["app"], body["instanceId"])
        action = "MODIFIED" if key in self.registry else "ADDED"
        self.registry[key] = body
        self.version += 1
        if in_delta:
            self.queue.append((action, body))

    def cancel(self, app: str, instance_id: str) -> None:
        body = self.registry.pop((app, instance_id))
        self.version += 1
        self.queue.append(("DELETED", body))

    def restart_empty(self) -> None:
        self.registry.clear()
        self.queue.clear()
        self.version = 1

    # ---------------------------------------------------------------- HTTP

    def _hashcode(self) -> str:
        counts: dict[str, int] = {}
        for body in self.registry.values():
            counts[body["status"]] = counts.get(body["status"], 0) + 1
        return "".join(f"{s}_{counts[s]}_" for s in sorted(counts))

    def _check(self, request: web.Request) -> web.Response | None:
        self.requests.append(Request(request.path, request.headers.get("Authorization")))
        if request.headers.get("Accept") != "application/json":
            return web.Response(status=406)
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="server trouble")
        if self.credentials is not None:
            expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            if request.headers.get("Authorization") != expected:
                return web.Response(status=401, text="unauthorized")
        return None

    @staticmethod
    def _applications(entries: list[dict[str, Any]], hashcode: str, version: int) -> dict[str, Any]:
        by_app: dict[str, list[dict[str, Any]]] = {}
        for body in entries:
            by_app.setdefault(body["app"], []).append(body)
        # Eureka's codec writes a one-element list as the element itself.
        apps: list[dict[str, Any]] = [{"name": name, "instance": group[0] if len(group) == 1 else group}
                                      for name, group in sorted(by_app.items())]
        return {"applications": {"versions__delta": str(version), "apps__hashcode": hashcode,
                                 "application": apps[0] if len(apps) == 1 else apps}}

    async def _apps(self, request: web.Request) -> web.Response:
        if (failure := self._check(request)) is not None:
            return failure
        return web.json_response(self._applications(list(self.registry.values()), self._hashcode(),
                                                    self.version))

    async def _delta(self, request: web.Request) -> web.Response:
        if (failure := self._check(request)) is not None:
            return failure
        entries = [dict(body, actionType=action) for action, body in self.queue]
        return web.json_response(self._applications(entries, self._hashcode(), self.version))


def config(*urls: str, **overrides: Any) -> EurekaConfig:
    settings: dict[str, Any] = {"refresh_s": 0.05, "request_timeout_s": 2.0, "debounce_s": 0.02,
                                "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "resync_grace_s": 0.0}
    settings.update(overrides)
    return EurekaConfig(urls, **settings)


@pytest.fixture
async def fake() -> AsyncIterator[FakeEureka]:
    eureka = FakeEureka()
    eureka.register(instance("WEB", "10.0.0.1", metadata={"version": "v1"}))
    eureka.register(instance("WEB", "10.0.0.2"))
    eureka.register(instance("API", "10.0.1.1", 9090))
    eureka.queue.clear()
    await eureka.start()
    yield eureka
    await eureka.down()


def running(source: EurekaSource, sink: RecordingSink) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    return running_task(source.run(sink), name="eureka-source-under-test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------ tests


async def test_full_fetch_then_deltas_publish_changes(fake: FakeEureka) -> None:
    sink = RecordingSink()
    source = EurekaSource(config(fake.url))
    async with running(source, sink):
        await until(lambda: len(sink.updates) >= 1, what="the initial publish")
        assert sink.updates[0].source == f"eureka:{fake.url}"
        assert hosts(sink.catalog, "web") == {("10.0.0.1", 8080): Health.HEALTHY,
                                              ("10.0.0.2", 8080): Health.HEALTHY}
        assert hosts(sink.catalog, "api") == {("10.0.1.1", 9090): Health.HEALTHY}
        fake.register(instance("WEB", "10.0.0.2", status="OUT_OF_SERVICE"))
        fake.register(instance("WEB", "10.0.0.3", status="STARTING"))
        fake.cancel("API", "10.0.1.1:api:9090")
        await until(lambda: hosts(sink.catalog, "web").get(("10.0.0.2", 8080)) is Health.DRAINING
                    and "api" not in sink.catalog, what="the delta")
        assert ("10.0.0.3", 8080) not in hosts(sink.catalog, "web")  # STARTING is left out
        status = source.status()
    assert status.kind == "eureka" and status.synced and status.details["server"] == fake.url
    assert status.details["full_fetches"] == 1 and status.details["hashcode_mismatches"] == 0
    paths = [r.path for r in fake.requests]
    assert paths[0] == "/eureka/apps" and paths.count("/eureka/apps") == 1 and "/eureka/apps/delta" in paths
    assert sink.errors == []


async def test_delta_hashcode_mismatch_triggers_full_fetch(fake: FakeEureka) -> None:
    sink = RecordingSink()
    source = EurekaSource(config(fake.url))
    async with running(source, sink):
        await until(lambda: len(sink.updates) >= 1, what="the initial publish")
        await until(lambda: source.status().details["delta_fetches"] >= 1, what="a delta fetch")
        # A change the delta queue does not carry (it expired from Eureka's queue): only the hashcode tells.
        fake.register(instance("WEB", "10.0.0.9"), in_delta=False)
        await until(lambda: ("10.0.0.9", 8080) in hosts(sink.catalog, "web"), what="the full re-fetch")
        details = source.status().details
    assert details["hashcode_mismatches"] == 1 and details["full_fetches"] == 2
    paths = [r.path for r in fake.requests]
    # The full fetch follows the mismatching delta at once.
    last_full = len(paths) - 1 - paths[::-1].index("/eureka/apps")
    assert paths[last_full - 1] == "/eureka/apps/delta"


async def test_failover_between_servers_with_basic_auth(fake: FakeEureka) -> None:
    fake.credentials = ("xds", PASSWORD)
    dead = f"http://{LOOPBACK}:{free_port()}/eureka"
    sink = RecordingSink()
    source = EurekaSource(config(dead, fake.url, username="xds", password=PASSWORD))
    async with running(source, sink):
        await until(lambda: len(sink.updates) >= 1, what="the publish from the second server")
        await until(lambda: source.status().details["delta_fetches"] >= 2, what="deltas")
        status = source.status()
    assert status.details["server"] == fake.url and status.failing_watches == 0
    assert hosts(sink.catalog, "web") and sink.errors == []
    expected = "Basic " + base64.b64encode(f"xds:{PASSWORD}".encode()).decode()
    assert {r.authorization for r in fake.requests} == {expected}
    # Sticks to the server that answered: only one full fetch, no flapping back to the dead one.
    assert status.details["full_fetches"] == 1


async def test_wrong_password_is_reported_without_the_password(fake: FakeEureka) -> None:
    fake.credentials = ("xds", "the-right-one")
    sink = RecordingSink()
    source = EurekaSource(config(f"http://xds:{PASSWORD}@{LOOPBACK}:{fake.port}/eureka"))
    async with running(source, sink):
        await until(lambda: bool(sink.errors), what="the error report")
        status = source.status()
    assert sink.updates == []
    assert "denied (401)" in sink.errors[0] and f"{LOOPBACK}:{fake.port}/eureka" in sink.errors[0]
    text = " ".join(sink.errors) + repr(status) + repr(source.config) + source.name
    assert PASSWORD not in text and status.last_error


async def test_outage_keeps_last_good_reports_and_recovers(fake: FakeEureka) -> None:
    sink = RecordingSink()
    source = EurekaSource(config(fake.url))
    async with running(source, sink):
        await until(lambda: len(sink.updates) >= 1, what="the initial publish")
        first = sink.catalog
        fake.fail_status = 503
        await until(lambda: bool(sink.errors), what="the outage report")
        assert "answered 503" in sink.errors[0]
        assert "serving the last state read from Eureka" in sink.errors[0]
        await until(lambda: source.status().outage_s > 0.2, what="a lasting outage")
        assert sink.catalog == first and len(sink.updates) == 1  # nothing published while down
        fake.fail_status = None
        await until(lambda: len(sink.updates) == 2, what="the recovery publish")
        status = source.status()
    assert sink.catalog == first and status.failing_watches == 0 and status.outage_s == 0


async def test_bad_body_is_reported_and_never_published_empty(fake: FakeEureka) -> None:
    sink = RecordingSink()
    source = EurekaSource(config(fake.url))
    async with running(source, sink):
        await until(lambda: len(sink.updates) >= 1, what="the initial publish")
        fake.registry[("WEB", "broken")] = {"app": "WEB", "status": "UP"}  # no instanceId, no hostName
        fake.queue.append(("ADDED", fake.registry[("WEB", "broken")]))
        await until(lambda: bool(sink.errors), what="the parse error report")
        assert len(sink.updates) == 1 and hosts(sink.catalog, "web")
    assert ("GET /eureka/apps/delta: applications.application[0].instance[0]: no `instanceId` and no "
            "`hostName`") in sink.errors[0]


async def test_restart_empty_holds_removals_during_grace(fake: FakeEureka) -> None:
    sink = RecordingSink()
    source = EurekaSource(config(fake.url, resync_grace_s=1.0))
    async with running(source, sink):
        await until(lambda: len(sink.updates) >= 1, what="the initial publish")
        before = hosts(sink.catalog, "web")
        await fake.down()
        await until(lambda: bool(sink.errors), what="the outage report")
        fake.restart_empty()
        fake.register(instance("WEB", "10.0.0.1", status="STARTING"))
        fake.register(instance("NEW", "10.0.2.1"))
        await fake.start()
        await until(lambda: "new" in sink.catalog, what="the new service, published at once")
        # Emptied registry: WEB and API are held, with their last health.
        assert hosts(sink.catalog, "web") == before and "api" in sink.catalog
        status = source.status()
        assert status.resync_grace_remaining_s > 0
        await until(lambda: "api" not in sink.catalog, timeout_s=5.0, what="the truth after the grace")
    assert hosts(sink.catalog, "web") == {} and "new" in sink.catalog


async def test_quick_restart_is_caught_by_the_hashcode_and_held(fake: FakeEureka) -> None:
    sink = RecordingSink()
    source = EurekaSource(config(fake.url, resync_grace_s=1.0))
    async with running(source, sink):
        await until(lambda: len(sink.updates) >= 1, what="the initial publish")
        await until(lambda: source.status().details["delta_fetches"] >= 1, what="a delta fetch")
        fake.restart_empty()  # between two polls: no failed request at all
        await until(lambda: source.status().details["hashcode_mismatches"] >= 1, what="the mismatch")
        await asyncio.sleep(0.3)  # several polls inside the grace: nothing may be taken away
        assert hosts(sink.catalog, "web") and "api" in sink.catalog
        await until(lambda: len(sink.catalog) == 0, timeout_s=5.0, what="the truth after the grace")


async def test_failover_to_a_lagging_peer_changes_nothing_in_the_grace(fake: FakeEureka) -> None:
    peer = FakeEureka()  # replication has not brought API over yet
    peer.register(instance("WEB", "10.0.0.1", metadata={"version": "v1"}))
    peer.register(instance("WEB", "10.0.0.2"))
    await peer.start()
    try:
        sink = RecordingSink()
        source = EurekaSource(config(fake.url, peer.url, resync_grace_s=1.0))
        async with running(source, sink):
            await until(lambda: len(sink.updates) >= 1, what="the initial publish")
            first = sink.catalog
            await fake.down()
            await until(lambda: source.status().details["server"] == peer.url, what="the failover")
            await asyncio.sleep(0.3)  # polls of the peer inside the grace
            assert sink.catalog == first and source.status().resync_grace_remaining_s > 0
            assert sink.errors == []  # a failover is not an outage
            await until(lambda: "api" not in sink.catalog, what="the peer's truth after the grace")
        assert hosts(sink.catalog, "web") == hosts(first, "web")
    finally:
        await peer.down()


async def test_https_with_a_ca_file(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "eureka.test", san=f"IP:{LOOPBACK}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    fake = FakeEureka()
    fake.register(instance("WEB", "10.0.0.1"))
    await fake.start(ssl_context=context)
    url = fake.url.replace("http://", "https://")
    try:
        sink = RecordingSink()
        async with running(EurekaSource(config(url, ca_file=cert)), sink):
            await until(lambda: len(sink.updates) == 1, what="a publish over https")
        assert "web" in sink.catalog and sink.errors == []
        # Without the CA the server's certificate is not trusted: a clear TLS error, nothing published.
        sink = RecordingSink()
        async with running(EurekaSource(config(url)), sink):
            await until(lambda: len(sink.errors) >= 1, what="the TLS error")
        assert sink.updates == [] and "TLS failure" in sink.errors[0]
    finally:
        await fake.down()
