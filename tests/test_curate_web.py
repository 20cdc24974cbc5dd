"""curate straight from web sources: HTML files, WARC files and lists of page URLs fetched by the pipeline."""

from __future__ import annotations

import json

import pytest
from helpers import REAL, needs_real, read_report, shard_metas

from aligndata.inspect.ledger import read_ledger
from aligndata.cli import main

pytestmark = pytest.mark.e2e  # every test runs curate


@needs_real
def test_html_pages_through_dry_run(tmp_path):
    out = tmp_path / "html"
    assert main(["curate", "--input", str(REAL / "html" / "pages" / "*.html.gz"), "--page-urls",
                 str(REAL / "html" / "page_urls.json"), "--output", str(out), "--dry-run", "--quiet"]) == 0
    report = read_report(out)
    extraction = report["extraction"]
    assert extraction["files"] == extraction["pages_parsed"] == 181
    assert report["input_rows"] == extraction["pairs"] > 1000 and report["accounting_ok"]
    page_urls = set(json.loads((REAL / "html" / "page_urls.json").read_text()).values())
    candidates = read_ledger(out, "candidates").to_pylist()
    assert candidates and all(c["page_url"] in page_urls for c in candidates)
    assert all(c["url"].startswith(("http://", "https://")) for c in candidates)


@needs_real
def test_warc_files_including_malformed_ones(tmp_path):
    out = tmp_path / "warc"
    assert main(["curate", "--input", str(REAL / "warc" / "*"), "--input-format", "warc", "--output", str(out),
                 "--dry-run", "--quiet"]) == 0
    report = read_report(out)
    extraction = report["extraction"]
    assert extraction["files"] == 5 and extraction["pages_parsed"] > 16
    assert report["input_rows"] == extraction["pairs"] and report["accounting_ok"]
    assert sum(extraction["pages_skipped"].values()) + sum(extraction["damage"].values()) > 0


def test_unreadable_web_file_is_named_not_fatal(tmp_path):
    broken = tmp_path / "broken.warc.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 this is not gzip at all")
    out = tmp_path / "out"
    assert main(["curate", "--input", str(broken), "--output", str(out), "--dry-run", "--quiet",
                 "--skip-unreadable", "--allow-empty"]) == 0
    report = read_report(out)
    assert report["input_rows"] == 0
    extraction = report["extraction"]
    assert extraction["unreadable_files"] or extraction["damage"], extraction


def page(images: list[tuple[str, str]]) -> bytes:
    tags = "".join(f'<img src="{src}" alt="{alt}" width="400" height="300">' for src, alt in images)
    return f"<html><head><title>t</title></head><body>{tags}</body></html>".encode()


def test_page_urls_are_fetched_and_their_images_curated(tmp_path, http_server):
    for i in range(4):
        http_server.add_image(f"/web/img{i}.jpg", 400 + i, 300)
    http_server.add("/web/a.html", page([("img0.jpg", "a photo of the first test image"),
                                         ("/web/img1.jpg", "a photo of the second test image"),
                                         ("data:image/png;base64,AAAA", "an inline image is skipped")]),
                    "text/html; charset=utf-8")
    http_server.add("/web/b.html", page([("img2.jpg", "a photo of the third test image"),
                                         ("img3.jpg", "tiny")]), "text/html")
    pages = tmp_path / "pages.txt"
    pages.write_text("\n".join([http_server.url("/web/a.html"), http_server.url("/web/b.html"),
                                http_server.url("/web/missing.html")]) + "\n")
    out = tmp_path / "out"
    assert main(["curate", "--input", str(pages), "--input-format", "page-urls", "--output", str(out),
                 "--allow-private-networks", "--quiet"]) == 0
    report = read_report(out)
    assert report["input_rows"] == 4 and report["kept"] == 3
    assert report["rejected_by_reason"]["text_too_short"] == 1
    extraction = report["extraction"]
    assert extraction["pairs"] == 4 and extraction["images_skipped"]["data_uri"] == 1
    assert extraction["fetch_failures"] == {"http_404": 1}
    samples = shard_metas(out)
    by_caption = {m["caption"]: m for m in samples}
    first = by_caption["a photo of the first test image"]
    assert first["url"] == http_server.url("/web/img0.jpg")
    assert first["page_url"] == http_server.url("/web/a.html")
    assert by_caption["a photo of the third test image"]["page_url"] == http_server.url("/web/b.html")
