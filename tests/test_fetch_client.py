"""The fetcher's own HTTP client (our connections, pool and head parser over http.client's framing; no urllib3
request layers, no requests): what those libraries used to do for us, still done.

tests/test_fetch.py covers the fetcher's behaviour end to end; these tests cover the parts that moved when the
client changed: TLS verification with the shared context, credentials in URLs, URL normalisation, the request
sent, keep-alive reuse (across threads, under the wall-clock cap, never after a failure, a dead pooled
connection replaced), the pool's bounds, content decoding and chunked framing, and the absence of any proxy
or cookie jar. Servers are real, on loopback: tests/httpserver.py, and below a small one whose connections
misbehave on purpose.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import io
import socket
import ssl
import threading
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from httpserver import LocalServer, make_image_bytes, make_tls_files

from aligndata.filters import reasons
from aligndata.fetch import client as fetch
from aligndata.fetch.client import FetchConfig, Fetcher
from aligndata.fetch.wire import Headers, basic_auth_header, decoder_for, read_header_fields, tls_context


def local_config(**overrides: object) -> FetchConfig:
    values: dict[object, object] = dict(allow_private_networks=True, timeout=5.0, backoff=0.05, retries=0)
    values.update(overrides)
    return FetchConfig(**values)  # type: ignore[arg-type]


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


class _KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10.0  # an idle connection gives up by itself
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def setup(self) -> None:
        super().setup()
        self.served = 0
        self.server.owner.count("connections")

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        owner = self.server.owner
        owner.count("requests")
        self.served += 1
        if self.served == owner.hang_up_on_request:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        owner.answer(self)


class KeepAliveServer:
    """HTTP/1.1 on 127.0.0.1 answering every path with ``body``, its connections misbehaving on purpose.

    ``close_after_answer``: hangs up after each response without saying so (no ``Connection: close``).
    ``hang_up_on_request=n``: takes the n-th request of each connection and hangs up without an answer.
    ``chunked``: chunked transfer coding (``cut_chunked``, settable later: stops halfway and hangs up).
    ``gzipped``: Content-Encoding gzip; ``missing_bytes``: Content-Length promises that many more bytes than come,
    then the connection ends. ``interim``: raw interim (1xx) responses sent before the answer.
    """

    body = make_image_bytes(160, 120, seed=5)

    def __init__(self, close_after_answer: bool = False, hang_up_on_request: int = 0, chunked: bool = False,
                 gzipped: bool = False, missing_bytes: int = 0, interim: bytes = b""):
        self.close_after_answer, self.hang_up_on_request = close_after_answer, hang_up_on_request
        self.interim = interim
        self.chunked, self.cut_chunked, self.gzipped, self.missing_bytes = chunked, False, gzipped, missing_bytes
        self.connections = self.requests = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, address: None  # hang-ups are the point
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        payload = gzip.compress(self.body) if self.gzipped else self.body
        h.wfile.write(self.interim)
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        if self.gzipped:
            h.send_header("Content-Encoding", "gzip")
        if self.chunked:
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            pieces = [payload[i:i + 1000] for i in range(0, len(payload), 1000)]
            for piece in pieces[: len(pieces) // 2] if self.cut_chunked else pieces:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            if not self.cut_chunked:
                h.wfile.write(b"0\r\n\r\n")
        else:
            h.send_header("Content-Length", str(len(payload) + self.missing_bytes))
            h.end_headers()
            h.wfile.write(payload)
        h.close_connection = self.close_after_answer or self.cut_chunked or self.missing_bytes > 0

    def __enter__(self) -> KeepAliveServer:
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# --------------------------------------------------------------------------------------------------------
# TLS: one context per fetcher, certificates and host names verified, SNI carries the real name


def test_tls_context_verifies_certificates_and_host_names() -> None:
    context = tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.get_ca_certs()  # certifi's bundle is loaded once, here


@pytest.fixture
def trusting_test_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """TLS files for "localhost" only, and fetchers (made after this) that trust their CA."""
    files = make_tls_files(tmp_path, hosts=("localhost",))
    monkeypatch.setattr(fetch, "tls_context", lambda cafile=None: tls_context(str(files.ca)))
    return files


def test_https_with_a_trusted_certificate(trusting_test_ca) -> None:
    with LocalServer(tls=trusting_test_ca) as server, Fetcher(local_config()) as f:
        body = server.add_image("/secure.jpg", 40, 40)
        result = f.fetch(f"https://localhost:{server.port}/secure.jpg")
        assert result.ok and result.data == body
        assert server.sni_names == ["localhost"]  # SNI is the URL's host, not the checked IP we connected to


def test_https_host_name_must_match_the_certificate(trusting_test_ca) -> None:
    # A trusted CA, a valid chain, but the certificate names "localhost" and the URL says 127.0.0.1.
    with LocalServer(tls=trusting_test_ca) as server, Fetcher(local_config()) as f:
        server.add_image("/secure.jpg", 40, 40)
        result = f.fetch(f"https://127.0.0.1:{server.port}/secure.jpg")
    assert (result.ok, result.reason, result.detail, result.attempts) == (False, reasons.DOWNLOAD_FAILED, "ssl", 1)


def test_https_connections_still_pass_the_address_guard(trusting_test_ca) -> None:
    with LocalServer(tls=trusting_test_ca) as server, Fetcher(FetchConfig()) as f:
        server.add_image("/secure.jpg", 40, 40)
        result = f.fetch(f"https://localhost:{server.port}/secure.jpg")
        assert (result.ok, result.reason, result.detail) == (False, reasons.BLOCKED_ADDRESS, "blocked:127.0.0.1")
        assert server.hits("/secure.jpg") == 0 and server.sni_names == []  # refused before any handshake


def test_a_stalled_tls_handshake_ends_at_the_total_timeout() -> None:
    # The kernel completes the TCP handshake for a listening socket nobody serves: the TLS handshake then waits
    # for a ServerHello that never comes. Only the read timeout (10 s) would end it without the cap (1 s); the
    # detail says total_timeout either way, so the time taken is what shows the cap fired (a wide margin).
    with socket.socket() as listener, Fetcher(local_config(timeout=10.0, total_timeout=1.0)) as f:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        result = f.fetch(f"https://127.0.0.1:{listener.getsockname()[1]}/a.jpg")
    assert (result.ok, result.detail, result.attempts) == (False, "total_timeout", 1)
    assert 1.0 <= result.elapsed < 8.0


# --------------------------------------------------------------------------------------------------------
# Credentials in URLs (requests turned them into a Basic Authorization header; so do we)


def test_basic_auth_header() -> None:
    def encoded(pair: str) -> str:
        return "Basic " + base64.b64encode(pair.encode("latin1")).decode()

    assert basic_auth_header(None) is None
    assert basic_auth_header("user") is None  # no password: requests sent nothing either
    assert basic_auth_header(":") is None
    assert basic_auth_header("user:secret") == encoded("user:secret")
    assert basic_auth_header("user:") == encoded("user:")
    assert basic_auth_header("us%40er:p%3Ass") == encoded("us@er:p:ss")  # percent-escapes are undone
    assert basic_auth_header("u:caf%C3%A9") == "Basic " + base64.b64encode("u:café".encode("latin1")).decode()
    assert basic_auth_header("u:%E2%82%AC") == "Basic " + base64.b64encode("u:€".encode()).decode()  # not latin1


def test_credentials_in_the_url_are_sent_as_basic_auth(http_server: LocalServer) -> None:
    path = unique("/auth")
    http_server.add_image(path, 30, 30)
    with Fetcher(local_config()) as f:
        assert f.fetch(f"http://user:s%40cret@127.0.0.1:{http_server.port}{path}").ok
        assert http_server.last_headers(path)["authorization"] == basic_auth_header("user:s%40cret")
        assert f.fetch(http_server.url(path)).ok
        assert "authorization" not in http_server.last_headers(path)  # never carried over to other requests


# --------------------------------------------------------------------------------------------------------
# URL handling


def test_urls_are_normalised_like_requests_did(http_server: LocalServer) -> None:
    path = unique("/norm")
    http_server.add_image(path + "/a%20b.jpg", 30, 30)  # the test server matches the raw request path
    with Fetcher(local_config()) as f:
        result = f.fetch(f"  {http_server.url(path)}/a b.jpg#fragment \n")  # spaces around, space inside
    assert result.ok, result.detail
    assert http_server.hits(path + "/a%20b.jpg") == 1  # percent-encoded; the fragment is never sent


@pytest.mark.parametrize("host", [".example.com", "*.example.com"])
def test_hosts_with_an_invalid_label_are_refused_without_a_request(host: str) -> None:
    with Fetcher(local_config()) as f:
        result = f.fetch(f"http://{host}/a.jpg")
    assert (result.ok, result.reason, result.detail, result.attempts) == (
        False, reasons.DOWNLOAD_FAILED, "invalid_url", 1,
    )


def test_unparseable_url_is_an_invalid_url() -> None:
    with Fetcher(local_config()) as f:
        result = f.fetch("http://exa\u00admple..com:80/a.jpg")  # IDNA refuses the label
    assert (result.ok, result.detail) == (False, "invalid_url")


# --------------------------------------------------------------------------------------------------------
# Connections: kept alive between requests and threads, never after a failure


def origin(server: LocalServer | KeepAliveServer, host: str = "127.0.0.1") -> tuple[str, str, int]:
    """The pool key of ``server``'s connections."""
    return ("https" if getattr(server, "tls", None) else "http", host, server.port)


