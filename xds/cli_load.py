"""`xds serve`'s load-aware weight flags and `xds status --loads` (issue 10, docs/load-aware.md)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping

from xds.load_settings import (
    DEFAULT_LOAD_INTERVAL_S,
    DEFAULT_LOAD_REPORT_ADDRESS,
    DEFAULT_ORCA_INTERVAL_S,
    ENVIRONMENT,
    LoadSettings,
)
from xds.policy.load_tracker import DEFAULT_MIN_REPORT_GAP_S
from xds.policy.load_weights import Combine, LoadParams
from xds.settings import split_address

_DEFAULTS = LoadParams()


def _number(low: float, high: float | None, *, low_open: bool = False, high_open: bool = False
            ) -> Callable[[str], float]:
    def parse(value: str) -> float:
        text = value.strip()
        scale = 1.0
        if text.endswith("ms"):
            text, scale = text[:-2], 0.001
        elif text.endswith("s"):
            text = text[:-1]
        try:
            number = float(text) * scale
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
        too_low = number <= low if low_open else number < low
        too_high = high is not None and (number >= high if high_open else number > high)
        if number != number or too_low or too_high:
            bounds = f"{'(' if low_open else '['}{low:g}, {'inf' if high is None else f'{high:g}'}" \
                     f"{')' if high_open or high is None else ']'}"
            raise argparse.ArgumentTypeError(f"must be in {bounds}, got {value!r}")
        return number

    return parse


def _address(value: str) -> str:
    try:
        split_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def add_load_arguments(serve: argparse.ArgumentParser, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    given = {dest: env[var] for dest, var in ENVIRONMENT.items() if env.get(var)}
    group = serve.add_argument_group("Load-aware weights (docs/load-aware.md)")

    def add(flag: str, dest: str, kind: Callable[[str], object], default: object, text: str) -> None:
        group.add_argument(flag, dest=dest, type=kind, default=given.get(dest, default),
                           help=f"{text} (default {default}; env {ENVIRONMENT[dest]})")

    add("--load-report-address", "load_report_address", _address, DEFAULT_LOAD_REPORT_ADDRESS,
        "listen address of the load report API; loopback unless management tokens are configured")
    add("--load-interval", "load_interval", _number(0, None, low_open=True), DEFAULT_LOAD_INTERVAL_S,
        "seconds between weight updates: at most one EDS push per load-aware service per interval")
    group.add_argument("--load-combine", dest="load_combine", choices=[c.value for c in Combine],
                       default=given.get("load_combine", _DEFAULTS.combine.value),
                       help="how CPU and memory make one utilization (default max; env XDS_LOAD_COMBINE)")
    add("--load-smoothing", "load_smoothing", _number(0, 1, low_open=True), _DEFAULTS.smoothing,
        "EWMA weight of the newest interval; 1 turns smoothing off")
    add("--load-dead-band", "load_dead_band", _number(0, 1, high_open=True), _DEFAULTS.dead_band,
        "factor changes smaller than this push nothing")
    add("--load-max-step", "load_max_step", _number(0, 1, low_open=True), _DEFAULTS.max_step,
        "the most an endpoint's weight factor moves per interval")
    add("--load-gain", "load_gain", _number(0, 1, low_open=True), _DEFAULTS.gain,
        "the fraction of the way to its target an endpoint's weight factor moves per interval (damping)")
    add("--load-floor", "load_floor", _number(0, 1, low_open=True), _DEFAULTS.floor,
        "the smallest weight factor load alone can give (never 0)")
    add("--load-ttl", "load_ttl", _number(0, None, low_open=True), _DEFAULTS.ttl_s,
        "seconds after its last report an endpoint goes back to its base weight")
    add("--load-report-gap", "load_report_gap", _number(0, None), DEFAULT_MIN_REPORT_GAP_S,
        "shortest time between two accepted reports of one endpoint; sooner ones are refused")
    add("--load-orca-interval", "load_orca_interval", _number(0, None, low_open=True),
        DEFAULT_ORCA_INTERVAL_S, "report interval asked of ORCA out-of-band servers")


def load_settings(args: argparse.Namespace) -> LoadSettings:
    """The settings from parsed flags; a default taken from the environment is parsed here (argparse
    applies `type` only to strings given on the command line and to string defaults)."""
    params = LoadParams(combine=Combine(args.load_combine), smoothing=float(args.load_smoothing),
                        dead_band=float(args.load_dead_band), max_step=float(args.load_max_step),
                        floor=float(args.load_floor), gain=float(args.load_gain), ttl_s=float(args.load_ttl))
    return LoadSettings(params=params, interval_s=float(args.load_interval),
                        report_address=str(args.load_report_address),
                        min_report_gap_s=float(args.load_report_gap),
                        orca_interval_s=float(args.load_orca_interval))
