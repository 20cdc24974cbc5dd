"""Inputs (issue 12, item 8): directories mean their files, an unreadable input stops the run unless
--skip-unreadable, and a run with no input row at all exits 2 unless --allow-empty. Real files, real Beam runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from aligndata.inspect.ledger import read_ledger
from aligndata.cli import main
from aligndata.io.inputs import WEB_FORMATS, InputError, match_inputs

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
needs_real = pytest.mark.skipif(not REAL.exists(), reason="../shared/data/real is absent (fresh clone)")
PAGES = REAL / "html" / "pages"
WARCS = REAL / "warc"


def cli(*args: str) -> subprocess.CompletedProcess:
    """The real command line in its own process (what a user sees on stderr, and the exit status)."""
    return subprocess.run([sys.executable, "-m", "aligndata.cli", *args, "--runner", "FnApiRunner"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def report_of(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def real_pages(n: int) -> list[Path]:
    return sorted(PAGES.glob("*.html.gz"))[:n]


@pytest.fixture
def crawl(tmp_path) -> Path:
    """A directory of real pages at several depths, plus files that are not pages."""
    root = tmp_path / "crawl"
    pages = real_pages(5)
    for i, page in enumerate(pages):
        sub = root / ("a" if i < 2 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, sub / page.name)
    (root / "README.txt").write_text("not a page\n")
    (root / "b" / "notes.json").write_text("{}")
    shutil.copy(pages[0], root / ".hidden.html.gz")  # hidden names are left out, like temp files
    return root


# ------------------------------------------------------------------------------------------ directories


@needs_real
def test_directory_means_its_files_by_format(crawl, tmp_path):
    html = match_inputs([str(crawl)], "html")
    assert [Path(p).relative_to(crawl).as_posix() for p in html] == sorted(
        f"{'a' if i < 2 else 'b/c'}/{p.name}" for i, p in enumerate(real_pages(5)))
    assert match_inputs([str(crawl)], "auto", WEB_FORMATS) == html  # extract's auto: html/warc, recursively
    assert match_inputs([str(WARCS)], "auto", WEB_FORMATS) == sorted(str(p) for p in WARCS.iterdir())
    # Tables: only the directory's own files with a table extension.
    tables = tmp_path / "tables"
    (tables / "old").mkdir(parents=True)
    for name in ("a.parquet", "b.csv.gz", "old/c.parquet", "notes.md"):
        (tables / name).write_bytes(b"")
    assert [Path(p).name for p in match_inputs([str(tables)])] == ["a.parquet", "b.csv.gz"]
    assert [Path(p).name for p in match_inputs([str(tables)], "parquet")] == ["a.parquet"]
    with pytest.raises(InputError, match="no input file in directory .* warc"):
        match_inputs([str(crawl)], "warc")


@needs_real
def test_extract_reads_a_directory_like_the_list_of_its_files(tmp_path):
    by_dir, by_glob = tmp_path / "dir.parquet", tmp_path / "glob.parquet"
    assert main(["extract", "--input", str(PAGES), "--page-urls", str(REAL / "html" / "page_urls.json"),
                 "--output", str(by_dir), "--quiet"]) == 0
    assert main(["extract", "--input", str(PAGES / "*.html.gz"), "--input-format", "html", "--page-urls",
                 str(REAL / "html" / "page_urls.json"), "--output", str(by_glob), "--quiet"]) == 0
    assert pq.read_table(by_dir).num_rows == 1971
    assert by_dir.read_bytes() == by_glob.read_bytes()
    report = json.loads((tmp_path / "dir.report.json").read_text())
    assert report["extraction"]["files"] == 181 and report["extraction"]["unreadable_files"] == []

    warcs = tmp_path / "warc.parquet"
    assert main(["extract", "--input", str(WARCS), "--output", str(warcs), "--quiet"]) == 0
    assert pq.read_table(warcs).num_rows == 470  # the same 5 real WARCs as test_extract_pipeline's glob


@needs_real
def test_curate_reads_a_directory_recursively(crawl, tmp_path):
    by_dir, by_files = tmp_path / "by_dir", tmp_path / "by_files"
    assert main(["curate", "--input", str(crawl), "--input-format", "html", "--output", str(by_dir),
                 "--dry-run", "--quiet"]) == 0
    files = match_inputs([str(crawl)], "html")
    assert main(["curate", "--input", *files, "--input-format", "html", "--output", str(by_files),
                 "--dry-run", "--quiet"]) == 0
    report = report_of(by_dir)
    assert report["extraction"]["files"] == 5 and report["extraction"]["unreadable_files"] == []
    assert report["input_rows"] == report["extraction"]["pairs"] > 0 and report["accounting_ok"]
    for name in ("candidates", "rejected"):
        assert [p.read_bytes() for p in sorted((by_dir / name).iterdir())] == [
            p.read_bytes() for p in sorted((by_files / name).iterdir())]
    config = json.loads((by_dir / "config.json").read_text())
    assert config["input_files"] == files


@needs_real
def test_curate_reads_a_directory_of_tables(tmp_path):
    laion = pq.read_table(REAL / "captions" / "laion_alt_10k.parquet").slice(0, 120)
    tables = tmp_path / "tables"
    (tables / "archive").mkdir(parents=True)
    pq.write_table(laion.slice(0, 60), tables / "part-0.parquet")
    pq.write_table(laion.slice(60, 60), tables / "part-1.parquet")
    pq.write_table(laion, tables / "archive" / "all.parquet")  # not read: tables come from the directory itself
    out = tmp_path / "out"
    assert main(["curate", "--input", str(tables), "--url-col", "URL", "--caption-col", "TEXT",
                 "--output", str(out), "--dry-run", "--quiet"]) == 0
    report = report_of(out)
    assert report["input_rows"] == 120 and report["accounting_ok"]
    config = json.loads((out / "config.json").read_text())
    assert [Path(p).name for p in config["input_files"]] == ["part-0.parquet", "part-1.parquet"]


# ------------------------------------------------------------------------------------------ unreadable


def _broken_page(directory: Path) -> Path:
    broken = directory / "broken.html.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 this is not gzip at all")  # a gzip header, then no deflate stream
    return broken


@needs_real
def test_an_unreadable_web_input_stops_curate_unless_skipped(crawl, tmp_path):
    broken = _broken_page(crawl / "a")
    out = tmp_path / "out"
    result = cli("curate", "--input", str(crawl), "--input-format", "html", "--output", str(out), "--dry-run",
                 "--quiet")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(broken) in lines[0] and "--skip-unreadable" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not (out / "report.json").exists()

    result = cli("curate", "--input", str(crawl), "--input-format", "html", "--output", str(out), "--dry-run",
                 "--skip-unreadable", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert f"1 unreadable input file(s) skipped: {broken}" in result.stderr
    report = report_of(out)
    assert [u["file"] for u in report["extraction"]["unreadable_files"]] == [str(broken)]
    assert report["extraction"]["files"] == 6 and report["input_rows"] > 0 and report["accounting_ok"]


@needs_real
def test_an_unreadable_warc_stops_extract_unless_skipped(tmp_path):
    junk = tmp_path / "junk.warc"
    junk.write_bytes(b"<html>not a warc</html>")
    out = tmp_path / "pairs.parquet"
    result = cli("extract", "--input", str(WARCS / "commoncrawl_2020_34_sample.warc.gz"), str(junk),
                 "--output", str(out), "--quiet")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"aligndata extract: error: cannot read input {junk}: no WARC or ARC record found "
                     "(pass --skip-unreadable to skip such files; they are then listed in the report)"]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["junk.warc"]  # no leftovers

    result = cli("extract", "--input", str(WARCS / "commoncrawl_2020_34_sample.warc.gz"), str(junk),
                 "--output", str(out), "--skip-unreadable")
    assert result.returncode == 0, result.stderr
    assert f"unreadable: {junk}: no WARC or ARC record found" in result.stderr
    assert pq.read_table(out).num_rows == 30


def test_an_unreadable_page_url_list_stops_curate_unless_skipped(tmp_path):
    bad = tmp_path / "pages.json"
    bad.write_text('["http://a.example/", ')  # cut short
    out = tmp_path / "out"
    result = cli("curate", "--input", str(bad), "--input-format", "page-urls", "--output", str(out), "--quiet")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and str(bad) in result.stderr, result.stderr
    # The same command with --skip-unreadable resumes that unfinished run (the option does not change what a
    # run produces) and names the file.
    assert main(["curate", "--input", str(bad), "--input-format", "page-urls", "--output", str(out),
                 "--skip-unreadable", "--allow-empty", "--quiet"]) == 0
    assert [u["file"] for u in report_of(out)["extraction"]["unreadable_files"]] == [str(bad)]


# ------------------------------------------------------------------------------------------ no rows


def test_no_rows_at_all_exits_2_unless_allowed(tmp_path, capsys):
    empty = tmp_path / "pairs.csv"
    empty.write_text("url,caption\n")
    out = tmp_path / "out"
    assert main(["curate", "--input", str(empty), "--output", str(out), "--dry-run", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"aligndata curate: error: the inputs hold no rows at all (see {out}/report.json); "
                   "pass --allow-empty if that is expected"]
    report = report_of(out)  # the run's outputs are all there
    assert report["input_rows"] == 0 and report["accounting_ok"]
    assert read_ledger(out, "rejected").num_rows == 0 and read_ledger(out, "candidates").num_rows == 0
    assert main(["curate", "--input", str(empty), "--output", str(out), "--dry-run", "--quiet", "--overwrite",
                 "--allow-empty"]) == 0


@needs_real
def test_extract_with_no_pairs_exits_2_unless_allowed(tmp_path, capsys):
    out = tmp_path / "pairs.parquet"
    example = WARCS / "example-trunc.warc"  # a real (damaged) WARC of example.com: no <img> at all
    assert main(["extract", "--input", str(example), "--output", str(out), "--quiet"]) == 2
    assert "the inputs gave no pairs at all" in capsys.readouterr().err
    assert pq.read_table(out).num_rows == 0
    assert json.loads((tmp_path / "pairs.report.json").read_text())["rows"] == 0
    assert main(["extract", "--input", str(example), "--output", str(out), "--quiet", "--overwrite",
                 "--allow-empty"]) == 0


def test_skip_unreadable_and_allow_empty_do_not_change_what_a_run_is(tmp_path):
    from aligndata.pipeline.config import CurateConfig

    base = CurateConfig(inputs=("x.parquet",), output=str(tmp_path))
    other = CurateConfig(inputs=("x.parquet",), output=str(tmp_path), skip_unreadable=True, allow_empty=True)
    assert base.identity() == other.identity()  # a run may resume with or without them
