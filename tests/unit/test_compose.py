"""The `docker compose up` demo in compose/, checked without a Docker engine.

Nothing here starts a container. What can be proven statically is proven with the real tools instead:

  * `docker-compose config` (Debian's docker-compose 1.29; `make compose-tools` installs it) must accept the
    file, and the structural facts are read from its normalised output, not from our own YAML reading;
  * the control plane's `command` is parsed by the real `xds` argument parser;
  * every policy document the stack puts in Consul KV is loaded with our own loader, and the routing it
    produces is computed from the registrations the registrar would make, mapped by the Consul source's
    own parser;
  * the bootstrap init script is run as the compose file runs it, and each file it writes must equal
    `python -m xds bootstrap` with the same arguments and pass `envoy --mode validate`;
  * the Dockerfile's COPY sources exist and are inside the build context, and a non-editable install made
    from exactly those files renders a bootstrap (the image's `xds bootstrap`);
  * the demo service, the traffic generator, the registrar and the KV seeding script run locally, on
    loopback, against the real service or small fakes.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import http.client
import importlib.util
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from harness.envoy import envoy_binary
from xds.cli import build_parser
from xds.model.service import Catalog, Health
from xds.policy.apply import apply_policy
from xds.policy.load import parse_policy
from xds.policy.schema import Policy, merge_policies
from xds.sources.consul.parse import assemble_catalog, parse_health

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DEMO_DIR = COMPOSE_DIR / "demo"
POLICY_DIR = COMPOSE_DIR / "policies"
README = COMPOSE_DIR / "README.md"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

INSTALL_HINT = "make compose-tools   (or: sudo apt-get install --no-install-recommends docker-compose)"
COMMAND_TIMEOUT_S = 60.0
# Where the compose file mounts these directories inside the containers.
MOUNTS = {"/demo": DEMO_DIR, "/policies": POLICY_DIR}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
VENV_BIN = Path(sys.executable).parent


# -- docker-compose config ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(f"docker-compose is not installed; install it with: {INSTALL_HINT}")
    result = subprocess.run([binary, "-f", str(COMPOSE_FILE), "config"], cwd=ROOT, capture_output=True,
                            text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stdout}\n{result.stderr}"
    parsed = yaml.safe_load(result.stdout)
    assert isinstance(parsed, dict) and parsed.get("services"), result.stdout
    return parsed


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(config["services"])


def _depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """{dependency: condition}, for both the short (list) and the long (mapping) form."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def _one_shots(services: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Services that others wait on to *finish*: the init steps."""
    return {dep for s in services.values() for dep, cond in _depends_on(s).items()
            if cond == "service_completed_successfully"}


def _argv(service: Mapping[str, Any], key: str = "command") -> list[str]:
    value = service.get(key) or []
    assert isinstance(value, list), f"{key} must be written as a list (exec form), got {value!r}"
    return [str(v) for v in value]


