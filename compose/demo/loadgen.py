"""The demo's traffic generator: steady requests through the edge Envoy, and the split printed per window.

Every `--window` seconds it prints one line: how many requests went to each version (the x-version header
the demo service sets) and how many failed, e.g.

    [   35s]  200 req | v1 ██████████████████··  90.5% | v2 ██··················   9.5% | errors 0

Requests are paced at `--rate` per second over one keep-alive connection: a steady, light load whose
split is easy to read, not a benchmark. Errors (refused connections while the edge starts, 503s while an
endpoint is not yet healthy) are counted, never fatal. Standard library only.

Liveness: the file given by `--heartbeat` is touched after every window, so Docker's healthcheck can tell
a running generator from a stuck one.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import sys
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

_BAR_WIDTH = 20
_REQUEST_TIMEOUT_S = 2.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default=os.environ.get("TARGET_URL", "http://edge:10000/"))
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--window", type=float, default=5.0, help="seconds per printed line")
    parser.add_argument("--heartbeat", type=Path, default=Path("/tmp/loadgen.alive"))
    parser.add_argument("--windows", type=int, default=0, help="stop after this many lines (0: never)")
    return parser


@dataclass(frozen=True)
class Result:
    """One request's outcome: exactly one of the two is set."""

    version: str | None = None
    error: str | None = None


class _Client:
    """One keep-alive HTTP/1.1 connection, reopened after any error."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SystemExit(f"loadgen: --url must be http://HOST[:PORT]/PATH, got {url!r}")
        self._host, self._port = parts.hostname, parts.port or 80
        self._path = parts.path or "/"
        self._conn: http.client.HTTPConnection | None = None

    def get(self) -> Result:
        """Which version answered, or what went wrong."""
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=_REQUEST_TIMEOUT_S)
            self._conn.request("GET", self._path)
            response = self._conn.getresponse()
            response.read()
            version = response.getheader("x-version")
            if response.status == 200 and version:
                return Result(version=version)
            return Result(error=f"HTTP {response.status}")
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Result(error=type(exc).__name__)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def format_window(elapsed_s: float, results: Counter[Result]) -> str:
    """One printed line: the share of each version with a bar, then the errors by kind."""
    total = sum(results.values())
    parts = [f"[{elapsed_s:5.0f}s] {total:4d} req"]
    versions = sorted((r.version, n) for r, n in results.items() if r.version is not None)
    for version, count in versions:
        share = count / total
        filled = round(share * _BAR_WIDTH)
        parts.append(f"{version} {'█' * filled}{'·' * (_BAR_WIDTH - filled)} {share:6.1%}")
    errors = sorted((r.error, n) for r, n in results.items() if r.error is not None)
    detail = ", ".join(f"{error} x{n}" for error, n in errors)
    parts.append(f"errors {sum(n for _, n in errors)}" + (f" ({detail})" if detail else ""))
    return " | ".join(parts)


def _stop(signum: int, frame: FrameType | None) -> None:
    # PID 1 in a container ignores SIGTERM unless it installs a handler; exit at once on `compose stop`.
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.rate <= 0 or args.window <= 0:
        raise SystemExit("loadgen: --rate and --window must be positive")
    signal.signal(signal.SIGTERM, _stop)
    client = _Client(args.url)
    print(f"loadgen: {args.rate:g} req/s to {args.url}, one line every {args.window:g}s", flush=True)
    start = time.monotonic()
    interval = 1.0 / args.rate
    printed = 0
    try:
        while args.windows == 0 or printed < args.windows:
            results: Counter[Result] = Counter()
            window_end = time.monotonic() + args.window
            next_send = time.monotonic()
            while (now := time.monotonic()) < window_end:
                if now < next_send:
                    time.sleep(min(next_send, window_end) - now)
                    continue
                results[client.get()] += 1
                # Pace from the schedule, not from the last reply, so slow replies do not lower the rate;
                # but never try to catch up on a backlog after a stall.
                next_send = max(next_send + interval, time.monotonic() - interval)
            print(format_window(time.monotonic() - start, results), flush=True)
            args.heartbeat.touch()
            printed += 1
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
