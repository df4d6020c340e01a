"""KubeClient: the HTTP side of the Kubernetes source (list, watch, status patch), and its error types.

Library choice: kubernetes_asyncio, used for configuration and authentication only. The three candidates
were weighed against what the watch loop needs (docs/protocol.md R34; docs/kubernetes.md, "Why
kubernetes_asyncio"):

- kubernetes_asyncio (chosen) runs on aiohttp, which this project already uses (Consul client, admin
  server, test fakes), so TLS, timeouts and connection errors behave the same everywhere. Its kubeconfig
  loader handles what `kubectl` does (contexts, client certificates, bearer tokens, exec credential
  plugins, OIDC, token refresh) and its in-cluster loader re-reads the projected service-account token as
  it rotates. With `_preload_content=False` its `ApiClient.call_api` hands back the raw aiohttp response:
  no model objects are built, the JSON is parsed once by `json.loads` and mapped by parse.py, and the watch
  stream is read line by line here, so every query parameter (`allowWatchBookmarks`, `timeoutSeconds`,
  `resourceVersion`) is ours to set, and a `410 Gone` (as an HTTP status or as a watch ERROR event) reaches
  the caller as `KubeGone` instead of being retried inside the library (its own `Watch` helper retries a
  410 once and then raises, kubernetes-client/python #728, #819). CRDs and the status
  subresource are plain paths (`/apis/xds.dev/v1alpha1/...`), patched with a JSON merge patch.
- lightkube is typed and neat, but runs on httpx (a second HTTP stack), turns every object into model
  classes (slower for thousands of EndpointSlices) and handles watch errors itself.
- kr8s is an object-oriented, kubectl-like API on httpx; its watch hides the resourceVersion bookkeeping
  this source must own (re-list on 410, bookmarks, inactivity timeout).

Nothing here sleeps or retries: pacing, backoff and re-listing belong to the watcher. Constructing a client
does no I/O; `async with KubeClient(config)` loads the kubeconfig (or the in-cluster service account) and
opens the HTTP session, and closes it on exit. Every request has a timeout: lists and patches
`request_timeout_s` in total; a watch `request_timeout_s` to connect, the server's `timeoutSeconds` plus a
margin in total, and `inactivity_timeout_s` between two reads (Kubernetes API concepts, "Efficient
detection of changes": bookmarks may never arrive, docs/protocol.md R34).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml

from xds.secrets import redact, register_secret
from xds.sources.http import unreachable
from xds.sources.tunables import check_tunables

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

DEFAULT_REQUEST_TIMEOUT_S = 30.0
# client-go's reflector asks the server to end a watch after a random time in [5 min, 10 min), so that the
# watches of many clients do not all restart together (and stay short enough for load balancers).
DEFAULT_WATCH_TIMEOUT_S = 300.0
# No event and no bookmark for this long: the connection is presumed dead (a NAT or load balancer dropped
# it silently) and the watch is restarted from the last resourceVersion. The apiserver sends a bookmark
# about once a minute to watches that ask for them, but need not (KEP-956).
DEFAULT_INACTIVITY_TIMEOUT_S = 120.0
DEFAULT_PAGE_SIZE = 500
DEFAULT_RESYNC_GRACE_S = 30.0
DEFAULT_DEBOUNCE_S = 0.05
DEFAULT_MAX_STALE_S = 300.0
DEFAULT_BACKOFF_INITIAL_S = 0.5
DEFAULT_BACKOFF_MAX_S = 30.0
# How often a missing TrafficPolicy CRD is looked for again.
DEFAULT_CRD_RETRY_S = 60.0

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_DEFAULT_KUBECONFIG = Path("~/.kube/config")
# RFC 1123 label, the rule for namespace names (Kubernetes "Object Names and IDs").
_NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_MAX_NAMESPACE = 63
_MAX_ERROR_BODY = 300
_MAX_EVENT_BYTES = 64 * 1024 * 1024  # one watch event; etcd's own request limit is 1.5 MiB


class KubeError(Exception):
    """A Kubernetes API request failed. `str()` says what was asked and why, never the credentials."""

    def __init__(self, message: str) -> None:
        # Redacted where the error enters: a Status message or a proxy's error page can echo the
        # Authorization header (issue 9, docs/security.md).
        super().__init__(redact(message))


class KubeConfigError(KubeError):
    """The kubeconfig or the in-cluster service account could not be loaded."""


class KubeUnavailable(KubeError):  # noqa: N818 - reads as a state, like the HTTP status it mirrors
    """The API server could not be reached or could not answer: connection refused or reset, timeout,
    5xx, 429. `retry_after_s` is the server's Retry-After, when it sent one."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class KubeForbidden(KubeError):  # noqa: N818
    """401 or 403: the credentials are missing, expired, or RBAC does not allow the request."""


