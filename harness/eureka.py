"""A real Eureka server for tests, on loopback, and a client that registers instances as a Spring app does.

The server is the Spring Cloud Netflix Eureka server built once from tools/testbin/eureka
(`harness.testbin.ensure_binary("eureka")`, a fat jar) and run with `java -jar`. Everything a test depends on
is given on the command line (`server_properties`), so the jar's application.yml is only a fallback:

- no self-registration and no registry fetch for a lone server (it is nobody's client);
- self-preservation OFF and a short eviction interval, so an instance whose heartbeats stop is evicted after
  its own short lease (issue 13: "disappears after lease expiry");
- the read-only response cache OFF: reads come from the read-write cache, which every change invalidates,
  so a registration or status change shows in /eureka/apps at once instead of after the 30 s default;
- `eureka.server.my-url` set to its own URL, so a server never treats itself as a peer (both servers of a
  pair share the host name; Eureka otherwise compares host names only).

State lives in memory only: `restart()` comes back on the same port with an EMPTY registry, which is what a
restarted Eureka server looks like to clients (their heartbeats get 404 and they register again,
`Registration` does the same).

The REST calls (`EurekaApi`) are Eureka's own client API: POST /eureka/apps/{APP} to register, PUT
/eureka/apps/{APP}/{id} to renew, PUT .../status?value=... to override the status, DELETE .../status to
remove the override, DELETE /eureka/apps/{APP}/{id} to cancel. JSON both ways (`Accept: application/json`).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import shutil
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.api_error import ApiError
from harness.ports import LOOPBACK, PortInUseError, free_ports, retry_port_race
from harness.processes import ManagedProcess, ProcessExitedError, StartStop, tail_file, wait_until
from harness.testbin import JAR_JVM_FLAGS

InstanceStatus = Literal["UP", "DOWN", "STARTING", "OUT_OF_SERVICE", "UNKNOWN"]

_REQUEST_TIMEOUT_S = 5.0
# A JVM start is ~8 s on an idle 2-core machine and was 35 s with a CI run beside it (issue 13 measurements
# in docs/testing.md); the bound is for a machine that busy, not for the usual case.
_READY_TIMEOUT_S = 120.0
_PORT_ATTEMPTS = 3
# The flags the class-data archive was trained with (harness/testbin.py), plus -Xshare:auto: use an archive
# when it fits and never fail when it does not (a jar given by XDS_TESTBIN_EUREKA has none).
JVM_FLAGS: tuple[str, ...] = (*JAR_JVM_FLAGS, "-Xshare:auto")
# The eviction task's period: an expired lease is removed at most this long after it expires.
EVICTION_INTERVAL_MS = 500
# The JSON form of Eureka's "no data center" (what a Spring app off AWS sends).
_DATA_CENTER = {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"}


class EurekaApiError(ApiError):
    """The server answered a request with an unexpected status."""


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic credentials; the server built from tools/testbin/eureka requires them when given a user."""

    user: str
    password: str

    def header(self) -> str:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return f"Basic {token}"

    def __repr__(self) -> str:
        # Never print the password (in a failing assertion or a fixture repr).
        return f"BasicAuth(user={self.user!r}, password=***)"


