"""The harness proven against a real Envoy with a static bootstrap, independent of the control plane."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import (
    EnvoyProcess,
    ManagedProcess,
    PortInUseError,
    ProcessExitedError,
    SteadyLoad,
    UpstreamPool,
    run_requests,
    unique_base_id,
    wait_until,
)

LISTENER = "ingress"
CLUSTER = "backend"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def static_bootstrap(pool: UpstreamPool, *, admin_port: int) -> str:
    """Listener on an OS-chosen port -> one round-robin cluster over every upstream in `pool`."""
    bootstrap: dict[str, Any] = {
        "node": {"id": "harness-test", "cluster": "harness"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": LISTENER,
                # Port 0: Envoy binds a port the OS picks, read back from admin, so no free-port race.
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": _HCM,
                        "stat_prefix": LISTENER,
                        "access_log": [{
                            "name": "envoy.access_loggers.stdout",
                            "typed_config": {
                                "@type": "type.googleapis.com/"
                                "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                            },
                        }],
                        "route_config": {
                            "name": "local",
                            "virtual_hosts": [{
                                "name": "all",
                                "domains": ["*"],
                                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": CLUSTER}}],
                            }],
                        },
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                            },
                        }],
                    },
                }]}],
            }],
            "clusters": [{
                "name": CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "lb_policy": "ROUND_ROBIN",
                "load_assignment": {
                    "cluster_name": CLUSTER,
                    "endpoints": [{"lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {
                            "address": "127.0.0.1", "port_value": server.port,
                        }}}}
                        for server in pool
                    ]}],
                },
            }],
        },
    }
    return yaml.safe_dump(bootstrap, sort_keys=False)


def test_static_envoy_spreads_traffic_round_robin(
    upstreams: Callable[..., UpstreamPool], envoy_factory: Callable[..., EnvoyProcess]
) -> None:
    pool = upstreams("alpha", "beta")
    started = time.monotonic()
    envoy = envoy_factory(lambda admin_port: static_bootstrap(pool, admin_port=admin_port))
    startup_s = time.monotonic() - started
    assert startup_s < 20, f"Envoy took {startup_s:.1f} s to become LIVE"
    url = f"http://127.0.0.1:{envoy.listener_port(LISTENER)}/some/path"

    result = run_requests(url, count=400, concurrency=8, timeout_s=5)

    assert result.total == 400, result.summary()
    assert result.failures == 0, result.summary()
    assert result.by_status == {200: 400}
    for name in ("alpha", "beta"):
        assert 0.40 <= result.share(name) <= 0.60, result.summary()
    assert pool.hits() == result.by_upstream
    assert result.latency_quantile(0.5) <= result.latency_quantile(0.99) < 5

    # Stats: the counters Envoy keeps agree with what the client saw.
    assert envoy.update_rejected_total() == 0
    stats = envoy.stats()
    assert stats[f"cluster.{CLUSTER}.membership_healthy"] == 2
    assert stats[f"cluster.{CLUSTER}.upstream_rq_total"] == 400
    assert envoy.stat(f"http.{LISTENER}.downstream_rq_2xx") == 400
    assert envoy.stat("server.state") == 0  # 0 = LIVE
    with pytest.raises(KeyError):
        envoy.stat("no.such.stat")
    # A static bootstrap has no xDS subscriptions: no versions, no control-plane connection.
    assert envoy.versions() == {}
    assert not envoy.control_plane_connected()
    assert envoy.ready()
    assert envoy.server_info()["state"] == "LIVE"

    # Admin JSON views.
    dump_types = [c["@type"].rsplit(".", 1)[-1] for c in envoy.config_dump()["configs"]]
    assert {"BootstrapConfigDump", "ClustersConfigDump", "ListenersConfigDump"} <= set(dump_types)
    assert "EndpointsConfigDump" not in dump_types
    with_eds = envoy.config_dump(include_eds=True)["configs"]
    assert any(c["@type"].endswith("EndpointsConfigDump") for c in with_eds)
    (backend,) = [c for c in envoy.clusters_json()["cluster_statuses"] if c["name"] == CLUSTER]
    host_ports = sorted(h["address"]["socket_address"]["port_value"] for h in backend["host_statuses"])
    assert host_ports == sorted(server.port for server in pool)

    # Access logs reach the stdout log file within Envoy's (shortened) flush interval.
    lines = _wait_access_lines(envoy, count=400)
    assert all('" 200 ' in line for line in lines), lines[:3]


def _wait_access_lines(envoy: EnvoyProcess, *, count: int) -> list[str]:
    def enough() -> list[str] | None:
        lines = [line for line in envoy.access_log_lines() if "GET /some/path" in line]
        return lines if len(lines) >= count else None

    return wait_until(enough, timeout_s=15, message=f"fewer than {count} access log lines")


def test_steady_load_is_rate_bounded(
    upstreams: Callable[..., UpstreamPool], envoy_factory: Callable[..., EnvoyProcess]
) -> None:
    pool = upstreams("one", "two")
    envoy = envoy_factory(lambda admin_port: static_bootstrap(pool, admin_port=admin_port))
    url = f"http://127.0.0.1:{envoy.listener_port(LISTENER)}/"
    rate = 40.0

    with SteadyLoad(url, rate_per_s=rate, concurrency=4, max_duration_s=20) as load:
        wait_until(lambda: load.snapshot().total >= 30, timeout_s=15, message="steady load sent too little")
        result = load.stop()

    assert result.failures == 0, result.summary()
    # Never faster than the rate (one slot of slack for the first request at t=0).
    assert result.total <= rate * result.duration_s + 1, result.summary()
    assert set(result.by_upstream) == {"one", "two"}
    assert result.window(0, result.duration_s).total == result.total


def test_bad_bootstrap_fails_fast_with_log_tail(workdir: Path, envoy_binary: Path) -> None:
    envoy = EnvoyProcess("not: [valid", workdir=workdir, admin_port=0, base_id=unique_base_id(),
                         binary=envoy_binary)
    started = time.monotonic()
    with pytest.raises(ProcessExitedError, match="yaml"):
        envoy.start(timeout_s=20)
    assert time.monotonic() - started < 15
    assert not envoy.alive


def test_admin_port_taken_raises_port_in_use(
    workdir: Path, envoy_binary: Path, upstreams: Callable[..., UpstreamPool]
) -> None:
    pool = upstreams("only")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        envoy = EnvoyProcess(static_bootstrap(pool, admin_port=port), workdir=workdir, admin_port=port,
                             base_id=unique_base_id(), binary=envoy_binary)
        with pytest.raises(PortInUseError):
            envoy.start(timeout_s=20)


def test_managed_process_stop_takes_down_the_process_group(workdir: Path) -> None:
    # The child prints its own child's pid, then waits: stop() must end both.
    script = "import subprocess; p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True); p.wait()"
    process = ManagedProcess("group", [sys.executable, "-c", script], log_dir=workdir)
    with process:
        grandchild = int(wait_until(
            lambda: next((line for line in process.tail(5).splitlines() if line.isdigit()), None),
            timeout_s=15,
            message="child never printed its grandchild's pid",
        ))
        assert process.alive
    assert not process.alive
    assert process.returncode is not None

    def gone() -> bool:
        # A zombie counts as gone: it is dead, and a container's pid 1 may never reap it.
        try:
            return Path(f"/proc/{grandchild}/stat").read_text().split(") ", 1)[1].startswith("Z")
        except FileNotFoundError:
            return True

    wait_until(gone, timeout_s=10, message=f"grandchild {grandchild} survived stop()")


def test_wait_until_reports_message_and_last_error() -> None:
    def failing() -> bool:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(TimeoutError, match=r"thing never happened.*ConnectionRefusedError: nobody home"):
        wait_until(failing, timeout_s=0.3, interval_s=0.05, message="thing never happened",
                   ignore=(ConnectionRefusedError,))
