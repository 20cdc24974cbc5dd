"""NSFW modes (aligndata/filters/nsfw.py): keyword list, NudeNet extra, module:function plugins."""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from helpers import COCO, REAL, needs_real
from PIL import Image

from aligndata.filters.nsfw import (
    DEFAULT_MODE,
    KEYWORDS,
    NsfwError,
    NsfwFilter,
    caption_keyword,
    parse_modes,
    url_keyword,
)


# Plugins used below, imported by name ("test_nsfw:redness") like a user's module would be.
def redness(image: Image.Image) -> float:
    """Share of the red channel in the mean colour."""
    r, g, b = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return r / (r + g + b)


def broken(image: Image.Image) -> float:
    raise RuntimeError("model not loaded")


def not_a_number(image: Image.Image) -> float:
    return float("nan")


NOT_CALLABLE = 3


# ------------------------------------------------------------------------------------------------ keywords


@pytest.mark.parametrize("caption,word", [
    ("Hot porn video", "porn"),
    ("A history of Pornography in print", "pornography"),
    ("PORNSTAR of the year", "pornstar"),
    ("anime hentai wallpaper", "hentai"),
    ("new sex toys for couples", "sex toys"),
    ("XXX rated movie", "xxx"),
    ("milf_next_door", "milf"),  # underscores separate words
])
def test_caption_keywords_match_whole_words_and_phrases(caption, word):
    assert caption_keyword(caption) == word


@pytest.mark.parametrize("caption", [
    "Nude heels with ankle strap",  # a colour
    "Naked cake with fresh berries",
    "Sexy red bodycon dress",
    "Blue tits at the bird feeder",
    "sex education in schools",  # "sex" alone is not listed
    "Scorpion on a rock",  # "porn" inside a word does not count
    "Pornographers",  # nor does a longer word
    "XXXL t-shirt",
    "same-sex marriage rally",
])
def test_captions_with_innocent_uses_are_not_flagged(caption):
    assert caption_keyword(caption) is None


def test_url_tokens_match_hosts_and_paths_but_not_caption_only_words():
    assert url_keyword("https://www.pornhub.com/view/123.jpg") == "pornhub"
    assert url_keyword("http://example.com/porn-videos/thumb.jpg") == "porn"
    assert url_keyword("http://cdn.example.com/sex_toys/1.jpg") == "sex toys"
    assert url_keyword("http://example.com/images/xxx/placeholder.jpg") is None  # "xxx" is captions only
    assert url_keyword("http://scorpion.example.com/a.jpg") is None


def test_keyword_filter_reports_the_word_and_where():
    f = NsfwFilter("keywords")
    assert not f.needs_image
    hit = f.check(None, "free porn pictures", "http://example.com/a.jpg")
    assert hit.score == 1.0 and hit.detail == "keyword:porn (caption)"
    assert f.check(None, "a cat on a mat", "http://xhamster.com/a.jpg").detail == "keyword:xhamster (url)"
    assert f.check(None, "a cat on a mat", "http://example.com/cat.jpg") is None


def test_default_mode_is_keywords_and_off_disables():
    assert DEFAULT_MODE == "keywords"  # ALIGN removed pornographic images: never off by default
    assert NsfwFilter().enabled
    off = NsfwFilter("off")
    assert not off.enabled and off.check(None, "porn", "http://pornhub.com/") is None


@pytest.mark.parametrize("mode,message", [
    ("", "needs a mode"),
    ("nope", "unknown --nsfw mode 'nope'"),
    ("off,keywords", "cannot be combined"),
    ("keywords,keywords", "twice"),
])
def test_bad_modes_are_refused(mode, message):
    with pytest.raises(NsfwError, match=message):
        parse_modes(mode)


def test_keyword_list_entries_are_single_lowercase_tokens():
    assert all(w == w.lower() and w.isalnum() for w in KEYWORDS)


# ------------------------------------------------------------------------------------ real captions (rate)


