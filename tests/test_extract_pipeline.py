"""End to end: ``aligndata extract`` on real HTML pages, real WARCs and pages served by a local server, then
``curate`` on the extracted pairs."""

from __future__ import annotations

import json
import shutil
import tarfile

import pyarrow.parquet as pq
import pytest
from helpers import REAL, needs_real

from aligndata.commands.extract import main as extract_main
from aligndata.pipeline.extract_job import ExtractConfig, plan_units
from aligndata.extract.pages import read_page_url_list
from aligndata.io.inputs import WEB_FORMATS, InputError, detect_format

COLUMNS = ["url", "caption", "page_url", "img_width", "img_height", "title"]


def run_extract(*args: str) -> int:
    return extract_main([*args, "--quiet"])


@pytest.mark.e2e
@needs_real
def test_extract_html_pages(tmp_path, capsys):
    out = tmp_path / "pairs.parquet"
    args = ["--input", str(REAL / "html" / "pages" / "*.html.gz"), "--input-format", "html",
            "--page-urls", str(REAL / "html" / "page_urls.json"), "--output", str(out)]
    assert run_extract(*args) == 0
    table = pq.read_table(out)
    assert table.column_names == COLUMNS and table.num_rows == 1971
    page_urls = set(json.loads((REAL / "html" / "page_urls.json").read_text()).values())
    assert set(table.column("page_url").to_pylist()) <= page_urls
    report = json.loads((tmp_path / "pairs.report.json").read_text())
    assert report["rows"] == 1971 and report["extraction"]["pages_parsed"] == 181
    assert report["extraction"]["images_skipped"]["no_alt"] > 1000
    first = out.read_bytes()

    assert run_extract(*args) == 2  # refuses to replace the output
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert run_extract(*args, "--overwrite", "--direct_num_workers", "2",
                       "--direct_running_mode", "multi_threading") == 0
    assert out.read_bytes() == first  # same input, same table, whatever the parallelism
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.parquet", "pairs.report.json"]  # no leftovers


@pytest.mark.e2e
@needs_real
def test_extract_warcs_with_damaged_and_unreadable_files(tmp_path):
    junk = tmp_path / "junk.warc"
    junk.write_bytes(b"<html>not a warc</html>")
    out = tmp_path / "warc.parquet"
    assert run_extract("--input", str(REAL / "warc" / "*.warc*"), str(junk), "--output", str(out),
                       "--skip-unreadable") == 0
    assert pq.read_table(out).num_rows == 470  # 30 Common Crawl + 440 ClueWeb pairs; example.com has no <img>
    ex = json.loads((tmp_path / "warc.report.json").read_text())["extraction"]
    assert ex["files"] == 6 and ex["pages_skipped"] == {"bad_content_length": 1}
    assert ex["unreadable_files"] == [{"file": str(junk), "error": "no WARC or ARC record found"}]


def test_input_errors_are_messages(tmp_path):
    with pytest.raises(InputError, match="no input file matches"):
        plan_units(ExtractConfig(inputs=(str(tmp_path / "none*.warc"),), output=str(tmp_path / "o.parquet")))
    (tmp_path / "a.html").write_text("<p>")
    (tmp_path / "b.warc").write_text("")
    with pytest.raises(InputError, match="mix formats"):
        plan_units(ExtractConfig(inputs=(str(tmp_path / "*"),), output=str(tmp_path / "o.parquet")))
    with pytest.raises(InputError, match="pass --input-format"):
        detect_format("urls.txt", formats=WEB_FORMATS)
    assert detect_format("x/CC-MAIN-1.warc.gz", formats=WEB_FORMATS) == "warc"
    assert detect_format("p.HTM", formats=WEB_FORMATS) == "html"
    with pytest.raises(InputError, match="--page-urls"):
        plan_units(ExtractConfig(inputs=(str(tmp_path / "b.warc"),), output="o.parquet", page_urls="m.json"))


def test_page_url_list_formats(tmp_path):
    (tmp_path / "a.json").write_text('["http://a.example/", {"url": "http://b.example/"}, 7]')
    (tmp_path / "b.json").write_text('{"f.html": "http://c.example/"}')
    (tmp_path / "c.txt").write_text("# pages\nhttp://d.example/\n\n  http://e.example/  \n")
    assert read_page_url_list(str(tmp_path / "a.json")) == ["http://a.example/", "http://b.example/", ""]
    assert read_page_url_list(str(tmp_path / "b.json")) == ["http://c.example/"]
    assert read_page_url_list(str(tmp_path / "c.txt")) == ["http://d.example/", "http://e.example/"]
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_page_url_list(str(tmp_path / "bad.json"))


