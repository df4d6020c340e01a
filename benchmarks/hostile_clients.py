"""Hostile clients: issue 7's measurements of what one xDS client can make the control plane hold.

    python -m benchmarks.hostile_clients [--server-src PATH]... [--services 300] [--endpoints 20]
                                         [--groups 400] [--edits 3] [--grace 2] [--only NAME,...] [--quick]

Theory of operation
-------------------
Each `--server-src` is a source tree of the control plane (default: this checkout). Its server runs as a
child process, `python -m xds serve --config catalog.yaml` on 127.0.0.1 with the venv's interpreter, with
PYTHONPATH and the working directory set to that tree, so an old commit checked out in a worktree runs with
the same dependencies (`git worktree add /tmp/xds-old 8483e07`). Flags an old tree lacks (the node-group
grace of issue 7) are passed only to a tree whose `xds serve --help` lists them. With two trees, the first
is "old", the last "new", and the table gets a new/old column.

Every scenario starts a fresh server on a catalog of `--services` x `--endpoints` (one listener with a route
per service), so its RSS and log are its own, and measures:
  client status   what the hostile client got: OK (answered), a gRPC status, or how far it got;
  RSS             server VmRSS (/proc/<pid>/status) before the attack, its peak during it (sampled with
                  the /healthz polls), and after it (for the unread-requests scenarios also after the
                  client disconnected);
  log written     bytes the server's log grew by during the scenario;
  /status, ListProxies   sizes of the admin page and the management API listing, read while the hostile
                  streams are open (what an operator's `xds status` would have to download);
  /healthz max    the slowest /healthz answer over polls every 50 ms while the attack runs (the event
                  loop's stall; polled from a thread of this process, so it shares a core with the clients);
  groups held     node groups the server keeps: `xds_node_groups` (live + idle) from /metrics, or the
                  `groups` of /status for a server without that metric;
  fresh client    milliseconds for a new client of another group to get its clusters after the attack.

The scenarios (issue 7's findings):
  groups-idle     `--groups` short-lived streams, each with its own node.cluster, opened (CDS wildcard,
                  first response) and closed in batches of 50, while a healthy ADS client (CDS + EDS of
                  every cluster, ACKing everything) stays connected. Edit -> healthy client latency is
                  measured `--edits` times before the churn and after it, with a grace long enough that no
                  group expires meanwhile: the held-but-idle case.
  groups-expired  the same with `--node-group-grace` (default 2 s): the latency is measured again once the
                  groups have expired (or after the grace plus 5 s, for a server that never drops them).
  node-id-8mib    5 streams whose node.id is 8 MiB, kept open.
  node-id-1mib    the same with 1 MiB: under the new request limit, over the node.id limit.
  unread-14mib    one stream sends 24 EDS requests of ~14 MiB and reads nothing: each names every cluster
                  (so each has an answer to push) plus new names of 1000 bytes the snapshot lacks.
  unread-3.9mib   the same with 40 requests just under the new 4 MiB request limit.
  eds-100k        5 streams each ask EDS for 100 000 names the snapshot lacks and read the answer.
  eds-20k         the same with 20 000 names, the new per-request limit.
  deep-metadata   node.metadata nested 150 levels (past protobuf's own recursion limit) and 20 levels.
  stuck-reader    (issue 12) one stream asks CDS and EDS of every service and never reads, while the
                  catalog changes 50 times (every endpoint weight) and a healthy client confirms each
                  change; a server with --write-timeout gets 5 s (1 s with --quick). RSS held, the
                  stuck stream's status and `xds_limit_exceeded_total{limit="write_timeout_s"}`.

An edit rewrites every endpoint weight (temporary file + os.replace), so every EDS resource changes, as
health and weight churn from a registry does; the latency runs from the rename to the healthy client
receiving an EDS response with a new version, and includes the file poll (0.2 s) and debounce (0.05 s).
The healthy client's group is `healthy`, which sorts after the churn groups' `churn-NNNN`: a server that
rebuilds every group in name order rebuilds it last.

Every loop is bounded in count and time; traffic goes to 127.0.0.1 only. A server whose RSS passes
`--max-server-rss-mb` is killed and the scenario reported as such. This process holds at most one copy
of each hostile payload (the largest 14 MiB) and the largest listing it reads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO, TypeAlias

import grpc
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from harness import LOOPBACK, ManagedProcess, ProcessExitedError, free_ports
from xds.cache.snapshot import length_delimited
from xds.typeurls import CLUSTER, ENDPOINT

REPO = Path(__file__).resolve().parent.parent
ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
LIST_PROXIES_METHOD = "/xds.management.v1.Management/ListProxies"
HEALTHY_GROUP = "healthy"
HOSTILE_GROUP = "hostile"
MIB = 1024 * 1024
# The grace given to the groups-idle scenario: longer than any run, so no group expires during it.
_NO_EXPIRY_GRACE_S = 3600.0
_HEALTHZ_INTERVAL_S = 0.05
_ADMIN_TIMEOUT_S = 30.0  # a stalled server answers late; that lateness is the measurement
_STARTUP_TIMEOUT_S = 60.0
# Each channel gets its own connection: a stream that does not read must not hold back the healthy
# client's stream through a shared HTTP/2 connection window.
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1),
                    ("grpc.max_receive_message_length", 256 * MIB),
                    ("grpc.use_local_subchannel_pool", 1)]

Value: TypeAlias = int | float | str
Row: TypeAlias = tuple[str, Value]


@dataclass(frozen=True, slots=True)
class Plan:
    services: int = 300
    endpoints: int = 20
    groups: int = 400
    churn_batch: int = 50
    edits: int = 3
    grace_s: float = 2.0
    node_id_streams: int = 5
    unread_requests: int = 24
    unread_big_bytes: int = 14 * MIB
    # Under the 4 MiB default of --max-request-bytes, and more of them than the new server reads before it
    # stops (its queue of 8 requests plus what HTTP/2 windows hold: about 27 here).
    unread_small_bytes: int = 3_900_000
    unread_small_requests: int = 40
    unread_budget_s: float = 15.0  # for sending all of them; a server that stops reading stops us here
    eds_big_names: int = 100_000
    eds_allowed_names: int = 20_000
    eds_streams: int = 5
    settle_s: float = 2.0  # after an attack, before "after" is read: let the server finish and free
    response_timeout_s: float = 60.0
    max_server_rss_mb: int = 6000
    # stuck-reader (issue 12): catalog changes while one stream reads nothing, and the --write-timeout
    # given to a server that has it.
    stuck_changes: int = 50
    stuck_write_timeout_s: float = 5.0


QUICK = Plan(services=20, endpoints=2, groups=12, churn_batch=6, edits=1, grace_s=0.6, node_id_streams=2,
             unread_requests=4, unread_small_requests=6, unread_budget_s=1.0, eds_streams=2, settle_s=0.2,
             response_timeout_s=20.0, stuck_changes=3, stuck_write_timeout_s=1.0)


# --- the catalog ------------------------------------------------------------------------------------------


def catalog_text(plan: Plan, edit: int) -> str:
    """`plan.services` services of `plan.endpoints` endpoints; each `edit` gives every endpoint a new
    weight."""
    def host(service: int, endpoint: int) -> str:
        n = service * plan.endpoints + endpoint + 1
        return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}:8080"

    names = service_names(plan)
    document = {
        "version": 1,
        "services": [{"name": name,
                      "endpoints": [{"address": host(i, j), "weight": (edit + i + j) % 100 + 1}
                                    for j in range(plan.endpoints)]}
                     for i, name in enumerate(names)],
        "listeners": [{"name": "ingress", "port": 10000,
                       "routes": [{"name": name, "match": {"prefix": f"/{name}/"},
                                   "backends": [{"service": name}]} for name in names]}],
    }
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return str(yaml.dump(document, Dumper=dumper, sort_keys=False))


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- the server under test --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerSource:
    path: Path
    revision: str
    has_limits: bool  # knows issue 7's flags (--node-group-grace and friends)
    has_management_port: bool = False  # serves the management API on its own listener (issue 9)
    has_write_timeout: bool = False  # ends streams that stop reading (issue 12)

    @property
    def label(self) -> str:
        return self.revision or self.path.name

    @classmethod
    def inspect(cls, path: Path) -> ServerSource:
        path = path.resolve()
        if not (path / "xds" / "__main__.py").is_file():
            raise SystemExit(f"hostile_clients: {path} is not a source tree of the control plane")
        revision = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        help_text = subprocess.run([sys.executable, "-m", "xds", "serve", "--help"], capture_output=True,
                                   text=True, timeout=60, check=False, cwd=path, env=_env_for(path)).stdout
        return cls(path, revision, "--node-group-grace" in help_text, "--management-address" in help_text,
                   "--write-timeout" in help_text)


def _env_for(src: Path) -> dict[str, str]:
    # The working directory comes first on sys.path for `python -m`, PYTHONPATH second, and the venv's
    # editable install of this checkout only after both: the tree given is the one that runs.
    return {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}


class Server:
    """One `xds serve` child process of a source tree, with the probes the scenarios read."""

    def __init__(self, source: ServerSource, *, catalog: Path, workdir: Path, name: str,
                 grace_s: float | None, write_timeout_s: float | None = None) -> None:
        self.source = source
        self._write_timeout_s = write_timeout_s
        self._catalog = catalog
        self._workdir = workdir
        self._name = name
        self._grace_s = grace_s
        self.xds_port = 0
        self.admin_port = 0
        self.management_port = 0
        self._process: ManagedProcess | None = None
        self.killed_for_rss = False

    def start(self) -> None:
        for attempt in range(3):  # a free port can be taken by another process before the server binds it
            self.xds_port, self.admin_port, self.management_port = free_ports(3)
            extra = (("--node-group-grace", f"{self._grace_s:g}")
                     if self._grace_s is not None and self.source.has_limits else ())
            if self.source.has_management_port:
                extra += ("--management-address", f"{LOOPBACK}:{self.management_port}")
            if self._write_timeout_s is not None and self.source.has_write_timeout:
                extra += ("--write-timeout", f"{self._write_timeout_s:g}")
            args = [sys.executable, "-m", "xds", "serve", "--config", str(self._catalog),
                    "--xds-address", f"{LOOPBACK}:{self.xds_port}",
                    "--admin-address", f"{LOOPBACK}:{self.admin_port}", "--log-format", "json", *extra]
            self._process = ManagedProcess(f"{self._name}-{attempt}", args, log_dir=self._workdir,
                                           env=_env_for(self.source.path), cwd=self.source.path)
            self._process.start()
            try:
                self._wait_ready()
                return
            except ProcessExitedError:
                if attempt == 2 or "address already in use" not in self._process.tail(200).lower():
                    raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            self.process.check_alive()
            with contextlib.suppress(OSError):
                if self.get("/ready", timeout_s=2.0)[0] == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"server not ready in {_STARTUP_TIMEOUT_S:g} s:\n{self.process.tail()}")

    @property
    def process(self) -> ManagedProcess:
        assert self._process is not None, "start() first"
        return self._process

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(timeout_s=10.0)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.xds_port}"

    @property
    def management_address(self) -> str:
        """The management API: its own port since issue 9, the xDS port before."""
        return f"{LOOPBACK}:{self.management_port}" if self.source.has_management_port else self.address

    def rss_bytes(self) -> int:
        """VmRSS of the server process; 0 once it is gone."""
        try:
            text = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
        return int(match.group(1)) * 1024 if match else 0

    def log_bytes(self) -> int:
        try:
            return self.process.log_path.stat().st_size
        except OSError:
            return 0

    def get(self, path: str, *, timeout_s: float = _ADMIN_TIMEOUT_S) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(LOOPBACK, self.admin_port, timeout=timeout_s)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def groups_held(self) -> int:
        """Node groups held: xds_node_groups (live + idle) where the server has it, else /status groups."""
        _, body = self.get("/metrics")
        series = re.findall(rb'^xds_node_groups\{state="(?:live|idle)"\} ([0-9.e+]+)$', body, re.MULTILINE)
        if series:
            return int(sum(float(v) for v in series))
        _, status = self.get("/status")
        return len(json.loads(status).get("groups", {}))

    def kill(self) -> None:
        self.process.kill()


class Watch:
    """Polls /healthz every 50 ms from a thread, recording the slowest answer and the server's peak RSS,
    and kills the server if its RSS passes the limit. Bounded by `stop()` and by `max_s`."""

    def __init__(self, server: Server, *, max_rss_bytes: int, max_s: float) -> None:
        self._server = server
        self._max_rss = max_rss_bytes
        self._max_s = max_s
        self._stop = threading.Event()
        self.slowest_s = 0.0
        self.failures = 0
        self.peak_rss = server.rss_bytes()
        self._thread = threading.Thread(target=self._run, name="healthz-watch", daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=_ADMIN_TIMEOUT_S + 5)

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_s
        for _ in range(int(self._max_s / _HEALTHZ_INTERVAL_S) + 1):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            rss = self._server.rss_bytes()
            self.peak_rss = max(self.peak_rss, rss)
            if rss > self._max_rss:
                self._server.killed_for_rss = True
                self._server.kill()
                return
            began = time.monotonic()
            try:
                status, _ = self._server.get("/healthz")
                if status != 200:
                    self.failures += 1
            except OSError:
                self.failures += 1
            self.slowest_s = max(self.slowest_s, time.monotonic() - began)
            self._stop.wait(_HEALTHZ_INTERVAL_S)


# --- xDS clients ------------------------------------------------------------------------------------------


def _identity(payload: bytes) -> bytes:
    return payload


def channel_to(server: Server) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(server.address, options=_CHANNEL_OPTIONS)


def ads_call(channel: grpc.aio.Channel) -> grpc.aio.StreamStreamCall[bytes, bytes]:
    """An ADS stream written and read as raw bytes (the hostile payloads are built once, never re-encoded)."""
    method = channel.stream_stream(ADS_METHOD, request_serializer=_identity, response_deserializer=_identity)
    return method()


def request_bytes(type_url: str, *, node_id: str = "", cluster: str = HOSTILE_GROUP,
                  names: Sequence[str] = (), metadata: struct_pb2.Struct | None = None) -> bytes:
    message = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names))
    if node_id:
        message.node.CopyFrom(base_pb2.Node(id=node_id, cluster=cluster))
        if metadata is not None:
            message.node.metadata.CopyFrom(metadata)
    payload: bytes = message.SerializeToString()
    return payload


def service_names(plan: Plan) -> list[str]:
    """The catalog's services, which are also its clusters' and EDS resources' names."""
    return [f"svc-{i:05d}" for i in range(plan.services)]


