"""Download one image URL safely: byte cap, timeouts, a wall-clock cap, retries, redirects, X-Robots-Tag.

``Fetcher.fetch(url)`` never raises for network or HTTP problems; it returns a :class:`FetchResult` whose
``reason`` is one of ``download_failed``, ``blocked_address``, ``robots_disallowed`` and whose ``detail`` is a
short classified string (``http_404``, ``timeout``, ``total_timeout``, ``too_large``, ``dns``,
``blocked:127.0.0.1``, ``x-robots-tag:noai``, ...). One ``Fetcher`` is shared by many threads.

Semantics worth knowing:

* An *attempt* is one pass from the original URL through its redirects to a final response and its body.
  ``total_timeout`` caps each attempt's wall-clock time (TLS handshakes, redirect hops, headers and body
  together; not the waits between attempts, not DNS resolution, which the OS resolver bounds). A watchdog
  thread shuts the socket down at the deadline, so neither a body dripping one byte a second nor headers sent
  one byte at a time can hold a thread past it. Retries start again from the original URL (redirect targets
  are often short-lived signed URLs).
* Retried: connection failures, connect/read timeouts, a body cut short, temporary DNS failures, 408, 429
  and 5xx except 501. Not retried: other 4xx, NXDOMAIN, TLS errors, the byte cap, the wall-clock cap, refusals.
  The wait is exponential (``backoff * 2**n``, capped at 8 s, half of it jittered) or the server's
  Retry-After (seconds or an HTTP date) when longer; a Retry-After above ``max_retry_after`` ends the
  retries instead of being shortened, since coming back early would only earn another 429.
* ``max_bytes`` applies to the decoded body: Content-Length is checked first when present, and bytes are
  counted while streaming (gzip/deflate decoded chunk by chunk, never more than the cap allows), so neither a
  lying length nor a gzip bomb gets past it.
* The Content-Type is recorded, never used to reject: many servers label images wrongly; the decoder decides.
* X-Robots-Tag ``noai``, ``noimageai``, ``noindex``, ``noimageindex`` and ``none`` refuse the image when
  they are unscoped or scoped to our token ``aligndata`` (``X-Robots-Tag: aligndata: noai``); directives
  scoped to other crawlers (``googlebot: noindex``) are ignored. Same rule as img2dataset. Only the final
  response's header counts, and it is read before the body, which is then not downloaded.
* Cookies are never stored or sent, and proxy/netrc environment settings are never read, so one site cannot
  influence requests to another and the address guard sees the real destination.
* The HTTP client is ``httpwire``, a thin layer of our own over the standard library (guarded connections,
  TLS, a light response-head parser, incremental decoding, a keep-alive pool), not urllib3's request layers
  nor requests: each had cost ~0.5 ms of CPU per fetch, half of what a fetch cost. What they did for us is
  still done: URLs are normalised the same way (urllib3's ``parse_url``: IDNA hosts, percent-encoding),
  ``user:pass@`` in a URL becomes a Basic ``Authorization`` header, and failures classify to the same details.
"""

from __future__ import annotations

import dataclasses
import email.utils
import http.client
import random
import re
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timezone
from urllib.parse import urljoin

import urllib3.exceptions as u3
from urllib3.util import parse_url

from aligndata import __version__
from aligndata.filters import reasons
from aligndata.fetch.wire import (
    SOCKET_OPTIONS,
    Connection,
    ConnectionPool,
    Decoder,
    Decoders,
    basic_auth_header,
    decoder_for,
    tls_context,
    tls_server_name,
)
from aligndata.fetch.options import (
    DEFAULT_FETCH_THREADS,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_MAX_PER_HOST,
    DEFAULT_RETRIES,
    DEFAULT_ROBOTS_TIMEOUT,
    DEFAULT_TIMEOUT,
)
from aligndata.fetch.guard import AddressPolicy, BlockedAddressError, check_hop, connect_guarded
from aligndata.fetch.politeness import HostThrottle, RobotsCache, host_of

