"""Network guard: keep the fetcher off private, loopback and other non-public addresses (SSRF protection).

Scraped URLs are attacker-controlled input. Without a guard, a row such as ``http://169.254.169.254/...``
(cloud metadata) or a public host that redirects, or whose DNS answer rebinds, to ``10.0.0.5`` makes the
pipeline fetch from its own network. Three layers:

* :func:`check_url` — syntax only, no DNS: the caller uses it to mark unusable rows ``invalid_row``.
* :func:`check_hop` — every URL about to be requested (the first one and each redirect target): syntax plus
  a refusal of IP-literal hosts in blocked ranges, before any packet is sent.
* :func:`connect_guarded` — opens every new connection: resolves the host itself (through the policy's
  :class:`CachedResolver`), checks every resolved address with :func:`is_blocked_ip` and connects to a checked
  address only. The check happens on every new connection (so on every redirect hop and retry), and because
  the socket is connected to the very address that was checked, a DNS answer that changes between check and
  use (rebinding) cannot slip through. TLS, layered on top by the caller, keeps the real host name for SNI and
  certificate checks; the Host header is untouched. The fetcher's own HTTP client opens its connections with
  it; :func:`guarded_pool_classes` makes urllib3 connection pools that do, and :class:`GuardedHTTPAdapter`
  installs those in a ``requests`` session, for code that wants requests.

No proxy is ever used: the fetcher's client has none, and the adapter refuses them, because through a proxy
the guard would only see the proxy's address.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from aligndata.filters import reasons

ALLOWED_SCHEMES = ("http", "https")
# Longer URLs are refused by most servers anyway (8 KiB is the usual request-line limit).
MAX_URL_LENGTH = 8192

_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated "::a.b.c.d" form

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddressError(Exception):
    """A connection was refused because the host resolved only to blocked (non-public) addresses.

    Deliberately not an ``OSError``: urllib3 and requests would wrap an ``OSError`` into a generic
    connection error and a retry; this one propagates unchanged to the caller.
    """

    def __init__(self, ip: str, host: str):
        super().__init__(f"refusing to connect to {host!r}: address {ip} is not a public address")
        self.ip = ip
        self.host = host


# ---------------------------------------------------------------------------------------------------------
# Address classification


def _ipv4_blocked(addr: ipaddress.IPv4Address) -> bool:
    # is_global alone misses multicast (224/4 counts as global in the stdlib), hence the explicit flags.
    return (
        not addr.is_global
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_private
        or addr.is_unspecified
    )


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64 well-known prefix), else None."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _NAT64_WELL_KNOWN:
        # DNS64 on IPv6-only networks synthesises these for every IPv4-only site: judge the IPv4 inside.
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def _ipv6_blocked(addr: ipaddress.IPv6Address) -> bool:
    embedded = _embedded_ipv4(addr)
    if embedded is not None:
        return _ipv4_blocked(embedded)
    if addr in _IPV4_COMPATIBLE:
        return True  # "::127.0.0.1" and friends: deprecated, and is_global wrongly says True for them
    # Teredo (2001::/32) is inside 2001::/23, which is_global already rejects.
    return (
        not addr.is_global
        or addr.is_multicast
        or addr.is_site_local  # fec0::/10: is_global says True for it
        or addr.is_reserved
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_private
        or addr.is_unspecified
    )


@functools.lru_cache(maxsize=65536)  # a pure function, asked again for every connection to the same hosts
def is_blocked_ip(ip: str) -> bool:
    """True unless ``ip`` is a public unicast address. Unparseable input counts as blocked.

    Blocked: private (RFC 1918, fc00::/7), loopback, link-local (incl. 169.254.169.254 metadata),
    multicast, reserved, unspecified, shared address space 100.64/10, documentation/benchmark ranges,
    site-local fec0::/10, deprecated IPv4-compatible ::a.b.c.d, and IPv6 forms that embed a blocked IPv4
    address (IPv4-mapped ::ffff:a.b.c.d, 6to4 2002::/16, NAT64 64:ff9b::/96).
    """
    try:
        addr = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return True
    if isinstance(addr, ipaddress.IPv4Address):
        return _ipv4_blocked(addr)
    return _ipv6_blocked(addr)


def _literal_ip(host: str) -> IPAddress | None:
    if ":" not in host and not host[-1:].isdigit():
        return None  # a name (IPv4 literals end in a digit, IPv6 ones have colons): spare the failing parses
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------
# URL checks (no DNS)


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s")


def _judge(url: str) -> tuple[str | None, str]:
    """``(why url cannot be fetched or None, its host name)``, the URL parsed once (surrounding whitespace
    ignored): check_url's verdict, and the host check_hop goes on to judge."""
    if not isinstance(url, str) or not url.strip():
        return "empty", ""
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        return "too_long", ""
    if _CONTROL_CHARS.search(url):
        return "control_character", ""  # CR/LF inside a URL is a header-injection attempt
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in an IPv6 host
        return "unparseable", ""
    try:
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        return "bad_port", ""
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        return f"unsupported_scheme:{scheme or 'none'}", ""
    host = parts.hostname
    if not host:
        return "no_host", ""
    if _WHITESPACE.search(host):
        return "bad_host", host
    if port == 0:
        return "bad_port", host
    return None, host


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be fetched, judged from its text alone (no DNS), or None when it is usable.

    Details: ``empty``, ``too_long``, ``control_character``, ``unparseable``, ``bad_port``,
    ``unsupported_scheme:<scheme>``, ``no_host``, ``bad_host``. Credentials in the URL (``user:pass@host``)
    are accepted: they are part of what the page published, and the guard judges the real host either way.
    """
    return _judge(url)[0]


def check_hop(url: str, policy: AddressPolicy | None = None) -> tuple[str, str] | None:
    """Check a URL about to be requested — the first one or a redirect target — before any connection.

    Returns ``(reason, detail)`` to refuse it, or None. Unusable URLs give ``download_failed`` with
    ``invalid_url:<why>``; an IP-literal host that ``policy`` (default: block all non-public addresses) does
    not allow gives ``blocked_address`` with ``blocked:<ip>``. Host names are judged after DNS resolution,
    by :func:`connect_guarded`, on every connection.
    """
    problem, host = _judge(url)
    if problem is not None:
        return reasons.DOWNLOAD_FAILED, f"invalid_url:{problem}"
    literal = _literal_ip(host)
    if literal is not None and not (policy or AddressPolicy()).allows(str(literal)):
        return reasons.BLOCKED_ADDRESS, f"blocked:{literal}"
    return None


# ---------------------------------------------------------------------------------------------------------
# Connection-level guard


class CachedResolver:
    """getaddrinfo with a per-worker cache: a host's addresses are looked up once per ``ttl`` seconds (failures
    once per ``negative_ttl``), instead of once per image. The guard still checks every address it connects to."""

    def __init__(self, ttl: float = 300.0, negative_ttl: float = 30.0, max_entries: int = 100_000):
        self.ttl, self.negative_ttl, self.max_entries = ttl, negative_ttl, max_entries
        self._cache: dict[tuple, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self.lookups = 0  # real resolutions made (observability, tests)

    def getaddrinfo(self, host: str, port: int, family: int, socktype: int) -> list[tuple[Any, ...]]:
        key = (host, port, family, socktype)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            if isinstance(hit[1], socket.gaierror):
                raise hit[1]
            return hit[1]
        self.lookups += 1
        try:
            infos = socket.getaddrinfo(host, port, family, socktype)
            entry = (now + self.ttl, infos)
        except socket.gaierror as exc:
            entry = (now + self.negative_ttl, exc)
        with self._lock:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()  # crude but bounded; a worker rarely sees this many hosts
            self._cache[key] = entry
        if isinstance(entry[1], socket.gaierror):
            raise entry[1]
        return entry[1]


class AddressPolicy:
    """Which addresses connections may reach, plus an optional hook told about every socket in use.

    Non-public addresses are refused unless ``allow_private_networks`` (everything allowed: tests, trusted
    intranets) or they fall in one of ``allowed_networks`` (CIDR strings, e.g. an internal mirror).
    ``on_response_socket(sock)`` is called, in the requesting thread, right before a response is read on a
    connection (new or reused from the pool) of :func:`guarded_pool_classes`, e.g. to enforce a wall-clock cap
    (the fetcher's own client registers its sockets with its watchdog directly).
    """

    def __init__(
        self,
        allow_private_networks: bool = False,
        allowed_networks: Iterable[str] = (),
        on_response_socket: Callable[[socket.socket], None] | None = None,
        resolver: CachedResolver | None = None,
    ):
        self.resolver = resolver or CachedResolver()
        self.allow_private_networks = allow_private_networks
        self.allowed_networks = tuple(_parse_network(n) for n in allowed_networks)
        self.on_response_socket = on_response_socket

    def allows(self, ip: str) -> bool:
        if self.allow_private_networks or not is_blocked_ip(ip):
            return True
        addr = _literal_ip(ip)
        return addr is not None and any(addr in net for net in self.allowed_networks)


def _parse_network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise ValueError(f"allowed network {cidr!r} is not a CIDR such as '10.1.2.0/24': {exc}") from None


def connect_guarded(
    policy: AddressPolicy,
    host: str,
    port: int,
    timeout: Any = _DEFAULT_TIMEOUT,
    source_address: tuple[str, int] | None = None,
    socket_options: Any = None,
    origin: Any = None,
) -> socket.socket:
    """A TCP socket to ``host``:``port`` connected to an address ``policy`` allows, and to nothing else.

    Raises :class:`BlockedAddressError` when every resolved address is refused, and urllib3's exceptions
    otherwise (``NameResolutionError``, ``ConnectTimeoutError``, ``NewConnectionError``), the vocabulary the
    fetcher's failure classification reads whichever client opened the connection. ``timeout`` (seconds, or
    None to block) becomes the socket's timeout; ``origin`` only names the caller in error messages.
    """
    host = host.strip("[]")
    try:
        infos = policy.resolver.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameResolutionError(host, origin, exc) from exc
    allowed = [info for info in infos if policy.allows(info[4][0])]
    if not allowed:
        raise BlockedAddressError(infos[0][4][0] if infos else host, host)
    sock = _connect_first(allowed, host, timeout, source_address, socket_options, origin)
    _verify_peer(sock, policy, host)
    sys.audit("http.client.connect", origin, host, port)
    return sock


def _connect_first(
    infos: list[tuple[Any, ...]], host: str, timeout: Any, source_address: Any, socket_options: Any, origin: Any
) -> socket.socket:
    """Connect to the first reachable address, mapping errors the way urllib3 does."""
    last_error: OSError | None = None
    timed_out = False
    for family, socktype, proto, _canonname, sockaddr in infos:
        sock = socket.socket(family, socktype, proto)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            if timeout is not _DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except TimeoutError as exc:  # socket.timeout is TimeoutError since 3.10
            sock.close()
            last_error = exc
            timed_out = True
        except OSError as exc:
            sock.close()
            last_error = exc
            timed_out = False
    assert last_error is not None
    if timed_out:
        message = f"Connection to {host} timed out. (connect timeout={timeout})"
        raise ConnectTimeoutError(origin, message) from last_error
    raise NewConnectionError(origin, f"Failed to establish a new connection: {last_error}") from last_error


def _verify_peer(sock: socket.socket, policy: AddressPolicy, host: str) -> None:
    # Defence in depth: we connected to a checked address, but confirm what the kernel actually did.
    peer = sock.getpeername()[0]
    if not policy.allows(peer):
        sock.close()
        raise BlockedAddressError(peer, host)


class _GuardedConnectionMixin:
    """Replaces urllib3's ``_new_conn`` with :func:`connect_guarded`."""

    policy: AddressPolicy  # set on the per-adapter subclass
    # Provided by urllib3's HTTPConnection (annotations only, so they do not shadow it):
    _dns_host: str
    host: str
    port: int
    timeout: Any
    source_address: tuple[str, int] | None
    socket_options: Any
    sock: Any

    def _new_conn(self) -> socket.socket:
        return connect_guarded(
            self.policy, self._dns_host, self.port, self.timeout, self.source_address, self.socket_options, self
        )

    def getresponse(self) -> Any:
        hook = self.policy.on_response_socket
        sock = self.sock
        if hook is not None and sock is not None:
            hook(sock)
        return super().getresponse()  # type: ignore[misc]


class GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    policy = AddressPolicy()


class GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    policy = AddressPolicy()


def guarded_pool_classes(policy: AddressPolicy) -> dict[str, type[HTTPConnectionPool]]:
    """Connection-pool classes whose connections enforce ``policy`` (one set per PoolManager or adapter), for
    ``PoolManager.pool_classes_by_scheme``."""
    http_conn = type("PolicyHTTPConnection", (GuardedHTTPConnection,), {"policy": policy})
    https_conn = type("PolicyHTTPSConnection", (GuardedHTTPSConnection,), {"policy": policy})
    return {
        "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


@functools.cache
def _guarded_http_adapter_class() -> type:
    """The requests adapter class, built on first use so that importing this module never imports requests."""
    from requests.adapters import HTTPAdapter

    class GuardedHTTPAdapter(HTTPAdapter):
        """A ``requests`` adapter that refuses blocked addresses after DNS resolution, on every connection.

        Mount it for both ``http://`` and ``https://``. A refused connection raises :class:`BlockedAddressError`
        out of ``Session.request``.
        """

        __attrs__ = [*HTTPAdapter.__attrs__, "policy"]

        def __init__(self, policy: AddressPolicy | None = None, **kwargs: Any):
            self.policy = policy or AddressPolicy()
            super().__init__(**kwargs)

        def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
                             ) -> None:
            super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
            self.poolmanager.pool_classes_by_scheme = guarded_pool_classes(self.policy)

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            raise ValueError(
                f"proxy {proxy!r} refused: through a proxy the address guard would only see the proxy's address"
            )

    GuardedHTTPAdapter.__module__ = __name__
    GuardedHTTPAdapter.__qualname__ = "GuardedHTTPAdapter"  # found by name, through __getattr__ below
    return GuardedHTTPAdapter


def __getattr__(name: str):
    """``GuardedHTTPAdapter`` (for code that wants requests) is made on first access: requests is not imported
    by this module, nor by anything that imports it."""
    if name == "GuardedHTTPAdapter":
        return _guarded_http_adapter_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