def test_connections_are_reused_and_the_wall_clock_cap_still_applies() -> None:
    with LocalServer() as server, Fetcher(local_config(timeout=5.0, total_timeout=1.5)) as f:
        first, second = unique("/keep"), unique("/keep")
        server.add_image(first, 30, 30)
        server.add_image(second, 30, 30)
        assert f.fetch(server.url(first)).ok
        assert f.fetch(server.url(second)).ok
        assert f._pool.opened == 1  # the second request reused the first one's connection
        assert f._pool.idle(origin(server)) == 1
        # The pooled connection is watched like a new one: a drip on it ends at the attempt's deadline.
        result = f.fetch(server.url("/drip"))
        assert (result.ok, result.detail) == (False, "total_timeout")
        assert f._pool.opened == 1 and f._pool.idle(origin(server)) == 0  # used, then closed: not pooled
        assert f.fetch(server.url(first)).ok
        assert f._pool.opened == 2


def test_connections_are_shared_between_threads(http_server: LocalServer) -> None:
    paths = [unique("/shared") for _ in range(3)]
    for path in paths:
        http_server.add_image(path, 30, 30)
    results = []
    with Fetcher(local_config()) as f:
        for path in paths:  # one thread after another, each a new thread
            worker = threading.Thread(target=lambda p=path: results.append(f.fetch(http_server.url(p))))
            worker.start()
            worker.join()
        assert f._pool.opened == 1
    assert [r.ok for r in results] == [True] * 3


