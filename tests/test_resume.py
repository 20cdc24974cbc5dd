"""A curate run killed with SIGKILL mid-way resumes: nothing fetched twice, output identical to an unbroken run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import read_report, write_pairs

from aligndata.cli import main
from aligndata.fetch.cache import FetchCache

N_URLS = 60
THREADS = 4
DELAY_S = 0.3  # each download takes this long, so the run is still fetching when it is killed


def command(pairs: Path, out: Path) -> list[str]:
    return ["curate", "--input", str(pairs), "--output", str(out), "--allow-private-networks", "--quiet",
            "--fetch-threads", str(THREADS), "--samples-per-shard", "20"]


def output_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("config.json", "report.json", "report.html")
            and not p.relative_to(out).as_posix().startswith(".")}


def cache_entries(out: Path) -> int:
    return FetchCache(str(out / ".fetch-cache")).count()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, http_server):
    directory = tmp_path_factory.mktemp("resume")
    urls = [http_server.url(f"/sleep/{DELAY_S}?resume={i}") for i in range(N_URLS)]
    path = directory / "pairs.parquet"
    write_pairs(path, [(url, f"a slowly served photo number {i}") for i, url in enumerate(urls)])
    return path, directory, urls


@pytest.mark.e2e
def test_killed_run_resumes_without_refetching_and_matches_an_unbroken_run(pairs, http_server):
    path, directory, urls = pairs
    unbroken = directory / "unbroken"
    assert main(command(path, unbroken)) == 0
    assert not (unbroken / ".fetch-cache").exists()  # removed after a successful run
    hits_before = sum(http_server.hits(u) for u in urls)
    assert hits_before == N_URLS

    resumed = directory / "resumed"
    child = subprocess.Popen([sys.executable, "-m", "aligndata.cli", *command(path, resumed)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120  # a bound on the wait, not a timing assertion
        while cache_entries(resumed) < N_URLS // 3 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.poll() is None, "the run finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert not (resumed / "report.json").exists()
    done = cache_entries(resumed)
    assert N_URLS // 3 <= done < N_URLS
    hits_killed = sum(http_server.hits(u) for u in urls) - hits_before

    assert main(command(path, resumed)) == 0  # the same command again
    hits_resumed = sum(http_server.hits(u) for u in urls) - hits_before - hits_killed
    # Only what had not finished is fetched again: at most the downloads in flight when it was killed.
    assert hits_resumed == N_URLS - done
    assert hits_killed <= done + THREADS
    report = read_report(resumed)
    assert report["fetch"]["urls_from_cache"] == done
    assert report["kept"] == N_URLS
    assert output_files(resumed) == output_files(unbroken)
    assert not (resumed / ".fetch-cache").exists()


def test_other_options_in_an_unfinished_run_are_refused(pairs, capsys):
    path, directory, _ = pairs
    out = directory / "unfinished"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"options": {"min_side": 1}, "input_files": []}))
    assert main(command(path, out)) == 2
    err = capsys.readouterr().err
    assert "unfinished run" in err and "--overwrite" in err
