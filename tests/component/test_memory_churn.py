"""Issue 7: memory under registry churn stays flat.

The whole app in-process (source -> pipeline -> store -> snapshot -> a real grpc.aio ADS server) with one
client that receives and ACKs every edit. Each edit changes the weight of every endpoint of every service,
as health and weight churn from Consul or Kubernetes does. The memory Python holds after edit 200 must stay
within a small bound of what it held after edit 20.

The leak this guards against was a process-wide translation cache keyed by frozen ClusterSpec
(translate/build.py): every edit added one entry per changed service, each keeping the spec with its
endpoints and the built protos. At this size it grew the traced memory by about 24 KiB per edit (4.2 MiB
between edits 20 and 200), and RSS by several times that (the protos live in upb's C heap, which
tracemalloc does not see). tracemalloc is used rather than RSS because it counts live Python objects
exactly: RSS also moves with allocator fragmentation and arena reuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import tracemalloc
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from xds.app import App
from xds.load_settings import LoadSettings
from xds.model.service import Catalog, Endpoint, Service, ServiceName
from xds.policy.schema import BackendRef, ListenerPolicy, Policy, RoutePolicy, ServicePolicy
from xds.settings import Settings
from xds.sources.base import SourceSink, SourceUpdate
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

from .ads_client import AdsClient

SERVICES = 60
ENDPOINTS = 10
EDITS = 200
# Tracing starts here, so allocations from start-up and the first sync are not part of either measurement.
TRACE_FROM = 10
BASELINE_AT = 20
# Between edits 20 and 200 a leak-free server holds the same state as before: one catalog, one world, one
# snapshot, a stream's last responses. One generation of that state (600 endpoints, their specs and the
# snapshot) is about 0.4 MiB of traced memory, which is what edit 20 measures (tracing began at edit 10). The
# fixed server grew by about 0.03 MiB over the 180 edits; the old leak by 4.2 MiB. 1 MiB leaves room for
# two more generations caught in flight at the measurement (a build, a response being written), and is
# still a quarter of the leak.
GROWTH_BOUND_BYTES = 1024 * 1024

POLICY = Policy(
    services=tuple(ServicePolicy(f"svc-{i:03d}") for i in range(SERVICES)),
    listeners=(ListenerPolicy("ingress", port=10000, routes=tuple(
        RoutePolicy(f"svc-{i:03d}", f"/svc-{i:03d}/", backends=(BackendRef(f"svc-{i:03d}"),))
        for i in range(SERVICES))),),
)


def weight(edit: int, endpoint: int) -> int:
    return 1 + (edit + endpoint) % 50  # every weight changes on every edit


def catalog(edit: int) -> Catalog:
    return Catalog(tuple(
        Service(ServiceName(f"svc-{i:03d}"), tuple(
            Endpoint(f"10.0.{i}.{j + 1}", 8080, weight=weight(edit, j), source="churn")
            for j in range(ENDPOINTS)))
        for i in range(SERVICES)))


class ChurnSource:
    """A registry stand-in: publishes each catalog it is given, as the Consul and Kubernetes sources do."""

    name = "churn"

    def __init__(self) -> None:
        self.catalogs: asyncio.Queue[Catalog] = asyncio.Queue()

    async def run(self, sink: SourceSink) -> None:
        while True:
            sink.publish(SourceUpdate(self.name, await self.catalogs.get(), POLICY))


@pytest.fixture
async def churn() -> AsyncIterator[tuple[App, ChurnSource]]:
    source = ChurnSource()
    app = App(Settings(xds_address="127.0.0.1:0", admin_address="127.0.0.1:0",
                       management_address="127.0.0.1:0", debounce_s=0.001,
                       load=LoadSettings(report_address="127.0.0.1:0")),
              sources=[source])
    task = asyncio.create_task(app.run())
    await asyncio.wait_for(app.started.wait(), 10)
    try:
        yield app, source
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until_endpoints(client: AdsClient, names: list[str]) -> discovery_pb2.DiscoveryResponse:
    """ACK whatever arrives (keeping the subscriptions) until an EDS response does."""
    while True:
        response = await client.recv(timeout_s=10)
        client.ack(response, names if response.type_url == ENDPOINT else
                   ["ingress"] if response.type_url == ROUTE else ())
        if response.type_url == ENDPOINT:
            return response


def weights_of_first(response: discovery_pb2.DiscoveryResponse) -> list[int]:
    assignment = endpoint_pb2.ClusterLoadAssignment()
    assert response.resources[0].Unpack(assignment)
    return sorted(e.load_balancing_weight.value for group in assignment.endpoints for e in group.lb_endpoints)


async def test_memory_after_200_edits_stays_within_a_bound_of_memory_after_20(
        churn: tuple[App, ChurnSource], caplog: pytest.LogCaptureFixture) -> None:
    # Log records kept by pytest's capture would grow with the edits: only warnings are let through.
    caplog.set_level(logging.WARNING, logger="xds")
    app, source = churn
    names = [f"svc-{i:03d}" for i in range(SERVICES)]
    source.catalogs.put_nowait(catalog(0))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.xds_port}") as channel:
        client = AdsClient(channel, cluster="edge")
        client.send(CLUSTER)
        client.ack(await client.recv(timeout_s=10))
        client.send(ENDPOINT, names)
        client.ack(await client.recv(), names)
        client.send(LISTENER)
        client.ack(await client.recv())
        client.send(ROUTE, ["ingress"])
        client.ack(await client.recv(), ["ingress"])

        measured: dict[int, int] = {}
        try:
            for edit in range(1, EDITS + 1):
                if edit == TRACE_FROM:
                    tracemalloc.start()
                source.catalogs.put_nowait(catalog(edit))
                response = await until_endpoints(client, names)
                assert weights_of_first(response) == sorted(weight(edit, j) for j in range(ENDPOINTS))
                client.received.clear()  # the test client's own history is not the server's memory
                if edit in (BASELINE_AT, EDITS):
                    gc.collect()
                    measured[edit] = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        client.close()

    growth = measured[EDITS] - measured[BASELINE_AT]
    assert growth < GROWTH_BOUND_BYTES, (
        f"traced memory grew by {growth / 2**20:.1f} MiB between edit {BASELINE_AT} and edit {EDITS} "
        f"({measured[BASELINE_AT] / 2**20:.1f} -> {measured[EDITS] / 2**20:.1f} MiB)")