class KubeNotFound(KubeError):  # noqa: N818
    """404: the resource type (a CRD that is not installed) or the object does not exist."""


class KubeGone(KubeError):  # noqa: N818
    """410 Gone: the resourceVersion is older than what etcd keeps (about 5 minutes), or a list's continue
    token expired. The caller must list again (docs/protocol.md R34)."""


class KubeWatchInactive(KubeError):  # noqa: N818
    """Nothing arrived on a watch for `inactivity_timeout_s`. Not a failure: restart the watch."""


class KubeBadResponse(KubeError):  # noqa: N818
    """An answer this client cannot use: an unexpected status (400 for a bad label selector, say) or a
    body that is not the JSON the API documents."""


@dataclass(frozen=True, slots=True)
class ResourceKind:
    """A resource type by its REST path parts (Kubernetes API concepts, "Resource URIs")."""

    group: str  # "" for the core group
    version: str
    _: KW_ONLY
    plural: str
    kind: str

    def path(self, namespace: str | None = None, name: str | None = None, *, subresource: str = "") -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


SERVICES = ResourceKind("", "v1", plural="services", kind="Service")
ENDPOINT_SLICES = ResourceKind("discovery.k8s.io", "v1", plural="endpointslices", kind="EndpointSlice")
TRAFFIC_POLICIES = ResourceKind("xds.dev", "v1alpha1", plural="trafficpolicies", kind="TrafficPolicy")


@dataclass(frozen=True, slots=True)
class KubeConfig:
    """How to reach the API server and what to watch. Validated on construction (ValueError), no I/O."""

    kubeconfig: str | None = None  # path, or several joined with os.pathsep as in KUBECONFIG
    _: KW_ONLY
    in_cluster: bool = False  # use the pod's service account instead of a kubeconfig
    context: str | None = None  # kubeconfig context; None: its current-context
    server: str = ""  # the API server URL, naming the source; see resolve_server()
    namespaces: tuple[str, ...] = ()  # Services and EndpointSlices; empty: all namespaces
    label_selector: str = ""  # applied to Services (see watcher.py)
    policies: bool = True  # watch TrafficPolicy objects
    policy_namespaces: tuple[str, ...] = ()  # empty: all namespaces
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    watch_timeout_s: float = DEFAULT_WATCH_TIMEOUT_S
    inactivity_timeout_s: float = DEFAULT_INACTIVITY_TIMEOUT_S
    page_size: int = DEFAULT_PAGE_SIZE
    resync_grace_s: float = DEFAULT_RESYNC_GRACE_S  # see watcher.py: removals held after an outage
    debounce_s: float = DEFAULT_DEBOUNCE_S
    max_stale_s: float = DEFAULT_MAX_STALE_S  # an outage longer than this is reported a second time
    backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    crd_retry_s: float = DEFAULT_CRD_RETRY_S

    def __post_init__(self) -> None:
        if self.in_cluster and self.kubeconfig:
            raise ValueError("give either a kubeconfig or in-cluster configuration, not both")
        for field_name in ("namespaces", "policy_namespaces"):
            names = tuple(getattr(self, field_name))
            object.__setattr__(self, field_name, names)
            for namespace in names:
                if len(namespace) > _MAX_NAMESPACE or not _NAMESPACE_RE.fullmatch(namespace):
                    raise ValueError(f"invalid Kubernetes namespace {namespace!r}: it must be a DNS label "
                                     "(lowercase letters, digits and '-', at most 63 characters)")
            if len(set(names)) != len(names):
                raise ValueError(f"Kubernetes namespace listed twice in {list(names)}")
        if any(ch in self.label_selector for ch in "\r\n"):
            raise ValueError("a label selector must be on one line")
        object.__setattr__(self, "label_selector", self.label_selector.strip())
        check_tunables(self, "Kubernetes", positive=("request_timeout_s", "watch_timeout_s",
                                                     "inactivity_timeout_s", "crd_retry_s"))
        if self.page_size < 1:
            raise ValueError(f"Kubernetes page_size must be at least 1, got {self.page_size}")

    @property
    def source_name(self) -> str:
        """`kubernetes:<server URL>`; before the server is resolved, what will be loaded."""
        if self.server:
            return f"kubernetes:{self.server}"
        return "kubernetes:in-cluster" if self.in_cluster else f"kubernetes:{self.kubeconfig or 'kubeconfig'}"