def _option(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def _published(service: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(host_ip, published port) of each port mapping; docker-compose 1.29 prints the short syntax."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "")), int(port["published"])))
            continue
        match = re.fullmatch(r"(?:(?P<ip>[\d.]+):)?(?P<host>\d+):(?P<container>\d+)(?:/\w+)?", str(port))
        assert match, f"unexpected port syntax {port!r}"
        out.append((match["ip"] or "", int(match["host"])))
    return out


def test_the_stack_has_its_parts(services: dict[str, dict[str, Any]]) -> None:
    expected = {"consul", "kv-init", "control-plane", "xds-init", "web-v1", "web-v1-sidecar", "web-v2",
                "web-v2-sidecar", "registrar", "edge", "loadgen"}
    assert expected <= set(services), sorted(expected - set(services))


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    built = {s["image"] for s in services.values() if s.get("build") and s.get("image")}
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name}: neither image nor build"
        if build := service.get("build"):
            context = Path(build["context"])
            assert context.is_dir(), f"{name}: build context {context} does not exist"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: no Dockerfile"
            continue
        image = service["image"]
        if service.get("pull_policy") == "never":
            # Only a name some other service builds: Compose builds it before creating any container.
            assert image in built, f"{name}: pull_policy never, but no service builds {image}"
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: image {image!r} is not pinned to a tag"


def test_envoy_images_match_the_validating_envoy(services: dict[str, dict[str, Any]]) -> None:
    # The bootstraps are validated below with .venv's Envoy; the containers must run the same minor.
    version = subprocess.run([str(envoy_binary()), "--version"], capture_output=True, text=True,
                             timeout=COMMAND_TIMEOUT_S, check=True).stdout
    match = re.search(r"/(\d+)\.(\d+)\.\d+/", version)
    assert match, version
    envoys = {name: s["image"] for name, s in services.items()
              if s.get("image", "").startswith("envoyproxy/envoy:")}
    assert set(envoys) == {"edge", "web-v1-sidecar", "web-v2-sidecar"}
    for name, image in envoys.items():
        assert image.startswith(f"envoyproxy/envoy:v{match[1]}.{match[2]}."), (name, image, version)


def test_dependencies_name_existing_services(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, condition in _depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert condition in CONDITIONS, f"{name}: unknown condition {condition}"
            if condition == "service_healthy":
                assert services[dependency].get("healthcheck"), f"{name} waits for {dependency} to be " \
                                                                "healthy, but it has no healthcheck"
        network_mode = str(service.get("network_mode", ""))
        if network_mode.startswith("service:"):
            assert network_mode.removeprefix("service:") in services, f"{name}: {network_mode}"


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    one_shots = _one_shots(services)
    assert one_shots == {"kv-init", "xds-init", "registrar"}
    for name, service in services.items():
        if name in one_shots:
            assert not service.get("ports"), f"one-shot {name} publishes ports"
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_host_ports_are_loopback_only_and_used_by_the_readme(services: dict[str, dict[str, Any]]) -> None:
    readme = README.read_text()
    published = {name: _published(s) for name, s in services.items() if s.get("ports")}
    assert set(published) == {"consul", "control-plane", "edge"}, published
    for name, ports in published.items():
        for host_ip, port in ports:
            assert host_ip == "127.0.0.1", f"{name} publishes port {port} on {host_ip or 'every address'}"
            assert f"127.0.0.1:{port}" in readme, f"{name}: port {port} is published but README never uses it"


def test_mounted_paths_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("/"):
                assert Path(source).exists(), f"{name}: bind mount source {source} does not exist"
        for argv in (_argv(service, "entrypoint"), _argv(service)):
            for arg in argv:
                for mount, directory in MOUNTS.items():
                    if arg.startswith(mount + "/") and arg.endswith((".py", ".sh")):
                        assert (directory / arg.removeprefix(mount + "/")).is_file(), f"{name}: {arg}"


def test_control_plane_command_is_accepted_by_the_cli(services: dict[str, dict[str, Any]]) -> None:
    argv = _argv(services["control-plane"])
    args = build_parser({}).parse_args(argv)
    assert args.command == "serve"
    assert args.consul_address == "http://consul:8500"
    assert args.consul_kv_prefix == "xds/policies"
    assert args.xds_address == "0.0.0.0:18000"
    assert args.admin_address == "0.0.0.0:19005"
    assert not args.config, "the demo's policy lives in Consul KV, not in a file"
    assert {"18000", "19005"} <= {str(p) for p in services["control-plane"].get("expose", [])}


# -- policies -------------------------------------------------------------------------------------------


def _policy_files() -> list[Path]:
    files = sorted(POLICY_DIR.glob("*.yaml"))
    assert files, f"no policy files in {POLICY_DIR}"
    return files


@pytest.mark.parametrize("path", _policy_files(), ids=lambda p: p.name)
def test_policy_file_validates(path: Path) -> None:
    policy = parse_policy(path.read_text(), where=str(path))
    assert policy.listeners
    if match := re.fullmatch(r"policy-(\d+)-(\d+)\.yaml", path.name):
        # The name promises the split: v1 weight, then v2 weight.
        [listener] = policy.listeners
        [route] = listener.routes
        weights = {dict(b.subset)["version"]: b.weight for b in route.backends}
        assert weights == {"v1": int(match[1]), "v2": int(match[2])}


def _seeded(services: dict[str, dict[str, Any]]) -> dict[str, Path]:
    """KV key -> policy file, as kv-init writes them."""
    seeds = {}
    for spec in _argv(services["kv-init"]):
        key, _, file = spec.partition("=")
        seeds[key] = POLICY_DIR / file
    return seeds


def _seeded_policy(services: dict[str, dict[str, Any]]) -> Policy:
    # Merged in key order, as the Consul source merges the documents under its prefix.
    return merge_policies([parse_policy(path.read_text(), where=f"consul-kv:{key}")
                           for key, path in sorted(_seeded(services).items())])


def test_kv_seed_puts_policies_under_the_control_planes_prefix(services: dict[str, dict[str, Any]]) -> None:
    prefix = _option(_argv(services["control-plane"]), "--consul-kv-prefix").rstrip("/") + "/"
    seeds = _seeded(services)
    assert set(seeds) == {"xds/policies/web", "xds/policies/sidecars"}
    for key, path in seeds.items():
        assert key.startswith(prefix), f"{key} is outside the control plane's prefix {prefix}"
        assert path.is_file(), f"{key}: {path} does not exist"
    assert seeds["xds/policies/web"].name == "policy-90-10.yaml", "the demo starts at 90/10"
    assert services["kv-init"]["working_dir"] == services["consul"]["working_dir"] == "/policies"


def test_kv_seed_script_writes_absent_keys_only(services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    # A stand-in `consul` CLI that logs its arguments; `kv get` finds only the keys listed in $EXISTING.
    stub = tmp_path / "bin" / "consul"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\necho "$*" >> "$LOG"\n'
                    'if [ "$1 $2" = "kv get" ]; then\n'
                    '  case " $EXISTING " in *" $3 "*) exit 0 ;; esac; exit 1\n'
                    'fi\n')
    stub.chmod(0o755)
    argv = _argv(services["kv-init"], "entrypoint") + _argv(services["kv-init"])
    script = [str(DEMO_DIR / argv[1].removeprefix("/demo/")), *argv[2:]]
    for existing, expected_puts in [("", 2), ("xds/policies/web", 1)]:
        log = tmp_path / f"calls-{expected_puts}.log"
        env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "LOG": str(log),
               "EXISTING": existing}
        result = subprocess.run([argv[0], *script], cwd=POLICY_DIR, env=env, capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT_S, check=False)
        assert result.returncode == 0, result.stderr
        puts = [line for line in log.read_text().splitlines() if line.startswith("kv put")]
        assert len(puts) == expected_puts, puts
        assert ("kv put xds/policies/web @policy-90-10.yaml" in puts) == (existing == "")


# -- bootstraps -----------------------------------------------------------------------------------------


def _bootstrap_specs(services: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(file, node id, node cluster) for each bootstrap xds-init writes."""
    specs = []
    for spec in _argv(services["xds-init"]):
        file, node_id, cluster = spec.split(":", 2)
        specs.append((file, node_id, cluster))
    return specs


@pytest.fixture(scope="module")
def written_bootstraps(services: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
                       ) -> dict[str, Path]:
    """Runs the init script exactly as xds-init does, into a temporary directory; `xds` is this venv's."""
    init = services["xds-init"]
    out = tmp_path_factory.mktemp("bootstrap")
    entrypoint = _argv(init, "entrypoint")
    assert entrypoint[:2] == ["sh", "/demo/write-bootstraps.sh"], entrypoint
    assert (VENV_BIN / "xds").is_file(), f"the xds console script is missing from {VENV_BIN}"
    env = {**os.environ, **{k: str(v) for k, v in init["environment"].items()}, "BOOTSTRAP_DIR": str(out),
           "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    result = subprocess.run(["sh", str(DEMO_DIR / "write-bootstraps.sh"), *_argv(init)], env=env,
                            capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    files = {path.name: path for path in out.iterdir()}
    assert set(files) == {file for file, _, _ in _bootstrap_specs(services)}, (files, result.stdout)
    return files


def test_bootstraps_equal_xds_bootstrap_output(services: dict[str, dict[str, Any]],
                                               written_bootstraps: dict[str, Path]) -> None:
    env = services["xds-init"]["environment"]
    for file, node_id, cluster in _bootstrap_specs(services):
        expected = subprocess.run(
            [sys.executable, "-m", "xds", "bootstrap", "--node-id", node_id, "--cluster", cluster,
             "--xds-address", env["BOOTSTRAP_XDS_ADDRESS"],
             "--admin-address", env["BOOTSTRAP_ADMIN_ADDRESS"]],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=True).stdout
        assert written_bootstraps[file].read_text() == expected, file
        parsed = yaml.safe_load(expected)
        assert parsed["node"] == {"id": node_id, "cluster": cluster}
        # The control plane is reached by its compose DNS name, so Envoy must resolve it at run time.
        assert parsed["static_resources"]["clusters"][0]["type"] == "STRICT_DNS"


def test_bootstraps_pass_envoy_validate(written_bootstraps: dict[str, Path]) -> None:
    def validate(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(path),
                               "--disable-hot-restart", "--log-level", "warn"],
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)

    with ThreadPoolExecutor(max_workers=len(written_bootstraps)) as pool:
        results = dict(zip(written_bootstraps, pool.map(validate, written_bootstraps.values()), strict=True))
    for name, result in results.items():
        assert result.returncode == 0 and "OK" in result.stdout, f"{name}:\n{result.stdout}\n{result.stderr}"


def test_envoys_run_the_written_bootstraps(services: dict[str, dict[str, Any]]) -> None:
    files = {file for file, _, _ in _bootstrap_specs(services)}
    used = set()
    for name, service in services.items():
        argv = _argv(service)
        if argv[:1] != ["envoy"]:
            continue
        config_path = _option(argv, "-c")
        assert config_path.startswith("/bootstrap/"), (name, config_path)
        used.add(config_path.removeprefix("/bootstrap/"))
        assert any(str(v).startswith("bootstrap:/bootstrap") for v in service["volumes"]), name
    assert used == files
    assert any(str(v).startswith("bootstrap:/bootstrap") for v in services["xds-init"]["volumes"])
    # The address baked into every bootstrap is the control plane's service name and xDS port.
    host, _, port = services["xds-init"]["environment"]["BOOTSTRAP_XDS_ADDRESS"].rpartition(":")
    assert host == "control-plane"
    assert _option(_argv(services["control-plane"]), "--xds-address").endswith(f":{port}")


def test_every_node_group_gets_listeners(services: dict[str, dict[str, Any]]) -> None:
    groups = {cluster for _, _, cluster in _bootstrap_specs(services)}
    policy = _seeded_policy(services)
    for group in groups:
        assert any(listener.serves(group) for listener in policy.listeners), f"group {group} gets nothing"
    for listener in policy.listeners:
        assert listener.groups and set(listener.groups) <= groups, (listener.name, listener.groups)


# -- routing, from the registrations the registrar makes -----------------------------------------------


def _load_script(name: str) -> ModuleType:
    path = DEMO_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"compose_demo_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Importing must not leave a __pycache__ in compose/demo, which is mounted into the containers.
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


def _registrar_args(services: dict[str, dict[str, Any]]) -> tuple[ModuleType, argparse.Namespace]:
    """The registrar script as a module, and its arguments as the compose file gives them."""
    register = _load_script("register")
    argv = _argv(services["registrar"])
    assert argv[:2] == ["python", "/demo/register.py"], argv
    return register, register.build_parser().parse_args(argv[2:])


def _consul_catalog(services: dict[str, dict[str, Any]], ips: Mapping[str, str]) -> Catalog:
    """The catalog the Consul source would build once every registration's check passes."""
    register, args = _registrar_args(services)
    by_service: dict[str, list[dict[str, Any]]] = {}
    for instance, version in args.instances:
        for body in register.registrations(instance, version, ips[instance], service=args.service,
                                           service_port=args.service_port, app_service=args.app_service,
                                           app_port=args.app_port):
            # A /v1/health/service/<name> entry: the agent's own node, the registration, passing checks.
            by_service.setdefault(body["Name"], []).append({
                "Node": {"Node": "consul", "Address": "172.30.0.2", "Datacenter": "dc1"},
                "Service": {"ID": body["ID"], "Service": body["Name"], "Address": body["Address"],
                            "Port": body["Port"], "Meta": body["Meta"], "Tags": []},
                "Checks": [
                    {"CheckID": "serfHealth", "ServiceID": "", "Status": "passing"},
                    {"CheckID": f"service:{body['ID']}", "ServiceID": body["ID"], "Status": "passing"},
                ],
            })
    return assemble_catalog((name, parse_health(entries).endpoints) for name, entries in by_service.items())


def test_registrations_route_as_the_demo_says(services: dict[str, dict[str, Any]]) -> None:
    ips = {"web-v1": "172.30.0.11", "web-v2": "172.30.0.12"}
    _, args = _registrar_args(services)
    assert dict(args.instances) == {"web-v1": "v1", "web-v2": "v2"}
    assert args.consul_address == _option(_argv(services["control-plane"]), "--consul-address")
    for instance in ips:
        # Each app listens where the registrar says, and each instance has a sidecar in its namespace.
        assert _option(_argv(services[instance]), "--port") == str(args.app_port)
        assert services[f"{instance}-sidecar"]["network_mode"] == f"service:{instance}"
    catalog = _consul_catalog(services, ips)
    policy = _seeded_policy(services)

    edge = apply_policy(catalog, policy, group="edge")
    [listener] = edge.listeners
    assert listener.port == 10000
    assert ("127.0.0.1", listener.port) in _published(services["edge"])
    [route_config] = edge.route_configs
    [route] = route_config.virtual_hosts[0].routes
    clusters = {c.name: c for c in edge.clusters}
    split = {}
    for backend in route.backends:
        [endpoint] = clusters[backend.cluster].endpoints
        assert endpoint.health is Health.HEALTHY
        # The edge reaches each version through that instance's sidecar.
        assert endpoint.port == args.service_port
        split[dict(endpoint.metadata)["version"]] = (backend.weight, endpoint.host)
    assert split == {"v1": (90, ips["web-v1"]), "v2": (10, ips["web-v2"])}

    for instance, ip in ips.items():
        sidecar = apply_policy(catalog, policy, group=instance)
        [listener] = sidecar.listeners
        assert listener.port == args.service_port
        [cluster] = sidecar.clusters
        # ... and the sidecar hands the request to its own app, and only to it.
        assert [(e.host, e.port) for e in cluster.endpoints] == [(ip, args.app_port)]


class _FakeConsul(BaseHTTPRequestHandler):
    """Just enough of Consul's agent API for register.py: registrations are stored, checks pass."""

    registered: dict[str, dict[str, Any]] = {}

    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        assert self.path == "/v1/agent/service/register"
        self.registered[body["ID"]] = body
        self._reply(b"")

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        entries = [{"Service": {"ID": b["ID"], "Service": b["Name"]},
                    "Checks": [{"CheckID": f"service:{b['ID']}", "ServiceID": b["ID"], "Status": "passing"}]}
                   for b in self.registered.values() if b["Name"] == name]
        self._reply(json.dumps(entries).encode())

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_registrar_registers_and_waits_for_passing_checks() -> None:
    _FakeConsul.registered = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeConsul)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = subprocess.run(
            [sys.executable, str(DEMO_DIR / "register.py"), "--consul-address",
             f"http://127.0.0.1:{server.server_address[1]}", "--timeout", "10", "localhost=v1"],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every check passes" in result.stdout
    assert {b["Name"] for b in _FakeConsul.registered.values()} == {"web", "web-app"}
    for body in _FakeConsul.registered.values():
        assert body["Meta"] == {"version": "v1", "instance": "localhost"}
        assert body["Check"]["HTTP"] == f"http://{body['Address']}:{body['Port']}/health"


# -- the image ------------------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _copies() -> list[tuple[list[str], str]]:
    copies = []
    for instruction, rest in _dockerfile_instructions():
        if instruction in {"COPY", "ADD"}:
            words = [w for w in rest.split() if not w.startswith("--")]
            copies.append((words[:-1], words[-1]))
    assert copies, "the Dockerfile copies nothing"
    return copies


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (relative to the context) out: the last matching pattern wins,
    and a pattern matching a directory covers what is inside it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(p, glob) or fnmatch.fnmatchcase(p, glob.removeprefix("**/"))
               for p in prefixes):
            ignored = not negated
    return ignored


def test_dockerfile_copies_exist_and_are_in_the_context() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for sources, _ in _copies():
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"Dockerfile copies {source}, which does not exist"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                                    and "__pycache__" not in p.parts]
            assert files, source
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                assert not _ignored(relative, patterns), f".dockerignore leaves {relative} out of the context"
    assert _ignored(".venv/bin/envoy", patterns) and _ignored(".git/HEAD", patterns)
    assert _ignored("xds/__pycache__/cli.cpython-311.pyc", patterns)
    instructions = dict(_dockerfile_instructions())
    assert instructions["FROM"] == "python:3.11-slim"
    assert json.loads(instructions["ENTRYPOINT"]) == ["xds"]


