"""Per-row text rules: normalization, word tokens, word count, boilerplate, broken encoding.

Everything here runs once per input row (millions of times), so regexes are compiled at import and the
common case (a plain ASCII caption with no markup) takes the cheapest path through each function.

Normalization (`normalize_text`) produces the caption written to shards. Tokenization (`tokenize`) produces
the lowercased word tokens that the word-count rule counts and that the frequency rules (see
``frequency.py``) turn into unigrams and bigrams.

Tokenizer choice
----------------
Candidates (nltk tokenizers that need no downloaded data), measured on real captions on this 2-core machine
(normalized input; lowercasing and dropping punctuation-only tokens included; best of 3 runs):

    ================================================  ===============  =====================================
    tokenizer                                          µs/row LAION     behaviour
                                                       (CC3M)
    ================================================  ===============  =====================================
    ``NLTKWordTokenizer`` (Treebank)                   86 (82)          "father's" -> "father", "'s"
    ``TweetTokenizer``                                 58 (54)          keeps URLs/hashtags whole
    ``wordpunct_tokenize`` (``\\w+|[^\\w\\s]+``)        8.7 (8.5)        "don't" -> "don", "t"; "3.5" -> "3", "5"
    ``RegexpTokenizer(WORD_PATTERN)``                  12.0 (12.4)      our rules, through nltk
    `tokenize`: ``WORD_PATTERN`` with stdlib ``re``    2.2 (2.1)        the same tokens (tested)
    ================================================  ===============  =====================================

We use nltk's ``RegexpTokenizer`` semantics with our own pattern (`WORD_PATTERN`), compiled with the standard
``re`` module. nltk 3.10 routes every ``RegexpTokenizer`` through ``nltk.redos``, which recompiles with the
third-party ``regex`` engine and runs each call under a wall-clock timeout: a defence for caller-supplied
patterns that costs 5.5x here, and a timeout that could fire spuriously on an overloaded worker. Our pattern
is fixed and linear (each quantified piece is disjoint from what may follow it, so nothing backtracks), so
the defence buys nothing. ``tests/test_filters_text.py`` checks on 26k real captions that `tokenize` returns
exactly what ``RegexpTokenizer(WORD_PATTERN)`` returns (the one difference between the engines: ``regex``
does not count superscript digits such as "m²" as word characters, ``re`` does).

Token rules (`WORD_PATTERN`, applied to ``lower()``-ed text with ``_`` -> space and ``’`` -> ``'``):

* A word is a run of letters, digits and combining marks that starts with a letter or digit, so
  punctuation-only tokens never appear. Combining marks are included so that Indic scripts (whose vowel signs
  are marks, not letters, to Python's ``\\w``) stay whole words: "दिल्ली" is one word, not three pieces.
* Apostrophes join ("don't", "father's"); "." and "," join digits ("3.5", "19.99", "1,000").
* Everything else separates: hyphens ("t-shirt" -> "t", "shirt"), underscores ("alt_img" -> "alt",
  "img"), slashes, "&" ("25&id" -> "25", "id"). Splitting hyphens and underscores matters on web data:
  many alt-texts are URL slugs ("LE-Headlamp-LED-4-Modes-Headlight-...") that would otherwise be one giant
  "word" and be counted as a one-word caption.
* Limitation: scripts written without spaces (Chinese, Japanese, Thai) give one word per run of text, so
  such captions are mostly "too short". ALIGN's corpus was English; a segmenter would be needed otherwise.
"""

from __future__ import annotations

import html
import re
import unicodedata
from html.entities import html5 as _HTML5_ENTITIES

MAX_CAPTION_CHARS = 4096  # longer "alt-texts" are page text or spam; the lead rejects them as invalid_row
MAX_URL_CHARS = 2048  # browsers' and CDNs' practical URL limit

# --------------------------------------------------------------------------------------------------------
# normalize_text
# --------------------------------------------------------------------------------------------------------

# Numeric refs, and named refs with or without ";" (HTML5 "legacy" refs such as "&copy 2020").
_ENTITY_RE = re.compile(r"&(?:#[0-9]{1,8};?|#[xX][0-9a-fA-F]{1,8};?|[A-Za-z][A-Za-z0-9]{0,31};?)")