@dataclass(frozen=True)
class EurekaInstance:
    """One instance as a Spring app registers it (its `InstanceInfo` in Eureka's JSON form).

    `renewal_interval_s` is how often `Registration` heartbeats; `lease_duration_s` is how long the server
    keeps the instance without a heartbeat (Eureka's defaults are 30 and 90 s; tests use short ones).
    The availability zone of a Spring app off AWS is the metadata key "zone".
    """

    app: str
    instance_id: str
    port: int
    ip_addr: str = LOOPBACK
    host_name: str = ""
    status: InstanceStatus = "UP"
    secure_port: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    renewal_interval_s: int = 1
    lease_duration_s: int = 3
    vip_address: str = ""

    @property
    def app_name(self) -> str:
        # Eureka stores application names upper-cased (registering "orders" lists it as "ORDERS").
        return self.app.upper()

    def document(self) -> dict[str, Any]:
        """The JSON body of POST /eureka/apps/{APP}."""
        secure = self.secure_port is not None
        return {
            "instance": {
                "instanceId": self.instance_id,
                "hostName": self.host_name or self.ip_addr,
                "app": self.app_name,
                "ipAddr": self.ip_addr,
                "status": self.status,
                "port": {"$": self.port, "@enabled": "true"},
                "securePort": {"$": self.secure_port if secure else 443, "@enabled": str(secure).lower()},
                "vipAddress": self.vip_address or self.app.lower(),
                "dataCenterInfo": dict(_DATA_CENTER),
                "leaseInfo": {
                    "renewalIntervalInSecs": self.renewal_interval_s,
                    "durationInSecs": self.lease_duration_s,
                },
                "metadata": dict(self.metadata),
            }
        }


