"""ConsulClient: the HTTP side of the Consul source, and the blocking-query index rules.

This talks to Consul's HTTP API with aiohttp directly rather than through a client library (py-consul and
its forks). The watch loop needs things those libraries hide or fix for us:

- the raw `X-Consul-Index`, `X-Consul-KnownLeader` and `X-Consul-LastContact` headers of every response,
  to drive blocking queries and to measure staleness (docs/protocol.md R32, R33);
- a per-request timeout tied to the blocking `wait`: Consul holds a blocking query for up to `wait` plus
  a random wait/16 before answering (api-docs/features/blocking), so the client timeout must be longer
  than that, while a non-blocking call deserves a short one;
- exact control of the consistency mode (`?stale`, `?consistent`, api-docs/features/consistency) and of
  TLS (CA, client certificate, SNI name);
- one error hierarchy of our own (`ConsulError`) in place of aiohttp's, so the watcher can tell an outage
  (retry, keep the last state) from an ACL denial (retry too, but tell the operator to fix the token).

Nothing here sleeps or retries: pacing and backoff belong to the watcher. Constructing a client does no
I/O; `async with ConsulClient(config)` opens the HTTP session (and reads the TLS files) and closes it.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from xds.secrets import redact
from xds.sources.http import error_detail, json_session, load_ssl_context, unreachable
from xds.sources.tunables import check_tunables

DEFAULT_ADDRESS = "http://127.0.0.1:8500"
# Consul's own default is 5 min, capped at 10 min (api-docs/features/blocking). One minute keeps idle
# connections fresh through NATs and load balancers that drop quiet connections after a few minutes.
DEFAULT_WAIT_S = 60.0
MAX_WAIT_S = 600.0
DEFAULT_REQUEST_TIMEOUT_S = 10.0
# Token bucket per watch. docs/protocol.md R32 quotes Consul's example (burst 2, about one poll per 15 s under
# churn); that is tuned for load on Consul, and would delay a health flip by up to 15 s. A burst of 5 and
# 5 calls/s keeps a change -> publish under a quarter second even while the service flaps, while 200
# changes in 10 s still cost at most 55 calls per watch.
DEFAULT_RATE_PER_S = 5.0
DEFAULT_BURST = 5
DEFAULT_RESYNC_GRACE_S = 30.0
DEFAULT_DEBOUNCE_S = 0.05
DEFAULT_MAX_STALE_S = 300.0
# Full-jitter exponential backoff after errors: ceilings 0.5, 1, 2, ... 30 s (sources/backoff.py).
DEFAULT_BACKOFF_INITIAL_S = 0.5
DEFAULT_BACKOFF_MAX_S = 30.0
# Connections to the agent, all watches and reads together (issue 13 section 4, docs/consul.md "Past 200
# services"). Consul refuses a client past limits.http_max_conns_per_client, 200 by default, with 429. The
# source holds 2 blocking queries per datacenter (catalog, health state) plus 1 for KV; the rest serve the
# targeted reads, at most `fetch_concurrency` at a time.
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_FETCH_CONCURRENCY = 8

CONSISTENCY_MODES = ("default", "stale", "consistent")
WARNING_HEALTH = ("healthy", "degraded")

_DATACENTER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ConsulError(Exception):
    """A Consul request failed. `str()` says what was asked and why it failed, never the token."""

    def __init__(self, message: str, *, path: str = "") -> None:
        # Redacted where the error enters: a body or an aiohttp message can echo the X-Consul-Token header
        # or a `token=` query (issue 9, docs/security.md).
        super().__init__(redact(message))
        self.path = path


class ConsulUnavailable(ConsulError):  # noqa: N818 - reads as a state, like the HTTP status it mirrors
    """Consul could not be reached or could not answer: connection refused or reset, timeout, 5xx, 429.
    `retry_after_s` is the server's Retry-After, when it sent one."""

    def __init__(self, message: str, *, path: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(message, path=path)
        self.retry_after_s = retry_after_s


class ConsulForbidden(ConsulError):  # noqa: N818
    """403: the ACL token is missing, unknown, or lacks a permission (service:read, node:read, key:read)."""


class ConsulNotFound(ConsulError):  # noqa: N818
    """404. Consul answers a KV read of a prefix with no keys this way, still with an X-Consul-Index to block
    on, so `index` carries it."""

    def __init__(self, message: str, *, path: str = "", index: int = 0) -> None:
        super().__init__(message, path=path)
        self.index = index


class ConsulBadResponse(ConsulError):  # noqa: N818
    """Consul (or something in front of it) answered with a status or body this client cannot use."""


@dataclass(frozen=True, slots=True)
class ConsulConfig:
    """How to reach Consul and what to watch. Validated on construction (ValueError), no I/O."""

    address: str = DEFAULT_ADDRESS  # http(s)://host:port; a bare host:port means http
    _: KW_ONLY
    token: str = ""  # sent as X-Consul-Token; kept out of repr so it never reaches a log line
    datacenters: tuple[str, ...] = ()  # empty: the agent's own; else the first is local (priority 0)
    consistency: str = "default"  # "default" | "stale" | "consistent"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_server_name: str | None = None  # SNI and certificate name check, when it differs from the host
    wait_s: float = DEFAULT_WAIT_S
    rate_per_s: float = DEFAULT_RATE_PER_S
    burst: int = DEFAULT_BURST
    kv_prefix: str | None = None  # None: no policies from KV
    warning_health: str = "healthy"  # how an instance with a warning check (and no critical) is served
    include_connect: bool = False  # serve Connect proxies and gateways as ordinary endpoints
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S  # non-blocking calls; margin on blocking ones
    resync_grace_s: float = DEFAULT_RESYNC_GRACE_S  # see watcher.py: removals held after a reset
    debounce_s: float = DEFAULT_DEBOUNCE_S
    max_stale_s: float = DEFAULT_MAX_STALE_S  # an outage longer than this is reported a second time
    backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S  # first retry ceiling after an error; doubles
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # the HTTP pool's bound (aiohttp TCPConnector limit)
    fetch_concurrency: int = DEFAULT_FETCH_CONCURRENCY  # targeted /v1/health/service reads in flight

    def __repr__(self) -> str:
        token = "<set>" if self.token else "<none>"
        return (f"ConsulConfig(address={self.address!r}, token={token}, datacenters={self.datacenters!r}, "
                f"consistency={self.consistency!r}, kv_prefix={self.kv_prefix!r})")

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", normalize_address(self.address))
        object.__setattr__(self, "datacenters", tuple(self.datacenters))
        for dc in self.datacenters:
            if not _DATACENTER_RE.fullmatch(dc):
                raise ValueError(f"invalid Consul datacenter name {dc!r}")
        if len(set(self.datacenters)) != len(self.datacenters):
            raise ValueError(f"Consul datacenter listed twice in {list(self.datacenters)}")
        if self.consistency not in CONSISTENCY_MODES:
            raise ValueError(f"Consul consistency must be one of {', '.join(CONSISTENCY_MODES)}, "
                             f"got {self.consistency!r}")
        if self.warning_health not in WARNING_HEALTH:
            raise ValueError(f"Consul warning health must be one of {', '.join(WARNING_HEALTH)}, "
                             f"got {self.warning_health!r}")
        if not 0 < self.wait_s <= MAX_WAIT_S:
            raise ValueError(f"Consul wait_s must be in (0, {MAX_WAIT_S:g}] (Consul caps it at 10 min), "
                             f"got {self.wait_s}")
        check_tunables(self, "Consul", positive=("rate_per_s", "request_timeout_s"))
        if self.burst < 1:
            raise ValueError(f"Consul burst must be at least 1, got {self.burst}")
        if self.fetch_concurrency < 1:
            raise ValueError(f"Consul fetch_concurrency must be at least 1, got {self.fetch_concurrency}")
        if self.max_connections < self.blocking_queries + 1:
            raise ValueError(f"Consul max_connections must be at least {self.blocking_queries + 1} (one per "
                             f"blocking query, {self.blocking_queries} here, and one for reads), got "
                             f"{self.max_connections}")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("a Consul client key file needs its certificate file too")
        tls_options = (self.ca_file, self.cert_file, self.tls_server_name)
        if not self.tls and any(option is not None for option in tls_options):
            raise ValueError(f"TLS options were given but the Consul address {self.address!r} is http://; "
                             "use https://")
        if self.kv_prefix is not None:
            prefix = self.kv_prefix.strip("/")
            if not prefix:
                raise ValueError("the Consul KV prefix must not be empty (it would read the whole KV store)")
            object.__setattr__(self, "kv_prefix", prefix + "/")

    @property
    def tls(self) -> bool:
        return self.address.startswith("https://")

    @property
    def blocking_queries(self) -> int:
        """Blocking queries held open at once: catalog and health state per datacenter, and KV."""
        return 2 * max(1, len(self.datacenters)) + (1 if self.kv_prefix is not None else 0)

    @property
    def blocking_timeout_s(self) -> float:
        """Client timeout of a blocking query: Consul may hold it for wait + wait/16 (its jitter), and the
        request itself needs the usual time on top."""
        return self.wait_s + self.wait_s / 16 + self.request_timeout_s


def normalize_address(address: str) -> str:
    """'host:port' -> 'http://host:port'; checks the scheme and that there is a host. ValueError if not."""
    text = address.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"Consul address must start with http:// or https://, got {address!r}")
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"invalid port in Consul address {address!r}") from e
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError(f"Consul address must be http(s)://HOST:PORT, got {address!r}")
    del port
    return f"{parts.scheme}://{parts.netloc}"


