"""An independent implementation of the extraction rules in docs/extraction.md, for tests only.

It shares no code with aligndata.extract: the stdlib html.parser instead of lexbor, and each rule written out
again from the documentation. Tests compare it with the real extractor on real pages.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

LAZY = ["data-src", "data-lazy-src", "data-original", "data-lazy"]
SRCSETS = ["data-srcset", "data-lazy-srcset", "srcset"]


class _ImgCollector(HTMLParser):
    # HTML5 treats these as raw text: an "<img" inside them is not an element.
    RAW_TEXT = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.images: list[dict[str, str]] = []
        self.base_href: str | None = None
        self.template_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.RAW_TEXT:
            self.set_cdata_mode(tag)
        if tag == "template":
            self.template_depth += 1
        first: dict[str, str] = {}
        for name, value in attrs:
            first.setdefault(name, value if value is not None else "")  # the first of duplicates counts
        if self.template_depth:
            return
        if tag == "img":
            self.images.append(first)
        elif tag == "base" and self.base_href is None and "href" in first:
            self.base_href = first["href"]

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "template" and self.template_depth:
            self.template_depth -= 1


def _largest_in_srcset(value: str) -> str | None:
    # Whitespace-separated tokens; the first token of a candidate is its URL, a token ending in "," ends it.
    best = None
    best_key = None
    tokens = value.split()
    i = 0
    while i < len(tokens):
        url = tokens[i]
        i += 1
        descriptors = []
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            while i < len(tokens):
                token = tokens[i]
                i += 1
                if token.endswith(","):
                    if token.rstrip(","):
                        descriptors.append(token.rstrip(","))
                    break
                descriptors.append(token)
        url = url.lstrip(",")
        if not url:
            continue
        width = density = None
        ok = True
        for d in descriptors:
            if re.fullmatch(r"\d+w", d) and width is None and density is None:
                width = int(d[:-1])
            elif re.fullmatch(r"\d*\.?\d+x", d) and width is None and density is None:
                density = float(d[:-1])
            elif not re.fullmatch(r"\d+h", d):
                ok = False
        if not ok:
            continue
        key = (1, width) if width is not None else (0, density if density is not None else 1.0)
        if best_key is None or key > best_key:
            best, best_key = url, key
    if best_key is not None and best_key[0] == 0:
        return best
    return best


def _clean(value):
    return re.sub(r"[\t\n\r]", "", (value or "").strip(" \t\n\r\f"))


def _usable(ref):
    m = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*):", ref)
    return m is None or m.group(1).lower() in ("http", "https")


def _absolute(ref, base):
    try:
        if re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:", ref) is None:
            if not base:
                return None
            ref = urljoin(base, ref)
        url = ref.split("#", 1)[0]
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            return None
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        return None
    return url


def _pixels(value):
    m = re.match(r"[ \t\n\r\f]*\+?(\d+)(\.\d*)?(%?)", value or "")
    if not m or m.group(3):
        return None
    return int(m.group(1))


def reference_pairs(html_text: str, page_url: str | None) -> list[tuple[str, str]]:
    """(image URL, alt) pairs of a page by the documented rules, in document order."""
    collector = _ImgCollector()
    collector.feed(html_text)
    collector.close()
    base = _absolute(page_url, None) if page_url else None
    if collector.base_href is not None and _clean(collector.base_href):
        resolved = _absolute(_clean(collector.base_href), base)
        if resolved:
            base = resolved
    out, seen = [], set()
    for attrs in collector.images[:10_000]:
        alt = " ".join((attrs.get("alt") or "").split())
        if not alt:
            continue
        candidates = [_clean(attrs.get(name)) for name in LAZY + ["src"]]
        candidates += [_clean(_largest_in_srcset(attrs[name]) or "") for name in SRCSETS if attrs.get(name)]
        usable = [c for c in candidates if c and _usable(c)]
        if not usable:
            continue
        url = _absolute(usable[0], base)
        if url is None:
            continue
        w, h = _pixels(attrs.get("width")), _pixels(attrs.get("height"))
        if (w is not None and w <= 1) or (h is not None and h <= 1):
            continue
        if (url, alt) not in seen:
            seen.add((url, alt))
            out.append((url, alt))
    return out
