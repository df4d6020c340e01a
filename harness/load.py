"""Load against an Envoy listener, counting where each request landed.

Each worker thread holds one keep-alive `http.client` connection, so Envoy (not the client) decides which
upstream serves each request; the client only reads the `x-upstream` header and the status.

A request that fails on a *reused* connection before any response byte (the peer closed an idle keep-alive
connection just as we sent) is retried once on a fresh connection, as HTTP clients generally do for idempotent
requests (RFC 9112 section 9.3.1). Such retries are counted in `LoadResult.stale_retries`, never hidden. Every
other error is recorded as a failed sample.

Each sample also keeps its request's index (0, 1, 2, ... in sending order), so per-request headers chosen by
index (`request_headers`, e.g. 50 session keys for consistent hashing) can be matched to where each landed;
and, for answers Envoy made itself (no `x-upstream` header), the start of the body, which says why ("no
healthy upstream", "upstream connect error ... overflow") and whether `x-envoy-overloaded` was set (a
circuit breaker tripped). With `keep_cookies`, each connection returns the cookies it was given, like a
browser: Envoy's cookie-based session affinity then sticks to one upstream per connection.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

from harness.processes import StartStop
from harness.upstream import UPSTREAM_HEADER

# Errors that mean "the server had already closed this idle connection" when they hit a reused connection.
_STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_JOIN_GRACE_S = 5.0
# Enough of Envoy's local reply body to tell the reasons apart, bounded for a long run's memory.
_REPLY_CHARS = 200
OVERLOADED_HEADER = "x-envoy-overloaded"

RequestHeaders = Callable[[int], Mapping[str, str]]


class _StaleConnectionError(ConnectionError):
    """A reused keep-alive connection was closed by the peer before any response: safe to resend once."""


@dataclass(frozen=True, slots=True)
class Sample:
    started_s: float  # seconds since the run began
    latency_s: float
    status: int | None  # None when the request raised
    upstream: str | None  # the `x-upstream` header; None on errors and Envoy's own replies
    error: str | None = None
    index: int = -1  # the request's position in sending order
    reply: str | None = None  # start of the body of a non-2xx answer Envoy made itself (no upstream)
    overloaded: bool = False  # Envoy set `x-envoy-overloaded`: a circuit breaker or overload refused it


@dataclass(frozen=True)
class LoadResult:
    samples: tuple[Sample, ...]
    duration_s: float
    stale_retries: int = 0

    @property
    def total(self) -> int:
        return len(self.samples)

    @property
    def ok(self) -> int:
        """Requests answered with a 2xx status."""
        return sum(1 for s in self.samples if s.status is not None and 200 <= s.status < 300)

    @property
    def failures(self) -> int:
        """Non-2xx answers plus requests that raised."""
        return self.total - self.ok

    @property
    def non_2xx(self) -> int:
        return sum(1 for s in self.samples if s.status is not None and not 200 <= s.status < 300)

    @property
    def by_status(self) -> dict[int, int]:
        return dict(Counter(s.status for s in self.samples if s.status is not None))

    @property
    def by_upstream(self) -> dict[str, int]:
        return dict(Counter(s.upstream for s in self.samples if s.upstream is not None))

    @property
    def errors(self) -> dict[str, int]:
        return dict(Counter(s.error for s in self.samples if s.error is not None))

    @property
    def replies(self) -> dict[str, int]:
        """Envoy's own non-2xx answers by body text, e.g. {"no healthy upstream": 12}."""
        return dict(Counter(s.reply for s in self.samples if s.reply is not None))

    @property
    def overloaded(self) -> int:
        """Answers carrying `x-envoy-overloaded`: refused by a circuit breaker, never sent upstream."""
        return sum(1 for s in self.samples if s.overloaded)

    def upstreams_by_key(self, key_of: Callable[[int], str]) -> dict[str, dict[str, int]]:
        """For each key (computed from a request's index, as `request_headers` chose it), the upstreams that
        answered requests with that key and how often; errors and Envoy's own answers are left out."""
        result: dict[str, Counter[str]] = {}
        for sample in self.samples:
            if sample.upstream is not None:
                result.setdefault(key_of(sample.index), Counter())[sample.upstream] += 1
        return {key: dict(counts) for key, counts in result.items()}

    @property
    def success_ratio(self) -> float:
        return self.ok / self.total if self.samples else 0.0

    def share(self, upstream: str) -> float:
        """Fraction of all requests served by `upstream`."""
        return self.by_upstream.get(upstream, 0) / self.total if self.samples else 0.0

    def latency_quantile(self, q: float) -> float:
        """Latency at quantile `q` in [0, 1] over answered requests (nearest rank); 0.0 with none."""
        latencies = sorted(s.latency_s for s in self.samples if s.status is not None)
        if not latencies:
            return 0.0
        index = min(len(latencies) - 1, max(0, round(q * (len(latencies) - 1))))
        return latencies[index]

    def window(self, start_s: float, end_s: float) -> LoadResult:
        """The samples whose requests began in [start_s, end_s): e.g. the seconds around a fault."""
        samples = tuple(s for s in self.samples if start_s <= s.started_s < end_s)
        return LoadResult(samples=samples, duration_s=max(0.0, end_s - start_s))

    def summary(self) -> str:
        return (
            f"{self.total} requests in {self.duration_s:.2f} s: ok={self.ok} status={self.by_status} "
            f"upstreams={self.by_upstream} errors={self.errors} stale_retries={self.stale_retries}"
        )