class EurekaApi:
    """Eureka's REST API at `http://host:port/eureka/`, with optional basic auth."""

    request_timeout_s: float = _REQUEST_TIMEOUT_S

    def __init__(self, host: str, port: int, *, auth: BasicAuth | None = None) -> None:
        self.host = host
        self.port = port
        self.auth = auth

    @property
    def url(self) -> str:
        """The service URL, in the form Eureka configuration uses (`eureka.client.service-url`)."""
        return f"http://{self.host}:{self.port}/eureka/"

    # -- raw -------------------------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, *, body: object = None, query: Mapping[str, str] | None = None,
        auth: BasicAuth | Literal["default"] | None = "default", timeout_s: float | None = None,
    ) -> tuple[int, bytes]:  # fmt: skip
        """One request to `/eureka/<path>`; returns (status, body). Connection errors raise `OSError`.

        `auth=None` sends no credentials even when this client has some (to test that the server refuses).
        """
        target = "/eureka/" + path.lstrip("/") + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        credentials = self.auth if auth == "default" else auth
        if credentials is not None:
            headers["Authorization"] = credentials.header()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s or self.request_timeout_s)
        try:
            conn.request(method, target, body=payload, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _expect(self, method: str, path: str, expected: tuple[int, ...], **kwargs: Any) -> tuple[int, bytes]:
        status, data = self.request(method, path, **kwargs)
        if status not in expected:
            raise EurekaApiError(method, path, status, data.decode("utf-8", errors="replace"))
        return status, data

    # -- reads -----------------------------------------------------------------------------------------------

    def apps(self) -> dict[str, Any]:
        """GET /eureka/apps: the whole registry (the "applications" object)."""
        _, data = self._expect("GET", "apps", (200,))
        return dict(json.loads(data)["applications"])

    def delta(self) -> dict[str, Any]:
        """GET /eureka/apps/delta: the changes of the last few minutes (the "applications" object)."""
        _, data = self._expect("GET", "apps/delta", (200,))
        return dict(json.loads(data)["applications"])

    def instances(self) -> dict[str, dict[str, Any]]:
        """Every registered instance by instanceId, from one full fetch."""
        found: dict[str, dict[str, Any]] = {}
        for application in self.apps().get("application", []):
            for instance in application.get("instance", []):
                found[str(instance["instanceId"])] = instance
        return found

    def instance(self, app: str, instance_id: str) -> dict[str, Any] | None:
        """GET /eureka/apps/{APP}/{id}: one instance, or None when the server does not know it."""
        status, data = self._expect("GET", f"apps/{_seg(app.upper())}/{_seg(instance_id)}", (200, 404))
        return None if status == 404 else dict(json.loads(data)["instance"])

    def is_ready(self) -> bool:
        """The registry answers (the Spring context is up and Jersey serves /eureka)."""
        status, _ = self.request("GET", "apps", timeout_s=2.0)
        return status == 200

    # -- writes (what a Spring app's DiscoveryClient does) ---------------------------------------------------

    def register(self, instance: EurekaInstance) -> None:
        """POST /eureka/apps/{APP}: add or replace the instance (204)."""
        self._expect("POST", f"apps/{_seg(instance.app_name)}", (204,), body=instance.document())

    def heartbeat(self, app: str, instance_id: str) -> bool:
        """PUT /eureka/apps/{APP}/{id}: renew the lease. False when the server does not know the instance
        (404: it expired, was cancelled, or the server restarted): the client must register again."""
        status, _ = self._expect("PUT", f"apps/{_seg(app.upper())}/{_seg(instance_id)}", (200, 404))
        return status == 200

    def set_status(self, app: str, instance_id: str, status: InstanceStatus) -> None:
        """PUT .../status?value=STATUS: an override that wins over what the instance reports (e.g. an
        operator taking it OUT_OF_SERVICE)."""
        path = f"apps/{_seg(app.upper())}/{_seg(instance_id)}/status"
        self._expect("PUT", path, (200,), query={"value": status})

    def clear_status(self, app: str, instance_id: str, *, new_status: InstanceStatus | None = None) -> None:
        """DELETE .../status: drop the override. Without `new_status` the server sets the instance's status
        to UNKNOWN (and heartbeats do not change it); Spring's service-registry endpoint sends
        `value=UP` to put it back in service."""
        query = {"value": new_status} if new_status else None
        self._expect("DELETE", f"apps/{_seg(app.upper())}/{_seg(instance_id)}/status", (200,), query=query)

    def cancel(self, app: str, instance_id: str) -> None:
        """DELETE /eureka/apps/{APP}/{id}: deregister (a graceful shutdown). 404 if already gone."""
        self._expect("DELETE", f"apps/{_seg(app.upper())}/{_seg(instance_id)}", (200, 404))


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class Registration(StartStop):
    """One instance kept registered the way a Spring app's DiscoveryClient does: register, then renew every
    `renewal_interval_s` on a background thread; a 404 on renew (the server forgot it: lease expired or the
    server restarted empty) registers it again.

    `stop()` ends the heartbeats WITHOUT cancelling (the process "died"): the server evicts the instance once
    its lease expires. `cancel()` ends them and deregisters (a graceful shutdown).
    """

    def __init__(self, api: EurekaApi, instance: EurekaInstance) -> None:
        self.api = api
        self.instance = instance
        self.renewals = 0
        self.registrations = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"registration of {self.instance.instance_id} already started")
        self.api.register(self.instance)
        self.registrations += 1
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"eureka-heartbeat-{self.instance.instance_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.api.request_timeout_s + 1.0)
            self._thread = None

    def cancel(self) -> None:
        self.stop()
        self.api.cancel(self.instance.app, self.instance.instance_id)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        # Event.wait is the heartbeat period and the stop signal at once: stop() ends it without delay.
        while not self._stop.wait(self.instance.renewal_interval_s):
            try:
                if self.api.heartbeat(self.instance.app, self.instance.instance_id):
                    self.renewals += 1
                else:
                    self.api.register(self.instance)
                    self.registrations += 1
            except (OSError, EurekaApiError):
                # The server is down or restarting: keep trying on the next beat, as the real client does.
                self.errors += 1


