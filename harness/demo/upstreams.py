"""The three upstreams of examples/catalog.yaml on their fixed ports, for the README tour (issue 14).

`python -m harness.demo upstreams` serves `web-v1` on 127.0.0.1:8081, `web-v2` on :8082 and `api` on :8083
until SIGINT or SIGTERM. Each answers every path with its own name as the body (harness/upstream.py), so a
`curl` through Envoy shows which one a request reached. The live demo itself uses the same servers on
free ports instead (runner.py), so that it never collides with a tour left running.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

from harness import LOOPBACK, UpstreamServer

# Must match the endpoints of examples/catalog.yaml; tests/e2e/test_readme_tour.py follows the tour and
# fails when the two drift apart.
TOUR_UPSTREAMS: tuple[tuple[str, int], ...] = (("web-v1", 8081), ("web-v2", 8082), ("api", 8083))


def serve_upstreams(upstreams: Sequence[tuple[str, int]], *, out: TextIO, err: TextIO) -> int:
    """Serve `upstreams` until SIGINT or SIGTERM; the exit code for the command line."""
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    servers: list[UpstreamServer] = []
    try:
        for name, port in upstreams:
            server = UpstreamServer(name, port)
            try:
                server.start()
            except OSError as exc:
                print(f"upstreams: cannot serve {name} on {LOOPBACK}:{port}: {exc.strerror or exc} "
                      "(is another tour or program still using the port?)", file=err, flush=True)
                return 1
            servers.append(server)
        listing = ", ".join(f"{s.name} on {LOOPBACK}:{s.port}" for s in servers)
        print(f"upstreams: serving {listing}; each answers with its name. Ctrl-C stops them.",
              file=out, flush=True)
        stop.wait()
        return 0
    finally:
        for server in servers:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: python -m harness.demo upstreams\n\nServe " +
              ", ".join(f"{name} on {LOOPBACK}:{port}" for name, port in TOUR_UPSTREAMS) +
              " (the endpoints of examples/catalog.yaml) until Ctrl-C.")
        return 0
    if argv:
        print(f"python -m harness.demo upstreams: takes no arguments, got {' '.join(argv)}", file=sys.stderr)
        return 2
    return serve_upstreams(TOUR_UPSTREAMS, out=sys.stdout, err=sys.stderr)