# Markup that leaks into alt-texts ("Orchid Jungle<br>Hawaiian Dresses", "<i>Title</i>"). Only known tag
# names, so "<3", "a < b" and "<UNK>" survive. Block tags separate words; inline tags may sit inside one.
_BLOCK_TAG_RE = re.compile(
    r"</?(?:address|article|blockquote|br|center|dd|div|dl|dt|figcaption|figure|footer|h[1-6]|header|hr|li|ol"
    r"|p|pre|section|table|tbody|td|th|thead|tr|ul)(?:\s[^<>]*)?/?>",
    re.IGNORECASE,
)
_INLINE_TAG_RE = re.compile(
    r"</?(?:a|abbr|b|bdi|bdo|big|cite|code|del|dfn|em|font|i|ins|kbd|mark|nobr|q|s|samp|small|span|strike"
    r"|strong|sub|sup|tt|u|var|wbr)(?:\s[^<>]*)?/?>",
    re.IGNORECASE,
)

# Invisible characters that are not whitespace to str.split(): C0/C1 controls (tab, newline, \x1c-\x1f and
# \x85 are whitespace and are collapsed instead), soft hyphen, zero-width space, LRM/RLM, bidi embeddings
# and isolates, word joiner and invisible operators, BOM, interlinear annotation marks. ZWJ/ZWNJ
# (U+200C/U+200D) are kept: they change the spelling of Persian and Indic words and build emoji sequences.
_INVISIBLE_RE = re.compile(
    "[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u00ad\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064"
    "\u2066-\u2069\ufeff\ufff9-\ufffb]+"
)


def _decode_entity(match: re.Match) -> str:
    ref = match.group()
    if ref[1] == "#" or ref[-1] == ";":
        return html.unescape(ref)
    # A named ref without ";" is decoded only when the whole name is a legacy entity ("&copy 2020"),
    # never as a prefix: html.unescape("&notice") would give "¬ice", a browser reading an attribute keeps it.
    name = ref[1:]
    return _HTML5_ENTITIES.get(name, ref)


def _unescape(text: str) -> str:
    return _ENTITY_RE.sub(_decode_entity, text)


def normalize_text(raw: str) -> str:
    """The caption as written to shards.

    HTML-unescape (twice at most, so double-escaped "&amp;quot;" becomes '"'), drop leaked HTML tags
    (a fixed list of formatting tags), remove control and zero-width characters, Unicode NFC, collapse every
    run of whitespace (tabs, newlines, NBSP, ideographic space, ...) to one space, strip. Invisible
    characters go before NFC so that "e" + ZWSP + U+0301 still composes to "é". Idempotent on real data.
    """
    text = raw
    if "&" in text:
        text = _unescape(text)
        if "&" in text:
            text = _unescape(text)
    if "<" in text:
        text = _BLOCK_TAG_RE.sub(" ", text)
        text = _INLINE_TAG_RE.sub("", text)
    text = _INVISIBLE_RE.sub("", text)
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------------------
# tokenize / word_ngrams / word count
# --------------------------------------------------------------------------------------------------------


def _combining_mark_class() -> str:
    """Character-class body with every combining mark (Mn, Mc, Me) of the Basic Multilingual Plane.

    Built from unicodedata so it follows the running Python's Unicode version, as ``\\w`` does. Astral-plane
    marks (historic scripts) are left out: they made every match 1.6x slower for no real-world gain.
    """
    ranges: list[tuple[int, int]] = []
    for cp in range(0x10000):
        if unicodedata.category(chr(cp))[0] == "M":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)


_MARKS = _combining_mark_class()

# See the module docstring. Input has "_" replaced by a space, so \w is letters and digits here.
WORD_PATTERN = rf"\w[\w{_MARKS}]*(?:(?:'|(?<=\d)[.,](?=\d))[\w{_MARKS}]+)*"
_WORD_RE = re.compile(WORD_PATTERN)


def _prepare_for_tokens(normalized: str) -> str:
    return normalized.lower().replace("_", " ").replace("\u2019", "'")


def tokenize(normalized: str) -> list[str]:
    """Lowercased word tokens of a normalized caption, in order; punctuation-only tokens are dropped."""
    return _WORD_RE.findall(_prepare_for_tokens(normalized))


def word_ngrams(words: list[str]) -> list[str]:
    """Unigrams (every token, in order) followed by bigrams of adjacent tokens joined by one space."""
    return words + [a + " " + b for a, b in zip(words, words[1:])]


# Row rules: ``decide(opts, caption, words)`` -> a detail when the rule rejects the row, else None. ``caption``
# is the normalized caption, ``words`` its word tokens, ``opts`` the run's options (registry.py declares them).


