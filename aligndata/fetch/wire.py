"""The wire under the fetcher: guarded connections, TLS, one GET's response head and body decoding, a keep-alive pool.

A thin layer over the standard library, not urllib3's request layers nor requests: those cost ~0.5 ms of CPU per
fetch each (pool-key normalisation, header dicts, Retry/Timeout objects, response wrappers, the chunk loop;
requests' environment merging, hooks and cookie jar). Policy (redirects, retries, caps, the watchdog, failure
classification) stays in fetch.py; this module only moves bytes.

* New connections come from ``netguard.connect_guarded`` (DNS through its ``CachedResolver``, every address
  checked, the socket connected to a checked one) and are wrapped in TLS with one context per fetcher
  (certifi's CA bundle, loaded once; urllib3's TLS versions and ciphers; SNI and certificate checked against the
  URL's host).
* A response head is read by a small parser (the email package http.client uses cost ~40 us a response); the
  body's framing (Content-Length, chunked, read to close) is http.client's.
* gzip/deflate bodies are decoded incrementally, never more than asked for, so the fetcher's byte cap stops a
  bomb.
* Kept-alive connections are pooled per (scheme, host, port) and shared by all threads.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
import zlib
from collections import OrderedDict
from typing import Any
from urllib.parse import unquote

from urllib3.util import wait_for_read
from urllib3.util.ssl_ import create_urllib3_context

# TCP_NODELAY, as urllib3 set on every connection it opened.
SOCKET_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """The TLS context of every HTTPS connection of a fetcher: certificates and host names verified against
    ``cafile`` (default: certifi's bundle, as requests used; the system store when certifi is absent)."""
    context = create_urllib3_context()  # CERT_REQUIRED, check_hostname, urllib3's TLS versions and ciphers
    context.set_alpn_protocols(["http/1.1"])  # what urllib3 offered on every handshake
    if cafile is None:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            context.load_default_certs()
            return context
    context.load_verify_locations(cafile=cafile)
    return context


def basic_auth_header(auth: str | None) -> str | None:
    """``Authorization`` value for the ``user:password`` part of a URL, as requests sent it, else None."""
    if not auth or ":" not in auth:
        return None  # requests sent no credentials for "user@host" either
    user, _, password = auth.partition(":")
    user, password = unquote(user), unquote(password)
    if not user and not password:
        return None
    pair = f"{user}:{password}"
    try:
        raw = pair.encode("latin1")
    except UnicodeEncodeError:
        raw = pair.encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def tls_server_name(host: str) -> str:
    """The name TLS sends (SNI) and checks the certificate against: the URL's host without a trailing dot,
    brackets or an IPv6 zone, as urllib3 sent it."""
    name = host.strip("[]").rstrip(".")
    return name.partition("%")[0] if ":" in name else name


class Decoder:
    """Incremental decoding of one gzip or deflate layer that never returns more than asked for, so a bomb stops
    at the byte cap. As urllib3 decoded: gzip may have several members and garbage after a complete member is
    ignored; deflate is zlib-wrapped (RFC 9110) or, as some servers send it, raw. urllib3 told those two apart
    by trying again after an error; the zlib header's first two bytes tell it here, so no input is kept."""

    __slots__ = ("_gzip", "_obj", "_pending", "_ended", "_after_member")

    def __init__(self, coding: str):
        self._gzip = coding != "deflate"
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS) if self._gzip else None  # deflate: see decode()
        self._pending = b""  # input not decoded yet: the last call's limit was reached
        self._ended = False  # the stream is over: anything after it is ignored
        self._after_member = False  # a gzip member has ended

    def decode(self, data: bytes, limit: int) -> bytes:
        """Up to ``limit`` (>= 1) decoded bytes from ``data`` and what was left over; less only once all input
        is consumed. Raises ``zlib.error`` for data that is not what its Content-Encoding says."""
        data = self._pending + data
        if self._obj is None:
            if len(data) < 2:
                self._pending = data
                return b""
            self._obj = zlib.decompressobj(zlib.MAX_WBITS if _has_zlib_header(data) else -zlib.MAX_WBITS)
        out = b""
        while data and len(out) < limit and not self._ended:
            if self._obj.eof:  # a gzip member ended and more follows; nothing follows a deflate stream
                if not self._gzip:
                    self._ended = True
                    break
                self._after_member = True
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out += self._obj.decompress(data, limit - len(out))
            except zlib.error:
                if not self._after_member:
                    raise
                self._ended = True  # trailing garbage after a complete gzip member
                break
            data = self._obj.unused_data if self._obj.eof else self._obj.unconsumed_tail
        self._pending = b"" if self._ended else data
        return out

    @property
    def pending(self) -> bool:
        return bool(self._pending)


