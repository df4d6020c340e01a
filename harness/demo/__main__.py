"""`python -m harness.demo`: the live demo (`make demo`), or `upstreams` for the README tour."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.demo import upstreams
from harness.demo.constants import DEFAULT_PHASE_S, DEFAULT_RATE, WORKDIR_NAME
from harness.demo.runner import Demo, Options


def _positive(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.demo",
        description="Live demo: a control plane, two Envoys and three upstreams on loopback; a canary "
                    "shifted by editing the catalog file, with the traffic split drawn live. "
                    "`python -m harness.demo upstreams` instead serves the upstreams of "
                    "examples/catalog.yaml for the README tour.")
    parser.add_argument("--phase-seconds", type=_positive, default=DEFAULT_PHASE_S,
                        help=f"how long each phase runs (default {DEFAULT_PHASE_S:g})")
    parser.add_argument("--once", action="store_true",
                        help="exit after the last phase instead of running until Ctrl-C")
    parser.add_argument("--plain", action="store_true",
                        help="plain lines instead of the live view (the default when stdout is no terminal)")
    parser.add_argument("--rate", type=_positive, default=DEFAULT_RATE,
                        help=f"requests per second through each Envoy (default {DEFAULT_RATE:g})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    # `upstreams` is a command of its own: the README tour starts the catalog's upstreams with it.
    if arguments[:1] == ["upstreams"]:
        return upstreams.main(arguments[1:])
    args = build_parser().parse_args(arguments)
    options = Options(phase_s=args.phase_seconds, rate_per_s=args.rate, once=args.once, plain=args.plain)
    return Demo(options, workdir=Path.cwd() / WORKDIR_NAME, out=sys.stdout).run()


if __name__ == "__main__":
    raise SystemExit(main())
