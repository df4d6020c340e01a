"""pytest plugin: real Eureka servers for the tests that ask for one (registered in tests/conftest.py).

Fixtures:
  eureka_jar        (session)  the Eureka server's fat jar, built once from tools/testbin/eureka and cached
                               (harness.testbin); a failed build FAILS the tests that need it, never skips.
  eureka_server     (module)   one server on loopback, no auth, shared by the tests of a module (a JVM
                               start costs ~8-35 s on 2 cores, too much per test): tests register their own
                               app names, and one that restarts it leaves it running (and empty).
  eureka_auth_server (module)  the same with HTTP basic auth required (`EUREKA_AUTH`).
  eureka_pair       (module)   two servers replicating to each other, basic auth required (`EUREKA_AUTH`).
All are stopped at the end of the module whatever happened; the log tails of the servers a failing test
used are attached to its report.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.eureka import BasicAuth, EurekaPair, EurekaServer
from harness.testbin import ensure_binary
from tests.backend_support import attach_log_tails, build_binaries, started

# A throwaway credential for loopback test servers (issue 13: the source's basic auth tested for real).
EUREKA_AUTH = BasicAuth(user="xds-test", password="eureka-test-password")

_EUREKA_SERVERS = pytest.StashKey[list[EurekaServer | EurekaPair]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # The servers are module-scoped, so `started` remembers them on the module's node: gather them along
    # the chain (session, module, item) for the report of the failing test.
    item.stash[_EUREKA_SERVERS] = [s for node in item.listchain() if node is not item
                                   for s in node.stash.get(_EUREKA_SERVERS, [])]
    attach_log_tails(item, call, _EUREKA_SERVERS)
    return (yield)


@pytest.fixture(scope="session")
def eureka_jar(pytestconfig: pytest.Config) -> Path:
    """The Eureka server jar; the first run of a machine builds it with Maven, later runs reuse it."""
    return build_binaries(pytestconfig, lambda: ensure_binary("eureka"),
                          failure="the Eureka test server is required for these tests and could not be built")


@pytest.fixture(scope="module")
def eureka_server(
    request: pytest.FixtureRequest, eureka_jar: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EurekaServer]:
    """One Eureka server on loopback without auth, ready; stopped after the module."""
    server = EurekaServer(tmp_path_factory.mktemp("eureka"), jar=eureka_jar)
    with started(request, _EUREKA_SERVERS, server):
        yield server


@pytest.fixture(scope="module")
def eureka_auth_server(
    request: pytest.FixtureRequest, eureka_jar: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EurekaServer]:
    """One Eureka server that requires basic auth (`EUREKA_AUTH`); its own requests send it."""
    server = EurekaServer(tmp_path_factory.mktemp("eureka-auth"), jar=eureka_jar, auth=EUREKA_AUTH)
    with started(request, _EUREKA_SERVERS, server):
        yield server


@pytest.fixture(scope="module")
def eureka_pair(
    request: pytest.FixtureRequest, eureka_jar: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EurekaPair]:
    """Two Eureka servers replicating to each other, basic auth required on both (`EUREKA_AUTH`)."""
    pair = EurekaPair(tmp_path_factory.mktemp("eureka-pair"), jar=eureka_jar, auth=EUREKA_AUTH)
    with started(request, _EUREKA_SERVERS, pair):
        yield pair
