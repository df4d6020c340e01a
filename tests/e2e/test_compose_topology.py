"""The `docker compose up` demo's topology (compose/docker-compose.yml), run as local processes on one host.

No Docker engine runs here, so each container of the stack becomes a process, started the way the compose
file starts it: a real Consul agent (the `consul_agent` fixture), the KV policies written by the same
`demo/seed-kv.sh` that `kv-init` runs, `xds serve` with the Consul source and the KV prefix and no
`--config`, the two `demo/webapp.py` instances, their sidecar Envoys and the edge Envoy with bootstraps from
the same `demo/write-bootstraps.sh` that `xds-init` runs (so from `xds bootstrap`, with the compose file's
node ids and groups), the registrations made by the same `demo/register.py` that `registrar` runs, and the
same `demo/loadgen.py` as `loadgen`. Commands and arguments are read from the compose file itself, so the
test follows it when it changes.

What a single host forces us to change, and nothing else:

  * Each compose service has its own network namespace: both apps listen on :8080, both sidecars on :15001
    (their listeners bind 0.0.0.0), the edge on :10000 and every Envoy's admin on :9901. Here instance
    web-v1 gets 127.0.0.2 and web-v2 127.0.0.3 (the address its DNS name would resolve to), the edge
    127.0.0.1, and every port is a free one, so parallel runs and other processes never collide.
  * The policy files are the files in compose/policies, loaded and written back to Consul with only those
    listener addresses and ports replaced (`localize_policy`).
  * register.py resolves each instance by its compose DNS name; `--address INSTANCE=IP` hands it the
    loopback address instead.

Two choices of the test itself, not of the host: loadgen prints a line every second instead of every five,
at 200 requests a second instead of 40, so its lines are short slices of the run and the moments between a
KV write and the edge applying it see real traffic.

Then the README's canary walk-through: 90/10, `consul kv put xds/policies/web @policy-50-50.yaml`, then
`@policy-0-100.yaml`, with the split measured through the edge after each, not one failed request from
the traffic generator throughout, no update rejected by any Envoy, and `xds status` showing all three
proxies SYNCED.
"""

from __future__ import annotations

import http.client
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import (
    AdminError,
    ControlPlaneProcess,
    EnvoyProcess,
    ManagedProcess,
    free_port,
    wait_until,
)
from harness.consul import ConsulBackend

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DEMO_DIR = COMPOSE_DIR / "demo"
POLICY_DIR = COMPOSE_DIR / "policies"
VENV_BIN = Path(sys.executable).parent

# The address each instance's compose DNS name stands for. Two distinct addresses let both apps share one
# port and both sidecars another, as they share :8080 and :15001 in their own namespaces under compose,
# which is what register.py assumes (one --app-port, one --service-port for every instance).
INSTANCE_ADDRESSES = {"web-v1": "127.0.0.2", "web-v2": "127.0.0.3"}
EDGE_ADDRESS = "127.0.0.1"
COMMAND_TIMEOUT_S = 30.0
# register.py's own deadline: checks run every 2 s, and the `web` check passes only once the sidecar has
# the app's endpoint, so two or three intervals are normal.
REGISTRAR_TIMEOUT_S = 25.0
CONVERGE_TIMEOUT_S = 10.0
SPLIT_REQUESTS = 3000
PROMOTED_REQUESTS = 2000
# Deviation allowed from the configured share, in standard deviations of a binomial share over the sample:
# a correct control plane fails this about once in two million runs.
SIGMAS = 5.0
# Shorter than the compose file's 5 s window: each printed line then covers a short stretch of the run.
LOADGEN_WINDOW_S = 1.0
# Above the compose file's 40 req/s (chosen there for readable lines): the stretches between a KV write and
# the edge running the new route last well under a second, and they should see more than a few requests.
LOADGEN_RATE = 200
# The demo scripts are mounted read-only into the containers; running them must not leave a __pycache__.
SCRIPT_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
_PORT_PICK_ATTEMPTS = 20


# -- the compose file -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, dict[str, Any]]:
    # yaml.safe_load resolves the file's anchors and `<<` merge keys as Compose does.
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert isinstance(services, dict)
    return services