USER_AGENT_TOKEN = "aligndata"
DEFAULT_USER_AGENT = f"{USER_AGENT_TOKEN}/{__version__}"
ROBOTS_DIRECTIVES = frozenset({"noai", "noimageai", "noindex", "noimageindex", "none"})
# Directives that carry their own "name: value" and so must not be read as a "botname:" scope.
_VALUED_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})
_BOT_TOKEN = re.compile(r"[a-z0-9_.\-]+")

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
BACKOFF_CAP = 8.0
CHUNK_SIZE = 64 * 1024
ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters a header value may not carry (CR/LF would inject headers); obs-text (0x80-0xff) is allowed.
_ILLEGAL_HEADER_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")


@dataclass
class FetchConfig:
    """Download limits and politeness settings (all per URL)."""

    timeout: float = DEFAULT_TIMEOUT  # connect timeout, and read timeout for each socket read
    total_timeout: float | None = None  # wall-clock cap per attempt; None means 2 * timeout + 5
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES  # cap on the decoded body
    retries: int = DEFAULT_RETRIES  # extra attempts after the first
    backoff: float = 0.5  # first retry wait in seconds, doubled each time, capped at BACKOFF_CAP
    max_retry_after: float = 30.0  # a longer Retry-After ends the retries
    allow_private_networks: bool = False  # True only for tests/trusted intranets: disables the address guard
    allowed_networks: tuple[str, ...] = ()  # CIDRs exempt from the guard, e.g. an internal mirror
    user_agent: str = DEFAULT_USER_AGENT
    contact: str | None = None  # URL or e-mail appended to the User-Agent so site owners can reach you
    max_redirects: int = 5
    respect_x_robots_tag: bool = True
    pool_maxsize: int = DEFAULT_FETCH_THREADS  # keep-alive connections per host: at least the fetch threads
    max_per_host: int = DEFAULT_MAX_PER_HOST  # concurrent requests to one host (per worker)
    host_min_interval: float = 0.0  # seconds between request starts to one host (per worker); 0 = no limit
    respect_robots_txt: bool = False  # fetch each host's /robots.txt once and obey it for our token
    robots_timeout: float = DEFAULT_ROBOTS_TIMEOUT

    @classmethod
    def from_options(cls, opts, max_bytes: int) -> "FetchConfig":
        """Settings from an object carrying the fetch options (fetch/options.py), e.g. a curate config."""
        kwargs = dict(
            timeout=opts.timeout,
            max_bytes=max_bytes,
            retries=opts.retries,
            allow_private_networks=opts.allow_private_networks,
            pool_maxsize=opts.fetch_threads,  # one pooled connection per thread, no "pool is full" churn
            max_per_host=opts.max_per_host,
            host_min_interval=1.0 / opts.host_rate if opts.host_rate else 0.0,
            respect_robots_txt=opts.respect_robots_txt,
            robots_timeout=opts.robots_timeout,
        )
        if opts.total_timeout is not None:
            kwargs["total_timeout"] = opts.total_timeout
        if opts.user_agent:
            kwargs["user_agent"] = opts.user_agent
        if opts.contact:
            kwargs["contact"] = opts.contact
        return cls(**kwargs)

    def __post_init__(self) -> None:
        positive = {"timeout": self.timeout, "max_bytes": self.max_bytes, "pool_maxsize": self.pool_maxsize,
                    "max_per_host": self.max_per_host, "robots_timeout": self.robots_timeout}
        if self.total_timeout is not None:
            positive["total_timeout"] = self.total_timeout
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"FetchConfig.{name} must be > 0, got {value!r}")
        non_negative = {
            "retries": self.retries,
            "backoff": self.backoff,
            "max_retry_after": self.max_retry_after,
            "max_redirects": self.max_redirects,
            "host_min_interval": self.host_min_interval,
        }
        for name, value in non_negative.items():
            if not value >= 0:
                raise ValueError(f"FetchConfig.{name} must be >= 0, got {value!r}")
        if not self.user_agent or not self.user_agent.strip():
            raise ValueError("FetchConfig.user_agent must not be empty")
        if _ILLEGAL_HEADER_VALUE.search(self.user_agent_header):
            raise ValueError("FetchConfig.user_agent and contact must be one line of Latin-1 text")
        self.allowed_networks = tuple(self.allowed_networks)
        AddressPolicy(allowed_networks=self.allowed_networks)  # raises ValueError on a malformed CIDR

    @property
    def attempt_timeout(self) -> float:
        """The wall-clock cap applied to each attempt."""
        return self.total_timeout if self.total_timeout is not None else 2 * self.timeout + 5

    @property
    def user_agent_header(self) -> str:
        """The User-Agent sent: ``user_agent`` with ``contact`` folded in as ``(+contact)``."""
        if self.contact and self.contact not in self.user_agent:
            return f"{self.user_agent} (+{self.contact})"
        return self.user_agent


