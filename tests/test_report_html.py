"""report.html: structure and numbers (always), and a real render in headless Chromium (where installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from html.parser import HTMLParser

import pytest
from helpers import write_pairs
from PIL import Image

from aligndata.cli import main as aligndata_main
from aligndata.filters import registry
from aligndata.commands import inspect as commands
from aligndata.inspect.report_page import Histogram, render_report_html, write_report_html


@pytest.fixture(scope="module")
def curated(tmp_path_factory, example_output):
    """A copy of the shared `aligndata example` output: these tests write report.html into it."""
    out = tmp_path_factory.mktemp("report") / "example"
    shutil.copytree(example_output, out)
    return out


def _curate(tmp_path_factory, name, rows, *extra):
    base = tmp_path_factory.mktemp(name)
    pairs = write_pairs(base / "pairs.jsonl", rows)
    out = base / "out"
    assert aligndata_main(["curate", "--input", pairs, "--output", str(out), "--quiet", *extra]) == 0
    return out


HOSTILE = '<script>alert(1)</script> <img src="http://evil.example/x.png"> and more words'


@pytest.fixture(scope="module")
def nothing_kept(tmp_path_factory):
    """A real run where no row survives: one too short, one to a refused (loopback) address."""
    return _curate(tmp_path_factory, "zero", [
        ("http://127.0.0.1:9/a.jpg", HOSTILE),
        ("http://127.0.0.1:9/b.jpg", "ab"),
    ])


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    rows = [(f"http://example.invalid/{i}.jpg", f"a photo of a red circle number {i}") for i in range(12)]
    rows += [("http://example.invalid/x.jpg", "hi")]
    return _curate(tmp_path_factory, "dry", rows, "--dry-run")


class Page(HTMLParser):
    """Collects what the tests look at: sections, data-* attributes, resource URLs, text."""

    RESOURCE_ATTRS = {"src", "href", "srcset", "xlink:href", "poster", "data", "action", "background"}

    def __init__(self, text: str):
        super().__init__()
        self.sections: list[str] = []
        self.elements: list[tuple[str, dict]] = []
        self.resources: list[str] = []
        self.tags: set[str] = set()
        self.styles: list[str] = []
        self.text: list[str] = []
        self._in_style = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.elements.append((tag, attrs))
        if tag == "section":
            self.sections.append(attrs.get("id"))
        for name, value in attrs.items():
            if name in self.RESOURCE_ATTRS and value is not None:
                self.resources.append(value)
            if name == "style" and value:
                self.styles.append(value)
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        (self.styles if self._in_style else self.text).append(data)

    def with_attr(self, name: str) -> list[dict]:
        return [attrs for _, attrs in self.elements if name in attrs]


def _assert_offline(page: Page):
    assert not page.tags & {"script", "link", "iframe", "object", "embed", "base"}
    for url in page.resources:
        assert url.startswith("data:image/"), url
    assert not any(re.search(r"url\s*\(|@import", css) for css in page.styles)


def test_page_structure_and_numbers_match_report_json(curated):
    html = render_report_html(str(curated))
    report = json.loads((curated / "report.json").read_text())
    page = Page(html)
    assert page.sections == ["summary", "funnel", "reasons", "histograms", "rejected-examples", "samples"]
    _assert_offline(page)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html

    stats = {a["data-stat"]: int(a["data-value"]) for a in page.with_attr("data-stat")}
    assert stats == {"input_rows": report["input_rows"], "kept": report["kept"], "rejected": report["rejected"],
                     "shards": report["shards"], "bytes_written": report["bytes_written"]}
    stages = {a["data-stage"]: int(a["data-rows"]) for a in page.with_attr("data-stage")}
    assert stages == {s["stage"]: s["rows"] for s in report["funnel"]}
    rows = {a["data-reason"]: (int(a["data-count"]), float(a["data-pct"]))
            for a in page.with_attr("data-count")}
    assert rows == {r: (n, report["rejected_pct_by_reason"][r]) for r, n in report["rejected_by_reason"].items()}
    assert list(rows) == list(registry.REASONS)  # precedence order
    assert "29.27%" in "".join(page.text)  # text_shared_by_too_many_images: 12 of 41

    hists = {a["data-hist"]: int(a["data-total"]) for a in page.with_attr("data-hist")}
    assert hists == {"shorter_side": 18, "aspect_ratio": 18, "caption_words": 18, "caption_chars": 18}

    examples = {a["data-reason"]: int(a["data-examples"]) for a in page.with_attr("data-examples")}
    for rule in ("text_too_short", "text_too_long", "text_boilerplate", "text_shared_by_too_many_images"):
        assert examples[rule] >= 1
    assert examples["text_shared_by_too_many_images"] == 1  # 12 rows, one distinct caption
    assert examples["text_rare_token"] == 0
    text = " ".join(page.text)
    assert "WhatsApp Image 2021-03-05 at 10.12.44" in text and "click here to see the full gallery" in text

    images = [a["src"] for tag, a in page.elements if tag == "img"]
    assert 1 <= len(images) <= 24 and all(src.startswith("data:image/jpeg;base64,") for src in images)
    kept_keys = set()
    for tar_path in curated.glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            kept_keys |= {name.split(".")[0] for name in tar.getnames()}
    figure_keys = [a["data-key"] for a in page.with_attr("data-key")]
    assert len(figure_keys) == len(images) == len(set(figure_keys)) and set(figure_keys) <= kept_keys


@pytest.mark.e2e
def test_nothing_kept_and_untrusted_captions_are_escaped(nothing_kept):
    html = render_report_html(str(nothing_kept))
    page = Page(html)
    _assert_offline(page)  # the caption's <script> and <img src=http://...> stayed text
    assert HOSTILE in " ".join(page.text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "No samples were kept." in html and "No kept samples: the histograms are empty." in html
    stats = {a["data-stat"]: int(a["data-value"]) for a in page.with_attr("data-stat")}
    assert stats["kept"] == 0 and stats["input_rows"] == 2 and stats["shards"] == 0


@pytest.mark.e2e
def test_dry_run_uses_candidates(dry_run):
    page = Page(render_report_html(str(dry_run)))
    _assert_offline(page)
    hists = {a["data-hist"]: int(a["data-total"]) for a in page.with_attr("data-hist")}
    assert hists == {"caption_words": 12, "caption_chars": 12}  # from the candidates ledger; no image histograms
    stats = {a["data-stat"]: int(a["data-value"]) for a in page.with_attr("data-stat")}
    assert stats == {"input_rows": 13, "kept": 12, "rejected": 1}
    assert "Dry run: no images were fetched." in " ".join(page.text)


def test_write_and_report_command(curated, tmp_path, capsys):
    path = write_report_html(str(curated))
    assert path == str(curated / "report.html")
    first = (curated / "report.html").read_text()
    assert commands.main(["report", str(curated)]) == 0
    assert (curated / "report.html").read_text() == first  # deterministic
    assert not [p for p in curated.iterdir() if ".tmp-" in p.name]  # no temp file left behind
    rc = commands.main(["report", str(tmp_path)])
    assert rc == 2 and "no report.json" in capsys.readouterr().err


def test_histogram_bins():
    hist = Histogram("x", "x", [0, 10, 20])
    for value in (-5, 0, 9.99, 10, 19, 20, 1000, None, float("nan")):
        hist.add(value)
    assert hist.counts == [3, 2, 2] and hist.total == 7
    assert [hist.label(i) for i in range(3)] == ["0 - 10", "10 - 20", ">= 20"]


# ------------------------------------------------------------------------------------------ in a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_renders_in_headless_chromium(curated, tmp_path):
    write_report_html(str(curated))
    url = (curated / "report.html").as_uri()
    shot = tmp_path / "page.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", url)
    assert shot.exists(), result.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 2000)
    colours = img.getcolors(1 << 24)
    assert len(colours) > 200  # text, bars, cards: not a blank page
    background = max(colours)[1]
    assert sum(n for n, c in colours if c != background) > 0.05 * 1200 * 2000
    # the funnel bars' green and the histogram bars' blue were painted
    assert any(c == (46, 155, 98) for _, c in colours) and any(c == (59, 111, 216) for _, c in colours)

    dom = _chromium(tmp_path, "--dump-dom", url).stdout
    assert "Curation report" in dom and dom.count("<img") >= 1
    assert dom.count('<svg class="hist"') == 4 and 'class="funnel"' in dom
