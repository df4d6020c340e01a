"""KubernetesSource against a scripted fake API server: an aiohttp server on 127.0.0.1:0 that implements just
enough of the Kubernetes API (paginated lists, watches with resourceVersions, bookmarks and 410 Gone, the
status subresource of TrafficPolicies, bearer tokens) and lets each test break it on purpose: compacted
history, dropped and silent watches, refused connections, 5xx, a missing CRD.

The real kube-apiserver tests live elsewhere; these pin down the watch logic quickly and deterministically
(docs/protocol.md R34, R35, R36; case F7).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from tests.source_helpers import RecordingSink, hosts, running_task, serve_on_loopback, until
from xds.model.service import Health
from xds.settings import Settings
from xds.sources.kubernetes import KubeConfig, KubernetesSource

LOOPBACK = "127.0.0.1"
TOKEN = "test-token"
SERVICES = "services"
SLICES = "endpointslices"
POLICIES = "trafficpolicies"
_GROUPS = {SERVICES: "/api/v1", SLICES: "/apis/discovery.k8s.io/v1", POLICIES: "/apis/xds.dev/v1alpha1"}
_KINDS = {SERVICES: "Service", SLICES: "EndpointSlice", POLICIES: "TrafficPolicy"}

# ------------------------------------------------------------------------------------------ the fake


def service(name: str, namespace: str = "shop", *, port: int = 80, annotations: dict[str, str] | None = None,
            labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "annotations": annotations or {},
                         "labels": labels or {}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.10",
                     "ports": [{"port": port, "protocol": "TCP"}]}}


def eslice(name: str, addresses: list[str], *, service_name: str = "web", namespace: str = "shop",
           port: int = 8080, not_ready: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": [{"name": "", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": a not in not_ready}, "zone": "z1"}
                          for a in addresses]}


def traffic_policy(name: str, spec: Any, namespace: str = "shop") -> dict[str, Any]:
    return {"apiVersion": "xds.dev/v1alpha1", "kind": "TrafficPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


EDGE = {"services": [{"name": "web"}],
        "listeners": [{"name": "edge", "port": 10000, "routes": [{"backends": [{"service": "web"}]}]}]}


@dataclass(frozen=True)
class Request:
    at: float
    method: str
    path: str
    query: dict[str, str]

    @property
    def watch(self) -> bool:
        return self.query.get("watch") == "true"


@dataclass
class _Event:
    rv: int
    type: str
    plural: str
    obj: dict[str, Any]


@dataclass
class FakeApiServer:
    """Objects per resource with one resourceVersion counter, an event history that `compact()` cuts (a
    watch from before it gets 410 Gone, as etcd's compaction does), and watches that replay history
    after their resourceVersion, then stream new events."""

    objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(
        default_factory=lambda: {SERVICES: {}, SLICES: {}, POLICIES: {}})
    rv: int = 100
    compacted: int = 0
    history: list[_Event] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    listed: list[tuple[str, str]] = field(default_factory=list)  # (plural, resourceVersion) per list answer
    crd_installed: bool = True
    gone_as_event: bool = False  # 410 as a watch ERROR event (200 + Status) instead of an HTTP 410
    silent_watches: bool = False  # accept watches and then say nothing (a dead NAT mapping)
    fail_status: int | None = None
    watch_timeout_s: float = 30.0
    port: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _generation: int = 0  # bumped by drop_watches(): open watches end at once
    _bookmarks: list[int] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    # ------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        for plural, prefix in _GROUPS.items():
            app.router.add_get(f"{prefix}/{plural}", self._collection)
            app.router.add_get(f"{prefix}/namespaces/{{namespace}}/{plural}", self._collection)
        app.router.add_patch("/apis/xds.dev/v1alpha1/namespaces/{namespace}/trafficpolicies/{name}/status",
                             self._patch_status)
        self._runner, self.port = await serve_on_loopback(app, self.port)

    async def down(self) -> None:
        """Stop listening and drop every connection: clients get 'connection refused'."""
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def up(self) -> None:
        await self.start()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "admin"}}],
            "users": [{"name": "admin", "user": {"token": TOKEN}}]}))
        return path

    # --------------------------------------------------------------------- writes

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = json.loads(json.dumps(obj))
        metadata = obj["metadata"]
        key = (metadata.get("namespace", ""), metadata["name"])
        old = self.objects[plural].get(key)
        self.rv += 1
        metadata["resourceVersion"] = str(self.rv)
        if plural == POLICIES:
            spec_changed = old is None or old.get("spec") != obj.get("spec")
            generation = old["metadata"]["generation"] if old else 0
            metadata["generation"] = generation + (1 if spec_changed else 0)
            if old is not None and "status" in old and "status" not in obj:
                obj["status"] = old["status"]
        self.objects[plural][key] = obj
        self.history.append(_Event(self.rv, "MODIFIED" if old else "ADDED", plural, obj))
        self._notify()
        return obj

    def delete(self, plural: str, name: str, namespace: str = "shop") -> None:
        obj = self.objects[plural].pop((namespace, name))
        self.rv += 1
        gone = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
        self.history.append(_Event(self.rv, "DELETED", plural, gone))
        self._notify()

    def compact(self) -> None:
        """Forget history up to now: a watch from an older resourceVersion gets 410 Gone."""
        self.compacted = self.rv
        self.history.clear()

    def drop_watches(self) -> None:
        """End every open watch now (a connection lost mid-watch)."""
        self._generation += 1
        self._notify()

    def bookmark(self) -> int:
        """Send a BOOKMARK to open watches; it carries a new resourceVersion and nothing else."""
        self.rv += 1
        self._bookmarks.append(self.rv)
        self._notify()
        return self.rv

    # ------------------------------------------------------------------- handlers

    def _record(self, request: web.Request) -> None:
        self.requests.append(Request(asyncio.get_running_loop().time(), request.method, request.path,
                                     dict(request.query)))

    def _refuse(self, request: web.Request) -> web.Response | None:
        if self.fail_status is not None:
            return _status(self.fail_status, "etcdserver: request timed out")
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _status(401, "Unauthorized")
        if request.path.startswith("/apis/xds.dev/") and not self.crd_installed:
            return _status(404, "the server could not find the requested resource")
        return None

    @staticmethod
    def _plural(request: web.Request) -> str:
        return request.path.rsplit("/", 1)[1]

    @staticmethod
    def _selected(obj: dict[str, Any], namespace: str | None, selector: str) -> bool:
        if namespace and obj["metadata"].get("namespace") != namespace:
            return False
        labels = obj["metadata"].get("labels") or {}
        for term in filter(None, selector.split(",")):
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
        return True

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        if (refused := self._refuse(request)) is not None:
            return refused
        if request.query.get("watch") == "true":
            return await self._watch(request)
        plural = self._plural(request)
        namespace = request.match_info.get("namespace")
        selector = request.query.get("labelSelector", "")
        items = [o for _, o in sorted(self.objects[plural].items())
                 if self._selected(o, namespace, selector)]
        limit = int(request.query.get("limit", "0")) or len(items) or 1
        start = int(request.query.get("continue") or 0)
        page = items[start:start + limit]
        more = start + limit < len(items)
        metadata = {"resourceVersion": str(self.rv), "continue": str(start + limit) if more else ""}
        self.listed.append((plural, str(self.rv)))
        return web.json_response({"kind": f"{_KINDS[plural]}List", "metadata": metadata, "items": page})

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        plural = self._plural(request)
        namespace = request.match_info.get("namespace")
        selector = request.query.get("labelSelector", "")
        since = int(request.query["resourceVersion"])
        gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
                "message": f"too old resource version: {since} ({self.compacted})"}
        if since < self.compacted and not self.gone_as_event:
            return web.json_response(gone, status=410)
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        if since < self.compacted:
            await _send(response, {"type": "ERROR", "object": gone})
            return response
        generation = self._generation
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(float(request.query.get("timeoutSeconds", "30")), self.watch_timeout_s)
        sent = since
        bookmarks_seen = len(self._bookmarks)
        while loop.time() < deadline:
            if generation != self._generation:
                response.force_close()
                return response
            if not self.silent_watches:
                for event in [e for e in self.history if e.rv > sent and e.plural == plural]:
                    sent = event.rv
                    if self._selected(event.obj, namespace, selector):
                        await _send(response, {"type": event.type, "object": event.obj})
                for rv in self._bookmarks[bookmarks_seen:]:
                    sent = max(sent, rv)
                    await _send(response, {"type": "BOOKMARK", "object": {
                        "kind": _KINDS[plural], "metadata": {"resourceVersion": str(rv)}}})
            bookmarks_seen = len(self._bookmarks)
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await changed.wait()
        await response.write_eof()
        return response

    async def _patch_status(self, request: web.Request) -> web.Response:
        self._record(request)
        if (refused := self._refuse(request)) is not None:
            return refused
        assert request.content_type == "application/merge-patch+json"
        key = (request.match_info["namespace"], request.match_info["name"])
        current = self.objects[POLICIES].get(key)
        if current is None:
            return _status(404, "not found")
        body = await request.json()
        updated = {**current, "status": body["status"]}
        return web.json_response(self.put(POLICIES, updated))

    # ------------------------------------------------------------------ queries

    def lists(self, plural: str, *, since: float = 0.0) -> list[Request]:
        return [r for r in self.requests if r.path.endswith(plural) and not r.watch and r.at >= since]

    def watches(self, plural: str, *, since: float = 0.0) -> list[Request]:
        return [r for r in self.requests if r.path.endswith(plural) and r.watch and r.at >= since]

    def status_patches(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH"]


def _status(code: int, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                              "code": code}, status=code)


async def _send(response: web.StreamResponse, event: dict[str, Any]) -> None:
    await response.write(json.dumps(event).encode() + b"\n")


# ------------------------------------------------------------------------------- sink and helpers


def config(fake: FakeApiServer, tmp_path: Path, **overrides: Any) -> KubeConfig:
    settings: dict[str, Any] = {"request_timeout_s": 2.0, "debounce_s": 0.05, "resync_grace_s": 0.0,
                                "backoff_initial_s": 0.2, "backoff_max_s": 1.0, "inactivity_timeout_s": 5.0,
                                "server": fake.url}
    settings.update(overrides)
    return KubeConfig(str(fake.kubeconfig(tmp_path / "kubeconfig")), **settings)


@pytest.fixture
async def fake() -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer()
    server.put(SERVICES, service("web"))
    server.put(SLICES, eslice("web-a", ["10.1.0.1", "10.1.0.2"]))
    # 10.1.0.2 sits in two slices while the controller moves it (R35): one endpoint, the ready copy.
    server.put(SLICES, eslice("web-b", ["10.1.0.2", "10.1.0.3"], not_ready=("10.1.0.2",)))
    await server.start()
    yield server
    await server.down()


def running(source: KubernetesSource, sink: RecordingSink) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    return running_task(source.run(sink))


WEB = "web.shop:80"


async def watching(fake: FakeApiServer, *plurals: str, since: float = 0.0, count: int = 1) -> None:
    for plural in plurals or (SERVICES, SLICES, POLICIES):
        await until(lambda p=plural: len(fake.watches(p, since=since)) >= count,  # type: ignore[misc]
                    what=f"a watch of {plural}")
    await asyncio.sleep(0.05)  # the request is recorded before the stream opens


# ------------------------------------------------------------------------------------------ tests


async def test_initial_sync_merges_slices_and_publishes_once(fake: FakeApiServer, tmp_path: Path) -> None:
    fake.put(POLICIES, traffic_policy("edge", EDGE))
    sink = RecordingSink()
    source = KubernetesSource(config(fake, tmp_path, page_size=1))
    assert source.name == f"kubernetes:{fake.url}"
    async with running(source, sink):
        await until(lambda: bool(sink.updates), what="the first publish")
        await watching(fake)
        await asyncio.sleep(0.2)
    assert len(sink.updates) == 1
    update = sink.updates[0]
    assert update.source == source.name
    assert hosts(update.catalog, WEB) == {("10.1.0.1", 8080): Health.HEALTHY,
                                          ("10.1.0.2", 8080): Health.HEALTHY,
                                          ("10.1.0.3", 8080): Health.HEALTHY}
    sources = {e.host: e.source for e in update.catalog.get(WEB).endpoints}  # type: ignore[union-attr]
    assert sources["10.1.0.2"] == "kubernetes:shop/web-a"
    assert update.policy is not None and [x.name for x in update.policy.listeners] == ["edge"]
    # Paginated lists (page size 1): every page asked for, with the continue token.
    assert [r.query.get("continue", "") for r in fake.lists(SLICES)] == ["", "1"]
    # Watches start from the list's resourceVersion, with bookmarks and a server-side timeout.
    watch = fake.watches(SLICES)[0]
    assert watch.query["resourceVersion"] == next(rv for plural, rv in fake.listed if plural == SLICES)
    assert watch.query["allowWatchBookmarks"] == "true"
    assert 300 <= int(watch.query["timeoutSeconds"]) < 600
    assert sink.errors == []


async def test_watch_events_update_the_catalog(fake: FakeApiServer, tmp_path: Path) -> None:
    sink = RecordingSink()
    async with running(KubernetesSource(config(fake, tmp_path)), sink):
        await until(lambda: bool(sink.updates))
        await watching(fake, SERVICES, SLICES)
        fake.put(SLICES, eslice("web-b", ["10.1.0.3", "10.1.0.4"]))
        await until(lambda: ("10.1.0.4", 8080) in hosts(sink.catalog, WEB), what="the new endpoint")
        assert ("10.1.0.2", 8080) in hosts(sink.catalog, WEB)  # still in web-a
        fake.delete(SLICES, "web-a")
        await until(lambda: ("10.1.0.1", 8080) not in hosts(sink.catalog, WEB), what="the slice deletion")
        assert set(hosts(sink.catalog, WEB)) == {("10.1.0.3", 8080), ("10.1.0.4", 8080)}
        fake.put(SERVICES, service("web", annotations={"xds.dev/service-name": "web"}))
        await until(lambda: "web" in sink.catalog and WEB not in sink.catalog, what="the logical name")
        fake.delete(SERVICES, "web")
        await until(lambda: len(sink.catalog) == 0, what="the service deletion")


@pytest.mark.parametrize("gone_as_event", [False, True], ids=["http-410", "error-event-410"])
async def test_410_relists_and_the_list_is_the_new_truth(fake: FakeApiServer, tmp_path: Path,
                                                         gone_as_event: bool) -> None:
    # Case F7: while the watch is away, pod P (10.1.0.1) goes and Q (10.1.0.9) comes, and history is
    # compacted; the watch resumes from its old resourceVersion, gets 410 Gone, lists again and must show
    # exactly the new state: no ghost endpoint (Istio #54997), and the watch restarts from the new list.
    fake.gone_as_event = gone_as_event
    sink = RecordingSink()
    source = KubernetesSource(config(fake, tmp_path, resync_grace_s=30.0))
    async with running(source, sink):
        await until(lambda: bool(sink.updates))
        await watching(fake, SERVICES, SLICES)
        lists_before = len(fake.lists(SLICES))
        fake.drop_watches()
        fake.put(SLICES, eslice("web-a", ["10.1.0.9", "10.1.0.2"]))
        fake.compact()
        await until(lambda: ("10.1.0.9", 8080) in hosts(sink.catalog, WEB), what="Q")
        # No grace after a plain 410: the removal is published with the addition.
        assert ("10.1.0.1", 8080) not in hosts(sink.catalog, WEB)
        assert len(fake.lists(SLICES)) == lists_before + 1
        relist_rv = str(fake.rv)
        await until(lambda: fake.watches(SLICES)[-1].query["resourceVersion"] == relist_rv,
                    what="a watch from the list's resourceVersion")
    assert sink.errors == []


async def test_bookmarks_advance_the_resource_version_only(fake: FakeApiServer, tmp_path: Path) -> None:
    sink = RecordingSink()
    source = KubernetesSource(config(fake, tmp_path))
    async with running(source, sink):
        await until(lambda: bool(sink.updates))
        await watching(fake)
        published = len(sink.updates)
        rv = fake.bookmark()
        await until(lambda: source.staleness().resource_versions["endpointslices:*"] == str(rv),
                    what="the bookmark's resourceVersion")
        assert source.staleness().resource_versions["services:*"] == str(rv)
        await asyncio.sleep(0.2)
        assert len(sink.updates) == published  # a bookmark changes nothing else
        # A restart resumes from the bookmark, so history before it may be compacted without a 410.
        fake.compact()
        since = asyncio.get_running_loop().time()
        fake.drop_watches()
        await watching(fake, SLICES, since=since)
        assert fake.watches(SLICES, since=since)[0].query["resourceVersion"] == str(rv)
        assert fake.lists(SLICES, since=since) == []


async def test_an_inactive_watch_is_restarted_without_relisting(fake: FakeApiServer, tmp_path: Path) -> None:
    fake.silent_watches = True
    sink = RecordingSink()
    async with running(KubernetesSource(config(fake, tmp_path, inactivity_timeout_s=0.3)), sink):
        await until(lambda: bool(sink.updates))
        await until(lambda: len(fake.watches(SLICES)) >= 3, what="restarted watches")
        versions = {r.query["resourceVersion"] for r in fake.watches(SLICES)}
        assert len(fake.lists(SLICES)) == 1
        assert versions == {str(fake.rv)}
        # Once the server speaks again, the restarted watch catches up from where it was.
        fake.silent_watches = False
        fake.put(SLICES, eslice("web-c", ["10.1.0.7"]))
        await until(lambda: ("10.1.0.7", 8080) in hosts(sink.catalog, WEB), what="the change")
    assert sink.errors == []


async def test_the_server_ending_a_watch_is_normal(fake: FakeApiServer, tmp_path: Path) -> None:
    fake.watch_timeout_s = 0.2
    sink = RecordingSink()
    async with running(KubernetesSource(config(fake, tmp_path)), sink):
        await until(lambda: bool(sink.updates))
        await until(lambda: len(fake.watches(SLICES)) >= 3, what="re-watches")
    assert len(fake.lists(SLICES)) == 1
    assert sink.errors == []


async def test_outage_keeps_the_last_state_and_backs_off(fake: FakeApiServer, tmp_path: Path) -> None:
    # R36, F8: the API server is unreachable; nothing is published, the outage is reported once, retries
    # back off; after recovery the changed state is published once.
    sink = RecordingSink()
    source = KubernetesSource(config(fake, tmp_path, backoff_initial_s=0.1, backoff_max_s=0.4))
    async with running(source, sink):
        await until(lambda: bool(sink.updates))
        await watching(fake, SERVICES, SLICES)
        published = len(sink.updates)
        await fake.down()
        loop = asyncio.get_running_loop()
        await asyncio.sleep(1.5)
        assert len(sink.updates) == published
        assert len(sink.errors) == 1 and "cannot connect to the API server" in sink.errors[0]
        assert source.staleness().failing_watches >= 2 and source.staleness().outage_s > 1.0
        fake.put(SLICES, eslice("web-a", ["10.1.0.1", "10.1.0.2", "10.1.0.5"]))
        since = loop.time()
        fake.fail_status = 503
        await fake.up()
        await asyncio.sleep(1.0)
        # 503 for a second: bounded retries (full jitter, ceiling 0.4 s), no busy loop, still no publish.
        assert len(fake.lists(SLICES, since=since)) + len(fake.watches(SLICES, since=since)) <= 12
        assert len(sink.updates) == published
        fake.fail_status = None
        await until(lambda: ("10.1.0.5", 8080) in hosts(sink.catalog, WEB), timeout_s=5, what="recovery")
        await asyncio.sleep(0.3)
        assert len(sink.updates) == published + 1
    # Refused connections, then 503: one outage, of one kind (KubeUnavailable), reported once.
    assert len(sink.errors) == 1


async def test_removals_are_held_for_the_grace_after_an_outage(fake: FakeApiServer, tmp_path: Path) -> None:
    # F7 with a real disconnect: during the outage P goes, Q comes and history is compacted. On recovery the
    # re-list (after 410) adds Q at once but holds P's removal for the resync grace, then removes it.
    sink = RecordingSink()
    source = KubernetesSource(config(fake, tmp_path, resync_grace_s=1.0, backoff_initial_s=0.1,
                                     backoff_max_s=0.2))
    async with running(source, sink):
        await until(lambda: bool(sink.updates))
        await watching(fake, SERVICES, SLICES)
        await fake.down()
        await asyncio.sleep(0.3)
        fake.put(SLICES, eslice("web-a", ["10.1.0.9", "10.1.0.2"]))
        fake.compact()
        await fake.up()
        await until(lambda: ("10.1.0.9", 8080) in hosts(sink.catalog, WEB), what="Q")
        assert ("10.1.0.1", 8080) in hosts(sink.catalog, WEB)  # held
        assert source.staleness().resync_grace_remaining_s > 0
        await until(lambda: ("10.1.0.1", 8080) not in hosts(sink.catalog, WEB), timeout_s=3, what="P removed")


async def test_namespaces_and_label_selector(fake: FakeApiServer, tmp_path: Path) -> None:
    fake.put(SERVICES, service("web", "other"))
    fake.put(SLICES, eslice("web-x", ["10.2.0.1"], namespace="other"))
    fake.put(SERVICES, service("api", labels={"mesh": "xds"}, port=81))
    fake.put(SLICES, eslice("api-a", ["10.1.1.1"], service_name="api", port=9090))
    sink = RecordingSink()
    source = KubernetesSource(config(fake, tmp_path, namespaces=("shop",), label_selector="mesh=xds",
                                     policies=False))
    async with running(source, sink):
        await until(lambda: bool(sink.updates))
        await watching(fake, SERVICES, SLICES)
    assert set(s.name for s in sink.catalog.services) == {"api.shop:81"}
    assert sink.updates[0].policy is None
    assert {r.path for r in fake.requests} == {"/api/v1/namespaces/shop/services",
                                               "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"}
    assert all(r.query.get("labelSelector") == "mesh=xds" for r in fake.requests if "services" in r.path)
    assert all("labelSelector" not in r.query for r in fake.requests if SLICES in r.path)


async def test_policy_status_is_written_once_and_an_invalid_edit_keeps_serving(fake: FakeApiServer,
                                                                               tmp_path: Path) -> None:
    fake.put(POLICIES, traffic_policy("edge", EDGE))
    sink = RecordingSink()
    async with running(KubernetesSource(config(fake, tmp_path)), sink):
        await until(lambda: len(fake.status_patches()) == 1, what="the Accepted status")
        await until(lambda: bool(sink.updates))
        edge = fake.objects[POLICIES][("shop", "edge")]
        (condition,) = edge["status"]["conditions"]
        assert (condition["type"], condition["status"], condition["reason"],
                condition["observedGeneration"]) == ("Accepted", "True", "Accepted", 1)
        await asyncio.sleep(0.3)
        assert len(fake.status_patches()) == 1  # our own write, seen again through the watch: no loop
        # An invalid edit: status Invalid with the loader's message; the previous version keeps serving.
        broken = {**EDGE, "listeners": [{"name": "edge", "port": 99999, "routes": []}]}
        fake.put(POLICIES, traffic_policy("edge", broken))
        await until(lambda: len(fake.status_patches()) == 2, what="the Invalid status")
        (condition,) = fake.objects[POLICIES][("shop", "edge")]["status"]["conditions"]
        assert (condition["status"], condition["reason"], condition["observedGeneration"]) == \
            ("False", "Invalid", 2)
        assert "trafficpolicy:shop/edge: listeners[0].port: must be an integer between 1 and 65535" in \
            condition["message"]
        assert "the previous valid version, generation 1, keeps serving" in condition["message"]
        assert any("listeners[0].port" in e for e in sink.errors)
        policy = sink.updates[-1].policy
        assert policy is not None and policy.listeners[0].port == 10000
        await asyncio.sleep(0.3)
        assert len(fake.status_patches()) == 2


async def test_conflicting_policies_are_both_invalid(fake: FakeApiServer, tmp_path: Path) -> None:
    fake.put(POLICIES, traffic_policy("a", EDGE))
    sink = RecordingSink()
    async with running(KubernetesSource(config(fake, tmp_path)), sink):
        await until(lambda: len(fake.status_patches()) == 1)
        fake.put(POLICIES, traffic_policy("b", EDGE, namespace="team"))
        await until(lambda: len(fake.status_patches()) == 3, what="both marked Invalid")
        for key in (("shop", "a"), ("team", "b")):
            (condition,) = fake.objects[POLICIES][key]["status"]["conditions"]
            assert condition["reason"] == "Invalid" and "also defined by" in condition["message"]
        fake.delete(POLICIES, "b", namespace="team")
        await until(lambda: fake.objects[POLICIES][("shop", "a")]["status"]["conditions"][0]["status"]
                    == "True", what="a accepted again")


async def test_missing_crd_serves_services_without_policies(fake: FakeApiServer, tmp_path: Path) -> None:
    fake.crd_installed = False
    sink = RecordingSink()
    async with running(KubernetesSource(config(fake, tmp_path, crd_retry_s=0.3)), sink):
        await until(lambda: bool(sink.updates), what="a publish without the CRD")
        assert WEB in sink.catalog
        assert sink.updates[-1].policy is not None and sink.updates[-1].policy.listeners == ()
        # Reported when found missing, and again after each publish while it stands.
        assert sink.errors and all("CRD is not installed" in e for e in sink.errors)
        assert not any(r.path.endswith("/status") for r in fake.requests)
        fake.crd_installed = True
        fake.put(POLICIES, traffic_policy("edge", EDGE))
        await until(lambda: bool(sink.updates[-1].policy and sink.updates[-1].policy.listeners),
                    what="the policy once the CRD exists")


async def test_bad_credentials_are_reported(fake: FakeApiServer, tmp_path: Path) -> None:
    path = fake.kubeconfig(tmp_path / "kubeconfig")
    path.write_text(path.read_text().replace(TOKEN, "wrong"))
    sink = RecordingSink()
    source = KubernetesSource(KubeConfig(str(path), backoff_initial_s=0.1, backoff_max_s=0.2))
    async with running(source, sink):
        await until(lambda: bool(sink.errors), what="an error report")
        await asyncio.sleep(0.3)
    assert not sink.updates
    assert "401" in sink.errors[0] and "RBAC" in sink.errors[0]


async def test_unreadable_kubeconfig_is_reported_and_retried(tmp_path: Path) -> None:
    sink = RecordingSink()
    source = KubernetesSource(KubeConfig(str(tmp_path / "missing"), backoff_initial_s=0.1, backoff_max_s=0.1))
    async with running(source, sink):
        await until(lambda: bool(sink.errors), what="an error report")
    assert "cannot load the Kubernetes configuration" in sink.errors[0]


def test_app_builds_the_kubernetes_source_last(tmp_path: Path) -> None:
    from xds.app import _sources_from
    from xds.sources.consul import ConsulConfig, ConsulSource

    kube = KubeConfig(str(tmp_path / "k"), server="https://10.0.0.1:6443")
    sources = _sources_from(Settings(consul=ConsulConfig("http://127.0.0.1:8500"), kubernetes=kube))
    assert [type(s) for s in sources] == [ConsulSource, KubernetesSource]
    assert sources[1].name == "kubernetes:https://10.0.0.1:6443"
