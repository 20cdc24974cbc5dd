"""Being a good citizen on other people's servers: per-host limits, adaptive backoff and robots.txt.

One ``HostThrottle`` is shared by the fetch threads of a worker:

* at most ``max_per_host`` requests to one host are in flight at once;
* consecutive requests to one host start at least ``min_interval`` seconds apart (``--host-rate`` = 1/interval);
* a host that answers 429 or 503 is slowed down: its interval doubles (at least 1 s, or its Retry-After, capped
  at ``max_backoff``) and halves again with each success, so a struggling host recovers gradually.

``RobotsCache`` fetches ``/robots.txt`` once per host (through the same guarded fetcher, with its own timeout and
byte cap) and answers whether our token may fetch a URL, following RFC 9309: a 4xx robots.txt allows
everything, an unreachable one (5xx, network failure) disallows everything for that host.
"""

from __future__ import annotations

import threading
import time
import urllib.robotparser
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from aligndata.fetch.options import DEFAULT_MAX_PER_HOST

SLOW_DOWN_STATUSES = frozenset({429, 503})
MIN_PENALTY_S = 1.0


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return (parts.hostname or "").lower() + (f":{parts.port}" if parts.port else "")


class HostThrottle:
    def __init__(self, max_per_host: int = DEFAULT_MAX_PER_HOST, min_interval: float = 0.0, max_backoff: float = 60.0):
        if max_per_host < 1:
            raise ValueError(f"max_per_host must be >= 1, got {max_per_host}")
        if min_interval < 0 or max_backoff < 0:
            raise ValueError("min_interval and max_backoff must be >= 0")
        self.max_per_host = max_per_host
        self.min_interval = min_interval
        self.max_backoff = max_backoff
        self._lock = threading.Lock()
        self._slots: dict[str, threading.Semaphore] = {}
        self._next_start: dict[str, float] = {}
        self._penalty: dict[str, float] = {}
        self.peak_in_flight: dict[str, int] = {}  # observability (and tests)
        self._in_flight: dict[str, int] = {}

    def interval(self, host: str) -> float:
        return max(self.min_interval, self._penalty.get(host, 0.0))

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        """Hold one of the host's concurrent slots, starting no earlier than its interval allows."""
        semaphore = self._slots.get(host)
        if semaphore is None:
            with self._lock:
                semaphore = self._slots.setdefault(host, threading.BoundedSemaphore(self.max_per_host))
        semaphore.acquire()
        try:
            with self._lock:  # reserve a start time, then sleep outside the lock
                now = time.monotonic()
                start = max(now, self._next_start.get(host, 0.0))
                self._next_start[host] = start + self.interval(host)
                self._in_flight[host] = self._in_flight.get(host, 0) + 1
                self.peak_in_flight[host] = max(self.peak_in_flight.get(host, 0), self._in_flight[host])
            if start > now:
                time.sleep(start - now)
            yield
        finally:
            with self._lock:
                self._in_flight[host] -= 1
            semaphore.release()

    def observe(self, host: str, status: int | None, retry_after: float | None = None) -> None:
        """Adapt the host's pace to its answer: slow down on 429/503, speed back up on success."""
        with self._lock:
            current = self._penalty.get(host, 0.0)
            if status in SLOW_DOWN_STATUSES:
                wanted = max(current * 2, MIN_PENALTY_S, retry_after or 0.0)
                self._penalty[host] = min(wanted, self.max_backoff)
            elif status is not None and 200 <= status < 400 and current:
                halved = current / 2
                if halved < 0.05:
                    self._penalty.pop(host, None)
                else:
                    self._penalty[host] = halved


class RobotsCache:
    """robots.txt per host, fetched once (concurrent askers wait for the first fetch) and kept for the run."""

    MAX_BYTES = 512 * 1024  # RFC 9309 asks crawlers to parse at least 500 KiB

    def __init__(self, fetch_text, user_agent_token: str):
        """``fetch_text(url) -> (status or None, text or None)``: the caller's guarded, capped download."""
        self._fetch_text = fetch_text
        self.token = user_agent_token
        self._lock = threading.Lock()
        self._parsers: dict[str, urllib.robotparser.RobotFileParser | bool] = {}
        self._pending: dict[str, threading.Event] = {}

    def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            rules = self._parsers.get(origin)
            event = self._pending.get(origin) if rules is None else None
            first = rules is None and event is None
            if first:
                event = self._pending[origin] = threading.Event()
        if first:
            rules = self._load(origin)
            with self._lock:
                self._parsers[origin] = rules
                del self._pending[origin]
            event.set()
        elif rules is None:
            event.wait()
            with self._lock:
                rules = self._parsers[origin]
        if isinstance(rules, bool):
            return rules
        return rules.can_fetch(self.token, url)

    def _load(self, origin: str) -> urllib.robotparser.RobotFileParser | bool:
        status, text = self._fetch_text(f"{origin}/robots.txt")
        if status is not None and 400 <= status < 500:
            return True  # no robots.txt: everything allowed
        if status is None or not 200 <= status < 300 or text is None:
            return False  # unreachable: RFC 9309 says assume complete disallow
        parser = urllib.robotparser.RobotFileParser()
        parser.parse(text.splitlines())
        return parser
