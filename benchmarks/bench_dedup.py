"""Eval-set index: exact multi-index Hamming search vs brute-force numpy popcount, 200k eval images.

    .venv/bin/python benchmarks/bench_dedup.py [--eval-images 200000] [--queries 2000]

200k eval images = 400k entries (each image and its mirror), 64-bit hashes. Hashes are random with exactly 32
bits set, as pHash's are (each bit says "above the median DCT coefficient"). Queries: 90% random (the common
case: a fetched image that is in no eval set) and 10% copies of an eval hash with 0..T bits flipped (must be
found). Both sides answer single queries, as the fetch stage asks them; brute force is
``np.bitwise_count(hashes ^ q) <= T`` over all 400k entries. Every index answer is checked against brute force.
Also measured: build time, memory of the index, the index file's size and load time (.npz).
Duplicates inside the corpus (``aligndata dedup``) have their own benchmark: bench_corpus_dedup.py.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import emit

from aligndata.filters.dedup import HammingIndex, brute_force, choose_substrings
from aligndata.images.eval_index import load_index, write_index


def balanced_hashes(n: int, rng: np.random.Generator) -> np.ndarray:
    """n 64-bit values with exactly 32 bits set (a random permutation of 32 ones per row)."""
    bits = np.zeros((n, 64), dtype=np.uint8)
    bits[:, :32] = 1
    bits = rng.permuted(bits, axis=1)
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64)


def time_queries(fn, queries) -> float:
    started = time.perf_counter()
    for q in queries:
        fn(q)
    return (time.perf_counter() - started) / len(queries) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-images", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--radii", default="4,6,8,10,12")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    prng = random.Random(0)
    n = args.eval_images
    originals, mirrors = balanced_hashes(n, rng), balanced_hashes(n, rng)
    entries = np.concatenate([originals, mirrors])
    results = []
    for radius in [int(r) for r in args.radii.split(",")]:
        queries = [prng.getrandbits(64) for _ in range(args.queries * 9 // 10)]
        for _ in range(args.queries - len(queries)):
            value = int(entries[prng.randrange(len(entries)), 0])
            for b in prng.sample(range(64), prng.randint(0, radius)):
                value ^= 1 << b
            queries.append(value)
        prng.shuffle(queries)
        words = [np.array([q], dtype=np.uint64) for q in queries]
        brute_us = time_queries(lambda w: brute_force(entries, w, radius), words[:300])
        row = {"T": radius, "brute_force_us": round(brute_us, 1), "splits": []}
        for m in sorted({choose_substrings(64, radius, len(entries)), radius + 1}):
            index = HammingIndex(entries, 64, radius, substrings=m)
            started = time.perf_counter()
            index.build()
            build_s = time.perf_counter() - started
            for q, w in zip(queries[:200], words[:200]):  # exactness, on the timed queries
                assert sorted(index.search(q)[0].tolist()) == brute_force(entries, w, radius).tolist()
            timed = queries if m != radius + 1 or radius <= 6 else queries[:200]  # T+1 splits are slow
            query_us = time_queries(index.search, timed)
            row["splits"].append({
                "substrings": m, "auto": m == choose_substrings(64, radius, len(entries)),
                "sub_radius": radius // m, "query_us": round(query_us, 1),
                "speedup_vs_brute": round(brute_us / query_us, 1), "build_s": round(build_s, 2),
                "memory_mb": round(index.memory_bytes() / 2**20, 1),
            })
        results.append(row)
        print(row, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "eval.npz")
        ids = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(n)]
        size = write_index(path, {"version": 1, "hash_kind": "phash", "hash_size": 8, "bits": 64, "count": n},
                           ids, originals, mirrors)
        started = time.perf_counter()
        loaded = load_index(path, radius=8)
        loaded.index.build()
        load_s = time.perf_counter() - started
        memory = loaded.memory_bytes()
    emit("dedup_index", {
        "eval_images": n, "entries": len(entries), "queries": args.queries, "results": results,
        "index_file_mb": round(size / 2**20, 1), "load_and_build_s_T8": round(load_s, 2),
        "memory_mb_T8_with_ids": round(memory / 2**20, 1),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
