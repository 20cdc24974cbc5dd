"""The fetcher's own HTTP client (urllib3 directly, no requests): what requests used to do for us, still done.

tests/test_fetch.py covers the fetcher's behaviour end to end; these tests cover the parts that moved when the
client changed: TLS verification with the shared context, credentials in URLs, URL normalisation, keep-alive
reuse under the wall-clock cap, and the absence of any proxy or cookie jar.
"""

from __future__ import annotations

import base64
import ssl
import uuid
from pathlib import Path

import pytest
from httpserver import LocalServer, make_tls_files

from aligndata.filters import reasons
from aligndata.pipeline import fetch
from aligndata.pipeline.fetch import FetchConfig, Fetcher, basic_auth_header, tls_context


def local_config(**overrides: object) -> FetchConfig:
    values: dict[object, object] = dict(allow_private_networks=True, timeout=5.0, backoff=0.05, retries=0)
    values.update(overrides)
    return FetchConfig(**values)  # type: ignore[arg-type]


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


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
# Connections: kept alive between requests, never through a proxy, no cookie jar


def test_connections_are_reused_and_the_wall_clock_cap_still_applies(http_server: LocalServer) -> None:
    with LocalServer() as server, Fetcher(local_config(timeout=5.0, total_timeout=1.5)) as f:
        first, second = unique("/keep"), unique("/keep")
        server.add_image(first, 30, 30)
        server.add_image(second, 30, 30)
        assert f.fetch(server.url(first)).ok
        assert f.fetch(server.url(second)).ok
        pool = f._pools.connection_from_url(server.base)
        assert pool.num_connections == 1  # the second request reused the first one's connection
        # The pooled connection is watched like a new one: a drip on it ends at the attempt's deadline.
        result = f.fetch(server.url("/drip"))
        assert (result.ok, result.detail) == (False, "total_timeout")
        assert pool.num_connections == 1


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
