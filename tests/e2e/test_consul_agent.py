"""The `consul_agent` fixture against a real Consul: what later Consul-source tests rely on, proven once.

Each test gets a fresh dev agent (empty catalog and KV). Catalog changes made through the agent API reach
the health endpoints through the agent's anti-entropy sync, a moment later, so reads poll with
`wait_until` instead of asserting on the first answer.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import UpstreamPool, wait_until
from harness.consul import ConsulAgent, ConsulBackend, ConsulPorts, HttpCheck, TtlCheck, Weights
from tests.consul_fixtures import consul_backend_name

# Health changes propagate within milliseconds on loopback; HTTP checks need their first probe (<= 1 s).
_SYNC_TIMEOUT_S = 10.0


def _statuses(agent: ConsulBackend, service: str) -> dict[str, str]:
    """service id -> aggregated status of its checks, as Consul's health endpoint reports them."""
    result: dict[str, str] = {}
    for entry in agent.health_service(service):
        service_checks = [c for c in entry["Checks"] if c.get("ServiceID") == entry["Service"]["ID"]]
        statuses = {c["Status"] for c in service_checks}
        worst = next((s for s in ("critical", "warning") if s in statuses), "passing")
        result[entry["Service"]["ID"]] = worst
    return result


def _wait_statuses(agent: ConsulBackend, service: str, expected: dict[str, str]) -> None:
    wait_until(
        lambda: _statuses(agent, service) == expected,
        timeout_s=_SYNC_TIMEOUT_S,
        message=lambda: f"{service}: expected {expected}, Consul reports {_statuses(agent, service)}",
    )


def _register_pair(agent: ConsulBackend) -> tuple[str, str]:
    ids = ("web-1", "web-2")
    for index, service_id in enumerate(ids):
        check_id = agent.register_service(
            "web", service_id=service_id, address="127.0.0.1", port=9001 + index, tags=("v1",),
            meta={"zone": f"z{index}"}, weights=Weights(passing=10 * (index + 1)), check=TtlCheck(),
        )  # fmt: skip
        assert check_id == f"service:{service_id}"
    return ids


def test_agent_is_its_own_leader_on_loopback(consul_agent: ConsulBackend) -> None:
    leader = consul_agent.leader()
    assert leader.startswith("127.0.0.1:")
    if isinstance(consul_agent, ConsulAgent):
        assert leader == f"127.0.0.1:{consul_agent.ports.server}"
    assert consul_agent.http_address == f"127.0.0.1:{consul_agent.http_port}"
    assert consul_agent.url == f"http://{consul_agent.http_address}"
    # A fresh dev agent knows only itself.
    assert set(consul_agent.catalog_services()) == {"consul"}


def test_registered_instances_appear_in_health_with_their_attributes(consul_agent: ConsulBackend) -> None:
    _register_pair(consul_agent)
    _wait_statuses(consul_agent, "web", {"web-1": "passing", "web-2": "passing"})

    services = {e["Service"]["ID"]: e["Service"] for e in consul_agent.health_service("web")}
    assert services["web-1"]["Address"] == "127.0.0.1"
    assert services["web-2"]["Port"] == 9002
    assert services["web-1"]["Tags"] == ["v1"]
    assert services["web-2"]["Meta"] == {"zone": "z1"}
    assert services["web-2"]["Weights"] == {"Passing": 20, "Warning": 1}
    assert consul_agent.catalog_services()["web"] == ["v1"]


def test_ttl_check_drives_one_instance_critical_and_back(consul_agent: ConsulBackend) -> None:
    _register_pair(consul_agent)
    _wait_statuses(consul_agent, "web", {"web-1": "passing", "web-2": "passing"})

    consul_agent.set_check("service:web-2", "critical", output="test says so")
    _wait_statuses(consul_agent, "web", {"web-1": "passing", "web-2": "critical"})
    passing = [e["Service"]["ID"] for e in consul_agent.health_service("web", passing=True)]
    assert passing == ["web-1"]

    consul_agent.set_check("service:web-2", "warning")
    _wait_statuses(consul_agent, "web", {"web-1": "passing", "web-2": "warning"})
    consul_agent.set_check("service:web-2", "passing")
    _wait_statuses(consul_agent, "web", {"web-1": "passing", "web-2": "passing"})


