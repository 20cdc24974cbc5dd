"""Fetcher against the hostile local server: caps, timeouts, retries, redirects, robots, the guard.

No timing upper bounds anywhere: each hostile endpoint would *succeed* if its cap did not fire (the drip
and slow-header endpoints end by themselves after 30 s), so asserting the classified detail proves the cap.
"""

from __future__ import annotations

import errno
import io
import socket
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagehash
import pytest
import urllib3.exceptions as u3
from httpserver import LocalServer, make_image_bytes, make_tls_files
from PIL import Image

from aligndata import __version__
from aligndata.filters import reasons
from aligndata.fetch import client as fetch
from aligndata.fetch.client import (
    BACKOFF_CAP,
    DEFAULT_USER_AGENT,
    FetchConfig,
    Fetcher,
    backoff_delay,
    classify_exception,
    is_retryable_status,
    media_type,
    parse_retry_after,
    x_robots_disallows,
)
from aligndata.fetch.guard import BlockedAddressError


def local_config(**overrides: object) -> FetchConfig:
    """Short timeouts and backoff so retries stay quick; the server is on loopback."""
    values: dict[object, object] = dict(allow_private_networks=True, timeout=5.0, backoff=0.05, retries=2)
    values.update(overrides)
    return FetchConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    with Fetcher(local_config()) as f:
        yield f


def unique(prefix: str) -> str:
    """A path no other test has hit (the server is shared by the whole session)."""
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------------------------------------
# The test server itself (shared by everyone's tests)


def test_make_image_bytes_is_a_real_image_and_seeds_differ() -> None:
    a = make_image_bytes(320, 240, seed=1)
    b = make_image_bytes(320, 240, seed=2)
    assert a == make_image_bytes(320, 240, seed=1)  # deterministic
    with Image.open(io.BytesIO(a)) as im_a, Image.open(io.BytesIO(b)) as im_b:
        assert im_a.format == "JPEG" and im_a.size == (320, 240) and im_a.mode == "RGB"
        assert imagehash.phash(im_a) - imagehash.phash(im_b) > 10
    with Image.open(io.BytesIO(make_image_bytes(50, 60, fmt="PNG", mode="L"))) as png:
        assert (png.format, png.mode, png.size) == ("PNG", "L", (50, 60))


def test_server_registers_counts_and_refuses_non_loopback(http_server: LocalServer) -> None:
    path = unique("/srv")
    body = http_server.add_image(path, 210, 90, fmt="PNG")
    with Image.open(io.BytesIO(body)) as im:
        assert im.size == (210, 90)
    assert http_server.hits(path) == 0
    with Fetcher(local_config()) as f:
        assert f.fetch(http_server.url(path)).data == body
        f.fetch(http_server.url(path + "?v=2"))
    assert http_server.hits(path) == 2
    assert http_server.hits(path + "?v=2") == 1
    assert http_server.hits(http_server.url(path + "?v=2")) == 1
    with pytest.raises(ValueError, match="loopback"):
        LocalServer(host="0.0.0.0")


# --------------------------------------------------------------------------------------------------------
# Success paths


def test_fetches_an_image_with_metadata(fetcher: Fetcher, http_server: LocalServer) -> None:
    path = unique("/ok") + ".jpg"
    body = http_server.add_image(path, 400, 300)
    result = fetcher.fetch(http_server.url(path))
    assert result.ok and result.reason is None and result.detail == ""
    assert result.data == body
    assert result.status == 200
    assert result.content_type == "image/jpeg"
    assert result.final_url == http_server.url(path)
    assert result.attempts == 1
    headers = http_server.last_headers(path)
    assert headers["user-agent"] == f"aligndata/{__version__}"
    assert headers["accept-encoding"] == "gzip, deflate"


def test_user_agent_carries_the_contact(http_server: LocalServer) -> None:
    path = unique("/ua")
    http_server.add_image(path, 50, 50)
    with Fetcher(local_config(contact="mailto:data@example.org")) as f:
        assert f.fetch(http_server.url(path)).ok
    assert http_server.last_headers(path)["user-agent"] == f"{DEFAULT_USER_AGENT} (+mailto:data@example.org)"


def test_generated_image_route(fetcher: Fetcher, http_server: LocalServer) -> None:
    result = fetcher.fetch(http_server.url("/image/640x480.webp"))
    assert result.ok and result.content_type == "image/webp"
    with Image.open(io.BytesIO(result.data)) as im:
        assert im.size == (640, 480)