def test_image_install_layout_renders_bootstraps(tmp_path: Path) -> None:
    """`pip install .` (not editable) from exactly the copied files renders the same bootstrap as this
    checkout: the templates travel as package data."""
    run = " ".join(rest for instruction, rest in _dockerfile_instructions() if instruction == "RUN")
    assert "pip install ." in run and "xds bootstrap" in run, run
    source, site = tmp_path / "src", tmp_path / "site"
    for sources, dest in _copies():
        for item in sources:
            origin = ROOT / item
            target = source / dest
            if origin.is_dir():
                shutil.copytree(origin, target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], capture_output=True, text=True,
                   timeout=COMMAND_TIMEOUT_S * 2, check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}

    def python(*code: str) -> str:
        return subprocess.run([sys.executable, *code], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, check=True).stdout

    templates = Path(python("-c", "import xds.bootstrap as b; print(b.envoy_configs_dir())").strip())
    assert templates.parent.parent == site, f"the installed package was not the one imported: {templates}"
    args = ["bootstrap", "--node-id", "n1", "--cluster", "edge", "--xds-address", "control-plane:18000"]
    installed = python("-m", "xds", *args)
    # The server's own modules import from the installed copy too (dependencies come from this venv).
    python("-c", "import xds.app, xds.cli, xds.sources.consul, xds.management.v1.management_pb2_grpc")
    assert "--consul-kv-prefix" in python("-m", "xds", "serve", "--help")
    checkout = subprocess.run([sys.executable, "-m", "xds", *args], capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, check=True).stdout
    assert installed == checkout


