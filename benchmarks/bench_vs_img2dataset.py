"""Side by side with img2dataset: the same photos from the same loopback server, equivalent settings.

    python3 -m venv /tmp/i2d && /tmp/i2d/bin/pip install img2dataset     # never a project dependency
    .venv/bin/python benchmarks/bench_vs_img2dataset.py --img2dataset /tmp/i2d/bin/img2dataset [--images 2000]
        [--repeat 3]

Settings on both sides: webdataset output, keep_ratio resize to 346 (no enlarging), minimum side 200, maximum
aspect ratio 3, JPEG quality 95, 2 processes, 32 threads per process, 1000 samples per shard. Our curate also
runs its global text and frequency stage (allowlist, shared-text and texts-per-image statistics) in the same
timing; img2dataset has no such stage. Both are timed end to end as separate commands.

``--repeat N`` runs N rounds and alternates which tool goes first, so a machine whose load drifts (a shared VM)
does not always favour the same side; each run records the 1-minute load average when it started and the CPU
seconds its processes used. The summary is the median images/s of each tool; the ratio is theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_image_stage import served_photos
from common import emit


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of the command and its children, 1-minute load average at the start)."""
    load = os.getloadavg()[0]
    start, cpu = time.perf_counter(), children_cpu()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, children_cpu() - cpu, load


def run_img2dataset(exe: str, pairs: str, out: Path, processes: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    seconds, cpu, load = timed([
        exe, "--url_list", pairs, "--input_format", "parquet", "--url_col", "url",
        "--caption_col", "caption", "--output_format", "webdataset", "--output_folder", str(out),
        "--processes_count", str(processes), "--thread_count", "32", "--image_size", "346",
        "--resize_mode", "keep_ratio", "--resize_only_if_bigger", "True", "--min_image_size", "200",
        "--max_aspect_ratio", "3", "--encode_quality", "95", "--number_sample_per_shard", "1000",
        "--enable_wandb", "False",
    ])
    kept = sum(json.loads(p.read_text())["successes"] for p in out.glob("*_stats.json"))
    return result(seconds, cpu, load, kept)


def run_aligndata(pairs: str, out: Path, processes: int, extra: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    seconds, cpu, load = timed([
        sys.executable, "-m", "aligndata.cli", "curate", "--input", pairs, "--output", str(out),
        "--allow-private-networks", "--samples-per-shard", "1000", "--fetch-threads", "32", "--quiet",
        "--direct_running_mode", "multi_processing", "--direct_num_workers", str(processes), *extra,
    ])
    kept = json.loads((out / "report.json").read_text())["kept"]
    return result(seconds, cpu, load, kept)


def result(seconds: float, cpu: float, load: float, kept: int) -> dict:
    return {"seconds": round(seconds, 2), "kept": kept, "images_per_s": round(kept / seconds, 1),
            "cpu_seconds": round(cpu, 1), "load_at_start": round(load, 2)}


def summary(runs: list[dict]) -> dict:
    rates = [r["images_per_s"] for r in runs]
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "kept": runs[0]["kept"],
        "images_per_s": round(statistics.median(rates), 1),
        "images_per_s_range": [min(rates), max(rates)],
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--img2dataset", required=True, help="path to the img2dataset executable (its own venv)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the order alternates between rounds")
    parser.add_argument("--photo-size", default="640x480", help="WxH of the served photos (default 640x480, "
                        "COCO's own size; larger ones let our JPEG draft decoding work, results then go to _WxH)")
    parser.add_argument("--aligndata-args", default="", help="extra curate options, e.g. '--image-threads 32' "
                        "(then recorded under vs_img2dataset_custom)")
    args = parser.parse_args()
    extra = args.aligndata_args.split()
    size = tuple(int(v) for v in args.photo_size.lower().split("x"))

    rounds = []
    with served_photos(args.images, size) as (tmp, photos, pairs):
        for i in range(args.repeat):
            order = ["img2dataset", "aligndata"] if i % 2 == 0 else ["aligndata", "img2dataset"]
            one = {"first": order[0]}
            for tool in order:
                if tool == "img2dataset":
                    one[tool] = run_img2dataset(args.img2dataset, pairs, tmp / "i2d", args.processes)
                else:
                    one[tool] = run_aligndata(pairs, tmp / "ours", args.processes, extra)
            one["ratio"] = round(one["aligndata"]["images_per_s"] / one["img2dataset"]["images_per_s"], 2)
            print(json.dumps(one), flush=True)
            rounds.append(one)

    i2d = summary([r["img2dataset"] for r in rounds])
    ours = summary([r["aligndata"] for r in rounds])
    # results/vs_img2dataset.json for the standard 2,000 images and options, vs_img2dataset_N.json for other sizes
    name = "vs_img2dataset" if args.images == 2000 else f"vs_img2dataset_{args.images}"
    if size != (640, 480):
        name += f"_{size[0]}x{size[1]}"
    emit(name + ("_custom" if extra else ""), {
        "images": len(photos),
        "photo_size": list(size),
        "aligndata_args": extra,
        "processes": args.processes,
        "repeat": args.repeat,
        "img2dataset": i2d,
        "aligndata": ours,
        "speed_ratio_aligndata_over_img2dataset": round(ours["images_per_s"] / i2d["images_per_s"], 2),
        "rounds": rounds,
    })


if __name__ == "__main__":
    main()