def test_wrong_content_type_is_recorded_not_rejected(fetcher: Fetcher, http_server: LocalServer) -> None:
    result = fetcher.fetch(http_server.url("/wrong-type.jpg"))
    assert result.ok and result.content_type == "text/html"
    with Image.open(io.BytesIO(result.data)) as im:
        assert im.format == "JPEG"
    page = fetcher.fetch(http_server.url("/page.html"))
    assert page.ok and page.content_type == "text/html" and page.data.startswith(b"<!doctype html>")


def test_truncated_image_is_downloaded_for_the_decoder_to_judge(fetcher: Fetcher, http_server: LocalServer) -> None:
    result = fetcher.fetch(http_server.url("/truncated.jpg"))
    assert result.ok and result.data.startswith(b"\xff\xd8")  # a JPEG start
    assert not result.data.endswith(b"\xff\xd9")  # no end-of-image marker


def test_gzip_encoded_image_is_decoded(fetcher: Fetcher, http_server: LocalServer) -> None:
    result = fetcher.fetch(http_server.url("/gzip-image.jpg"))
    assert result.ok
    with Image.open(io.BytesIO(result.data)) as im:
        assert im.size == (320, 240)


def test_undecodable_content_encoding(fetcher: Fetcher, http_server: LocalServer) -> None:
    path = unique("/bad-gzip")
    http_server.add(path, b"this is not gzip", headers={"Content-Encoding": "gzip"})
    result = fetcher.fetch(http_server.url(path))
    assert (result.ok, result.detail, result.attempts) == (False, "bad_encoding", 1)


def test_cookies_are_never_sent_back(fetcher: Fetcher, http_server: LocalServer) -> None:
    path = unique("/cookie")
    http_server.add(path, b"img", headers={"Set-Cookie": "tracker=1; Path=/"})
    assert fetcher.fetch(http_server.url(path)).ok
    assert fetcher.fetch(http_server.url(path)).ok
    assert "cookie" not in http_server.last_headers(path)


def test_many_threads_share_one_fetcher(http_server: LocalServer) -> None:
    paths = [unique("/concurrent") + ".jpg" for _ in range(48)]
    bodies = {path: http_server.add_image(path, 64, 64) for path in paths}
    with Fetcher(local_config(pool_maxsize=16)) as f, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda p: f.fetch(http_server.url(p)), paths))
    assert all(r.ok for r in results)
    assert [r.data for r in results] == [bodies[p] for p in paths]
    assert all(http_server.hits(p) == 1 for p in paths)


# --------------------------------------------------------------------------------------------------------
# Byte cap


def test_byte_cap_boundary(http_server: LocalServer) -> None:
    path = unique("/exact")
    http_server.add(path, b"x" * 1000)
    with Fetcher(local_config(max_bytes=1000)) as f:
        assert f.fetch(http_server.url(path)).ok
    with Fetcher(local_config(max_bytes=999)) as f:
        result = f.fetch(http_server.url(path))
    assert (result.ok, result.reason, result.detail) == (False, reasons.DOWNLOAD_FAILED, "too_large")
    assert result.attempts == 1  # not retried


def test_endless_body_stops_at_the_cap(fetcher: Fetcher, http_server: LocalServer) -> None:
    with Fetcher(local_config(max_bytes=1_000_000)) as f:
        result = f.fetch(http_server.url("/endless"))
    assert (result.ok, result.detail, result.status, result.attempts) == (False, "too_large", 200, 1)


