"""Tests for aligndata.filters.text: normalization, tokens, word count, boilerplate, broken encoding."""

from __future__ import annotations

import unicodedata

import pytest
from helpers import REAL

from aligndata.filters import reasons
from aligndata.filters.registry import row_rules, rule_options
from aligndata.filters.text import (
    MAX_CAPTION_CHARS,
    MAX_URL_CHARS,
    WORD_PATTERN,
    boilerplate_reason,
    has_broken_encoding,
    normalize_text,
    tokenize,
    word_ngrams,
)

LAION = REAL / "captions" / "laion_alt_10k.parquet"
CC3M = REAL / "captions" / "cc3m_validation.tsv"


def laion_texts() -> list[str]:
    if not LAION.exists():
        pytest.skip(f"real data not present: {LAION}")
    import pyarrow.parquet as pq

    return [t for t in pq.read_table(LAION, columns=["TEXT"]).column("TEXT").to_pylist() if t]


def cc3m_texts() -> list[str]:
    if not CC3M.exists():
        pytest.skip(f"real data not present: {CC3M}")
    with CC3M.open(encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t")[0] for line in f if line.strip()]


def words(text: str) -> list[str]:
    return tokenize(normalize_text(text))


# ---------------------------------------------------------------------------------------------- normalize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Wood Cleaner &amp; Polish", "Wood Cleaner & Polish"),
        ("&quot;Keep Calm&quot; - Blue Canvas", '"Keep Calm" - Blue Canvas'),
        ("Children&#039;s party &#x41;", "Children's party A"),
        ("double &amp;quot;escaped&amp;quot;", 'double "escaped"'),
        ("three levels &amp;amp;lt; stops after two passes", "three levels &lt; stops after two passes"),
        ("&copy 2020 legacy entity", "\u00a9 2020 legacy entity"),
        ("&notice is not &not + ice", "&notice is not \u00ac + ice"),
        ("AT&T and R&D and Q&A", "AT&T and R&D and Q&A"),
        ("&unknownentity; stays", "&unknownentity; stays"),
    ],
)
def test_normalize_unescapes_html_entities(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Orchid Jungle<br>Hawaiian Dresses<br />100% Rayon<br>", "Orchid Jungle Hawaiian Dresses 100% Rayon"),
        ("<i>Transformers: Age of Extinction</i>", "Transformers: Age of Extinction"),
        ("Toy <font><b>Car</b></font> model", "Toy Car model"),
        ("<a href='http://x.com/a'>Hospital </a>Ribbon Cutting", "Hospital Ribbon Cutting"),
        ("Rayon (&lt;i&gt;escaped tags&lt;/i&gt;)", "Rayon (escaped tags)"),
        ("I <3 you and a < b > c", "I <3 you and a < b > c"),
        ("<UNK> token and <mytag>", "<UNK> token and <mytag>"),
    ],
)
def test_normalize_strips_known_html_tags_only(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_normalize_whitespace_and_invisible_characters() -> None:
    assert normalize_text("  a\tb\nc\r\n d\u00a0e\u3000f\u2028g  ") == "a b c d e f g"
    assert normalize_text("zero\u200bwidth\ufeff soft\u00adhyphen") == "zerowidth softhyphen"
    assert normalize_text("ctl\x00\x07\x1b\x7f\x9fchars") == "ctlchars"
    assert normalize_text("\u200eleft-to-right mark\u202e") == "left-to-right mark"
    # ZWJ / ZWNJ change spelling (Persian, Indic, emoji sequences): kept
    assert normalize_text("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645") == "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    assert normalize_text("\U0001F468\u200d\U0001F469\u200d\U0001F467") == "\U0001F468\u200d\U0001F469\u200d\U0001F467"
    assert normalize_text("") == ""
    assert normalize_text(" \t\u00a0 ") == ""


def test_normalize_nfc() -> None:
    decomposed = "Cafe\u0301 cre\u0300me"
    out = normalize_text(decomposed)
    assert out == "Caf\u00e9 cr\u00e8me"
    assert unicodedata.is_normalized("NFC", out)
    assert normalize_text("&#101;&#769;") == "\u00e9"  # entity-produced combining sequence is composed too
    assert normalize_text("e\u200b\u0301") == "\u00e9"  # invisible characters go first, then NFC


def test_normalize_is_idempotent_on_real_captions() -> None:
    for raw in laion_texts() + cc3m_texts():
        once = normalize_text(raw)
        assert normalize_text(once) == once, raw


# ---------------------------------------------------------------------------------------------- tokenize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A Dog, on the BEACH!", ["a", "dog", "on", "the", "beach"]),
        ("Father's Day T-Shirt", ["father's", "day", "t", "shirt"]),
        ("don\u2019t stop", ["don't", "stop"]),  # curly apostrophe counts like the straight one
        ("$19.99 for 1,000 at 3.5x", ["19.99", "for", "1,000", "at", "3.5x"]),
        ("U.S. end. red,blue", ["u", "s", "end", "red", "blue"]),
        ("alt_img IMG_1234.JPG", ["alt", "img", "img", "1234", "jpg"]),
        ("image_tid 25&id mggqpuwe-qdpd&cache 0&lan_code 0",
         ["image", "tid", "25", "id", "mggqpuwe", "qdpd", "cache", "0", "lan", "code", "0"]),
        ("1920x1080", ["1920x1080"]),
        ("-- ... !! ___ ' \u2014 \u2026", []),
        ("'quoted' words'", ["quoted", "words"]),
        ("\u092d\u093e\u0930\u0924 \u0915\u0940 \u0930\u093e\u091c\u0927\u093e\u0928\u0940",  # Hindi
         ["\u092d\u093e\u0930\u0924", "\u0915\u0940", "\u0930\u093e\u091c\u0927\u093e\u0928\u0940"]),
        ("\u00c9T\u00c9 \u00e0 Paris", ["\u00e9t\u00e9", "\u00e0", "paris"]),
        ("Stra\u00dfe \u0394\u03b5\u03bb\u03c4\u03af\u03bf", ["stra\u00dfe", "\u03b4\u03b5\u03bb\u03c4\u03af\u03bf"]),
    ],
)
def test_tokenize(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_tokenize_nfc_and_decomposed_give_the_same_word() -> None:
    assert words("cafe\u0301") == words("caf\u00e9") == ["caf\u00e9"]


def test_tokenize_matches_nltk_regexp_tokenizer_on_real_captions() -> None:
    """tokenize is nltk's RegexpTokenizer(WORD_PATTERN), compiled with stdlib re for speed.

    nltk routes the pattern through the third-party `regex` engine, whose \\w excludes superscript digits
    ("149m²") while stdlib re includes them (str.isdigit() is True): those rows are the only exception.
    """
    from nltk.tokenize import RegexpTokenizer

    reference = RegexpTokenizer(WORD_PATTERN)
    compared = 0
    for raw in laion_texts() + cc3m_texts():
        text = normalize_text(raw)
        if any(unicodedata.category(ch) == "No" for ch in text):
            continue
        prepared = text.lower().replace("_", " ").replace("\u2019", "'")
        assert tokenize(text) == reference.tokenize(prepared), raw
        compared += 1
    assert compared > 25_000


# ------------------------------------------------------------------------------------- n-grams, word count


def test_word_ngrams_unigrams_then_bigrams_in_order() -> None:
    assert word_ngrams(["a", "b", "c"]) == ["a", "b", "c", "a b", "b c"]
    assert word_ngrams(["very", "very", "good"]) == ["very", "very", "good", "very very", "very good"]
    assert word_ngrams(["solo"]) == ["solo"]
    assert word_ngrams([]) == []
    tokens = ["x", "y"]
    word_ngrams(tokens)
    assert tokens == ["x", "y"]  # the input list is not modified


def _sentence(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def first_row_rule(caption: str, **opts) -> str | None:
    """The reason the registered row rules give a caption (None: kept), with the given rule options."""
    normalized = normalize_text(caption)
    tokens = tokenize(normalized)
    return next((reason for reason, decide in row_rules(rule_options(**opts)) if decide(normalized, tokens)), None)


def word_count_reason(n_words: int, **opts) -> str | None:
    """The word-count rules alone, on a caption of ``n_words`` plain words."""
    return first_row_rule(_sentence(n_words), boilerplate=False, **opts)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, reasons.TEXT_TOO_SHORT),
        (2, reasons.TEXT_TOO_SHORT),
        (3, None),
        (20, None),
        (21, reasons.TEXT_TOO_LONG),
    ],
)
def test_word_count_reason_paper_bounds(n: int, expected: str | None) -> None:
    assert word_count_reason(n) == expected