def too_short(opts, caption: str, words: list[str]) -> str | None:
    """ALIGN's unigram-count rule, lower bound: keep captions with at least ``min_words`` words."""
    return f"{len(words)} words" if len(words) < opts.min_words else None


def too_long(opts, caption: str, words: list[str]) -> str | None:
    """ALIGN's unigram-count rule, upper bound: keep captions with at most ``max_words`` words."""
    return f"{len(words)} words" if len(words) > opts.max_words else None


def too_few_characters(opts, caption: str, words: list[str]) -> str | None:
    """LAION's, COYO's and DataComp's length rule (not ALIGN's): keep captions of at least ``min_chars``
    characters, counted on the normalized caption (whitespace runs are one space)."""
    return f"{len(caption)} characters" if len(caption) < opts.min_chars else None


def boilerplate(opts, caption: str, words: list[str]) -> str | None:
    """The whole caption is boilerplate (see `boilerplate_reason`); the detail names the pattern."""
    return boilerplate_reason(caption)


# --------------------------------------------------------------------------------------------------------
# boilerplate
# --------------------------------------------------------------------------------------------------------

_IMAGE_EXTS = (
    "jpg", "jpeg", "jpe", "jfif", "pjpeg", "png", "apng", "gif", "webp", "bmp", "dib", "tif", "tiff", "svg", "svgz",
    "heic", "heif", "avif", "ico", "psd", "raw", "cr2", "nef", "arw", "dng",
)
_IMAGE_EXT = "|".join(_IMAGE_EXTS)
_OTHER_EXT = "pdf|doc|docx|mp4|mov|avi|webm|m4v"

_URL_RE = re.compile(
    r"(?:(?:https?|ftp)://|www\.)\S+"
    # bare domains need a known TLD, so "node.js", "3.5" and "U.S" are not URLs
    r"|(?:[a-z0-9-]+\.)+(?:com|net|org|info|biz|edu|gov|io|co|me|tv|ly|us|uk|de|fr|es|it|nl|ru|jp|cn|br|au|ca"
    r"|in|pl|se|ch|at|be|dk|no|fi|cz|gr|pt|ro|hu|ie|nz|za|mx|ar|kr|tw|vn|id|tr|ir|ua|by|kz)(?:[/?#]\S*)?",
    re.IGNORECASE,
)
_FILENAME_RE = re.compile(rf"[^\s/\\]+\.(?:{_IMAGE_EXT}|{_OTHER_EXT})", re.IGNORECASE)

# The remaining rules run on a "skeleton": lowercase, "×" -> "x", every run of non-alphanumerics -> " ".
# "IMG_1234.JPG" -> "img 1234 jpg"; "Screenshot 2021-01-05 at 10.32.11" -> "screenshot 2021 01 05 at 10 32 11".
_SKELETON_SPLIT_RE = re.compile(r"[\W_]+")

# What may follow a camera/app file stem: counters, dates, times, short codes ("wa0001", "mp"), edits, extensions.
_CAMERA_TAIL = (
    rf"(?: (?:\d+|[a-z]{{1,3}}\d+[a-z\d]*|copy|edit|edited|final|hdr|pano|burst|cover|mp|portrait|bokeh|night"
    rf"|at|am|pm|um|a|à|alle|las|de|{_IMAGE_EXT}|{_OTHER_EXT}))*"
)
_CAMERA_RES = (
    # IMG_1234, DSC01234, DSCN1234, PXL_20210101_123456789, MVI_1234, GOPR0001, GH010001, P1010001, _MG_1234
    re.compile(
        r"(?:img|dsc[nfi]?|pxl|mvi|gopr|g[hx]\d\d|cimg|sam|pict|imag|dji|mg|wp|vid|hpim|dcp|p\d{3}|mov|snapshot)"
        rf" ?\d{{3,}}{_CAMERA_TAIL}"
    ),
    # Screenshot 2021-01-05 at 10.32.11, WhatsApp Image 2020-05-01 at 12.00.01 (1).jpeg, Photo 2020-01-01
    re.compile(
        r"(?:screenshot|screen shot|screen capture|screencap|bildschirmfoto|captura de pantalla|capture d [ée]cran"
        r"|schermata|whatsapp (?:image|video)|signal|telegram|photo|image|picture|video|scan|scanned|snapshot)"
        r"(?=.*\b\d{4,}\b)"  # a date or long counter somewhere: "Photo 2020-01-01" but not "photo 3"
        rf"{_CAMERA_TAIL}"
    ),
    # Android camera names: 20190101_123456.jpg
    re.compile(rf"\d{{8}} \d{{6}}{_CAMERA_TAIL}"),
)

