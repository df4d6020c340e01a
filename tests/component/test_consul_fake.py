"""ConsulSource against a scripted fake Consul: an aiohttp server on 127.0.0.1:0 that implements just enough
of the HTTP API (catalog/services, health/service, health/state/any, catalog/node-services, kv ?recurse,
blocking queries, ACL tokens) and lets each
test break it on purpose: errors, a refused port, indexes that go backwards or to 0, a restart that comes
back empty.

The real-Consul end-to-end tests live elsewhere; these pin down the watch logic (docs/protocol.md R32, R36,
R37; cases F5, F6, F8) quickly and deterministically.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from tests.source_helpers import RecordingSink, hosts, running_task, self_signed, serve_on_loopback, until
from xds.model.service import Health
from xds.sources.consul import ConsulConfig, ConsulSource

LOOPBACK = "127.0.0.1"
FAKE_MAX_WAIT_S = 10.0

# --------------------------------------------------------------------------------------- the fake


def instance(service_id: str, address: str, port: int, *, name: str = "", status: str = "passing",
             tags: tuple[str, ...] = (), meta: dict[str, str] | None = None, node: str = "",
             node_meta: dict[str, str] | None = None, kind: str = "", datacenter: str = "dc1",
             weights: dict[str, int] | None = None) -> dict[str, Any]:
    """One health entry as /v1/health/service returns it."""
    node = node or f"node-{service_id}"
    return {
        "Node": {"Node": node, "Address": address, "Datacenter": datacenter, "Meta": node_meta or {}},
        "Service": {"ID": service_id, "Service": name, "Tags": list(tags), "Address": address,
                    "Port": port, "Meta": meta or {}, "Kind": kind,
                    "Weights": weights or {"Passing": 1, "Warning": 1}},
        "Checks": [{"Node": node, "CheckID": "serfHealth", "Status": "passing", "ServiceID": ""},
                   {"Node": node, "CheckID": f"service:{service_id}", "Status": status,
                    "ServiceID": service_id}],
    }


@dataclass
class Datacenter:
    """One datacenter's state. As in Consul (checked against the real agent): the catalog index moves on
    registration changes only, the health-state index on check changes only, and each instance keeps the
    ModifyIndex of its last registration change."""

    services: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    service_index: dict[str, int] = field(default_factory=dict)
    catalog_index: int = 1
    state_index: int = 1
    instance_index: dict[tuple[str, str], int] = field(default_factory=dict)  # (service, ID) -> ModifyIndex


def _registration(entry: dict[str, Any]) -> tuple[str, str]:
    """An entry without its checks: what a registration change changes."""
    return repr(entry["Node"]), repr(entry["Service"])


@dataclass(frozen=True)
class Request:
    at: float
    path: str
    query: dict[str, str]
    token: str | None

    @property
    def index(self) -> int:
        return int(self.query.get("index", "0"))


class FakeConsul:
    """Blocking-query semantics as Consul's (api-docs/features/blocking): a request with index N waits
    until the resource's index passes N or `wait` ends; a snapshot restore or restart wakes every waiter
    (Consul's state store "abandon"), which is how clients see an index go backwards."""

    def __init__(self) -> None:
        self.index = 10
        self.dcs: dict[str, Datacenter] = {"dc1": Datacenter()}
        self.kv: dict[str, bytes] = {}
        self.kv_index = 1
        self.requests: list[Request] = []
        self.required_token: str | None = None
        self.fail_status: int | None = None  # answer every request with this status
        self.never_block = False  # a buggy server: blocking queries return at once
        self.index_for: Callable[[str, int], int] | None = None  # rewrite X-Consul-Index per path
        self._changed = asyncio.Event()
        self._generation = 0  # bumped by a restore: every blocking query is abandoned
        self._runner: web.AppRunner | None = None
        self._ssl: ssl.SSLContext | None = None  # kept across down()/up()
        self.port = 0
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests served at once: the client's connections

    # ----------------------------------------------------------- lifecycle

    @property
    def address(self) -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    async def start(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        if ssl_context is not None:
            self._ssl = ssl_context
        app = web.Application(middlewares=[self._count_in_flight])
        app.router.add_get("/v1/catalog/services", self._catalog)
        app.router.add_get("/v1/health/service/{name}", self._health)
        app.router.add_get("/v1/health/state/any", self._state)
        app.router.add_get("/v1/catalog/node-services/{node}", self._node_services)
        app.router.add_get("/v1/kv/{key:.*}", self._kv)
        self._runner, self.port = await serve_on_loopback(app, self.port, ssl_context=self._ssl)

    async def down(self) -> None:
        """Stop listening and drop open connections: clients get 'connection refused'."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def up(self) -> None:
        await self.start()

    async def restart_empty(self, *, index: int = 3, down_s: float = 0.3) -> None:
        await self.down()
        # A restart takes a moment; one within milliseconds would be caught by aiohttp's own resend of a GET
        # whose connection dropped (see client.py).
        await asyncio.sleep(down_s)
        self.index = index
        self.dcs = {name: Datacenter() for name in self.dcs}
        self.kv.clear()
        self.kv_index = 1
        await self.up()

    @web.middleware
    async def _count_in_flight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1

    # ------------------------------------------------------------- writes

    def _bump(self) -> int:
        self.index += 1
        self._changed.set()
        self._changed = asyncio.Event()
        return self.index

    def set_service(self, name: str, entries: list[dict[str, Any]], *, dc: str = "dc1") -> None:
        for e in entries:
            e["Service"]["Service"] = name
        state = self.dcs.setdefault(dc, Datacenter())
        index = self._bump()
        before = {e["Service"]["ID"]: e for e in state.services.get(name, [])}
        after = {e["Service"]["ID"]: e for e in entries}
        registrations_changed = before.keys() != after.keys()
        for service_id, entry in after.items():
            old = before.get(service_id)
            if old is None or _registration(old) != _registration(entry):
                state.instance_index[(name, service_id)] = index
                registrations_changed = True
        if registrations_changed:
            state.catalog_index = index
        if [e["Checks"] for e in before.values()] != [e["Checks"] for e in after.values()]:
            state.state_index = index
        state.services[name] = entries
        state.service_index[name] = index

    def remove_service(self, name: str, *, dc: str = "dc1") -> None:
        state = self.dcs[dc]
        index = self._bump()
        state.services.pop(name, None)
        state.service_index[name] = index
        state.catalog_index = index
        state.state_index = index

    def touch(self, name: str, *, dc: str = "dc1") -> None:
        """A new index with the same content (an idempotent write): every watch sees its index move."""
        state = self.dcs[dc]
        state.service_index[name] = state.catalog_index = state.state_index = self._bump()

    def put_kv(self, key: str, value: str) -> None:
        self.kv[key] = value.encode()
        self.kv_index = self._bump()

    def rewind(self) -> None:
        """A snapshot restore to an older index: state kept, indexes lower, waiters woken."""
        self._generation += 1
        for state in self.dcs.values():
            state.catalog_index = min(state.catalog_index, 50)
            state.state_index = min(state.state_index, 50)
            state.service_index = {k: min(v, 50) for k, v in state.service_index.items()}
        self._changed.set()
        self._changed = asyncio.Event()

    # ----------------------------------------------------------- handlers

    def _record(self, request: web.Request) -> None:
        self.requests.append(Request(asyncio.get_running_loop().time(), request.path, dict(request.query),
                                     request.headers.get("X-Consul-Token")))

    def _check(self, request: web.Request) -> web.Response | None:
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="rpc error: No cluster leader")
        if self.required_token is not None and request.headers.get("X-Consul-Token") != self.required_token:
            return web.Response(status=403, text="ACL not found")
        return None

    async def _block(self, request: web.Request, current: Callable[[], int]) -> None:
        wanted = int(request.query.get("index", "0"))
        if wanted <= 0 or self.never_block:
            return
        wait_s = min(int(request.query.get("wait", "0ms").removesuffix("ms")) / 1000, FAKE_MAX_WAIT_S)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while current() <= wanted and self.fail_status is None:
            changed = self._changed
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            generation = self._generation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()
            if self._generation != generation:  # restored: Consul abandons every blocking query
                return

    def _respond(self, request: web.Request, body: object, index: int, *, status: int = 200) -> web.Response:
        if self.index_for is not None:
            index = self.index_for(request.path, index)
        headers = {"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}
        return web.json_response(body, status=status, headers=headers)

    def _dc(self, request: web.Request) -> Datacenter:
        return self.dcs.setdefault(request.query.get("dc", "dc1"), Datacenter())

    async def _catalog(self, request: web.Request) -> web.Response:
        self._record(request)
        if (refused := self._check(request)) is not None:
            return refused
        await self._block(request, lambda: self._dc(request).catalog_index)
        if (refused := self._check(request)) is not None:
            return refused
        state = self._dc(request)
        body = {name: sorted({t for e in entries for t in e["Service"]["Tags"]})
                for name, entries in state.services.items()}
        return self._respond(request, body, state.catalog_index)

    async def _health(self, request: web.Request) -> web.Response:
        self._record(request)
        name = request.match_info["name"]
        if (refused := self._check(request)) is not None:
            return refused
        await self._block(request, lambda: self._dc(request).service_index.get(name, 1))
        if (refused := self._check(request)) is not None:
            return refused
        state = self._dc(request)
        return self._respond(request, state.services.get(name, []), state.service_index.get(name, 1))

    async def _state(self, request: web.Request) -> web.Response:
        self._record(request)
        if (refused := self._check(request)) is not None:
            return refused
        await self._block(request, lambda: self._dc(request).state_index)
        if (refused := self._check(request)) is not None:
            return refused
        state = self._dc(request)
        checks: dict[tuple[str, str], dict[str, Any]] = {}
        for name, entries in state.services.items():
            for entry in entries:
                for check in entry["Checks"]:
                    service = name if check["ServiceID"] else ""
                    checks[(check["Node"], check["CheckID"])] = {**check, "ServiceName": service}
        return self._respond(request, [checks[k] for k in sorted(checks)], state.state_index)

    async def _node_services(self, request: web.Request) -> web.Response:
        self._record(request)
        if (refused := self._check(request)) is not None:
            return refused
        node = request.match_info["node"]
        state = self._dc(request)
        found = [{"ID": e["Service"]["ID"], "Service": name, "Port": e["Service"]["Port"],
                  "ModifyIndex": state.instance_index[(name, e["Service"]["ID"])]}
                 for name, entries in state.services.items() for e in entries if e["Node"]["Node"] == node]
        body = {"Node": {"Node": node}, "Services": found} if found else {"Node": None, "Services": None}
        return self._respond(request, body, state.catalog_index)

    async def _kv(self, request: web.Request) -> web.Response:
        self._record(request)
        if (refused := self._check(request)) is not None:
            return refused
        await self._block(request, lambda: self.kv_index)
        prefix = request.match_info["key"]
        body = [{"Key": k, "Value": base64.b64encode(v).decode(), "ModifyIndex": self.kv_index}
                for k, v in sorted(self.kv.items()) if k.startswith(prefix)]
        if not body:
            return self._respond(request, None, self.kv_index, status=404)
        return self._respond(request, body, self.kv_index)

    def count(self, path: str, *, since: float = 0.0) -> int:
        return sum(1 for r in self.requests if r.path == path and r.at >= since)


# ------------------------------------------------------------------------------- sink and helpers


def config(fake: FakeConsul, **overrides: Any) -> ConsulConfig:
    settings: dict[str, Any] = {"wait_s": 5.0, "request_timeout_s": 2.0, "debounce_s": 0.05,
                                "resync_grace_s": 0.0, "backoff_initial_s": 0.2, "backoff_max_s": 1.0}
    settings.update(overrides)
    return ConsulConfig(fake.address, **settings)


@pytest.fixture
async def fake() -> AsyncIterator[FakeConsul]:
    consul = FakeConsul()
    consul.set_service("web", [instance("web-1", "10.0.0.1", 8080, tags=("version=v1",)),
                               instance("web-2", "10.0.0.2", 8080, tags=("version=v2",))])
    consul.set_service("api", [instance("api-1", "10.0.1.1", 9090)])
    await consul.start()
    yield consul
    await consul.down()


def running(source: ConsulSource, sink: RecordingSink) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    return running_task(source.run(sink))


def consul_tasks() -> list[str]:
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("consul-"))


# ------------------------------------------------------------------------------------------ tests


async def test_initial_sync_publishes_once_with_everything(fake: FakeConsul) -> None:
    fake.set_service("web-sidecar-proxy", [instance("web-1-proxy", "10.0.0.1", 21000, kind="connect-proxy")])
    fake.put_kv("xds/edge", "listeners: [{name: edge, port: 10000, routes: [{name: r, backends: "
                            "[{service: web}]}]}]\nservices: [{name: web}]\n")
    sink = RecordingSink()
    source = ConsulSource(config(fake, kv_prefix="xds", token="t0ken"))
    async with running(source, sink):
        await until(lambda: len(sink.updates) >= 1, what="the initial publish")
        await asyncio.sleep(0.3)
    assert len(sink.updates) == 1
    update = sink.updates[0]
    assert update.source == f"consul:{fake.address}"
    assert [s.name for s in update.catalog.services] == ["api", "web"]  # the sidecar is not a backend
    web = update.catalog.get("web")
    assert web is not None
    versions = {e.host: dict(e.metadata)["version"] for e in web.endpoints}
    assert versions == {"10.0.0.1": "v1", "10.0.0.2": "v2"}
    assert all(e.source == "consul:dc1" and e.priority == 0 for e in web.endpoints)
    assert update.policy is not None and [lst.name for lst in update.policy.listeners] == ["edge"]
    assert sink.errors == []
    # ACL token on every request; never blocked on index 0 (the first read of each watch has no index).
    assert fake.requests and all(r.token == "t0ken" for r in fake.requests)
    first = {r.path: r for r in reversed(fake.requests)}
    assert all("index" not in r.query for r in first.values())


async def test_health_change_publishes_quickly(fake: FakeConsul) -> None:
    sink = RecordingSink()
    async with running(ConsulSource(config(fake)), sink):
        await until(lambda: len(sink.updates) == 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        fake.set_service("web", [instance("web-1", "10.0.0.1", 8080, status="critical"),
                                 instance("web-2", "10.0.0.2", 8080, status="warning")])
        await until(lambda: len(sink.updates) == 2, what="the health change")
        elapsed = loop.time() - started
    assert hosts(sink.catalog, "web") == {("10.0.0.1", 8080): Health.UNHEALTHY,
                                          ("10.0.0.2", 8080): Health.HEALTHY}
    assert elapsed < 1.0


async def test_same_content_with_a_new_index_is_not_published(fake: FakeConsul) -> None:
    """F6d: a response is not proof of change. Both catalog-wide watches see their index move; neither
    answer names a changed service, so nothing is re-read and nothing published."""
    sink = RecordingSink()
    async with running(ConsulSource(config(fake)), sink):
        await until(lambda: len(sink.updates) == 1)
        before = {p: fake.count(p) for p in ("/v1/health/state/any", "/v1/catalog/services")}
        reads = fake.count("/v1/health/service/web")
        for _ in range(5):
            fake.touch("web")
            await asyncio.sleep(0.05)
        await until(lambda: all(fake.count(p) > n + 2 for p, n in before.items()),
                    what="the watches to re-arm")
        await asyncio.sleep(0.2)
    assert len(sink.updates) == 1
    assert fake.count("/v1/health/service/web") == reads


async def test_burst_of_new_services_is_coalesced(fake: FakeConsul) -> None:
    sink = RecordingSink()
    async with running(ConsulSource(config(fake)), sink):
        await until(lambda: len(sink.updates) == 1)
        for i in range(100):
            fake.set_service(f"svc-{i:03d}", [instance(f"svc-{i}", f"10.1.{i // 250}.{i % 250 + 1}", 80)])
        await until(lambda: len(sink.catalog) == 102, what="all 100 new services")
        await asyncio.sleep(0.3)
    assert len(sink.updates) <= 4, f"{len(sink.updates)} publishes for one burst"


async def test_index_going_backwards_resets_to_zero_and_resyncs(fake: FakeConsul) -> None:
    """F6a: after an index drop the next query has no index (a fresh read), then blocks on the new one."""
    sink = RecordingSink()
    async with running(ConsulSource(config(fake)), sink):
        await until(lambda: len(sink.updates) == 1)
        # Push the catalog index well up, then restore "a snapshot" with lower indexes.
        for _ in range(60):
            fake.touch("web")
        fake.set_service("db", [instance("db-1", "10.0.2.1", 5432)])
        await until(lambda: any(r.path == "/v1/catalog/services" and r.index > 50 for r in fake.requests),
                    what="the catalog watch blocking above 50")
        mark = asyncio.get_running_loop().time()
        fake.rewind()
        await until(lambda: fake.count("/v1/catalog/services", since=mark) >= 2, what="the resync")
        await until(lambda: "db" in sink.catalog, what="db")
        after = [r for r in fake.requests if r.path == "/v1/catalog/services" and r.at >= mark]
    # The blocked query was woken by the restore and answered 50: the next one is a fresh read (no index),
    # then the watch blocks on 50.
    assert after[0].index == 0
    assert after[1].index == 50
    assert hosts(sink.catalog, "db") == {("10.0.2.1", 5432): Health.HEALTHY}


@pytest.mark.parametrize("bad_index", [0, -5])
async def test_zero_or_negative_index_never_busy_loops(fake: FakeConsul, bad_index: int) -> None:
    """F6b/c: a server that answers at once with index 0 (or less) costs at most the token bucket."""
    fake.never_block = True
    fake.index_for = lambda path, real: bad_index if path == "/v1/health/state/any" else real
    sink = RecordingSink()
    async with running(ConsulSource(config(fake, rate_per_s=2.0, burst=5)), sink):
        await until(lambda: len(sink.updates) == 1)
        start = asyncio.get_running_loop().time()
        await asyncio.sleep(2.0)
        state = [r for r in fake.requests if r.path == "/v1/health/state/any"]
    window = [r for r in state if r.at >= start]
    assert len(window) <= 5 + 2 * 2 + 1, f"{len(window)} requests in 2 s"
    assert all(r.index >= 1 for r in state[1:])  # after the first read, never index 0 again


async def test_a_flood_of_changes_is_rate_limited(fake: FakeConsul) -> None:
    """F6c: 20 registration changes per second for 3 s; the catalog watch stays within the token bucket,
    each answer of the two catalog-wide watches costs at most one read of the service, and the source
    converges."""
    sink = RecordingSink()
    async with running(ConsulSource(config(fake, rate_per_s=2.0, burst=5)), sink):
        await until(lambda: len(sink.updates) == 1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(60):
            fake.set_service("web", [instance("web-1", "10.0.0.1", 8080, meta={"rev": str(i)})])
            await asyncio.sleep(0.05)
        count = fake.count("/v1/catalog/services", since=start)
        answers = count + fake.count("/v1/health/state/any", since=start)
        reads = fake.count("/v1/health/service/web", since=start)
        await until(lambda: sink.catalog.get("web") is not None and dict(
            sink.catalog.get("web").endpoints[0].metadata).get("rev") == "59",  # type: ignore[union-attr]
            what="the last change")
    assert count <= 5 + 2 * 3 + 1, f"{count} requests in 3 s"
    # + 2: the two blocking queries already waiting at `start` were recorded before it, answered after it.
    assert reads <= answers + 2, f"{reads} reads of web for {answers} watch answers"


async def test_server_errors_back_off_report_once_and_recover_with_one_publish(fake: FakeConsul) -> None:
    """F5: 500s for a while: bounded retries, one error report, no publish, staleness grows; the recovery
    (with a change) is published once."""
    sink = RecordingSink()
    source = ConsulSource(config(fake, backoff_initial_s=0.2, backoff_max_s=1.0))
    async with running(source, sink):
        await until(lambda: len(sink.updates) == 1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        fake.fail_status = 500
        fake.touch("web")  # wake the blocking queries so they see the failure now
        fake.touch("api")
        await asyncio.sleep(3.0)
        during = len([r for r in fake.requests if r.at >= start])
        assert source.staleness().failing_watches >= 1
        assert source.staleness().outage_s > 2.0
        fake.fail_status = None
        fake.set_service("web", [instance("web-1", "10.0.0.1", 8080), instance("web-2", "10.0.0.2", 8080),
                                 instance("web-3", "10.0.0.3", 8080)])
        await until(lambda: len(sink.updates) == 2, what="the recovery publish")
        await asyncio.sleep(0.5)
    # 2 watches (catalog + health state), and the reads they trigger, for 3 s with a 0.2..1 s backoff: far
    # from a tight loop.
    assert during <= 3 * 12, f"{during} requests during the outage"
    assert len(sink.errors) == 1 and "500" in sink.errors[0]
    assert len(sink.updates) == 2
    assert set(hosts(sink.catalog, "web")) == {("10.0.0.1", 8080), ("10.0.0.2", 8080), ("10.0.0.3", 8080)}
    assert source.staleness().failing_watches == 0


async def test_connection_refused_keeps_state_and_recovery_publishes_once(fake: FakeConsul) -> None:
    sink = RecordingSink()
    async with running(ConsulSource(config(fake)), sink):
        await until(lambda: len(sink.updates) == 1)
        await fake.down()
        await until(lambda: len(sink.errors) >= 1, what="the outage report")
        await asyncio.sleep(2.0)
        assert len(sink.updates) == 1
        await fake.up()
        await until(lambda: len(sink.updates) == 2, what="the recovery publish")
        await asyncio.sleep(0.5)
    assert len(sink.errors) == 1 and "connect" in sink.errors[0]
    assert len(sink.updates) == 2  # once: tells the sink the source is healthy again
    assert sink.updates[1].catalog == sink.updates[0].catalog


async def test_restart_empty_holds_removals_for_the_grace_then_publishes_the_truth(fake: FakeConsul) -> None:
    """F8: Consul comes back empty and is repopulated partly: nothing is removed within the grace; after
    it, the truth (api gone, the KV policy gone) is published. No publish is ever empty."""
    fake.put_kv("xds/web", "services: [{name: web, lb_policy: least_request}]\n")
    sink = RecordingSink()
    async with running(ConsulSource(config(fake, resync_grace_s=1.5, kv_prefix="xds/")), sink):
        await until(lambda: len(sink.updates) == 1)
        loop = asyncio.get_running_loop()
        await fake.restart_empty()
        restarted = loop.time()
        await asyncio.sleep(0.5)
        # The agent re-registers web, with checks that start critical (Consul's default initial status).
        fake.set_service("web", [
            instance("web-1", "10.0.0.1", 8080, tags=("version=v1",), status="critical"),
            instance("web-2", "10.0.0.2", 8080, tags=("version=v2",), status="critical")])
        await asyncio.sleep(0.4)
        fake.set_service("web", [instance("web-1", "10.0.0.1", 8080, tags=("version=v1",)),
                                 instance("web-2", "10.0.0.2", 8080, tags=("version=v2",))])
        await until(lambda: "api" not in sink.catalog, timeout_s=5.0, what="the truth after the grace")
        truth_at = loop.time()
    assert truth_at - restarted >= 1.4
    for update in sink.updates[:-1]:
        assert len(update.catalog) == 2
        assert all(h is Health.HEALTHY for h in hosts(update.catalog, "web").values())
        assert update.policy is not None and len(update.policy.services) == 1
    truth = sink.updates[-1]
    assert [s.name for s in truth.catalog.services] == ["web"]
    assert set(hosts(truth.catalog, "web")) == {("10.0.0.1", 8080), ("10.0.0.2", 8080)}
    assert truth.policy is not None and truth.policy.services == ()


async def test_restart_empty_then_repopulated_converges_without_any_push(fake: FakeConsul) -> None:
    sink = RecordingSink()
    async with running(ConsulSource(config(fake, resync_grace_s=2.0)), sink):
        await until(lambda: len(sink.updates) == 1)
        first = sink.updates[0].catalog
        await fake.restart_empty()
        await asyncio.sleep(0.3)
        fake.set_service("web", [instance("web-1", "10.0.0.1", 8080, tags=("version=v1",)),
                                 instance("web-2", "10.0.0.2", 8080, tags=("version=v2",))])
        fake.set_service("api", [instance("api-1", "10.0.1.1", 9090)])
        await asyncio.sleep(2.5)  # past the grace
    # At most the recovery announcement, and every publish is the full catalog.
    assert all(u.catalog == first for u in sink.updates)


async def test_services_coming_and_going_are_read_and_dropped_with_a_fixed_set_of_watches(
        fake: FakeConsul) -> None:
    """Issue 13 section 4: the same tasks (so the same connections) whatever the number of services."""
    sink = RecordingSink()
    source = ConsulSource(config(fake))
    tasks = ["consul-catalog:", "consul-fetch:", "consul-publish", "consul-state:", "consul-sweep:"]
    async with running(source, sink):
        await until(lambda: len(sink.updates) == 1)
        assert consul_tasks() == tasks
        fake.set_service("db", [instance("db-1", "10.0.2.1", 5432)])
        await until(lambda: "db" in sink.catalog, what="db")
        fake.remove_service("api")
        await until(lambda: "api" not in sink.catalog, what="api removed")
        assert source.watched_services() == {"": frozenset({"web", "db"})}
        assert consul_tasks() == tasks
    await asyncio.sleep(0)
    assert consul_tasks() == []


async def test_kv_invalid_key_is_reported_by_name_and_the_previous_policy_kept(fake: FakeConsul) -> None:
    good = "services: [{name: web, lb_policy: least_request}]\n"
    fake.put_kv("xds/web", good)
    sink = RecordingSink()
    async with running(ConsulSource(config(fake, kv_prefix="xds/")), sink):
        await until(lambda: len(sink.updates) == 1)
        fake.put_kv("xds/web", "services:\n  - name: web\n    lb_policy: quickest\n")
        await until(lambda: len(sink.errors) >= 1, what="the KV error")
        fake.set_service("db", [instance("db-1", "10.0.2.1", 5432)])  # other changes still flow
        await until(lambda: "db" in sink.catalog, what="db")
    assert sink.errors[0].startswith("consul-kv:xds/web:3:")
    policy = sink.updates[-1].policy
    assert policy is not None and policy.services[0].lb_policy.value == "least_request"
    # After the publish the standing problem is said again, so the sink does not think it was fixed.
    assert sink.errors[-1] == sink.errors[0]


async def test_kv_prefix_without_keys_is_an_empty_policy(fake: FakeConsul) -> None:
    sink = RecordingSink()
    async with running(ConsulSource(config(fake, kv_prefix="nothing-here")), sink):
        await until(lambda: len(sink.updates) == 1)
    policy = sink.updates[0].policy
    assert policy is not None and policy.listeners == () and policy.services == ()
    assert sink.errors == []


async def test_forbidden_is_reported_clearly_and_nothing_published(fake: FakeConsul) -> None:
    fake.required_token = "right"
    sink = RecordingSink()
    async with running(ConsulSource(config(fake, token="wrong")), sink):
        await until(lambda: len(sink.errors) >= 1, what="the 403 report")
        await asyncio.sleep(0.5)
    assert sink.updates == []
    assert len(sink.errors) == 1
    assert "403" in sink.errors[0] and "denied" in sink.errors[0] and "wrong" not in sink.errors[0]
    assert all(r.token == "wrong" for r in fake.requests)


async def test_several_datacenters_local_first(fake: FakeConsul) -> None:
    fake.set_service("web", [instance("web-9", "10.9.0.1", 8080, datacenter="dc2")], dc="dc2")
    sink = RecordingSink()
    async with running(ConsulSource(config(fake, datacenters=("dc1", "dc2"))), sink):
        await until(lambda: len(sink.updates) == 1)
    web = sink.catalog.get("web")
    assert web is not None
    tiers = {e.host: (e.priority, e.source) for e in web.endpoints}
    assert tiers == {"10.0.0.1": (0, "consul:dc1"), "10.0.0.2": (0, "consul:dc1"),
                     "10.9.0.1": (1, "consul:dc2")}
    assert {r.query.get("dc") for r in fake.requests} == {"dc1", "dc2"}


async def test_unreachable_at_start_publishes_nothing_until_consul_answers() -> None:
    fake = FakeConsul()
    fake.set_service("web", [instance("web-1", "10.0.0.1", 8080)])
    await fake.start()
    await fake.down()  # keeps the port number
    sink = RecordingSink()
    try:
        async with running(ConsulSource(config(fake)), sink):
            await until(lambda: len(sink.errors) >= 1, what="the outage report")
            await asyncio.sleep(0.5)
            assert sink.updates == []
            await fake.up()
            await until(lambda: len(sink.updates) == 1, what="the first publish")
        assert "web" in sink.catalog
    finally:
        await fake.down()


async def test_an_outage_past_the_staleness_bound_is_reported_again(fake: FakeConsul) -> None:
    sink = RecordingSink()
    async with running(ConsulSource(config(fake, max_stale_s=0.6)), sink):
        await until(lambda: len(sink.updates) == 1)
        fake.fail_status = 503
        fake.touch("web")
        await until(lambda: len(sink.errors) >= 2, what="the staleness report")
        await asyncio.sleep(1.0)
    assert len(sink.errors) == 2
    assert "503" in sink.errors[0]
    assert "has not answered for" in sink.errors[1] and "still serving" in sink.errors[1]
    assert len(sink.updates) == 1


async def test_mutual_tls_with_a_server_name(tmp_path: Path) -> None:
    server_cert, server_key = self_signed(tmp_path, "consul.test", san="DNS:consul.test")
    client_cert, client_key = self_signed(tmp_path, "xds-client", san="DNS:xds-client")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_cert))
    context.load_cert_chain(str(server_cert), str(server_key))
    context.verify_mode = ssl.CERT_REQUIRED  # Consul's verify_incoming
    fake = FakeConsul()
    fake.set_service("web", [instance("web-1", "10.0.0.1", 8080)])
    await fake.start(ssl_context=context)
    try:
        sink = RecordingSink()
        good = config(fake, ca_file=server_cert, cert_file=client_cert, key_file=client_key,
                      tls_server_name="consul.test")
        async with running(ConsulSource(good), sink):
            await until(lambda: len(sink.updates) == 1, what="a publish over mTLS")
        assert "web" in sink.catalog and sink.errors == []
        # Without the server name the certificate does not match 127.0.0.1: a clear TLS error, no publish.
        sink = RecordingSink()
        wrong = config(fake, ca_file=server_cert, cert_file=client_cert, key_file=client_key)
        async with running(ConsulSource(wrong), sink):
            await until(lambda: len(sink.errors) >= 1, what="the TLS error")
        assert sink.updates == [] and "TLS" in sink.errors[0]
    finally:
        await fake.down()


async def test_unreadable_tls_files_are_reported_not_raised(tmp_path: Path) -> None:
    sink = RecordingSink()
    source = ConsulSource(ConsulConfig("https://127.0.0.1:1", ca_file=tmp_path / "missing.pem",
                                       backoff_initial_s=0.1, backoff_max_s=0.2))
    async with running(source, sink) as task:
        await until(lambda: len(sink.errors) >= 1, what="the TLS file error")
        await asyncio.sleep(0.3)
        assert not task.done()
    assert "TLS files" in sink.errors[0] and len(sink.errors) == 1


async def test_many_services_use_a_bounded_number_of_connections(fake: FakeConsul) -> None:
    """Issue 13 section 4: 300 services are read through a pool of `max_connections`, and a check flip on
    one of them is read alone and published."""
    for i in range(300):
        fake.set_service(f"svc-{i:03d}", [instance(f"svc-{i}", f"10.2.{i // 250}.{i % 250 + 1}", 80)])
    sink = RecordingSink()
    async with running(ConsulSource(config(fake, max_connections=12, fetch_concurrency=4)), sink):
        await until(lambda: len(sink.updates) == 1, what="the initial publish")
        assert len(sink.catalog) == 302
        reads = len([r for r in fake.requests if r.path.startswith("/v1/health/service/")])
        fake.set_service("svc-123", [instance("svc-123", "10.2.0.124", 80, status="critical")])
        await until(lambda: hosts(sink.catalog, "svc-123") == {("10.2.0.124", 80): Health.UNHEALTHY},
                    what="the flip")
        after = [r.path for r in fake.requests if r.path.startswith("/v1/health/service/")][reads:]
    assert after == ["/v1/health/service/svc-123"]
    # 2 blocking watches + at most 4 reads at a time (the pool allows 12).
    assert fake.max_in_flight <= 2 + 4, f"{fake.max_in_flight} requests at once"
