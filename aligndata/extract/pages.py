"""Pairs from HTML files, WARC/ARC files and fetched pages, as rows in the pipeline's raw-row format.

Each row is ``{"src": file_index, "row": ordinal, "url": image_url, "text": alt_text, "extra": {...}}``, where
``extra`` holds ``page_url``, ``img_width``, ``img_height`` and ``title``. Nothing here raises on bad input:
every page or record that gives no pairs is counted in an `ExtractStats` with a reason, and a file that cannot
be read at all is named in ``unreadable_files`` (the pipeline decides whether that stops the run).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aligndata.extract import html as rules
from aligndata.extract.warc import dechunk, decode_content, iter_records, parse_http_response
from aligndata.io.storage import storage_for

DEFAULT_MAX_PAGE_BYTES = 10_000_000  # Common Crawl itself truncates at 1 MiB; a 10 MB "page" is not a page
ROW_STRIDE = 1 << 20  # page-urls rows: row = page_index * ROW_STRIDE + pair index (pairs per page are capped)
HTML_TYPES = ("text/html", "application/xhtml+xml")

# Why a page or record gave no pairs (stable names, in report.json's "extraction" section).
PAGE_TOO_LARGE = "page_too_large"
TRUNCATED_RECORD = "truncated_record"  # the file or gzip member ends inside the record / the .html.gz
BAD_CONTENT_LENGTH = "bad_content_length"  # the record's Content-Length does not match what follows it
NOT_HTTP_URI = "not_http_uri"  # WARC-Target-URI missing or not http(s)
BAD_HTTP_RESPONSE = "bad_http_response"  # the record block is not an HTTP response
HTTP_STATUS = "http_status"  # not a 2xx response (redirects, errors)
NOT_HTML = "not_html"  # Content-Type says something other than HTML
BAD_CONTENT_ENCODING = "bad_content_encoding"  # gzip/deflate/br body that does not decode
PARSE_ERROR = "parse_error"  # the parser raised (never seen on real data; counted rather than crashing)
INVALID_PAGE_URL = "invalid_page_url"  # page-urls: an entry that is not an http(s) URL


@dataclass
class ExtractStats:
    """Counters for one or many input files; `merge` adds them up, `to_json` is report.json's shape."""

    files: int = 0
    records_read: int = 0  # WARC/ARC records of any type; HTML files and fetched pages count one each
    pages_parsed: int = 0  # HTML documents that reached the parser
    images_seen: int = 0  # <img> elements found
    pairs: int = 0  # rows emitted
    pages_skipped: Counter = field(default_factory=Counter)  # reason -> pages/records with no pairs
    images_skipped: Counter = field(default_factory=Counter)  # reason -> <img> that gave no pair
    damage: Counter = field(default_factory=Counter)  # reader events: corrupt_gzip, garbage_skipped, ...
    fetch_failures: Counter = field(default_factory=Counter)  # page-urls: fetch detail (http_404, timeout, ...)
    unreadable_files: list = field(default_factory=list)  # [{"file": path, "error": message}]

    def merge(self, other: ExtractStats) -> ExtractStats:
        self.files += other.files
        self.records_read += other.records_read
        self.pages_parsed += other.pages_parsed
        self.images_seen += other.images_seen
        self.pairs += other.pairs
        self.pages_skipped.update(other.pages_skipped)
        self.images_skipped.update(other.images_skipped)
        self.damage.update(other.damage)
        self.fetch_failures.update(other.fetch_failures)
        self.unreadable_files.extend(other.unreadable_files)
        return self

    @classmethod
    def from_json(cls, data: dict) -> ExtractStats:
        """The inverse of `to_json` (counters travel between workers and the driver as JSON)."""
        return cls(
            files=data["files"], records_read=data["records_read"], pages_parsed=data["pages_parsed"],
            images_seen=data["images_seen"], pairs=data["pairs"], pages_skipped=Counter(data["pages_skipped"]),
            images_skipped=Counter(data["images_skipped"]), damage=Counter(data["damage"]),
            fetch_failures=Counter(data["fetch_failures"]), unreadable_files=list(data["unreadable_files"]),
        )

    def to_json(self) -> dict:
        return {
            "files": self.files,
            "records_read": self.records_read,
            "pages_parsed": self.pages_parsed,
            "images_seen": self.images_seen,
            "pairs": self.pairs,
            "pages_skipped": dict(sorted(self.pages_skipped.items())),
            "images_skipped": dict(sorted(self.images_skipped.items())),
            "damage": dict(sorted(self.damage.items())),
            "fetch_failures": dict(sorted(self.fetch_failures.items())),
            "unreadable_files": sorted(self.unreadable_files, key=lambda u: u["file"]),
        }


