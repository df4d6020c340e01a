"""A real Consul agent for tests, on loopback, and a small synchronous client for its HTTP API.

The agent runs `consul agent -dev` (one server, its own leader) with every port chosen from the free loopback
ports, DNS (unless asked for: `ConsulAgent(dns=True)`) and gRPC disabled, and the update check off, so it
never talks to anything but 127.0.0.1. The binary comes from `harness.testbin.ensure_binary("consul")`.

State lives in memory only (`-dev`): `restart()` brings the agent back on the same ports but with an EMPTY
catalog and KV store. That is deliberate: it is what "Consul restarted empty and was repopulated" looks like
to a watcher (the index goes backwards), and it is the only kind of restart a dev agent can do.

`pause()`/`resume()` send SIGSTOP/SIGCONT: the kernel still accepts TCP connections on the listening socket,
but nothing answers, which is how a hung (not dead) Consul looks to a client, so requests time out.

The HTTP methods (`ConsulHttpApi`) are shared with the Docker-backed agent in tests/consul_fixtures.py, so a
test reads the same against either backend. Every request has a timeout (default `_REQUEST_TIMEOUT_S`):
tests poll in loops, and a paused agent must fail a poll rather than hang the run.
"""

from __future__ import annotations

import http.client
import json
import signal
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.api_error import ApiError
from harness.ports import LOOPBACK, free_ports, retry_port_race
from harness.processes import ManagedProcess, ProcessOwner, StartStop, wait_until

CheckStatus = Literal["passing", "warning", "critical"]

_REQUEST_TIMEOUT_S = 5.0
_LEADER_TIMEOUT_S = 30.0
_PORT_ATTEMPTS = 3
# The agent enforces a 1 s floor on check intervals (shorter ones are raised to 1 s with a warning).
_MIN_CHECK_INTERVAL_S = 1.0
_CHECK_ENDPOINT: dict[CheckStatus, str] = {"passing": "pass", "warning": "warn", "critical": "fail"}
# Environment for every Consul process: no call home (HashiCorp's checkpoint service) from a test machine.
AGENT_ENV: Mapping[str, str] = {"CHECKPOINT_DISABLE": "1"}


class ConsulApiError(ApiError):
    """The agent answered an HTTP request with an unexpected status."""


@dataclass(frozen=True)
class ConsulPorts:
    http: int
    serf_lan: int
    serf_wan: int
    server: int
    # Consul's DNS interface (UDP and TCP on the same port), or None when disabled (the default).
    dns: int | None = None

    @classmethod
    def pick(cls, *, dns: bool = False) -> ConsulPorts:
        # Serf also binds UDP on its ports; a TCP-free port is almost always UDP-free too, and a collision
        # is caught by the same "address already in use" retry as the TCP race.
        if dns:
            http, serf_lan, serf_wan, server, dns_port = free_ports(5)
            return cls(http=http, serf_lan=serf_lan, serf_wan=serf_wan, server=server, dns=dns_port)
        http, serf_lan, serf_wan, server = free_ports(4)
        return cls(http=http, serf_lan=serf_lan, serf_wan=serf_wan, server=server)


def agent_args(ports: ConsulPorts, *, node_name: str, log_level: str) -> list[str]:
    """`consul` arguments (after the program name) for a loopback-only dev agent on `ports`."""
    return [
        "agent", "-dev",
        f"-node={node_name}",
        f"-bind={LOOPBACK}", f"-client={LOOPBACK}", f"-advertise={LOOPBACK}",
        f"-http-port={ports.http}",
        # -1 disables a listener. gRPC is not used by the control plane, DNS only by the DNS SRV source's
        # tests (issue 13); fewer ports, fewer races.
        f"-dns-port={-1 if ports.dns is None else ports.dns}", "-grpc-port=-1", "-grpc-tls-port=-1",
        # Serf WAN keeps a real port: disabling it makes some catalog endpoints return errors.
        f"-serf-lan-port={ports.serf_lan}", f"-serf-wan-port={ports.serf_wan}",
        f"-server-port={ports.server}",
        f"-log-level={log_level}",
        # Belt and braces with CHECKPOINT_DISABLE: the agent must never call out from a test machine.
        "-hcl=disable_update_check = true",
    ]  # fmt: skip


def _duration(seconds: float) -> str:
    """A Go duration string, as the Consul API wants ("1500ms")."""
    return f"{round(seconds * 1000)}ms"


