"""A real kube-apiserver backed by a real etcd for tests, on loopback, and a small synchronous REST client.

Both binaries come from `harness.testbin.ensure_binary` ("kube-apiserver", "etcd"); see
tools/testbin/README.md for the pinned versions and docs/testing.md for where the flags below
come from. There is no kube-controller-manager, scheduler or kubelet: the API server stores and serves
objects, and tests write EndpointSlices themselves (with a `endpointslice.kubernetes.io/managed-by` label of
their own, as any non-controller owner would). Consequences a test must know about:

- Endpoint addresses are validated: loopback (127.0.0.0/8, ::1), link-local, multicast and unspecified
  addresses are REJECTED in EndpointSlices. Use addresses such as 10.200.0.x and never send traffic to
  them, unless they live in a network namespace the test itself created.
- Namespaces never finish deleting and nothing garbage-collects owner references: each test gets a fresh
  etcd data directory instead of cleaning up.
- There are no ServiceAccounts (the admission plugin is disabled); clients authenticate with static bearer
  tokens from a tokens.csv written at construction.

Authentication: a random admin token for the user "xds-admin" in group `system:masters`, plus one random
token per LIMITED user (default "xds-limited"), who has no permissions until a test binds a Role or
ClusterRole to it. Anonymous requests stay enabled only because RBAC grants anonymous users nothing beyond
/readyz, /livez, /healthz and /version; any resource answers 401/403 without a token.

History and watch expiry (docs/protocol.md case F7): the API server's own periodic etcd compaction is
disabled, so history is kept until a test calls `compact()`, which does what the API server's compactor does
(record the revision under `compact_rev_key`, then compact etcd). Whether a watch from an old resourceVersion
then gets 410 Gone depends on where the API server serves watches from (measured against v1.36.4):
- watch cache on (the default, as in production): watches are served from the API server's in-memory
  window of recent events, which compaction does not shorten; a watch from an old version keeps working
  until the window has moved past it. `restart()` empties the window: from then on any version older than
  the restart is answered with an ERROR event carrying Status 410 ("too old resource version").
- `watch_cache=False` (`--watch-cache=false`): watches go straight to etcd, so right after `compact()` a
  watch from a compacted version gets the 410 ERROR event ("The resourceVersion for the provided watch
  is too old").
`KubeClient.watch_expired()` probes either form (and a plain HTTP 410).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import queue
import secrets
import shutil
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from harness.ports import LOOPBACK, free_ports, retry_port_race
from harness.processes import ManagedProcess, ProcessOwner, StartStop, wait_until

# The time kube-apiserver may take to pass /readyz (a few seconds on 2 idle cores; CI shares them).
READY_TIMEOUT_S = 60.0
_ETCD_READY_TIMEOUT_S = 30.0
_REQUEST_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 15.0
_PORT_ATTEMPTS = 3
# The admin identity the harness uses; `system:masters` bypasses RBAC entirely.
ADMIN_USER = "xds-admin"
ADMIN_GROUP = "system:masters"
DEFAULT_LIMITED_USER = "xds-limited"
# ClusterIPs are allocated from here (inside the API server, into etcd); nothing ever routes to them.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# The key kube-apiserver's own compactor writes the last compacted revision to, and watches: this is how
# its watch cache learns about a compaction (k8s.io/apiserver/pkg/storage/etcd3/compact.go).
COMPACT_REV_KEY = "compact_rev_key"
# What an expired resourceVersion is answered with: a Status with this code (reason Expired or Gone).
HTTP_GONE = 410


class KubeApiError(RuntimeError):
    """The API server answered with an unexpected status; `reason` is the Status reason if it sent one."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        text = body.decode("utf-8", errors="replace")
        self.status = status
        self.body = text
        self.reason = ""
        self.message = text[:300]
        with contextlib.suppress(ValueError, AttributeError):
            decoded = json.loads(text)
            self.reason = str(decoded.get("reason", ""))
            self.message = str(decoded.get("message", self.message))
        super().__init__(f"{method} {path} -> {status} {self.reason}: {self.message}")


class EtcdApiError(RuntimeError):
    """etcd's HTTP/JSON gateway answered with an error."""