def serve_site(server) -> list[str]:
    """Pages (and their images) on the local server; returns the page-URL list."""
    u = server.url
    server.add("/xp/a.html", (
        b'<html><body><img alt="a red kite over the beach" src="/image/400x300.jpg?xp=1">'
        b'<img alt="a tiny icon of a bell" src="/image/16x16.png?xp=2" width="16" height="16">'
        b'<img src="/image/300x300.jpg?xp=no-alt">'
        b'<img alt="a lazy loaded mountain photo" src="/1x1.gif" data-src="/image/500x400.jpg?xp=3">'
        b'<img alt="pixel" src="/t.gif" width="1" height="1"></body></html>'), "text/html; charset=utf-8")
    server.add("/xp/b2.html", b'<img alt="a photo found after a redirect" src="img/sub.jpg">', "text/html")
    server.add_image("/xp/img/sub.jpg", 320, 240)
    server.add("/xp/big.html", b"<p>" + b"x" * 30000, "text/html")
    return [
        u("/xp/a.html"),
        u(f"/redirect-to/{server.port}/xp/b2.html"),
        u("/xp/missing.html"),
        u("/image/300x300.jpg?xp=page"),
        u("/xp/big.html"),
        "not a url",
    ]


@pytest.mark.e2e
def test_page_urls_extract_then_curate(tmp_path, http_server):
    pages = serve_site(http_server)
    listing = tmp_path / "pages.json"
    listing.write_text(json.dumps(pages))
    pairs = tmp_path / "pairs.parquet"
    assert run_extract("--input", str(listing), "--input-format", "page-urls", "--output", str(pairs),
                       "--allow-private-networks", "--max-page-bytes", "20000", "--retries", "0") == 0
    rows = pq.read_table(pairs).to_pylist()
    u = http_server.url
    assert [(r["url"], r["caption"], r["page_url"]) for r in rows] == [
        (u("/image/400x300.jpg?xp=1"), "a red kite over the beach", pages[0]),
        (u("/image/16x16.png?xp=2"), "a tiny icon of a bell", pages[0]),
        (u("/image/500x400.jpg?xp=3"), "a lazy loaded mountain photo", pages[0]),
        (u("/xp/img/sub.jpg"), "a photo found after a redirect", u("/xp/b2.html")),  # the final URL
    ]
    assert (rows[1]["img_width"], rows[1]["img_height"]) == (16, 16)
    ex = json.loads((tmp_path / "pairs.report.json").read_text())["extraction"]
    assert ex["records_read"] == 6 and ex["files"] == 1
    assert ex["pages_skipped"] == {"download_failed": 1, "not_html": 1, "page_too_large": 1, "invalid_page_url": 1}
    assert ex["fetch_failures"] == {"http_404": 1, "too_large": 1}
    assert ex["images_skipped"] == {"no_alt": 1, "tracking_pixel": 1}

    # Extract once, curate many times: the pairs table is a curate input like any other.
    from aligndata.cli import main as cli_main

    shards = tmp_path / "shards"
    assert cli_main(["curate", "--input", str(pairs), "--output", str(shards), "--page-url-col", "page_url",
                     "--extra-cols", "img_width,img_height,title", "--allow-private-networks", "--quiet"]) == 0
    report = json.loads((shards / "report.json").read_text())
    assert report["kept"] == 3 and report["rejected_by_reason"]["image_too_small"] == 1
    with tarfile.open(shards / "00000.tar") as tar:
        metas = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    assert {m["caption"]: m["page_url"] for m in metas} == {
        "a red kite over the beach": pages[0], "a lazy loaded mountain photo": pages[0],
        "a photo found after a redirect": u("/xp/b2.html")}
    shutil.rmtree(shards)


def test_page_urls_extract_obeys_robots_txt_like_curate(tmp_path):
    """extract takes curate's fetch options: robots.txt, per-host limits and rate (one declaration)."""
    from httpserver import LocalServer

    with LocalServer() as server:
        server.add("/robots.txt", b"User-agent: aligndata\nDisallow: /private/\n", content_type="text/plain")
        server.add("/open/a.html", b'<img alt="a heron standing in shallow water" src="/image/400x300.jpg?r=1">',
                   "text/html")
        server.add("/private/b.html", b'<img alt="a secret garden behind a wall" src="/image/400x300.jpg?r=2">',
                   "text/html")
        listing = tmp_path / "pages.txt"
        listing.write_text(f"{server.url('/open/a.html')}\n{server.url('/private/b.html')}\n")
        pairs = tmp_path / "pairs.parquet"
        common = ["--input", str(listing), "--input-format", "page-urls", "--allow-private-networks",
                  "--retries", "0", "--max-per-host", "1", "--host-rate", "50"]
        assert run_extract(*common, "--output", str(pairs), "--respect-robots-txt") == 0
        assert [r["caption"] for r in pq.read_table(pairs).to_pylist()] == ["a heron standing in shallow water"]
        ex = json.loads((tmp_path / "pairs.report.json").read_text())["extraction"]
        assert ex["pages_skipped"] == {"robots_disallowed": 1}
        assert server.hits("/robots.txt") == 1

        everything = tmp_path / "all.parquet"  # without the option, robots.txt is not consulted
        assert run_extract(*common, "--output", str(everything)) == 0
        assert len(pq.read_table(everything)) == 2
        assert server.hits("/robots.txt") == 1