def advance_index(previous: int, returned: int) -> tuple[int, bool]:
    """The index for the next blocking query after one that returned `returned`, and whether this was a
    reset (the caller must treat the result as a full resync).

    The two sanity rules of Consul's api-docs/features/blocking ("Implementation details"; docs/protocol.md,
    R32):
    - an index of 0 or less is never valid after a request; blocking on it returns at once, so a loop on it
      spins. Use 1.
    - an index lower than the previous one means the state was rebuilt (snapshot restore, a restarted
      server, KV keys removed); reset to 0, i.e. ask again without blocking and take the answer whole.
    """
    index = returned if returned > 0 else 1
    if index < previous:
        return 0, True
    return index, False


@dataclass(frozen=True, slots=True)
class ConsulResponse:
    index: int  # X-Consul-Index as sent (0 when absent or unreadable); see advance_index
    body: object  # parsed JSON; None for an empty body
    headers: Mapping[str, str]

    @property
    def known_leader(self) -> bool | None:
        """X-Consul-KnownLeader: False when the answering server knows of no leader (a stale read)."""
        value = self.headers.get("X-Consul-KnownLeader")
        return None if value is None else value.lower() == "true"

    @property
    def last_contact_s(self) -> float | None:
        """X-Consul-LastContact: ms since the answering server last heard from the leader (0 on the leader),
        the staleness of a `stale` read (api-docs/features/consistency)."""
        value = self.headers.get("X-Consul-LastContact")
        try:
            return None if value is None else int(value) / 1000.0
        except ValueError:
            return None


