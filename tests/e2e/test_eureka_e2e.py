"""The Eureka source end to end (issue 13 section 2): the real Spring Cloud Eureka server, the control plane
as a process with --eureka-* flags, a real Envoy and real HTTP upstreams on 127.0.0.1.

Upstreams register and heartbeat over Eureka's REST API as a Spring app does (`Registration`,
harness/eureka.py), with short leases. The assertions are on real traffic and on Envoy's own view
(/clusters): UP instances take traffic, OUT_OF_SERVICE ones drain, an instance whose heartbeats stop leaves
after its lease, a restarted (empty) server never flushes Envoy thanks to the resync grace
(docs/eureka.md, "Outages and restarts"), and the source fails over between two replicating servers.

The servers are module-scoped (tests/eureka_fixtures.py) and every test registers its own app names; the
restart test is last because it empties the lone server.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import UpstreamPool, free_port, free_ports, run_requests, wait_until
from harness.controlplane import ControlPlaneProcess, bootstrap_for
from harness.envoy import AdminError, EnvoyProcess
from harness.eureka import EurekaApi, EurekaInstance, EurekaPair, EurekaServer, Registration
from harness.load import SteadyLoad
from tests.eureka_fixtures import EUREKA_AUTH

# docs/eureka.md: the delta poll interval; short so that a change reaches Envoy within about a second.
REFRESH_S = 0.5
# Eureka evicts an unrenewed lease after twice its duration plus one eviction interval (harness/eureka.py);
# 2 s keeps the lease-expiry wait near 5 s.
LEASE_S = 2
_WAIT_S = 15.0
_RECOVERY_S = 30.0 + _WAIT_S
_WRONG_PASSWORD = "not-the-password-s3cr3t"
# Replicated heartbeats reach the peer in batches and can lag a 2 s lease (the peer then evicts its copy):
# the pair test uses a lease long enough for Eureka's replication.
PAIR_LEASE_S = 10  # a 2-core machine shared with a CI run; each wait usually ends within ~1 s


@dataclass(frozen=True)
class Stack:
    control_plane: ControlPlaneProcess
    envoy: EnvoyProcess
    url: str

    def hosts(self, cluster: str) -> dict[int, str]:
        """Port -> Envoy's EDS health of every host of `cluster`."""
        return {h.port: h.eds_health for h in self.envoy.cluster_hosts(cluster)}

    def wait_hosts(self, cluster: str, expected: dict[int, str], *, timeout_s: float = _WAIT_S,
                   interval_s: float = 0.05) -> None:
        wait_until(lambda: self.hosts(cluster) == expected, timeout_s=timeout_s, interval_s=interval_s,
                   ignore=(AdminError, OSError, KeyError),  # KeyError: the cluster is not there yet
                   message=lambda: f"Envoy hosts of {cluster}: {self.hosts(cluster)} != {expected}; "
                   f"source status {self.registry()}\n" + self.control_plane.tail(20))

    def registry(self) -> dict[str, Any]:
        """The `registry` status of the (only) Eureka source on /status."""
        sources = self.control_plane.status()["sources"]
        found = [s["registry"] for name, s in sources.items() if name.startswith("eureka:")]
        assert len(found) == 1, sources
        return dict(found[0])


StackFactory = Callable[..., Stack]


def _shown(server: EurekaServer) -> str:
    """A server's URL as /status names it (the source keeps URLs without the trailing slash)."""
    return server.url.rstrip("/")


def _policy(workdir: Path, services: list[str], port: int) -> Path:
    # `/` goes to the first service; the others get a route under `/<name>` only so that Envoy holds their
    # cluster (the control plane serves the clusters that routes use) for /clusters assertions.
    routes = [{"match": {"prefix": f"/{s}"}, "backends": [{"service": s}]} for s in services[1:]]
    path = workdir / "policy.yaml"
    path.write_text(yaml.safe_dump({
        "services": [{"name": s, "connect_timeout": "1s"} for s in services],
        "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": port,
                       "routes": [*routes, {"backends": [{"service": services[0]}]}]}]}))
    return path