@dataclass(frozen=True)
class TtlCheck:
    """A check the test drives itself with `set_check`; it turns critical if not refreshed within `ttl_s`.

    `status` is the initial status. It defaults to passing (Consul's own default is critical) so that a
    freshly registered instance is healthy without a second call; set it to "critical" to model a starting
    instance.
    """

    ttl_s: float = 300.0
    status: CheckStatus = "passing"
    check_id: str | None = None

    def definition(self, check_id: str) -> dict[str, Any]:
        return {"CheckID": check_id, "Name": check_id, "TTL": _duration(self.ttl_s), "Status": self.status}


@dataclass(frozen=True)
class HttpCheck:
    """A check the agent runs itself: GET `url` every `interval_s`; 2xx passing, 429 warning, else critical.

    Point it at a loopback URL the test controls (an `UpstreamServer`). The status is critical until the
    first probe, which the agent schedules at a random point within the first interval.
    """

    url: str
    interval_s: float = _MIN_CHECK_INTERVAL_S
    timeout_s: float = 1.0
    status: CheckStatus = "critical"
    check_id: str | None = None

    def __post_init__(self) -> None:
        if self.interval_s < _MIN_CHECK_INTERVAL_S:
            raise ValueError(f"Consul raises check intervals below {_MIN_CHECK_INTERVAL_S:g} s; asked for "
                             f"{self.interval_s:g} s")

    def definition(self, check_id: str) -> dict[str, Any]:
        return {
            "CheckID": check_id, "Name": check_id, "HTTP": self.url, "Method": "GET",
            "Interval": _duration(self.interval_s), "Timeout": _duration(self.timeout_s),
            "Status": self.status,
        }  # fmt: skip


@dataclass(frozen=True)
class Weights:
    """Service weights: what Consul reports for an instance whose checks pass, and for one warning."""

    passing: int
    warning: int = 1


