"""pytest plugin: a real kube-apiserver backed by a real etcd for every test that asks for one.

Registered in tests/conftest.py. Fixtures:
  kube_binaries  (session)  the kube-apiserver and etcd executables, built once from the pinned wrapper
                            modules and cached (harness.testbin); a failed build FAILS the tests that
                            need them, never skips.
  kube_cluster   (function) a fresh etcd (empty data directory) and a kube-apiserver in front of it on
                            loopback, /readyz passed; stopped at teardown whatever happened, the log tails
                            of both attached to the report of a failing test.
  kubeconfig     (function) the path of an admin kubeconfig for kube_cluster (CA embedded, bearer token).
  kube_restart   (function) restarts the API server on the same port (etcd keeps every object).
  kube_compact   (function) compacts etcd's history the way the API server's compactor does (F7 setup).

Options per test, with the marker `@pytest.mark.kube(watch_cache=False)`: serve watches and lists straight
from etcd (`--watch-cache=false`), so `kube_compact()` alone makes old resourceVersions expire (410 Gone);
with the default watch cache that takes `kube_restart()` too (see harness/kube.py).

Why function scope: a test cannot clean up after itself (without kube-controller-manager, namespaces never
finish deleting), and a fresh cluster costs only the start-up time measured in docs/testing.md (seconds).

Backends, chosen by XDS_TEST_KUBE_BACKEND:
  binary (default)  the cached binaries as child processes (harness.kube.LocalKubeCluster);
  docker            K3s (XDS_TEST_KUBE_IMAGE, default rancher/k3s:v1.36.4-k3s1, the same Kubernetes
                    minor) through testcontainers: server only (no agent, so no kubelet or pods), its
                    embedded etcd, the same static token file, ports published on 127.0.0.1 only. It
                    needs a Docker engine that can run privileged containers; testcontainers is imported
                    only when this backend is chosen. The CI machine has no Docker, so it is not run there.
Tests are written against `harness.kube.KubeBackend` and do not know which one runs.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.kube import (
    ADMIN_GROUP,
    ADMIN_USER,
    DEFAULT_LIMITED_USER,
    READY_TIMEOUT_S,
    EtcdHttpApi,
    KubeBackend,
    KubeClient,
    LocalKubeCluster,
    TokenUser,
    compact_like_apiserver,
    unverified_ssl_context,
)
from harness.ports import LOOPBACK, free_ports
from harness.processes import ProcessExitedError, wait_until
from harness.testbin import ensure_binary
from tests.backend_support import FAILURE_LOG_LINES, attach_log_tails, backend_name, build_binaries, started

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

BACKEND_ENV = "XDS_TEST_KUBE_BACKEND"
IMAGE_ENV = "XDS_TEST_KUBE_IMAGE"
# The K3s release of the Kubernetes version tools/testbin/kube pins, so both backends serve the same API.
DEFAULT_IMAGE = "rancher/k3s:v1.36.4-k3s1"

_KUBE_CLUSTERS = pytest.StashKey[list[KubeBackend]]()
_MARKER = "kube"


def pytest_configure(config: pytest.Config) -> None:
    # Registered here rather than in pyproject.toml so the marker travels with the fixtures that read it.
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(watch_cache=True): options for the kube_cluster fixture (tests/kube_fixtures.py)",
    )


# -- failure reports -----------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Before the yield, so the sections are part of the report being built (as in tests/consul_fixtures.py).
    attach_log_tails(item, call, _KUBE_CLUSTERS)
    return (yield)


# -- fixtures ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeBinaries:
    apiserver: Path
    etcd: Path


def kube_backend_name() -> str:
    return backend_name(BACKEND_ENV)


@pytest.fixture(scope="session")
def kube_binaries(pytestconfig: pytest.Config) -> KubeBinaries:
    """The pinned kube-apiserver and etcd; the first run on a machine builds them (many minutes)."""
    return build_binaries(
        pytestconfig,
        lambda: KubeBinaries(apiserver=ensure_binary("kube-apiserver"), etcd=ensure_binary("etcd")),
        failure="kube-apiserver and etcd are required for these tests and could not be built",
    )


@pytest.fixture
def kube_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KubeBackend]:
    """A fresh, empty Kubernetes API (etcd + kube-apiserver) on loopback, ready; stopped at teardown."""
    marker = request.node.get_closest_marker(_MARKER)
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    watch_cache = bool(options.pop("watch_cache", True))
    if options or (marker is not None and marker.args):
        raise pytest.UsageError(f"@pytest.mark.{_MARKER}: unknown options {marker and marker.args} {options}")
    cluster: KubeBackend
    if kube_backend_name() == "docker":
        cluster = DockerK3sCluster(
            tmp_path / "k3s", image=os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE, watch_cache=watch_cache
        )
    else:
        binaries: KubeBinaries = request.getfixturevalue("kube_binaries")
        cluster = LocalKubeCluster(
            tmp_path / "kube", apiserver_binary=binaries.apiserver, etcd_binary=binaries.etcd,
            watch_cache=watch_cache,
        )  # fmt: skip
    with started(request, _KUBE_CLUSTERS, cluster):
        yield cluster


@pytest.fixture
def kubeconfig(kube_cluster: KubeBackend, tmp_path: Path) -> Path:
    """An admin kubeconfig for `kube_cluster` (what the control plane's Kubernetes source is given)."""
    return kube_cluster.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def kube_restart(kube_cluster: KubeBackend) -> Callable[[], None]:
    """Restart the API server on the same address and wait for /readyz; stored objects survive."""
    return lambda: kube_cluster.restart()


@pytest.fixture
def kube_compact(kube_cluster: KubeBackend) -> Callable[..., int]:
    """`kube_compact(revision=None) -> revision`: compact history up to the revision (default: now).

    Old resourceVersions then expire: a watch from one gets 410 Gone once the API server's watch cache
    has seen the compaction (within ~15 s; poll `client().watch_expired(...)`).
    """
    return lambda revision=None: kube_cluster.compact(revision)


# -- the Docker backend --------------------------------------------------------------------------------------

# Where K3s keeps its serving CA and the embedded etcd's client credentials.
_K3S_TLS = "/var/lib/rancher/k3s/server/tls"
_K3S_TOKENS = "/etc/xds/tokens.csv"
_K3S_API_PORT = 6443
_K3S_ETCD_PORT = 2379
# Pulling the image and initialising etcd take longer than starting two local processes.
_K3S_READY_TIMEOUT_S = 180.0
_DOCKER_STOP_TIMEOUT_S = 10


class _K3sEtcd(EtcdHttpApi):
    """K3s's embedded etcd, reached through its published client port with K3s's client certificate."""

    def __init__(self, port: int, context_factory: Callable[[], ssl.SSLContext]) -> None:
        self._port = port
        self._context_factory = context_factory

    @property
    def client_url(self) -> str:
        return f"https://{LOOPBACK}:{self._port}"

    def _etcd_ssl_context(self) -> ssl.SSLContext:
        return self._context_factory()


class DockerK3sCluster(KubeBackend):
    """K3s in a container with the same interface as `LocalKubeCluster`.

    Differences a test may notice: K3s also runs its controller-manager and scheduler (namespaces do finish
    deleting, default ServiceAccounts appear), and `restart()`/`kill()` act on the whole K3s process, API
    server and etcd together (the data survives in the container's filesystem). Ports are published on
    127.0.0.1 only, at numbers chosen here, so a restarted container keeps its address.
    """

    def __init__(
        self, workdir: Path, *, image: str = DEFAULT_IMAGE, name: str = "k3s",
        limited_user: str = DEFAULT_LIMITED_USER, watch_cache: bool = True,
    ) -> None:  # fmt: skip
        self.workdir = workdir
        self.image = image
        self.watch_cache = watch_cache
        self.name = name
        self.limited_user = limited_user
        self._users = {
            ADMIN_USER: TokenUser(ADMIN_USER, f"admin-{os.urandom(16).hex()}", (ADMIN_GROUP,)),
            limited_user: TokenUser(limited_user, f"user-{os.urandom(16).hex()}"),
        }
        self._api_port, self._etcd_port = free_ports(2)
        self._container: DockerContainer | None = None
        self._final_logs = ""
        self._etcd = _K3sEtcd(self._etcd_port, self._etcd_context)

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self._api_port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "server-ca.crt"

    @property
    def token(self) -> str:
        return self._users[ADMIN_USER].token

    def token_for(self, user: str) -> str:
        return self._users[user].token

    def start(self, *, timeout_s: float = _K3S_READY_TIMEOUT_S) -> None:
        # Imported here: only this backend needs Docker, and the default one must work without it.
        from testcontainers.core.container import DockerContainer

        watch_cache = self.watch_cache
        self.workdir.mkdir(parents=True, exist_ok=True)
        tokens = "".join(user.csv_line() for user in self._users.values()).encode()
        container = (
            DockerContainer(self.image)
            .with_command([
                "server",
                # API server and etcd only: no kubelet, containerd or CNI, so nothing touches the host's
                # network and no pods run (the local backend has none either).
                "--disable-agent",
                "--disable=traefik,servicelb,metrics-server,local-storage,coredns",
                "--disable-helm-controller", "--disable-network-policy",
                # A real embedded etcd (not kine/SQLite), so compact() and watch expiry behave as with etcd.
                "--cluster-init",
                f"--tls-san={LOOPBACK}",
                f"--kube-apiserver-arg=token-auth-file={_K3S_TOKENS}",
                # As in the local backend: history is compacted only when a test asks.
                "--kube-apiserver-arg=etcd-compaction-interval=0",
                *([] if watch_cache else ["--kube-apiserver-arg=watch-cache=false"]),
            ])
            .with_copy_into_container(tokens, _K3S_TOKENS, 0o600)
            # K3s's init expects a privileged container with its own /run, as testcontainers' K3SContainer.
            .with_kwargs(privileged=True)
            .with_tmpfs_mount("/run")
            .with_tmpfs_mount("/var/run")
        )  # fmt: skip
        # Published on loopback only: the API must not be reachable from the network.
        ports: dict[str, Any] = container.ports
        ports[f"{_K3S_API_PORT}/tcp"] = (LOOPBACK, self._api_port)
        ports[f"{_K3S_ETCD_PORT}/tcp"] = (LOOPBACK, self._etcd_port)
        self._container = container
        container.start()
        try:
            self.wait_ready(timeout_s)
            self._copy_out(f"{_K3S_TLS}/server-ca.crt", self.ca_file)
            for name in ("server-ca.crt", "client.crt", "client.key"):
                self._copy_out(f"{_K3S_TLS}/etcd/{name}", self.workdir / f"etcd-{name}")
        except BaseException:
            self._remove()
            raise

    def stop(self) -> None:
        if self._container is not None:
            self._remove()

    def kill(self) -> None:
        wrapped = self._wrapped()
        wrapped.kill()
        wrapped.wait(timeout=_DOCKER_STOP_TIMEOUT_S)

    def restart(self, *, timeout_s: float = _K3S_READY_TIMEOUT_S) -> None:
        # Same container, same published ports; etcd's data is in the container's filesystem and survives.
        self._wrapped().restart(timeout=_DOCKER_STOP_TIMEOUT_S)
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        # K3s turns anonymous access off, so the probe uses the admin token. The CA file is copied out
        # only after the first successful probe, so the first start cannot verify the certificate yet.
        def context() -> ssl.SSLContext:
            if self.ca_file.exists():
                return ssl.create_default_context(cafile=str(self.ca_file))
            return unverified_ssl_context()

        def ready() -> bool:
            wrapped = self._wrapped()
            wrapped.reload()
            if wrapped.status in ("exited", "dead"):
                raise ProcessExitedError(
                    f"K3s container {wrapped.short_id} exited; last log lines:\n{self.tail()}"
                )
            return KubeClient(self.url, token=self.token, ca_file=None, ssl_context=context()).readyz()

        wait_until(
            ready, timeout_s=timeout_s, interval_s=0.5, ignore=(OSError,),
            message=lambda: f"K3s never passed /readyz; last log lines:\n{self.tail()}",
        )  # fmt: skip

    def compact(self, revision: int | None = None) -> int:
        return compact_like_apiserver(self._etcd, revision)

    def current_revision(self) -> int:
        return self._etcd.current_revision()

    def tail(self, n: int = 40) -> str:
        if self._container is None or self._container.get_wrapped_container() is None:
            return "\n".join(self._final_logs.splitlines()[-n:])
        logs: bytes = self._wrapped().logs(tail=n)
        return logs.decode("utf-8", errors="replace")

    def _etcd_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.workdir / "etcd-server-ca.crt"))
        context.load_cert_chain(self.workdir / "etcd-client.crt", self.workdir / "etcd-client.key")
        return context

    def _copy_out(self, source: str, target: Path) -> None:
        result = self._wrapped().exec_run(["cat", source])
        if result.exit_code != 0:
            raise RuntimeError(f"cannot read {source} in the K3s container: {result.output[:300]!r}")
        # Written atomically: a reader (the readiness probe) must never see a half-written CA file.
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            tmp.write(result.output)
        Path(tmp.name).chmod(0o600)
        os.replace(tmp.name, target)

    def _wrapped(self) -> Any:
        if self._container is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._container.get_wrapped_container()

    def _remove(self) -> None:
        # Keep the log for failure reports: the container (and its log) is deleted on removal.
        with contextlib.suppress(Exception):
            self._final_logs = self._wrapped().logs(tail=FAILURE_LOG_LINES * 4).decode(errors="replace")
        container, self._container = self._container, None
        if container is not None:
            container.stop()