@pytest.fixture
def eureka_stack(workdir: Path, control_plane_factory: Any, envoy_factory: Any) -> StackFactory:
    """`eureka_stack(urls, services, *extra_flags)`: the control plane reading Eureka, one Envoy on it."""

    def make(urls: list[str], services: list[str], *extra: str) -> Stack:
        port = free_port()
        control_plane = control_plane_factory(_policy(workdir, services, port), extra_args=(
            "--eureka-url", ",".join(urls), "--eureka-refresh", str(REFRESH_S), *extra))
        envoy = envoy_factory(lambda admin_port: bootstrap_for(
            "envoy-1", "edge", xds_port=control_plane.xds_port, admin_port=admin_port))
        return Stack(control_plane, envoy, f"http://127.0.0.1:{port}/")

    return make


@contextmanager
def registered(api: EurekaApi, *instances: EurekaInstance) -> Iterator[dict[str, Registration]]:
    """Every instance registered and heartbeating until the block ends (then stopped, not cancelled)."""
    with ExitStack() as stack:
        found: dict[str, Registration] = {}
        for instance in instances:
            found[instance.instance_id] = stack.enter_context(Registration(api, instance))
        yield found


def _instances(app: str, pool: UpstreamPool, *names: str, lease_s: int = LEASE_S) -> list[EurekaInstance]:
    return [EurekaInstance(app=app, instance_id=f"{app}-{n}", port=pool[n].port, lease_duration_s=lease_s)
            for n in names]


def _no_rejections(stack: Stack) -> None:
    assert stack.envoy.update_rejected_total() == 0


# Over state-of-the-world and over delta xDS (issue 11: the `xds_mode` fixture); the other tests run in the
# default mode only, to keep the module's time in bounds.
def test_traffic_follows_status_and_lease_expiry(
        eureka_server: EurekaServer, upstreams: Callable[..., UpstreamPool], eureka_stack: StackFactory,
        xds_mode: str) -> None:
    app = f"web-{xds_mode}"
    pool = upstreams("a", "b", "c")
    with registered(eureka_server, *_instances(app, pool, "a", "b", "c")) as regs:
        stack = eureka_stack([eureka_server.url], [app])
        all_up = {pool[n].port: "HEALTHY" for n in ("a", "b", "c")}
        stack.wait_hosts(app, all_up)
        result = run_requests(stack.url, count=300, concurrency=4)
        assert result.non_2xx == 0 and result.failures == 0, result.summary()
        assert set(result.by_upstream) == {"a", "b", "c"}, result.summary()
        # An operator takes b out: Envoy drains it (docs/eureka.md, Mapping) and it gets no new requests.
        eureka_server.set_status(app, f"{app}-b", "OUT_OF_SERVICE")
        stack.wait_hosts(app, {**all_up, pool["b"].port: "DRAINING"})
        result = run_requests(stack.url, count=300, concurrency=4)
        assert result.non_2xx == 0 and result.by_upstream.get("b", 0) == 0, result.summary()
        # Back in service (what Spring's service-registry endpoint sends): b takes traffic again.
        eureka_server.clear_status(app, f"{app}-b", new_status="UP")
        stack.wait_hosts(app, all_up)
        result = run_requests(stack.url, count=300, concurrency=4)
        assert result.non_2xx == 0 and result.by_upstream.get("b", 0) > 0, result.summary()
        # c "dies": no more heartbeats, no cancel. After its lease it is gone from Envoy, and gets nothing.
        regs[f"{app}-c"].stop()
        stack.wait_hosts(app, {pool["a"].port: "HEALTHY", pool["b"].port: "HEALTHY"},
                         timeout_s=_WAIT_S + 3 * LEASE_S)
        result = run_requests(stack.url, count=300, concurrency=4)
        assert result.non_2xx == 0 and result.failures == 0, result.summary()
        assert set(result.by_upstream) == {"a", "b"}, result.summary()
        registry = stack.registry()
        assert registry["kind"] == "eureka" and registry["last_error"] == "", registry
        assert registry["details"]["server"] == _shown(eureka_server), registry
        _no_rejections(stack)