def test_gzip_bomb_stops_at_the_decoded_cap(http_server: LocalServer) -> None:
    # 100 MB of zeros in ~100 KB of gzip; the cap is on decoded bytes and decoding is incremental.
    max_bytes = 2_000_000
    with Fetcher(local_config(max_bytes=max_bytes)) as f:
        f.fetch(http_server.url("/gzip-bomb"))  # the server builds the bomb once: keep that out of the peak
        tracemalloc.start()
        try:
            result = f.fetch(http_server.url("/gzip-bomb"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert (result.ok, result.detail) == (False, "too_large")
    assert peak < 10 * max_bytes  # nowhere near the 100 MB a full decode would need


def test_lying_content_length(fetcher: Fetcher, http_server: LocalServer) -> None:
    short = fetcher.fetch(http_server.url("/lying-length/short"))
    assert short.ok and len(short.data) == 100  # HTTP framing wins: the decoder will reject it later
    long = fetcher.fetch(http_server.url("/lying-length/long"))
    assert (long.ok, long.detail) == (False, "incomplete_body")
    assert long.attempts == 3  # a body cut short is retried


def test_declared_length_over_the_cap_is_refused_before_reading(http_server: LocalServer) -> None:
    path = unique("/declared")
    http_server.add(path, b"y" * 50_000)
    with Fetcher(local_config(max_bytes=10_000)) as f:
        result = f.fetch(http_server.url(path))
    assert (result.ok, result.detail, result.content_type) == (False, "too_large", "image/jpeg")


# --------------------------------------------------------------------------------------------------------
# Time caps


def test_drip_ends_at_the_total_timeout(http_server: LocalServer) -> None:
    # One byte every 0.5 s never trips the 5 s read timeout; only the wall-clock cap ends it.
    with Fetcher(local_config(timeout=5.0, total_timeout=1.5)) as f:
        result = f.fetch(http_server.url("/drip"))
    assert (result.ok, result.detail, result.status) == (False, "total_timeout", 200)
    assert result.attempts == 1  # not retried: the next attempt would drip too
    assert result.elapsed >= 1.5


def test_slow_headers_end_at_the_total_timeout(http_server: LocalServer) -> None:
    with Fetcher(local_config(timeout=5.0, total_timeout=1.5)) as f:
        result = f.fetch(http_server.url("/slow-headers"))
    assert (result.ok, result.detail, result.attempts) == (False, "total_timeout", 1)
    assert result.elapsed >= 1.5


def test_read_timeout_is_classified_and_retried(http_server: LocalServer) -> None:
    path = unique("/sleep/2")
    with Fetcher(local_config(timeout=0.5, retries=1)) as f:
        result = f.fetch(http_server.url(path))
    assert (result.ok, result.detail, result.status, result.attempts) == (False, "timeout", None, 2)
    assert http_server.hits(path) == 2


def test_total_timeout_defaults_to_twice_the_timeout_plus_five() -> None:
    assert FetchConfig(timeout=3).attempt_timeout == 11
    assert FetchConfig(timeout=3, total_timeout=4).attempt_timeout == 4


# --------------------------------------------------------------------------------------------------------
# Retries


def test_flaky_server_succeeds_on_retry(fetcher: Fetcher, http_server: LocalServer) -> None:
    path = unique("/flaky")
    result = fetcher.fetch(http_server.url(path))
    assert result.ok and result.attempts == 2 and result.status == 200
    assert http_server.hits(path) == 2


@pytest.mark.parametrize(("status", "attempts"), [(404, 1), (403, 1), (410, 1), (501, 1), (500, 3), (503, 3), (408, 3)])
def test_status_retry_policy(http_server: LocalServer, status: int, attempts: int) -> None:
    url = http_server.url(f"/status/{status}?t={uuid.uuid4().hex}")
    with Fetcher(local_config(retries=2)) as f:
        result = f.fetch(url)
    assert (result.ok, result.reason, result.detail) == (False, reasons.DOWNLOAD_FAILED, f"http_{status}")
    assert (result.status, result.attempts) == (status, attempts)
    assert http_server.hits(url) == attempts


def test_no_retries_when_configured_off(http_server: LocalServer) -> None:
    path = unique("/flaky")
    with Fetcher(local_config(retries=0)) as f:
        result = f.fetch(http_server.url(path))
    assert (result.ok, result.detail, result.attempts) == (False, "http_500", 1)


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_retry_after_is_honoured(fetcher: Fetcher, http_server: LocalServer, form: str) -> None:
    path = unique("/ratelimited")
    started = time.monotonic()
    result = fetcher.fetch(http_server.url(f"{path}?after=1&form={form}"))
    waited = time.monotonic() - started
    assert result.ok and result.attempts == 2
    assert http_server.hits(path) == 2
    assert waited >= 1.0  # the backoff alone (0.05 s) would have been much shorter


def test_retry_after_beyond_the_limit_gives_up(http_server: LocalServer) -> None:
    path = unique("/ratelimited")
    with Fetcher(local_config(max_retry_after=5)) as f:
        result = f.fetch(http_server.url(f"{path}?after=100"))
    assert (result.ok, result.detail, result.status, result.attempts) == (False, "http_429", 429, 1)


def test_untrusted_certificate_is_a_tls_failure(tmp_path: Path) -> None:
    with LocalServer(tls=make_tls_files(tmp_path)) as server, Fetcher(local_config()) as f:
        server.add_image("/secure.jpg", 40, 40)
        result = f.fetch(f"https://localhost:{server.port}/secure.jpg")
    assert (result.ok, result.reason, result.detail, result.attempts) == (False, reasons.DOWNLOAD_FAILED, "ssl", 1)


def test_connection_refused_is_retried(http_server: LocalServer) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Fetcher(local_config(retries=1)) as f:
        result = f.fetch(f"http://127.0.0.1:{port}/x.jpg")
    assert (result.ok, result.detail, result.status, result.attempts) == (False, "connect", None, 2)


def test_hangup_is_a_connection_failure(fetcher: Fetcher, http_server: LocalServer) -> None:
    result = fetcher.fetch(http_server.url("/hangup"))
    assert (result.ok, result.detail, result.attempts) == (False, "connect", 3)


# --------------------------------------------------------------------------------------------------------
# Redirects


def test_redirects_are_followed(fetcher: Fetcher, http_server: LocalServer) -> None:
    result = fetcher.fetch(http_server.url("/redirect/3"))
    assert result.ok and result.status == 200
    assert result.url == http_server.url("/redirect/3")
    assert result.final_url == http_server.url("/redirect/0")


def test_redirect_limit_boundary(http_server: LocalServer) -> None:
    with Fetcher(local_config(max_redirects=3)) as f:
        assert f.fetch(http_server.url("/redirect/3")).ok
        result = f.fetch(http_server.url("/redirect/4"))
    assert (result.ok, result.detail, result.status, result.attempts) == (False, "too_many_redirects", 302, 1)


@pytest.mark.parametrize("cycle", [1, 2, 3])
def test_redirect_loops_are_detected(fetcher: Fetcher, http_server: LocalServer, cycle: int) -> None:
    result = fetcher.fetch(http_server.url(f"/redirect-loop/{cycle}"))
    assert (result.ok, result.detail) == (False, "redirect_loop")


def test_redirect_to_another_server(fetcher: Fetcher, http_server: LocalServer) -> None:
    with LocalServer() as other:
        path = unique("/elsewhere")
        body = other.add_image(path, 80, 80)
        result = fetcher.fetch(http_server.url(f"/redirect-to/{other.port}{path}"))
        assert result.ok and result.data == body
        assert result.final_url == other.url(path)
        assert other.hits(path) == 1


def test_redirect_without_location(fetcher: Fetcher, http_server: LocalServer) -> None:
    result = fetcher.fetch(http_server.url("/status/302"))
    assert (result.ok, result.detail, result.status) == (False, "redirect_without_location", 302)


def test_redirect_to_an_unsupported_scheme(fetcher: Fetcher, http_server: LocalServer) -> None:
    path = unique("/to-file")
    http_server.add(path, b"", status=302, headers={"Location": "file:///etc/passwd"})
    result = fetcher.fetch(http_server.url(path))
    assert (result.ok, result.reason) == (False, reasons.DOWNLOAD_FAILED)
    assert result.detail == "invalid_url:unsupported_scheme:file"


# --------------------------------------------------------------------------------------------------------
# X-Robots-Tag


@pytest.mark.parametrize(
    ("directive", "refused"),
    [
        ("noai", "noai"),
        ("noimageai", "noimageai"),
        ("noindex", "noindex"),
        ("noimageindex", "noimageindex"),
        ("none", "none"),
        ("NoAI", "noai"),
        ("nofollow, noimageai", "noimageai"),
        ("aligndata: noai", "noai"),
        ("googlebot: noindex", None),
        ("nofollow", None),
        ("max-image-preview: large", None),
    ],
)
def test_x_robots_tag(fetcher: Fetcher, http_server: LocalServer, directive: str, refused: str | None) -> None:
    result = fetcher.fetch(http_server.url("/robots-tag/" + directive.replace(" ", "%20")))
    if refused is None:
        assert result.ok
    else:
        assert (result.ok, result.reason) == (False, reasons.ROBOTS_DISALLOWED)
        assert result.detail == f"x-robots-tag:{refused}"
        assert result.data is None


def test_x_robots_tag_can_be_ignored(http_server: LocalServer) -> None:
    with Fetcher(local_config(respect_x_robots_tag=False)) as f:
        assert f.fetch(http_server.url("/robots-tag/noai")).ok


def test_x_robots_tag_parser() -> None:
    assert x_robots_disallows([]) is None
    assert x_robots_disallows(["googlebot: noindex", "noai"]) == "noai"  # one header per value
    assert x_robots_disallows(["googlebot: noindex, nofollow"]) is None  # scope covers the whole list
    assert x_robots_disallows(["googlebot: nofollow, aligndata: noimageai"]) == "noimageai"
    assert x_robots_disallows(["ALIGNDATA: NOINDEX"]) == "noindex"
    # A date with a comma and a colon must not be read as a new "botname:" scope.
    assert x_robots_disallows(["unavailable_after: Friday, 25-Jun-2010 15:00:00 PST, noai"]) == "noai"
    assert x_robots_disallows(["otherbot: noai"], token="otherbot") == "noai"


# --------------------------------------------------------------------------------------------------------
# The address guard through the fetcher


def test_loopback_is_blocked_without_the_flag(http_server: LocalServer) -> None:
    path = unique("/private")
    http_server.add(path, b"secret")
    with Fetcher(FetchConfig()) as f:
        literal = f.fetch(http_server.url(path))
        named = f.fetch(f"http://localhost:{http_server.port}{path}")
    # An IP literal is refused before any request; a name after resolution, at connection time.
    assert (literal.ok, literal.reason, literal.detail, literal.attempts) == (
        False, reasons.BLOCKED_ADDRESS, "blocked:127.0.0.1", 0,
    )
    assert (named.ok, named.reason, named.detail, named.attempts) == (
        False, reasons.BLOCKED_ADDRESS, "blocked:127.0.0.1", 1,
    )
    assert http_server.hits(path) == 0


def test_blocked_private_literals_never_connect() -> None:
    with Fetcher(FetchConfig()) as f:
        for url in ("http://10.0.0.1/a.jpg", "http://169.254.169.254/latest/", "http://[::ffff:192.168.0.1]/"):
            result = f.fetch(url)
            assert result.reason == reasons.BLOCKED_ADDRESS and result.attempts == 0, url


def test_redirect_to_a_blocked_literal_is_refused(http_server: LocalServer, other_loopback_server: LocalServer) -> None:
    trusted_source = other_loopback_server  # 127.0.0.2: the guarded fetcher trusts it, 127.0.0.1 stays blocked
    target = unique("/target")
    http_server.add(target, b"secret")
    with Fetcher(FetchConfig(allowed_networks=("127.0.0.2/32",))) as f:
        result = f.fetch(trusted_source.url(f"/redirect-to/{http_server.port}{target}"))
    assert (result.ok, result.reason, result.detail, result.status) == (
        False, reasons.BLOCKED_ADDRESS, "blocked:127.0.0.1", 302,
    )
    assert http_server.hits(target) == 0


def test_redirect_to_a_name_resolving_to_a_blocked_address_is_refused(
    http_server: LocalServer, other_loopback_server: LocalServer
) -> None:
    trusted_source = other_loopback_server
    target = unique("/target")
    http_server.add(target, b"secret")
    hop = unique("/hop")
    trusted_source.add(hop, b"", status=302, headers={"Location": f"http://localhost:{http_server.port}{target}"})
    with Fetcher(FetchConfig(allowed_networks=("127.0.0.2/32",))) as f:
        result = f.fetch(trusted_source.url(hop))
    assert (result.ok, result.reason, result.detail) == (False, reasons.BLOCKED_ADDRESS, "blocked:127.0.0.1")
    assert result.final_url == f"http://localhost:{http_server.port}{target}"
    assert trusted_source.hits(hop) == 1 and http_server.hits(target) == 0


# --------------------------------------------------------------------------------------------------------
# Input, configuration and pure helpers


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("ftp://example.com/a.jpg", "invalid_url:unsupported_scheme:ftp"),
        ("", "invalid_url:empty"),
        ("http:///x", "invalid_url:no_host"),
    ],
)
def test_invalid_urls_are_refused_without_a_request(fetcher: Fetcher, url: str, detail: str) -> None:
    result = fetcher.fetch(url)
    assert (result.ok, result.reason, result.detail, result.attempts) == (False, reasons.DOWNLOAD_FAILED, detail, 0)


