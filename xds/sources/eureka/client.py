"""EurekaClient: the HTTP side of the Eureka source, with failover between the configured servers.

Eureka's REST API (the one its own Java client and Spring Cloud use) is plain JSON over HTTP: a full
registry at `GET {url}/apps`, recent changes at `GET {url}/apps/delta`, both with `Accept:
application/json` (without it Eureka answers XML). It is called with aiohttp directly, like Consul
(sources/consul/client.py), so the error kinds, timeouts and redaction are ours.

Failover (issue 13, docs/eureka.md "Several servers"). A client has several server URLs, peers that
replicate to each other. A request goes to the server that answered last; on a connection error, a timeout
or a 5xx it tries the next, in order, wrapping around, and sticks to the first that answers. `active_url`
says which one that is (for status). Only when every server failed does the request fail, with each
server's error in the message. A 401/403 does not fail over: the credentials are wrong for every peer alike.

Secrets. The password goes out only as HTTP basic auth. It is registered with xds.secrets so any echo of it
is redacted, is absent from `repr`, and URLs are shown without userinfo (`http://user:pass@host/eureka`
is accepted and split into URL and credentials).

Nothing here sleeps or retries beyond the one pass over the servers: pacing belongs to the watcher.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from xds.secrets import redact, register_secret
from xds.sources.http import error_detail, json_session, load_ssl_context, unreachable
from xds.sources.tunables import check_tunables

DEFAULT_URL = "http://127.0.0.1:8761/eureka"
# Eureka's own client polls every 30 s (registryFetchIntervalSeconds). A delta is a small answer, and the
# point of a control plane is to move traffic soon after a change, so the default is 5 s (docs/eureka.md).
DEFAULT_REFRESH_S = 5.0
DEFAULT_REQUEST_TIMEOUT_S = 5.0
DEFAULT_RESYNC_GRACE_S = 30.0
DEFAULT_DEBOUNCE_S = 0.05
DEFAULT_MAX_STALE_S = 300.0
DEFAULT_BACKOFF_INITIAL_S = 0.5
DEFAULT_BACKOFF_MAX_S = 30.0


class EurekaError(Exception):
    """A Eureka request failed. `str()` says what was asked, of which server, and why; never the password."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class EurekaUnavailable(EurekaError):  # noqa: N818 - reads as a state, like the HTTP status it mirrors
    """No server could answer: connection refused or reset, timeout, 5xx, 429."""


class EurekaForbidden(EurekaError):  # noqa: N818
    """401 or 403: the username or password is missing or wrong."""


class EurekaBadResponse(EurekaError):  # noqa: N818
    """A server answered with a status or body this client cannot use."""


def split_url(url: str) -> tuple[str, str, str]:
    """(URL without userinfo or trailing slash, username, password) of one server URL; ValueError naming the
    URL (redacted) when it is not http(s)://HOST[:PORT][/PATH]."""
    text = url.strip()
    parts = urlsplit(text)
    shown = display_url(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"Eureka URL must start with http:// or https://, got {shown!r}")
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"invalid port in Eureka URL {shown!r}") from e
    if not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"Eureka URL must be http(s)://HOST[:PORT]/PATH (e.g. {DEFAULT_URL}), got {shown!r}")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return clean, unquote(parts.username or ""), unquote(parts.password or "")


def display_url(url: str) -> str:
    """`url` with any userinfo replaced by `***`: safe for logs, errors and status."""
    parts = urlsplit(url.strip())
    if "@" not in parts.netloc:
        return url.strip()
    return urlunsplit((parts.scheme, "***@" + parts.netloc.rsplit("@", 1)[1], parts.path, parts.query,
                       parts.fragment))


@dataclass(frozen=True, slots=True)
class EurekaConfig:
    """How to reach Eureka and how often to ask. Validated on construction (ValueError), no I/O."""

    urls: tuple[str, ...] = (DEFAULT_URL,)  # peers of one Eureka cluster, tried in this order
    _: KW_ONLY
    username: str = ""
    password: str = ""  # basic auth; kept out of repr, registered for redaction
    ca_file: Path | None = None  # for https:// servers signed by a private CA
    refresh_s: float = DEFAULT_REFRESH_S
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    prefer_secure_port: bool = False
    resync_grace_s: float = DEFAULT_RESYNC_GRACE_S
    debounce_s: float = DEFAULT_DEBOUNCE_S
    max_stale_s: float = DEFAULT_MAX_STALE_S
    backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S

    def __repr__(self) -> str:
        password = "<set>" if self.password else "<none>"
        return (f"EurekaConfig(urls={list(self.urls)!r}, username={self.username!r}, password={password}, "
                f"refresh_s={self.refresh_s})")

    def __post_init__(self) -> None:
        if isinstance(self.urls, str):
            raise ValueError("EurekaConfig.urls must be a sequence of URLs, not one string")
        urls: list[str] = []
        username, password = self.username, self.password
        for url in self.urls:
            # A comma-separated list is accepted as Spring's eureka.client.service-url.defaultZone writes it.
            for one in (u for u in url.split(",") if u.strip()):
                clean, user, secret = split_url(one)
                if clean in urls:
                    raise ValueError(f"Eureka URL listed twice: {clean!r}")
                urls.append(clean)
                username = username or user
                password = password or secret
        if not urls:
            raise ValueError("at least one Eureka URL is needed (e.g. --eureka-url http://HOST:8761/eureka)")
        object.__setattr__(self, "urls", tuple(urls))
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "password", password)
        register_secret(password)
        if password and not username:
            raise ValueError("a Eureka password was given without a username (--eureka-username)")
        if self.ca_file is not None and not any(u.startswith("https://") for u in urls):
            raise ValueError("a Eureka CA file was given but no Eureka URL is https://")
        check_tunables(self, "Eureka", positive=("refresh_s", "request_timeout_s"))


