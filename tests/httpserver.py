"""A local HTTP server for tests: real images, registered responses and misbehaving endpoints.

Binds 127.0.0.1 (or another loopback address) on an ephemeral port, serves from daemon threads, logs nothing;
HTTPS with a throwaway CA via ``make_tls_files``. Every server-side loop is bounded in count and time and ends
on its own, on client disconnect, or when the server stops.

    with LocalServer() as server:
        server.add_image("/cat.jpg", 400, 300)
        requests.get(server.url("/cat.jpg"))
        assert server.hits("/cat.jpg") == 1

Built-in endpoints (anything registered with ``add`` takes precedence):

    /image/<W>x<H>.<jpg|png|webp|gif>   generated image, content seeded by the path
    /status/<code>                      that status with a short text body
    /flaky/<id>                         500 on the first hit, then a 300x300 JPEG
    /ratelimited/<id>[?after=S&form=date]  429 with Retry-After (seconds, or an HTTP date), then an image
    /drip[?interval=S]                  headers, then 1 byte every S (0.5) seconds; ends after 30 s
    /slow-headers[?interval=S]          status line, then one header byte every S seconds; ends after 30 s
    /sleep/<seconds>                    waits (at most 30 s) before answering with an image
    /endless                            body at full speed with no length; ends after 1 GB or 60 s
    /hangup                             closes the connection without answering
    /wrong-type.jpg                     a valid JPEG served as text/html
    /page.html                          an HTML page
    /truncated.jpg                      the first half of a JPEG
    /gzip-image.jpg                     a JPEG sent with Content-Encoding: gzip
    /gzip-bomb[?mb=N]                   ~N/1000 MB of gzip that decodes to N (100) MB of zeros
    /lying-length/short                 Content-Length smaller than the body
    /lying-length/long                  Content-Length bigger than the body (connection closed early)
    /redirect/<n>                       n relative 302 hops, then an image
    /redirect-loop/<n>[/<i>]            302s around a cycle of n URLs (n=1: a URL redirecting to itself)
    /redirect-to/<port>/<path>          302 to http://127.0.0.1:<port>/<path>
    /robots-tag/<directive>             an image with ``X-Robots-Tag: <directive>`` (percent-decoded)
"""

from __future__ import annotations

import email.utils
import gzip
import io
import ipaddress
import random
import socket
import struct
import ssl
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image, ImageDraw

from aligndata.localweb import LoopbackHTTPServer

# Bounds on every server-side loop (machine rule: nothing runs forever).
MAX_STREAM_SECONDS = 30.0
ENDLESS_LIMIT_BYTES = 1_000_000_000
ENDLESS_LIMIT_SECONDS = 60.0
MAX_SLEEP_SECONDS = 30.0
# Idle keep-alive connections and stalled writes give up after this long.
SOCKET_TIMEOUT = 10.0

_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


