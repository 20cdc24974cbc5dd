"""``aligndata dedup`` at scale: the Beam job on synthetic pHashes against single-process floors.

    .venv/bin/python benchmarks/bench_corpus_dedup.py [--rows 1000000] [--hamming 4] [--runners fnapi,multi]

(benchmarks/bench_dedup.py is the eval-set index's benchmark; this one is the corpus job's.)

Data: ``--rows`` samples in shards of 10,000 rows, written as the per-shard parquet dedup reads (uid, sha256,
phash, caption; each .tar is an empty placeholder, since dedup never opens it). pHashes are random 64-bit values
with exactly 32 bits set, as pHash's are (so distances are even). Planted, at known distances:
  - 4% of rows are near copies of an earlier row: 1, 2, 3 or 4 swaps of a set and an unset bit (distance 2, 4,
    6, 8), a quarter each; own bytes (sha256);
  - 2% are exact copies of an earlier row (same sha256 and pHash);
  - 20,000 rows share one pHash with distinct bytes (a placeholder image: the hot hash);
  - captions from a pool of 1,000, so the keep rule has votes to count.
Checks: every planted copy within T is in its original's group and none farther than T is, unless random pairs
link them (counted); the job's groups equal the floor's.

Floors, in one process, on the same parquet files:
  - multi-index loop: read the columns, collapse identical pHashes (numpy unique), build one HammingIndex
    (filters/dedup.py) over the distinct values, query every value within T, union-find;
  - banded numpy: the job's own algorithm without Beam (band_batches + near_components per bucket);
  - brute force: all pairs by numpy popcount, timed on a subsample and scaled by (N / n)**2.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import emit

from aligndata.filters import corpus_dedup as cd
from aligndata.filters.dedup import HammingIndex
from aligndata.shards.duplicates import read_duplicates

ROWS_PER_SHARD = 10_000
HOT_ROWS = 20_000


def balanced(n: int, rng: np.random.Generator) -> np.ndarray:
    bits = np.zeros((n, 64), dtype=np.uint8)
    bits[:, :32] = 1
    return np.packbits(rng.permuted(bits, axis=1), axis=1).view(">u8").astype(np.uint64).ravel()


def swap_bits(value: int, swaps: int, rng: random.Random) -> int:
    """Move ``swaps`` set bits to unset places: distance 2 * swaps, still 32 bits set."""
    ones = [b for b in range(64) if value >> b & 1]
    zeros = [b for b in range(64) if not value >> b & 1]
    for one, zero in zip(rng.sample(ones, swaps), rng.sample(zeros, swaps)):
        value ^= (1 << one) | (1 << zero)
    return value


def make_corpus(rows: int, seed: int = 0) -> dict:
    rng, prng = np.random.default_rng(seed), random.Random(seed)
    phash = balanced(rows, rng).tolist()
    sha = [f"{i:064x}" for i in range(rows)]  # own bytes unless copied below
    hot = set(prng.sample(range(1000, rows), HOT_ROWS))  # chosen first: no copy involves them
    planted = []  # (copy row, original row, distance)
    for i in range(1000, rows):
        if i in hot:
            continue
        r = prng.random()
        if r < 0.06:
            j = prng.randrange(i)
            while j in hot:
                j = prng.randrange(i)
            if r < 0.04:
                swaps = prng.randint(1, 4)
                phash[i] = swap_bits(phash[j], swaps, prng)
                planted.append((i, j, 2 * swaps))
            else:
                phash[i], sha[i] = phash[j], sha[j]
                planted.append((i, j, 0))
    hot_value = phash[0]
    for i in hot:
        phash[i] = hot_value
    captions = [f"caption number {prng.randrange(1000)}" for _ in range(rows)]
    return {"uid": [f"{i:032x}" for i in range(rows)], "sha256": sha, "phash": [f"{v:016x}" for v in phash],
            "caption": captions, "planted": planted}


def write_shards(corpus: dict, directory: Path) -> None:
    rows = len(corpus["uid"])
    for index, start in enumerate(range(0, rows, ROWS_PER_SHARD)):
        stop = min(start + ROWS_PER_SHARD, rows)
        table = pa.table({c: corpus[c][start:stop] for c in ("uid", "sha256", "phash", "caption")})
        pq.write_table(table, directory / f"{index:05d}.parquet")
        (directory / f"{index:05d}.tar").write_bytes(b"")  # dedup resolves the tars, reads the parquet beside


# ---------------------------------------------------------------------------------------------- floors


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: on a shared machine, wall time alone misleads."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def read_columns(directory: Path) -> tuple[np.ndarray, list[str]]:
    phashes, shas = [], []
    for path in sorted(directory.glob("*.parquet")):
        table = pq.read_table(path, columns=["sha256", "phash"])
        phashes += table.column("phash").to_pylist()
        shas += table.column("sha256").to_pylist()
    return np.array([int(h, 16) for h in phashes], dtype=np.uint64), shas


def union_find_groups(distinct: np.ndarray, roots: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Each row's component as the index of its component's smallest distinct value."""
    return roots[inverse]