@needs_real
def test_flag_rate_on_real_laion_and_cc3m_captions():
    f = NsfwFilter("keywords")
    laion = pq.read_table(REAL / "captions" / "laion_alt_10k.parquet").to_pydict()
    flagged = [(t, u) for u, t in zip(laion["URL"], laion["TEXT"]) if f.check(None, t or "", u or "")]
    rate = len(flagged) / len(laion["URL"])
    print(f"LAION 10k: {len(flagged)} flagged ({100 * rate:.2f}%)")
    # Conservative: 0.18% (18 rows, adult-site captions or URLs by inspection), never a broad sweep.
    assert 0.0005 <= rate <= 0.005
    texts = {t for t, _ in flagged}
    assert "Double Teamed #2 Porn Movie" in texts
    assert not any("Nude Tulle" in t or "Sexy Hot Skinny" in t for t in texts)
    cc3m = pacsv.read_csv(
        REAL / "captions" / "cc3m_validation.tsv",
        read_options=pacsv.ReadOptions(column_names=["caption", "url"]),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
    ).to_pydict()
    cc_flagged = [c for c, u in zip(cc3m["caption"], cc3m["url"]) if f.check(None, c, u)]
    print(f"CC3M validation: {len(cc_flagged)} of {len(cc3m['caption'])} flagged")
    assert cc_flagged == []  # CC3M captions were filtered for pornography by Google already


# -------------------------------------------------------------------------------------------------- images


def test_plugin_scores_images_with_an_inclusive_threshold():
    red = Image.new("RGB", (32, 32), (200, 0, 0))
    grey = Image.new("RGB", (32, 32), (100, 100, 100))
    f = NsfwFilter("test_nsfw:redness", threshold=1.0)
    assert f.needs_image
    hit = f.check(red, "a red square", "http://example.com/r.png")
    assert hit.score == 1.0 and hit.detail == "test_nsfw:redness:1.000"  # score == threshold is flagged
    assert f.check(grey, "a grey square", "http://example.com/g.png") is None
    # picklable for Beam: re-imported after unpickling
    again = pickle.loads(pickle.dumps(f))
    assert again.check(red, "", "").score == 1.0


def test_keywords_run_before_image_plugins():
    f = NsfwFilter("test_nsfw:broken,keywords")
    assert f.check(Image.new("RGB", (8, 8)), "porn", "").detail == "keyword:porn (caption)"


@pytest.mark.parametrize("mode,message", [
    ("no_such_module_xyz:score", "cannot import module 'no_such_module_xyz'"),
    ("test_nsfw:missing", "has no attribute 'missing'"),
    ("test_nsfw:NOT_CALLABLE", "is not callable"),
    ("test_nsfw:", "module:function"),
])
def test_bad_plugins_fail_when_configured(mode, message):
    with pytest.raises(NsfwError, match=message):
        NsfwFilter(mode)


def test_plugin_failures_name_the_plugin():
    image = Image.new("RGB", (8, 8))
    with pytest.raises(NsfwError, match="test_nsfw:broken: scoring failed: RuntimeError: model not loaded"):
        NsfwFilter("test_nsfw:broken").check(image, "", "")
    with pytest.raises(NsfwError, match="non-finite"):
        NsfwFilter("test_nsfw:not_a_number").check(image, "", "")
    with pytest.raises(NsfwError, match="finite"):
        NsfwFilter("keywords", threshold=float("nan"))


@pytest.mark.skipif(importlib.util.find_spec("nudenet") is not None, reason="nudenet is installed")
def test_nudenet_without_the_extra_says_how_to_install_it():
    with pytest.raises(NsfwError, match=r"pip install 'aligndata\[nsfw\]'"):
        NsfwFilter("nudenet")


@pytest.mark.skipif(importlib.util.find_spec("nudenet") is None, reason="the optional nudenet extra is not installed")
def test_nudenet_scores_real_photos_low():
    photos = sorted(COCO.glob("*.jpg"))[:5]
    if not photos:
        pytest.skip("real COCO photos not available")
    f = NsfwFilter("nudenet")
    for photo in photos:
        assert f.check(Image.open(photo).convert("RGB"), "", "") is None