_RES_TOKEN = r"(?:\d{2,5} ?x ?\d{2,5}|\d{3,4}p|[1-8]k)"
_RES_WORD = (
    r"(?:\d+|x|by|px|pixels?|p|hd|fhd|uhd|qhd|full|ultra|wallpapers?|backgrounds?|desktop|resolution|size|kb|mb"
    rf"|image|{_IMAGE_EXT})"
)
# The whole caption is a resolution plus at most resolution-ish words: "1920x1080", "1920 x 1080 px",
# "HD wallpaper 1920x1080", "650 x 465 · 89 kB · jpeg". A resolution inside a description is not flagged.
_RESOLUTION_RE = re.compile(rf"(?:{_RES_WORD} )*{_RES_TOKEN}(?: (?:{_RES_WORD}|{_RES_TOKEN}))*")

_ALT_IMG_RE = re.compile(r"alt(?: (?:img|image|text|tag|attribute|photo|pic))?(?: \d+)*")

_PLACEHOLDER_PHRASES = (
    "image", "images", "img", "photo", "photos", "photograph", "picture", "pictures", "pic", "pics",
    "untitled", "untitled image", "untitled design", "untitled document", "unnamed", "unnamed file",
    "no image", "no images", "no image available", "no photo", "no photo available", "no picture",
    "no picture available", "no thumbnail", "image not available", "image not found", "image unavailable",
    "photo not available", "picture not available", "image coming soon", "photo coming soon", "coming soon",
    "placeholder", "image placeholder", "placeholder image", "thumbnail", "thumb", "thumbnail image",
    "default", "default image", "default thumbnail", "spacer", "blank", "blank image", "null", "none",
    "undefined", "nan", "n a", "loading", "loading image", "click to enlarge", "click here", "click to view",
    "click to zoom", "click for larger image", "view larger image", "view larger", "view image", "enlarge",
    "zoom", "zoom in", "logo", "icon", "banner", "avatar", "featured image", "product image", "main image",
    "gallery image", "image description", "image alt text", "slide", "slideshow", "file", "attachment",
    "download", "preview", "image preview", "gallery", "photo gallery", "your image here", "image here",
    "insert image", "add image", "upload image",
)
_PLACEHOLDER_RE = re.compile(
    "(?:" + "|".join(sorted(map(re.escape, _PLACEHOLDER_PHRASES), key=len, reverse=True)) + ")"
    # "image 3", "photo 2 of 12", "untitled 1 png"
    + rf"(?: \d+)*(?: of \d+)?(?: (?:{_IMAGE_EXT}))?"
)

# Tokens that carry no description: numbers, numbers with a short unit or suffix ("16gb", "2x", "1080p"),
# resolutions ("1920x1080"), letter-led codes with 3+ digits ("dsc01234", "wa0001"), camera/app stems,
# placeholder words and file extensions. "20city" (from "%20City") is not junk.
_JUNK_WORDS = frozenset(
    "img image images photo photos pic pics picture pictures thumbnail thumb screenshot screen shot untitled "
    "placeholder default alt copy file dsc dscn dscf pxl mvi gopr cimg whatsapp px pixels hd wallpaper"
    " jpg jpeg png gif webp bmp tif tiff heic svg".split()
)
_JUNK_TOKEN_RE = re.compile(r"\d+(?:x\d+)?[a-z]{0,3}|[a-z]{1,4}\d{3,}[a-z\d]*")
# "Dominated by junk": at most one token in JUNK_CONTENT_DIVISOR may be a content word (>= 80% junk).
JUNK_CONTENT_DIVISOR = 5

# First-token gates: each whole-caption regex can only match when the caption starts with one of these,
# so ordinary captions skip the regexes after one set lookup (boilerplate_reason went from 6.4 to 2.2 µs).
_CAMERA_FIRST_RE = re.compile(
    r"(?:img|dsc[nfi]?|pxl|mvi|gopr|g[hx]\d\d|cimg|sam|pict|imag|dji|mg|wp|vid|hpim|dcp|p\d{3}|mov|snapshot)"
    r"(?:\d{3,})?|\d{8}"
)
_CAMERA_FIRST_WORDS = frozenset(
    "screenshot screen screencap bildschirmfoto captura capture schermata whatsapp signal telegram photo image"
    " picture video scan scanned snapshot".split()
)
_RES_FIRST_WORDS = frozenset(
    "x by px pixel pixels p hd fhd uhd qhd full ultra wallpaper wallpapers background backgrounds desktop"
    " resolution size kb mb image".split()
    + list(_IMAGE_EXTS)
)
_PLACEHOLDER_FIRST_WORDS = frozenset(p.split()[0] for p in _PLACEHOLDER_PHRASES)