def unread_requests(plan: Plan, *, count: int, size_bytes: int) -> Iterator[bytes]:
    """`count` EDS requests of about `size_bytes`: every cluster of the catalog (so each one
    has an answer of real assignments to push) and distinct names of 1000 bytes (the new per-name limit is
    1 KiB) the snapshot lacks, new in every request, so each is a subscription change. Built one at a time:
    this process holds one or two, never all of them."""
    per_request = max(1, (size_bytes - 12 * plan.services) // 1004)
    for k in range(count):
        padding = [f"{k:03d}-{i:08d}-".ljust(1000, "n") for i in range(per_request)]
        yield request_bytes(ENDPOINT, node_id="unread-1", names=[*service_names(plan), *padding])


def too_deep_metadata_request(levels: int) -> bytes:
    """A DiscoveryRequest whose node.metadata is nested `levels` Structs deep, encoded by hand: past
    protobuf's recursion limit (100 messages) the library cannot build it."""
    struct = b""
    for _ in range(levels):
        value = length_delimited(5, struct)  # Value.struct_value
        struct = length_delimited(1, length_delimited(1, b"x") + length_delimited(2, value))  # Struct.fields
    node = (length_delimited(1, b"deep") + length_delimited(2, HOSTILE_GROUP.encode())
            + length_delimited(3, struct))
    return length_delimited(3, node) + length_delimited(4, CLUSTER.encode())


def nested_metadata(levels: int) -> struct_pb2.Struct:
    root = struct_pb2.Struct()
    inner = root
    for _ in range(levels - 1):
        inner = inner.fields["x"].struct_value
    inner.fields["leaf"].string_value = "v"
    return root


class HostileStream:
    """One raw ADS stream: writes prepared payloads within a time budget, optionally reads (counting bytes
    and, if asked, resources), and says how it ended."""

    def __init__(self, channel: grpc.aio.Channel, *, read: bool, count_resources: bool = False) -> None:
        self._call = ads_call(channel)
        self._count_resources = count_resources
        self.responses = 0
        self.response_bytes = 0
        self.resources = 0
        self.written = 0
        self._answered = asyncio.Event()
        self._ended = asyncio.ensure_future(self._call.code())
        self._reader = asyncio.ensure_future(self._read()) if read else None
        self._pending_write: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            while True:
                raw = await self._call.read()
                if raw is grpc.aio.EOF or not isinstance(raw, bytes):
                    return
                self.responses += 1
                self.response_bytes += len(raw)
                if self._count_resources:
                    self.resources += len(discovery_pb2.DiscoveryResponse.FromString(raw).resources)
                self._answered.set()

    async def send(self, payloads: Iterable[bytes], *, budget_s: float) -> int:
        """Write `payloads` in order until one is not taken within what is left of `budget_s` (the server
        stopped reading) or the stream ends; the number written."""
        deadline = time.monotonic() + budget_s
        for payload in payloads:
            self._pending_write = asyncio.ensure_future(self._call.write(payload))
            done, _ = await asyncio.wait({self._pending_write, self._ended},
                                         timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if self._pending_write not in done or self._pending_write.exception() is not None:
                break
            self._pending_write = None
            self.written += 1
        return self.written

    async def outcome(self, timeout_s: float) -> str:
        """OK once a response arrived, the status code if the stream ended, else "no answer"."""
        answered = asyncio.ensure_future(self._answered.wait())
        try:
            await asyncio.wait({answered, self._ended}, timeout=timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            answered.cancel()
        if self._answered.is_set():
            return "OK"
        return await self.status_now() or "no answer"

    async def status_now(self) -> str | None:
        """The stream's status if it ended: the code, and for a code that does not say what happened
        (INTERNAL, UNKNOWN: a stream reset while the client was still writing) the start of its details."""
        if not self._ended.done():
            return None
        code = self._ended.result()
        if code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            return str(code.name)
        details = (await self._call.details()) or ""
        return f"{code.name} ({details[:60].encode('ascii', 'backslashreplace').decode()})"

    def close(self) -> None:
        self._call.cancel()
        for task in (self._reader, self._pending_write):
            if task is not None:
                task.cancel()


async def short_lived(channel: grpc.aio.Channel, *, node_id: str, cluster: str, timeout_s: float) -> str:
    """Open a stream, ask for every cluster, wait for the answer, leave: OK or the status it got."""
    stream = HostileStream(channel, read=True)
    try:
        await stream.send([request_bytes(CLUSTER, node_id=node_id, cluster=cluster)], budget_s=timeout_s)
        return await stream.outcome(timeout_s)
    finally:
        stream.close()


class HealthyClient:
    """A well-behaved ADS client: CDS wildcard, EDS for every cluster, every response ACKed at once."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        method = channel.stream_stream(
            ADS_METHOD, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString)
        self._call: grpc.aio.StreamStreamCall[discovery_pb2.DiscoveryRequest,
                                              discovery_pb2.DiscoveryResponse] = method()
        self.versions: dict[str, str] = {}
        self.arrived: dict[str, float] = {}
        self._nonces: dict[str, str] = {}
        self._eds_names: list[str] = []
        self.eds_bytes = 0
        self._changed = asyncio.Event()
        self._failure: BaseException | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float) -> None:
        await self._send(CLUSTER, [], first=True)
        self._reader = asyncio.ensure_future(self._read())
        await self.wait_version_change(ENDPOINT, "", timeout_s)

    async def _send(self, type_url: str, names: list[str], *, first: bool = False) -> None:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names,
                                                 version_info=self.versions.get(type_url, ""),
                                                 response_nonce=self._nonces.get(type_url, ""))
        if first:
            request.node.CopyFrom(base_pb2.Node(id="healthy-1", cluster=HEALTHY_GROUP))
        await self._call.write(request)

    async def _read(self) -> None:
        try:
            while True:
                response = await self._call.read()
                if not isinstance(response, discovery_pb2.DiscoveryResponse):
                    raise RuntimeError("the healthy client's stream ended")
                at = time.monotonic()
                type_url = response.type_url
                self.versions[type_url], self._nonces[type_url] = response.version_info, response.nonce
                self.arrived[type_url] = at
                if type_url == ENDPOINT:
                    self.eds_bytes = response.ByteSize()
                if type_url == CLUSTER:
                    names = sorted(_cluster_names(response))
                    await self._send(CLUSTER, [])
                    if names != self._eds_names:
                        self._eds_names = names
                        await self._send(ENDPOINT, names)
                else:
                    await self._send(type_url, self._eds_names if type_url == ENDPOINT else [])
                self._changed.set()
        except (grpc.aio.AioRpcError, RuntimeError, asyncio.InvalidStateError) as exc:
            self._failure = exc
            self._changed.set()

    async def wait_version_change(self, type_url: str, old: str, timeout_s: float) -> float:
        """When a response of `type_url` with a version other than `old` arrived (monotonic seconds)."""
        deadline = time.monotonic() + timeout_s
        while True:
            version = self.versions.get(type_url, "")
            if version and version != old:
                return self.arrived[type_url]
            if self._failure is not None:
                raise RuntimeError(f"healthy client failed: {self._failure}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no new {type_url.rsplit('.', 1)[-1]} version in {timeout_s:g} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def close(self) -> None:
        self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()


def _cluster_names(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    names = []
    for packed in response.resources:
        cluster = cluster_pb2.Cluster()
        packed.Unpack(cluster)
        if cluster.type == cluster_pb2.Cluster.EDS:
            names.append(cluster.eds_cluster_config.service_name or cluster.name)
    return names


async def list_proxies_bytes(server: Server) -> int:
    async with grpc.aio.insecure_channel(server.management_address, options=_CHANNEL_OPTIONS) as channel:
        method = channel.unary_unary(LIST_PROXIES_METHOD, request_serializer=_identity,
                                     response_deserializer=_identity)
        payload = await method(b"", timeout=_ADMIN_TIMEOUT_S)
        return len(payload)


# --- scenarios --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Context:
    """What a scenario works with, and what it reports beyond the common rows."""

    plan: Plan
    server: Server
    catalog: Path
    channel: grpc.aio.Channel
    rows: list[Row] = field(default_factory=list)
    status: str = ""
    sizes_read: bool = False
    rss_held: int | None = None

    async def read_sizes(self) -> None:
        """Record /status and ListProxies sizes now (while the hostile streams are open)."""
        _, body = await asyncio.to_thread(self.server.get, "/status")
        listing = await list_proxies_bytes(self.server)
        self.rows += [("/status size (KB)", len(body) / 1e3), ("ListProxies size (KB)", listing / 1e3)]
        self.sizes_read = True


Scenario: TypeAlias = Callable[[Context], Awaitable[None]]


async def _edit_latencies(ctx: Context, client: HealthyClient, first_edit: int) -> list[float]:
    latencies = []
    for k in range(ctx.plan.edits):
        text = catalog_text(ctx.plan, edit=first_edit + k)
        old = client.versions.get(ENDPOINT, "")
        written = time.monotonic()
        write_atomically(ctx.catalog, text)
        arrived = await client.wait_version_change(ENDPOINT, old, ctx.plan.response_timeout_s)
        latencies.append(arrived - written)
        await asyncio.sleep(0.3)  # let any follow-up pushes of this edit finish before the next one
    return latencies


async def _groups(ctx: Context, *, wait_for_expiry: bool) -> None:
    plan = ctx.plan
    healthy_channel = channel_to(ctx.server)
    client = HealthyClient(healthy_channel)
    try:
        await client.start(plan.response_timeout_s)
        before = await _edit_latencies(ctx, client, first_edit=1)
        outcomes: dict[str, int] = {}
        began = time.monotonic()
        for start in range(0, plan.groups, plan.churn_batch):
            batch = range(start, min(plan.groups, start + plan.churn_batch))
            results = await asyncio.gather(*(short_lived(ctx.channel, node_id=f"churn-{i:04d}",
                                                         cluster=f"churn-{i:04d}",
                                                         timeout_s=plan.response_timeout_s) for i in batch))
            for result in results:
                outcomes[result] = outcomes.get(result, 0) + 1
        churn_s = time.monotonic() - began
        ctx.status = ", ".join(f"{n} {status}" for status, n in sorted(outcomes.items()))
        await asyncio.sleep(0.2)  # the server notices the closed streams asynchronously
        held = await asyncio.to_thread(ctx.server.groups_held)
        await ctx.read_sizes()
        ctx.rows += [("churn duration (s)", churn_s), ("groups held after churn", held)]
        if wait_for_expiry:
            deadline = time.monotonic() + plan.grace_s + 5.0
            while held > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                held = await asyncio.to_thread(ctx.server.groups_held)
            ctx.rows.append(("groups held after grace", held))
        after = await _edit_latencies(ctx, client, first_edit=1 + plan.edits)
        ctx.rows += [("edit->client s, 0 groups (median)", statistics.median(before)),
                     ("edit->client s, after churn (median)", statistics.median(after)),
                     ("edit->client s, after churn (max)", max(after))]
    finally:
        client.close()
        await healthy_channel.close()


async def groups_idle(ctx: Context) -> None:
    await _groups(ctx, wait_for_expiry=False)


async def groups_expired(ctx: Context) -> None:
    await _groups(ctx, wait_for_expiry=True)


async def _node_id(ctx: Context, size_bytes: int) -> None:
    plan = ctx.plan
    # One payload per stream (distinct ids), built one at a time and dropped once written.
    streams = []
    for i in range(plan.node_id_streams):
        stream = HostileStream(ctx.channel, read=True)
        node_id = f"{i:04d}".ljust(size_bytes, "i")
        await stream.send([request_bytes(CLUSTER, node_id=node_id)], budget_s=plan.response_timeout_s)
        streams.append(stream)
    try:
        outcomes = [await s.outcome(plan.response_timeout_s) for s in streams]
        ctx.status = _summary(outcomes)
        await ctx.read_sizes()
    finally:
        for stream in streams:
            stream.close()


async def node_id_8mib(ctx: Context) -> None:
    await _node_id(ctx, 8 * MIB)


async def node_id_1mib(ctx: Context) -> None:
    await _node_id(ctx, 1 * MIB)


async def _unread(ctx: Context, count: int, size_bytes: int) -> None:
    plan = ctx.plan
    stream = HostileStream(ctx.channel, read=False)
    try:
        requests = unread_requests(plan, count=count, size_bytes=size_bytes)
        written = await stream.send(requests, budget_s=plan.unread_budget_s)
        await asyncio.sleep(plan.settle_s)
        ended = await stream.status_now()
        ctx.status = ended or f"{written}/{count} written, open"
        ctx.rss_held = ctx.server.rss_bytes()
        await ctx.read_sizes()
        ctx.rows.append(("requests written", written))
    finally:
        stream.close()


async def unread_big(ctx: Context) -> None:
    await _unread(ctx, ctx.plan.unread_requests, ctx.plan.unread_big_bytes)


async def unread_small(ctx: Context) -> None:
    await _unread(ctx, ctx.plan.unread_small_requests, ctx.plan.unread_small_bytes)


async def _eds(ctx: Context, names: int) -> None:
    plan = ctx.plan
    payload = request_bytes(ENDPOINT, node_id="eds-1", names=[f"ghost-{i:06d}" for i in range(names)])
    streams = [HostileStream(ctx.channel, read=True, count_resources=True) for _ in range(plan.eds_streams)]
    try:
        began = time.monotonic()
        await asyncio.gather(*(s.send([payload], budget_s=plan.response_timeout_s) for s in streams))
        outcomes = [await s.outcome(plan.response_timeout_s) for s in streams]
        answered_s = time.monotonic() - began
        ctx.status = _summary(outcomes)
        await ctx.read_sizes()
        first = streams[0]
        ctx.rows += [("request size (KB)", len(payload) / 1e3),
                     ("assignments in one answer", first.resources),
                     ("one answer (KB)", first.response_bytes / 1e3),
                     ("all answered (s)", answered_s)]
    finally:
        for stream in streams:
            stream.close()


async def eds_big(ctx: Context) -> None:
    await _eds(ctx, ctx.plan.eds_big_names)


async def eds_allowed(ctx: Context) -> None:
    await _eds(ctx, ctx.plan.eds_allowed_names)


async def deep_metadata(ctx: Context) -> None:
    too_deep = HostileStream(ctx.channel, read=True)
    await too_deep.send([too_deep_metadata_request(150)], budget_s=ctx.plan.response_timeout_s)
    nested = HostileStream(ctx.channel, read=True)
    await nested.send([request_bytes(CLUSTER, node_id="deep-20", metadata=nested_metadata(20))],
                      budget_s=ctx.plan.response_timeout_s)
    try:
        ctx.status = await too_deep.outcome(ctx.plan.response_timeout_s)
        ctx.rows.append(("client status, 20 levels", await nested.outcome(ctx.plan.response_timeout_s)))
        await ctx.read_sizes()
    finally:
        too_deep.close()
        nested.close()


async def stuck_reader(ctx: Context) -> None:
    """Issue 12: one stream asks for CDS and EDS of every service and never reads a response, while the
    catalog changes `stuck_changes` times (every endpoint weight, so every EDS resource). A healthy client
    confirms each change was served before the next. A server that queued one response per change would
    grow by changes x the EDS size; one that coalesces holds one response; with --write-timeout the stuck
    stream is ended."""
    plan = ctx.plan
    # No BDP probing: the client's HTTP/2 window stays at its initial size instead of growing to absorb
    # what the server sends, so the server's writes do block, as with a proxy whose buffers are full.
    stuck_channel = grpc.aio.insecure_channel(ctx.server.address,
                                              options=[*_CHANNEL_OPTIONS, ("grpc.http2.bdp_probe", 0)])
    stuck = HostileStream(stuck_channel, read=False)
    healthy_channel = channel_to(ctx.server)
    healthy = HealthyClient(healthy_channel)
    try:
        requests = [request_bytes(CLUSTER, node_id="stuck-1"),
                    request_bytes(ENDPOINT, names=service_names(plan))]
        await stuck.send(requests, budget_s=plan.response_timeout_s)
        await healthy.start(plan.response_timeout_s)
        latencies = []
        for k in range(plan.stuck_changes):
            old = healthy.versions.get(ENDPOINT, "")
            written = time.monotonic()
            write_atomically(ctx.catalog, catalog_text(plan, edit=k + 1))
            arrived = await healthy.wait_version_change(ENDPOINT, old, plan.response_timeout_s)
            latencies.append(arrived - written)
        await asyncio.sleep(plan.settle_s)
        ctx.rss_held = ctx.server.rss_bytes()
        ctx.status = await stuck.status_now() or "open (never read)"
        await ctx.read_sizes()
        _, metrics = await asyncio.to_thread(ctx.server.get, "/metrics")
        timeouts = [line.rsplit(" ", 1)[-1] for line in metrics.decode().splitlines()
                    if line.startswith('xds_limit_exceeded_total{limit="write_timeout_s"}')]
        ctx.rows += [("catalog changes", plan.stuck_changes),
                     ("one EDS answer (KB)", healthy.eds_bytes / 1e3),
                     ("change -> healthy client p50 (ms)", statistics.median(latencies) * 1e3),
                     ("write timeouts counted", timeouts[0] if timeouts else "n/a")]
    finally:
        stuck.close()
        healthy.close()
        await healthy_channel.close()
        await stuck_channel.close()


def _summary(outcomes: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{n}x {outcome}" for outcome, n in counts.items())


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    name: str
    run: Scenario
    grace_s: Callable[[Plan], float | None]  # --node-group-grace for a server that has it


SCENARIOS = (
    ScenarioSpec("groups-idle", groups_idle, lambda plan: _NO_EXPIRY_GRACE_S),
    ScenarioSpec("groups-expired", groups_expired, lambda plan: plan.grace_s),
    ScenarioSpec("node-id-8mib", node_id_8mib, lambda plan: None),
    ScenarioSpec("node-id-1mib", node_id_1mib, lambda plan: None),
    ScenarioSpec("unread-14mib", unread_big, lambda plan: None),
    ScenarioSpec("unread-3.9mib", unread_small, lambda plan: None),
    ScenarioSpec("eds-100k", eds_big, lambda plan: None),
    ScenarioSpec("eds-20k", eds_allowed, lambda plan: None),
    ScenarioSpec("deep-metadata", deep_metadata, lambda plan: None),
    ScenarioSpec("stuck-reader", stuck_reader, lambda plan: None),
)


# --- running ----------------------------------------------------------------------------------------------


async def _fresh_client_ms(server: Server, timeout_s: float) -> Value:
    began = time.monotonic()
    async with grpc.aio.insecure_channel(server.address, options=_CHANNEL_OPTIONS) as channel:
        result = await short_lived(channel, node_id="fresh-1", cluster=HEALTHY_GROUP, timeout_s=timeout_s)
    return (time.monotonic() - began) * 1e3 if result == "OK" else result


async def _measure(spec: ScenarioSpec, server: Server, plan: Plan, catalog: Path) -> list[Row]:
    rss_before = server.rss_bytes()
    log_before = server.log_bytes()
    channel = channel_to(server)
    ctx = Context(plan, server, catalog, channel)
    watch = Watch(server, max_rss_bytes=plan.max_server_rss_mb * MIB, max_s=3600.0)
    try:
        with watch:
            await spec.run(ctx)
    finally:
        await channel.close()
    if server.killed_for_rss:
        return [("client status", f"server killed: RSS over {plan.max_server_rss_mb} MB")]
    await asyncio.sleep(plan.settle_s)
    rss_after = server.rss_bytes()
    rows: list[Row] = [("client status", ctx.status or "-"),
                       ("RSS before (MB)", rss_before / 1e6),
                       ("RSS peak (MB)", watch.peak_rss / 1e6)]
    if ctx.rss_held is not None:
        rows += [("RSS held, client connected (MB)", ctx.rss_held / 1e6),
                 ("RSS after disconnect (MB)", rss_after / 1e6),
                 ("RSS growth held (MB)", (ctx.rss_held - rss_before) / 1e6),
                 ("RSS growth after disconnect (MB)", (rss_after - rss_before) / 1e6)]
    else:
        rows += [("RSS after (MB)", rss_after / 1e6), ("RSS growth (MB)", (rss_after - rss_before) / 1e6)]
    rows += [("log written (KB)", (server.log_bytes() - log_before) / 1e3),
             ("/healthz max (ms)", watch.slowest_s * 1e3)]
    if watch.failures:
        rows.append(("/healthz failures", watch.failures))
    rows += ctx.rows
    rows += [("groups held at end", await asyncio.to_thread(server.groups_held)),
             ("fresh client CDS (ms)", await _fresh_client_ms(server, plan.response_timeout_s))]
    return rows


def run_scenario(spec: ScenarioSpec, source: ServerSource, plan: Plan, workdir: Path) -> list[Row]:
    catalog = workdir / f"{spec.name}-{source.label}.yaml"
    write_atomically(catalog, catalog_text(plan, edit=0))
    server = Server(source, catalog=catalog, workdir=workdir, name=f"{spec.name}-{source.label}",
                    grace_s=spec.grace_s(plan), write_timeout_s=plan.stuck_write_timeout_s)
    try:
        server.start()
        return asyncio.run(_measure(spec, server, plan, catalog))
    except (OSError, RuntimeError, TimeoutError, grpc.aio.AioRpcError) as exc:
        died = "" if server.process.alive else f"; server exited {server.process.returncode}"
        return [("client status", f"benchmark error: {type(exc).__name__}: {str(exc)[:120]}{died}")]
    finally:
        server.stop()


# --- output -----------------------------------------------------------------------------------------------


def _fmt(value: Value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    magnitude = abs(value)
    return f"{value:.0f}" if magnitude >= 100 else f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}"


def _ratio(old: Value | None, new: Value | None) -> str:
    if isinstance(old, str) or isinstance(new, str) or old is None or new is None or old == 0:
        return "-"
    return f"{new / old:.3g}"


def print_table(results: dict[str, dict[str, list[Row]]], sources: Sequence[ServerSource],
                out: TextIO) -> None:
    """A markdown table: one row per scenario and metric, one column per server (and new/old for two)."""
    labels = [s.label for s in sources]
    compare = len(sources) >= 2
    header = ["scenario", "metric", *labels] + (["new/old"] if compare else [])
    print("| " + " | ".join(header) + " |", file=out)
    print("|" + "|".join("---" for _ in header) + "|", file=out)
    for scenario in results:
        by_server = {label: dict(results[scenario].get(label, [])) for label in labels}
        metrics: list[str] = []
        for label in labels:
            metrics += [m for m, _ in results[scenario].get(label, []) if m not in metrics]
        for metric in metrics:
            values = [by_server[label].get(metric) for label in labels]
            cells = [scenario, metric, *("-" if v is None else _fmt(v) for v in values)]
            if compare:
                cells.append(_ratio(values[0], values[-1]))
            print("| " + " | ".join(cells) + " |", file=out)


def run(plan: Plan, sources: Sequence[ServerSource], scenarios: Sequence[ScenarioSpec], out: TextIO) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="hostile-clients-"))
    described = ", ".join(f"{s.label} = {s.path}{'' if s.has_limits else ' (no issue-7 flags)'}"
                          for s in sources)
    print(f"hostile_clients: catalog {plan.services} services x {plan.endpoints} endpoints; "
          f"{plan.groups} churn groups; grace {plan.grace_s:g} s; servers: {described}; "
          f"cores: {os.cpu_count()}", file=out)
    results: dict[str, dict[str, list[Row]]] = {}
    for spec in scenarios:
        for source in sources:
            began = time.monotonic()
            rows = run_scenario(spec, source, plan, workdir)
            results.setdefault(spec.name, {})[source.label] = rows
            print(f"  {spec.name} on {source.label}: {dict(rows).get('client status')} "
                  f"({time.monotonic() - began:.1f} s)", file=sys.stderr, flush=True)
    print_table(results, sources, out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"benchmark process peak RSS: {peak / 1e6:.0f} MB; logs in {workdir}", file=out)
    failed = any(str(dict(rows).get("client status", "")).startswith("benchmark error")
                 for by_source in results.values() for rows in by_source.values())
    if not failed:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def parse_args(argv: Sequence[str] | None) -> tuple[Plan, list[ServerSource], list[ScenarioSpec]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile_clients", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-src", action="append", type=Path,
                        help="source tree to run the server from (repeatable: first = old, last = new; "
                             "default this checkout)")
    parser.add_argument("--services", type=int)
    parser.add_argument("--endpoints", type=int)
    parser.add_argument("--groups", type=int, help="short-lived streams with distinct node.cluster")
    parser.add_argument("--edits", type=int, help="edits timed before and after the churn")
    parser.add_argument("--grace", type=float, help="--node-group-grace of the groups-expired scenario")
    parser.add_argument("--max-server-rss-mb", type=int, help="kill a server past this RSS")
    parser.add_argument("--only",
                        help="comma-separated scenario names: " + ", ".join(s.name for s in SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="a tiny catalog and counts, for a smoke test")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    given = {"services": args.services, "endpoints": args.endpoints, "groups": args.groups,
             "edits": args.edits, "grace_s": args.grace, "max_server_rss_mb": args.max_server_rss_mb}
    plan = replace(plan, **{k: v for k, v in given.items() if v is not None})
    if min(plan.services, plan.endpoints, plan.groups, plan.edits) < 1 or plan.grace_s < 0:
        parser.error("--services, --endpoints, --groups and --edits must be at least 1, --grace >= 0")
    wanted = [s.name for s in SCENARIOS] if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = sorted(set(wanted) - {s.name for s in SCENARIOS})
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    sources = [ServerSource.inspect(p) for p in (args.server_src or [REPO])]
    if len({s.label for s in sources}) < len(sources):  # the same revision twice: number the columns
        sources = [replace(s, revision=f"{i + 1}:{s.label}") for i, s in enumerate(sources)]
    return plan, sources, [s for s in SCENARIOS if s.name in wanted]


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    plan, sources, scenarios = parse_args(argv)
    return run(plan, sources, scenarios, out if out is not None else sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