def test_http_check_follows_a_loopback_endpoint(
    consul_agent: ConsulBackend, upstreams: Callable[..., UpstreamPool]
) -> None:
    backend = upstreams("api-1")["api-1"]
    consul_agent.register_service(
        "api", service_id="api-1", address="127.0.0.1", port=backend.port,
        check=HttpCheck(url=f"http://127.0.0.1:{backend.port}/health", interval_s=1.0),
    )  # fmt: skip
    _wait_statuses(consul_agent, "api", {"api-1": "passing"})
    assert backend.hits > 0, "the agent itself should have probed the endpoint"

    backend.status = 503
    _wait_statuses(consul_agent, "api", {"api-1": "critical"})
    backend.status = 200
    _wait_statuses(consul_agent, "api", {"api-1": "passing"})


def test_maintenance_and_deregistration(consul_agent: ConsulBackend) -> None:
    _register_pair(consul_agent)
    _wait_statuses(consul_agent, "web", {"web-1": "passing", "web-2": "passing"})

    consul_agent.maintenance("web-1", True)
    _wait_statuses(consul_agent, "web", {"web-1": "critical", "web-2": "passing"})
    consul_agent.maintenance("web-1", False)
    _wait_statuses(consul_agent, "web", {"web-1": "passing", "web-2": "passing"})

    consul_agent.deregister_service("web-1")
    _wait_statuses(consul_agent, "web", {"web-2": "passing"})


def test_paused_agent_times_out_and_answers_after_resume(consul_agent: ConsulBackend) -> None:
    consul_agent.kv_put("probe", "before")
    consul_agent.pause()
    try:
        # Connections are still accepted by the kernel; the timeout is what a client sees.
        with pytest.raises(TimeoutError):
            consul_agent.request("GET", "/v1/kv/probe", timeout_s=1.0)
    finally:
        consul_agent.resume()
    assert consul_agent.kv_get("probe") == "before"


def test_restart_keeps_the_address_and_comes_back_empty(consul_agent: ConsulBackend) -> None:
    address = consul_agent.http_address
    _register_pair(consul_agent)
    consul_agent.kv_put("xds/policy", "routes: []\n")
    _wait_statuses(consul_agent, "web", {"web-1": "passing", "web-2": "passing"})
    index_before = consul_agent.index()

    consul_agent.restart()

    assert consul_agent.http_address == address
    assert set(consul_agent.catalog_services()) == {"consul"}
    assert consul_agent.kv_get("xds/policy") is None
    # The raft index starts over: a blocking-query client must see it go backwards and reset.
    assert consul_agent.index() < index_before
    # And it is usable at once: repopulate it.
    _register_pair(consul_agent)
    _wait_statuses(consul_agent, "web", {"web-1": "passing", "web-2": "passing"})


def test_killed_agent_refuses_connections_until_restarted(consul_agent: ConsulBackend) -> None:
    consul_agent.kill()
    with pytest.raises(ConnectionRefusedError):
        consul_agent.leader(timeout_s=1.0)
    consul_agent.restart()
    assert consul_agent.leader()


def test_kv_put_get_delete(consul_agent: ConsulBackend) -> None:
    assert consul_agent.kv_get("xds/missing") is None
    consul_agent.kv_put("xds/policies/web", "split: {v1: 90, v2: 10}\n")
    consul_agent.kv_put("xds/policies/api", b"bytes \xe2\x9c\x93")
    assert consul_agent.kv_get("xds/policies/web") == "split: {v1: 90, v2: 10}\n"
    assert consul_agent.kv_get("/xds/policies/api") == "bytes \u2713"

    consul_agent.kv_delete("xds/policies/web")
    assert consul_agent.kv_get("xds/policies/web") is None
    consul_agent.kv_delete("xds", recurse=True)
    assert consul_agent.kv_get("xds/policies/api") is None


@pytest.mark.skipif(consul_backend_name() != "binary", reason="exercises the local-process backend's start")
def test_start_retries_on_fresh_ports_when_one_is_taken(
    consul_binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Force the race free_ports cannot exclude: the first pick's HTTP port is already bound by someone else.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        real_pick = ConsulPorts.pick
        picks: list[ConsulPorts] = []

        def pick() -> ConsulPorts:
            ports = real_pick()
            picks.append(dataclasses.replace(ports, http=taken) if not picks else ports)
            return picks[-1]

        monkeypatch.setattr(ConsulPorts, "pick", pick)
        agent = ConsulAgent(tmp_path, binary=consul_binary)
        try:
            agent.start()
            assert len(picks) == 2
            assert agent.ports == picks[1]
            assert agent.leader()
            assert "address already in use" in agent.log_path.read_text()
        finally:
            agent.stop()