def floor_multi_index(directory: Path, radius: int) -> dict:
    started, cpu = time.perf_counter(), cpu_seconds()
    values, _ = read_columns(directory)
    read_s = time.perf_counter() - started
    distinct, inverse = np.unique(values, return_inverse=True)
    index = HammingIndex(distinct[:, None], 64, radius)
    index.build()
    parent = np.arange(len(distinct))
    found_i, found_j = [], []
    for i, value in enumerate(distinct.tolist()):
        entries, _ = index.search(value)
        later = entries[entries > i]
        if len(later):
            found_i.append(np.full(len(later), i))
            found_j.append(later)
    if found_i:
        cd.union_pairs(parent, np.concatenate(found_i), np.concatenate(found_j))
    cd.compress(parent)
    return {"seconds": round(time.perf_counter() - started, 1), "cpu_s": round(cpu_seconds() - cpu, 1),
            "read_s": round(read_s, 1),
            "distinct": len(distinct), "substrings": index.substrings,
            "groups_of_rows": union_find_groups(distinct, parent, inverse)}


def floor_banded(directory: Path, radius: int, cap: int) -> dict:
    started, cpu = time.perf_counter(), cpu_seconds()
    values, _ = read_columns(directory)
    distinct, inverse = np.unique(values, return_inverse=True)
    ranges = cd.band_ranges(radius)
    parent = np.arange(len(distinct))
    pairs, roots_at, members_at = 0, [], []
    for (band, _), members in cd.band_batches(distinct, ranges):
        if len(members) < 2:
            continue
        a, b, found = cd.bucket_edges(members[:cap], radius, ranges[band])  # what VerifyBucket runs
        pairs += found
        roots_at += a
        members_at += b
    if roots_at:  # the stars of every bucket, merged once (distinct is sorted: searchsorted gives positions)
        cd.union_pairs(parent, np.searchsorted(distinct, np.array(roots_at, dtype=np.uint64)),
                       np.searchsorted(distinct, np.array(members_at, dtype=np.uint64)))
    cd.compress(parent)
    return {"seconds": round(time.perf_counter() - started, 1), "cpu_s": round(cpu_seconds() - cpu, 1),
            "pairs_within_t": pairs,
            "groups_of_rows": union_find_groups(distinct, parent, inverse)}


def floor_brute_force(directory: Path, radius: int, sample: int) -> dict:
    values, _ = read_columns(directory)
    distinct = np.unique(values)
    rng = np.random.default_rng(1)
    subset = rng.choice(distinct, size=min(sample, len(distinct)), replace=False)
    started, cpu = time.perf_counter(), cpu_seconds()
    found = 0
    for start in range(0, len(subset), 256):
        block = subset[start:start + 256]
        found += int((np.bitwise_count(block[:, None] ^ subset[None, start:]) <= radius).sum())
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    scale = (len(distinct) / len(subset)) ** 2
    return {"sample": len(subset), "sample_seconds": round(seconds, 2), "sample_cpu_s": round(cpu, 2),
            "extrapolated_seconds_at_distinct": round(seconds * scale), "extrapolated_cpu_s": round(cpu * scale)}


# ------------------------------------------------------------------------------------------------- job