def test_the_pool_keeps_at_most_pool_maxsize_connections_per_origin(http_server: LocalServer) -> None:
    with Fetcher(local_config(pool_maxsize=2)) as f, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: f.fetch(http_server.url(f"/sleep/1?n={i}")), range(4)))
        assert all(r.ok for r in results)
        assert f._pool.opened > 2  # (four when all four overlap, as they do unless the machine is swamped)
        assert f._pool.idle(origin(http_server)) == 2  # the rest were closed


def test_the_least_recently_used_origin_is_forgotten(http_server: LocalServer) -> None:
    path = unique("/origins")
    http_server.add_image(path, 30, 30)
    with Fetcher(local_config()) as f:
        f._pool.max_origins = 1
        assert f.fetch(http_server.url(path)).ok
        assert f._pool.idle(origin(http_server)) == 1
        assert f.fetch(f"http://localhost:{http_server.port}{path}").ok  # same server, another origin
        assert f._pool.idle(origin(http_server, "localhost")) == 1
        assert f._pool.idle(origin(http_server)) == 0


@pytest.mark.parametrize("path", ["/status/404", "/lying-length/long", "/hangup", "/redirect/1"])
def test_a_connection_is_not_pooled_after_a_failure_or_a_redirect(http_server: LocalServer, path: str) -> None:
    with Fetcher(local_config(retries=0)) as f:
        result = f.fetch(http_server.url(path))
        assert f._pool.idle(origin(http_server)) == (1 if path.startswith("/redirect") else 0)
    # The redirect's own connection was closed with its unread body; only the final response's one is kept.
    assert result.ok == path.startswith("/redirect")


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    with KeepAliveServer(close_after_answer=True) as server, Fetcher(local_config()) as f:
        for _ in range(2):
            result = f.fetch(server.url("/a.jpg"))
            assert (result.ok, result.attempts) == (True, 1)
        assert f._pool.opened == 2 and server.connections == 2