def make_image_bytes(
    width: int, height: int, fmt: str = "JPEG", mode: str = "RGB", seed: int = 0, **save_kwargs: Any
) -> bytes:
    """A real encoded image: a gradient plus random shapes from ``seed``, so different seeds hash apart."""
    rng = random.Random(seed)
    gradient = Image.linear_gradient("L").resize((width, height)).rotate(rng.choice((0, 90, 180, 270)))
    channels = [gradient.point(lambda v, k=rng.random(): int(v * k)) for _ in range(3)]
    image = Image.merge("RGB", channels)
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, x1 = sorted(rng.randrange(width) for _ in range(2))
        y0, y1 = sorted(rng.randrange(height) for _ in range(2))
        color = tuple(rng.randrange(256) for _ in range(3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=color)
    if mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt, **save_kwargs)
    return out.getvalue()


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a test HTTPS server: a throwaway CA and a leaf certificate it signed."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> TLSFiles:
    """Create a CA and a leaf certificate for ``hosts`` (names or IPs) under ``directory``."""
    from cryptography import x509  # apache-beam depends on cryptography; imported lazily all the same
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.now(timezone.utc)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(name("aligndata test CA")).issuer_name(name("aligndata test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    leaf_cert = (
        x509.CertificateBuilder().subject_name(name(hosts[0])).issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TLSFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


def _interval(query: dict[str, list[str]]) -> float:
    return max(0.05, float(query.get("interval", ["0.5"])[0]))


def _seed_for(path: str) -> int:
    return zlib.crc32(path.encode("utf-8"))


@dataclass
class _Response:
    body: bytes
    content_type: str = "image/jpeg"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is exercised
    timeout = SOCKET_TIMEOUT
    server_version = "aligndata-test"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # silence per-request logging

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        try:
            self.server.owner._dispatch(self)
        except _DISCONNECTS:
            self.close_connection = True

    # Helpers used by the routes -------------------------------------------------------------------------

    def send_body(
        self,
        body: bytes,
        content_type: str = "image/jpeg",
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_length: int | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def start_unbounded_body(self, content_type: str = "image/jpeg") -> None:
        """Headers for a body delimited by closing the connection (no Content-Length)."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True


class _Server(LoopbackHTTPServer):
    owner: LocalServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-response is the point of several endpoints


class LocalServer:
    """Threaded HTTP server on 127.0.0.1:<ephemeral>; ``start()``/``stop()`` or use as a context manager.

    ``host`` may be another loopback address (Linux answers on all of 127.0.0.0/8), e.g. to test a guard
    that trusts one loopback address and not another. With ``tls`` (see :func:`make_tls_files`) it serves
    HTTPS and records the SNI names clients sent in ``sni_names``.
    """

    def __init__(self, host: str = "127.0.0.1", tls: TLSFiles | None = None) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"test servers bind loopback addresses only, not {host!r}")
        self.host = host
        self.tls = tls
        self.sni_names: list[str | None] = []
        self._lock = threading.Lock()
        self._static: dict[str, _Response] = {}
        self._hits: Counter[str] = Counter()  # by full target (path + query)
        self._path_hits: Counter[str] = Counter()  # by path alone
        self._last_headers: dict[str, dict[str, str]] = {}
        self._gzip_cache: dict[int, bytes] = {}
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> LocalServer:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._stopping.clear()
        self._httpd = _Server((self.host, 0), _Handler)
        self._httpd.owner = self
        if self.tls is not None:
            # The handshake then happens on first read, in the handler thread, not in the accept loop.
            self._httpd.socket = self._tls_context().wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()  # ends drip/endless loops still running
        self._httpd.shutdown()
        self._httpd.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def _tls_context(self) -> ssl.SSLContext:
        assert self.tls is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls.cert, self.tls.key)

        def record_sni(sock: ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext) -> None:
            with self._lock:
                self.sni_names.append(server_name)

        context.sni_callback = record_sni
        return context

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Addresses ------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + (path if path.startswith("/") else "/" + path)

    # Registration and bookkeeping -----------------------------------------------------------------------

    def add(
        self,
        path: str,
        body: bytes,
        content_type: str = "image/jpeg",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Serve ``body`` at ``path`` (exact match, query ignored) from now on; replaces any earlier entry."""
        with self._lock:
            self._static[path] = _Response(body, content_type, status, dict(headers or {}))

    def add_image(
        self, path: str, width: int, height: int, fmt: str = "JPEG", mode: str = "RGB", **save_kwargs: Any
    ) -> bytes:
        """Generate an image seeded by ``path``, serve it at ``path``, and return its bytes."""
        body = make_image_bytes(width, height, fmt, mode, seed=_seed_for(path), **save_kwargs)
        self.add(path, body, content_type=_MIME.get(fmt.upper(), "application/octet-stream"))
        return body

    def hits(self, path: str) -> int:
        """Requests received for ``path``; with a ``?query`` only that exact target counts. Full URLs work too."""
        if path.startswith(("http://", "https://")):
            parts = urlsplit(path)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
        with self._lock:
            return self._hits[path] if "?" in path else self._path_hits[path]

    def last_headers(self, path: str) -> dict[str, str]:
        """Request headers of the latest request for ``path`` (names lowercased)."""
        with self._lock:
            return dict(self._last_headers.get(path, {}))

    def reset_hits(self) -> None:
        with self._lock:
            self._hits.clear()
            self._path_hits.clear()

    # Dispatch -------------------------------------------------------------------------------------------

    def _dispatch(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        path, query = parts.path, parse_qs(parts.query)
        with self._lock:
            self._hits[handler.path] += 1
            self._path_hits[path] += 1
            count = self._path_hits[path]
            self._last_headers[path] = {k.lower(): v for k, v in handler.headers.items()}
            static = self._static.get(path)
        if static is not None:
            handler.send_body(static.body, static.content_type, static.status, static.headers)
            return
        for prefix, route in self._routes():
            if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
                route(handler, path[len(prefix):], query, count)
                return
        handler.send_body(b"not found", "text/plain", 404)

    def _routes(self) -> list[tuple[str, Callable[[_Handler, str, dict[str, list[str]], int], None]]]:
        return [
            ("/image/", self._image),
            ("/status/", self._status),
            ("/flaky/", self._flaky),
            ("/ratelimited/", self._ratelimited),
            ("/drip", self._drip),
            ("/slow-headers", self._slow_headers),
            ("/sleep/", self._sleep),
            ("/endless", self._endless),
            ("/hangup", self._hangup),
            ("/reset-mid-body", self._reset_mid_body),
            ("/wrong-type.jpg", self._wrong_type),
            ("/page.html", self._page),
            ("/truncated.jpg", self._truncated),
            ("/gzip-image.jpg", self._gzip_image),
            ("/gzip-bomb", self._gzip_bomb),
            ("/lying-length/", self._lying_length),
            ("/redirect/", self._redirect),
            ("/redirect-loop/", self._redirect_loop),
            ("/redirect-to/", self._redirect_to),
            ("/robots-tag/", self._robots_tag),
        ]

    # Routes (handler, rest of path after the prefix, query, hit count for this path) --------------------

    def _image(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        formats = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF"}
        try:
            size, ext = rest.rsplit(".", 1)
            width, height = (int(v) for v in size.split("x"))
            fmt = formats[ext.lower()]
        except (ValueError, KeyError):
            h.send_body(b"expected /image/<W>x<H>.<jpg|png|webp|gif>", "text/plain", 400)
            return
        body = make_image_bytes(width, height, fmt, seed=_seed_for(h.path))
        h.send_body(body, _MIME[fmt])

    def _status(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        try:
            code = int(rest)
        except ValueError:
            code = 400
        if not 200 <= code <= 599:  # 1xx are interim responses, not answers
            code = 400
        h.send_body(b"" if code in (204, 304) else f"status {code}".encode(), "text/plain", code)

    def _flaky(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        if count == 1:
            h.send_body(b"try again", "text/plain", 500)
        else:
            h.send_body(make_image_bytes(300, 300, seed=_seed_for(h.path)))

    def _ratelimited(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        if count > 1:
            h.send_body(make_image_bytes(300, 300, seed=_seed_for(h.path)))
            return
        after = float(query.get("after", ["1"])[0])
        if query.get("form", [""])[0] == "date":
            # HTTP dates have 1 s resolution: round up so the client never waits less than asked.
            value = email.utils.formatdate(time.time() + after + 1, usegmt=True)
        else:
            value = str(int(after)) if after == int(after) else str(after)
        h.send_body(b"slow down", "text/plain", 429, {"Retry-After": value})

    def _drip(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        interval = _interval(query)
        h.start_unbounded_body()
        h.wfile.write(b"\xff\xd8")  # a JPEG start, then garbage forever
        for _ in range(int(MAX_STREAM_SECONDS / interval)):
            if self._stopping.wait(interval):
                return
            h.wfile.write(b"\x00")
            h.wfile.flush()

    def _slow_headers(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        interval = _interval(query)
        h.close_connection = True
        h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        h.wfile.flush()
        for _ in range(int(MAX_STREAM_SECONDS / interval)):
            if self._stopping.wait(interval):
                return
            h.wfile.write(b"a")
            h.wfile.flush()
        h.wfile.write(b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def _sleep(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        try:
            seconds = min(float(rest), MAX_SLEEP_SECONDS)
        except ValueError:
            seconds = 1.0
        if self._stopping.wait(seconds):
            return
        h.send_body(make_image_bytes(300, 300, seed=_seed_for(h.path)))

    def _endless(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        block = random.Random(7).randbytes(64 * 1024)
        h.start_unbounded_body()
        started, sent = time.monotonic(), 0
        while sent < ENDLESS_LIMIT_BYTES and time.monotonic() - started < ENDLESS_LIMIT_SECONDS:
            if self._stopping.is_set():
                return
            h.wfile.write(block)  # raises once the client has gone
            sent += len(block)

    def _hangup(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)

    def _reset_mid_body(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        """Headers and half the body of an image, then a TCP reset (SO_LINGER 0) instead of the rest."""
        body = make_image_bytes(400, 300, seed=_seed_for("/reset-mid-body"))
        h.close_connection = True
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[: len(body) // 2])
        h.wfile.flush()
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()

    def _wrong_type(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        h.send_body(make_image_bytes(320, 240, seed=_seed_for(h.path)), "text/html; charset=utf-8")

    def _page(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        page = b"<!doctype html><html><head><title>Not an image</title></head><body><p>Hello</p></body></html>"
        h.send_body(page, "text/html; charset=utf-8")

    def _truncated(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        body = make_image_bytes(400, 300, seed=_seed_for(h.path))
        h.send_body(body[: len(body) // 2])

    def _gzip_image(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        body = make_image_bytes(320, 240, seed=_seed_for(h.path))
        h.send_body(gzip.compress(body), headers={"Content-Encoding": "gzip"})

    def _gzip_bomb(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        megabytes = max(1, min(int(query.get("mb", ["100"])[0]), 2000))
        h.send_body(self._bomb(megabytes), headers={"Content-Encoding": "gzip"})

    def _bomb(self, megabytes: int) -> bytes:
        with self._lock:
            cached = self._gzip_cache.get(megabytes)
        if cached is None:
            compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
            zeros = bytes(1 << 20)
            cached = b"".join(compressor.compress(zeros) for _ in range(megabytes)) + compressor.flush()
            with self._lock:
                self._gzip_cache[megabytes] = cached
        return cached

    def _lying_length(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        body = make_image_bytes(400, 300, seed=_seed_for("/lying-length"))
        if rest == "short":
            # Claims 100 bytes, sends everything: a client must stop at 100 and not reuse the connection.
            h.close_connection = True
            h.send_body(body, content_length=100)
        elif rest == "long":
            h.close_connection = True
            h.send_body(body, content_length=len(body) + 1000)
        else:
            h.send_body(b"expected /lying-length/short or /lying-length/long", "text/plain", 404)

    def _redirect(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        hops = int(rest) if rest.isdigit() else 0
        if hops > 0:
            self._send_redirect(h, f"/redirect/{hops - 1}")
        else:
            h.send_body(make_image_bytes(300, 300, seed=_seed_for("/redirect")))

    def _redirect_loop(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        size, _, index = rest.partition("/")
        n = max(1, int(size)) if size.isdigit() else 1
        i = int(index) if index.isdigit() else -1
        self._send_redirect(h, f"/redirect-loop/{n}/{(i + 1) % n}")

    def _redirect_to(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        port, _, target = rest.partition("/")
        if not port.isdigit():
            h.send_body(b"expected /redirect-to/<port>/<path>", "text/plain", 400)
            return
        suffix = urlsplit(h.path).query
        self._send_redirect(h, f"http://127.0.0.1:{port}/{target}" + (f"?{suffix}" if suffix else ""))

    def _robots_tag(self, h: _Handler, rest: str, query: dict[str, list[str]], count: int) -> None:
        body = make_image_bytes(300, 300, seed=_seed_for(h.path))
        h.send_body(body, headers={"X-Robots-Tag": unquote(rest)})

    @staticmethod
    def _send_redirect(h: _Handler, location: str, status: int = 302) -> None:
        h.send_body(b"", "text/plain", status, {"Location": location})
