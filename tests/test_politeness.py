"""Per-host limits, adaptive backoff, robots.txt and the resolver cache, against a real local server."""

from __future__ import annotations

import threading
import time

import pytest
from httpserver import LocalServer

from aligndata.filters import reasons
from aligndata.fetch.client import FetchConfig, Fetcher
from aligndata.fetch.guard import CachedResolver
from aligndata.fetch.politeness import HostThrottle, RobotsCache


def test_throttle_caps_concurrency_per_host():
    throttle = HostThrottle(max_per_host=2)

    def work(host):
        with throttle.slot(host):
            time.sleep(0.05)

    threads = [threading.Thread(target=work, args=(h,)) for h in ["a"] * 8 + ["b"] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert throttle.peak_in_flight == {"a": 2, "b": 2}


def test_throttle_spaces_request_starts():
    throttle = HostThrottle(max_per_host=8, min_interval=0.05)
    starts = []
    lock = threading.Lock()

    def work():
        with throttle.slot("h"):
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts.sort()
    assert all(b - a >= 0.045 for a, b in zip(starts, starts[1:]))  # a lower bound only: never flaky when slow


def test_throttle_backs_off_on_429_and_recovers():
    throttle = HostThrottle(max_backoff=10)
    assert throttle.interval("h") == 0
    throttle.observe("h", 429)
    assert throttle.interval("h") == 1.0
    throttle.observe("h", 503, retry_after=4)
    assert throttle.interval("h") == 4.0
    throttle.observe("h", 429)
    throttle.observe("h", 429)
    assert throttle.interval("h") == 10  # capped
    for _ in range(10):
        throttle.observe("h", 200)
    assert throttle.interval("h") == 0
    assert throttle.interval("other") == 0


def test_robots_cache_follows_rfc9309():
    answers = {
        "http://ok/robots.txt": (200, "User-agent: aligndata\nDisallow: /private/\n\nUser-agent: *\nDisallow: /\n"),
        "http://none/robots.txt": (404, None),
        "http://down/robots.txt": (503, None),
        "http://gone/robots.txt": (None, None),
    }
    calls = []

    def fetch_text(url):
        calls.append(url)
        return answers[url]

    robots = RobotsCache(fetch_text, "aligndata")
    assert robots.allowed("http://ok/public/a.jpg")
    assert not robots.allowed("http://ok/private/a.jpg")
    assert robots.allowed("http://none/anything.jpg")
    assert not robots.allowed("http://down/anything.jpg")
    assert not robots.allowed("http://gone/anything.jpg")
    assert calls.count("http://ok/robots.txt") == 1


@pytest.fixture(scope="module")
def polite_server():
    with LocalServer() as server:
        server.add("/robots.txt", b"User-agent: aligndata\nDisallow: /private/\n", content_type="text/plain")
        yield server


def test_fetcher_obeys_robots_txt_and_fetches_it_once(polite_server):
    config = FetchConfig(allow_private_networks=True, respect_robots_txt=True, timeout=5)
    with Fetcher(config) as fetcher:
        polite_server.add_image("/private/a.jpg", 300, 300)
        polite_server.add_image("/public/a.jpg", 300, 300)
        refused = fetcher.fetch(polite_server.url("/private/a.jpg"))
        assert (refused.reason, refused.detail) == (reasons.ROBOTS_DISALLOWED, "robots.txt")
        for _ in range(3):
            assert fetcher.fetch(polite_server.url("/public/a.jpg")).ok
    assert polite_server.hits("/private/a.jpg") == 0
    assert polite_server.hits("/robots.txt") == 1


def test_fetcher_without_the_option_ignores_robots_txt(polite_server):
    polite_server.add_image("/private/b.jpg", 300, 300)
    with Fetcher(FetchConfig(allow_private_networks=True, timeout=5)) as fetcher:
        assert fetcher.fetch(polite_server.url("/private/b.jpg")).ok


def test_a_429_slows_the_host_down_for_the_next_requests(polite_server):
    with Fetcher(FetchConfig(allow_private_networks=True, timeout=5, retries=1)) as fetcher:
        result = fetcher.fetch(polite_server.url("/ratelimited/polite?after=1"))
        assert result.ok and result.attempts == 2
        host = f"127.0.0.1:{polite_server.port}"
        assert 0 < fetcher.throttle.interval(host) <= 1.0  # penalised to Retry-After, halved by the success


def test_resolver_caches_lookups(polite_server):
    resolver = CachedResolver()
    infos = [resolver.getaddrinfo("localhost", polite_server.port, 0, 1) for _ in range(5)]
    assert resolver.lookups == 1 and all(i == infos[0] for i in infos)
    # A failure that needs no DNS server (an unknown service name), so no query leaves this machine.
    for _ in range(2):
        with pytest.raises(OSError):
            resolver.getaddrinfo("localhost", "no-such-service", 0, 1)
    assert resolver.lookups == 2  # the failure is cached too