def test_pair_failover_and_basic_auth(
        eureka_pair: EurekaPair, upstreams: Callable[..., UpstreamPool], eureka_stack: StackFactory,
        workdir: Path) -> None:
    first, second = eureka_pair.first, eureka_pair.second
    app = "ha-web"
    pool = upstreams("a", "b")
    password_file = workdir / "eureka.password"
    password_file.write_text(EUREKA_AUTH.password + "\n")
    password_file.chmod(0o600)
    # The apps heartbeat to the second server (it replicates to the first); the control plane reads the
    # first, and fails over to the second when the first dies.
    with registered(second, *_instances(app, pool, "a", "b", lease_s=PAIR_LEASE_S)):
        wait_until(lambda: {f"{app}-a", f"{app}-b"} <= set(first.instances()), timeout_s=_WAIT_S,
                   message=lambda: f"the first server never got both instances: {list(first.instances())}")
        stack = eureka_stack(eureka_pair.urls, [app], "--eureka-username", EUREKA_AUTH.user,
                             "--eureka-password-file", str(password_file))
        both = {pool["a"].port: "HEALTHY", pool["b"].port: "HEALTHY"}
        stack.wait_hosts(app, both)
        wait_until(lambda: stack.registry()["details"]["server"] == _shown(first), timeout_s=_WAIT_S,
                   message=lambda: f"the source does not read the first server: {stack.registry()}")
        versions = stack.envoy.versions()
        assert versions.get(f"eds:{app}"), versions
        load = SteadyLoad(stack.url, rate_per_s=40, concurrency=2)
        load.start()
        try:
            first.kill()
            wait_until(lambda: stack.registry()["details"]["server"] == _shown(second), timeout_s=_WAIT_S,
                       message=lambda: f"the source never failed over: {stack.registry()}")
            # A few more polls answered by the second server, traffic still sampled.
            polls = stack.registry()["details"]["delta_fetches"]
            wait_until(lambda: stack.registry()["details"]["delta_fetches"] >= polls + 4, timeout_s=_WAIT_S,
                       message=lambda: f"the second server was not polled: {stack.registry()}")
        finally:
            result = load.stop()
        assert result.total > 0 and result.non_2xx == 0 and result.failures == 0, result.summary()
        assert set(result.by_upstream) == {"a", "b"}, result.summary()
        assert stack.hosts(app) == both
        # No change in Envoy: the failover published nothing new for the EDS of the app.
        assert stack.envoy.versions().get(f"eds:{app}") == versions.get(f"eds:{app}"), (
            versions, stack.envoy.versions())
        assert stack.registry()["last_error"] == ""
        _no_rejections(stack)
        # Wrong credentials: reported on /status with the hint, never with the password. Such a control plane
        # never gets ready (the source never syncs), so it is started without waiting for /ready.
        wrong = workdir / "wrong.password"
        wrong.write_text(_WRONG_PASSWORD + "\n")
        wrong.chmod(0o600)
        xds_port, admin_port, management_port = free_ports(3)
        bad = ControlPlaneProcess(
            _policy(workdir, [app], free_port()), workdir=workdir, xds_port=xds_port, admin_port=admin_port,
            management_port=management_port, name="control-plane-wrong-password", extra_args=(
                "--eureka-url", second.url, "--eureka-refresh", str(REFRESH_S),
                "--eureka-username", EUREKA_AUTH.user, "--eureka-password-file", str(wrong)))
        bad.start()
        try:
            def bad_error() -> str:
                bad.process.check_alive()
                sources = bad.status()["sources"]
                return str(next(source["registry"]["last_error"] for name, source in sources.items()
                                if name.startswith("eureka:")))

            error = wait_until(bad_error, timeout_s=_WAIT_S, ignore=(OSError, ValueError, KeyError),
                               message=lambda: f"the wrong password was never reported:\n{bad.tail(20)}")
            assert "denied (401)" in error and "--eureka-username" in error, error
            assert _WRONG_PASSWORD not in str(bad.status()) and _WRONG_PASSWORD not in bad.metrics_text()
            assert _WRONG_PASSWORD not in bad.tail(400)
        finally:
            bad.stop()