def test_word_count_reason_custom_bounds() -> None:
    assert word_count_reason(4, min_words=5, max_words=5) == reasons.TEXT_TOO_SHORT
    assert word_count_reason(5, min_words=5, max_words=5) is None
    assert word_count_reason(6, min_words=5, max_words=5) == reasons.TEXT_TOO_LONG


@pytest.mark.parametrize(
    ("n", "expected"),
    [(2, reasons.TEXT_TOO_SHORT), (3, None), (20, None), (21, reasons.TEXT_TOO_LONG)],
)
def test_word_count_on_captions_ignores_punctuation_tokens(n: int, expected: str | None) -> None:
    caption = " -- ".join(_sentence(n).split()) + " !!! ... \u2014"
    assert len(words(caption)) == n
    assert first_row_rule(caption, boilerplate=False) == expected


def test_word_count_real_captions() -> None:
    texts = cc3m_texts()
    kept = sum(first_row_rule(t, boilerplate=False) is None for t in texts)
    # CC3M captions are short human-written sentences: nearly all are 3..20 words
    assert kept / len(texts) > 0.95


# -------------------------------------------------------------------------------------------- boilerplate

FLAGGED = [
    # the ALIGN paper's examples that are boilerplate
    ("1920x1080", "resolution"),
    ("alt_img", "alt_img"),
    # resolution
    ("1920 \u00d7 1080 px", "resolution"),
    ("HD wallpaper 1920x1080", "resolution"),
    ("650 x 465 \u00b7 89 kB \u00b7 jpeg", "resolution"),
    ("4K Ultra HD", "resolution"),
    # camera / phone / app file names
    ("IMG_1234", "camera_filename"),
    ("DSC_0001.JPG", "camera_filename"),
    ("DSCN1234", "camera_filename"),
    ("_MG_4521 copy", "camera_filename"),
    ("P1010001.JPG", "camera_filename"),
    ("PXL_20210101_123456789.MP.jpg", "camera_filename"),
    ("IMG-20190101-WA0001.jpg", "camera_filename"),
    ("Screenshot 2021-01-05 at 10.32.11 AM.png", "camera_filename"),
    ("Screen Shot 2020-03-04 at 9.15.02 PM", "camera_filename"),
    ("WhatsApp Image 2020-05-01 at 12.00.01 (1).jpeg", "camera_filename"),
    ("20190101_123456.jpg", "camera_filename"),
    # URLs and bare file names
    ("https://example.com/path/to/image.jpg", "url"),
    ("www.example.org", "url"),
    ("tutorialblog.org", "url"),
    ("foo-bar.jpg", "filename"),
    ("VANESSA-BELETIC-GREY-SUEDE-NECKLACE.JPG", "filename"),
    ("Solomon_Islands.png", "filename"),
    # alt and placeholder words
    ("alt image 2", "alt_img"),
    ("ALT TEXT", "alt_img"),
    ("image", "placeholder"),
    ("Photo 3 of 12", "placeholder"),
    ("Untitled-1", "placeholder"),
    ("No image available", "placeholder"),
    ("click to enlarge", "placeholder"),
    ("thumbnail", "placeholder"),
    # dominated by junk tokens
    ("0.32893747091293335", "junk_tokens"),
    ("2019 2020 1234 5678", "junk_tokens"),
    ("ab12345 cd67890 photo 2", "junk_tokens"),
]