# ------------------------------------------------------------------------------ configuration files


def kubeconfig_paths(config: KubeConfig, *, env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The kubeconfig files to read, as kubectl picks them: the explicit path(s), else $KUBECONFIG (a list
    separated by os.pathsep), else ~/.kube/config."""
    env = os.environ if env is None else env
    text = config.kubeconfig or env.get("KUBECONFIG", "")
    parts = [p for p in text.split(os.pathsep) if p] if text else [str(_DEFAULT_KUBECONFIG)]
    return tuple(Path(p).expanduser() for p in parts)


def _join_host_port(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve_server(config: KubeConfig, *, env: Mapping[str, str] | None = None) -> str:
    """The API server URL the configuration points at, for the source's name and for logs. Reads the
    kubeconfig file(s) (a small synchronous read, for the command line at startup); KubeConfigError when
    they cannot be read or name no server.

    Several kubeconfig files merge as kubectl merges them (kubectl config --help, "the first file to set a
    particular map key wins"): current-context, contexts and clusters come from the first file that has them.
    """
    env = os.environ if env is None else env
    if config.in_cluster:
        host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise KubeConfigError("in-cluster configuration needs KUBERNETES_SERVICE_HOST and "
                                  "KUBERNETES_SERVICE_PORT (is this running in a pod?)")
        return f"https://{_join_host_port(host, port)}"
    current = config.context or ""
    contexts: dict[str, Mapping[str, Any]] = {}
    clusters: dict[str, Mapping[str, Any]] = {}
    paths = kubeconfig_paths(config, env=env)
    found = False
    for path in paths:
        try:
            document: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise KubeConfigError(f"cannot read kubeconfig {path}: {e}") from e
        found = True
        if not isinstance(document, Mapping):
            continue
        if not current and isinstance(document.get("current-context"), str):
            current = document["current-context"]
        for key, into in (("contexts", contexts), ("clusters", clusters)):
            for entry in document.get(key) or ():
                if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                    body = entry.get(key[:-1])
                    into.setdefault(entry["name"], body if isinstance(body, Mapping) else {})
    where = ", ".join(str(p) for p in paths)
    if not found:
        raise KubeConfigError(f"no kubeconfig found at {where} (give --kubeconfig PATH, or "
                              "--kube-in-cluster when running in a pod)")
    if not current:
        raise KubeConfigError(f"kubeconfig {where} has no current-context; give a context")
    if current not in contexts:
        raise KubeConfigError(f"kubeconfig {where} has no context {current!r}")
    cluster = clusters.get(str(contexts[current].get("cluster", "")))
    server = cluster.get("server") if cluster is not None else None
    if not isinstance(server, str) or not server:
        raise KubeConfigError(f"kubeconfig {where}: context {current!r} names no cluster with a server")
    return server.rstrip("/")


# ------------------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class ListResult:
    items: tuple[Mapping[str, Any], ...]
    resource_version: str  # of the whole list: where the following watch starts


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED or BOOKMARK (an ERROR event is raised as a KubeError instead)
    object: Mapping[str, Any]

    @property
    def resource_version(self) -> str:
        metadata = self.object.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
        return version if isinstance(version, str) else ""


def _retry_after_s(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _status_message(payload: bytes) -> str:
    """The `message` of a metav1.Status body, else the start of the body."""
    try:
        status = json.loads(payload)
    except ValueError:
        status = None
    # Redact before cutting: a cut through a token would leave a prefix the registry no longer matches.
    if isinstance(status, Mapping) and isinstance(status.get("message"), str):
        return redact(str(status["message"]))[:_MAX_ERROR_BODY]
    return redact(payload.decode("utf-8", "replace"))[:_MAX_ERROR_BODY].strip()


def error_for_status(what: str, status: int, *, payload: bytes = b"",
                     retry_after: str | None = None) -> KubeError:
    """The KubeError for a non-2xx answer (or a watch ERROR event's Status code)."""
    detail = _status_message(payload)
    text = f"{what}: {status} {detail}".rstrip()
    if status in (401, 403):
        return KubeForbidden(f"{text} (check the credentials and RBAC; docs/kubernetes.md, \"RBAC\")")
    if status == 404:
        return KubeNotFound(text)
    if status == 410:
        return KubeGone(text)
    if status == 429 or status >= 500:
        return KubeUnavailable(text, retry_after_s=_retry_after_s(retry_after))
    return KubeBadResponse(text)


def _error_event(what: str, obj: Mapping[str, Any]) -> KubeError:
    """A watch ERROR event carries a metav1.Status; 410 Gone ("too old resource version") is the usual one."""
    code = obj.get("code")
    status = code if isinstance(code, int) and not isinstance(code, bool) else 500
    return error_for_status(f"{what} (watch error event)", status, payload=json.dumps(obj).encode())


# ---------------------------------------------------------------------------------------- client


class KubeClient:
    """Requests against one API server. Use as `async with KubeClient(config) as client:`."""

    def __init__(self, config: KubeConfig, *, env: Mapping[str, str] | None = None) -> None:
        self._config = config
        self._env = env
        self._api: ApiClient | None = None  # once entered

    @property
    def config(self) -> KubeConfig:
        return self._config

    async def __aenter__(self) -> KubeClient:
        # Imported here, not at module import: the library is large, and only this source needs it.
        from kubernetes_asyncio.client import ApiClient, Configuration
        from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config

        configuration = Configuration()
        try:
            if self._config.in_cluster:
                # Reads the token and CA files: off the event loop.
                await asyncio.to_thread(load_incluster_config, client_configuration=configuration)
            else:
                paths = os.pathsep.join(str(p) for p in kubeconfig_paths(self._config, env=self._env))
                # persist_config=False: never write refreshed credentials back into the user's file.
                await load_kube_config(config_file=paths, context=self._config.context,
                                       client_configuration=configuration, persist_config=False)
        except (ConfigException, OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
            raise KubeConfigError(f"cannot load the Kubernetes configuration: {e}") from e
        # The bearer token (kubeconfig, exec plugin or service account) is redacted from every error and log
        # line from now on (issue 9). A token refreshed later is still caught by the Authorization pattern.
        for value in (configuration.api_key or {}).values():
            register_secret(str(value).removeprefix("Bearer ").strip())
        # Each watch holds a connection for minutes; no pool limit, so a status patch never waits for one.
        configuration.connection_pool_maxsize = 0
        try:
            api = ApiClient(configuration)
        except (OSError, ValueError) as e:  # unreadable CA or client certificate files
            raise KubeConfigError(f"cannot set up TLS for the Kubernetes API: {e}") from e
        api.user_agent = "xds-control-plane"
        self._api = api
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def _send(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
                    body: object = None, content_type: str = "application/json",
                    limits: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        """One request through the library (which adds the credentials); the raw response, not yet read.
        The caller must release it."""
        if self._api is None:
            raise RuntimeError("KubeClient used outside 'async with'")
        what = f"{method} {path}"
        try:
            response: aiohttp.ClientResponse = await self._api.call_api(
                path, method, query_params=list(query),
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body, auth_settings=["BearerToken"], _preload_content=False, _request_timeout=limits)
        except (TimeoutError, aiohttp.ClientError) as e:
            raise KubeUnavailable(f"{what}: {unreachable(e, peer='the API server', timeout_s=None)}") from e
        except Exception as e:
            # The library's own failures (a credential plugin that fails, say) surface as its exceptions.
            from kubernetes_asyncio.client.exceptions import OpenApiException
            from kubernetes_asyncio.config import ConfigException

            if isinstance(e, ConfigException | OpenApiException):
                raise KubeConfigError(f"{what}: {e}") from e
            raise
        return response

    async def _read(self, response: aiohttp.ClientResponse, what: str) -> bytes:
        try:
            return await response.read()
        except TimeoutError as e:
            raise KubeUnavailable(f"{what}: the API server stopped answering mid-response") from e
        except aiohttp.ClientError as e:
            raise KubeUnavailable(f"{what}: connection lost mid-response: {type(e).__name__}: {e}") from e

    async def _json(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
                    body: object = None, content_type: str = "application/json") -> Mapping[str, Any]:
        what = f"{method} {path}"
        limits = aiohttp.ClientTimeout(total=self._config.request_timeout_s)
        response = await self._send(method, path, query=query, body=body, content_type=content_type,
                                    limits=limits)
        try:
            payload = await self._read(response, what)
            if not 200 <= response.status <= 299:
                raise error_for_status(what, response.status, payload=payload,
                                       retry_after=response.headers.get("Retry-After"))
        finally:
            response.release()
        try:
            document = json.loads(payload)
        except ValueError as e:
            raise KubeBadResponse(f"{what}: the answer is not JSON: {e}") from e
        if not isinstance(document, Mapping):
            raise KubeBadResponse(f"{what}: expected a JSON object, got {type(document).__name__}")
        return document

    async def list(self, kind: ResourceKind, *, namespace: str | None = None,
                   label_selector: str = "") -> ListResult:
        """Every object of `kind` (in `namespace`, or all), read in pages of `page_size`. Without a
        resourceVersion the list is a consistent read of the current state (API concepts, "Resource
        versions"), which is what makes a re-list the new truth after a 410. A continue token that expires
        mid-way (410) starts the list over once."""
        path = kind.path(namespace)
        for attempt in range(2):
            items: list[Mapping[str, Any]] = []
            token = ""
            version = ""
            try:
                while True:
                    query = [("limit", str(self._config.page_size))]
                    if label_selector:
                        query.append(("labelSelector", label_selector))
                    if token:
                        query.append(("continue", token))
                    page = await self._json("GET", path, query=query)
                    metadata = page.get("metadata")
                    metadata = metadata if isinstance(metadata, Mapping) else {}
                    page_items = page.get("items")
                    if page_items is None:
                        page_items = []
                    if not isinstance(page_items, list):
                        raise KubeBadResponse(f"GET {path}: 'items' is not a list")
                    items.extend(i for i in page_items if isinstance(i, Mapping))
                    if not version:  # every page of one list shares the first page's snapshot
                        version = str(metadata.get("resourceVersion") or "")
                    token = str(metadata.get("continue") or "")
                    if not token:
                        break
            except KubeGone:
                if token and attempt == 0:
                    continue
                raise
            if not version:
                raise KubeBadResponse(f"GET {path}: the list has no metadata.resourceVersion")
            return ListResult(tuple(items), version)
        raise AssertionError("unreachable")

    def watch(self, kind: ResourceKind, *, namespace: str | None = None, resource_version: str,
              label_selector: str = "", timeout_s: float | None = None) -> WatchStream:
        """A watch from `resource_version` with bookmarks: `async with client.watch(...) as stream:` opens
        it (raising KubeGone, KubeForbidden, ...), then `async for event in stream`."""
        server_timeout = round(timeout_s if timeout_s is not None else self._config.watch_timeout_s)
        query = [("watch", "true"), ("allowWatchBookmarks", "true"),
                 ("resourceVersion", resource_version), ("timeoutSeconds", str(max(1, server_timeout)))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        return WatchStream(self, kind.path(namespace), query=query, server_timeout_s=max(1, server_timeout))

    async def patch_status(self, kind: ResourceKind, *, namespace: str, name: str,
                           status: Mapping[str, Any]) -> Mapping[str, Any]:
        """A JSON merge patch (RFC 7386) of the status subresource: `{"status": status}`. Lists inside are
        replaced whole, which suits `conditions`, since this control plane owns them."""
        return await self._json("PATCH", kind.path(namespace, name, subresource="status"),
                                body={"status": dict(status)}, content_type="application/merge-patch+json")


class WatchStream:
    """One open watch. Yields WatchEvents until the server ends the watch (its `timeoutSeconds`), which is a
    normal end: watch again from the last resourceVersion. Raises KubeGone, KubeWatchInactive, ..."""

    def __init__(self, client: KubeClient, path: str, *, query: list[tuple[str, str]],
                 server_timeout_s: int) -> None:
        self._client = client
        self._path = path
        self._query = query
        self._server_timeout_s = server_timeout_s
        self._response: aiohttp.ClientResponse | None = None

    @property
    def _what(self) -> str:
        return f"watch {self._path}"

    async def __aenter__(self) -> WatchStream:
        config = self._client.config
        limits = aiohttp.ClientTimeout(total=self._server_timeout_s + config.request_timeout_s,
                                       connect=config.request_timeout_s,
                                       sock_connect=config.request_timeout_s)
        response = await self._client._send("GET", self._path, query=self._query, limits=limits)
        if response.status != 200:
            try:
                payload = await self._client._read(response, self._what)
            finally:
                response.release()
            raise error_for_status(self._what, response.status, payload=payload,
                                   retry_after=response.headers.get("Retry-After"))
        self._response = response
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._response is not None:
            # Closing (not releasing) drops the connection: a watch never ends on its own in time.
            self._response.close()
            self._response = None

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[WatchEvent]:
        async for line in self._lines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError as e:
                raise KubeBadResponse(f"{self._what}: an event is not JSON: {e}") from e
            if not isinstance(event, Mapping) or not isinstance(event.get("object"), Mapping):
                raise KubeBadResponse(f"{self._what}: an event without an object")
            kind = event.get("type")
            if kind == "ERROR":
                raise _error_event(self._what, event["object"])
            if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
                raise KubeBadResponse(f"{self._what}: unknown event type {kind!r}")
            yield WatchEvent(str(kind), event["object"])

    async def _lines(self) -> AsyncIterator[bytes]:
        """The newline-delimited JSON of the watch body, with the inactivity timeout between reads."""
        assert self._response is not None
        content = self._response.content
        inactivity_s = self._client.config.inactivity_timeout_s
        buffer = bytearray()
        while True:
            try:
                async with asyncio.timeout(inactivity_s):
                    chunk = await content.readany()
            except TimeoutError as e:
                raise KubeWatchInactive(f"{self._what}: no event or bookmark for {inactivity_s:g} s") from e
            except aiohttp.ClientError as e:
                raise KubeUnavailable(f"{self._what}: connection lost: {type(e).__name__}: {e}") from e
            if not chunk:
                if buffer.strip():
                    yield bytes(buffer)
                return
            buffer += chunk
            start = 0
            while (end := buffer.find(b"\n", start)) >= 0:
                yield bytes(buffer[start:end])
                start = end + 1
            del buffer[:start]
            if len(buffer) > _MAX_EVENT_BYTES:
                raise KubeBadResponse(f"{self._what}: an event larger than {_MAX_EVENT_BYTES} bytes")