@dataclass
class FetchResult:
    """The outcome of fetching one URL. ``data`` is set only when ``ok``; ``reason`` only when not."""

    url: str
    ok: bool
    data: bytes | None
    reason: str | None
    detail: str
    status: int | None  # last HTTP status received, None if no response came
    content_type: str | None  # media type of the final response, lowercased, parameters dropped
    final_url: str  # URL of the last request made (after redirects)
    attempts: int  # attempts made (1 + retries used); 0 when refused before any request
    elapsed: float = 0.0  # seconds spent in fetch(), waits between attempts included


# ---------------------------------------------------------------------------------------------------------
# Header parsing helpers (pure)


def x_robots_disallows(header_values: Iterable[str], token: str = USER_AGENT_TOKEN) -> str | None:
    """The first refusing directive in ``X-Robots-Tag`` header values that applies to ``token``, else None.

    Each header value may start with a ``botname:`` scope that covers the directives after it, until
    another scope; unscoped directives apply to every crawler.
    """
    token = token.lower()
    for value in header_values:
        scope: str | None = None
        for item in value.split(","):
            name, sep, rest = item.partition(":")
            name = name.strip().lower()
            if sep and name not in _VALUED_DIRECTIVES and _BOT_TOKEN.fullmatch(name):
                scope, item = name, rest
            directive = item.split(":", 1)[0].strip().lower()
            if directive in ROBOTS_DIRECTIVES and scope in (None, token):
                return directive
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delay-seconds or HTTP date); None if absent or invalid."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is not a delay
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def media_type(content_type: str | None) -> str | None:
    """``"Image/JPEG; charset=x"`` -> ``"image/jpeg"``; None when absent."""
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def is_retryable_status(status: int) -> bool:
    return status in (408, 429) or (500 <= status <= 599 and status != 501)


def backoff_delay(retry_number: int, backoff: float, rng: random.Random | None = None) -> float:
    """Wait before retry ``retry_number`` (1-based): exponential, capped, with the upper half jittered."""
    delay = min(BACKOFF_CAP, backoff * 2 ** (retry_number - 1))
    return delay / 2 + (rng or random).uniform(0, delay / 2)


# ---------------------------------------------------------------------------------------------------------
# Wall-clock cap: a per-attempt deadline and one watchdog thread per Fetcher


def _shutdown(sock: socket.socket) -> None:
    # The base-class shutdown acts on the file descriptor without touching an SSLSocket's TLS state, which
    # another thread is using; a blocked recv() then returns at once.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _Attempt:
    """One attempt's deadline and the sockets it reads from; the watchdog calls ``expire`` at the deadline.

    A finished attempt ignores its deadline. Its keep-alive connection goes back to the pool only after
    ``finish``, so an expiry can never shut down a connection another thread has taken meanwhile.
    """

    __slots__ = ("deadline", "expired", "_done", "_sockets", "_lock")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.expired = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def add_socket(self, sock: socket.socket) -> None:
        with self._lock:
            if self._done:
                return
            if self.expired:
                _shutdown(sock)
            else:
                self._sockets.append(sock)

    def expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._sockets.clear()