def command(service: dict[str, Any], key: str = "command") -> list[str]:
    value = service[key]
    assert isinstance(value, list), f"{key} must be in exec form: {value!r}"
    return [str(v) for v in value]


def option(argv: Sequence[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[list(argv).index(flag) + 1]


def with_option(argv: Sequence[str], flag: str, value: str) -> list[str]:
    """`argv` with the value after `flag` replaced; the flag must be there already."""
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


def demo_script(argv: Sequence[str]) -> list[str]:
    """A container's `python /demo/x.py ...` as a local command: this interpreter, the script in the tree."""
    assert argv[0] == "python" and argv[1].startswith("/demo/"), argv
    return [sys.executable, str(DEMO_DIR / argv[1].removeprefix("/demo/")), *argv[2:]]



# -- the one thing that differs: addresses and ports ------------------------------------------------------


def ports_free_on(addresses: Sequence[str], count: int) -> list[int]:
    """`count` ports that are free on every one of `addresses` a moment ago (the same port on each)."""
    ports: list[int] = []
    sockets: list[socket.socket] = []
    try:
        for _ in range(_PORT_PICK_ATTEMPTS):
            first = socket.socket()
            sockets.append(first)
            first.bind((addresses[0], 0))
            port = int(first.getsockname()[1])
            try:
                for address in addresses[1:]:
                    other = socket.socket()
                    sockets.append(other)
                    other.bind((address, port))
            except OSError:
                continue  # taken on another address: the sockets stay open, so this port is not offered again
            ports.append(port)
            if len(ports) == count:
                return ports
    finally:
        for sock in sockets:
            sock.close()
    raise AssertionError(f"no port free on all of {addresses} after {_PORT_PICK_ATTEMPTS} tries")


def localize_policy(text: str, *, group_addresses: dict[str, str], ports: dict[int, int]) -> str:
    """A compose policy document for one host: each listener's 0.0.0.0 becomes the address of the node group
    it serves, its port the one `ports` maps it to. Everything else is left exactly as the file says."""
    document = yaml.safe_load(text)
    for listener in document.get("listeners", []):
        # Under compose every listener binds all addresses of its own container's namespace.
        assert listener["address"] == "0.0.0.0", listener
        [group] = listener["groups"]
        listener["address"] = group_addresses[group]
        listener["port"] = ports[listener["port"]]
    return yaml.safe_dump(document, sort_keys=False)


# -- traffic ----------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Where requests through the edge landed: version -> count, plus everything that was not a 200."""

    versions: Counter[str] = field(default_factory=Counter)
    # (version, instance) pairs: which app actually answered for each version.
    instances: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.versions.values()) + sum(self.failures.values())

    def share(self, version: str) -> float:
        return self.versions[version] / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{self.total} requests: {dict(self.versions)}, by instance {dict(self.instances)}, " \
               f"failures {dict(self.failures)}"


def measure_split(url: str, *, count: int, concurrency: int = 8, timeout_s: float = 5.0) -> Split:
    """`count` GETs over `concurrency` keep-alive connections, counted by the `x-version` the app sets."""
    split = Split()
    lock = threading.Lock()
    host, _, port_text = url.removeprefix("http://").split("/", 1)[0].rpartition(":")
    port = int(port_text)

    def worker(requests: int) -> None:
        conn: http.client.HTTPConnection | None = None
        for _ in range(requests):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                version, instance = response.getheader("x-version"), response.getheader("x-instance")
                outcome = (version, instance) if response.status == 200 and version and instance else None
                failure = None if outcome else f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                conn = None
                outcome, failure = None, type(exc).__name__
            with lock:
                if outcome is not None:
                    split.versions[outcome[0]] += 1
                    split.instances[outcome] += 1
                else:
                    split.failures[failure or "?"] += 1
        if conn is not None:
            conn.close()

    shares = [count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)]
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in shares]
    for thread in threads:
        thread.start()
    # Each request is bounded by its socket timeout; this only bounds the whole run if something hangs.
    deadline = time.monotonic() + 60.0
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"requests still running after 60 s: {split}"
    return split


