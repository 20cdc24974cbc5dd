"""The address guard: IP classification, URL checks, and refusal after DNS on every connection.

Only loopback traffic: blocked private addresses are IP literals refused before any connection is made.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests
import urllib3.exceptions as u3
from httpserver import LocalServer, make_tls_files

from aligndata.filters import reasons
from aligndata.fetch.guard import (
    AddressPolicy,
    BlockedAddressError,
    CachedResolver,
    GuardedHTTPAdapter,
    check_hop,
    connect_guarded,
    check_url,
    is_blocked_ip,
)


@pytest.mark.parametrize(
    ("ip", "blocked"),
    [
        ("10.0.0.1", True),
        ("172.16.0.1", True),
        ("172.31.255.255", True),
        ("172.32.0.1", False),  # just outside 172.16/12
        ("192.168.1.1", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("100.64.0.1", True),  # shared address space (CGNAT)
        ("100.127.255.255", True),
        ("100.128.0.1", False),  # just outside 100.64/10
        ("224.0.0.1", True),  # multicast: the stdlib calls it global
        ("239.255.255.250", True),
        ("0.0.0.0", True),
        ("255.255.255.255", True),
        ("240.0.0.1", True),  # reserved
        ("192.0.2.1", True),  # documentation
        ("198.18.0.1", True),  # benchmarking
        ("::ffff:127.0.0.1", True),  # IPv4-mapped loopback
        ("::ffff:10.1.2.3", True),
        ("::ffff:8.8.8.8", False),  # IPv4-mapped public address
        ("::127.0.0.1", True),  # deprecated IPv4-compatible form
        ("fe80::1", True),
        ("fe80::1%eth0", True),
        ("fec0::1", True),  # site-local: the stdlib calls it global
        ("fc00::1", True),
        ("fd12:3456::1", True),
        ("ff02::1", True),
        ("ff0e::1", True),  # global-scope multicast
        ("::", True),
        ("2002:7f00:1::", True),  # 6to4 wrapping 127.0.0.1
        ("2002:a00:1::", True),  # 6to4 wrapping 10.0.0.1
        ("2002:808:808::", False),  # 6to4 wrapping 8.8.8.8
        ("64:ff9b::7f00:1", True),  # NAT64 wrapping 127.0.0.1
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 wrapping 169.254.169.254
        ("64:ff9b::808:808", False),  # NAT64 wrapping 8.8.8.8 (DNS64 networks need it)
        ("2001::1", True),  # Teredo
        ("2001:db8::1", True),  # documentation
        ("8.8.8.8", False),
        ("1.1.1.1", False),
        ("2001:4860::8888", False),
        ("[2001:4860::8888]", False),
        ("not an ip", True),
        ("", True),
        ("999.1.1.1", True),
    ],
)
def test_is_blocked_ip(ip: str, blocked: bool) -> None:
    assert is_blocked_ip(ip) is blocked


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://example.com/a.jpg", None),
        ("https://example.com/a.jpg?x=1#frag", None),
        ("HTTPS://EXAMPLE.COM/A.JPG", None),
        ("http://user:secret@example.com/a.jpg", None),  # credentials are accepted
        ("http://example.com:8080/a.jpg", None),
        ("http://[2001:db8::1]:8080/a.jpg", None),
        ("  http://example.com/a.jpg\n", None),  # surrounding whitespace is ignored
        ("http://example.com/with space.jpg", None),  # requests percent-encodes it
        ("", "empty"),
        ("   ", "empty"),
        ("ftp://example.com/a.jpg", "unsupported_scheme:ftp"),
        ("javascript:alert(1)", "unsupported_scheme:javascript"),
        ("data:image/png;base64,AAAA", "unsupported_scheme:data"),
        ("file:///etc/passwd", "unsupported_scheme:file"),
        ("//example.com/a.jpg", "unsupported_scheme:none"),
        ("example.com/a.jpg", "unsupported_scheme:none"),
        ("http:///a.jpg", "no_host"),
        ("http://", "no_host"),
        ("http://:80/a.jpg", "no_host"),
        ("http://exa mple.com/a.jpg", "bad_host"),
        ("http://example.com:99999/a.jpg", "bad_port"),
        ("http://example.com:port/a.jpg", "bad_port"),
        ("http://example.com:0/a.jpg", "bad_port"),
        ("http://[::1/a.jpg", "unparseable"),
        ("http://example.com/a\r\nX-Injected: 1", "control_character"),
        ("http://example.com/a\x00.jpg", "control_character"),
        ("http://example.com/" + "a" * 8200, "too_long"),
    ],
)
def test_check_url(url: str, problem: str | None) -> None:
    assert check_url(url) == problem


def test_check_url_length_boundary() -> None:
    prefix = "http://example.com/"
    assert check_url(prefix + "a" * (8192 - len(prefix))) is None
    assert check_url(prefix + "a" * (8193 - len(prefix))) == "too_long"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080/a.jpg", (reasons.BLOCKED_ADDRESS, "blocked:127.0.0.1")),
        ("http://10.0.0.1/a.jpg", (reasons.BLOCKED_ADDRESS, "blocked:10.0.0.1")),
        ("http://169.254.169.254/latest/meta-data/", (reasons.BLOCKED_ADDRESS, "blocked:169.254.169.254")),
        ("http://[::1]/a.jpg", (reasons.BLOCKED_ADDRESS, "blocked:::1")),
        ("http://[::ffff:10.0.0.1]/a.jpg", (reasons.BLOCKED_ADDRESS, "blocked:::ffff:a00:1")),
        ("http://8.8.8.8/a.jpg", None),  # public literal: allowed (nothing is sent by the check)
        ("http://example.com/a.jpg", None),  # names are judged after DNS, by the adapter
        ("ftp://example.com/a.jpg", (reasons.DOWNLOAD_FAILED, "invalid_url:unsupported_scheme:ftp")),
        ("http:///a.jpg", (reasons.DOWNLOAD_FAILED, "invalid_url:no_host")),
    ],
)
def test_check_hop(url: str, expected: tuple[str, str] | None) -> None:
    assert check_hop(url) == expected


def test_check_hop_honours_the_policy() -> None:
    assert check_hop("http://127.0.0.1/a.jpg", AddressPolicy(allow_private_networks=True)) is None
    only_mirror = AddressPolicy(allowed_networks=["10.1.2.0/24"])
    assert check_hop("http://10.1.2.3/a.jpg", only_mirror) is None
    assert check_hop("http://10.1.3.1/a.jpg", only_mirror) == (reasons.BLOCKED_ADDRESS, "blocked:10.1.3.1")
    # Invalid URLs stay invalid whatever the policy.
    assert check_hop("gopher://10.1.2.3/", only_mirror) == (
        reasons.DOWNLOAD_FAILED,
        "invalid_url:unsupported_scheme:gopher",
    )


def test_address_policy_rejects_a_malformed_network() -> None:
    with pytest.raises(ValueError, match="not a CIDR"):
        AddressPolicy(allowed_networks=["10.0.0.0/33"])


# --------------------------------------------------------------------------------------------------------
# connect_guarded: how every new connection is opened (the fetcher's own and the adapter's)


def test_connect_guarded_connects_to_a_checked_address_only(http_server: LocalServer) -> None:
    # "localhost" resolves to ::1 and 127.0.0.1 here: only the allowed one may be used.
    policy = AddressPolicy(allowed_networks=["127.0.0.1/32"])
    sock = connect_guarded(policy, "localhost", http_server.port, 5.0)
    try:
        assert sock.getpeername()[0] == "127.0.0.1"
        assert sock.gettimeout() == 5.0
    finally:
        sock.close()


def test_connect_guarded_refuses_before_connecting(http_server: LocalServer) -> None:
    with pytest.raises(BlockedAddressError) as info:
        connect_guarded(AddressPolicy(), "localhost", http_server.port, 5.0)
    assert is_blocked_ip(info.value.ip) and info.value.host == "localhost"
    with pytest.raises(BlockedAddressError):
        connect_guarded(AddressPolicy(), "[::1]", http_server.port, 5.0)  # brackets as URLs write them


class _FailingResolver(CachedResolver):
    """A resolver whose DNS is down (no query leaves the machine)."""

    def getaddrinfo(self, host: str, port: int, family: int, socktype: int) -> list:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")


def test_connect_guarded_errors_are_urllib3s_so_they_classify_alike() -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(u3.NewConnectionError) as refused:
        connect_guarded(AddressPolicy(allow_private_networks=True), "127.0.0.1", port, 5.0)
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)
    with pytest.raises(u3.NameResolutionError) as unresolved:
        connect_guarded(AddressPolicy(resolver=_FailingResolver()), "example.com", 80, 5.0)
    assert unresolved.value.__cause__.errno == socket.EAI_AGAIN


def _session(policy: AddressPolicy) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    adapter = GuardedHTTPAdapter(policy, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def test_adapter_refuses_a_blocked_ip_literal_before_connecting(http_server: LocalServer) -> None:
    http_server.add("/guard/literal.jpg", b"secret")
    with _session(AddressPolicy()) as session, pytest.raises(BlockedAddressError) as info:
        session.get(http_server.url("/guard/literal.jpg"), timeout=5)
    assert info.value.ip == "127.0.0.1"
    assert info.value.host == "127.0.0.1"
    assert http_server.hits("/guard/literal.jpg") == 0


def test_adapter_refuses_a_name_that_resolves_to_loopback(http_server: LocalServer) -> None:
    # "localhost" comes from /etc/hosts: the refusal happens after resolution, before connecting.
    http_server.add("/guard/name.jpg", b"secret")
    url = f"http://localhost:{http_server.port}/guard/name.jpg"
    with _session(AddressPolicy()) as session, pytest.raises(BlockedAddressError) as info:
        session.get(url, timeout=5)
    assert is_blocked_ip(info.value.ip)
    assert info.value.host == "localhost"
    assert http_server.hits("/guard/name.jpg") == 0


def test_adapter_connects_when_allowed_and_reports_sockets(http_server: LocalServer) -> None:
    http_server.add("/guard/allowed.jpg", b"fine")
    seen: list[socket.socket] = []
    policy = AddressPolicy(allowed_networks=["127.0.0.1/32"], on_response_socket=seen.append)
    with _session(policy) as session:
        response = session.get(f"http://localhost:{http_server.port}/guard/allowed.jpg", timeout=5)
    assert response.content == b"fine"
    assert http_server.hits("/guard/allowed.jpg") == 1
    assert len(seen) == 1 and isinstance(seen[0], socket.socket)


def test_adapter_checks_every_redirect_hop(http_server: LocalServer, other_loopback_server: LocalServer) -> None:
    # requests' own redirect handling opens a new connection per hop; each one passes the guard.
    policy = AddressPolicy(allowed_networks=["127.0.0.2/32"])
    source = other_loopback_server
    http_server.add("/guard/hop-target.jpg", b"secret")
    location = f"http://localhost:{http_server.port}/guard/hop-target.jpg"
    source.add("/hop", b"", status=302, headers={"Location": location})
    with _session(policy) as session, pytest.raises(BlockedAddressError) as info:
        session.get(source.url("/hop"), timeout=5)
    assert info.value.ip == "127.0.0.1"
    assert source.hits("/hop") == 1
    assert http_server.hits("/guard/hop-target.jpg") == 0


def test_adapter_refuses_proxies() -> None:
    adapter = GuardedHTTPAdapter(AddressPolicy())
    with pytest.raises(ValueError, match="proxy"):
        adapter.proxy_manager_for("http://proxy.example:3128")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with LocalServer(tls=make_tls_files(tmp_path_factory.mktemp("tls"))) as server:
        yield server


def test_https_keeps_sni_and_certificate_checks(tls_server: LocalServer) -> None:
    # The guard connects to the address it checked; TLS must still see the host name.
    assert tls_server.tls is not None and tls_server.base == f"https://127.0.0.1:{tls_server.port}"
    tls_server.add("/secure.jpg", b"over tls")
    url = f"https://localhost:{tls_server.port}/secure.jpg"
    with _session(AddressPolicy(allowed_networks=["127.0.0.1/32"])) as session:
        response = session.get(url, verify=str(tls_server.tls.ca), timeout=5)
        assert response.content == b"over tls"
        assert tls_server.sni_names[-1] == "localhost"
        with pytest.raises(requests.exceptions.SSLError):
            session.get(url, timeout=5)  # the public CA bundle does not trust the test CA


def test_https_to_a_blocked_address_never_starts_tls(tls_server: LocalServer) -> None:
    handshakes = len(tls_server.sni_names)
    with _session(AddressPolicy()) as session, pytest.raises(BlockedAddressError):
        session.get(f"https://localhost:{tls_server.port}/secure.jpg", timeout=5)
    assert len(tls_server.sni_names) == handshakes
