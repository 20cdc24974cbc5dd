"""The resume cache: outcomes round-trip exactly; torn, corrupt or foreign log bytes are ignored, never trusted."""

from __future__ import annotations

import io
import os
import threading

from aligndata.fetch.client import FetchResult
from aligndata.fetch.cache import FetchCache, decode_entries, encode_entry


def _ok(url: str, data: bytes) -> FetchResult:
    return FetchResult(url=url, ok=True, data=data, reason=None, detail="", status=200, content_type="image/jpeg",
                       final_url=url + "?signed", attempts=2)


def _failed(url: str) -> FetchResult:
    return FetchResult(url=url, ok=False, data=None, reason="download_failed", detail="http_404", status=404,
                       content_type="text/html", final_url=url, attempts=1)


def test_success_and_failure_round_trip_through_a_new_reader(tmp_path):
    cache = FetchCache(str(tmp_path / "cache"))
    with cache.for_shard(3) as shard:
        assert shard.get("http://a/1.jpg") is None
        shard.put(_ok("http://a/1.jpg", b"\xff\xd8jpeg bytes\n\nwith newlines"))
        shard.put(_failed("http://a/2.jpg"))
    resumed = cache.for_shard(3)  # what a resumed run sees
    hit = resumed.get("http://a/1.jpg").result
    assert (hit.ok, hit.data, hit.status, hit.content_type, hit.final_url, hit.attempts) == (
        True, b"\xff\xd8jpeg bytes\n\nwith newlines", 200, "image/jpeg", "http://a/1.jpg?signed", 0)  # 0: no request
    miss = resumed.get("http://a/2.jpg").result
    assert (miss.ok, miss.data, miss.reason, miss.detail, miss.status) == (False, None, "download_failed", "http_404",
                                                                           404)
    assert cache.for_shard(4).get("http://a/1.jpg") is None  # another shard's logs are not read
    assert cache.count() == 2
    assert [os.path.relpath(p, tmp_path / "cache").split(os.sep)[0] for p in cache.log_paths()] == ["00003"]


def _two_entry_log(tmp_path) -> tuple[FetchCache, str]:
    """A cache whose shard 0 has one log holding 1.jpg (b"x" * 1000) then 2.jpg (b"y" * 1000)."""
    cache = FetchCache(str(tmp_path))
    with cache.for_shard(0) as shard:
        shard.put(_ok("http://a/1.jpg", b"x" * 1000))
        shard.put(_ok("http://a/2.jpg", b"y" * 1000))
    (path,) = cache.log_paths(0)
    return cache, path


def test_a_torn_tail_loses_only_the_torn_entry(tmp_path):
    cache, path = _two_entry_log(tmp_path)
    whole = open(path, "rb").read()
    for cut in (1, 10, 999, 1100):  # a kill at any point of the last write
        open(path, "wb").write(whole[:-cut])
        shard = cache.for_shard(0)
        assert shard.get("http://a/1.jpg").result.data == b"x" * 1000
        assert shard.get("http://a/2.jpg") is None


def test_corrupt_or_foreign_bytes_end_the_log(tmp_path):
    cache, path = _two_entry_log(tmp_path)
    blob = bytearray(open(path, "rb").read())
    second = len(encode_entry(_ok("http://a/1.jpg", b"x" * 1000)))
    blob[second + 200] ^= 0xFF  # a flipped bit in the second entry's data: its CRC fails
    open(path, "wb").write(bytes(blob))
    shard = cache.for_shard(0)
    assert shard.get("http://a/1.jpg") is not None and shard.get("http://a/2.jpg") is None
    assert list(decode_entries(io.BytesIO(b"something else entirely, not a log"))) == []
    cache.clear()
    assert not os.path.exists(tmp_path)


def test_writers_append_whole_entries_from_many_threads(tmp_path):
    cache = FetchCache(str(tmp_path))
    urls = [f"http://a/{i}.jpg" for i in range(200)]
    with cache.for_shard(1) as shard:
        threads = [threading.Thread(target=lambda chunk: [shard.put(_ok(u, u.encode() * 50)) for u in chunk],
                                    args=(urls[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    with cache.for_shard(1) as retried:  # a retried attempt writes its own log beside the first one
        retried.put(_failed("http://a/late.jpg"))
    assert len(cache.log_paths(1)) == 2
    resumed = cache.for_shard(1)
    assert all(resumed.get(u).result.data == u.encode() * 50 for u in urls)
    assert resumed.get("http://a/late.jpg").result.detail == "http_404"
    assert cache.count() == 201


def test_object_store_logs_are_published_in_segments(tmp_path, monkeypatch):
    import objectstore  # noqa: F401 - registers the testobj:// filesystem

    from aligndata.fetch import cache as fetch_cache

    monkeypatch.setattr(fetch_cache, "SEGMENT_ENTRIES", 3)
    cache = FetchCache(f"testobj://{tmp_path}/cache")
    shard = cache.for_shard(2)
    for i in range(7):
        shard.put(_ok(f"http://a/{i}.jpg", b"%d" % i * 100))
    # Objects appear only when closed: a worker killed now fetches again only its open segment's one entry.
    assert cache.count() == 6
    assert cache.for_shard(2).get("http://a/6.jpg") is None
    shard.close()
    assert cache.count() == 7 and len(cache.log_paths(2)) == 3
    assert cache.for_shard(2).get("http://a/6.jpg").result.data == b"6" * 100
    cache.clear()
    assert cache.count() == 0 and not os.path.exists(tmp_path / "cache")


def test_a_processed_download_is_kept_as_its_outcome_for_its_own_job_only(tmp_path):
    """A download the fetch stage processed is recorded as the processed image (its fields and bytes) and the
    download's size, not its bytes; another job (other output-deciding options) does not trust that entry."""
    directory = str(tmp_path / "cache")
    download = _ok("http://a/1.jpg", b"\xff\xd8" + b"d" * 5000)
    with FetchCache(directory, job="job-a").for_shard(0) as shard:
        shard.put(download, {"reason": None, "width": 346}, b"processed image")
        shard.put(_ok("http://a/2.jpg", b"raw bytes"))  # recorded as the download: good for any job
        shard.put(_ok("http://a/3.jpg", b"r" * 300), {"reason": "image_too_small", "width": None}, None)
    same = FetchCache(directory, job="job-a").for_shard(0)
    hit = same.get("http://a/1.jpg")
    assert (hit.result.ok, hit.result.data, hit.downloaded, hit.processed, hit.payload) == (
        True, None, 5002, {"reason": None, "width": 346}, b"processed image")
    rejected = same.get("http://a/3.jpg")
    assert (rejected.downloaded, rejected.processed["reason"], rejected.payload) == (300, "image_too_small", None)
    other = FetchCache(directory, job="job-b").for_shard(0)
    assert other.get("http://a/1.jpg") is None and other.get("http://a/3.jpg") is None
    raw = other.get("http://a/2.jpg")
    assert (raw.result.data, raw.downloaded, raw.processed) == (b"raw bytes", 9, None)
    log = open(FetchCache(directory).log_paths(0)[0], "rb").read()
    assert b"d" * 5000 not in log and b"processed image" in log  # the download's bytes are not kept