def test_a_dead_keep_alive_connection_is_replaced_without_a_retry() -> None:
    # The server takes the second request of each connection and hangs up without answering: the race of a
    # server closing an idle connection just as we send on it. The request goes again on a new connection,
    # within the same attempt, without the retry's backoff.
    with KeepAliveServer(hang_up_on_request=2) as server, Fetcher(local_config(retries=0)) as f:
        assert f.fetch(server.url("/a.jpg")).ok
        result = f.fetch(server.url("/b.jpg"))
        assert (result.ok, result.attempts, result.data) == (True, 1, server.body)
        assert server.connections == 2 and server.requests == 3
        assert f._pool.opened == 2


def test_a_new_connection_that_hangs_up_is_a_connection_failure_not_resent() -> None:
    with KeepAliveServer(hang_up_on_request=1) as server, Fetcher(local_config(retries=1, backoff=0.01)) as f:
        result = f.fetch(server.url("/a.jpg"))
        assert (result.ok, result.detail, result.attempts) == (False, "connect", 2)
        assert server.requests == 2  # one per attempt: only a reused connection is resent at once


# --------------------------------------------------------------------------------------------------------
# The request sent, framing and content decoding


def test_the_request_carries_host_and_our_headers_only(http_server: LocalServer) -> None:
    path = unique("/request")
    http_server.add_image(path, 30, 30)
    with Fetcher(local_config()) as f:
        assert f.fetch(http_server.url(path)).ok
    headers = http_server.last_headers(path)
    assert headers == {
        "host": f"127.0.0.1:{http_server.port}",
        "user-agent": f.config.user_agent_header,
        "accept-encoding": "gzip, deflate",
        "accept": fetch.ACCEPT,
        "connection": "keep-alive",
    }