def _rows(pairs: list[rules.ImagePair], src: int, first_row: int, page_url: str | None) -> Iterator[dict]:
    for i, pair in enumerate(pairs):
        extra = {"page_url": page_url, "img_width": pair.width, "img_height": pair.height, "title": pair.title}
        yield {"src": src, "row": first_row + i, "url": pair.url, "text": pair.alt, "extra": extra}


def _extract(body: bytes, declared_charset: str | None, page_url: str | None, stats: ExtractStats
             ) -> tuple[list[rules.ImagePair], str | None] | None:
    """Decode, parse and apply the rules to one page: (pairs, document base URL); None (counted) if the
    parser fails."""
    try:
        text, _ = rules.decode_html(body, declared_charset)
        base_href, images = rules.parse_images(text)
    except Exception:  # noqa: BLE001 - one bad page must not stop a crawl
        stats.pages_skipped[PARSE_ERROR] += 1
        return None
    stats.pages_parsed += 1
    stats.images_seen += len(images)
    base = rules.document_base(page_url, base_href)
    pairs = rules.pairs_from_images(images, base, stats.images_skipped)
    stats.pairs += len(pairs)
    return pairs, base


def _unreadable(stats: ExtractStats, path: str, exc: BaseException) -> None:
    stats.unreadable_files.append({"file": path, "error": f"{type(exc).__name__}: {exc}"})


# ---------------------------------------------------------------------------------------------------------
# HTML files


