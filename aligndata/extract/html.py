"""Image/alt-text pairs from one HTML page: decoding, parsing and the extraction rules.

The rules (documented for users in docs/extraction.md) are plain functions over an ``<img>``'s attributes, so
they do not depend on the parser; `parse_images` is the only place that knows the parser.

Parser choice, measured on the 181 real article pages (31 MB) of ../shared/data/real on this shared 2-core
machine (``benchmarks/bench_extract.py``; parse + collect every ``<img>``'s attributes; best of 3, numbers
vary ~2x with the machine's load, the ranking does not): selectolax/lexbor 920-1,900 pages/s, lxml 410-860,
resiliparse 230-480, stdlib html.parser 160-235. All four find the same 3,808 ``<img>`` on these pages (lexbor
is an HTML5 parser: ``<img>`` in ``<noscript>`` is found, in ``<template>``, comments and raw-text elements
is not). We use selectolax's lexbor backend; the whole per-page extraction (decode + parse + rules) runs at
~70% of its bare parse speed.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urldefrag, urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser

# Lazy-loading conventions (lazysizes, WP Rocket, jQuery lazyload, ...). They come *before* ``src``: on the real
# pages, 399 of 407 <img> carrying both had a placeholder in src (1x1.gif, placeholder.svg, a grey square).
LAZY_SRC_ATTRS = ("data-src", "data-lazy-src", "data-original", "data-lazy")
SRCSET_ATTRS = ("data-srcset", "data-lazy-srcset", "srcset")
SOURCE_ATTRS = (*LAZY_SRC_ATTRS, "src")
ALLOWED_SCHEMES = ("http", "https")
MAX_IMAGES_PER_PAGE = 10_000  # spam pages with more <img> than this keep the first ones only

# Why an <img> gave no pair (stable names; they appear in the extraction report). Checked in this order.
NO_ALT = "no_alt"  # alt missing, or empty after collapsing whitespace
NO_SRC = "no_src"  # no src, lazy src or srcset candidate at all
DATA_URI = "data_uri"  # only data: sources
UNSUPPORTED_SCHEME = "unsupported_scheme"  # only javascript:, about:, blob:, ftp:, ... sources
UNRESOLVABLE_URL = "unresolvable_url"  # relative URL and no page URL or <base>, or not a valid URL
TRACKING_PIXEL = "tracking_pixel"  # width or height attribute <= 1
DUPLICATE_IN_PAGE = "duplicate_in_page"  # same (url, alt) earlier on the page
TOO_MANY_IMAGES = "too_many_images"  # past MAX_IMAGES_PER_PAGE
IMAGE_SKIP_REASONS = (NO_ALT, NO_SRC, DATA_URI, UNSUPPORTED_SCHEME, UNRESOLVABLE_URL, TRACKING_PIXEL,
                      DUPLICATE_IN_PAGE, TOO_MANY_IMAGES)

_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")
_URL_JUNK = str.maketrans("", "", "\t\n\r")  # the URL standard removes these anywhere in a URL
_HTML_SPACE = " \t\n\r\f"
_DIMENSION_RE = re.compile(r"[ \t\n\r\f]*\+?(\d+)(\.\d*)?(%?)")
_W_DESCRIPTOR = re.compile(r"^(\d+)w$")
_X_DESCRIPTOR = re.compile(r"^(\d*\.?\d+(?:[eE][+-]?\d+)?)x$")


@dataclass(frozen=True)
class ImagePair:
    """One extracted pair: the absolute image URL, the alt-text and the attributes we keep."""

    url: str
    alt: str
    width: int | None = None  # the <img>'s width/height attributes when they are pixel counts
    height: int | None = None
    title: str | None = None  # the <img>'s title attribute (whitespace collapsed), often a second caption


# ---------------------------------------------------------------------------------------------------------
# Attribute helpers (pure)


def collapse_whitespace(text: str | None) -> str:
    """Trim and collapse runs of whitespace (Unicode whitespace, NBSP included) to one space."""
    return " ".join(text.split()) if text else ""


def parse_dimension(value: str | None) -> int | None:
    """A width/height attribute as pixels: leading digits ("300", "300px", " 300.5") or None ("50%", "auto")."""
    if not value:
        return None
    match = _DIMENSION_RE.match(value)
    if match is None or match.group(3):
        return None
    return int(match.group(1))


def parse_srcset(value: str) -> list[tuple[str, float | None, float | None]]:
    """``srcset`` candidates as (url, width descriptor, density descriptor), following the HTML algorithm.

    URLs may contain commas (``.../w_300,h_200/x.jpg 300w``); a comma only ends a candidate when it ends the URL
    or follows the descriptors. A candidate with an unparsable descriptor is dropped, as browsers do.
    """
    out = []
    pos, n = 0, len(value)
    while True:
        while pos < n and (value[pos] in _HTML_SPACE or value[pos] == ","):
            pos += 1
        if pos >= n:
            return out
        start = pos
        while pos < n and value[pos] not in _HTML_SPACE:
            pos += 1
        url = value[start:pos]
        descriptors: list[str] = []
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start, depth = pos, 0
            while pos < n:
                c = value[pos]
                if c == "(":
                    depth += 1
                elif c == ")" and depth:
                    depth -= 1
                elif c == "," and not depth:
                    break
                pos += 1
            descriptors = value[start:pos].split()
            pos += 1
        width = density = None
        valid = True
        for d in descriptors:
            if (m := _W_DESCRIPTOR.match(d)) and width is None and density is None:
                width = float(m.group(1))
            elif (m := _X_DESCRIPTOR.match(d)) and width is None and density is None:
                density = float(m.group(1))
            elif d.endswith("h") and d[:-1].isdigit():
                continue  # a future-compat height descriptor: ignored
            else:
                valid = False
        if url and valid:
            out.append((url, width, density))


def largest_srcset_candidate(value: str) -> str | None:
    """The candidate with the largest width descriptor; without any, the largest density (default 1x)."""
    candidates = parse_srcset(value)
    if not candidates:
        return None
    with_width = [c for c in candidates if c[1] is not None]
    if with_width:
        return max(with_width, key=lambda c: c[1])[0]  # max() keeps the first of equals
    return max(candidates, key=lambda c: c[2] if c[2] is not None else 1.0)[0]


def _scheme(ref: str) -> str | None:
    match = _SCHEME_RE.match(ref)
    return match.group(1).lower() if match else None


def _clean_ref(value: str | None) -> str:
    return (value or "").strip(_HTML_SPACE).translate(_URL_JUNK)


def source_candidates(attrs: Mapping[str, str | None]) -> list[str]:
    """Non-empty source URLs of an <img> in rule order: lazy attributes, src, then the largest srcset entry."""
    out = [ref for name in SOURCE_ATTRS if (ref := _clean_ref(attrs.get(name)))]
    for name in SRCSET_ATTRS:
        value = attrs.get(name)
        if value and (ref := _clean_ref(largest_srcset_candidate(value))):
            out.append(ref)
    return out


def choose_source(attrs: Mapping[str, str | None]) -> tuple[str | None, str | None]:
    """(the first usable source, None) or (None, skip reason). Usable: relative, or http(s)."""
    candidates = source_candidates(attrs)
    for ref in candidates:
        scheme = _scheme(ref)
        if scheme is None or scheme in ALLOWED_SCHEMES:
            return ref, None
    if not candidates:
        return None, NO_SRC
    return None, DATA_URI if _scheme(candidates[0]) == "data" else UNSUPPORTED_SCHEME


def absolute_url(ref: str, base: str | None) -> str | None:
    """``ref`` resolved against ``base``, without its fragment; None unless it is a valid http(s) URL."""
    try:
        if _scheme(ref) is None:
            if not base:
                return None  # relative, protocol-relative included, and nothing to resolve it against
            ref = urljoin(base, ref)
        url = urldefrag(ref)[0]
        parts = urlsplit(url)
        if parts.scheme.lower() not in ALLOWED_SCHEMES or not parts.hostname:
            return None
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number or out of range
    except ValueError:
        return None
    return url


def document_base(page_url: str | None, base_href: str | None) -> str | None:
    """The URL relative references resolve against: <base href> resolved against the page URL, else the page URL."""
    ref = _clean_ref(base_href)
    if ref:
        resolved = absolute_url(ref, page_url)
        if resolved is not None:
            return resolved
    return absolute_url(page_url, None) if page_url else None


def pairs_from_images(images: Iterable[Mapping[str, str | None]], base: str | None,
                      skipped: Counter | None = None) -> list[ImagePair]:
    """Apply the extraction rules to the <img> attribute maps of one page, in document order.

    ``base`` is the document base URL (`document_base`). Each <img> that gives no pair adds one to
    ``skipped[reason]``.
    """
    skipped = skipped if skipped is not None else Counter()
    pairs: list[ImagePair] = []
    seen: set[tuple[str, str]] = set()
    for i, attrs in enumerate(images):
        if i >= MAX_IMAGES_PER_PAGE:
            skipped[TOO_MANY_IMAGES] += 1
            continue
        alt = collapse_whitespace(attrs.get("alt"))
        if not alt:
            skipped[NO_ALT] += 1
            continue
        ref, reason = choose_source(attrs)
        if ref is None:
            skipped[reason] += 1
            continue
        url = absolute_url(ref, base)
        if url is None:
            skipped[UNRESOLVABLE_URL] += 1
            continue
        width, height = parse_dimension(attrs.get("width")), parse_dimension(attrs.get("height"))
        if (width is not None and width <= 1) or (height is not None and height <= 1):
            skipped[TRACKING_PIXEL] += 1
            continue
        if (url, alt) in seen:
            skipped[DUPLICATE_IN_PAGE] += 1
            continue
        seen.add((url, alt))
        pairs.append(ImagePair(url, alt, width, height, collapse_whitespace(attrs.get("title")) or None))
    return pairs


# ---------------------------------------------------------------------------------------------------------
# Decoding bytes to text

# WHATWG encoding labels that Python spells differently or that browsers widen to a superset.
_ENCODING_ALIASES = {
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252",
    "iso8859-1": "cp1252", "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "shift_jis": "cp932",
    "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "euc-kr": "cp949", "ks_c_5601-1987": "cp949",
    "tis-620": "cp874", "iso-8859-11": "cp874", "x-user-defined": "cp1252",
    # A page that says UTF-16 in a <meta> is, in practice, not UTF-16 (browsers then use UTF-8).
    "utf-16": "utf-8", "utf-16le": "utf-8", "utf-16be": "utf-8",
}
_META_CHARSET_RE = re.compile(rb"""<meta[^>]{0,512}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]{1,40})""", re.IGNORECASE)
_HTTP_CHARSET_RE = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]{1,40})""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
META_SCAN_BYTES = 4096
DETECT_SCAN_BYTES = 65536


def normalize_encoding(label: str | None) -> str | None:
    """A Python codec name for an encoding label, or None for a label no codec knows."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    label = _ENCODING_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def charset_from_content_type(content_type: str | None) -> str | None:
    match = _HTTP_CHARSET_RE.search(content_type or "")
    return match.group(1) if match else None


