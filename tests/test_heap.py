"""pipeline/heap.py: during a run, large freed blocks go back to the OS instead of staying in glibc's heap."""

from __future__ import annotations

import os

import pytest

from aligndata.pipeline import heap


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _fragment_and_free(blocks: int = 300, size: int = 512 * 1024) -> float:
    """Interleave large blocks with small long-lived ones (as Beam's buffers and our batches are), free the large
    ones, and return how many MB the process still holds of them."""
    primer = bytearray(size)  # freeing one mmapped block is what makes glibc raise its threshold
    del primer
    before = _rss_mb()
    large, small = [], []
    for _ in range(blocks):
        large.append(bytearray(size))
        small.append(bytes(1000))  # > 512 bytes: glibc's heap, not Python's small-object arenas
    del large
    return _rss_mb() - before


def test_freed_blocks_are_returned_during_a_run_and_the_environment_restored(monkeypatch):
    for key in heap.ENVIRONMENT:
        monkeypatch.delenv(key, raising=False)
    if heap._mallopt() is None:
        pytest.skip("no glibc mallopt on this machine: the heap policy is a no-op here, nothing to check")
    with heap.returning_freed_memory() as active:
        assert active
        assert {k: os.environ[k] for k in heap.ENVIRONMENT} == heap.ENVIRONMENT  # worker processes inherit it
        held = _fragment_and_free()
    assert held < 30, f"{held:.0f} MB of 150 MB freed blocks still held"
    assert not any(k in os.environ for k in heap.ENVIRONMENT)


def test_without_the_policy_the_same_pattern_keeps_the_memory(monkeypatch):
    """The control: glibc's dynamic threshold (reached after a run here) keeps the freed blocks, so the test
    above measures the policy, not the allocator's luck."""
    mallopt = heap._mallopt()
    if mallopt is None:
        pytest.skip("no glibc mallopt on this machine: nothing to compare")
    heap._set(mallopt, heap.AFTER_RUN)
    assert _fragment_and_free() > 100


def test_a_users_own_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    with heap.returning_freed_memory() as active:
        assert not active
        assert os.environ["MALLOC_MMAP_THRESHOLD_"] == "65536"
        assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == "65536"