# -- the demo scripts, run locally ----------------------------------------------------------------------


@contextlib.contextmanager
def _webapp(*args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen([sys.executable, str(DEMO_DIR / "webapp.py"), "--host", "127.0.0.1",
                             "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=COMMAND_TIMEOUT_S / 2), "webapp printed nothing"
        line = proc.stdout.readline()
        match = re.match(r"listening on http://127\.0\.0\.1:(\d+) ", line)
        assert match, f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
        yield proc, int(match[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=COMMAND_TIMEOUT_S)


def _get(port: int, path: str) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        conn.close()


def test_demo_service_answers_and_reports_health() -> None:
    with _webapp("--service", "web", "--version", "v9", "--instance", "web-test") as (proc, port):
        status, headers, body = _get(port, "/anything")
        assert status == 200
        assert body == "web v9 (instance web-test)\n"
        identity = (headers["x-service"], headers["x-version"], headers["x-instance"])
        assert identity == ("web", "v9", "web-test")
        assert _get(port, "/health")[::2] == (200, "ok\n")
        # `docker compose stop` sends SIGTERM to PID 1: the service must exit promptly and cleanly.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


def test_traffic_generator_prints_the_split(tmp_path: Path) -> None:
    heartbeat = tmp_path / "alive"
    with _webapp("--version", "v7") as (_, port):
        result = subprocess.run(
            [sys.executable, str(DEMO_DIR / "loadgen.py"), "--url", f"http://127.0.0.1:{port}/",
             "--rate", "50", "--window", "0.5", "--windows", "2", "--heartbeat", str(heartbeat)],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines  # the banner, then one line per window
    for line in lines[1:]:
        assert "v7 ████████████████████ 100.0%" in line and line.endswith("errors 0"), line
    assert heartbeat.exists()


def test_traffic_generator_counts_errors(tmp_path: Path) -> None:
    with _webapp() as (proc, port):
        proc.kill()
        proc.wait(timeout=COMMAND_TIMEOUT_S)
    # The port is free now: every request is refused, counted, and the generator carries on.
    result = subprocess.run(
        [sys.executable, str(DEMO_DIR / "loadgen.py"), "--url", f"http://127.0.0.1:{port}/", "--rate", "20",
         "--window", "0.3", "--windows", "1", "--heartbeat", str(tmp_path / "alive")],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    assert re.search(r"errors [1-9]\d* \(ConnectionRefusedError x\d+\)$", result.stdout.splitlines()[-1])


def test_readme_walks_through_the_canary() -> None:
    readme = README.read_text()
    for command in ["docker compose up", "docker compose logs -f loadgen",
                    "docker compose exec consul consul kv put xds/policies/web @policy-50-50.yaml",
                    "docker compose exec control-plane xds status", "docker compose down"]:
        assert command in readme, f"README.md does not show `{command}`"
    for file in re.findall(r"@(policy-[\w-]+\.yaml)", readme):
        assert (POLICY_DIR / file).is_file(), f"README.md uses {file}, which does not exist"