def server_properties(
    port: int, *, peers: Sequence[str] = (), auth: BasicAuth | None = None,
    eviction_interval_ms: int = EVICTION_INTERVAL_MS,
) -> dict[str, str]:  # fmt: skip
    """Spring properties (`--key=value` on the command line) for a loopback test server on `port`.

    With `peers` (their service URLs) the server replicates to them and, at start, copies their registry
    (fetch-registry on): a restarted member of a pair comes back with what its peer holds. It still does not
    register itself, so the registry holds only the instances a test registers.
    """
    own_url = f"http://{LOOPBACK}:{port}/eureka/"
    properties = {
        "server.port": str(port),
        "server.address": LOOPBACK,
        "spring.main.banner-mode": "off",
        "eureka.instance.hostname": LOOPBACK,
        "eureka.instance.prefer-ip-address": "true",
        "eureka.client.register-with-eureka": "false",
        "eureka.client.fetch-registry": "true" if peers else "false",
        "eureka.client.service-url.defaultZone": ",".join(peers) if peers else own_url,
        "eureka.client.registry-fetch-interval-seconds": "1",
        "eureka.server.my-url": own_url,
        "eureka.server.enable-self-preservation": "false",
        "eureka.server.eviction-interval-timer-in-ms": str(eviction_interval_ms),
        "eureka.server.use-read-only-response-cache": "false",
        "eureka.server.response-cache-update-interval-ms": "500",
        # Serve at once after a (re)start instead of waiting up to 5 min for peers to fill the registry.
        "eureka.server.wait-time-in-ms-when-sync-empty": "0",
        "eureka.server.registry-sync-retries": "1" if peers else "0",
        "eureka.server.registry-sync-retry-wait-ms": "500",
    }
    return properties


def auth_environment(auth: BasicAuth | None) -> dict[str, str]:
    """The server's credentials as environment variables (Spring binds XDS_TESTBIN_USER to
    `xds.testbin.user`), so they stay out of the command line that the log's first line and `ps` show."""
    if auth is None:
        return {}
    return {"XDS_TESTBIN_USER": auth.user, "XDS_TESTBIN_PASSWORD": auth.password}


def peer_url(port: int, auth: BasicAuth | None = None) -> str:
    """A server's service URL as its peer lists it; credentials go in the URL's user info, which is how a
    Eureka server (and a Spring client) is told to send basic auth to a peer."""
    if auth is None:
        return f"http://{LOOPBACK}:{port}/eureka/"
    user, password = (urllib.parse.quote(part, safe="") for part in (auth.user, auth.password))
    return f"http://{user}:{password}@{LOOPBACK}:{port}/eureka/"


def java_command() -> str:
    found = shutil.which("java")
    if found is None:
        raise FileNotFoundError("`java` (a JDK or JRE >= 17) is needed to run the Eureka test server")
    return found


def _cds_flags(jar: Path) -> list[str]:
    """Use the class-data archive trained next to the jar at build time (about half the start time), if any.
    Its own log lines are turned off: a JVM whose classpath differs only warns and runs without it."""
    archive = jar.with_suffix(".jsa")
    if not archive.is_file():
        return []
    return [f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]


def _lost_port(log_text: str) -> bool:
    text = log_text.lower()
    # Tomcat via Spring Boot: "Port 8761 was already in use." (and a BindException further down).
    return "address already in use" in text or "was already in use" in text