class ConsulHttpApi:
    """The agent HTTP API calls tests need, over `http_host`/`http_port` (provided by the backend)."""

    request_timeout_s: float = _REQUEST_TIMEOUT_S

    @property
    def http_host(self) -> str:
        raise NotImplementedError

    @property
    def http_port(self) -> int:
        raise NotImplementedError

    @property
    def http_address(self) -> str:
        """host:port of the HTTP API, as the control plane's Consul source is configured with."""
        return f"{self.http_host}:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.http_address}"

    # -- raw -------------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        query: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> tuple[int, bytes]:
        """One request; returns (status, body). Connection errors and timeouts raise `OSError`."""
        status, _, data = self._exchange(method, path, body=body, query=query, timeout_s=timeout_s)
        return status, data

    def index(self, path: str = "/v1/catalog/services", *, timeout_s: float | None = None) -> int:
        """The `X-Consul-Index` of a GET: the raft index a watcher's blocking query waits on.

        After `restart()` it starts over, smaller than before: the "index went backwards" case a watcher
        must treat as a reset.
        """
        status, headers, data = self._exchange("GET", path, timeout_s=timeout_s)
        if status != 200 or "x-consul-index" not in headers:
            raise ConsulApiError("GET", path, status, data.decode("utf-8", errors="replace"))
        return int(headers["x-consul-index"])

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        query: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        conn = http.client.HTTPConnection(
            self.http_host, self.http_port, timeout=timeout_s or self.request_timeout_s
        )
        try:
            conn.request(method, target, body=body)
            response = conn.getresponse()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return response.status, headers, response.read()
        finally:
            conn.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """A request whose answer must be 200; returns the decoded JSON body (None when empty)."""
        payload = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        status, data = self.request(method, path, body=payload, query=query, timeout_s=timeout_s)
        if status != 200:
            raise ConsulApiError(method, path, status, data.decode("utf-8", errors="replace"))
        return json.loads(data) if data.strip() else None

    # -- status ----------------------------------------------------------------------------------------------

    def leader(self, *, timeout_s: float | None = None) -> str:
        """The raft leader's address ("127.0.0.1:8300"), or "" while there is none."""
        leader = self._call("GET", "/v1/status/leader", timeout_s=timeout_s)
        return leader if isinstance(leader, str) else ""

    def is_ready(self) -> bool:
        """A leader is elected and the agent's own node is in the catalog, so registrations will sync."""
        if not self.leader(timeout_s=2.0):
            return False
        return bool(self._call("GET", "/v1/catalog/nodes", timeout_s=2.0))

    # -- services and checks ---------------------------------------------------------------------------------

    def register_service(
        self,
        name: str,
        *,
        service_id: str,
        address: str,
        port: int,
        tags: Sequence[str] = (),
        meta: Mapping[str, str] | None = None,
        weights: Weights | None = None,
        check: TtlCheck | HttpCheck | None = None,
    ) -> str | None:
        """Register (or replace) one instance with the agent; return its check id, if it has a check.

        The check id is `check.check_id` or `service:<service_id>` (what Consul itself would choose).
        Re-registering an id replaces its checks too, so a test can change a check's kind.
        """
        definition: dict[str, Any] = {
            "ID": service_id, "Name": name, "Address": address, "Port": port, "Tags": list(tags),
            "Meta": dict(meta or {}),
        }  # fmt: skip
        if weights is not None:
            definition["Weights"] = {"Passing": weights.passing, "Warning": weights.warning}
        check_id = None
        if check is not None:
            check_id = check.check_id or f"service:{service_id}"
            definition["Check"] = check.definition(check_id)
        self._call(
            "PUT", "/v1/agent/service/register", body=definition, query={"replace-existing-checks": "true"}
        )
        return check_id

    def deregister_service(self, service_id: str) -> None:
        self._call("PUT", f"/v1/agent/service/deregister/{_segment(service_id)}")

    def set_check(self, check_id: str, status: CheckStatus, *, output: str = "") -> None:
        """Set a TTL check's status (and reset its TTL)."""
        query = {"note": output} if output else None
        self._call("PUT", f"/v1/agent/check/{_CHECK_ENDPOINT[status]}/{_segment(check_id)}", query=query)

    def maintenance(self, service_id: str, enable: bool, *, reason: str = "xds test") -> None:
        """Put an instance into (or out of) maintenance: a critical `_service_maintenance:<id>` check."""
        query = {"enable": "true" if enable else "false", "reason": reason}
        self._call("PUT", f"/v1/agent/service/maintenance/{_segment(service_id)}", query=query)

    def health_service(self, name: str, *, passing: bool = False) -> list[dict[str, Any]]:
        """`/v1/health/service/<name>`: one entry per instance with its Node, Service and Checks."""
        query = {"passing": "true"} if passing else None
        entries = self._call("GET", f"/v1/health/service/{_segment(name)}", query=query)
        return list(entries or [])

    def catalog_services(self) -> dict[str, list[str]]:
        """Service name -> tags, as `/v1/catalog/services` reports (it always includes "consul")."""
        services = self._call("GET", "/v1/catalog/services")
        return dict(services or {})

    # -- KV --------------------------------------------------------------------------------------------------

    def kv_put(self, key: str, value: str | bytes) -> None:
        data = value.encode() if isinstance(value, str) else value
        if self._call("PUT", f"/v1/kv/{_key(key)}", body=data) is not True:
            raise ConsulApiError("PUT", f"/v1/kv/{key}", 200, "the agent did not store the value")

    def kv_get(self, key: str) -> str | None:
        """The value under `key` decoded as UTF-8 (KV holds policy text here), or None if absent."""
        status, data = self.request("GET", f"/v1/kv/{_key(key)}", query={"raw": "true"})
        if status == 404:
            return None
        if status != 200:
            raise ConsulApiError("GET", f"/v1/kv/{key}", status, data.decode("utf-8", errors="replace"))
        return data.decode("utf-8")

    def kv_delete(self, key: str, *, recurse: bool = False) -> None:
        self._call("DELETE", f"/v1/kv/{_key(key)}", query={"recurse": "true"} if recurse else None)


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _key(key: str) -> str:
    # KV keys are paths: keep their slashes.
    return urllib.parse.quote(key.lstrip("/"), safe="/")


class ConsulBackend(ConsulHttpApi, StartStop):
    """What a test gets as "the Consul agent", whichever backend runs it (a local process or a container).

    Every backend runs one dev-mode server on loopback with the same semantics: `restart()` keeps the
    address and comes back empty, `pause()` makes requests hang until `resume()`.
    """

    name: str

    def kill(self) -> None:
        """Die at once (SIGKILL), no graceful leave; `restart()` brings it back."""
        raise NotImplementedError

    def restart(self, *, timeout_s: float = _LEADER_TIMEOUT_S) -> None:
        """Stop (if running) and start on the same address; wait for the leader. Comes back EMPTY."""
        raise NotImplementedError

    def pause(self) -> None:
        """Freeze the agent: connections are accepted but never answered, until `resume()`."""
        raise NotImplementedError

    def resume(self) -> None:
        raise NotImplementedError

    def wait_leader(self, timeout_s: float = _LEADER_TIMEOUT_S) -> None:
        """Wait until requests will work: a leader elected and the agent's node synced."""
        raise NotImplementedError

    def tail(self, n: int = 40) -> str:
        """The last `n` lines of the agent's log, for failure reports."""
        raise NotImplementedError

    def logs(self, n: int = 40) -> dict[str, str]:
        """Log tails by process name (one: the agent's), for failure reports, as `KubeBackend.logs`."""
        return {self.name: self.tail(n)}


