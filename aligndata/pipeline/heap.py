"""Give freed memory back to the OS during a local run (glibc's malloc policy, set for the run's duration).

glibc serves a block of at least M_MMAP_THRESHOLD bytes (128 KiB at start) with its own mmap and unmaps it on
free. But the first time such a block is freed, glibc raises the threshold to that block's size (up to 32 MiB),
so from then on the large, short-lived blocks of a Beam run (encoded bundles and grouped buffers, our packed
batches) come from the heap, and the pages they leave when freed stay with the process. Measured on a 1M-row
`--dry-run` with the rare-token rule active (FnApiRunner): after the first stage the process held 729 MB with
this default and 514 MB with the threshold fixed at 128 KiB; the peak of the run fell from 1,166 MB to 896 MB.
(Dask recommends the same environment variables for the same reason: "unmanaged memory".)

While a run is under way the threshold is fixed at 128 KiB and the trim threshold at 128 KiB, in this process
(mallopt) and in worker processes it starts (the environment variables, which glibc reads at start). Afterwards
both are set to what glibc's dynamic rule would have reached (32 MiB / 64 MiB), so code that runs later in the
same process (the demo trains a model after curating) is not slowed by an mmap per large tensor. Elsewhere
(musl, macOS, no libc found) this does nothing. Runners that start their own workers (Flink, Dataflow) take
their environment from the cluster: set MALLOC_MMAP_THRESHOLD_=131072 there (docs/scale.md).

The image stage is the exception (``keeping_large_blocks``): each image passes through a few short-lived blocks
of 0.1-3 MB (the decoded pixels, the pHash's copy, the resized pixels), and with the 128 KiB thresholds every one
of them is a fresh mmap whose pages fault in again and are unmapped on free: 2.8 ms of system CPU per 640x480
photo, ~45% of the stage's CPU (benchmarks/RESULTS.md). While a worker fetches and re-encodes a shard, the
thresholds are the ceiling values above; when the last shard in the process is done they are fixed again and
the freed pages go back to the OS (malloc_trim).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
DURING_RUN = {M_MMAP_THRESHOLD: 128 * 1024, M_TRIM_THRESHOLD: 128 * 1024}
AFTER_RUN = {M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: 64 * 2**20}
ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(DURING_RUN[M_MMAP_THRESHOLD]),
               "MALLOC_TRIM_THRESHOLD_": str(DURING_RUN[M_TRIM_THRESHOLD])}


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")  # runs ldconfig: once per process
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _mallopt():
    return getattr(_libc(), "mallopt", None)


def _set(mallopt, values: dict[int, int]) -> None:
    for param, value in values.items():
        mallopt(param, value)


def run_environment() -> dict[str, str]:
    """The variables ``returning_freed_memory`` will set for a run's worker processes: none when the user set
    glibc's policy (theirs wins). warm_workers.py starts workers with them before the run sets them."""
    return {} if any(key in os.environ for key in ENVIRONMENT) else dict(ENVIRONMENT)


@contextlib.contextmanager
def returning_freed_memory():
    """For the duration of a local run: large freed blocks go back to the OS (see the module docstring)."""
    if not run_environment():
        yield False
        return
    mallopt = _mallopt()
    os.environ.update(ENVIRONMENT)
    if mallopt is not None:
        _set(mallopt, DURING_RUN)
    try:
        yield mallopt is not None
    finally:
        if mallopt is not None:
            _set(mallopt, AFTER_RUN)
        for key in ENVIRONMENT:
            os.environ.pop(key, None)


_holders_lock = threading.Lock()
_holders = 0  # shards in this process inside keeping_large_blocks (bundles may run on several threads)


def _ours() -> bool:
    """Whether this process runs under the policy above: set by us, or by hand with the same values (as the
    module docstring suggests for runners that start their own workers)."""
    return all(os.environ.get(key) == value for key, value in ENVIRONMENT.items())


@contextlib.contextmanager
def keeping_large_blocks():
    """While the image stage works: freed large blocks stay in glibc's heap for the next image (see the module
    docstring). Only where the policy is ours: a user's own setting, or none, is left alone. Yields whether it
    changed anything."""
    global _holders
    mallopt = _mallopt() if _ours() else None
    if mallopt is None:
        yield False
        return
    with _holders_lock:
        _holders += 1
        if _holders == 1:
            _set(mallopt, AFTER_RUN)
    try:
        yield True
    finally:
        with _holders_lock:
            _holders -= 1
            if _holders == 0:
                _set(mallopt, DURING_RUN)
                trim = getattr(_libc(), "malloc_trim", None)
                if trim is not None:
                    trim(0)  # the pages the stage freed go back now, not at the next large free