class EurekaServer(EurekaApi, StartStop):
    """`java -jar eureka.jar` on 127.0.0.1, its output in `<workdir>/<name>.log`.

    The port is chosen at the first start (or given) and kept, so `restart()` comes back where clients look.
    `auth` makes every request need basic auth; this object's own requests send it.
    """

    def __init__(
        self, workdir: Path, *, jar: Path, name: str = "eureka", port: int | None = None,
        peers: Sequence[str] = (), auth: BasicAuth | None = None,
        extra_properties: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(LOOPBACK, port or 0, auth=auth)
        self.workdir = workdir
        self.jar = jar
        self.name = name
        self.peers = tuple(peers)
        self.extra_properties = dict(extra_properties or {})
        self._process: ManagedProcess | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self, *, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Start (on a free port the first time) and wait until /eureka/apps answers."""
        if self.port:
            self.launch()
            self.wait_ready(timeout_s)
            return

        def attempt() -> None:
            self.port = free_ports(1)[0]
            self.launch()
            self.wait_ready(timeout_s)

        retry_port_race(attempt, attempts=_PORT_ATTEMPTS)

    def launch(self) -> None:
        """Start the JVM without waiting (a pair starts both, then waits for both)."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        if not self.port:
            raise RuntimeError(f"{self.name} has no port: give one or call start()")
        properties = {
            **server_properties(self.port, peers=self.peers, auth=self.auth), **self.extra_properties
        }
        # Program arguments: Spring gives them the highest precedence over the jar's application.yml.
        args = [java_command(), *JVM_FLAGS, *_cds_flags(self.jar), "-jar", str(self.jar)]
        args += [f"--{key}={value}" for key, value in properties.items()]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._process = ManagedProcess(
            self.name, args, log_dir=self.workdir, cwd=self.workdir, env=auth_environment(self.auth)
        )
        self._process.start()

    def wait_ready(self, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Wait until the registry answers; `PortInUseError` if the JVM exited having lost its port."""

        def up() -> bool:
            self._require_process().check_alive()
            return self.is_ready()

        try:
            wait_until(
                up, timeout_s=timeout_s, interval_s=0.2, ignore=(OSError,),
                message=lambda: f"Eureka {self.name} did not answer on {self.url}; last log lines:\n"
                + self.tail(),
            )  # fmt: skip
        except ProcessExitedError as e:
            if _lost_port(self.tail(400)):
                raise PortInUseError(f"Eureka {self.name} could not bind port {self.port}: {e}") from e
            raise
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM (Spring shuts down gracefully), SIGKILL after `timeout_s`."""
        if self._process is None:
            return None
        return self._process.stop(timeout_s)

    def kill(self) -> None:
        """SIGKILL: the server dies at once (the HA test's "one server of two dies")."""
        process = self._require_process()
        process.kill()
        with contextlib.suppress(TimeoutError):
            process.wait(timeout_s=10.0)

    def restart(self, *, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Stop and start on the same port. The registry is in memory: a lone server comes back EMPTY."""
        self.stop()
        self.launch()
        self.wait_ready(timeout_s)

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.alive

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def tail(self, n: int = 40) -> str:
        return tail_file(self.log_path, n)

    def logs(self, n: int = 40) -> dict[str, str]:
        """Log tails by process name, for failure reports (tests/backend_support.py)."""
        return {self.name: self.tail(n)}

    def _require_process(self) -> ManagedProcess:
        if self._process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._process


class EurekaPair(StartStop):
    """Two Eureka servers replicating to each other (each lists the other as its peer): what an HA
    deployment looks like to a client configured with both URLs."""

    def __init__(self, workdir: Path, *, jar: Path, auth: BasicAuth | None = None) -> None:
        self.workdir = workdir
        self.jar = jar
        self.auth = auth
        self.servers: tuple[EurekaServer, EurekaServer] | None = None
        self.name = "eureka-pair"

    @property
    def first(self) -> EurekaServer:
        return self._servers()[0]

    @property
    def second(self) -> EurekaServer:
        return self._servers()[1]

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self._servers()]

    def start(self, *, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Both JVMs start at once (each start is mostly single-threaded), then both are awaited."""

        def attempt() -> None:
            a, b = free_ports(2)
            url_a, url_b = (peer_url(p, self.auth) for p in (a, b))
            self.servers = (
                EurekaServer(self.workdir, jar=self.jar, name="eureka-a", port=a, peers=[url_b],
                             auth=self.auth),
                EurekaServer(self.workdir, jar=self.jar, name="eureka-b", port=b, peers=[url_a],
                             auth=self.auth),
            )
            for server in self.servers:
                server.launch()
            try:
                for server in self.servers:
                    server.wait_ready(timeout_s)
            except BaseException:
                self.stop()
                raise

        retry_port_race(attempt, attempts=_PORT_ATTEMPTS)

    def stop(self) -> None:
        for server in self.servers or ():
            server.stop()

    def logs(self, n: int = 40) -> dict[str, str]:
        return {name: text for server in self.servers or () for name, text in server.logs(n).items()}

    def _servers(self) -> tuple[EurekaServer, EurekaServer]:
        if self.servers is None:
            raise RuntimeError("the Eureka pair was never started")
        return self.servers