class ConsulAgent(ProcessOwner, ConsulBackend):
    """`consul agent -dev` as a child process, its output in `<workdir>/<name>.log`.

    Ports are chosen at the first `start()` and kept for the life of the object, so `restart()` comes back
    where clients expect it.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        binary: Path,
        name: str = "consul",
        node_name: str = "xds-test",
        log_level: str = "info",
        extra_args: Sequence[str] = (),
        dns: bool = False,
    ) -> None:
        """`dns=True` also opens Consul's DNS interface on a free loopback port (`dns_port`), for the DNS
        SRV source's tests (issue 13); off by default, as no other test needs it."""
        self.workdir = workdir
        self.binary = binary
        self.name = name
        self.node_name = node_name
        self.log_level = log_level
        self.extra_args = tuple(extra_args)
        self.dns = dns
        self._ports: ConsulPorts | None = None
        self._process: ManagedProcess | None = None
        self._paused = False

    # -- addresses -------------------------------------------------------------------------------------------

    @property
    def ports(self) -> ConsulPorts:
        if self._ports is None:
            raise RuntimeError(f"{self.name} has no ports before its first start()")
        return self._ports

    @property
    def http_host(self) -> str:
        return LOOPBACK

    @property
    def http_port(self) -> int:
        return self.ports.http

    @property
    def dns_port(self) -> int:
        """The DNS interface's port (UDP and TCP), on `LOOPBACK`; only with `dns=True`."""
        if self.ports.dns is None:
            raise RuntimeError(f"{self.name} was started without its DNS interface (ConsulAgent(dns=True))")
        return self.ports.dns

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self, *, timeout_s: float = _LEADER_TIMEOUT_S) -> None:
        """Start on free ports and wait until it has elected itself leader; retry if a port was taken."""
        if self._ports is not None:
            # Started before: keep the ports (clients hold this address), as restart() does.
            self._start_on(self._ports, timeout_s=timeout_s)
            return
        retry_port_race(
            # pick() is called without arguments unless DNS is asked for, as before (tests replace it).
            lambda: self._start_on(ConsulPorts.pick(dns=True) if self.dns else ConsulPorts.pick(),
                                   timeout_s=timeout_s),
            attempts=_PORT_ATTEMPTS,
        )

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM (SIGKILL after `timeout_s`); resumes a paused agent first so it can exit."""
        if self._process is None:
            return None
        if self._paused:
            self.resume()
        return self._process.stop(timeout_s)

    def kill(self) -> None:
        """SIGKILL, no graceful leave; reaped before returning so the ports are free again."""
        super().kill()
        self._paused = False

    def restart(self, *, timeout_s: float = _LEADER_TIMEOUT_S) -> None:
        """Stop and start again on the same ports. Dev mode keeps nothing: the agent comes back EMPTY."""
        self.stop()
        self._start_on(self.ports, timeout_s=timeout_s)

    def pause(self) -> None:
        """SIGSTOP: the process stays, its sockets accept connections, but nothing answers."""
        self._require_process().kill(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        self._require_process().kill(signal.SIGCONT)
        self._paused = False

    def wait_leader(self, timeout_s: float = _LEADER_TIMEOUT_S) -> None:
        """Wait until the agent is its own leader and has synced its node; fail at once if it exits."""

        def up() -> bool:
            self._require_process().check_alive()
            return self.is_ready()

        wait_until(
            up,
            timeout_s=timeout_s,
            interval_s=0.1,
            # Refused connections while it binds; 500 "No cluster leader" while it elects itself.
            ignore=(OSError, ConsulApiError),
            message=lambda: f"Consul {self.name} elected no leader; last log lines:\n{self.tail()}",
        )

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    # -- internals -------------------------------------------------------------------------------------------

    def _start_on(self, ports: ConsulPorts, *, timeout_s: float) -> None:
        self._refuse_if_running()
        self._ports = ports
        args = [
            str(self.binary),
            *agent_args(ports, node_name=self.node_name, log_level=self.log_level),
            *self.extra_args,
        ]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._paused = False
        self._spawn(args, env=AGENT_ENV, wait_ready=lambda: self.wait_leader(timeout_s),
                    port_error=f"Consul {self.name} could not bind a port")