def band(p: float, n: int) -> float:
    return SIGMAS * math.sqrt(p * (1 - p) / n)


# -- the stack ----------------------------------------------------------------------------------------------


@dataclass
class Topology:
    consul: ConsulBackend
    consul_env: dict[str, str]
    policies: Path
    control_plane: ControlPlaneProcess
    envoys: dict[str, EnvoyProcess]  # by node id
    edge_url: str
    sidecar_port: int

    def kv_put_file(self, key: str, file: str) -> None:
        """What the README runs inside the consul container: `consul kv put KEY @FILE` in the policies dir."""
        result = subprocess.run(["consul", "kv", "put", key, f"@{file}"], cwd=self.policies,
                                env=self.consul_env, capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT_S, check=False)
        assert result.returncode == 0, result.stdout + result.stderr

    def policy_weights(self, file: str) -> dict[str, int]:
        """version -> weight of the edge route in one of the policy files (zero weights left out)."""
        document = yaml.safe_load((self.policies / file).read_text())
        [listener] = document["listeners"]
        [route] = listener["routes"]
        return {b["subset"]["version"]: int(b["weight"]) for b in route["backends"] if int(b["weight"])}

    def edge_weights(self, edge: EnvoyProcess) -> dict[str, int]:
        """version -> weight of the edge's weighted route, as Envoy runs it (zero weights left out)."""
        dump = edge.admin_json("/config_dump?resource=dynamic_route_configs")
        weights: dict[str, int] = {}
        for config in dump.get("configs", []):
            for host in config["route_config"].get("virtual_hosts", []):
                for route in host.get("routes", []):
                    for cluster in route["route"].get("weighted_clusters", {}).get("clusters", []):
                        version = re.search(r"version=(\w+)", cluster["name"])
                        assert version, cluster["name"]
                        if int(cluster["weight"]):
                            weights[version[1]] = int(cluster["weight"])
        return weights

    def healthy_hosts(self, envoy: EnvoyProcess) -> dict[str, set[tuple[str, int]]]:
        """cluster -> (address, port) of its hosts that Envoy counts as healthy."""
        out: dict[str, set[tuple[str, int]]] = {}
        for status in envoy.clusters_json().get("cluster_statuses", []):
            for host in status.get("host_statuses", []):
                if host.get("health_status", {}).get("eds_health_status", "HEALTHY") != "HEALTHY":
                    continue
                address = host["address"]["socket_address"]
                out.setdefault(status["name"], set()).add((address["address"], int(address["port_value"])))
        return out


@pytest.fixture
def processes() -> Iterator[Callable[..., ManagedProcess]]:
    """Starts the demo's Python services as managed processes; all stopped at teardown."""
    started: list[ManagedProcess] = []

    def start(name: str, args: Sequence[str], *, log_dir: Path) -> ManagedProcess:
        process = ManagedProcess(name, args, log_dir=log_dir, env=SCRIPT_ENV)
        started.append(process)
        process.start()
        return process

    yield start
    for process in reversed(started):
        process.stop()


def wait_http_ok(process: ManagedProcess, host: str, port: int, path: str) -> None:
    """The compose healthcheck of the apps: GET path answers 200."""

    def ok() -> bool:
        process.check_alive()
        conn = http.client.HTTPConnection(host, port, timeout=2)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        finally:
            conn.close()

    wait_until(ok, timeout_s=COMMAND_TIMEOUT_S, interval_s=0.05, ignore=(OSError,),
               message=lambda: f"{process.name} never answered {path}:\n{process.tail()}")


