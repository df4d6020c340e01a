"""What the real-registry fixture plugins (tests/consul_fixtures.py, tests/kube_fixtures.py) have in common.

Each runs a backend (Consul; etcd + kube-apiserver) either from a cached binary or in Docker, chosen by an
environment variable; builds its binaries once per session, failing (never skipping) the tests that need
them when the build fails; and attaches the log tails of the backends a failing test started to its report.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import pytest

from harness.processes import StartStop
from harness.testbin import TestbinError

BACKENDS = ("binary", "docker")
FAILURE_LOG_LINES = 60

T = TypeVar("T")


class Backend(Protocol):
    name: str

    def logs(self, n: int = 40) -> dict[str, str]:
        """Log tails by process name, for failure reports."""
        ...


B = TypeVar("B", bound=StartStop)
L = TypeVar("L", bound=Backend)


def backend_name(env_var: str) -> str:
    """The backend `env_var` asks for: "binary" (the default) or "docker"."""
    backend = os.environ.get(env_var, "binary").strip().lower() or "binary"
    if backend not in BACKENDS:
        raise pytest.UsageError(f"{env_var}={backend!r}: expected one of {', '.join(BACKENDS)}")
    return backend


def build_binaries(pytestconfig: pytest.Config, build: Callable[[], T], *, failure: str) -> T:
    """`build()` (harness.testbin), its progress shown live; a failed build fails the test with
    "<failure>: <why>"."""
    # Show the build's progress lines live instead of swallowing minutes of silence into captured output.
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    visible = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
    with visible:
        try:
            return build()
        except TestbinError as e:
            error = str(e)
    # Outside the except block, so the report shows the build error alone, not a chained traceback.
    pytest.fail(f"{failure}: {error}", pytrace=False)


@contextlib.contextmanager
def started(request: pytest.FixtureRequest, key: pytest.StashKey[list[B]], backend: B) -> Iterator[B]:
    """`backend`, started and remembered under `key` for failure reports; stopped at the end whatever
    happened."""
    request.node.stash.setdefault(key, []).append(backend)
    try:
        backend.start()
        yield backend
    finally:
        backend.stop()


def attach_log_tails(item: pytest.Item, call: pytest.CallInfo[None], key: pytest.StashKey[list[L]]) -> None:
    """For a failing (not skipped) test phase, add a report section "log of <process>" per process of each
    backend `started` under `key`. Call it before the report is built, i.e. before the yield of a
    `pytest_runtest_makereport` wrapper."""
    if call.excinfo is not None and not call.excinfo.errisinstance(pytest.skip.Exception):
        for backend in item.stash.get(key, []):
            for name, text in _safe_logs(backend).items():
                item.add_report_section(call.when, f"log of {name}", text)


def _safe_logs(backend: Backend) -> dict[str, str]:
    # A report must never fail because a log could not be read (e.g. the Docker engine went away).
    try:
        return backend.logs(FAILURE_LOG_LINES)
    except Exception as e:
        return {backend.name: f"(log unavailable: {type(e).__name__}: {e})"}
