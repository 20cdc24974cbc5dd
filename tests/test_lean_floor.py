"""The benchmark's lean floor (pipeline/lean_floor.py) gives the reference's verdicts, row by row."""

from __future__ import annotations

from collections import Counter

import pytest

from helpers import REAL, needs_real

from aligndata.filters import reasons
from aligndata.io.inputs import InputSpec
from aligndata.pipeline.lean_floor import lean_text_stage
from aligndata.pipeline.reference import plain_text_stage  # the oracle
from aligndata.pipeline.sources import iter_rows

# Every reason of the text stage; rare tokens only when c* >= 2.
TEXT_REASONS = {reasons.INVALID_ROW, reasons.DUPLICATE_PAIR, reasons.TEXT_TOO_SHORT, reasons.TEXT_TOO_LONG,
                reasons.TEXT_BOILERPLATE, reasons.TEXT_RARE_TOKEN, reasons.TEXT_SHARED_BY_TOO_MANY_IMAGES,
                reasons.IMAGE_TOO_MANY_TEXTS}


def both(rows, **limits):
    """(lean verdicts, lean info) after checking that they equal the reference's."""
    expected, expected_info = plain_text_stage(rows, **limits)
    verdicts, info = lean_text_stage(rows, **limits)
    assert info == expected_info
    assert verdicts.keys() == expected.keys()
    differ = {k: (expected[k], verdicts[k]) for k in expected if verdicts[k] != expected[k]}
    assert not differ, f"(reference, lean) verdicts differ on {len(differ)} rows, e.g. {list(differ.items())[:5]}"
    return verdicts, info


# ------------------------------------------------------------------------------------------------ hand-made

HAND_LIMITS = {"max_texts_per_image": 3}  # a URL with 4 distinct texts is enough
HAND_K = 50  # the n-grams seen twice or more fit, those seen once do not: c* = 2


def hand_corpus() -> tuple[list[dict], list[str | None], list[str | None]]:
    """(rows, verdicts at the default K, verdicts at HAND_K): every reason, and the edges between them."""
    items: list[tuple] = []  # (url, text, verdict at default K, verdict at HAND_K, more raw fields)

    def add(url, text, default, small=None, **extra):
        items.append((url, text, default, default if small is None else small, extra))

    common = ["a red car on the road", "a green bike in the park", "the old house by the lake"]
    for i, caption in enumerate(common):  # each on two URLs: every n-gram seen twice
        add(f"http://img.test/c{i}a.jpg", caption, None)
        add(f"http://img.test/c{i}b.jpg", caption, None)
    # Case and spacing: the same lowercased text on the same URL is not a second distinct text, nor a duplicate.
    add("http://img.test/c0a.jpg", "A Red Car On The Road", None)
    add("  http://img.test/c0a.jpg ", "a  red car&nbsp;on the <b>road</b>", reasons.DUPLICATE_PAIR)

    add("", "a red car on the road", reasons.INVALID_ROW)  # missing URL
    add("ftp://img.test/x.jpg", "a red car on the road", reasons.INVALID_ROW)  # unsupported scheme
    add("http://img.test/x\t.jpg", "a red car on the road", reasons.INVALID_ROW)  # control character
    add("http://img.test/" + "x" * 2100, "a red car on the road", reasons.INVALID_ROW)  # overlong URL
    add("http://img.test/e1.jpg", "   ", reasons.INVALID_ROW)  # empty
    add("http://img.test/e2.jpg", None, reasons.INVALID_ROW)
    add("http://img.test/e3.jpg", "<br>&nbsp;", reasons.INVALID_ROW)  # empty once normalized
    add("http://img.test/e4.jpg", "word " * 900, reasons.INVALID_ROW)  # over 4096 characters
    add("http://img.test/e5.jpg", "CafÃ© on the road", reasons.INVALID_ROW)  # mojibake
    add("http://img.test/e6.jpg", "a red car on the road", reasons.INVALID_ROW, bad="unparsable_json_line")

    add("http://img.test/s1.jpg", "red car", reasons.TEXT_TOO_SHORT)
    add("http://img.test/s2.jpg", "-- red -- car --", reasons.TEXT_TOO_SHORT)  # punctuation is not a word
    long_caption = "quagga on the road" + " the" * 17  # 21 words; its n-grams count although it is dropped
    add("http://img.test/l1.jpg", long_caption, reasons.TEXT_TOO_LONG)
    add("http://img.test/b1.jpg", "IMG_1234.JPG", reasons.TEXT_BOILERPLATE)
    add("http://img.test/b2.jpg", "HD wallpaper 1920x1080", reasons.TEXT_BOILERPLATE)
    add("http://img.test/b2.jpg", "HD wallpaper 1920x1080", reasons.DUPLICATE_PAIR)  # outranks the row rules

    add("http://img.test/r1.jpg", "a red zyzzyva on the road", None, reasons.TEXT_RARE_TOKEN)  # seen once
    add("http://img.test/r2.jpg", "a red car by the lake", None, reasons.TEXT_RARE_TOKEN)  # "car by": once
    add("http://img.test/r3.jpg", "quagga on the road", None)  # "quagga" twice: here and in the long caption
    # A duplicate counts its n-grams again: "okapi" is seen twice; the first row passes, the second is the dup.
    add("http://img.test/o1.jpg", "an okapi in the park", None)
    add("http://img.test/o1.jpg", "an okapi in the park", reasons.DUPLICATE_PAIR)

    for i in range(11):  # more than 10 images
        add(f"http://img.test/shared{i}.jpg", "a blue car on the road", reasons.TEXT_SHARED_BY_TOO_MANY_IMAGES)
    for i in range(10):  # exactly 10: kept
        add(f"http://img.test/ten{i}.jpg", "a blue bike on the road", None)

    many = "http://img.test/many.jpg"  # 4 distinct texts > 3; the too-short one counts too
    for caption in common:
        add(many, caption, reasons.IMAGE_TOO_MANY_TEXTS)
    add(many, "red car", reasons.TEXT_TOO_SHORT)
    three = "http://img.test/three.jpg"  # exactly 3 distinct texts (one twice in another case): kept
    for caption in common + ["THE OLD HOUSE BY THE LAKE"]:
        add(three, caption, None)

    rows = []
    for i, (url, text, _, _, extra) in enumerate(items):
        rows.append({"src": "hand", "row": i, "url": url, "text": text, "extra": {}, **extra})
    return rows, [it[2] for it in items], [it[3] for it in items]


