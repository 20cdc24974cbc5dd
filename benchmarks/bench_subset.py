"""`aligndata subset` against copy floors, and its top-fraction select against a full sort.

    .venv/bin/python benchmarks/bench_subset.py [--shards 20] [--per-shard 1000] [--scores 10000000]

1. A shard set written by our writer (real JPEGs encoded by Pillow, 64 distinct images of ~20-40 KB reused),
   a scores parquet beside each shard (float32 rounded to 3 decimals, so ties abound). Timed, each from a cold
   start of the command: ``aligndata subset --top-fraction 0.3 --where 'width >= 0'`` with 1 and 2 processes,
   against two floors: ``cp`` of every tar (the disk), and the leanest single-process Python loop that does the
   same job (tarfile read, members of the kept keys written to new tars; keys known in advance).
2. The select alone, in memory: the radix select over N float32 scores with uids, spread over 100 "shards",
   against numpy's full sort (np.lexsort of (lo, hi, key)); time and peak traced memory (tracemalloc sees numpy's
   allocations) of each, and the kept sets compared.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import REPO, emit
from PIL import Image

from aligndata.shards.writer import Sample, write_shard, write_sizes
from aligndata.subsets import scores as scoring


def make_set(directory: Path, shards: int, per_shard: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    images = []
    for i in range(64):
        pixels = rng.integers(0, 255, (160, 240, 3), dtype=np.uint8)
        pixels[:, :, i % 3] //= 2  # a little structure, so JPEG sizes differ
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
        images.append(buffer.getvalue())
    sizes, total_bytes = {}, 0
    for s in range(shards):
        samples = []
        for i in range(per_shard):
            uid = f"{int(rng.integers(0, 2**63)):016x}{int(rng.integers(0, 2**63)):016x}"
            samples.append(Sample(uid, images[(s * per_shard + i) % 64], "jpg", f"caption {s} {i}",
                                  {"uid": uid, "caption": f"caption {s} {i}", "width": 240, "height": 160}))
        stats = write_shard(str(directory), s, samples)
        sizes[f"{s:05d}.tar"] = stats["count"]
        total_bytes += stats["bytes"]
        uids = [x.key for x in samples]
        scores = np.round(rng.random(per_shard), 3).astype(np.float32)
        pq.write_table(pa.table({"uid": uids, "score": scores, "model": ["bench"] * per_shard}),
                       directory / f"{s:05d}_scores.parquet")
    write_sizes(str(directory), sizes)
    return total_bytes


def lean_floor(source: Path, out: Path, kept: set[str], per_shard: int) -> None:
    """Read every tar once, write the kept samples' members to new tars of per_shard samples."""
    out.mkdir()
    index, count, tar = 0, 0, None
    for path in sorted(source.glob("*.tar")):
        with tarfile.open(path) as src:
            for info in src:
                key = info.name.split(".", 1)[0]
                if key not in kept:
                    continue
                if tar is None or (count >= per_shard and info.name.endswith(".jpg")):
                    if tar is not None:
                        tar.close()
                    tar, count = tarfile.open(out / f"{index:05d}.tar", "w"), 0
                    index += 1
                tar.addfile(info, src.extractfile(info))
                count += info.name.endswith(".jpg")
    if tar is not None:
        tar.close()


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    return time.perf_counter() - started


def select_bench(n: int, fraction: float = 0.3, parts: int = 100) -> dict:
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(n), 4).astype(np.float32)
    hi = rng.integers(0, 2**63, n, dtype=np.uint64)
    lo = rng.integers(0, 2**63, n, dtype=np.uint64)
    k = int(n * fraction)
    bounds = np.linspace(0, n, parts + 1).astype(int)
    keys = scoring.rank_keys(scores)

    tracemalloc.start()
    started = time.perf_counter()
    passes = []

    def count_next(prefix):  # one pass: each "shard" makes its digits and histogram, as the workers do
        passes.append(prefix)
        total = np.zeros(scoring.BINS, np.int64)
        for a, b in zip(bounds, bounds[1:]):
            total += scoring.histogram(scoring.digits(keys[a:b], hi[a:b], lo[a:b]), prefix)
        return total

    cutoff = scoring.cutoff_parts(scoring.radix_select(k, count_next))
    kept = np.concatenate([np.nonzero(scoring.within(keys[a:b], hi[a:b], lo[a:b], cutoff))[0] + a
                           for a, b in zip(bounds, bounds[1:])])
    radix_s = time.perf_counter() - started
    radix_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    tracemalloc.start()
    started = time.perf_counter()
    order = np.lexsort((lo, hi, keys))[:k]
    sort_s = time.perf_counter() - started
    sort_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(kept) == k and set(kept.tolist()) == set(order.tolist())
    # The sort's traced peak leaves out its input: every sample's key and uid in one process (20 bytes each),
    # which the radix select never gathers (a worker holds one shard's).
    return {"samples": n, "k": k, "passes": len(passes), "sort_input_mib": round(20 * n / 2**20, 1),
            "radix_s": round(radix_s, 2),
            "radix_peak_mib": round(radix_peak / 2**20, 1), "sort_s": round(sort_s, 2),
            "sort_peak_mib": round(sort_peak / 2**20, 1), "same_kept_set": True}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--scores", type=int, default=10_000_000)
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "src"
        source.mkdir()
        tar_bytes = make_set(source, args.shards, args.per_shard)
        samples = args.shards * args.per_shard
        results["set"] = {"shards": args.shards, "samples": samples, "tar_mib": round(tar_bytes / 2**20, 1)}
        copy_dir = tmp / "copy"
        results["cp_all_tars_s"] = round(timed(["sh", "-c", f"mkdir {copy_dir} && cp {source}/*.tar {copy_dir}/"]), 2)
        for processes in (1, 2):
            out = tmp / f"out{processes}"
            seconds = timed([sys.executable, "-m", "aligndata.cli", "subset", str(source), "--output", str(out),
                             "--top-fraction", "0.3", "--where", "width >= 0", "--processes", str(processes),
                             "--quiet"])
            results[f"subset_{processes}_process_s"] = round(seconds, 2)
            results[f"subset_{processes}_process_samples_per_s"] = round(samples / seconds)
        kept = set()
        for parquet in sorted((tmp / "out1").glob("[0-9]*.parquet")):
            kept.update(pq.read_table(parquet, columns=["uid"]).column("uid").to_pylist())
        results["kept"] = len(kept)
        started = time.perf_counter()
        lean_floor(source, tmp / "lean", kept, 10_000)
        results["lean_floor_s"] = round(time.perf_counter() - started, 2)
        for processes in (1, 2):
            results[f"subset_{processes}_vs_lean_floor"] = round(
                results[f"subset_{processes}_process_s"] / results["lean_floor_s"], 2)
        same = all((tmp / "out1" / p.name).read_bytes() == p.read_bytes() for p in (tmp / "out2").iterdir())
        results["bytes_equal_1_vs_2_processes"] = same
        shutil.rmtree(copy_dir)
    results["select"] = select_bench(args.scores)
    emit("subset", results)


if __name__ == "__main__":
    main()
