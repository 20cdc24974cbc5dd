"""Warm multi_processing workers (pipeline/warm_workers.py): a real Beam pipeline on the local runner is served by
the processes started beforehand, and falls back to Beam's own workers when their environment changed, when
they died, or when switched off; waiting workers never outlive the command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest

from aligndata.pipeline import warm_workers
from helpers import write_pairs
from aligndata.pipeline.run import new_pipeline, pipeline_options

pytestmark = pytest.mark.e2e  # each test runs a multi_processing pipeline

MP = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
WARM = warm_workers.Warm(("aligndata.pipeline.sources",))


def worker_pids(out: Path) -> set[int]:
    """Run a small pipeline whose elements record the pid of the worker process that handled them."""
    with new_pipeline(pipeline_options(MP)) as p:
        _ = (p | beam.Create(range(40)) | beam.Reshuffle()
             | beam.Map(lambda _: os.getpid()) | beam.io.WriteToText(str(out / "pids")))
    pids = {int(line) for path in out.glob("pids*") for line in path.read_text().split()}
    assert pids, "the pipeline wrote no pids"
    return pids


def forked(pool, timeout: float = 60.0) -> dict[int, int]:
    """{index: pid} of the pool's workers once all are forked (the forking process imports first)."""
    deadline = time.monotonic() + timeout
    while len(pids := pool.worker_pids()) < pool.count:
        assert pool.forking.poll() is None, f"the forking process ended with {pool.forking.returncode}"
        assert time.monotonic() < deadline, "the workers were not forked in time"
        time.sleep(0.05)
    return pids


def kill_and_reap(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):  # reaped by the forking process
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} did not end")


def test_arguments_that_call_for_warm_workers():
    assert warm_workers.worker_count(MP) == 2
    assert warm_workers.worker_count(["--direct_running_mode=multi_processing", "--direct_num_workers=3"]) == 3
    assert warm_workers.worker_count(["--direct_running_mode", "multi_processing"]) == 1  # Beam's default count
    assert warm_workers.worker_count(["--direct_running_mode", "multi_processing", "--direct_num_workers", "0"]) \
        == os.cpu_count()
    assert warm_workers.worker_count([]) == 0  # in-process FnApiRunner: no workers to start
    assert warm_workers.worker_count(["--runner", "FlinkRunner", *MP]) == 0
    assert warm_workers.worker_count(["--runner", "PortableRunner", *MP]) == 0


def test_the_pipeline_runs_in_the_warm_workers(tmp_path):
    with warm_workers.started(MP, WARM) as pool:
        assert pool is not None and pool.count == 2
        pids = worker_pids(tmp_path)
        warm = set(forked(pool).values())
        assert len(warm) == 2 and pool.forking.pid not in warm  # forked: one import for both
        assert pids <= warm, (pids, warm)
        assert pool.forking.wait(60) == 0  # served: both ended with their harness, and it with them
    assert not Path(pool.directory).exists()


def test_a_changed_environment_gets_beams_own_workers(tmp_path, monkeypatch):
    """A variable set after the workers started (glibc and Python read some only at start): they refuse it."""
    with warm_workers.started(MP, WARM) as pool:
        warm = set(forked(pool).values())
        monkeypatch.setenv("ALIGNDATA_TEST_CHANGED", "1")
        pids = worker_pids(tmp_path)
    assert pids and not pids & warm


def test_dead_warm_workers_get_beams_own_workers(tmp_path):
    with warm_workers.started(MP, WARM) as pool:
        warm = set(forked(pool).values())
        for pid in warm:
            kill_and_reap(pid)
        pids = worker_pids(tmp_path)
    assert pids and not pids & warm


def test_a_dead_forking_process_gets_beams_own_workers(tmp_path):
    """Killed while importing (or after forking: its workers die with it)."""
    with warm_workers.started(MP, WARM) as pool:
        pool.forking.kill()
        pool.forking.wait()
        pids = worker_pids(tmp_path)
    assert pids and pool.forking.pid not in pids


def test_workers_that_cannot_start_get_beams_own_workers(tmp_path):
    """A failed import of the workers' modules ends quietly; Beam's own worker then reports any real error."""
    with warm_workers.started(MP, warm_workers.Warm(("aligndata_no_such_module",))) as pool:
        pids = worker_pids(tmp_path)
        assert pool.forking.wait(60) == 1 and pool.worker_pids() == {}
    assert pids and pool.forking.pid not in pids


def test_workers_print_only_errors(tmp_path, capfd):
    """A warm worker and a fallback one (Beam's harness in the handoff) send their log records to the launcher;
    their own stderr stays quiet (it printed ~20 INFO lines of the harness each before)."""
    with warm_workers.started(MP, WARM) as pool:
        warm = forked(pool)
        kill_and_reap(warm[0])
        pids = worker_pids(tmp_path)
    assert pids & {warm[1]} and pids - {warm[1]}  # one warm, one fallback
    err = capfd.readouterr().err
    assert "sdk_worker" not in err and "INFO" not in err, err


def test_a_quiet_multi_processing_command_prints_nothing(tmp_path):
    rows = [(f"http://a.test/{i}.jpg", f"a red bicycle number {i} leaning on a wall") for i in range(20)]
    pairs = write_pairs(tmp_path / "pairs.parquet", rows)
    run = subprocess.run([sys.executable, "-m", "aligndata.cli", "curate", "--input", pairs, "--output",
                          str(tmp_path / "out"), "--dry-run", "--quiet", *MP], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stderr == "", run.stderr


def test_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv(warm_workers.SWITCH, "0")
    with warm_workers.started(MP, WARM) as pool:
        assert pool is None
        assert warm_workers.runner_for(pipeline_options(MP)) is None
        assert worker_pids(tmp_path)


def test_no_pool_without_multi_processing():
    with warm_workers.started([], WARM) as pool:
        assert pool is None
        assert warm_workers.runner_for(pipeline_options([])) is None


def test_unclaimed_workers_end_with_the_command():
    """Killed at the end of ``started``; and by the kernel when the command dies first (PR_SET_PDEATHSIG: the
    forking process with the command, the workers with it)."""
    with warm_workers.started(MP, WARM) as pool:
        pids = list(forked(pool).values())
    assert pool.forking.returncode is not None
    _wait_for_exits(pids)  # a SIGKILLed worker shows "R" for 1-3 ms while the kernel unmaps its heap
    assert not any(_running(pid) for pid in pids)

    script = ("import os, sys, time\nfrom aligndata.pipeline import warm_workers\n"
              "with warm_workers.started(['--direct_running_mode', 'multi_processing', '--direct_num_workers', '2'],"
              " warm_workers.Warm(('aligndata.pipeline.sources',))) as pool:\n"
              "    while len(pool.worker_pids()) < 2: time.sleep(0.05)\n"
              "    print(pool.directory, pool.forking.pid, *pool.worker_pids().values(), flush=True)\n"
              "    os._exit(0)  # dies without cleaning up\n")
    launcher = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                              timeout=120)
    directory, *pids = launcher.stdout.split()
    shutil.rmtree(directory)  # what a killed command leaves behind, like any temporary directory
    pids = [int(pid) for pid in pids]
    assert len(pids) == 3
    _wait_for_exits(pids)
    assert not any(_running(pid) for pid in pids)


def _wait_for_exits(pids: list[int]) -> None:
    """The kernel delivers SIGKILL at once but ends the process a moment later: wait (at most 10 s) for the
    exits to show."""
    for _ in range(200):
        if not any(_running(pid) for pid in pids):
            return
        time.sleep(0.05)


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and _state(pid) not in ("Z", "")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""