def test_interim_responses_are_skipped() -> None:
    interim = (b"HTTP/1.1 100 Continue\r\n\r\n"
               b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nX-Robots-Tag: noai\r\n\r\n")
    with KeepAliveServer(interim=interim) as server, Fetcher(local_config()) as f:
        result = f.fetch(server.url("/a.jpg"))
        assert (result.ok, result.status, result.data) == (True, 200, server.body)  # the 103's headers do not count


def test_the_response_head_parser() -> None:
    head = (b"Content-Type: image/png\r\nx-robots-tag: noai\r\nX-Robots-Tag: googlebot: noindex,\r\n"
            b"\t nofollow\r\nnot a header line\r\nContent-Length :  12 \r\n\r\nbody")
    headers = Headers(read_header_fields(io.BytesIO(head)))
    assert headers.get("content-type") == "image/png"
    assert headers.get_all("X-Robots-Tag") == ["noai", "googlebot: noindex, nofollow"]  # a folded line continues
    assert headers.get("Content-Length") == "12"
    assert headers.get("Location") is None and headers.get_all("Location") is None
    with pytest.raises(http.client.HTTPException):
        read_header_fields(io.BytesIO(b"X: y\r\n" * 100 + b"\r\n"))  # http.client's limit
    with pytest.raises(http.client.LineTooLong):
        read_header_fields(io.BytesIO(b"X: " + b"y" * 70_000 + b"\r\n\r\n"))


def test_chunked_bodies_are_reassembled_and_a_cut_one_is_incomplete() -> None:
    with KeepAliveServer(chunked=True) as server, Fetcher(local_config(retries=0)) as f:
        result = f.fetch(server.url("/a.jpg"))
        assert result.ok and result.data == server.body
        assert f._pool.idle(origin(server)) == 1  # a chunked body has its end: the connection is kept
        server.cut_chunked = True
        result = f.fetch(server.url("/b.jpg"))
        assert (result.ok, result.detail) == (False, "incomplete_body")


def test_chunked_body_past_the_cap_is_stopped() -> None:
    with KeepAliveServer(chunked=True) as server, Fetcher(local_config(max_bytes=len(server.body) - 1)) as f:
        result = f.fetch(server.url("/a.jpg"))
        assert (result.ok, result.detail) == (False, "too_large")


def _gzip_members(data: bytes, parts: int) -> bytes:
    step = len(data) // parts + 1
    return b"".join(gzip.compress(data[i:i + step]) for i in range(0, len(data), step))


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("gzip", lambda d: _gzip_members(d, 3)),  # several members
        ("gzip", lambda d: gzip.compress(d) + b"trailing garbage"),  # ignored after a complete member
        ("deflate", zlib.compress),  # zlib-wrapped, as the RFC says
        ("deflate", lambda d: zlib.compress(d)[2:-4]),  # raw deflate, as some servers send it
        ("Deflate, GZIP", lambda d: gzip.compress(zlib.compress(d))),  # two layers, undone last first
        ("identity", lambda d: d),
        ("br", lambda d: d),  # a coding we never asked for: the bytes are left to the image decoder
    ],
)
def test_content_encodings_are_decoded(http_server: LocalServer, encoding: str, encode) -> None:
    path = unique("/encoded")
    body = make_image_bytes(200, 100, seed=3)
    http_server.add(path, encode(body), headers={"Content-Encoding": encoding})
    with Fetcher(local_config()) as f:
        result = f.fetch(http_server.url(path))
    assert result.ok, result.detail
    assert result.data == body


@pytest.mark.parametrize("layers", [1, 2])
def test_decoded_cap_boundary(http_server: LocalServer, layers: int) -> None:
    path = unique("/encoded-cap")
    body = bytes(300_000)
    encoded, encoding = gzip.compress(body), "gzip"
    if layers == 2:
        encoded, encoding = zlib.compress(encoded), "gzip, deflate"
    http_server.add(path, encoded, headers={"Content-Encoding": encoding})
    with Fetcher(local_config(max_bytes=len(body))) as f:
        assert f.fetch(http_server.url(path)).data == body
    with Fetcher(local_config(max_bytes=len(body) - 1)) as f:
        result = f.fetch(http_server.url(path))
    assert (result.ok, result.detail) == (False, "too_large")


def test_the_decoder_never_yields_more_than_asked() -> None:
    decoder = decoder_for("gzip")
    bomb = gzip.compress(bytes(10_000_000))
    assert len(decoder.decode(bomb, 1000)) == 1000
    assert decoder.pending
    assert len(decoder.decode(b"", 5000)) == 5000


def test_a_gzip_body_cut_short_is_incomplete() -> None:
    # Content-Length promises more than comes, then the connection ends: a partial image is not a success.
    with KeepAliveServer(gzipped=True, missing_bytes=500) as server, Fetcher(local_config(retries=0)) as f:
        result = f.fetch(server.url("/a.jpg"))
        assert (result.ok, result.detail) == (False, "incomplete_body")


# --------------------------------------------------------------------------------------------------------
# Never through a proxy, no cookie jar


def test_proxy_environment_is_ignored(http_server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there: using it would fail
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    path = unique("/direct")
    http_server.add_image(path, 30, 30)
    with Fetcher(local_config()) as f:
        assert f.fetch(http_server.url(path)).ok
    assert http_server.hits(path) == 1


def test_set_cookie_is_not_kept_even_for_the_same_host(http_server: LocalServer) -> None:
    path = unique("/cookie")
    http_server.add(path, b"img", headers={"Set-Cookie": "session=abc; Path=/; Max-Age=3600"})
    with Fetcher(local_config()) as f:
        for _ in range(3):
            assert f.fetch(http_server.url(path)).ok
            assert "cookie" not in http_server.last_headers(path)
