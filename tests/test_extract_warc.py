"""WARC/ARC reading (aligndata.extract.warc) and WARC rows (iter_warc_rows): real files and hostile ones.

Hostile input must never raise: every record that gives no pairs is counted with a reason, damage to the
file is counted, and a file that cannot be read at all is named.
"""

from __future__ import annotations

import gzip
import random
import re
import zlib
from collections import Counter
from pathlib import Path

import pytest
from extract_reference import reference_pairs
from helpers import REAL, needs_real

from aligndata.extract import html as rules
from aligndata.extract.pages import ExtractStats, iter_warc_rows
from aligndata.extract.warc import dechunk, decode_content, iter_records, parse_http_response

WARCS = REAL / "warc"


# ------------------------------------------------------------------------------------------------ builders


GZIP_HEADER = "Content-Encoding: gzip\r\n"
CHUNKED_HEADER = "Transfer-Encoding: chunked\r\n"


def http_response(body: bytes, content_type: str = "text/html; charset=utf-8", status: int = 200,
                  extra_headers: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n{extra_headers}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def warc_record(uri: str | None, block: bytes, rec_type: str = "response", length: int | None = None) -> bytes:
    head = "WARC/1.0\r\n" f"WARC-Type: {rec_type}\r\n"
    if uri is not None:
        head += f"WARC-Target-URI: {uri}\r\n"
    head += f"Content-Type: application/http; msgtype={rec_type}\r\n"
    head += f"Content-Length: {len(block) if length is None else length}\r\n\r\n"
    return head.encode() + block + b"\r\n\r\n"


def page(n: int) -> bytes:
    return f'<html><body><img alt="picture number {n}" src="/img/{n}.jpg"></body></html>'.encode()


def good(n: int) -> bytes:
    return warc_record(f"http://site{n}.example/page", http_response(page(n)))


def gz(*records: bytes) -> bytes:
    return b"".join(gzip.compress(r) for r in records)


def rows_of(tmp_path: Path, data: bytes, name: str = "in.warc.gz", **kwargs) -> tuple[list[dict], ExtractStats]:
    path = tmp_path / name
    path.write_bytes(data)
    stats = ExtractStats()
    return list(iter_warc_rows(str(path), 0, stats, **kwargs)), stats


def urls(rows: list[dict]) -> list[str]:
    return [r["url"] for r in rows]


def expected(*ns: int) -> list[str]:
    return [f"http://site{n}.example/img/{n}.jpg" for n in ns]


# ------------------------------------------------------------------------------------------------ real files


def simple_responses(path: Path):
    """(target URI, HTML body, charset) of the 200 text/html responses of a well-formed gzipped WARC.

    Written independently of aligndata.extract.warc: the whole file gunzipped, records cut by Content-Length.
    """
    data = gzip.decompress(path.read_bytes())
    pos = 0
    while True:
        while data[pos:pos + 2] == b"\r\n":
            pos += 2
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return
        head = data[pos:end].decode("utf-8", "replace")
        length = int(re.search(r"(?im)^content-length:\s*(\d+)", head).group(1))
        block, pos = data[end + 4:end + 4 + length], end + 4 + length
        if not re.search(r"(?im)^warc-type:\s*response", head):
            continue
        uri = re.search(r"(?im)^warc-target-uri:\s*(\S+)", head).group(1)
        split = re.search(rb"\r?\n\r?\n", block)
        http_head, body = block[:split.start()].decode("latin-1"), block[split.end():]
        content_type = re.search(r"(?im)^content-type:\s*(.*)$", http_head)
        content_type = content_type.group(1).strip() if content_type else ""
        if " 200 " in http_head.split("\n")[0] and "html" in content_type:
            charset = re.search(r"charset=([\w-]+)", content_type)
            yield uri, body, charset.group(1) if charset else None


@needs_real
@pytest.mark.parametrize("name, n_pairs", [("commoncrawl_2020_34_sample.warc.gz", 30),
                                           ("clueweb09_quirk.warc.gz", 440)])
def test_real_warcs_equal_the_independent_reference(name, n_pairs):
    want = []
    for uri, body, charset in simple_responses(WARCS / name):
        text, _ = rules.decode_html(body, charset)  # decoding is tested on its own in test_extract_html
        want += [(url, alt, uri) for url, alt in reference_pairs(text, uri)]
    stats = ExtractStats()
    got = [(r["url"], r["text"], r["extra"]["page_url"]) for r in iter_warc_rows(str(WARCS / name), 0, stats)]
    assert got == want and len(got) == n_pairs
    assert stats.pages_skipped == Counter() and stats.damage == Counter() and stats.unreadable_files == []


@needs_real
def test_real_common_crawl_counts():
    stats = ExtractStats()
    rows = list(iter_warc_rows(str(WARCS / "commoncrawl_2020_34_sample.warc.gz"), 7, stats))
    assert (stats.records_read, stats.pages_parsed, stats.images_seen, stats.pairs) == (50, 16, 153, 30)
    assert [r["row"] for r in rows] == list(range(30)) and {r["src"] for r in rows} == {7}


@needs_real
def test_real_japanese_warc_0_18_decodes_euc_jp():
    rows = list(iter_warc_rows(str(WARCS / "clueweb09_quirk.warc.gz"), 0))
    assert any("財布" in r["text"] for r in rows)  # EUC-JP, with a gzip header on an already-decoded body
    assert not any("\ufffd" in r["text"] for r in rows)


@needs_real
@pytest.mark.parametrize("name, records, skipped", [
    ("example-bad-non-chunked.warc.gz", 6, {}),  # one gzip stream for the whole file: read anyway
    ("example-trunc.warc", 4, {"bad_content_length": 1}),
    ("example-wrong-chunks.warc.gz", 2, {}),
])
def test_real_malformed_warcs(name, records, skipped):
    stats = ExtractStats()
    assert list(iter_warc_rows(str(WARCS / name), 0, stats)) == []  # example.com has no <img>
    assert stats.records_read == records and dict(stats.pages_skipped) == skipped
    assert stats.unreadable_files == []


# ------------------------------------------------------------------------------------------------ damage


def test_corrupt_gzip_member_in_the_middle(tmp_path):
    members = [gzip.compress(good(n)) for n in range(5)]
    broken = bytearray(members[2])
    broken[20:40] = b"\xff" * 20
    rows, stats = rows_of(tmp_path, b"".join([*members[:2], bytes(broken), *members[3:]]))
    assert urls(rows) == expected(0, 1, 3, 4)
    assert stats.damage == Counter({"corrupt_gzip": 1})


def test_truncated_gzip_keeps_the_records_before(tmp_path):
    data = gz(good(0), good(1), good(2))
    rows, stats = rows_of(tmp_path, data[:-60])
    assert urls(rows) == expected(0, 1)
    assert stats.damage["truncated_gzip"] == 1 and stats.pages_skipped["truncated_record"] == 1


def test_whole_file_gzip_stream_and_plain_file(tmp_path):
    records = good(0) + good(1) + good(2)
    assert urls(rows_of(tmp_path, gzip.compress(records))[0]) == expected(0, 1, 2)
    assert urls(rows_of(tmp_path, records, "plain.warc")[0]) == expected(0, 1, 2)


def test_garbage_between_records_and_members(tmp_path):
    rows, stats = rows_of(tmp_path, good(0) + b"garbage line\r\nmore\r\n" + good(1), "plain.warc")
    assert urls(rows) == expected(0, 1) and stats.damage["garbage_skipped"] == 1
    rows, stats = rows_of(tmp_path, gzip.compress(good(0)) + b"junk between members" + gzip.compress(good(1)))
    assert urls(rows) == expected(0, 1) and stats.damage["garbage_skipped"] == 1


@pytest.mark.parametrize("delta, reason", [(+40, "bad_content_length"), (-40, "bad_content_length"),
                                           (+100000, "truncated_record")])
def test_wrong_content_length_is_reported_and_reading_resyncs(tmp_path, delta, reason):
    block = http_response(page(1))
    bad = warc_record("http://site1.example/page", block, length=len(block) + delta)
    rows, stats = rows_of(tmp_path, good(0) + bad + good(2) + good(3), "plain.warc")
    assert urls(rows) == expected(0, 2, 3)  # the records a too-long length swallowed are found again
    assert stats.pages_skipped == Counter({reason: 1})


def test_bad_record_headers(tmp_path):
    no_length = b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://x.example/\r\n\r\nbody\r\n\r\n"
    not_a_header = b"WARC/1.0\r\nWARC-Type: response\r\nthis is not a header\r\n\r\n"
    rows, stats = rows_of(tmp_path, good(0) + no_length + good(1) + not_a_header + good(2), "plain.warc")
    assert urls(rows) == expected(0, 1, 2)
    assert stats.damage["bad_record_header"] == 2


def test_pages_too_large_are_skipped_without_stopping(tmp_path):
    huge = warc_record("http://big.example/", http_response(b"<img alt='a b c' src='x.jpg'>" + b" " * 50000))
    rows, stats = rows_of(tmp_path, gz(good(0), huge, good(1)), max_page_bytes=10000)
    assert urls(rows) == expected(0, 1) and stats.pages_skipped == Counter({"page_too_large": 1})


def test_records_that_are_not_html_pages(tmp_path):
    data = gz(
        warc_record(None, b"software: test\r\n", "warcinfo"),
        warc_record("http://a.example/", b"GET / HTTP/1.1\r\n\r\n", "request"),
        warc_record("http://a.example/", http_response(b"", status=301)),
        warc_record("http://a.example/x.jpg", http_response(b"\xff\xd8\xff", "image/jpeg")),
        warc_record("ftp://a.example/", http_response(page(9))),
        warc_record("http://a.example/raw", b"<html>no http headers</html>"),
        warc_record("http://a.example/gz", http_response(b"\x1f\x8b\x08 broken", extra_headers=GZIP_HEADER)),
        good(0),
    )
    rows, stats = rows_of(tmp_path, data)
    assert urls(rows) == expected(0)
    assert stats.records_read == 8
    assert stats.pages_skipped == Counter({"http_status": 1, "not_html": 1, "not_http_uri": 1,
                                           "bad_http_response": 1, "bad_content_encoding": 1})


def test_http_body_encodings_and_charsets(tmp_path):
    html = '<meta charset="windows-1251"><img alt="Кот на крыше" src="/cat.jpg">'.encode("cp1251")
    body = page(1)
    chunked = b"10\r\n" + body[:16] + b"\r\n" + f"{len(body) - 16:x}".encode() + b"\r\n" + body[16:] + b"\r\n0\r\n\r\n"
    data = gz(
        # The HTTP header claims UTF-8; the bytes are windows-1251, as the <meta> says.
        warc_record("http://ru.example/", http_response(html, "text/html; charset=utf-8")),
        warc_record("http://site1.example/page", http_response(chunked, extra_headers=CHUNKED_HEADER)),
        warc_record("http://site2.example/page", http_response(gzip.compress(page(2)), extra_headers=GZIP_HEADER)),
        warc_record("<http://site3.example/page>", http_response(page(3))),  # the WARC 1.1 draft's <uri> form
    )
    rows, _ = rows_of(tmp_path, data)
    assert [(r["url"], r["text"]) for r in rows] == [
        ("http://ru.example/cat.jpg", "Кот на крыше"), *((u, f"picture number {n}") for n, u in
                                                         zip((1, 2, 3), expected(1, 2, 3)))]
    assert rows[-1]["extra"]["page_url"] == "http://site3.example/page"


def test_arc_files(tmp_path):
    def arc(url: str, block: bytes, mime: str = "text/html") -> bytes:
        return f"{url} 192.0.2.1 20080101000000 {mime} {len(block)}\n".encode() + block + b"\n"

    filedesc = arc("filedesc://crawl.arc", b"1 0 Test\nURL IP-address Archive-date Content-type Archive-length\n",
                   "text/plain")
    data = gz(filedesc, arc("http://site0.example/page", http_response(page(0))),
              arc("http://site1.example/page", page(1)),  # old ARCs may hold the bare document
              arc("http://site2.example/img.gif", http_response(b"GIF89a", "image/gif"), "image/gif"))
    rows, stats = rows_of(tmp_path, data, "crawl.arc.gz")
    assert urls(rows) == expected(0, 1)
    assert stats.records_read == 4 and stats.pages_skipped == Counter({"not_html": 1})


def test_unreadable_files_are_named(tmp_path):
    rows, stats = rows_of(tmp_path, b"<html>this is not a WARC file</html>", "page.warc")
    assert rows == [] and stats.unreadable_files == [{"file": str(tmp_path / "page.warc"),
                                                      "error": "no WARC or ARC record found"}]
    stats = ExtractStats()
    assert list(iter_warc_rows(str(tmp_path / "missing.warc.gz"), 0, stats)) == []
    assert stats.unreadable_files[0]["file"] == str(tmp_path / "missing.warc.gz")


def test_random_damage_never_raises(tmp_path):
    data = gz(*(good(n) for n in range(8)))
    rng = random.Random(11)
    for trial in range(40):
        damaged = bytearray(data)
        for _ in range(rng.randrange(1, 6)):
            at = rng.randrange(len(damaged))
            damaged[at:at + rng.randrange(1, 30)] = rng.randbytes(rng.randrange(0, 30))
        cut = rng.randrange(len(damaged) // 2, len(damaged) + 1)
        rows, stats = rows_of(tmp_path, bytes(damaged[:cut]))
        assert set(urls(rows)) <= set(expected(*range(8)))
        assert stats.unreadable_files == [] or stats.records_read == 0


# ------------------------------------------------------------------------------------------------ helpers


def test_reader_counts_and_keeps_only_wanted_content(tmp_path):
    events = Counter()
    path = tmp_path / "x.warc"
    path.write_bytes(warc_record("http://a.example/", b"GET /", "request") + good(0))
    with open(path, "rb") as f:
        records = list(iter_records(f, events))
    assert [(r.rec_type, r.content is None) for r in records] == [("request", True), ("response", False)]


def test_http_helpers():
    response = parse_http_response(b"HTTP/1.0 404 Not Found\nContent-Type: text/html\n\nbody\r\n\r\nmore")
    assert (response.status, response.headers["content-type"], response.body) == (404, "text/html", b"body\r\n\r\nmore")
    assert parse_http_response(b"<html>") is None
    assert dechunk(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n") == b"abcde" and dechunk(b"zz\r\n") is None
    assert decode_content(zlib.compress(b"x" * 100), "deflate", 1000) == b"x" * 100
    assert decode_content(gzip.compress(b"x" * 100), "gzip", 50) is None  # over the cap
    assert decode_content(b"<html>", "gzip", 50) == b"<html>"  # stored decoded, header kept
    assert decode_content(b"abc", "compress", 50) is None