def write_bootstrap(spec: str, init: dict[str, Any], *, xds_address: str, admin_port: int, out: Path) -> str:
    """One bootstrap from compose/demo/write-bootstraps.sh with the xds-init service's arguments; only the
    addresses differ: the local control plane, and an admin port of this Envoy's own."""
    env = {**os.environ, **{k: str(v) for k, v in init["environment"].items()},
           "BOOTSTRAP_DIR": str(out), "BOOTSTRAP_XDS_ADDRESS": xds_address,
           "BOOTSTRAP_ADMIN_ADDRESS": f"{EDGE_ADDRESS}:{admin_port}",
           # The script calls `xds`, as the control-plane image does: this venv's console script.
           "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    entrypoint = command(init, "entrypoint")
    assert entrypoint == ["sh", "/demo/write-bootstraps.sh"], entrypoint
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["sh", str(DEMO_DIR / "write-bootstraps.sh"), spec], env=env, capture_output=True,
                            text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return (out / spec.split(":", 1)[0]).read_text()


@pytest.fixture
def topology(compose: dict[str, dict[str, Any]], consul_agent: ConsulBackend, consul_binary: Path,
             control_plane_factory: Any, envoy_factory: Any, processes: Callable[..., ManagedProcess],
             workdir: Path) -> Topology:
    """The stack brought up in the compose file's dependency order, each step waiting for what the next
    one's `depends_on` condition waits for."""
    registrar = command(compose["registrar"])
    app_port, sidecar_port = ports_free_on(list(INSTANCE_ADDRESSES.values()), 2)
    edge_port = free_port()
    # "127.0.0.1:10000:10000": the container port is the one the edge policy's listener names.
    [compose_edge_port] = [int(str(p).rsplit(":", 1)[1]) for p in compose["edge"]["ports"]]

    # The policy files, localized, in a directory that plays the consul container's /policies.
    policies = workdir / "policies"
    policies.mkdir()
    group_addresses = {"edge": EDGE_ADDRESS, **INSTANCE_ADDRESSES}
    port_map = {compose_edge_port: edge_port, int(option(registrar, "--service-port")): sidecar_port}
    for path in sorted(POLICY_DIR.glob("*.yaml")):
        localized = localize_policy(path.read_text(), group_addresses=group_addresses, ports=port_map)
        (policies / path.name).write_text(
            f"# compose/policies/{path.name} with listener addresses and ports for one host.\n{localized}")

    # kv-init: seed-kv.sh with the real `consul` CLI, pointed at the local agent.
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    (bin_dir / "consul").symlink_to(consul_binary)
    consul_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                  "CONSUL_HTTP_ADDR": consul_agent.url, "CHECKPOINT_DISABLE": "1"}
    kv_init = compose["kv-init"]
    assert command(kv_init, "entrypoint") == ["sh", "/demo/seed-kv.sh"]
    seeded = subprocess.run(["sh", str(DEMO_DIR / "seed-kv.sh"), *command(kv_init)], cwd=policies,
                            env=consul_env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                            check=False)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr

    # control-plane: the compose command, with the local Consul; the factory supplies the two listen
    # addresses (free ports on loopback) that compose sets to 0.0.0.0:18000 and :19005.
    serve = command(compose["control-plane"])
    assert serve[0] == "serve"
    extra: list[str] = []
    rest = serve[1:]
    while rest:
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag in {"--xds-address", "--admin-address"}:
            continue
        extra += [flag, consul_agent.url if flag == "--consul-address" else value]
    assert "--config" not in extra and option(extra, "--consul-kv-prefix") == "xds/policies", extra
    control_plane = control_plane_factory(None, extra_args=extra)

    # web-v1, web-v2: the app on its instance's address.
    for instance, address in INSTANCE_ADDRESSES.items():
        argv = with_option(demo_script(command(compose[instance])), "--port", str(app_port))
        app = processes(instance, [*argv, "--host", address], log_dir=workdir)
        wait_http_ok(app, address, app_port, "/health")

    # xds-init + the three Envoys, each with the bootstrap the script writes for its FILE:NODE_ID:GROUP.
    specs = {spec.split(":")[0]: spec for spec in command(compose["xds-init"])}
    envoys: dict[str, EnvoyProcess] = {}
    for service in ("web-v1-sidecar", "web-v2-sidecar", "edge"):
        file = option(command(compose[service]), "-c").removeprefix("/bootstrap/")
        spec = specs[file]
        envoys[spec.split(":")[1]] = envoy_factory(lambda admin_port, spec=spec: write_bootstrap(
            spec, compose["xds-init"], xds_address=control_plane.xds_address, admin_port=admin_port,
            out=workdir / "bootstrap"))

    # registrar: register.py with the compose arguments, the local Consul and ports, and the instances'
    # addresses given rather than resolved.
    argv = demo_script(registrar)
    argv = with_option(argv, "--consul-address", consul_agent.url)
    argv = with_option(argv, "--service-port", str(sidecar_port))
    argv = with_option(argv, "--app-port", str(app_port))
    addresses = [arg for instance, ip in INSTANCE_ADDRESSES.items()
                 for arg in ("--address", f"{instance}={ip}")]
    argv[2:2] = [*addresses, "--timeout", str(REGISTRAR_TIMEOUT_S)]
    registered = subprocess.run(argv, env={**os.environ, **SCRIPT_ENV}, capture_output=True, text=True,
                                timeout=REGISTRAR_TIMEOUT_S + COMMAND_TIMEOUT_S, check=False)
    assert registered.returncode == 0 and "every check passes" in registered.stdout, \
        registered.stdout + registered.stderr
    for instance in INSTANCE_ADDRESSES:
        assert f"id={instance} at {INSTANCE_ADDRESSES[instance]}:{sidecar_port}" in registered.stdout

    return Topology(consul=consul_agent, consul_env=consul_env, policies=policies,
                    control_plane=control_plane, envoys=envoys, edge_url=f"http://{EDGE_ADDRESS}:{edge_port}/",
                    sidecar_port=sidecar_port)


