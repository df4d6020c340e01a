"""Issue 12: an idle synced stream holds its protocol state, not its last response or a copy of the names.

The whole app in-process with a real grpc.aio ADS server and STREAMS real ADS clients that sync (CDS, EDS
for every cluster, LDS, RDS, each ACKed) and then idle. Before issue 12's fix the handler frames
(grpc_server._bind's serve, StreamHandler.handle and _serve) kept the last encoded response alive while
waiting for the next one, and the NACK loop kept a per-stream tuple of every name sent per type: about
57 KiB of the ~112 KiB RSS per idle stream at 1000 services (benchmarks/README.md). What must remain is the
stream's protocol state, which shares the snapshot's structures.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import types
from collections.abc import AsyncIterator

import grpc
import pytest

from xds.app import App
from xds.load_settings import LoadSettings
from xds.model.service import Catalog, Endpoint, Service, ServiceName
from xds.policy.schema import BackendRef, ListenerPolicy, Policy, RoutePolicy, ServicePolicy
from xds.server.nack_loop import NackLoop
from xds.settings import Settings
from xds.sources.base import SourceSink, SourceUpdate
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

from .ads_client import AdsClient

SERVICES = 300
STREAMS = 20
NAMES = [f"svc-{i:03d}" for i in range(SERVICES)]
POLICY = Policy(
    services=tuple(ServicePolicy(name) for name in NAMES),
    listeners=(ListenerPolicy("ingress", port=10000, routes=tuple(
        RoutePolicy(name, f"/{name}/", backends=(BackendRef(name),)) for name in NAMES)),),
)
CATALOG = Catalog(tuple(
    Service(ServiceName(name), tuple(Endpoint(f"10.0.{i}.{j + 1}", 8080, source="static") for j in range(4)))
    for i, name in enumerate(NAMES)))


class StaticSource:
    name = "static"

    async def run(self, sink: SourceSink) -> None:
        sink.publish(SourceUpdate(self.name, CATALOG, POLICY))
        await asyncio.Event().wait()


@pytest.fixture
async def app() -> AsyncIterator[App]:
    app = App(Settings(xds_address="127.0.0.1:0", admin_address="127.0.0.1:0",
                       management_address="127.0.0.1:0", debounce_s=0.001,
                       load=LoadSettings(report_address="127.0.0.1:0")),
              sources=[StaticSource()])
    task = asyncio.create_task(app.run())
    await asyncio.wait_for(app.started.wait(), 10)
    try:
        yield app
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def sync(client: AdsClient) -> int:
    """Envoy's ADS start-up, every response ACKed; returns the smallest response's size in bytes."""
    smallest = 1 << 30
    for type_url, names in ((CLUSTER, ()), (ENDPOINT, NAMES), (LISTENER, ()), (ROUTE, ["ingress"])):
        client.send(type_url, names)
        response = await client.recv(timeout_s=10)
        assert response.type_url == type_url and response.resources, type_url
        smallest = min(smallest, response.ByteSize())
        client.ack(response, names)
    return smallest


_SERVER_DIR = f"{os.sep}xds{os.sep}server{os.sep}"


def server_frames() -> list[types.FrameType]:
    """The suspended frames of the server's coroutines and async generators (xds/server/*)."""
    frames = []
    for obj in gc.get_objects():
        if isinstance(obj, types.AsyncGeneratorType):
            frame = obj.ag_frame
        elif isinstance(obj, types.CoroutineType):
            frame = obj.cr_frame
        else:
            continue
        if frame is not None and _SERVER_DIR in frame.f_code.co_filename:
            frames.append(frame)
    return frames


async def test_an_idle_synced_stream_keeps_no_response_and_shares_the_names_sent(app: App) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.xds_port}") as channel:
        clients = [AdsClient(channel, node_id=f"n{i}", cluster="edge") for i in range(STREAMS)]
        smallest = min(await asyncio.gather(*(sync(c) for c in clients)))
        gc.collect()
        frames = server_frames()
        assert len(frames) >= STREAMS  # at least each stream's handler
        kept = [(frame.f_code.co_name, name, len(value)) for frame in frames
                for name, value in frame.f_locals.items()
                if isinstance(value, bytes) and len(value) >= smallest]
        # Each was a whole response (RDS here, 300 routes) held per idle stream until its next response.
        assert kept == [], f"idle stream frames keep responses alive: {kept[:5]}"

        # The names of every response sent are kept per stream for NACKs (nack_loop.py): for a whole set
        # (wildcard CDS and LDS) one tuple shared by all streams, not a copy each (300 names: 2.4 KiB).
        loops = [obj for obj in gc.get_objects() if isinstance(obj, NackLoop)]
        assert len(loops) == 1
        sent = list(loops[0]._sent.values())
        assert len(sent) == STREAMS
        for type_url in (CLUSTER, LISTENER):
            tuples = {id(per_stream[type_url][1]) for per_stream in sent}
            assert len(tuples) == 1, f"{type_url}: {len(tuples)} copies of the names sent"
        for client in clients:
            client.close()