def test_hand_made_corpus_every_reason_at_both_k():
    rows, at_default, at_small = hand_corpus()
    verdicts, info = both(rows, **HAND_LIMITS)
    assert info["allowlist_threshold"] == 1
    assert [verdicts[("hand", i)] for i in range(len(rows))] == at_default
    verdicts, info = both(rows, vocab_size=HAND_K, **HAND_LIMITS)
    assert info["allowlist_threshold"] == 2
    assert [verdicts[("hand", i)] for i in range(len(rows))] == at_small
    assert set(verdicts.values()) == TEXT_REASONS | {None}


def test_no_words_is_not_rare():
    """--min-words 0 lets a punctuation-only caption through: no n-gram, so nothing rare (as in the pipeline;
    the reference has no min over an empty row, so only the lean loop is asked here)."""
    rows = [{"src": 0, "row": i, "url": f"http://img.test/{i}.jpg", "text": t, "extra": {}}
            for i, t in enumerate(["!!!", "a b", "a b", "c"])]
    verdicts, info = lean_text_stage(rows, min_words=0, vocab_size=3)
    assert info["allowlist_threshold"] == 2
    assert [verdicts[(0, i)] for i in range(4)] == [None, None, None, reasons.TEXT_RARE_TOKEN]


# ------------------------------------------------------------------------------------------------ real data

REAL_ROWS = 4000  # a few seconds for both loops at both K on this machine
SMALL_K = 20_000  # c* = 2 on these rows


def real_rows() -> list[dict]:
    """The first REAL_ROWS LAION rows, then duplicated pairs (some only equal once normalized), a real caption
    on 11 more URLs, and 1100 real captions on one URL."""
    spec = InputSpec(path=str(REAL / "captions" / "laion_alt_10k.parquet"), index=0, fmt="parquet",
                     url_col="URL", caption_col="TEXT")
    rows = []
    for raw in iter_rows(spec):
        if raw["row"] >= REAL_ROWS:
            break
        rows.append(raw)
    base = [r for r in rows if r["url"] and r["text"]]
    extra = []
    for r in base[::50]:
        extra.append((r["url"], r["text"]))
        extra.append((f" {r['url']} ", f"  {r['text']}\t"))  # the same pair after strip and normalization
    shared = base[7]["text"]
    extra += [(f"http://img.test/shared-{i}.jpg", shared) for i in range(11)]
    extra += [("http://img.test/one-image.jpg", r["text"]) for r in base[:1100]]  # > 1000 distinct, as written
    for i, (url, text) in enumerate(extra, start=len(rows)):
        rows.append({"src": 0, "row": i, "url": url, "text": text, "extra": {}})
    return rows


@needs_real
@pytest.mark.parametrize("vocab_size", [100_000_000, SMALL_K])
def test_real_laion_same_verdicts_as_the_reference(vocab_size):
    rows = real_rows()
    verdicts, info = both(rows, vocab_size=vocab_size)
    found = Counter(verdicts.values())
    if vocab_size == SMALL_K:
        assert info["allowlist_threshold"] >= 2
    else:
        assert info["allowlist_threshold"] == 1
    expected = TEXT_REASONS if vocab_size == SMALL_K else TEXT_REASONS - {reasons.TEXT_RARE_TOKEN}
    assert expected <= set(found), f"missing reasons: {expected - set(found)}"
    assert found[None] > 0
