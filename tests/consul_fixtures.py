"""pytest plugin: a real Consul agent for every test that asks for one (registered in tests/conftest.py).

Fixtures:
  consul_binary   (session)  the Consul executable, built once from the pinned wrapper module and cached
                             (harness.testbin); a failed build FAILS the tests that need it, never skips.
  consul_agent    (function) a fresh, empty dev-mode agent on loopback, already leader; stopped at teardown
                             whatever happened, its log tail attached to the report of a failing test.

Backends, chosen by XDS_TEST_CONSUL_BACKEND:
  binary (default)  the cached binary as a child process (harness.consul.ConsulAgent);
  docker            the official image (XDS_TEST_CONSUL_IMAGE, default hashicorp/consul:1.22) through
                    testcontainers, with the same command line and host networking, so addresses, loopback
                    HTTP checks and restart-on-the-same-port behave exactly as with the binary. It needs a
                    Linux Docker engine on the machine running pytest (host networking shares that
                    machine's loopback); testcontainers is imported only when this backend is chosen.
Tests are written against `ConsulBackend` and do not know which one runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.consul import AGENT_ENV, ConsulApiError, ConsulBackend, ConsulPorts, agent_args
from harness.ports import LOOPBACK, PortInUseError
from harness.processes import ProcessExitedError, lost_port_race, wait_until
from harness.testbin import ensure_binary
from tests.backend_support import FAILURE_LOG_LINES, attach_log_tails, backend_name, build_binaries, started

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

BACKEND_ENV = "XDS_TEST_CONSUL_BACKEND"
IMAGE_ENV = "XDS_TEST_CONSUL_IMAGE"
DEFAULT_IMAGE = "hashicorp/consul:1.22"
# A container start includes creating it (and pulling the image the first time), so it gets longer than a
# process start.
_DOCKER_LEADER_TIMEOUT_S = 60.0
_DOCKER_STOP_TIMEOUT_S = 10
_PORT_ATTEMPTS = 3

_CONSUL_AGENTS = pytest.StashKey[list[ConsulBackend]]()


# -- failure reports -----------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Sections must be added before the report is built (before the yield). For a failure during "call"
    # the agent is still running; for one during teardown its log is still readable (the binary backend's
    # log file stays, the docker backend keeps the logs it read before removing the container).
    attach_log_tails(item, call, _CONSUL_AGENTS)
    return (yield)


# -- fixtures ------------------------------------------------------------------------------------------------


def consul_backend_name() -> str:
    return backend_name(BACKEND_ENV)


@pytest.fixture(scope="session")
def consul_binary(pytestconfig: pytest.Config) -> Path:
    """The pinned Consul binary; the first run of a machine builds it (minutes), later runs reuse it."""
    return build_binaries(pytestconfig, lambda: ensure_binary("consul"),
                          failure="Consul is required for these tests and could not be built")


@pytest.fixture
def consul_agent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConsulBackend]:
    """A fresh, empty Consul dev agent on loopback, ready (leader elected); stopped at teardown."""
    agent: ConsulBackend
    if consul_backend_name() == "docker":
        agent = DockerConsulAgent(image=os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE)
    else:
        from harness.consul import ConsulAgent

        agent = ConsulAgent(tmp_path / "consul", binary=request.getfixturevalue("consul_binary"))
    with started(request, _CONSUL_AGENTS, agent):
        yield agent


# -- the Docker backend --------------------------------------------------------------------------------------


class DockerConsulAgent(ConsulBackend):
    """The official Consul image run with the same arguments as `ConsulAgent`, on the host's network.

    Host networking is what makes it interchangeable with the local binary: the agent binds 127.0.0.1 ports
    the harness chose (so a restarted container keeps its address, and Docker's port mapping cannot move
    it), and HTTP checks reach test servers on the host's loopback. `pause()` is `docker pause` (the cgroup
    freezer): like SIGSTOP, connections are accepted and never answered. The entrypoint is replaced by
    `consul` itself so the image's script adds no data or config directory: `-dev` stays in memory and a
    restart comes back empty, as with the binary.
    """

    def __init__(
        self, *, image: str = DEFAULT_IMAGE, name: str = "consul", node_name: str = "xds-test",
        log_level: str = "info",
    ) -> None:  # fmt: skip
        self.image = image
        self.name = name
        self.node_name = node_name
        self.log_level = log_level
        self._ports: ConsulPorts | None = None
        self._container: DockerContainer | None = None
        self._paused = False
        self._final_logs = ""

    @property
    def http_host(self) -> str:
        return LOOPBACK

    @property
    def http_port(self) -> int:
        if self._ports is None:
            raise RuntimeError(f"{self.name} has no ports before its first start()")
        return self._ports.http

    def start(self, *, timeout_s: float = _DOCKER_LEADER_TIMEOUT_S) -> None:
        # Imported here: only this backend needs Docker, and the default one must work without it.
        from testcontainers.core.container import DockerContainer

        for attempt in range(1, _PORT_ATTEMPTS + 1):
            ports = ConsulPorts.pick()
            container = (
                DockerContainer(self.image)
                .with_command(agent_args(ports, node_name=self.node_name, log_level=self.log_level))
                # `network="host"` rather than `network_mode`: docker-py turns it into host networking, and
                # testcontainers then does not attach its own network (which it does when it runs in a
                # container itself, and which cannot be combined with host networking).
                .with_kwargs(entrypoint=["consul"], network="host")
            )
            for key, value in AGENT_ENV.items():
                container.with_env(key, value)
            self._ports = ports
            self._container = container
            container.start()
            try:
                self.wait_leader(timeout_s)
            except ProcessExitedError as e:
                lost_race = lost_port_race(self.tail(200))
                self._remove()
                if not lost_race:
                    raise
                if attempt == _PORT_ATTEMPTS:
                    raise PortInUseError(f"Consul container could not bind a port: {e}") from e
                continue
            except BaseException:
                self._remove()
                raise
            return

    def stop(self) -> None:
        if self._container is None:
            return
        if self._paused:
            self.resume()
        self._remove()

    def kill(self) -> None:
        wrapped = self._wrapped()
        if self._paused:
            # A frozen container cannot be killed until thawed.
            self.resume()
        wrapped.kill()
        wrapped.wait(timeout=_DOCKER_STOP_TIMEOUT_S)

    def restart(self, *, timeout_s: float = _DOCKER_LEADER_TIMEOUT_S) -> None:
        if self._paused:
            self.resume()
        # Same container, same command, same host ports; -dev keeps nothing, so it comes back empty.
        self._wrapped().restart(timeout=_DOCKER_STOP_TIMEOUT_S)
        self.wait_leader(timeout_s)

    def pause(self) -> None:
        self._wrapped().pause()
        self._paused = True

    def resume(self) -> None:
        self._wrapped().unpause()
        self._paused = False

    def wait_leader(self, timeout_s: float = _DOCKER_LEADER_TIMEOUT_S) -> None:
        def up() -> bool:
            wrapped = self._wrapped()
            wrapped.reload()
            if wrapped.status in ("exited", "dead"):
                raise ProcessExitedError(
                    f"Consul container {wrapped.short_id} exited; last log lines:\n{self.tail()}"
                )
            return self.is_ready()

        wait_until(
            up,
            timeout_s=timeout_s,
            interval_s=0.2,
            ignore=(OSError, ConsulApiError),
            message=lambda: f"Consul container elected no leader; last log lines:\n{self.tail()}",
        )

    def tail(self, n: int = 40) -> str:
        if self._container is None or self._container.get_wrapped_container() is None:
            return "\n".join(self._final_logs.splitlines()[-n:])
        logs: bytes = self._wrapped().logs(tail=n)
        return logs.decode("utf-8", errors="replace")

    def _wrapped(self) -> Any:
        if self._container is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._container.get_wrapped_container()

    def _remove(self) -> None:
        # Keep the log for failure reports: the container (and its log) is deleted on removal.
        with contextlib.suppress(Exception):
            self._final_logs = self._wrapped().logs(tail=FAILURE_LOG_LINES * 4).decode(errors="replace")
        container, self._container = self._container, None
        self._paused = False
        if container is not None:
            container.stop()