class _Watchdog:
    """Expires attempts at their deadlines. The thread starts on demand and exits after a minute without attempts.

    Every attempt gets the same ``timeout``, so deadlines come in start order: the running attempts are kept in
    a dict (insertion order is deadline order, finished ones leave it at once) and the thread sleeps until the
    first one's deadline, or for one ``timeout`` when none runs (an attempt started later ends later). Nothing
    has to wake it, so starting an attempt costs a lock and no thread switch.
    """

    IDLE_EXIT_SECONDS = 60.0

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._cond = threading.Condition()
        self._running: dict[_Attempt, None] = {}
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._last_start = 0.0

    def start(self) -> _Attempt:
        """A new attempt, expired at ``timeout`` from now unless finished before."""
        with self._cond:
            now = time.monotonic()
            attempt = _Attempt(now + self.timeout)  # made under the lock: dict order stays deadline order
            if not self._stopped:
                self._running[attempt] = None
                self._last_start = now
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="aligndata-fetch-watchdog", daemon=True)
                    self._thread.start()
        return attempt

    def finish(self, attempt: _Attempt) -> None:
        attempt.finish()
        with self._cond:
            self._running.pop(attempt, None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            thread = self._thread
            self._cond.notify()
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                self._expire_due(now)
                if self._running:
                    wait = next(iter(self._running)).deadline - now
                elif now - self._last_start > self.IDLE_EXIT_SECONDS:
                    break  # idle: start() starts a new thread when needed
                else:
                    wait = self.timeout
                self._cond.wait(wait)
            self._thread = None

    def _expire_due(self, now: float) -> None:
        while self._running:
            first = next(iter(self._running))
            if first.deadline > now:
                return
            del self._running[first]
            first.expire()


# ---------------------------------------------------------------------------------------------------------
# Failure classification


class _Failure(Exception):
    """Internal: ends an attempt with a classified failure."""

    def __init__(self, reason: str, detail: str, retry: bool = False, retry_after: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.retry, self.retry_after = reason, detail, retry, retry_after


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps (causes, contexts, urllib3 ``reason``s, exception args)."""
    seen: list[BaseException] = []
    stack: list[object] = [exc]
    while stack and len(seen) < 32:
        item = stack.pop()
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        # urllib3 keeps wrapped errors in ``reason`` (MaxRetryError) or ``_reason`` (NameResolutionError).
        wrapped = (getattr(item, "reason", None), getattr(item, "_reason", None))
        stack.extend((item.__cause__, item.__context__, *wrapped, *item.args))
    return seen


# urllib3 and stdlib types only: the fetcher's client raises stdlib errors (socket, ssl, http.client) and, from
# netguard.connect_guarded, urllib3's connection errors; requests' own exceptions wrap these (their chain is
# searched), so an exception from a urllib3 pool or a requests session classifies the same way.
_READ_TIMEOUTS = (u3.ReadTimeoutError, TimeoutError)
_TLS_ERRORS = (ssl.SSLError, u3.SSLError)
_DECODE_ERRORS = (u3.DecodeError,)
_URL_ERRORS = (u3.LocationValueError,)
_CONNECTION_ERRORS = (OSError, u3.ProtocolError, u3.HTTPError, http.client.HTTPException)


def classify_exception(exc: BaseException, during_body: bool = False) -> tuple[str, str, bool]:
    """``(reason, detail, retryable)`` for an exception raised while fetching (by our client, urllib3 or requests)."""
    chain = _exception_chain(exc)

    def find(types: type | tuple[type, ...]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, types)), None)

    blocked = find(BlockedAddressError)
    if isinstance(blocked, BlockedAddressError):
        return reasons.BLOCKED_ADDRESS, f"blocked:{blocked.ip}", False
    if find(u3.NameResolutionError) is not None or find(socket.gaierror) is not None:
        gai = find(socket.gaierror)
        return reasons.DOWNLOAD_FAILED, "dns", getattr(gai, "errno", None) == socket.EAI_AGAIN
    # urllib3's NewConnectionError subclasses ConnectTimeoutError for history's sake: it is not a timeout.
    if any(isinstance(e, u3.ConnectTimeoutError) and not isinstance(e, u3.NewConnectionError) for e in chain):
        return reasons.DOWNLOAD_FAILED, "connect_timeout", True
    if find(_READ_TIMEOUTS) is not None:
        return reasons.DOWNLOAD_FAILED, "timeout", True
    if find(_TLS_ERRORS) is not None:
        return reasons.DOWNLOAD_FAILED, "ssl", False
    if find(_DECODE_ERRORS) is not None:
        return reasons.DOWNLOAD_FAILED, "bad_encoding", False
    if find(_URL_ERRORS) is not None:
        return reasons.DOWNLOAD_FAILED, "invalid_url", False
    if find(_CONNECTION_ERRORS) is not None:
        return reasons.DOWNLOAD_FAILED, "incomplete_body" if during_body else "connect", True
    return reasons.DOWNLOAD_FAILED, f"error:{type(exc).__name__}", False


# ---------------------------------------------------------------------------------------------------------
# The fetcher


class Fetcher:
    """Thread-safe downloader: one pool of guarded keep-alive connections shared by all threads calling
    :meth:`fetch`."""

    def __init__(self, config: FetchConfig | None = None):
        self.config = config or FetchConfig()
        self._watchdog = _Watchdog(self.config.attempt_timeout)
        self._closed = threading.Event()
        self._policy = AddressPolicy(self.config.allow_private_networks, self.config.allowed_networks)
        self._tls = tls_context()
        self._pool = ConnectionPool(self.config.pool_maxsize)
        # Every request's headers after Host, encoded once (no cookies, no proxy headers, ever).
        self._headers = (
            f"User-Agent: {self.config.user_agent_header}\r\nAccept-Encoding: gzip, deflate\r\n"
            f"Accept: {ACCEPT}\r\nConnection: keep-alive\r\n"
        ).encode("latin-1")
        self.throttle = HostThrottle(self.config.max_per_host, self.config.host_min_interval)
        self._robots_fetcher = None
        self.robots = None
        if self.config.respect_robots_txt:
            self._robots_fetcher = Fetcher(dataclasses.replace(
                self.config, timeout=self.config.robots_timeout, total_timeout=2 * self.config.robots_timeout,
                max_bytes=RobotsCache.MAX_BYTES, retries=0, respect_x_robots_tag=False, respect_robots_txt=False,
            ))
            self.robots = RobotsCache(self._robots_text, USER_AGENT_TOKEN)

    def _robots_text(self, url: str) -> tuple[int | None, str | None]:
        result = self._robots_fetcher.fetch(url)
        return result.status, result.data.decode("utf-8", errors="replace") if result.ok else None

    def close(self) -> None:
        """Release connections and stop the watchdog thread. Idempotent."""
        if self._closed.is_set():
            return
        if self._robots_fetcher is not None:
            self._robots_fetcher.close()
        self._closed.set()
        self._pool.close()
        self._watchdog.stop()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------

    def fetch(self, url: str) -> FetchResult:
        """Download ``url``. Never raises for network or HTTP problems: failures come back classified."""
        if self._closed.is_set():
            raise RuntimeError("Fetcher.fetch() called after close()")
        started = time.monotonic()
        refusal = check_hop(url, self._policy)
        if refusal is not None:
            reason, detail = refusal
            return FetchResult(url, False, None, reason, detail, None, None, url, 0, time.monotonic() - started)
        if self.robots is not None and not self.robots.allowed(url):
            return FetchResult(url, False, None, reasons.ROBOTS_DISALLOWED, "robots.txt", None, None, url, 0,
                               time.monotonic() - started)
        host = host_of(url)
        attempts = 0
        while True:
            attempts += 1
            with self.throttle.slot(host):
                result, failure = self._attempt(url)
            self.throttle.observe(host, result.status, failure.retry_after if failure else None)
            result.attempts = attempts
            result.elapsed = time.monotonic() - started
            if failure is None or not failure.retry or attempts > self.config.retries:
                return result
            delay = backoff_delay(attempts, self.config.backoff)
            if failure.retry_after is not None:
                if failure.retry_after > self.config.max_retry_after:
                    return result
                delay = max(delay, failure.retry_after)
            if self._closed.wait(delay):
                return result

    def _attempt(self, url: str) -> tuple[FetchResult, _Failure | None]:
        """One attempt under the wall-clock cap; returns the result and, on failure, its classification."""
        attempt = self._watchdog.start()
        state = _State(url)
        try:
            data = self._follow(state, attempt)
            result = FetchResult(url, True, data, None, "", state.status, state.content_type, state.current, 0)
            return result, None
        except _Failure as failure:
            return self._failed(state, failure), failure
        except Exception as exc:  # noqa: BLE001 - fetch() must classify everything, never raise
            reason, detail, retry = classify_exception(exc, during_body=state.in_body)
            if attempt.expired:
                reason, detail, retry = reasons.DOWNLOAD_FAILED, "total_timeout", False
            failure = _Failure(reason, detail, retry)
            return self._failed(state, failure), failure
        finally:
            self._watchdog.finish(attempt)
            if state.idle is not None:
                self._release(state.idle, attempt)

    @staticmethod
    def _failed(state: _State, failure: _Failure) -> FetchResult:
        return FetchResult(
            state.url, False, None, failure.reason, failure.detail, state.status, state.content_type,
            state.current, 0,
        )

    def _release(self, conn: Connection, attempt: _Attempt) -> None:
        # After finish(): the watchdog can no longer shut this socket down under the next thread to take it.
        if attempt.expired:
            conn.close()  # already shut down
        else:
            self._pool.give(conn)

    def _follow(self, state: _State, attempt: _Attempt) -> bytes:
        """Request ``state.current``, following redirects by hand so every hop passes the guard."""
        cfg = self.config
        visited = {state.current}
        hops = 0
        while True:
            key, request = self._prepare(state.current)
            conn, response = self._exchange(key, request, attempt)
            try:
                state.status = response.status
                if response.status not in REDIRECT_STATUSES:
                    state.content_type = media_type(response.headers.get("Content-Type"))
                    data = self._read_body(response, state, attempt)
                    if not response.will_close:
                        state.idle, conn = conn, None  # read to its end: pooled once the attempt is over
                    return data
                target = self._redirect_target(response, state.current)
            finally:
                if conn is not None:
                    conn.close()  # a body left unread (a redirect, an error status, a failure) ends its connection
            hops += 1
            if target in visited:
                raise _Failure(reasons.DOWNLOAD_FAILED, "redirect_loop")
            if hops > cfg.max_redirects:
                raise _Failure(reasons.DOWNLOAD_FAILED, "too_many_redirects")
            refusal = check_hop(target, self._policy)
            if refusal is not None:
                raise _Failure(*refusal)
            visited.add(target)
            state.current = target

    def _prepare(self, url: str) -> tuple[tuple[str, str, int], bytes]:
        """The connection key ``(scheme, host, port)`` and the bytes of a GET for ``url``."""
        parsed = parse_url(url.strip())  # LocationParseError (invalid_url) for what cannot be parsed
        host, scheme = parsed.host, parsed.scheme or "http"
        if not host or host.startswith(("*", ".")):
            raise _Failure(reasons.DOWNLOAD_FAILED, "invalid_url")  # requests' "invalid label" refusal
        default_port = DEFAULT_PORTS.get(scheme)
        target = parsed.request_uri
        if default_port is None or not (target.isascii() and target.isprintable()) or " " in target:
            raise _Failure(reasons.DOWNLOAD_FAILED, "invalid_url")  # parse_url percent-encodes all but these
        port = parsed.port or default_port
        name = host.rstrip(".")  # Host header and TLS name without the root dot, as urllib3 sent them
        authority = name if port == default_port else f"{name}:{port}"
        request = f"GET {target} HTTP/1.1\r\nHost: {authority}\r\n".encode("ascii") + self._headers
        authorization = basic_auth_header(parsed.auth)
        if authorization is not None:
            request += f"Authorization: {authorization}\r\n".encode("ascii")
        return (scheme, host, port), request + b"\r\n"

    def _exchange(
        self, key: tuple[str, str, int], request: bytes, attempt: _Attempt
    ) -> tuple[Connection, http.client.HTTPResponse]:
        """Send ``request`` on an idle pooled connection or a new one and read the response head. A pooled
        connection the server closed as we took it is replaced once, at no retry's cost (a GET is safe to resend)."""
        conn = self._pool.take(key)
        if conn is not None:
            attempt.add_socket(conn.sock)
            try:
                return conn, conn.exchange(request)
            except ConnectionError:  # incl. http.client.RemoteDisconnected: closed without an answer
                conn.close()
                if attempt.expired:
                    raise
            except BaseException:
                conn.close()
                raise
        conn = self._open(key, attempt)
        try:
            return conn, conn.exchange(request)
        except BaseException:
            conn.close()
            raise

    def _open(self, key: tuple[str, str, int], attempt: _Attempt) -> Connection:
        """A new connection through the address guard, TLS-wrapped for https, watched before its first read."""
        scheme, host, port = key
        sock = connect_guarded(self._policy, host, port, self.config.timeout, socket_options=SOCKET_OPTIONS)
        self._pool.count_opened()
        if scheme == "https":
            try:
                sock = self._tls.wrap_socket(
                    sock, server_hostname=tls_server_name(host), do_handshake_on_connect=False
                )
                attempt.add_socket(sock)  # before the handshake, so that the cap covers it too
                sock.do_handshake()
            except BaseException:
                sock.close()
                raise
        else:
            attempt.add_socket(sock)
        return Connection(key, sock)

    @staticmethod
    def _redirect_target(response: http.client.HTTPResponse, current: str) -> str:
        location = response.headers.get("Location")
        if not location or not location.strip():
            raise _Failure(reasons.DOWNLOAD_FAILED, "redirect_without_location")
        return urljoin(current, location.strip())

    def _read_body(self, response: http.client.HTTPResponse, state: _State, attempt: _Attempt) -> bytes:
        cfg = self.config
        status = response.status
        headers = response.headers
        if not 200 <= status < 300:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            raise _Failure(reasons.DOWNLOAD_FAILED, f"http_{status}", is_retryable_status(status), retry_after)
        if cfg.respect_x_robots_tag:
            directive = x_robots_disallows(headers.get_all("X-Robots-Tag") or ())
            if directive is not None:
                raise _Failure(reasons.ROBOTS_DISALLOWED, f"x-robots-tag:{directive}")
        declared = headers.get("Content-Length", "")
        if declared.strip().isdigit() and int(declared) > cfg.max_bytes:
            raise _Failure(reasons.DOWNLOAD_FAILED, "too_large")
        state.in_body = True
        decoder = decoder_for(headers.get("Content-Encoding"))
        if decoder is None and response.length is not None and response.length <= cfg.max_bytes:
            body = response.read()  # exactly Content-Length bytes in one call; IncompleteRead when cut short
        else:
            body = self._stream(response, decoder, attempt)
        if attempt.expired:
            # The watchdog's shutdown looks like a clean end of a body that has no length: not a success.
            raise _Failure(reasons.DOWNLOAD_FAILED, "total_timeout")
        if not body:
            raise _Failure(reasons.DOWNLOAD_FAILED, "empty_body")
        return body

    def _stream(self, response: http.client.HTTPResponse, decoder: Decoder | Decoders | None,
                attempt: _Attempt) -> bytes:
        """A body of unknown or encoded length, read chunk by chunk and decoded as it comes: it stops as soon as
        it passes the cap (the decoder never yields more than one byte past it) or the deadline."""
        cap = self.config.max_bytes
        body = bytearray()
        while True:
            chunk = response.read(CHUNK_SIZE)
            try:
                body += chunk if decoder is None else decoder.decode(chunk, cap + 1 - len(body))
            except zlib.error:
                raise _Failure(reasons.DOWNLOAD_FAILED, "bad_encoding") from None
            if len(body) > cap:
                raise _Failure(reasons.DOWNLOAD_FAILED, "too_large")
            if not chunk:
                if response.length:  # the connection ended before Content-Length bytes came
                    raise http.client.IncompleteRead(b"", response.length)
                return bytes(body)
            if attempt.expired or time.monotonic() > attempt.deadline:
                raise _Failure(reasons.DOWNLOAD_FAILED, "total_timeout")


@dataclass
class _State:
    """What one attempt has learnt so far (kept for the result even when the attempt fails)."""

    url: str
    current: str = ""
    status: int | None = None
    content_type: str | None = None
    in_body: bool = False
    idle: Connection | None = None  # the final response's connection, to pool once the attempt is over

    def __post_init__(self) -> None:
        self.current = self.current or self.url