@pytest.mark.parametrize(("caption", "rule"), FLAGGED)
def test_boilerplate_flags(caption: str, rule: str) -> None:
    assert boilerplate_reason(normalize_text(caption)) == rule


NOT_FLAGGED = [
    "Sunset over the bay wallpaper 1920x1080 HD",
    "Screenshot of Word Search: Game of Words",
    "Sony Cybershot DSC-TX20 16.2MP Rugged Digital Camera",
    "Fox Crochet Hat.jpg",
    "BubbleWrap 1500mm x 100m - 10mm",
    "Dalamatia%20City,%20the%20triangle%20City",
    "Photo of a dog on the beach",
    "image of a red car",
    "Thumbnail 3 bed flat to rent in Vincent Square, London",
    "Mishal Raheja as Dutta Patil (133046) size:1280x800",
    "2017 Zhejiang,TCR Qualifying",
    "iPhone 12 Pro 256GB",
    "Model 3",
    "an angler fishes river on a snowy day .",
    "",
    "!!!",
    # the paper's other examples are removed by the rare-token (and word-count) rules, not here
    "cristina",
    "image_tid 25&id mggqpuwe-qdpd&cache 0&lan_code 0",
]


@pytest.mark.parametrize("caption", NOT_FLAGGED)
def test_boilerplate_keeps_real_descriptions(caption: str) -> None:
    assert boilerplate_reason(normalize_text(caption)) is None