# -- etcd -------------------------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdHttpApi:
    """The few etcd v3 calls tests need, through etcd's HTTP/JSON gateway (no etcdctl, no gRPC stubs).

    `client_url` and `_etcd_ssl_context()` come from the backend (plain HTTP for the local process; the
    Docker backend's embedded etcd needs TLS with a client certificate).
    """

    request_timeout_s: float = _REQUEST_TIMEOUT_S

    @property
    def client_url(self) -> str:
        raise NotImplementedError

    def _etcd_ssl_context(self) -> ssl.SSLContext | None:
        return None

    def etcd_call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST one JSON request to the gateway (`/v3/kv/range`, ...); return the decoded answer."""
        conn = self._etcd_connection(self.request_timeout_s)
        try:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        try:
            decoded = json.loads(data) if data.strip() else {}
        except ValueError:
            decoded = {}
        if response.status != 200 or not isinstance(decoded, dict) or "error" in decoded:
            raise EtcdApiError(f"etcd {path} -> {response.status}: {data[:300].decode(errors='replace')}")
        return decoded

    def healthy(self) -> bool:
        """etcd's own /health: true once it has a leader and serves requests."""
        conn = self._etcd_connection(2.0)
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        return response.status == 200 and json.loads(data).get("health") == "true"

    def _etcd_connection(self, timeout_s: float) -> http.client.HTTPConnection:
        parsed = urllib.parse.urlsplit(self.client_url)
        host = parsed.hostname or LOOPBACK
        if parsed.scheme == "https":
            return http.client.HTTPSConnection(
                host, parsed.port, timeout=timeout_s, context=self._etcd_ssl_context()
            )
        return http.client.HTTPConnection(host, parsed.port, timeout=timeout_s)

    def current_revision(self) -> int:
        """The store's current revision (a range over any key reports it in its header)."""
        answer = self.etcd_call("/v3/kv/range", {"key": _b64(COMPACT_REV_KEY), "keys_only": True})
        return int(answer["header"]["revision"])

    def get_value(self, key: str) -> tuple[str, int] | None:
        """(value, version) of one key, or None if absent."""
        answer = self.etcd_call("/v3/kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs") or []
        if not kvs:
            return None
        return base64.b64decode(kvs[0].get("value", "")).decode(), int(kvs[0].get("version", 0))

    def put_value(self, key: str, value: str) -> int:
        """Store `key`; return the revision the write created."""
        answer = self.etcd_call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(answer["header"]["revision"])

    def compact(self, revision: int | None = None) -> int:
        """Compact etcd's history up to `revision` (default: the current revision); return that revision.

        Afterwards etcd refuses reads and watches at older revisions ("required revision has been
        compacted"). Physical: returns only once the old revisions are really gone. Compacting to a
        revision that is already compacted is not an error here.
        """
        target = self.current_revision() if revision is None else revision
        try:
            self.etcd_call("/v3/kv/compaction", {"revision": str(target), "physical": True})
        except EtcdApiError as e:
            if "has been compacted" not in str(e):
                raise
        return target


@dataclass(frozen=True)
class EtcdPorts:
    client: int
    peer: int

    @classmethod
    def pick(cls) -> EtcdPorts:
        client, peer = free_ports(2)
        return cls(client=client, peer=peer)