# -- the test -----------------------------------------------------------------------------------------------


def test_compose_topology_canary_follows_kv(topology: Topology, compose: dict[str, dict[str, Any]],
                                            processes: Callable[..., ManagedProcess], workdir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    envoys = topology.envoys
    assert set(envoys) == {"edge-1", "web-v1-sidecar", "web-v2-sidecar"}, sorted(envoys)
    edge = envoys["edge-1"]

    # The registrar returns when Consul says every check passes; the edge hears of it a moment later over
    # EDS. Compose's loadgen tolerates that moment (it counts errors); here it must see none, so wait.
    expected_hosts = {(address, topology.sidecar_port) for address in INSTANCE_ADDRESSES.values()}

    def edge_has_both_versions() -> bool:
        hosts = topology.healthy_hosts(edge)
        return {h for name, found in hosts.items() if "version=" in name for h in found} == expected_hosts

    wait_until(edge_has_both_versions, timeout_s=CONVERGE_TIMEOUT_S, ignore=(AdminError, OSError),
               message=lambda: f"edge never had both sidecars healthy: {topology.healthy_hosts(edge)}")

    # loadgen, as compose runs it, through the whole canary: every line it prints must say `errors 0`.
    loadgen_argv = demo_script(command(compose["loadgen"]))
    loadgen_argv = with_option(loadgen_argv, "--url", topology.edge_url)
    loadgen_argv = with_option(loadgen_argv, "--window", f"{LOADGEN_WINDOW_S:g}")
    loadgen_argv = with_option(loadgen_argv, "--rate", str(LOADGEN_RATE))
    loadgen_argv = with_option(loadgen_argv, "--heartbeat", str(workdir / "loadgen.alive"))
    loadgen = processes("loadgen", loadgen_argv, log_dir=workdir)

    results: dict[str, Split] = {}
    # The README's order: the seeded policy first (kv-init wrote it), then the two shifts.
    seeded = dict(spec.split("=", 1) for spec in command(compose["kv-init"]))["xds/policies/web"]
    for file in [seeded, "policy-50-50.yaml", "policy-0-100.yaml"]:
        if file != seeded:
            topology.kv_put_file("xds/policies/web", file)
        weights = topology.policy_weights(file)
        wait_until(lambda weights=weights: topology.edge_weights(edge) == weights,
                   timeout_s=CONVERGE_TIMEOUT_S, ignore=(AdminError, OSError),
                   message=lambda file=file: f"edge never ran {file}: {topology.edge_weights(edge)}")
        count = SPLIT_REQUESTS if len(weights) > 1 else PROMOTED_REQUESTS
        split = results[file] = measure_split(topology.edge_url, count=count)
        assert split.total == count and not split.failures, f"{file}: {split}"
        # Each version is answered only by its own instance: the edge reached the right sidecar, and the
        # sidecar its own app.
        assert set(split.instances) <= {("v1", "web-v1"), ("v2", "web-v2")}, f"{file}: {split}"
        if len(weights) > 1:
            p = weights["v1"] / sum(weights.values())
            assert abs(split.share("v1") - p) <= band(p, split.total), f"{file}: {split}"
        else:
            # Weight 0 means Envoy never picks v1 once the route is applied; a request already routed on a
            # worker thread just before the update is the only way one could still go there.
            assert split.share("v2") >= 0.99, f"{file}: {split}"

    # The window in progress when the last measurement ended, then one full window after it: the printed
    # lines cover every request sent during the canary (stopping loses only the unfinished last window).
    printed = len(loadgen_lines(loadgen))
    wait_until(lambda: len(loadgen_lines(loadgen)) > printed + 1, timeout_s=3 * LOADGEN_WINDOW_S + 5,
               interval_s=0.1, message=lambda: f"loadgen printed nothing new:\n{loadgen.tail()}")
    loadgen.stop()
    lines = loadgen_lines(loadgen)
    assert len(lines) >= 2, loadgen.tail()
    assert all(line.endswith("| errors 0") for line in lines), "\n".join(lines)
    # Its last window began after the promotion had been measured: v2 only.
    assert "| v2 ████████████████████ 100.0% |" in lines[-1] and "v1" not in lines[-1], lines[-1]
    loadgen_requests = sum(int(line.split("]", 1)[1].split()[0]) for line in lines)

    for node, envoy in envoys.items():
        assert envoy.update_rejected_total() == 0, f"{node} rejected an update:\n{envoy.tail()}"

    # `xds status`: all three proxies SYNCED on the four types they use (no service here has mTLS, so
    # nobody is sent Secrets), and the Consul source synced. Columns are found by their header names.
    def status_synced() -> str | None:
        text = xds_status(topology.control_plane)
        lines = [line for line in text.splitlines() if line.strip()]
        # Cells may hold spaces ("NOT SENT"): cut each row at the header's column starts.
        header = next(line for line in lines if line.startswith("NODE"))
        starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
        names = header.split()
        rows = {line.split()[0]: {name: line[a:b].strip() for name, a, b in
                                  zip(names, starts, [*starts[1:], len(line)], strict=True)}
                for line in lines}
        for node, group in [("edge-1", "edge"), ("web-v1-sidecar", "web-v1"), ("web-v2-sidecar", "web-v2")]:
            row = rows.get(node, {})
            if row.get("GROUP") != group or any(row.get(t) != "SYNCED" for t in ("CDS", "EDS", "LDS", "RDS")):
                return None
        # The SOURCE table only: the REGISTRY table after it also has a row per registry source.
        source_table = lines[lines.index(next(line for line in lines if line.startswith("SOURCE"))):]
        end = next((i for i, line in enumerate(source_table) if line.startswith("REGISTRY")), None)
        consul_rows = [line.split() for line in source_table[:end] if line.startswith("consul")]
        return text if consul_rows and all(row[1] == "SYNCED" for row in consul_rows) else None

    status = wait_until(status_synced, timeout_s=CONVERGE_TIMEOUT_S, interval_s=0.2,
                        message=lambda: f"xds status:\n{xds_status(topology.control_plane)}")

    with capsys.disabled():
        splits = " | ".join(f"{file}: v1 {split.share('v1'):.1%} v2 {split.share('v2'):.1%} of {split.total}"
                            for file, split in results.items())
        print(f"\n[compose topology] {splits} | loadgen {loadgen_requests} requests, errors 0")
        print(status)


def loadgen_lines(loadgen: ManagedProcess) -> list[str]:
    """The per-window lines the traffic generator printed ("[   3s]  40 req | v1 ... | errors 0")."""
    return [line for line in loadgen.log_path.read_text().splitlines() if re.match(r"\[\s*\d+s\]", line)]


def xds_status(control_plane: ControlPlaneProcess) -> str:
    argv = [sys.executable, "-m", "xds", "status", "--management-address", control_plane.management_address]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