# ASCII captions (94% of LAION) take a bytes.translate path: 4x faster than the regex.
_ASCII_SEPARATORS = bytes.maketrans(
    bytes(b for b in range(128) if not chr(b).isalnum()), b" " * sum(1 for b in range(128) if not chr(b).isalnum())
)


def _skeleton_tokens(normalized: str) -> list[str]:
    lowered = normalized.lower()
    if lowered.isascii():
        return lowered.encode("ascii").translate(_ASCII_SEPARATORS).decode("ascii").split()
    return _SKELETON_SPLIT_RE.sub(" ", lowered.replace("\u00d7", "x")).split()


def _junk_dominated(tokens: list[str]) -> bool:
    n = len(tokens)
    if n < 2:  # a one-token caption is the word-count rule's business
        return False
    content_allowed = n // JUNK_CONTENT_DIVISOR
    content = 0
    for token in tokens:
        if token in _JUNK_WORDS or _JUNK_TOKEN_RE.fullmatch(token):
            continue
        content += 1
        if content > content_allowed:  # early exit: real captions fail within their first few words
            return False
    return True


def _camera_filename(tokens: list[str]) -> bool:
    first = tokens[0]
    if first not in _CAMERA_FIRST_WORDS and not _CAMERA_FIRST_RE.fullmatch(first):
        return False
    skeleton = " ".join(tokens)
    return any(camera_re.fullmatch(skeleton) for camera_re in _CAMERA_RES)


def boilerplate_reason(normalized: str) -> str | None:
    """Name of the boilerplate rule the whole caption matches, else None.

    Conservative by design: a caption is boilerplate only when it is *dominated* by junk. A resolution,
    file name or camera code inside a real description ("Sunset over the bay wallpaper 1920x1080 HD",
    "Fox Crochet Hat.jpg") is kept: the words still describe the image, and the rare-token rule removes the
    junk tokens that are rare across the corpus anyway. Rules, first match wins (skeleton = lowercased,
    punctuation and underscores turned into spaces):

    ===================  ===================================================  ==================================
    rule                 the whole caption is ...                             examples (flagged)
    ===================  ===================================================  ==================================
    ``url``              one URL or bare domain (known TLD), no spaces        "http://x.com/a/b", "www.foo.org"
    ``camera_filename``  a camera / phone / app file name, with counters,     "IMG_1234", "DSC_0001.JPG",
                         dates, times, short codes, edits and extension       "PXL_20210101_123456789.MP.jpg",
                                                                              "Screenshot 2021-01-05 at 10.32.11",
                                                                              "WhatsApp Image 2020-05-01 at 12.00.01"
    ``filename``         a file name with no spaces and a media extension     "foo-bar.jpg", "Solomon_Islands.png"
    ``resolution``       a resolution plus resolution-ish words only          "1920x1080", "1920 × 1080 px",
                                                                              "HD wallpaper 1920x1080"
    ``alt_img``          "alt", "alt img", "alt text", ... with a number      "alt_img", "alt-image 2"
    ``placeholder``      a placeholder phrase, maybe with "N", "N of M", ext  "image", "Untitled-1", "no image
                                                                              available", "photo 3 of 12"
    ``junk_tokens``      >= 80% junk tokens (numbers, numbers with a short     "2019 2020 1234 5678",
                         unit, codes with 3+ digits, placeholder/camera       "0.32893747091293335"
                         words, extensions), 2+ tokens
    ===================  ===================================================  ==================================

    Not flagged (real captions): "Sunset over the bay wallpaper 1920x1080 HD", "Screenshot of Word Search:
    Game of Words", "Sony Cybershot DSC-TX20 16.2MP Rugged Digital Camera", "Fox Crochet Hat.jpg".

    Of the ALIGN paper's examples of removed alt-texts, "1920x1080" (``resolution``) and "alt_img"
    (``alt_img``) are boilerplate. "cristina" and "image_tid 25&id mggqpuwe-qdpd&cache 0&lan_code 0" are
    not: they are removed by the rare-token rule (a name and URL-parameter junk outside the frequent
    n-gram allowlist), and "cristina" by the word-count rule first.

    Measured on real data: 44 of 10,000 LAION alt-texts flagged (0.44%: 32 bare file names, 11 bare URLs or
    domains, 1 number), 0 of 15,833 CC3M captions. About 2.2 µs per caption.
    """
    stripped = normalized.strip(" \"'()[]<>.,;:!?")
    no_space = bool(stripped) and " " not in stripped
    if no_space and _URL_RE.fullmatch(stripped):
        return "url"
    tokens = _skeleton_tokens(normalized)
    if not tokens:
        return None  # nothing but punctuation: the word-count rule rejects it
    if _camera_filename(tokens):
        return "camera_filename"
    if no_space and _FILENAME_RE.fullmatch(stripped):
        return "filename"
    # The whole-caption regexes below run only when the first token allows a match at all.
    first = tokens[0]
    if (first[0].isdigit() or first in _RES_FIRST_WORDS) and _RESOLUTION_RE.fullmatch(" ".join(tokens)):
        return "resolution"
    if first == "alt" and _ALT_IMG_RE.fullmatch(" ".join(tokens)):
        return "alt_img"
    if first in _PLACEHOLDER_FIRST_WORDS and _PLACEHOLDER_RE.fullmatch(" ".join(tokens)):
        return "placeholder"
    if _junk_dominated(tokens):
        return "junk_tokens"
    return None


