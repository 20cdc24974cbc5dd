"""Where the image stage's CPU goes per image, in one process: the fetch DoFn on served photos, and its parts.

    .venv/bin/python benchmarks/bench_fetch_shard.py [--images 1000] [--photo-size 640x480] [--rounds 2]

The same photos and loopback server as bench_vs_img2dataset.py. Two measurements, CPU of the whole process
(every thread) per image, rounds interleaved so a drifting machine load hits both alike:

- ``parts``: one thread, one URL after the other, each step of ``FetchShard`` timed alone (NSFW text check,
  fetch, resume-cache append, ``process_image``, sample building, progress counters, then ``write_shard``).
- ``fetch_shard``: ``FetchShard.process`` as a worker runs it (32 fetch threads) under the run's heap policy
  (pipeline/heap.py), with the image stage keeping its large blocks (as it does now) and without (the
  policy alone, as before).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from bench_image_stage import served_photos
from common import emit

from aligndata.images.process import process_image
from aligndata.pipeline import fetch_stage, heap
from aligndata.pipeline.config import CurateConfig
from aligndata.pipeline.fetch_stage import FetchShard, sample_meta
from aligndata.shards.writer import Sample, write_shard


def cpu() -> float:
    return time.process_time()  # all threads of this process


def rows_of(pairs: str) -> list[dict]:
    table = pq.read_table(pairs).to_pydict()
    return [{"uid": f"{i:032x}", "url": url, "caption": caption, "extra": {}, "page_url": None}
            for i, (url, caption) in enumerate(zip(table["url"], table["caption"]))]


def fetch_shard_ms(rows: list[dict], out: Path, index: int, keep_blocks: bool) -> dict:
    cfg = CurateConfig(inputs=("bench",), output=str(out), allow_private_networks=True, samples_per_shard=1000)
    dofn = FetchShard(cfg)
    dofn.setup()
    saved = fetch_stage.keeping_large_blocks
    if not keep_blocks:
        fetch_stage.keeping_large_blocks = contextlib.nullcontext
    try:
        with heap.returning_freed_memory():
            start, wall = cpu(), time.perf_counter()
            outputs = list(dofn.process((index, [(row["url"], [row]) for row in rows])))
            used, wall = cpu() - start, time.perf_counter() - wall
    finally:
        fetch_stage.keeping_large_blocks = saved
        dofn.teardown()
    assert outputs[-1]["successes"] == len(rows), outputs[-1]
    return {"cpu_ms": round(1000 * used / len(rows), 3), "wall_ms": round(1000 * wall / len(rows), 3)}


def parts_ms(rows: list[dict], out: Path, index: int) -> dict:
    cfg = CurateConfig(inputs=("bench",), output=str(out), allow_private_networks=True, samples_per_shard=1000)
    dofn = FetchShard(cfg)
    dofn.setup()
    spent: dict[str, float] = {}

    def timed(name, fn, *args):
        start = cpu()
        result = fn(*args)
        spent[name] = spent.get(name, 0.0) + cpu() - start
        return result

    samples = []
    with dofn.cache.for_shard(index) as cache:
        for row in rows:
            timed("nsfw_text_check", dofn.checks.check_text, row["caption"], row["url"])
            result = timed("fetch", dofn.fetcher.fetch, row["url"])
            timed("cache_put", cache.put, result)
            outcome = timed("process_image", process_image, result.data, dofn.image_cfg, None)
            samples.append(timed("sample", lambda: Sample(  # noqa: B023 - called at once
                key=row["uid"], image=outcome.image_bytes, image_ext=outcome.ext, text=row["caption"],
                meta=sample_meta(row, outcome))))
            timed("progress", lambda: dofn.progress.add(urls_fetched=1, kept=1))
    timed("write_shard", lambda: write_shard(str(out), index, samples, []))
    dofn.teardown()
    return {name: round(1000 * seconds / len(rows), 3) for name, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--photo-size", default="640x480")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.photo_size.lower().split("x"))
    runs: dict[str, list] = {"parts": [], "fetch_shard_keeping_blocks": [], "fetch_shard_policy_alone": []}
    with served_photos(args.images, size) as (_, photos, pairs), tempfile.TemporaryDirectory() as tmp:
        rows = rows_of(pairs)
        for r in range(args.rounds):
            for name in runs:
                out = Path(tmp) / f"{name}-{r}"
                os.makedirs(out)
                if name == "parts":
                    runs[name].append(parts_ms(rows, out, r))
                else:
                    runs[name].append(fetch_shard_ms(rows, out, r, keep_blocks=name.endswith("keeping_blocks")))
                shutil.rmtree(out)
                print(name, runs[name][-1], flush=True)
    best = {name: min(values, key=lambda v: sum(v.values()) if name == "parts" else v["cpu_ms"])
            for name, values in runs.items()}
    emit("fetch_shard" + ("" if size == (640, 480) else f"_{size[0]}x{size[1]}"), {
        "images": len(photos), "photo_size": list(size), "rounds": args.rounds,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "best": best, "runs": runs,
    })


if __name__ == "__main__":
    main()
