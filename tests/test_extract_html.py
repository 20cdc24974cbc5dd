"""Extraction rules on one page, decoding, and HTML files (aligndata.extract.html / .sources)."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter

import pytest
from extract_reference import reference_pairs
from helpers import REAL

from aligndata.extract import html as rules
from aligndata.extract.pages import ExtractStats, iter_html_rows

PAGES = REAL / "html" / "pages"
PAGE = "https://news.example.com/2020/story.html"


def extract(body: str, page_url: str | None = PAGE) -> tuple[list[tuple[str, str]], Counter]:
    skipped = Counter()
    pairs = rules.extract_pairs(body, page_url, skipped)
    return [(p.url, p.alt) for p in pairs], skipped


# ------------------------------------------------------------------------------------------------ real pages


@pytest.mark.skipif(not PAGES.exists(), reason="needs ../shared/data/real")
def test_real_pages_equal_the_independent_reference():
    page_urls = json.loads((REAL / "html" / "page_urls.json").read_text())
    total = 0
    for path in sorted(PAGES.glob("*.html.gz")):
        text, _ = rules.decode_html(gzip.decompress(path.read_bytes()))
        url = page_urls[path.name]
        got = [(p.url, p.alt) for p in rules.extract_pairs(text, url)]
        assert got == reference_pairs(text, url), path.name
        total += len(got)
    assert total == 1971  # of ~3,800 <img>; a change here means the rules or the parser changed


@pytest.mark.skipif(not PAGES.exists(), reason="needs ../shared/data/real")
def test_real_pages_as_rows():
    page_urls = json.loads((REAL / "html" / "page_urls.json").read_text())
    stats = ExtractStats()
    rows = []
    for i, path in enumerate(sorted(PAGES.glob("*.html.gz"))):
        rows += list(iter_html_rows(str(path), i, page_urls, stats))
    assert stats.files == stats.pages_parsed == 181 and stats.pairs == len(rows) == 1971
    assert sum(stats.images_skipped.values()) + stats.pairs == stats.images_seen
    assert all(r["url"].startswith(("http://", "https://")) and r["text"] == r["text"].strip() for r in rows)
    assert all(r["extra"]["page_url"] == page_urls[sorted(PAGES.glob("*.html.gz"))[r["src"]].name] for r in rows)
    # rows are numbered within each file from 0
    by_src = Counter(r["src"] for r in rows)
    for src, n in by_src.items():
        assert [r["row"] for r in rows if r["src"] == src] == list(range(n))


# ------------------------------------------------------------------------------------------------ the rules


def test_alt_is_required_decoded_and_collapsed():
    pairs, skipped = extract(
        '<img src="a.jpg"><img src="b.jpg" alt=""><img src="c.jpg" alt=" \n\t&nbsp;">'
        '<img src="d.jpg" alt="  Fish &amp;\n chips&nbsp;&#x263A; ">'
    )
    assert pairs == [("https://news.example.com/2020/d.jpg", "Fish & chips \u263a")]
    assert skipped == Counter({rules.NO_ALT: 3})


def test_lazy_attributes_beat_a_placeholder_src():
    pairs, _ = extract(
        '<img alt="one" src="/1x1.gif" data-src="/real/one.jpg">'
        '<img alt="two" src="data:image/gif;base64,R0lGOD" data-lazy-src="two.jpg">'
        '<img alt="three" data-original="//cdn.example.net/three.jpg">'
        '<img alt="four" src="four.jpg">'
    )
    assert pairs == [
        ("https://news.example.com/real/one.jpg", "one"),
        ("https://news.example.com/2020/two.jpg", "two"),
        ("https://cdn.example.net/three.jpg", "three"),
        ("https://news.example.com/2020/four.jpg", "four"),
    ]


def test_srcset_largest_candidate_when_there_is_no_src():
    pairs, _ = extract(
        '<img alt="w" srcset="s.jpg 320w, https://img.example/w_1024,h_768/l.jpg 1024w, m.jpg 640w">'
        '<img alt="x" srcset="a.jpg, b.jpg 3x, c.jpg 2x">'
        '<img alt="lazy" src="data:," data-srcset="p.jpg 100w, q.jpg 200w" srcset="z.jpg 999w">'
        '<img alt="src first" src="s.jpg" srcset="big.jpg 2000w">'
    )
    assert [u for u, _ in pairs] == [
        "https://img.example/w_1024,h_768/l.jpg",
        "https://news.example.com/2020/b.jpg",
        "https://news.example.com/2020/q.jpg",
        "https://news.example.com/2020/s.jpg",
    ]


def test_srcset_parsing_edge_cases():
    assert rules.parse_srcset("a.jpg 1x,b.jpg 2x") == [("a.jpg", None, 1.0), ("b.jpg", None, 2.0)]
    assert rules.parse_srcset(" a.jpg,, b.jpg, ") == [("a.jpg", None, None), ("b.jpg", None, None)]
    assert rules.parse_srcset("bad.jpg 10q, ok.jpg 5w") == [("ok.jpg", 5.0, None)]
    assert rules.largest_srcset_candidate("") is None
    assert rules.largest_srcset_candidate("a.jpg 100w, b.jpg 100w") == "a.jpg"  # ties keep the first
    assert rules.largest_srcset_candidate("a.jpg 2x, b.jpg 50w") == "b.jpg"  # width descriptors win


def test_unusable_sources_are_skipped_with_their_reason():
    pairs, skipped = extract(
        '<img alt="a" src="data:image/png;base64,iVBOR">'
        '<img alt="b" src="javascript:void(0)">'
        '<img alt="c" src="  ">'
        '<img alt="d">'
        '<img alt="e" src="about:blank" data-src="e.jpg">'
        '<img alt="f" src="ftp://files.example.com/f.jpg">'
    )
    assert pairs == [("https://news.example.com/2020/e.jpg", "e")]
    assert skipped == Counter({rules.DATA_URI: 1, rules.UNSUPPORTED_SCHEME: 2, rules.NO_SRC: 2})


def test_resolution_against_page_and_base():
    assert extract('<base href="/static/"><img alt="a" src="a.jpg#frag">')[0] == [
        ("https://news.example.com/static/a.jpg", "a")]
    assert extract('<base href="https://cdn.example.org/x/"><img alt="a" src="../a.jpg">', None)[0] == [
        ("https://cdn.example.org/a.jpg", "a")]
    assert extract('<img alt="a" src=" //img.example.org/a\n.jpg ">')[0] == [("https://img.example.org/a.jpg", "a")]
    pairs, skipped = extract('<img alt="rel" src="a.jpg"><img alt="abs" src="http://x.example/b.jpg">'
                             '<img alt="port" src="http://x.example:99999/c.jpg">', None)
    assert pairs == [("http://x.example/b.jpg", "abs")]
    assert skipped == Counter({rules.UNRESOLVABLE_URL: 2})


def test_tracking_pixels_by_width_or_height_attribute():
    pairs, skipped = extract(
        '<img alt="a" src="a.gif" width="1" height="1">'
        '<img alt="b" src="b.gif" width="0">'
        '<img alt="c" src="c.gif" height="1px">'
        '<img alt="d" src="d.gif" width="2" height="2">'
        '<img alt="e" src="e.gif" width="100%" height="auto">'
    )
    assert [a for _, a in pairs] == ["d", "e"]
    assert skipped == Counter({rules.TRACKING_PIXEL: 3})
    assert rules.parse_dimension(" 300.7px") == 300 and rules.parse_dimension("50%") is None
    assert rules.parse_dimension(None) is None and rules.parse_dimension("wide") is None


def test_identical_pairs_within_a_page_are_kept_once():
    pairs, skipped = extract(
        '<img alt="logo" src="/l.png"><img alt="logo" src="https://news.example.com/l.png">'
        '<img alt="Logo" src="/l.png"><img alt="logo" src="/l.png?v=2">'
    )
    assert len(pairs) == 3 and skipped == Counter({rules.DUPLICATE_IN_PAGE: 1})


def test_kept_attributes():
    (pair,) = rules.extract_pairs('<img alt="a" src="a.jpg" width="640" height="480px" title=" A\n title ">', PAGE)
    assert (pair.width, pair.height, pair.title) == (640, 480, "A title")


def test_which_img_elements_count():
    pairs, _ = extract(
        "<noscript><img alt='in noscript' src='n.jpg'></noscript>"
        "<template><img alt='in template' src='t.jpg'></template>"
        "<!-- <img alt='in comment' src='c.jpg'> -->"
        "<script>var s = \"<img alt='in script' src='s.jpg'>\";</script>"
        "<textarea><img alt='in textarea' src='x.jpg'></textarea>"
        "<svg><image href='v.jpg'/></svg><IMG ALT='upper case' SRC='U.JPG'>"
    )
    assert [a for _, a in pairs] == ["in noscript", "upper case"]


def test_broken_markup_still_gives_pairs():
    body = ("<html><body><div><p><b><img alt='a b' src=a.jpg></div></i><table><tr><img alt=\"c d\" src=c.jpg >"
            "< p <img alt=e src=e.jpg/><img alt=\"unclosed src=x.jpg><img alt=f src=f.jpg>")
    pairs, _ = extract(body)
    assert [a for _, a in pairs] == ["a b", "c d", "e"]  # the unclosed quote swallows the rest, as in browsers


def test_too_many_images_per_page(monkeypatch):
    monkeypatch.setattr(rules, "MAX_IMAGES_PER_PAGE", 3)
    pairs, skipped = extract("".join(f'<img alt="n {i}" src="{i}.jpg">' for i in range(5)))
    assert len(pairs) == 3 and skipped == Counter({rules.TOO_MANY_IMAGES: 2})


# ------------------------------------------------------------------------------------------------ decoding


def test_decoding_order_and_mislabelled_pages():
    cyrillic = "Кот на крыше".encode("cp1251")
    assert rules.decode_html(cyrillic, "windows-1251") == ("Кот на крыше", "cp1251")
    meta = b'<meta charset="windows-1251">' + cyrillic
    assert rules.decode_html(meta, "utf-8")[0].endswith("Кот на крыше")  # the HTTP header lies, meta is right
    assert rules.decode_html(b"\xef\xbb\xbfcaf\xc3\xa9", "iso-8859-1") == ("café", "utf-8-sig")  # BOM wins
    assert rules.decode_html("中文".encode("gb18030"), "gb2312")[0] == "中文"  # gb2312 read as its superset
    assert rules.decode_html("café".encode(), "no-such-charset") == ("café", "utf-8")
    assert rules.decode_html("é".encode("cp1252"), "utf-8")[0] == "é"  # not UTF-8 after all
    text, _ = rules.decode_html(bytes(range(256)) * 4, None)
    assert isinstance(text, str)


def test_random_bytes_never_raise():
    rng = random.Random(3)
    for _ in range(200):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        blob = blob.replace(b"\x00", b"<img alt='a b' src=") if rng.random() < 0.5 else blob
        text, _ = rules.decode_html(blob, rng.choice([None, "utf-8", "shift_jis", "bogus"]))
        rules.extract_pairs(text, rng.choice([None, PAGE, "not a url", "http://[::1"]))


# ------------------------------------------------------------------------------------------------ html files


def test_html_files_page_url_mapping_base_and_damage(tmp_path):
    (tmp_path / "mapped.html").write_text('<img alt="m" src="m.jpg">')
    (tmp_path / "based.html.gz").write_bytes(gzip.compress(
        b'<base href="https://site.example/dir/"><img alt="b" src="b.jpg">'))
    (tmp_path / "bare.html").write_text('<img alt="r" src="r.jpg"><img alt="a" src="https://a.example/a.jpg">')
    (tmp_path / "cut.html.gz").write_bytes(gzip.compress(b'<img alt="c" src="c.jpg">' * 50)[:-20])
    (tmp_path / "big.html").write_text('<img alt="big" src="big.jpg">' + " " * 5000)
    mapping = {"mapped.html": "https://mapped.example/p/"}
    stats = ExtractStats()
    names = ["mapped.html", "based.html.gz", "bare.html", "cut.html.gz", "big.html", "missing.html"]
    rows = {name: list(iter_html_rows(str(tmp_path / name), i, mapping, stats, max_page_bytes=4000))
            for i, name in enumerate(names)}
    assert [(r["url"], r["extra"]["page_url"]) for r in rows["mapped.html"]] == [
        ("https://mapped.example/p/m.jpg", "https://mapped.example/p/")]
    assert [(r["url"], r["extra"]["page_url"]) for r in rows["based.html.gz"]] == [
        ("https://site.example/dir/b.jpg", "https://site.example/dir/")]
    assert [(r["url"], r["extra"]["page_url"]) for r in rows["bare.html"]] == [("https://a.example/a.jpg", None)]
    assert rows["cut.html.gz"] == rows["big.html"] == rows["missing.html"] == []
    assert stats.pages_skipped == Counter({"truncated_record": 1, "page_too_large": 1})
    assert stats.images_skipped == Counter({rules.UNRESOLVABLE_URL: 1})
    assert [u["file"] for u in stats.unreadable_files] == [str(tmp_path / "missing.html")]
    assert stats.files == 6 and stats.records_read == 5 and stats.pages_parsed == 3
    assert rows["mapped.html"][0] == {"src": 0, "row": 0, "url": "https://mapped.example/p/m.jpg", "text": "m",
                                      "extra": {"page_url": "https://mapped.example/p/", "img_width": None,
                                                "img_height": None, "title": None}}