class _Target:
    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or parsed.hostname is None:
            raise ValueError(f"only plain http:// URLs with a host are supported, got {url!r}")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    upstream: str | None
    reply: str | None
    overloaded: bool


class _Client:
    """One keep-alive connection, reopened after errors; used by exactly one thread."""

    def __init__(
        self,
        target: _Target,
        recorder: _Recorder,
        *,
        timeout_s: float,
        headers: Mapping[str, str],
        request_headers: RequestHeaders | None = None,
        keep_cookies: bool = False,
    ) -> None:
        self._target = target
        self._recorder = recorder
        self._timeout_s = timeout_s
        self._headers = dict(headers)
        self._request_headers = request_headers
        # None: cookies are ignored; else the jar this connection's client returns on each request.
        self._cookies: dict[str, str] | None = {} if keep_cookies else None
        self._conn: http.client.HTTPConnection | None = None
        self._reused = False

    def get(self, index: int) -> None:
        """Send request number `index` and record its sample."""
        origin = self._recorder.origin
        started = time.monotonic()
        headers = self._headers_for(index)
        try:
            try:
                answer = self._exchange(headers)
            except _StaleConnectionError:
                self._recorder.add_stale_retry()
                answer = self._exchange(headers)
        except (OSError, http.client.HTTPException) as e:
            cause = e.__cause__ if isinstance(e, _StaleConnectionError) else e
            error = f"{type(cause).__name__}: {cause}"
            self._recorder.add(
                Sample(started - origin, time.monotonic() - started, None, None, error, index=index)
            )
            return
        self._recorder.add(Sample(
            started - origin, time.monotonic() - started, answer.status, answer.upstream,
            index=index, reply=answer.reply, overloaded=answer.overloaded,
        ))  # fmt: skip

    def _headers_for(self, index: int) -> dict[str, str]:
        headers = dict(self._headers)
        if self._request_headers is not None:
            headers.update(self._request_headers(index))
        if self._cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self._cookies.items())
        return headers

    def _exchange(self, headers: Mapping[str, str]) -> _Answer:
        if self._conn is None:
            t = self._target
            self._conn = http.client.HTTPConnection(t.host, t.port, timeout=self._timeout_s)
            self._reused = False
        try:
            self._conn.request("GET", self._target.path, headers=dict(headers))
            response = self._conn.getresponse()
        except _STALE_CONNECTION_ERRORS as e:
            reused = self._reused
            self.close()
            if reused:
                raise _StaleConnectionError(str(e)) from e
            raise
        except BaseException:
            self.close()
            raise
        try:
            body = response.read()  # drain so the connection can carry the next request
        except BaseException:
            self.close()
            raise
        self._reused = True
        if response.will_close:
            self.close()
        if self._cookies is not None:
            self._store_cookies(response.msg.get_all("Set-Cookie") or [])
        upstream = response.getheader(UPSTREAM_HEADER)
        reply = None
        if upstream is None and not 200 <= response.status < 300:
            reply = body[:_REPLY_CHARS].decode("utf-8", errors="replace")
        overloaded = response.getheader(OVERLOADED_HEADER) is not None
        return _Answer(response.status, upstream, reply, overloaded)

    def _store_cookies(self, set_cookies: list[str]) -> None:
        assert self._cookies is not None
        for line in set_cookies:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(line)
            except CookieError:
                continue  # a malformed cookie is the server's problem; the client ignores it, as browsers do
            for name, morsel in jar.items():
                self._cookies[name] = morsel.value

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Recorder:
    """Samples from many worker threads, under one lock."""

    def __init__(self) -> None:
        self.origin = time.monotonic()
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._stale_retries = 0
        self._ended: float | None = None

    def add(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)

    def add_stale_retry(self) -> None:
        with self._lock:
            self._stale_retries += 1

    def end(self) -> None:
        with self._lock:
            self._ended = time.monotonic()

    def result(self) -> LoadResult:
        with self._lock:
            end = self._ended if self._ended is not None else time.monotonic()
            return LoadResult(
                samples=tuple(sorted(self._samples, key=lambda s: s.started_s)),
                duration_s=end - self.origin,
                stale_retries=self._stale_retries,
            )


