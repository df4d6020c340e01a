"""The control plane as a process against a catalog path that is not a regular file of sane size (issue 7).

Each of the four broken paths (a FIFO, a symlink to /dev/zero, a sparse 64 GiB file, a directory) once killed
the server or stopped its file source for good. Now, with a connected ADS client: the process keeps running,
/status and the metrics report the problem, the client receives nothing (its versions stay what they were),
`xds validate` on the same path answers with one located line and status 1, and putting a good file back
clears the error and the source keeps watching (a later edit reaches the client).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment

from harness import ControlPlaneProcess, wait_until
from tests.component.ads_client import AdsClient, resource_names
from xds.typeurls import CLUSTER as CDS
from xds.typeurls import ENDPOINT as EDS
from xds.typeurls import LISTENER as LDS

CATALOG = """\
services:
  - name: web
    endpoints:
      - address: 127.0.0.1:8081
listeners:
  - name: ingress
    port: 10000
    routes: [{backends: [{service: web}]}]
"""
EDITED = CATALOG.replace("127.0.0.1:8081", "127.0.0.1:8082")

# What each broken path is reported as (after "<path>: cannot read the file: ").
BROKEN = {
    "fifo": "it is a FIFO (named pipe), not a regular file",
    "dev-zero-symlink": "it is a character device, not a regular file",
    "sparse-64gib": "it is 68719476736 bytes (65536.0 MiB), more than the limit of 67108864 bytes (64.0 MiB)",
    "directory": "it is a directory, not a regular file",
}
T = TypeVar("T")
QUIET_S = 1.0  # five polls of the file source with the broken path in place
WAIT_S = 10.0


def break_path(path: Path, kind: str) -> None:
    tmp = path.with_name(path.name + ".broken")
    if kind == "directory":
        # Swapped in atomically, as for the other kinds: an unlink-then-mkdir would let the watcher see a
        # missing file in between and report that instead.
        target = path.with_name(path.name + ".dir")
        target.mkdir(exist_ok=True)
        os.symlink(target, tmp)
    elif kind == "fifo":
        os.mkfifo(tmp)  # no writer ever opens it: a blocking open() would wait forever
    elif kind == "dev-zero-symlink":
        os.symlink("/dev/zero", tmp)  # reading it never ends
    else:
        tmp.touch()
        os.truncate(tmp, 64 * 1024**3)  # no disk used; reading it whole would take 64 GiB of memory
    os.replace(tmp, path)


def put_good_file(path: Path, text: str) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def admin_get(control_plane: ControlPlaneProcess, target: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", control_plane.admin_port, timeout=5)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        assert response.status == 200, target
        return response.read().decode()
    finally:
        conn.close()


def source_error(control_plane: ControlPlaneProcess, source: str) -> str:
    status: dict[str, Any] = json.loads(admin_get(control_plane, "/status"))
    return str(status["sources"][source]["error"])


def metric(control_plane: ControlPlaneProcess, series: str) -> float:
    for line in admin_get(control_plane, "/metrics").splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in /metrics")


async def eventually(check: Callable[[], T], what: str) -> T:
    """Poll a blocking `check` in a thread (the ADS client's reads run on the loop) until it is truthy."""
    return await asyncio.to_thread(wait_until, check, timeout_s=WAIT_S, message=what)


async def validate(path: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "xds", "validate", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_broken_catalog_paths_are_reported_while_clients_keep_their_config(
        workdir: Path, control_plane_factory: Any) -> None:
    path = workdir / "catalog.yaml"
    path.write_text(CATALOG)
    control_plane: ControlPlaneProcess = control_plane_factory(path)
    source = f"file:{path}"
    stale = f'xds_source_stale{{source="{source}"}}'
    errors = f'xds_source_errors_total{{source="{source}"}}'

    async with grpc.aio.insecure_channel(control_plane.xds_address) as channel:
        client = AdsClient(channel, cluster="edge")
        versions = {}
        # As Envoy does: CDS, then EDS of the clusters (LDS waits for them: make-before-break), then LDS.
        for type_url, names in ((CDS, ()), (EDS, ("web",)), (LDS, ())):
            client.send(type_url, names)
            response = await client.recv()
            client.ack(response, names)
            versions[type_url] = response.version_info
        assert resource_names(client.last[CDS]) == ["web"]

        for count, (kind, reason) in enumerate(BROKEN.items(), start=1):
            break_path(path, kind)
            message = await eventually(lambda: source_error(control_plane, source), f"{kind} not reported")
            assert message == f"{path}: cannot read the file: {reason}", kind
            assert metric(control_plane, stale) == 1 and metric(control_plane, errors) == count, kind
            # While the broken path stays: nothing is pushed (the last good config keeps serving), the
            # process lives, and `xds validate` says the same in one line.
            (code, out, err), _ = await asyncio.gather(validate(path), client.expect_silence(QUIET_S))
            assert (code, out, err) == (1, "", f"{path}: cannot read the file: {reason}\n"), kind
            assert control_plane.alive, kind
            assert source_error(control_plane, source) == message, kind
            assert {t: r.version_info for t, r in client.last.items()} == versions, kind

            put_good_file(path, CATALOG)  # the same content as before: recovered, and nothing to push
            await eventually(lambda: not source_error(control_plane, source), f"{kind}: error not cleared")
            assert metric(control_plane, stale) == 0, kind
            await client.expect_silence()
            assert {t: r.version_info for t, r in client.last.items()} == versions, kind

        # Still watching after all that: an edit reaches the client.
        put_good_file(path, EDITED)
        response = await client.recv(timeout_s=WAIT_S)
        assert response.type_url == EDS and response.version_info != versions[EDS]
        (assignment,) = (ClusterLoadAssignment.FromString(r.value) for r in response.resources)
        ports = [e.endpoint.address.socket_address.port_value for locality in assignment.endpoints
                 for e in locality.lb_endpoints]
        assert ports == [8082]
        client.close()
