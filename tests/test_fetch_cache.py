"""The resume cache: outcomes round-trip exactly; half-written or foreign files are ignored, never trusted."""

from __future__ import annotations

import os

from aligndata.pipeline.fetch import FetchResult
from aligndata.pipeline.fetch_cache import FetchCache


def _ok(url: str, data: bytes) -> FetchResult:
    return FetchResult(url=url, ok=True, data=data, reason=None, detail="", status=200, content_type="image/jpeg",
                       final_url=url + "?signed", attempts=2)


def test_success_and_failure_round_trip(tmp_path):
    cache = FetchCache(str(tmp_path / "cache"))
    assert cache.get("http://a/1.jpg") is None
    cache.put(_ok("http://a/1.jpg", b"\xff\xd8jpeg bytes\n\nwith newlines"))
    cache.put(FetchResult(url="http://a/2.jpg", ok=False, data=None, reason="download_failed", detail="http_404",
                          status=404, content_type="text/html", final_url="http://a/2.jpg", attempts=1))
    hit = cache.get("http://a/1.jpg")
    assert (hit.ok, hit.data, hit.status, hit.final_url, hit.attempts) == (
        True, b"\xff\xd8jpeg bytes\n\nwith newlines", 200, "http://a/1.jpg?signed", 0)  # 0: nothing requested now
    miss = cache.get("http://a/2.jpg")
    assert (miss.ok, miss.data, miss.reason, miss.detail, miss.status) == (False, None, "download_failed", "http_404",
                                                                           404)
    leftovers = [n for _, _, names in os.walk(tmp_path) for n in names if ".tmp-" in n]
    assert leftovers == []  # written under a temporary name, then renamed


def test_truncated_or_foreign_entries_are_refetched_not_trusted(tmp_path):
    cache = FetchCache(str(tmp_path))
    cache.put(_ok("http://a/1.jpg", b"x" * 1000))
    path = cache._path("http://a/1.jpg")
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[:-10])  # a body cut short
    assert cache.get("http://a/1.jpg") is None
    open(path, "wb").write(b"something else entirely")
    assert cache.get("http://a/1.jpg") is None
    cache.clear()
    assert not os.path.exists(tmp_path)