def test_junk_share_boundary() -> None:
    # 5 tokens: one content token is allowed (80% junk), two are not
    assert boilerplate_reason("1234 5678 9012 3456 sunset") == "junk_tokens"
    assert boilerplate_reason("1234 5678 9012 sunset beach") is None
    # 2..4 tokens: every token must be junk
    assert boilerplate_reason("1234 5678") == "junk_tokens"
    assert boilerplate_reason("1234 sunset") is None


def test_boilerplate_rate_on_real_laion_is_small() -> None:
    texts = [normalize_text(t) for t in laion_texts()]
    flagged = [t for t in texts if boilerplate_reason(t)]
    # measured: 44 of 10,000 (0.44%): bare file names and URLs
    assert 0 < len(flagged) / len(texts) < 0.01


def test_boilerplate_rate_on_real_cc3m_is_zero() -> None:
    texts = [normalize_text(t) for t in cc3m_texts()]
    flagged = [t for t in texts if boilerplate_reason(t)]
    assert flagged == []


# -------------------------------------------------------------------------------------- broken encoding

LEGIT = [
    "plain ascii",
    "Caf\u00e9 cr\u00e8me \u00e0 \u00ab\u00a0la carte\u00a0\u00bb",
    "Stra\u00dfe in M\u00fcnchen",
    "S\u00c3O PAULO",
    "L'\u00c2GE DE L'EXTINCTION",
    "CAF\u00c9\u2122 brand",
    "Za\u017c\u00f3\u0142\u0107 g\u0119\u015bl\u0105 ja\u017a\u0144",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440",
    "\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1",
    "\u4e2d\u6587\u5b57\u5e55 \u65e5\u672c\u8a9e",
    "\U0001F600 party \U0001F389",
    "\u00c6r\u00f8sk\u00f8bing, \u00de\u00f3r and \u00d3\u00f0inn",
    "\u00d72 speed",
    "\u00d1and\u00fa",
    "Ti\u1ebfng Vi\u1ec7t",
    "\u05e2\u05d1\u05e8\u05d9\u05ea \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0939\u093f\u0928\u094d\u0926\u0940",
]


@pytest.mark.parametrize("text", LEGIT)
def test_correct_text_is_not_broken(text: str) -> None:
    assert has_broken_encoding(text) is False


def _mojibake(text: str) -> str:
    return text.encode("utf-8").decode("cp1252", errors="ignore")


@pytest.mark.parametrize(
    "original",
    [
        "Caf\u00e9 cr\u00e8me",  # Ã©
        "it\u2019s",  # â€™
        "\u201cquoted\u201d",  # â€œ
        "50\u00b0 angle",  # Â°
        "Stra\u00dfe",  # ÃŸ
        "\u041f\u0440\u0438\u0432\u0435\u0442",  # ÐŸÑ€Ð¸
        "\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1",  # Greek
        "\u4e2d\u6587",  # ä¸­æ–‡
        "\U0001F600 party",  # ðŸ˜€
        "Za\u017c\u00f3\u0142\u0107 g\u0119\u015bl\u0105",  # Å¼Ã³Å‚
        "\u2122 sign",  # â„¢
    ],
)
def test_mojibake_is_broken(original: str) -> None:
    broken = _mojibake(original)
    assert broken != original
    assert has_broken_encoding(broken) is True


def test_replacement_char_and_surrogates_are_broken() -> None:
    assert has_broken_encoding("Oklahoman\ufffds Little All-City") is True
    assert has_broken_encoding(b"caf\xe9".decode("utf-8", errors="surrogateescape")) is True
    assert has_broken_encoding("\ud83d alone") is True


def test_broken_encoding_rate_on_real_data() -> None:
    laion = [t for t in laion_texts() if has_broken_encoding(t)]
    # measured: the 6 LAION rows that contain U+FFFD, nothing else
    assert 0 < len(laion) <= 10
    assert all("\ufffd" in t for t in laion)
    assert not any(has_broken_encoding(t) for t in cc3m_texts())


def test_limits() -> None:
    assert MAX_CAPTION_CHARS == 4096
    assert MAX_URL_CHARS == 2048
