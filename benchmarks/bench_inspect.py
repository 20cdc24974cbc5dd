"""How long `aligndata inspect ...` and `aligndata report` take on a 100k-sample shard set.

The set is written by the real shard writer (pipeline.shards.write_shard): 10 shards x 10,000 samples, captions
from the real LAION alt-texts when ../shared is present (synthetic otherwise), small real JPEGs. Reports wall
and CPU seconds per command (CPU time is the steadier number on a shared machine).

    .venv/bin/python benchmarks/bench_inspect.py [--samples 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import shutil
import sys
import tempfile
import time

from common import REAL, emit
from PIL import Image, ImageDraw


def captions(n: int) -> list[str]:
    path = REAL / "captions" / "laion_alt_10k.parquet"
    if path.exists():
        import pyarrow.parquet as pq

        pool = [t for t in pq.read_table(path, columns=["TEXT"]).column("TEXT").to_pylist() if t]
    else:
        pool = [f"a photo of a {c} {s}" for c in ("red", "green", "blue") for s in ("cat", "dog", "car")]
    rng = random.Random(0)
    return [rng.choice(pool) for _ in range(n)]


def jpegs(k: int = 16) -> list[tuple[bytes, int, int]]:
    out = []
    rng = random.Random(1)
    for i in range(k):
        w, h = rng.choice([(96, 64), (64, 96), (80, 80)])
        img = Image.new("RGB", (w, h), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        ImageDraw.Draw(img).ellipse([10, 10, w - 10, h - 10], fill=(200, 40, 40))
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=80)
        out.append((buffer.getvalue(), w, h))
    return out


def build(directory: str, n: int, per_shard: int = 10_000) -> None:
    from aligndata.shards.writer import Sample, write_shard, write_sizes

    texts = captions(n)
    images = jpegs()
    sizes = {}
    for shard in range((n + per_shard - 1) // per_shard):
        samples = []
        for i in range(shard * per_shard, min(n, (shard + 1) * per_shard)):
            data, w, h = images[i % len(images)]
            key = f"{i:032x}"
            meta = {"key": key, "uid": key, "url": f"https://img{i % 97}.example.com/{i}.jpg", "caption": texts[i],
                    "page_url": None, "width": w, "height": h, "original_width": w * 4, "original_height": h * 4,
                    "sha256": "0" * 64, "phash": "0" * 16}
            samples.append(Sample(key, data, "jpg", texts[i], meta))
        stats = write_shard(directory, shard, samples)
        sizes[f"{stats['shard']}.tar"] = stats["count"]
    write_sizes(directory, sizes)
    # a minimal report.json so `aligndata report` has a funnel to draw (no rejected rows)
    from aligndata.filters.registry import REASONS
    from aligndata.pipeline.report import funnel
    from aligndata.shards.writer import write_json_atomic

    by_reason = {r: 0 for r in REASONS}
    write_json_atomic(os.path.join(directory, "report.json"), {
        "dry_run": False, "input_rows": n, "kept": n, "rejected": 0, "accounting_ok": True,
        "rejected_by_reason": by_reason, "rejected_pct_by_reason": {r: 0.0 for r in REASONS},
        "funnel": funnel(n, by_reason), "shards": len(sizes)})


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--keep", default=None, help="build (or reuse) the set in this directory")
    args = parser.parse_args()

    from aligndata.inspect.export import export
    from aligndata.shards.spec import resolve
    from aligndata.inspect.show import grep
    from aligndata.inspect.summary import summarize
    from aligndata.inspect.validate import validate
    from aligndata.inspect.report_page import render_report_html

    directory = args.keep or tempfile.mkdtemp(prefix="bench-inspect-")
    os.makedirs(directory, exist_ok=True)
    try:
        if not any(name.endswith(".tar") for name in os.listdir(directory)):
            _, build_wall, _ = timed(lambda: build(directory, args.samples))
        else:
            build_wall = None
        shards = resolve(directory)
        tar_bytes = sum(shards.size(p) for p in shards.paths)
        results = {}
        pattern = re.compile(r"\bred\b", re.IGNORECASE)
        export_path = os.path.join(tempfile.gettempdir(), "bench-inspect-export.parquet")
        cases = {
            "summary (per-shard parquet)": lambda: summarize(shards)["samples"],
            "summary --scan (tars)": lambda: summarize(shards, force_scan=True)["samples"],
            "grep (parquet)": lambda: sum(1 for _ in grep(shards, pattern)),
            "grep --scan (tars)": lambda: sum(1 for _ in grep(shards, pattern, force_scan=True)),
            "validate": lambda: len(validate(shards)[0]),
            "validate --deep": lambda: len(validate(shards, deep=True)[0]),
            "export parquet (no images)": lambda: export(shards, "parquet", export_path),
            "report.html": lambda: len(render_report_html(directory)),
        }
        for name, fn in cases.items():
            value, wall, cpu = timed(fn)
            results[name] = {"wall_s": wall, "cpu_s": cpu, "result": value,
                             "samples_per_cpu_s": round(args.samples / cpu) if cpu else None}
            print(f"{name:32s} wall {wall:7.2f} s  cpu {cpu:7.2f} s  -> {value}", file=sys.stderr)
        os.remove(export_path)
        emit("inspect", {
            "samples": args.samples,
            "shards": len(shards),
            "tar_bytes": tar_bytes,
            "build_wall_s": build_wall,
            "load_average_1min": os.getloadavg()[0],
            "commands": results,
        })
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
