"""Side by side with img2dataset: the same photos from the same loopback server, equivalent settings, one run.

    python3 -m venv /tmp/i2d && /tmp/i2d/bin/pip install img2dataset     # never a project dependency
    .venv/bin/python benchmarks/bench_vs_img2dataset.py --img2dataset /tmp/i2d/bin/img2dataset [--images 2000]

Settings on both sides: webdataset output, keep_ratio resize to 346 (no enlarging), minimum side 200, maximum
aspect ratio 3, JPEG quality 95, 2 processes, 32 threads per process, 1000 samples per shard. Our curate also
runs its global text and frequency stage (allowlist, shared-text and texts-per-image statistics) in the same
timing; img2dataset has no such stage. Both are timed end to end as separate commands.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_image_stage import make_photos, served_pairs
from common import emit


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--img2dataset", required=True, help="path to the img2dataset executable (its own venv)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="aligndata-bench-") as tmp:
        tmp = Path(tmp)
        web = tmp / "web"
        web.mkdir()
        names = make_photos(web, args.images)
        with served_pairs(web, names, tmp / "pairs.parquet") as pairs:
            i2d_out = tmp / "i2d"
            i2d_s = timed([
                args.img2dataset, "--url_list", pairs, "--input_format", "parquet", "--url_col", "url",
                "--caption_col", "caption", "--output_format", "webdataset", "--output_folder", str(i2d_out),
                "--processes_count", str(args.processes), "--thread_count", "32", "--image_size", "346",
                "--resize_mode", "keep_ratio", "--resize_only_if_bigger", "True", "--min_image_size", "200",
                "--max_aspect_ratio", "3", "--encode_quality", "95", "--number_sample_per_shard", "1000",
                "--enable_wandb", "False",
            ])
            i2d_kept = sum(json.loads(p.read_text())["successes"] for p in i2d_out.glob("*_stats.json"))

            ours_out = tmp / "ours"
            ours_s = timed([
                sys.executable, "-m", "aligndata.cli", "curate", "--input", pairs, "--output", str(ours_out),
                "--allow-private-networks", "--samples-per-shard", "1000", "--fetch-threads", "32", "--quiet",
                "--direct_running_mode", "multi_processing", "--direct_num_workers", str(args.processes),
            ])
            ours_kept = json.loads((ours_out / "report.json").read_text())["kept"]

    emit("vs_img2dataset", {
        "images": len(names),
        "processes": args.processes,
        "img2dataset": {"seconds": round(i2d_s, 2), "kept": i2d_kept, "images_per_s": round(i2d_kept / i2d_s, 1)},
        "aligndata": {"seconds": round(ours_s, 2), "kept": ours_kept, "images_per_s": round(ours_kept / ours_s, 1)},
        "speed_ratio_aligndata_over_img2dataset": round((ours_kept / ours_s) / (i2d_kept / i2d_s), 2),
    })


if __name__ == "__main__":
    main()