class EtcdServer(ProcessOwner, EtcdHttpApi, StartStop):
    """A single-member etcd as a child process, data in `<workdir>/data`, log in `<workdir>/<name>.log`.

    The first `start()` wipes the data directory (a fresh store per test); `restart()` and later starts
    keep it and the ports, so the API server reconnects to the same history.
    """

    def __init__(self, workdir: Path, *, binary: Path, name: str = "etcd", log_level: str = "warn") -> None:
        self.workdir = workdir
        self.binary = binary
        self.name = name
        self.log_level = log_level
        self._ports: EtcdPorts | None = None
        self._process: ManagedProcess | None = None

    @property
    def ports(self) -> EtcdPorts:
        if self._ports is None:
            raise RuntimeError(f"{self.name} has no ports before its first start()")
        return self._ports

    @property
    def client_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.client}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def start(self, *, timeout_s: float = _ETCD_READY_TIMEOUT_S) -> None:
        if self._ports is not None:
            self._start_on(self._ports, timeout_s=timeout_s)
            return
        # A fresh store: whatever a previous run left in this directory must not leak into this test.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        retry_port_race(
            lambda: self._start_on(EtcdPorts.pick(), timeout_s=timeout_s), attempts=_PORT_ATTEMPTS,
            # A failed first start may have initialised the member with the lost ports; start clean.
            before_retry=lambda: shutil.rmtree(self.data_dir, ignore_errors=True),
        )

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> int | None:
        return None if self._process is None else self._process.stop(timeout_s)

    def kill(self) -> None:
        """SIGKILL; reaped before returning so the ports are free again. The data directory stays."""
        super().kill()

    def restart(self, *, timeout_s: float = _ETCD_READY_TIMEOUT_S) -> None:
        """Stop and start on the same ports with the same data."""
        self.stop()
        self._start_on(self.ports, timeout_s=timeout_s)

    def wait_ready(self, timeout_s: float = _ETCD_READY_TIMEOUT_S) -> None:
        def up() -> bool:
            self._require_process().check_alive()
            return self.healthy()

        wait_until(
            up, timeout_s=timeout_s, interval_s=0.1, ignore=(OSError, ValueError),
            message=lambda: f"etcd {self.name} never became healthy; last log lines:\n{self.tail()}",
        )  # fmt: skip

    def _args(self, ports: EtcdPorts) -> list[str]:
        client = f"http://{LOOPBACK}:{ports.client}"
        peer = f"http://{LOOPBACK}:{ports.peer}"
        return [
            str(self.binary),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}", "--initial-cluster-state=new",
            # Tests never survive a power cut; skipping fsync makes every write (and so every API call)
            # several times faster on a shared disk.
            "--unsafe-no-fsync=true",
            # No metrics listener: one port fewer to race for.
            f"--log-level={self.log_level}",
        ]  # fmt: skip

    def _start_on(self, ports: EtcdPorts, *, timeout_s: float) -> None:
        self._refuse_if_running()
        self._ports = ports
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._spawn(self._args(ports), wait_ready=lambda: self.wait_ready(timeout_s),
                    port_error=f"etcd {self.name} could not bind a port")


# -- credentials ------------------------------------------------------------------------------------------

# The order of the NIST P-256 group: a private key is a uniformly random scalar in [1, n-1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
# DER of the named-curve OID prime256v1 (1.2.840.10045.3.1.7), wrapped in the [0] tag of ECPrivateKey.
_P256_PARAMETERS_DER = bytes.fromhex("a00a06082a8648ce3d030107")


def service_account_key_pem() -> bytes:
    """A fresh ECDSA P-256 private key, PEM "EC PRIVATE KEY" (SEC 1), for the service-account flags.

    kube-apiserver requires a signing key even though the tests never use ServiceAccount tokens. Written
    here in a few lines instead of shelling out to openssl or adding a crypto dependency: SEC 1 makes the
    public key optional, and Go (x509.ParseECPrivateKey) derives it from the scalar.
    """
    scalar = secrets.randbelow(_P256_ORDER - 1) + 1
    private = b"\x04\x20" + scalar.to_bytes(32, "big")  # OCTET STRING, 32 bytes
    body = b"\x02\x01\x01" + private + _P256_PARAMETERS_DER  # version 1, privateKey, parameters
    der = b"\x30" + bytes([len(body)]) + body
    lines = [base64.b64encode(der[i : i + 48]).decode() for i in range(0, len(der), 48)]
    return (
        "-----BEGIN EC PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END EC PRIVATE KEY-----\n"
    ).encode()


@dataclass(frozen=True)
class TokenUser:
    """One line of the static token file: a bearer token and who it authenticates as."""

    name: str
    token: str
    groups: tuple[str, ...] = ()

    def csv_line(self) -> str:
        # token,user,uid,"group1,group2" (the groups column is quoted as one CSV field).
        groups = f',"{",".join(self.groups)}"' if self.groups else ""
        return f"{self.token},{self.name},{self.name}{groups}\n"


def _new_token(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(16)}"


# -- the REST client --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiResource:
    """What discovery says about one kind: its collection name and whether it is namespaced."""

    plural: str
    namespaced: bool