def read_password(*, file: Path | None, env: str | None) -> str:
    """The Eureka password from `file` (first line, stripped) or else the environment value `env`; "" when
    neither is set. ValueError naming the file, never quoting its content. Registered for redaction."""
    if file is not None:
        try:
            password = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the Eureka password file {file}: {type(e).__name__}") from e
        if not password or "\n" in password:
            raise ValueError(f"the Eureka password file {file} must hold one non-empty line")
    else:
        password = (env or "").strip()
    register_secret(password)
    return password


@dataclass(frozen=True, slots=True)
class EurekaResponse:
    url: str  # the server that answered
    body: object


def basic_authorization(username: str, password: str) -> str:
    """The `Authorization` header of HTTP basic auth (RFC 7617, UTF-8). Built here rather than with
    aiohttp.BasicAuth, deprecated in recent aiohttp; the encoded credentials are registered for redaction
    too, since an echo of the header would reveal the password to anyone who decodes it."""
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    register_secret(credentials)
    return f"Basic {credentials}"


class EurekaClient:
    """GETs against a Eureka cluster. Use as `async with EurekaClient(config) as client:`."""

    def __init__(self, config: EurekaConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = True
        self._active = 0  # index in config.urls of the server that answered last

    @property
    def config(self) -> EurekaConfig:
        return self._config

    @property
    def active_url(self) -> str:
        """The server requests go to first: the one that answered last (initially the first listed)."""
        return self._config.urls[self._active]

    async def __aenter__(self) -> EurekaClient:
        if self._config.ca_file is not None:
            try:
                self._ssl = await asyncio.to_thread(load_ssl_context, self._config.ca_file)
            except (OSError, ssl.SSLError) as e:
                raise EurekaError(f"cannot load the Eureka CA file {self._config.ca_file}: {e}") from e
        headers = {"Accept": "application/json"}
        if self._config.username:
            headers["Authorization"] = basic_authorization(self._config.username, self._config.password)
        self._session = json_session(headers, ssl_context=self._ssl)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str) -> EurekaResponse:
        """GET `path` ("/apps", "/apps/delta") from the active server, failing over to the others in turn.
        Raises EurekaUnavailable when none answered, or another EurekaError."""
        failures: list[str] = []
        count = len(self._config.urls)
        for step in range(count):
            index = (self._active + step) % count
            try:
                body = await self._get_one(self._config.urls[index], path)
            except EurekaUnavailable as e:
                failures.append(str(e))
                continue
            self._active = index
            return EurekaResponse(self._config.urls[index], body)
        raise EurekaUnavailable("; ".join(failures))

    async def _get_one(self, base: str, path: str) -> object:
        if self._session is None:
            raise RuntimeError("EurekaClient used outside 'async with'")
        what = f"GET {path}"
        timeout_s = self._config.request_timeout_s
        try:
            async with self._session.get(base + path, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                         allow_redirects=False) as response:
                payload = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as e:
            reason = unreachable(e, peer=f"Eureka at {base}", timeout_s=timeout_s)
            raise EurekaUnavailable(f"{what}: {reason}") from e
        what = f"{what} from Eureka at {base}"
        detail = error_detail(payload)
        if status == 200:
            try:
                return json.loads(payload)
            except ValueError as e:
                raise EurekaBadResponse(f"{what}: answered 200 with a body that is not JSON: {e}") from e
        if status in (401, 403):
            hint = ("set --eureka-username and --eureka-password-file (or XDS_EUREKA_PASSWORD)"
                    if not self._config.username else "check --eureka-username and the password")
            raise EurekaForbidden(f"{what}: denied ({status}); {hint}")
        if status == 429 or status >= 500:
            raise EurekaUnavailable(f"{what}: answered {status}: {detail}")
        raise EurekaBadResponse(f"{what}: answered {status}: {detail}")
