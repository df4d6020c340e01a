"""Names, phases and timings of the demo, shared by its modules."""

from __future__ import annotations

import signal

Weights = tuple[int, int]  # (web v1, web v2), as written in the catalog

WORKDIR_NAME = ".demo"
CATALOG_NAME = "catalog.yaml"
SUMMARY_MARKER = "DEMO-SUMMARY"
UPSTREAMS = ("web-v1", "web-v2", "api")
WEB_ROUTE = "web"
BASELINE: Weights = (100, 0)
CANARY_STEPS: tuple[Weights, ...] = ((90, 10), (50, 50), (0, 100))

DEFAULT_PHASE_S = 12.0
DEFAULT_RATE = 40.0
# Mostly page views, some API calls: enough /api traffic to show the second route never moves.
API_SHARE = 0.2
WINDOW_S = 2.0
FRAME_S = 0.25
PLAIN_EVERY_S = 1.0
TICK_S = 0.05
# While an edit is pending, Envoy is polled this often: the convergence time is accurate to about this much.
CONVERGE_POLL_S = 0.02
CONVERGENCE_TIMEOUT_S = 30.0
SEGMENT_S = 30.0
# "Until Ctrl-C" still has an end: a forgotten terminal must not run load for days.
MAX_RUN_S = 8 * 3600.0
STARTUP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 2.0
ADMIN_POLL_TIMEOUT_S = 1.0
PORT_ATTEMPTS = 3
BAR_WIDTH = 30
# SIGHUP too: closing the terminal must stop the Envoys, which run in their own sessions and would survive.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