def load_page_url_map(path: str) -> dict[str, str]:
    """A JSON object mapping HTML file names (base names or full paths) to the URLs they were fetched from."""
    try:
        with storage_for(path).open_read(path) as f:
            data = json.load(f)
    except Exception as exc:
        raise ValueError(f"cannot read --page-urls {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"--page-urls {path}: expected a JSON object {{\"file.html\": \"https://...\", ...}}")
    return data


def page_url_for(path: str, page_url_map: dict[str, str] | None) -> str | None:
    if not page_url_map:
        return None
    return page_url_map.get(path) or page_url_map.get(os.path.basename(path))


def _read_capped(path: str, max_bytes: int) -> tuple[bytes, str | None]:
    """The file's bytes (gunzipped when it is gzip), at most max_bytes + 1; and a problem found, if any."""
    with storage_for(path).open_read(path) as f:
        head = f.read(max_bytes + 1)
        if not head.startswith(b"\x1f\x8b"):
            return head, PAGE_TOO_LARGE if len(head) > max_bytes else None
        d = zlib.decompressobj(47)
        out = bytearray()
        data = head
        while data and len(out) <= max_bytes:
            out += d.decompress(data, max_bytes + 1 - len(out))
            data = d.unconsumed_tail or (f.read(1 << 20) if not d.eof else b"")
        if len(out) > max_bytes:
            return bytes(out), PAGE_TOO_LARGE
        return bytes(out), None if d.eof else TRUNCATED_RECORD


def iter_html_rows(path: str, index: int, page_url_map: dict[str, str] | None = None,
                   stats: ExtractStats | None = None, max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES
                   ) -> Iterator[dict]:
    """Rows from one .html or .html.gz file (local or a URL) (gzip is recognised by its magic bytes).

    The page URL is ``page_url_map[path]`` or ``page_url_map[basename]``, else the page's absolute
    ``<base href>``, else None (then only absolute image URLs can be kept).
    """
    stats = stats if stats is not None else ExtractStats()
    stats.files += 1
    try:
        body, problem = _read_capped(path, max_page_bytes)
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable file is reported, not raised
        _unreadable(stats, path, exc)
        return
    stats.records_read += 1
    if problem is not None:
        stats.pages_skipped[problem] += 1
        return
    page_url = page_url_for(path, page_url_map)
    extracted = _extract(body, None, page_url, stats)
    if extracted is None:
        return
    pairs, base = extracted
    # Without a mapping the page's own absolute <base href> is the best page URL there is.
    yield from _rows(pairs, index, 0, page_url or base)


# ---------------------------------------------------------------------------------------------------------
# WARC / ARC files


def _http_url(uri: str | None) -> bool:
    try:
        parts = urlsplit(uri or "")
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def is_html(content_type: str | None, body: bytes) -> bool:
    """HTML by media type; with no usable type, by a sniff of the first bytes (as browsers do)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in HTML_TYPES:
        return True
    if media and media not in ("application/octet-stream", "text/plain", "unknown/unknown"):
        return False
    head = body[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--", b"<meta", b"<title"))


def _page_from_http(block: bytes, max_page_bytes: int, stats: ExtractStats) -> tuple[bytes, str | None] | None:
    """(HTML body, declared charset) of an HTTP response block, or None with the reason counted."""
    response = parse_http_response(block)
    if response is None:
        stats.pages_skipped[BAD_HTTP_RESPONSE] += 1
        return None
    if not 200 <= response.status < 300:
        stats.pages_skipped[HTTP_STATUS] += 1
        return None
    body = response.body
    if "chunked" in response.headers.get("transfer-encoding", "").lower():
        body = dechunk(body) or body  # many archives store the de-chunked body but keep the header
    body = decode_content(body, response.headers.get("content-encoding", ""), max_page_bytes)
    if body is None:
        stats.pages_skipped[BAD_CONTENT_ENCODING] += 1
        return None
    if len(body) > max_page_bytes:
        stats.pages_skipped[PAGE_TOO_LARGE] += 1
        return None
    content_type = response.headers.get("content-type")
    if not is_html(content_type, body):
        stats.pages_skipped[NOT_HTML] += 1
        return None
    return body, rules.charset_from_content_type(content_type)


def iter_warc_rows(path: str, index: int, stats: ExtractStats | None = None,
                   max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES) -> Iterator[dict]:
    """Rows from the HTML response records of one WARC or ARC file (gzipped or not, recognised by content)."""
    stats = stats if stats is not None else ExtractStats()
    stats.files += 1
    row = 0
    try:
        f = storage_for(path).open_read(path)
    except Exception as exc:  # noqa: BLE001
        _unreadable(stats, path, exc)
        return
    records = 0
    try:
        with f:
            # Records keep the HTTP headers too, hence the margin over the page cap.
            for record in iter_records(f, stats.damage, max_record_bytes=max_page_bytes + 65536):
                records += 1
                stats.records_read += 1
                if record.rec_type != "response":
                    continue
                if not _http_url(record.target_uri):
                    stats.pages_skipped[NOT_HTTP_URI] += 1
                    continue
                if record.too_large:
                    stats.pages_skipped[PAGE_TOO_LARGE] += 1
                    continue
                if record.truncated:
                    stats.pages_skipped[TRUNCATED_RECORD] += 1
                    continue
                if record.bad_length:
                    stats.pages_skipped[BAD_CONTENT_LENGTH] += 1
                    continue
                if record.fmt == "arc" and not record.content.startswith(b"HTTP/"):
                    page = (record.content, None) if is_html(record.headers.get("content-type"), record.content) \
                        else None  # ARC files of old crawls sometimes hold the bare document
                    if page is None:
                        stats.pages_skipped[NOT_HTML] += 1
                        continue
                else:
                    page = _page_from_http(record.content, max_page_bytes, stats)
                    if page is None:
                        continue
                extracted = _extract(page[0], page[1], record.target_uri, stats)
                pairs = extracted[0] if extracted is not None else []
                if pairs:
                    yield from _rows(pairs, index, row, record.target_uri)
                    row += len(pairs)
    except Exception as exc:  # noqa: BLE001 - an I/O error mid-file: keep what was read, name the file
        _unreadable(stats, path, exc)
        return
    if records == 0:
        stats.unreadable_files.append({"file": path, "error": "no WARC or ARC record found"})


# ---------------------------------------------------------------------------------------------------------
# Page URLs fetched over HTTP


def read_page_url_list(path: str) -> list[str]:
    """Page URLs from a file: a JSON array (of URLs or of {"url": ...} objects), a JSON object whose values are
    URLs (like page_urls.json), or plain text with one URL per line ('#' starts a comment line)."""
    try:
        text = _decompress_by_name(path, _read_all(path)).decode("utf-8-sig", errors="replace")
    except Exception as exc:
        raise ValueError(f"cannot read page URL list {path}: {type(exc).__name__}: {exc}") from None
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise ValueError(f"page URL list {path} is not valid JSON: {exc}") from None
        items = list(data.values()) if isinstance(data, dict) else data
        urls = [item.get("url") if isinstance(item, dict) else item for item in items]
        return [u if isinstance(u, str) else "" for u in urls]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _read_all(path: str) -> bytes:
    with storage_for(path).open_read(path) as f:
        return f.read()


def _decompress_by_name(path: str, data: bytes) -> bytes:
    """Decompress by the file's suffix, as Beam's ``CompressionTypes.AUTO`` did (.gz, .bz2, .xz/.lzma, .deflate,
    .zst/.zstd)."""
    name = path.lower()
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".bz2"):
        return bz2.decompress(data)
    if name.endswith((".xz", ".lzma")):
        return lzma.decompress(data)
    if name.endswith(".deflate"):
        return zlib.decompress(data)
    if name.endswith((".zst", ".zstd")):
        import zstandard  # optional; Beam depends on it

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def pairs_from_page(url: str, fetcher, src: int = 0, page_index: int = 0) -> tuple[list[dict], ExtractStats]:
    """Fetch one page with ``fetcher`` (an ``aligndata.fetch.client.Fetcher``: same address guard, caps,
    retries and X-Robots-Tag rules as images; its ``max_bytes`` is the page size cap) and extract its pairs.

    Relative image URLs resolve against the final URL after redirects, which is also the rows' ``page_url``.
    Rows are numbered ``page_index * ROW_STRIDE + i`` so rows of different pages of one list never collide.
    """
    stats = ExtractStats()
    stats.records_read += 1
    if not _http_url(url):
        stats.pages_skipped[INVALID_PAGE_URL] += 1
        return [], stats
    result = fetcher.fetch(url)
    if not result.ok:
        # The fetcher's reason (download_failed, blocked_address, robots_disallowed); its byte cap is ours.
        stats.pages_skipped[PAGE_TOO_LARGE if result.detail == "too_large" else result.reason] += 1
        stats.fetch_failures[result.detail] += 1
        return [], stats
    if not is_html(result.content_type, result.data):
        stats.pages_skipped[NOT_HTML] += 1
        return [], stats
    extracted = _extract(result.data, None, result.final_url, stats)
    pairs = extracted[0] if extracted is not None else []
    # MAX_IMAGES_PER_PAGE < ROW_STRIDE, so row numbers of different pages never overlap.
    return list(_rows(pairs, src, page_index * ROW_STRIDE, result.final_url)), stats