class PeakRss:
    """Peak resident memory of this process and its children (multi_processing workers), sampled from /proc."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> int:
        total, pids = 0, [os.getpid()]
        while pids:
            pid = pids.pop()
            try:
                with open(f"/proc/{pid}/status") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) * 1024
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    pids += [int(c) for c in f.read().split()]
            except (OSError, StopIteration):
                continue
        return total

    def _run(self):
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self._tree())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_job(directory: Path, out: Path, radius: int, beam_args: list[str]) -> dict:
    from aligndata.pipeline.dedup_job import DedupConfig
    from aligndata.pipeline.dedup_run import run_dedup

    cfg = DedupConfig(shards=str(directory), output=str(out), hamming=radius, overwrite=True)
    with PeakRss() as rss:
        started, cpu = time.perf_counter(), cpu_seconds()
        summary = run_dedup(cfg, beam_args)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds() - cpu  # multi_processing's workers are children: counted once they exit
    return {"seconds": round(seconds, 1), "cpu_s": round(cpu, 1), "peak_rss_mb": round(rss.peak / 2**20),
            "summary": summary}


def same_partition(job_out: Path, floor_groups: np.ndarray, rows: int) -> bool:
    """The job's groups (rows listed, by uid = row number) equal the floor's components of size >= 2."""
    table = read_duplicates(str(job_out))
    job = np.full(rows, -1, dtype=np.int64)
    job[[int(u, 16) for u in table.column("uid").to_pylist()]] = table.column("group").to_numpy()
    sizes = np.bincount(floor_groups, minlength=floor_groups.max() + 1)
    floor = np.where(sizes[floor_groups] >= 2, floor_groups, -1)
    # the same partition: each job group maps to one floor component and back
    pairs = {(int(a), int(b)) for a, b in zip(job.tolist(), floor.tolist())}
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def planted_recall(job_out: Path, planted, radius: int) -> dict:
    table = read_duplicates(str(job_out))
    group = dict(zip((int(u, 16) for u in table.column("uid").to_pylist()), table.column("group").to_pylist()))
    out = {}
    for d in sorted({d for _, _, d in planted}):
        pairs = [(i, j) for i, j, dist in planted if dist == d]
        together = sum(group.get(i) is not None and group.get(i) == group.get(j) for i, j in pairs)
        out[str(d)] = {"planted": len(pairs), "grouped": together, "expected": "all" if d <= radius else "none"}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--hamming", type=int, default=cd.DEFAULT_CORPUS_HAMMING)
    parser.add_argument("--runners", default="fnapi,multi", help="fnapi, multi (multi_processing, 2 workers)")
    parser.add_argument("--brute-sample", type=int, default=50_000)
    parser.add_argument("--skip-index-floor", action="store_true")
    parser.add_argument("--name", default="corpus_dedup")
    args = parser.parse_args()
    corpus = make_corpus(args.rows)
    result = {"rows": args.rows, "T": args.hamming, "load_average_at_start": os.getloadavg()[0], "rows_per_shard": ROWS_PER_SHARD, "hot_rows": HOT_ROWS,
              "planted": len(corpus["planted"])}
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        shards.mkdir()
        write_shards(corpus, shards)
        floors = {"banded_numpy": floor_banded(shards, args.hamming, cd.DEFAULT_MAX_BAND_SIZE)}
        print("banded floor", {k: v for k, v in floors["banded_numpy"].items() if k != "groups_of_rows"}, flush=True)
        if not args.skip_index_floor:
            floors["multi_index_loop"] = floor_multi_index(shards, args.hamming)
            print("index floor", {k: v for k, v in floors["multi_index_loop"].items() if k != "groups_of_rows"},
                  flush=True)
            assert (floors["multi_index_loop"]["groups_of_rows"] == floors["banded_numpy"]["groups_of_rows"]).all()
        floors["brute_force"] = floor_brute_force(shards, args.hamming, args.brute_sample)
        print("brute force", floors["brute_force"], flush=True)
        reference = floors["banded_numpy"]["groups_of_rows"]
        runs = {}
        for runner in args.runners.split(","):
            beam_args = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"] \
                if runner == "multi" else []
            out = Path(tmp) / f"out-{runner}"
            run = run_job(shards, out, args.hamming, beam_args)
            run["same_groups_as_floor"] = same_partition(out, reference, args.rows)
            run["planted"] = planted_recall(out, corpus["planted"], args.hamming)
            run["rows_per_s"] = round(args.rows / run["seconds"])
            runs[runner] = run
            print(runner, json.dumps({k: v for k, v in run.items() if k != "summary"}), flush=True)
    for floor in floors.values():
        floor.pop("groups_of_rows", None)
    result.update(floors=floors, runs=runs)
    emit(args.name, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