def test_fetch_after_close_is_an_error(http_server: LocalServer) -> None:
    f = Fetcher(local_config())
    f.close()
    f.close()  # idempotent
    with pytest.raises(RuntimeError, match="close"):
        f.fetch(http_server.url("/image/10x10.jpg"))


@pytest.mark.parametrize(
    "kwargs",
    [{"timeout": 0}, {"total_timeout": -1}, {"max_bytes": 0}, {"retries": -1}, {"backoff": -0.1},
     {"max_redirects": -1}, {"user_agent": " "}, {"allowed_networks": ("10.0.0.0/40",)},
     {"user_agent": "bot/1\r\nX-Injected: 1"}, {"contact": "a@b.org\n"}, {"user_agent": "bot/\u20ac"}],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FetchConfig(**kwargs)  # type: ignore[arg-type]


def test_user_agent_header() -> None:
    assert FetchConfig().user_agent_header == DEFAULT_USER_AGENT
    assert FetchConfig(user_agent="bot/1", contact="https://x.org").user_agent_header == "bot/1 (+https://x.org)"


def test_parse_retry_after() -> None:
    now = 1_000_000.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Mon, 12 Jan 1970 13:46:50 GMT", now=now) == 10.0  # 1_000_010 s after the epoch
    assert parse_retry_after("Mon, 12 Jan 1970 13:46:30 GMT", now=now) == 0.0  # in the past


def test_backoff_delay_bounds() -> None:
    for n, full in [(1, 0.5), (2, 1.0), (3, 2.0), (10, BACKOFF_CAP)]:
        for _ in range(20):
            assert full / 2 <= backoff_delay(n, 0.5) <= full


def test_media_type_and_retryable_status() -> None:
    assert media_type("Image/JPEG; charset=binary") == "image/jpeg"
    assert media_type(None) is None and media_type(" ; x") is None
    assert [s for s in (200, 400, 404, 408, 429, 500, 501, 502, 503, 504, 599) if is_retryable_status(s)] == [
        408, 429, 500, 502, 503, 504, 599,
    ]


def test_classify_exception() -> None:
    gone = u3.NameResolutionError("gone.example", None, socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    flaky = u3.NameResolutionError("x.example", None, socket.gaierror(socket.EAI_AGAIN, "Temporary failure"))
    refused = u3.NewConnectionError(None, "Failed to establish a new connection")
    refused.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    assert classify_exception(gone) == (reasons.DOWNLOAD_FAILED, "dns", False)
    assert classify_exception(flaky) == (reasons.DOWNLOAD_FAILED, "dns", True)
    assert classify_exception(refused) == (reasons.DOWNLOAD_FAILED, "connect", True)
    assert classify_exception(u3.ConnectTimeoutError(None, "timed out")) == (
        reasons.DOWNLOAD_FAILED, "connect_timeout", True,
    )
    assert classify_exception(u3.ProtocolError("cut", ConnectionResetError()), during_body=True) == (
        reasons.DOWNLOAD_FAILED, "incomplete_body", True,
    )
    assert classify_exception(BlockedAddressError("10.0.0.1", "intranet")) == (
        reasons.BLOCKED_ADDRESS, "blocked:10.0.0.1", False,
    )
    assert classify_exception(KeyError("x")) == (reasons.DOWNLOAD_FAILED, "error:KeyError", False)


def test_watchdog_thread_is_stopped_by_close(http_server: LocalServer) -> None:
    before = set(threading.enumerate())  # Thread objects, not idents: idents of ended threads get reused
    f = Fetcher(local_config())
    assert f.fetch(http_server.url("/image/20x20.jpg")).ok
    started = [t for t in threading.enumerate() if t not in before and t.name == "aligndata-fetch-watchdog"]
    assert len(started) == 1
    f.close()
    assert not started[0].is_alive()


def test_finished_attempts_leave_the_watchdog_at_once(http_server: LocalServer) -> None:
    with Fetcher(local_config()) as f:
        for _ in range(3):
            assert f.fetch(http_server.url("/image/20x20.jpg")).ok
        assert f._watchdog._running == {}  # nothing left for the thread to wake up for


def test_the_watchdog_expires_each_attempt_at_its_own_deadline() -> None:
    watchdog = fetch._Watchdog(0.5)
    try:
        first = watchdog.start()
        time.sleep(0.2)
        second = watchdog.start()
        watchdog.finish(first)  # the earliest deadline is gone: the thread must still wake for the second
        time.sleep(0.4)  # past the first deadline
        assert not first.expired
        if time.monotonic() < second.deadline:
            assert not second.expired  # never early
        while not second.expired and time.monotonic() < second.deadline + 5:
            time.sleep(0.01)
        assert second.expired and time.monotonic() >= second.deadline
    finally:
        watchdog.stop()