class KubeClient:
    """A small synchronous Kubernetes REST client over http.client, trusting only the test CA.

    Paths are built from (apiVersion, kind, name, namespace) with the plural names the server's discovery
    documents report, so custom resources work as soon as their CRD is established.
    """

    def __init__(
        self, url: str, *, token: str | None, ca_file: Path | None, timeout_s: float = _REQUEST_TIMEOUT_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:  # fmt: skip
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "https" or parsed.hostname is None or parsed.port is None:
            raise ValueError(f"expected https://host:port, got {url!r}")
        self.url = url
        self.host = parsed.hostname
        self.port = parsed.port
        self.token = token
        self.timeout_s = timeout_s
        self._ssl = ssl_context or ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._discovery: dict[str, dict[str, ApiResource]] = {}

    # -- raw -------------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout_s: float | None = None,
    ) -> tuple[int, bytes]:
        """One request; returns (status, body). A dict body goes as JSON; connection errors raise OSError."""
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        payload = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        conn = self._connection(timeout_s or self.timeout_s)
        try:
            conn.request(
                method, target, body=payload, headers=self._headers(content_type if payload else None)
            )
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def call(
        self, method: str, path: str, body: object = None, *, query: Mapping[str, str] | None = None,
        content_type: str = "application/json", ok: Sequence[int] = (200, 201, 202),
    ) -> dict[str, Any]:  # fmt: skip
        """A request that must succeed; returns the decoded JSON object. Raises `KubeApiError` otherwise."""
        status, data = self.request(method, path, body, query=query, content_type=content_type)
        if status not in ok:
            raise KubeApiError(method, path, status, data)
        decoded = json.loads(data) if data.strip() else {}
        if not isinstance(decoded, dict):
            raise KubeApiError(method, path, status, data)
        return decoded

    def readyz(self) -> bool:
        status, data = self.request("GET", "/readyz", timeout_s=2.0)
        return status == 200 and data.strip() == b"ok"

    # -- paths -----------------------------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> ApiResource:
        """Plural and scope of `kind` in `api_version`, from the server's discovery (cached)."""
        known = self._discovery.get(api_version)
        if known is None or kind not in known:
            # Unknown so far: (re)read discovery once, so a CRD created after the first lookup is found.
            known = self._discover(api_version)
        try:
            return known[kind]
        except KeyError:
            raise KeyError(f"the API server serves no kind {kind!r} in {api_version!r}") from None

    def path(
        self, api_version: str, kind: str, name: str | None = None, *, namespace: str | None = None
    ) -> str:
        """The REST path of a collection (no name) or an object."""
        info = self.resource(api_version, kind)
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if info.namespaced:
            if not namespace:
                if name is not None:
                    raise ValueError(f"{kind} {name!r} is namespaced: give its namespace")
                return f"{prefix}/{info.plural}"  # across all namespaces
            prefix = f"{prefix}/namespaces/{_segment(namespace)}"
        collection = f"{prefix}/{info.plural}"
        return collection if name is None else f"{collection}/{_segment(name)}"

    def object_path(self, obj: Mapping[str, Any], *, with_name: bool = True) -> str:
        metadata = obj.get("metadata") or {}
        return self.path(
            obj["apiVersion"], obj["kind"], metadata["name"] if with_name else None,
            namespace=metadata.get("namespace"),
        )  # fmt: skip

    # -- typed helpers ---------------------------------------------------------------------------------------

    def get(
        self, api_version: str, kind: str, name: str, *, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        path = self.path(api_version, kind, name, namespace=namespace)
        status, data = self.request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise KubeApiError("GET", path, status, data)
        decoded: dict[str, Any] = json.loads(data)
        return decoded

    def list(
        self, api_version: str, kind: str, *, namespace: str | None = None, label_selector: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The List object (`items`, and `metadata.resourceVersion` to watch from)."""
        query = {"labelSelector": label_selector} if label_selector else None
        return self.call("GET", self.path(api_version, kind, namespace=namespace), query=query)

    def create(self, obj: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        query = {"dryRun": "All"} if dry_run else None
        return self.call("POST", self.object_path(obj, with_name=False), dict(obj), query=query)

    def replace(self, obj: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """PUT; without `metadata.resourceVersion` this overwrites whatever is stored (last write wins)."""
        query = {"dryRun": "All"} if dry_run else None
        return self.call("PUT", self.object_path(obj), dict(obj), query=query)

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create `obj`, or replace it if it exists; return what the server stored."""
        return self._create_or_replace(obj, dry_run=False)

    def server_side_dry_run(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and admit `obj` as create-or-replace with `?dryRun=All`: nothing is stored.

        Raises `KubeApiError` (422 Invalid, 403 Forbidden, ...) exactly as the real write would.
        """
        return self._create_or_replace(obj, dry_run=True)

    def delete(self, api_version: str, kind: str, name: str, *, namespace: str | None = None) -> bool:
        """Delete one object; False if it did not exist."""
        path = self.path(api_version, kind, name, namespace=namespace)
        status, data = self.request("DELETE", path)
        if status == 404:
            return False
        if status not in (200, 202):
            raise KubeApiError("DELETE", path, status, data)
        return True

    def delete_object(self, obj: Mapping[str, Any]) -> bool:
        metadata = obj.get("metadata") or {}
        return self.delete(
            obj["apiVersion"], obj["kind"], metadata["name"], namespace=metadata.get("namespace")
        )

    # -- watches ---------------------------------------------------------------------------------------------

    def watch(
        self,
        api_version: str,
        kind: str,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        bookmarks: bool = False,
        server_timeout_s: int = 60,
        label_selector: str | None = None,
    ) -> KubeWatch:
        """Open a watch stream (`?watch=1`); raise `KubeApiError` if the server refuses it outright."""
        query = {"watch": "1", "timeoutSeconds": str(server_timeout_s)}
        if resource_version is not None:
            query["resourceVersion"] = resource_version
        if bookmarks:
            query["allowWatchBookmarks"] = "true"
        if label_selector:
            query["labelSelector"] = label_selector
        path = self.path(api_version, kind, namespace=namespace)
        # The socket timeout bounds every read of the stream; the server ends it after server_timeout_s.
        conn = self._connection(server_timeout_s + _REQUEST_TIMEOUT_S)
        try:
            conn.request("GET", path + "?" + urllib.parse.urlencode(query), headers=self._headers(None))
            response = conn.getresponse()
            if response.status != 200:
                raise KubeApiError("GET", path, response.status, response.read())
        except BaseException:
            conn.close()
            raise
        return KubeWatch(conn, response)

    def watch_expired(
        self, api_version: str, kind: str, resource_version: str, *, namespace: str | None = None,
        timeout_s: float = 2.0,
    ) -> bool:  # fmt: skip
        """True when a watch from `resource_version` is answered with 410 Gone, as after a compaction.

        The API server signals it as a first ERROR event whose Status has code 410 (reason Expired), both
        from its watch cache and from etcd, or as the HTTP status 410. False when the watch starts normally
        (it is closed again at once). The answer is decided when the watch starts, so an expired version
        is reported within milliseconds; a live watch with nothing to send costs the whole `timeout_s`.
        """
        try:
            with self.watch(
                api_version, kind, namespace=namespace, resource_version=resource_version, bookmarks=True,
                server_timeout_s=max(1, round(timeout_s)),
            ) as stream:  # fmt: skip
                event = stream.next_event(timeout_s)
        except KubeApiError as e:
            if e.status == HTTP_GONE:
                return True
            raise
        except TimeoutError:
            return False  # a live watch with nothing to report
        if event is None:
            return False
        return event.get("type") == "ERROR" and event.get("object", {}).get("code") == HTTP_GONE

    # -- internals -------------------------------------------------------------------------------------------

    def _connection(self, timeout_s: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout_s, context=self._ssl)

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _discover(self, api_version: str) -> dict[str, ApiResource]:
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        document = self.call("GET", path)
        resources = {
            entry["kind"]: ApiResource(plural=entry["name"], namespaced=bool(entry["namespaced"]))
            for entry in document.get("resources", [])
            if "/" not in entry["name"]  # subresources (pods/status, ...) share their parent's kind
        }
        self._discovery[api_version] = resources
        return resources

    def _create_or_replace(self, obj: Mapping[str, Any], *, dry_run: bool) -> dict[str, Any]:
        try:
            return self.create(obj, dry_run=dry_run)
        except KubeApiError as e:
            if e.status != 409 or e.reason != "AlreadyExists":
                raise
        # Built-in kinds accept an unconditional replace (no resourceVersion), custom resources do not
        # ("metadata.resourceVersion must be specified for an update"): replace the version stored now.
        # The control plane writes the status of the same object (TrafficPolicy conditions), which can land
        # between the read and the replace: a 409 Conflict then means "read again", as kubectl does.
        metadata = obj.get("metadata") or {}
        for attempt in range(_CONFLICT_RETRIES):
            current = self.get(obj["apiVersion"], obj["kind"], metadata["name"],
                               namespace=metadata.get("namespace"))
            replacement = _without_resource_version(obj)
            if current is not None:
                replacement["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                return self.replace(replacement, dry_run=dry_run)
            except KubeApiError as e:
                if e.status != 409 or attempt == _CONFLICT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")


# Replaces of one object that lost a race with another writer, before apply() gives up.
_CONFLICT_RETRIES = 5


def unverified_ssl_context() -> ssl.SSLContext:
    """TLS without verification, only for readiness probes before the test CA exists (see callers)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _without_resource_version(obj: Mapping[str, Any]) -> dict[str, Any]:
    # A replace without resourceVersion is unconditional: "make it so", which is what apply() promises.
    copy = dict(obj)
    metadata = dict(copy.get("metadata") or {})
    metadata.pop("resourceVersion", None)
    copy["metadata"] = metadata
    return copy


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


_END = object()


class KubeWatch:
    """One open watch stream; events are read by a background thread so every wait here is bounded.

    Use as a context manager, or call `close()`. `next_event(timeout_s)` returns the next decoded event
    (`{"type": "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR", "object": {...}}`), None once the
    server has ended the stream, or raises TimeoutError.
    """

    def __init__(self, conn: http.client.HTTPSConnection, response: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._response = response
        self._events: queue.Queue[object] = queue.Queue()
        self._ended = False
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="kube-watch-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            # One JSON object per line (the API server flushes each event with a newline).
            for line in self._response:
                if line.strip():
                    self._events.put(json.loads(line))
        except Exception as e:
            # Anything, not only OSError: http.client raises odd errors (AttributeError, ValueError) when the
            # socket is shut down under a chunked read, and a reader thread must never die with a traceback.
            self._events.put(e)
        finally:
            self._events.put(_END)

    def next_event(self, timeout_s: float) -> dict[str, Any] | None:
        if self._ended:
            return None
        try:
            item = self._events.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no watch event within {timeout_s:g} s") from None
        if item is _END:
            self._ended = True
            return None
        if isinstance(item, BaseException):
            self._ended = True
            if self._closed:
                return None
            raise ConnectionError(f"watch stream failed: {item}") from item
        assert isinstance(item, dict)
        return item

    def events(self, timeout_s: float) -> Iterator[dict[str, Any]]:
        """Events until the stream ends; each wait is bounded by `timeout_s` (TimeoutError)."""
        while (event := self.next_event(timeout_s)) is not None:
            yield event

    def close(self) -> None:
        self._closed = True
        # Shutting the socket down wakes the reader thread out of its blocking read; the connection object
        # is closed only after the reader has finished with it, so the two threads never race inside it.
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(timeout=5.0)
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- the cluster ------------------------------------------------------------------------------------------


class KubeBackend(StartStop):
    """What a test gets as "the Kubernetes API", whichever backend runs it (local binaries or K3s).

    `url` is https://127.0.0.1:<port>; `ca_file` verifies its serving certificate; `token` is an admin
    (system:masters) bearer token; `limited_token` belongs to `limited_user`, who may do nothing until a
    test grants it RBAC. `restart()` restarts the API server only: etcd keeps every object, so
    resourceVersions continue. `compact()` compacts etcd's history the way the API server itself would.
    """

    name: str
    limited_user: str
    # False: `--watch-cache=false`, every watch and list is served by etcd (see the module docstring).
    watch_cache: bool = True

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def ca_file(self) -> Path:
        raise NotImplementedError

    @property
    def token(self) -> str:
        raise NotImplementedError

    def token_for(self, user: str) -> str:
        raise NotImplementedError

    @property
    def limited_token(self) -> str:
        return self.token_for(self.limited_user)

    def client(self, token: str | None = None, *, anonymous: bool = False) -> KubeClient:
        """A REST client as admin (default), with `token`, or with no credentials at all."""
        return KubeClient(self.url, token=None if anonymous else (token or self.token), ca_file=self.ca_file)

    def write_kubeconfig(self, path: Path, *, token: str | None = None, context: str = "xds-test") -> Path:
        """A kubeconfig for `token` (admin by default) with the CA embedded; JSON, which is valid YAML."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(self.ca_file.read_bytes()).decode(),
            }}],
            "users": [{"name": context, "user": {"token": token or self.token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            "current-context": context,
        }  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)  # it holds a credential
        return path

    def restart(self, *, timeout_s: float = READY_TIMEOUT_S) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL the API server (etcd keeps running); `restart()` brings it back."""
        raise NotImplementedError

    def compact(self, revision: int | None = None) -> int:
        """Compact etcd's history up to `revision` (default: the current one) as the API server would;
        return the revision. Old versions then expire at once without the watch cache, and after
        `restart()` with it (module docstring)."""
        raise NotImplementedError

    def current_revision(self) -> int:
        """etcd's current revision (the newest resourceVersion anything can have)."""
        raise NotImplementedError

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        raise NotImplementedError

    def tail(self, n: int = 40) -> str:
        """The last `n` lines of the API server's log."""
        raise NotImplementedError

    def logs(self, n: int = 40) -> dict[str, str]:
        """Log tails by process name (the API server, and etcd where it is separate), for failure reports."""
        return {self.name: self.tail(n)}


def compact_like_apiserver(etcd: EtcdHttpApi, revision: int | None) -> int:
    """Compact etcd to `revision` (default: now) the way kube-apiserver's compactor does.

    It first records the revision under `compact_rev_key`, which every API server watches to learn the
    compacted revision (its watch cache then drops list snapshots older than that; it keeps its window
    of watch events), then compacts. The API server's own compaction loop is disabled in these tests, so
    nothing races this write.
    """
    target = etcd.current_revision() if revision is None else revision
    etcd.put_value(COMPACT_REV_KEY, str(target))
    return etcd.compact(target)


class KubeApiServer(ProcessOwner, KubeBackend):
    """kube-apiserver as a child process in front of `etcd`, with its files in `workdir`.

    `workdir` receives tokens.csv, the service-account key, `pki/` (the self-signed serving certificate and
    its CA, generated by the API server on first start and reused on restart) and the log. The secure port
    is chosen at the first `start()` and kept by `restart()`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        binary: Path,
        etcd: EtcdServer,
        name: str = "kube-apiserver",
        limited_users: Sequence[str] = (DEFAULT_LIMITED_USER,),
        watch_cache: bool = True,
        verbosity: int = 1,
        extra_args: Sequence[str] = (),
    ) -> None:
        if not limited_users:
            raise ValueError("at least one limited user is needed (limited_token)")
        self.workdir = workdir
        self.binary = binary
        self.etcd = etcd
        self.name = name
        self.verbosity = verbosity
        self.watch_cache = watch_cache
        self.extra_args = tuple(extra_args)
        self.limited_user = limited_users[0]
        self._users: dict[str, TokenUser] = {
            ADMIN_USER: TokenUser(ADMIN_USER, _new_token("admin"), (ADMIN_GROUP,))
        }
        for user in limited_users:
            self._users[user] = TokenUser(user, _new_token("user"))
        self._port: int | None = None
        self._process: ManagedProcess | None = None

    # -- identity and addresses ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.name} has no port before its first start()")
        return self._port

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def cert_dir(self) -> Path:
        return self.workdir / "pki"

    @property
    def ca_file(self) -> Path:
        # The API server writes its serving certificate followed by the CA that signed it into one file.
        return self.cert_dir / "apiserver.crt"

    @property
    def tokens_file(self) -> Path:
        return self.workdir / "tokens.csv"

    @property
    def token(self) -> str:
        return self._users[ADMIN_USER].token

    def token_for(self, user: str) -> str:
        try:
            return self._users[user].token
        except KeyError:
            raise KeyError(f"no token for {user!r}; known users: {', '.join(self._users)}") from None

    def add_user(self, user: str, groups: Sequence[str] = ()) -> str:
        """Mint a token for another user and return it. The token file is read only at start-up, so the
        token works after the next `start()`/`restart()`."""
        if user in self._users:
            return self._users[user].token
        self._users[user] = TokenUser(user, _new_token("user"), tuple(groups))
        if self.tokens_file.exists():
            self._write_tokens()
        return self._users[user].token

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self, *, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start (etcd must be running) and wait for /readyz; a lost port race retries on a fresh port."""
        if self._port is not None:
            self._start_on(self._port, timeout_s=timeout_s)
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_tokens()
        key = self.workdir / "sa.key"
        key.write_bytes(service_account_key_pem())
        key.chmod(0o600)
        # On a retry the generated certificate names the lost port's address only by IP, so it stays valid.
        retry_port_race(
            lambda: self._start_on(free_ports(1)[0], timeout_s=timeout_s), attempts=_PORT_ATTEMPTS
        )

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> int | None:
        return self._stop_apiserver(timeout_s)

    def restart(self, *, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Stop and start on the same port with the same certificate and tokens; etcd keeps the data."""
        # Not self.stop(): a subclass that owns etcd stops both there, and etcd must keep running.
        self._stop_apiserver(_STOP_TIMEOUT_S)
        self._start_on(self.port, timeout_s=timeout_s)

    def _stop_apiserver(self, timeout_s: float) -> int | None:
        return None if self._process is None else self._process.stop(timeout_s)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        # With the admin token, so a broken token file shows up here rather than in the first test request.
        probe = KubeClient(
            self.url, token=self.token, ca_file=None, ssl_context=self._bootstrap_ssl_context()
        )

        def ready() -> bool:
            self._require_process().check_alive()
            return probe.readyz()

        wait_until(
            ready, timeout_s=timeout_s, interval_s=0.2, ignore=(OSError, http.client.HTTPException),
            message=lambda: f"{self.name} never passed /readyz; last log lines:\n{self.tail()}",
        )  # fmt: skip

    # -- etcd ------------------------------------------------------------------------------------------------

    def compact(self, revision: int | None = None) -> int:
        return compact_like_apiserver(self.etcd, revision)

    def current_revision(self) -> int:
        return self.etcd.current_revision()

    # -- internals -------------------------------------------------------------------------------------------

    def _write_tokens(self) -> None:
        self.tokens_file.write_text("".join(user.csv_line() for user in self._users.values()))
        self.tokens_file.chmod(0o600)

    def _bootstrap_ssl_context(self) -> ssl.SSLContext:
        # Before the first start the CA file does not exist yet: the API server generates it while starting.
        # The probe then cannot verify the server; it only ever talks to the port this object just started
        # a child on, over loopback, so the token it sends stays on this machine.
        if self.ca_file.exists():
            return ssl.create_default_context(cafile=str(self.ca_file))
        return unverified_ssl_context()

    def _args(self, port: int) -> list[str]:
        key = self.workdir / "sa.key"
        return [
            str(self.binary),
            f"--etcd-servers={self.etcd.client_url}",
            f"--bind-address={LOOPBACK}", f"--secure-port={port}",
            # Without it the API server would advertise the host's default-interface address.
            f"--advertise-address={LOOPBACK}",
            # Self-signed serving certificate (with 127.0.0.1 as an IP SAN) generated here on first start.
            f"--cert-dir={self.cert_dir}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # Required flags, although no test uses ServiceAccount tokens.
            f"--service-account-issuer=https://{LOOPBACK}:{port}",
            f"--service-account-key-file={key}", f"--service-account-signing-key-file={key}",
            f"--token-auth-file={self.tokens_file}",
            # RBAC, not AlwaysAllow: least-privilege manifests must be testable, and AlwaysAllow would also
            # switch anonymous authentication off.
            "--authorization-mode=RBAC",
            # No kube-controller-manager creates default ServiceAccounts, so this plugin would reject pods.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            # Nothing may write the default/kubernetes Endpoints: 127.0.0.1 is not a valid endpoint address.
            "--endpoint-reconciler-type=none",
            # History is compacted only when a test asks (compact()), never by a 5-minute timer mid-test.
            "--etcd-compaction-interval=0",
            "--profiling=false",
            *([] if self.watch_cache else ["--watch-cache=false"]),
            f"--v={self.verbosity}",
            *self.extra_args,
        ]  # fmt: skip

    def _start_on(self, port: int, *, timeout_s: float) -> None:
        self._refuse_if_running()
        if not self.etcd.alive:
            raise RuntimeError(f"{self.name} needs its etcd running first")
        self._port = port
        self._spawn(self._args(port), wait_ready=lambda: self.wait_ready(timeout_s),
                    port_error=f"{self.name} could not bind port {port}")


class LocalKubeCluster(KubeApiServer):
    """etcd plus kube-apiserver in one object, started and stopped together (what `kube_cluster` yields).

    `etcd` is available as an attribute for tests that stop or kill the store itself.
    """

    def __init__(
        self, workdir: Path, *, apiserver_binary: Path, etcd_binary: Path,
        limited_users: Sequence[str] = (DEFAULT_LIMITED_USER,), watch_cache: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:  # fmt: skip
        etcd = EtcdServer(workdir / "etcd", binary=etcd_binary)
        super().__init__(
            workdir / "apiserver", binary=apiserver_binary, etcd=etcd, limited_users=limited_users,
            watch_cache=watch_cache, extra_args=extra_args,
        )  # fmt: skip

    def start(self, *, timeout_s: float = READY_TIMEOUT_S) -> None:
        started = time.monotonic()
        if not self.etcd.alive:
            self.etcd.start()
        try:
            super().start(timeout_s=max(1.0, timeout_s - (time.monotonic() - started)))
        except BaseException:
            self.etcd.stop()
            raise

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> int | None:
        # The API server first, so it does not log a burst of etcd connection errors on the way down.
        try:
            return super().stop(timeout_s)
        finally:
            self.etcd.stop(timeout_s)

    def logs(self, n: int = 40) -> dict[str, str]:
        return {self.name: self.tail(n), self.etcd.name: self.etcd.tail(n)}