def decode_html(body: bytes, declared: str | None = None) -> tuple[str, str]:
    """(text, encoding used). Never raises.

    Order: a byte-order mark; the declared charset (HTTP Content-Type); a <meta charset> in the first 4 KB;
    UTF-8; a statistical guess (charset_normalizer) over the first 64 KB. A declaration whose codec fails to
    decode the page strictly is treated as a lie and the next step is tried, so mislabelled pages still decode.
    The last resort is windows-1252, browsers' default, with U+FFFD for its 5 undefined bytes.
    """
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            return body.decode(encoding, errors="replace"), encoding
    tried: list[str] = []
    meta = _META_CHARSET_RE.search(body[:META_SCAN_BYTES])
    for label in (declared, meta.group(1).decode("ascii", "replace") if meta else None, "utf-8"):
        encoding = normalize_encoding(label)
        if encoding is None or encoding in tried:
            continue
        tried.append(encoding)
        try:
            return body.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError):
            continue
    guess = _guess_encoding(body[:DETECT_SCAN_BYTES])
    if guess is not None:
        return body.decode(guess, errors="replace"), guess
    return body.decode("cp1252", errors="replace"), "cp1252"  # browsers' default for undeclared pages


def _guess_encoding(sample: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # a declared dependency; tolerate a broken install
        return None
    best = from_bytes(sample).best()
    encoding = normalize_encoding(best.encoding) if best is not None else None
    if encoding is None:
        return None
    # HTML markup is ASCII; a guess that does not map ASCII to itself (EBCDIC, UTF-16) is wrong for a page.
    try:
        return encoding if '<a href="/">'.encode(encoding) == b'<a href="/">' else None
    except UnicodeError:
        return None


# ---------------------------------------------------------------------------------------------------------
# Parsing


def parse_images(html: str) -> tuple[str | None, list[dict[str, str | None]]]:
    """(the first <base href>, the attribute maps of every <img> in document order)."""
    tree = LexborHTMLParser(html)
    base = tree.css_first("base[href]")
    base_href = base.attributes.get("href") if base is not None else None
    return base_href, [node.attributes for node in tree.css("img")]


def extract_pairs(html: str, page_url: str | None, skipped: Counter | None = None) -> list[ImagePair]:
    """Every pair the rules keep from one page's HTML (a str; see `decode_html` for bytes)."""
    base_href, images = parse_images(html)
    return pairs_from_images(images, document_base(page_url, base_href), skipped)
