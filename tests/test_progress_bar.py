"""aligndata.progress_bar: tqdm on a terminal, plain timed lines (never a carriage return) in a file or pipe."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
from tqdm import tqdm

from aligndata.progress_bar import DEFAULT_INTERVAL_S, LineProgress, is_terminal, progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_file_or_pipe_gets_plain_lines_every_interval_and_a_last_one():
    stream, clock = io.StringIO(), FakeClock()
    bar = LineProgress(total=100, initial=0, desc="train", unit="step", stream=stream, interval=30, clock=clock)
    for step in range(100):
        clock.now += 1.0  # one step a second: a line at steps 30, 60 and 90
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}")
    bar.close()
    bar.close()  # a second close prints nothing
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines == [
        "train: 30/100 step (30%) | 30s elapsed | 1.00 step/s | ETA 1m10s | loss=0.0345",
        "train: 60/100 step (60%) | 1m00s elapsed | 1.00 step/s | ETA 40s | loss=0.0169",
        "train: 90/100 step (90%) | 1m30s elapsed | 1.00 step/s | ETA 10s | loss=0.0112",
        "train: 100/100 step (100%) | 1m40s elapsed | 1.00 step/s | loss=0.0100",
    ]


def test_a_resumed_loop_counts_its_rate_from_where_it_started():
    stream, clock = io.StringIO(), FakeClock()
    with LineProgress(total=1000, initial=400, desc="train", unit="step", stream=stream, interval=60,
                      clock=clock) as bar:
        for _ in range(80):
            clock.now += 0.0625  # 16 steps a second, exactly
            bar.update(1)
    assert stream.getvalue() == "train: 480/1000 step (48%) | 5s elapsed | 16 step/s | ETA 32s\n"


def test_progress_bar_chooses_by_the_stream():
    plain = progress_bar(10, desc="x", stream=io.StringIO())
    assert isinstance(plain, LineProgress) and plain.interval == DEFAULT_INTERVAL_S == 30.0
    terminal = Terminal()
    bar = progress_bar(3, desc="train", unit="step", stream=terminal)
    try:
        assert isinstance(bar, tqdm)
        bar.update(3)
    finally:
        bar.close()
    assert "\r" in terminal.getvalue() and re.search(r"train: 100%.*3/3", terminal.getvalue())


def test_is_terminal_on_odd_streams():
    closed = io.StringIO()
    closed.close()
    assert not is_terminal(closed) and not is_terminal(object()) and not is_terminal(io.StringIO())
    assert is_terminal(Terminal())


@pytest.mark.parametrize("redirect", ["file", "pipe"])
def test_a_real_redirected_stderr_gets_no_carriage_returns(tmp_path, redirect):
    code = ("from aligndata.progress_bar import progress_bar\n"
            "bar = progress_bar(500, desc='train', unit='step', interval=0)\n"
            "for _ in range(500): bar.update(1)\n"
            "bar.close()\n")
    if redirect == "file":
        with open(tmp_path / "log", "w") as log:
            subprocess.run([sys.executable, "-c", code], stderr=log, check=True)
        text = (tmp_path / "log").read_text()
    else:
        text = subprocess.run([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, check=True).stderr
    lines = text.splitlines()
    assert "\r" not in text and len(lines) == 500  # interval 0: a line per update
    assert lines[-1].startswith("train: 500/500 step (100%) | ")
