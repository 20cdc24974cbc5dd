"""Live progress: DoFns leave counter files, the command line sums them and prints lines on stderr."""

import json
import os

import pytest
from helpers import read_report

from aligndata.cli import main
from aligndata.pipeline.progress import ProgressReporter, ProgressWriter, read_totals


def test_writers_are_summed_and_formatted(capsys):
    with ProgressReporter(rows_total=100, interval=60) as reporter:
        a, b = ProgressWriter(reporter.directory), ProgressWriter(reporter.directory)
        a.add(rows_read=40, rejected=3)
        b.add(rows_read=10, urls_to_fetch=8, urls_fetched=2, kept=2, bytes_downloaded=2_500_000)
        a.flush(), b.flush()
        assert read_totals(reporter.directory)["rows_read"] == 50
        snap = reporter.snapshot(final=True)
        assert snap["rows_read"] == 50 and snap["urls_fetched"] == 2 and snap["kept"] == 2
        line = reporter.format(snap)
        assert "rows 50/100" in line and "fetched 2/8 urls" in line and "2.5 MB" in line and "ETA" in line
        directory = reporter.directory
    assert "rows 50/100" in capsys.readouterr().err  # the final line on exit
    assert not os.path.exists(directory)  # cleaned up


def test_writer_without_directory_does_nothing():
    writer = ProgressWriter(None)
    writer.add(rows_read=5)
    writer.flush()
    assert writer.counts == {}


@pytest.mark.e2e
def test_curate_prints_json_progress_whose_last_line_matches_the_report(tmp_path, capsys):
    out = tmp_path / "example"
    assert main(["example", "--output", str(out), "--progress-json", "--progress-interval", "0.2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["final"] is True
    report = read_report(out)
    last = lines[-1]
    assert last["rows_read"] == report["input_rows"]
    assert last["kept"] == report["kept"]
    assert last["rejected"] == report["rejected"]
    assert last["urls_fetched"] == last["urls_to_fetch"] == report["fetch"]["urls_fetched"]


@pytest.mark.e2e
def test_quiet_prints_nothing(tmp_path, capsys):
    assert main(["example", "--output", str(tmp_path / "q"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
