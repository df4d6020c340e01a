"""Real gRPC servers that answer with their own name, and a real proxyless gRPC (grpcio) client process.

Issue 11 item 3: a grpcio client with an `xds:///<listener>` target learns from the control plane which
servers to call and how to split the calls, exactly as a service using gRPC's xDS support would. The method
takes and returns raw bytes (no generated code): `WHO_METHOD` answers the server's name, so the client can
count where each call went.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from harness.ports import LOOPBACK
from harness.processes import StartStop

WHO_METHOD = "/xds.test.Who/Name"
_WORKERS = 8
_STOP_GRACE_S = 0.5
_CALL_TIMEOUT_S = 5.0


class NamedGrpcServer(StartStop):
    """A grpcio server on 127.0.0.1 (an OS-chosen port) whose `WHO_METHOD` answers `name`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._server: grpc.Server | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"gRPC server {self.name} is not started")
        return self._port

    def start(self) -> None:
        answer = self.name.encode()

        def who(request: bytes, context: grpc.ServicerContext) -> bytes:
            return answer

        handler = grpc.method_handlers_generic_handler("xds.test.Who", {
            "Name": grpc.unary_unary_rpc_method_handler(who)})
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=_WORKERS), handlers=[handler])
        self._port = server.add_insecure_port(f"{LOOPBACK}:0")
        server.start()
        self._server = server

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self._server is not None:
            self._server.stop(_STOP_GRACE_S).wait(timeout_s)
            self._server = None
        return None


class ProxylessClient:
    """A client process that makes N calls per request and answers the counts (this module's `main`, or the
    grpc-go program in tools/grpc-xds-client/ with the same protocol), with its stderr in `log_path`."""

    def __init__(self, command: list[str], *, bootstrap: Path, log_path: Path) -> None:
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)}
        self.log_path = log_path
        self._log = log_path.open("wb")
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._log, env=env, text=True)

    def calls(self, count: int, *, timeout_s: float = 20.0) -> dict[str, int]:
        """Make `count` calls; the counts by server name ("errors:<CODE>" for failures)."""
        process = self._process
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(f"{count}\n")
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], timeout_s)
        if not ready:
            raise TimeoutError(f"the gRPC client made no {count} calls in {timeout_s} s; log "
                               f"{self.log_path}: {self.log_path.read_text(errors='replace')[-2000:]}")
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the gRPC client exited {process.wait()}: "
                               f"{self.log_path.read_text(errors='replace')[-2000:]}")
        counts: dict[str, int] = json.loads(line)
        return counts

    def stop(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._log.close()


def count_calls(channel: grpc.Channel, calls: int) -> dict[str, int]:
    """`calls` sequential calls of WHO_METHOD: answers by server name, failures under "errors"."""
    who: Any = channel.unary_unary(WHO_METHOD)
    counts: dict[str, int] = {}
    for _ in range(calls):
        try:
            name = who(b"", timeout=_CALL_TIMEOUT_S, wait_for_ready=True).decode()
        except grpc.RpcError as exc:
            name = f"errors:{exc.code().name}"
        counts[name] = counts.get(name, 0) + 1
    return counts


def main(argv: list[str]) -> int:
    """`python -m harness.grpc_named TARGET`: for each line N on stdin, make N calls and print the counts
    as one JSON line. GRPC_XDS_BOOTSTRAP names the bootstrap (`xds bootstrap --grpc`)."""
    if len(argv) != 1:
        print("usage: python -m harness.grpc_named xds:///<listener>", file=sys.stderr)
        return 2
    with grpc.insecure_channel(argv[0]) as channel:
        for line in sys.stdin:
            print(json.dumps(count_calls(channel, int(line))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