def run_requests(
    url: str,
    *,
    count: int,
    concurrency: int = 8,
    timeout_s: float = 5.0,
    headers: Mapping[str, str] | None = None,
    max_duration_s: float = 60.0,
    request_headers: RequestHeaders | None = None,
    keep_cookies: bool = False,
) -> LoadResult:
    """Send `count` GETs to `url` from `concurrency` keep-alive connections, as fast as they complete.

    Stops early once `max_duration_s` has passed, so the result may hold fewer than `count` samples; check
    `total` when that matters. `request_headers(index)` adds headers per request (over `headers`);
    `keep_cookies` makes each connection return the cookies it was set.
    """
    if count < 0 or concurrency < 1:
        raise ValueError("count must be >= 0 and concurrency >= 1")
    target = _Target(url)
    recorder = _Recorder()
    deadline = recorder.origin + max_duration_s
    sent = 0
    lock = threading.Lock()

    def take() -> int | None:
        """The next request's index, or None when the run is over."""
        nonlocal sent
        with lock:
            if sent >= count or time.monotonic() >= deadline:
                return None
            sent += 1
            return sent - 1

    def worker() -> None:
        client = _Client(target, recorder, timeout_s=timeout_s, headers=headers or {},
                         request_headers=request_headers, keep_cookies=keep_cookies)
        try:
            while (index := take()) is not None:
                client.get(index)
        finally:
            client.close()

    threads = [
        threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(min(concurrency, count))
    ]
    for thread in threads:
        thread.start()
    # A worker can overrun the deadline by at most one request (its timeout, twice with a stale retry).
    join_deadline = deadline + 2 * timeout_s + _JOIN_GRACE_S
    for thread in threads:
        thread.join(timeout=max(0.0, join_deadline - time.monotonic()))
    recorder.end()
    return recorder.result()


class SteadyLoad(StartStop):
    """Background traffic at no more than `rate_per_s` requests per second, for at most `max_duration_s`.

    Pacing hands out send slots `1 / rate_per_s` apart and never catches up on missed slots, so a stall (Envoy
    restarting, a slow upstream) lowers the rate instead of causing a burst afterwards.
    """

    def __init__(
        self,
        url: str,
        *,
        rate_per_s: float = 50.0,
        concurrency: int = 4,
        timeout_s: float = 5.0,
        max_duration_s: float = 300.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if rate_per_s <= 0 or concurrency < 1 or max_duration_s <= 0:
            raise ValueError("rate_per_s and max_duration_s must be positive, concurrency >= 1")
        self._target = _Target(url)
        self._interval_s = 1.0 / rate_per_s
        self._concurrency = concurrency
        self._timeout_s = timeout_s
        self._max_duration_s = max_duration_s
        self._headers = dict(headers or {})
        self._stop = threading.Event()
        self._slot_lock = threading.Lock()
        self._next_slot = 0.0
        self._sent = 0
        self._recorder: _Recorder | None = None
        self._threads: list[threading.Thread] = []

    @property
    def origin(self) -> float:
        """The `time.monotonic()` value that sample `started_s` times count from."""
        if self._recorder is None:
            raise RuntimeError("the load has not started")
        return self._recorder.origin

    def start(self) -> None:
        if self._recorder is not None:
            raise RuntimeError("SteadyLoad is single-use: create a new one for another run")
        self._recorder = _Recorder()
        self._next_slot = self._recorder.origin
        self._threads = [
            threading.Thread(target=self._worker, name=f"steady-load-{i}", daemon=True)
            for i in range(self._concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def snapshot(self) -> LoadResult:
        """Everything recorded so far, while the load keeps running."""
        return self._require_recorder().result()

    def stop(self, *, timeout_s: float | None = None) -> LoadResult:
        """Stop sending, wait for in-flight requests (bounded), and return the whole run."""
        recorder = self._require_recorder()
        self._stop.set()
        wait_s = timeout_s if timeout_s is not None else 2 * self._timeout_s + _JOIN_GRACE_S
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        recorder.end()
        return recorder.result()

    def _take_slot(self) -> tuple[float, int] | None:
        """The monotonic time at which to send next and the request's index, or None when the run is over."""
        recorder = self._require_recorder()
        with self._slot_lock:
            now = time.monotonic()
            slot = max(self._next_slot, now)
            if slot >= recorder.origin + self._max_duration_s:
                return None
            self._next_slot = slot + self._interval_s
            self._sent += 1
            return slot, self._sent - 1

    def _worker(self) -> None:
        recorder = self._require_recorder()
        client = _Client(self._target, recorder, timeout_s=self._timeout_s, headers=self._headers)
        try:
            while not self._stop.is_set():
                taken = self._take_slot()
                if taken is None:
                    return
                slot, index = taken
                # Event.wait doubles as an interruptible sleep: stop() ends the wait at once.
                if self._stop.wait(max(0.0, slot - time.monotonic())):
                    return
                client.get(index)
        finally:
            client.close()

    def _require_recorder(self) -> _Recorder:
        if self._recorder is None:
            raise RuntimeError("SteadyLoad was not started")
        return self._recorder