def _p95(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]


def test_registration_latency_and_restart_never_flushes_envoy(
        eureka_server: EurekaServer, upstreams: Callable[..., UpstreamPool], eureka_stack: StackFactory,
        capsys: pytest.CaptureFixture[str]) -> None:
    app, timed_app = "rs-web", "lat-web"
    pool = upstreams("a", "b")
    with registered(eureka_server, *_instances(app, pool, "a", "b")):
        stack = eureka_stack([eureka_server.url], [app, timed_app])
        both = {pool["a"].port: "HEALTHY", pool["b"].port: "HEALTHY"}
        stack.wait_hosts(app, both)
        # Registration -> Envoy: a new instance registers, timed until Envoy's /clusters lists it HEALTHY.
        # Nothing listens on these ports: no traffic goes to this cluster, only its EDS is watched.
        samples: list[float] = []
        expected: dict[int, str] = {}
        # One untimed instance first: the cluster appears in Envoy (CDS) with it; the trials time EDS only.
        ports = free_ports(21)
        jitter = random.Random(13)
        with ExitStack() as trials:
            for trial, port in enumerate(ports):
                instance = EurekaInstance(app=timed_app, instance_id=f"{timed_app}-{port}", port=port,
                                          lease_duration_s=30)
                # Trials would otherwise start right after the poll that showed the last one, every one a
                # full interval before the next poll: a random offset samples the whole interval.
                time.sleep(jitter.uniform(0.0, REFRESH_S))
                begun = time.monotonic()
                trials.enter_context(Registration(eureka_server, instance))
                expected[port] = "HEALTHY"
                stack.wait_hosts(timed_app, expected, interval_s=0.01)
                if trial > 0:
                    samples.append(time.monotonic() - begun)
            for registration in list(expected):
                eureka_server.cancel(timed_app, f"{timed_app}-{registration}")
        ordered = sorted(samples)
        with capsys.disabled():
            print(f"\n[eureka] registration -> Envoy HEALTHY, --eureka-refresh {REFRESH_S} s, 20 trials: "
                  f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {_p95(ordered) * 1000:.0f} ms, "
                  f"max {ordered[-1] * 1000:.0f} ms")
        # One poll interval, the server's read-write cache, one publish and Envoy's update.
        assert ordered[-1] < 10.0, ordered
        # The server restarts and comes back EMPTY; the apps' next heartbeats get 404 and register again.
        # Traffic is sampled throughout: the resync grace holds the endpoints, so nothing ever fails.
        load = SteadyLoad(stack.url, rate_per_s=40, concurrency=2)
        load.start()
        try:
            eureka_server.restart()
            # The source's first answer after the outage holds the endpoints (resync grace): still both.
            # After errors the source retries with full-jitter backoff capped at 30 s (docs/eureka.md), so its
            # first answer can come that long after the server is back.
            wait_until(lambda: stack.registry()["failing_watches"] == 0, timeout_s=_RECOVERY_S,
                       message=lambda: f"the source never recovered: {stack.registry()}")
            assert stack.hosts(app) == both
            wait_until(lambda: {f"{app}-a", f"{app}-b"} <= set(eureka_server.instances()), timeout_s=_WAIT_S,
                       message="the apps never registered again after the restart")
            wait_until(lambda: stack.registry()["details"]["instances"] == 2
                       and stack.registry()["last_error"] == "", timeout_s=_WAIT_S,
                       message=lambda: f"the source never resynced: {stack.registry()}")
            grace = stack.registry()["resync_grace_remaining_s"]
            stack.wait_hosts(app, both)
        finally:
            result = load.stop()
        assert grace > 0, "the restart did not start a resync grace"
        assert result.total > 0 and result.non_2xx == 0 and result.failures == 0, result.summary()
        assert set(result.by_upstream) == {"a", "b"}, result.summary()
        _no_rejections(stack)