def _parse_index(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def _retry_after_s(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class ConsulClient:
    """GETs against one Consul agent. Use as `async with ConsulClient(config) as client:`."""

    def __init__(self, config: ConsulConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = True

    @property
    def config(self) -> ConsulConfig:
        return self._config

    async def __aenter__(self) -> ConsulClient:
        if self._config.tls:
            try:
                self._ssl = await asyncio.to_thread(load_ssl_context, self._config.ca_file,
                                                cert_file=self._config.cert_file,
                                                key_file=self._config.key_file)
            except (OSError, ssl.SSLError) as e:
                raise ConsulError(f"cannot load the Consul TLS files: {e}") from e
        headers = {"Accept": "application/json"}
        if self._config.token:
            headers["X-Consul-Token"] = self._config.token
        # A bounded pool (issue 13 section 4): the agent refuses a client IP past
        # limits.http_max_conns_per_client (default 200) with 429, so the source keeps a fixed number of
        # blocking queries (ConsulConfig.blocking_queries) and reads the services that changed through the
        # rest of the pool; see docs/consul.md "Past 200 services".
        # Note: when a connection drops mid-request, aiohttp resends an idempotent GET once by itself. If
        # Consul is already back by then (a restart within milliseconds), that resend blocks on the old
        # index, and the reset is seen one `wait` later; a slower restart fails the resend ("connection
        # refused") and the watch's next read is a fresh one (docs/consul.md, "Outages").
        self._session = json_session(headers, ssl_context=self._ssl,
                                     max_connections=self._config.max_connections)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str, *, params: Mapping[str, str] | None = None) -> ConsulResponse:
        """A non-blocking GET, with `request_timeout_s`."""
        return await self.blocking_get(path, index=0, params=params)

    async def blocking_get(self, path: str, *, index: int,
                           params: Mapping[str, str] | None = None) -> ConsulResponse:
        """GET `path` (e.g. "/v1/health/service/web"), blocking until Consul's state passes `index`.

        `index` 0 makes a plain read that answers at once: per docs/protocol.md R32 a watch never blocks on 0,
        it reads first and then blocks on what that read returned. Raises a ConsulError subclass.
        """
        if self._session is None:
            raise RuntimeError("ConsulClient used outside 'async with'")
        query = dict(params or {})
        if self._config.consistency != "default":
            # A bare flag parameter: Consul only checks that the key is present.
            query[self._config.consistency] = ""
        if index > 0:
            query["index"] = str(index)
            # In milliseconds: Consul parses `wait` as a Go duration.
            query["wait"] = f"{round(self._config.wait_s * 1000)}ms"
            timeout_s = self._config.blocking_timeout_s
        else:
            timeout_s = self._config.request_timeout_s
        url = self._config.address + path
        what = f"GET {path}"
        try:
            async with self._session.get(url, params=query, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                         allow_redirects=False,
                                         server_hostname=self._config.tls_server_name) as response:
                payload = await response.read()
                status = response.status
                headers = CIMultiDict(response.headers)
        except (TimeoutError, aiohttp.ClientError) as e:
            # A reset or close mid-request is an agent restarting, or over its connection limit per client.
            peer = f"Consul at {self._config.address}"
            raise ConsulUnavailable(f"{what}: {unreachable(e, peer=peer, timeout_s=timeout_s)}",
                                    path=path) from e
        return self._interpret(path, status, headers, payload)

    async def write(self, method: str, path: str, body: bytes | None = None) -> ConsulResponse:
        """A PUT or DELETE (the status keys of the closed NACK loop, issue 11: docs/consul.md "Status
        keys"), with `request_timeout_s`. Raises a ConsulError subclass."""
        if self._session is None:
            raise RuntimeError("ConsulClient used outside 'async with'")
        timeout_s = self._config.request_timeout_s
        try:
            async with self._session.request(method, self._config.address + path, data=body,
                                             timeout=aiohttp.ClientTimeout(total=timeout_s),
                                             allow_redirects=False,
                                             server_hostname=self._config.tls_server_name) as response:
                payload = await response.read()
                status = response.status
                headers = CIMultiDict(response.headers)
        except (TimeoutError, aiohttp.ClientError) as e:
            raise ConsulUnavailable(f"{method} {path}: Consul at {self._config.address} did not answer: "
                                    f"{type(e).__name__}: {e}", path=path) from e
        return self._interpret(path, status, headers, payload, method=method)

    def _interpret(self, path: str, status: int, headers: Mapping[str, str], payload: bytes
                   , *, method: str = "GET") -> ConsulResponse:
        what = f"{method} {path}"
        index = _parse_index(headers.get("X-Consul-Index"))
        detail = error_detail(payload)  # redacted before it is cut (issue 9)
        if status == 200:
            try:
                body: object = json.loads(payload) if payload.strip() else None
            except ValueError as e:
                raise ConsulBadResponse(f"{what}: Consul answered 200 with a body that is not JSON: {e}",
                                        path=path) from e
            return ConsulResponse(index, body, headers)
        if status == 403:
            hint = ("set --consul-token-file PATH (or XDS_CONSUL_TOKEN)" if not self._config.token else
                    "the token needs service:read and node:read on the watched services"
                    + (", and key:read on the KV prefix" if self._config.kv_prefix else ""))
            raise ConsulForbidden(f"{what}: Consul denied access (403: {detail or 'permission denied'}); "
                                  f"{hint}", path=path)
        if status == 404:
            raise ConsulNotFound(f"{what}: not found (404: {detail})", path=path, index=index)
        if status == 429 or status >= 500:
            raise ConsulUnavailable(f"{what}: Consul answered {status}: {detail}", path=path,
                                    retry_after_s=_retry_after_s(headers.get("Retry-After")))
        raise ConsulBadResponse(f"{what}: Consul answered {status}: {detail}", path=path)
