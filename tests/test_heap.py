"""pipeline/heap.py: during a run, large freed blocks go back to the OS instead of staying in glibc's heap."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aligndata.pipeline import heap


# Run in a fresh interpreter: in a long-lived process (the test session) earlier frees leave holes in the heap
# that new blocks reuse, so what a pattern holds would depend on everything that ran before it.
_PATTERN = """
import os, sys
from aligndata.pipeline import heap

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def fragment_and_free(blocks=300, size=512 * 1024):
    # large blocks interleaved with small long-lived ones (as Beam's buffers and our batches are), then freed
    primer = bytearray(size)  # freeing one mmapped block is what makes glibc raise its threshold
    del primer
    before = rss_mb()
    large, small = [], []
    for _ in range(blocks):
        large.append(bytearray(size))
        small.append(bytes(1000))  # > 512 bytes: glibc's heap, not Python's small-object arenas
    del large
    return rss_mb() - before

if sys.argv[1] == "policy":
    with heap.returning_freed_memory() as active:
        assert active
        env = {k: os.environ.get(k) for k in heap.ENVIRONMENT}
        held = fragment_and_free()
    assert env == heap.ENVIRONMENT, env  # worker processes inherit it
    assert not any(k in os.environ for k in heap.ENVIRONMENT)  # and it is gone afterwards
else:
    held = fragment_and_free()
print(held)
"""


def _held_mb(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in heap.ENVIRONMENT}
    out = subprocess.run([sys.executable, "-c", _PATTERN, mode], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def _need_glibc():
    if heap._mallopt() is None:
        pytest.skip("no glibc mallopt on this machine: the heap policy is a no-op here, nothing to check")


def test_freed_blocks_are_returned_during_a_run_and_the_environment_restored():
    _need_glibc()
    held = _held_mb("policy")
    assert held < 30, f"{held:.0f} MB of 150 MB freed blocks still held"


def test_without_the_policy_the_same_pattern_keeps_the_memory():
    """The control: glibc's default dynamic threshold keeps the freed blocks, so the test above measures the
    policy, not the allocator's luck."""
    _need_glibc()
    assert _held_mb("default") > 100


def test_a_users_own_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    with heap.returning_freed_memory() as active:
        assert not active
        assert os.environ["MALLOC_MMAP_THRESHOLD_"] == "65536"
        assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == "65536"


# Page faults of touching N fresh 2 MiB blocks, each freed before the next (the image stage's pattern): with the
# policy each is a new mmap whose pages fault in; inside keeping_large_blocks the freed block is reused.
_IMAGE_PATTERN = """
import resource, sys
from aligndata.pipeline import heap

def faults(blocks=40, size=2 * 2**20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(blocks):
        block = bytearray(size)
        block[::4096] = b"x" * len(range(0, size, 4096))  # touch every page, as a decoded image does
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

with heap.returning_freed_memory():
    policy = faults()
    with heap.keeping_large_blocks() as active:
        assert active
        kept = faults()
    restored = faults()
print(policy, kept, restored)
"""


def test_the_image_stage_reuses_large_blocks_and_the_policy_comes_back():
    _need_glibc()
    env = {k: v for k, v in os.environ.items() if k not in heap.ENVIRONMENT}
    out = subprocess.run([sys.executable, "-c", _IMAGE_PATTERN], env=env, capture_output=True, text=True, check=True)
    policy, kept, restored = (int(v) for v in out.stdout.split()[-3:])
    pages = 40 * 512
    assert policy > pages * 0.8, (policy, kept, restored)  # every block faulted in afresh
    assert kept < pages * 0.1, (policy, kept, restored)  # one block's pages, reused 40 times
    assert restored > pages * 0.8, (policy, kept, restored)  # the run's policy is back


def test_keeping_large_blocks_leaves_a_users_setting_and_no_policy_alone(monkeypatch):
    for key in heap.ENVIRONMENT:
        monkeypatch.delenv(key, raising=False)
    with heap.keeping_large_blocks() as active:  # no policy in force (a DoFn run outside curate)
        assert not active
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    with heap.returning_freed_memory(), heap.keeping_large_blocks() as active:
        assert not active
