"""The demo's upstream: a tiny HTTP service that says which service, version and instance answered.

    GET /health   200 "ok" (Docker's healthcheck, Consul's HTTP check)
    GET <other>   200 "<service> <version> (instance <instance>)" with headers x-service, x-version and
                  x-instance, which the traffic generator counts

Standard library only, so it runs on a bare python:3.11-slim image. Settings come from flags, or from the
environment when a flag is absent (SERVICE_NAME, SERVICE_VERSION, INSTANCE, HOST, PORT). The first line on
stdout is `listening on http://HOST:PORT`, with the real port when `--port 0` lets the kernel choose.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 lets Envoy keep its upstream connections open instead of reconnecting for every request.
    protocol_version = "HTTP/1.1"
    # A reply leaves in two writes (headers, then body). With Nagle's algorithm the body waits for the ACK of
    # the headers, which the peer delays by up to 40 ms: every keep-alive request would take ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/health":
            self._reply(b"ok\n")
            return
        identity = self.server.identity
        body = f"{identity['service']} {identity['version']} (instance {identity['instance']})\n"
        self._reply(body.encode(), headers={f"x-{key}": value for key, value in identity.items()})

    def do_HEAD(self) -> None:
        self.do_GET()

    def _reply(self, body: bytes, *, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Silent per request: at demo rates access lines would bury the traffic generator's split.
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], identity: dict[str, str]) -> None:
        super().__init__(address, _Handler)
        self.identity = identity


def _parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--service", default=env.get("SERVICE_NAME", "web"))
    parser.add_argument("--version", default=env.get("SERVICE_VERSION", "v1"))
    parser.add_argument("--instance", default=env.get("INSTANCE") or socket.gethostname())
    parser.add_argument("--host", default=env.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(env.get("PORT", "8080")))
    return parser


def _stop(signum: int, frame: FrameType | None) -> None:
    # As PID 1 in a container, Python would ignore SIGTERM and `docker compose stop` would wait 10 s to
    # SIGKILL; leaving serve_forever through SystemExit closes the socket at once.
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    identity = {"service": args.service, "version": args.version, "instance": args.instance}
    signal.signal(signal.SIGTERM, _stop)
    with _Server((args.host, args.port), identity) as server:
        host, port = server.server_address[:2]
        print(f"listening on http://{host!s}:{port} as {args.service} {args.version} "
              f"(instance {args.instance})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