def _has_zlib_header(data: bytes) -> bool:
    """RFC 1950: compression method 8 with a window of at most 32 KiB, and a header checksum."""
    cmf, flg = data[0], data[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0


class Decoders:
    """Several Content-Encoding layers, undone in reverse order of their listing; each one capped like the last."""

    __slots__ = ("_layers",)

    def __init__(self, layers: list[Decoder]):
        self._layers = layers

    def decode(self, data: bytes, limit: int) -> bytes:
        out = b""
        while True:
            for layer in self._layers:
                data = layer.decode(data, limit - len(out))
            out += data
            if len(out) >= limit or not any(layer.pending for layer in self._layers):
                return out
            data = b""  # an inner layer stopped at the limit: let it go on with what it holds


_CODINGS = frozenset({"gzip", "x-gzip", "deflate"})


def decoder_for(content_encoding: str | None) -> Decoder | Decoders | None:
    """The decoder for a response's Content-Encoding, or None to keep the body as sent: identity, or a coding we
    did not ask for (left to the image decoder to judge, as urllib3 left it)."""
    if not content_encoding:
        return None
    codings = [c for c in (c.strip().lower() for c in content_encoding.split(",")) if c and c != "identity"]
    if not codings or not _CODINGS.issuperset(codings):
        return None
    layers = [Decoder(coding) for coding in reversed(codings)]
    return layers[0] if len(layers) == 1 else Decoders(layers)


class Headers:
    """A response's header fields by lowercased name, values in arrival order (what http.client's ``begin`` and
    we read: ``get`` gives the first value, ``get_all`` every one)."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, list[str]]):
        self._fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._fields.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str, default: list[str] | None = None) -> list[str] | None:
        return self._fields.get(name.lower(), default)


# http.client's limits on a response head.
_MAX_LINE = 65536
_MAX_HEADER_LINES = 100


def read_header_fields(fp: Any) -> dict[str, list[str]]:
    """The header fields up to the blank line, under http.client's limits. A folded line (obs-fold) continues
    the previous value; a line without a colon is not a field and is skipped."""
    fields: dict[str, list[str]] = {}
    values: list[str] | None = None
    lines = 0
    while True:
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        lines += 1
        if lines > _MAX_HEADER_LINES:
            raise http.client.HTTPException(f"got more than {_MAX_HEADER_LINES} headers")
        if line in (b"\r\n", b"\n", b""):
            return fields
        text = line.decode("iso-8859-1")
        if text[0] in " \t":
            folded = text.strip()
            if values is not None and folded:
                values[-1] = f"{values[-1]} {folded}"
            continue
        name, colon, value = text.partition(":")
        if colon:
            values = fields.setdefault(name.strip().lower(), [])
            values.append(value.strip())


class Response(http.client.HTTPResponse):
    """http.client's response with a lighter head parser: the email package it uses costs ~40 us of CPU per
    response, a tenth of a whole fetch. ``begin`` is http.client's (identical from 3.10 to 3.13) but for that
    parser, and it skips every interim 1xx response (RFC 9110 15.2), not only 100 Continue; the framing that
    follows (Content-Length, chunked, read to close) is http.client's own."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if not 100 <= status < 200 or status == http.client.SWITCHING_PROTOCOLS:
                break
            read_header_fields(self.fp)  # an interim response (100 Continue, 103 Early Hints): skipped
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = Headers(read_header_fields(self.fp))  # type: ignore[assignment]
        transfer_coding = self.headers.get("transfer-encoding")
        self.chunked = bool(transfer_coding) and transfer_coding.lower() == "chunked"
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None if self.chunked else _content_length(self.headers.get("content-length"))
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200:
            self.length = 0  # (and no HEAD here: every request is a GET)
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True  # the body ends when the connection does


def _content_length(value: str | None) -> int | None:
    """http.client's reading of Content-Length: an int, else None (no length: read to the close)."""
    if not value:
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None


class Connection:
    """One guarded connection (see ``Fetcher._open``) and the response last read on it."""

    __slots__ = ("key", "sock", "response")

    def __init__(self, key: tuple[str, str, int], sock: socket.socket):
        self.key = key  # (scheme, host, port)
        self.sock = sock
        self.response: http.client.HTTPResponse | None = None

    def exchange(self, request: bytes) -> http.client.HTTPResponse:
        """Send ``request`` and read the response's status line and headers; the body is left to the caller."""
        self.sock.sendall(request)
        self.response = Response(self.sock, method="GET")
        self.response.begin()
        return self.response

    def reusable(self) -> bool:
        """An idle connection can carry another request unless it shows readable: the server closed it, or sent
        bytes nobody asked for (a body longer than its Content-Length)."""
        return self.sock.fileno() != -1 and not wait_for_read(self.sock, timeout=0.0)

    def close(self) -> None:
        if self.response is not None:
            self.response.close()  # drops its file object's hold on the socket, so the close below is final
        self.sock.close()


class ConnectionPool:
    """Idle keep-alive connections shared by all threads: at most ``maxsize`` per (scheme, host, port), the most
    recently returned reused first; beyond ``max_origins`` origins the least recently used one's are closed."""

    def __init__(self, maxsize: int, max_origins: int = 128):
        self.maxsize, self.max_origins = maxsize, max_origins
        self._idle: OrderedDict[tuple[str, str, int], list[Connection]] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self.opened = 0  # connections opened so far (observability, tests)

    def take(self, key: tuple[str, str, int]) -> Connection | None:
        """An idle connection to ``key`` still fit for a request, or None."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                conn = idle.pop()
            if conn.reusable():
                return conn
            conn.close()

    def give(self, conn: Connection) -> None:
        """Keep ``conn`` (its response read to the end) for the next request to its origin."""
        dropped: list[Connection] = []
        with self._lock:
            idle = self._idle.get(conn.key)
            if idle is None:
                idle = self._idle[conn.key] = []
                while len(self._idle) > self.max_origins:
                    dropped += self._idle.popitem(last=False)[1]
            else:
                self._idle.move_to_end(conn.key)
            if self._closed or len(idle) >= self.maxsize:
                dropped.append(conn)
            else:
                conn.response = None
                idle.append(conn)
        for old in dropped:
            old.close()

    def count_opened(self) -> None:
        with self._lock:
            self.opened += 1

    def idle(self, key: tuple[str, str, int]) -> int:
        """Idle connections kept for ``key`` (observability, tests)."""
        with self._lock:
            return len(self._idle.get(key, ()))

    def close(self) -> None:
        """Close every idle connection; connections given back from now on are closed too."""
        with self._lock:
            self._closed = True
            dropped = [conn for idle in self._idle.values() for conn in idle]
            self._idle.clear()
        for conn in dropped:
            conn.close()