# --------------------------------------------------------------------------------------------------------
# broken encoding
# --------------------------------------------------------------------------------------------------------


def _continuation_class() -> str:
    """Characters that a UTF-8 continuation byte (0x80-0xBF) becomes when decoded as Windows-1252.

    Bytes 0x81, 0x8D, 0x8F, 0x90, 0x9D are undefined in cp1252 and decode as Latin-1 C1 controls (what
    browsers do). NBSP (0xA0) is left out: "à « guillemets »" is correct French, and NBSP rarely survives.
    """
    chars = []
    for byte in range(0x80, 0xC0):
        if byte == 0xA0:
            continue
        try:
            chars.append(bytes([byte]).decode("cp1252"))
        except UnicodeDecodeError:
            chars.append(chr(byte))
    return "".join(re.escape(c) for c in chars)


_CONT = _continuation_class()
_BROKEN_ENCODING_RE = re.compile(
    "\ufffd"  # replacement character: bytes were already lost upstream
    "|[\ud800-\udfff]"  # lone surrogates (surrogateescape'd bytes)
    f"|[ÂÃ][{_CONT}]"  # Latin-1 supplement mojibake: "Ã©" (é), "Â°" (°), "Ã¼" (ü)
    "|â€|â„¢|ï»¿"  # "â€™" (’), "â€œ" (“), "â€”" (—), "â„¢" (™), "ï»¿" (BOM)
    "|ðŸ"  # 4-byte sequences (emoji): "ðŸ˜€"
    f"|(?:[\u00c4-\u00df][{_CONT}]){{2}}"  # two in a row: Cyrillic "ÐŸÑ€", Greek "Î±Î²", Polish "Å‚Ä…"
    f"|(?:[\u00e0-\u00ef][{_CONT}]{{2}}){{2}}"  # two 3-byte sequences in a row: CJK "ä¸­æ–‡"
)


def has_broken_encoding(s: str) -> bool:
    """True if the text shows damage from a wrong decoding.

    Flags U+FFFD, lone surrogates, and UTF-8-read-as-Windows-1252 mojibake ("Ã©", "â€™", "ÐŸÑ€Ð¸",
    "ðŸ˜€"). Conservative: one accented capital followed by a symbol ("CAFÉ™", "MAMÃ”") is not enough, except
    after "Ã"/"Â", which almost never precede such characters in real text; other sequences must repeat.
    ASCII text returns at once.
    """
    if s.isascii():
        return False
    return _BROKEN_ENCODING_RE.search(s) is not None


__all__ = [
    "MAX_CAPTION_CHARS",
    "MAX_URL_CHARS",
    "WORD_PATTERN",
    "boilerplate",
    "boilerplate_reason",
    "has_broken_encoding",
    "normalize_text",
    "tokenize",
    "too_long",
    "too_short",
    "word_ngrams",
]
