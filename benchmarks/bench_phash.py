"""perceptual_hash per call: the current function against the imagehash.phash version it replaced (same run).

    .venv/bin/python benchmarks/bench_phash.py [--photos 200] [--rounds 7]

Photos: real COCO photos (../shared/data/real/photos) cropped, flipped and resized to 640x480 or 480x640 and
JPEG-encoded as bench_image_stage.make_photos does, decoded back to RGB as decode_image hands them over. Other
inputs: 1x1, 33x33 and 4000x3000 RGB, the photos as "L" and "RGBA", and 120x90 "P" images. Each round times
old then new over all images of a case; the minimum over rounds is reported, in ms per call. Both must agree on
every hash. (1x1 and other flat images tie at the median and take the scipy fallback, so they gain nothing.)
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time

import imagehash
from bench_image_stage import photo_jpegs
from common import machine
from PIL import Image

from aligndata.filters.image import _PHASH_PRESHRINK, perceptual_hash


def reference_hash(image: Image.Image, hash_size: int = 8) -> str:
    """perceptual_hash as it was: imagehash.phash of the box-reduced copy."""
    factor = min(image.size) // (4 * hash_size * _PHASH_PRESHRINK)
    if factor >= 2:
        image = image.reduce(factor)
    return str(imagehash.phash(image, hash_size=hash_size))


def photos(n: int, seed: int = 0) -> list[Image.Image]:
    """The image-stage benchmark's photos, decoded to RGB as decode_image hands them over."""
    return [Image.open(io.BytesIO(data)).convert("RGB") for data in photo_jpegs(n, seed)]


def per_call_ms(functions, images: list[Image.Image], rounds: int) -> tuple[list[float], list[list[str]]]:
    """Minimum over rounds of each function's ms per call; the functions take turns so they share the noise."""
    best = [float("inf")] * len(functions)
    hashes = [[] for _ in functions]
    for _ in range(rounds):
        for i, function in enumerate(functions):
            start = time.perf_counter()
            hashes[i] = [function(image) for image in images]
            best[i] = min(best[i], time.perf_counter() - start)
    return [b / len(images) * 1e3 for b in best], hashes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    real = photos(args.photos)
    big = real[0].resize((4000, 3000), Image.Resampling.BICUBIC)
    cases = {
        "photo 640x480 RGB": real,
        "photo L": [p.convert("L") for p in real],
        "photo RGBA": [p.convert("RGBA") for p in real],
        # reduce() refuses "P" (old and new raise the same ValueError), so only P images below 128 px hash
        "120x90 P (adaptive palette)": [p.resize((120, 90)).convert("P", palette=Image.Palette.ADAPTIVE)
                                        for p in real[:50]],
        "1x1 RGB": [Image.new("RGB", (1, 1), (200, 10, 30))] * 50,
        "33x33 RGB": [p.resize((33, 33)) for p in real[:50]],
        "4000x3000 RGB": [big] * 5,
    }
    results = {}
    for name, images in cases.items():
        images = list(images)
        reference_hash(images[0]), perceptual_hash(images[0])  # warm caches and imports
        (old_ms, new_ms), (old, new) = per_call_ms([reference_hash, perceptual_hash], images, args.rounds)
        if old != new:
            sys.exit(f"{name}: hashes differ")
        results[name] = {"images": len(images), "old_ms": round(old_ms, 4), "new_ms": round(new_ms, 4),
                         "saved_ms": round(old_ms - new_ms, 4)}
        print(f"{name:28s} old {old_ms:8.4f} ms  new {new_ms:8.4f} ms  saved {old_ms - new_ms:7.4f} ms", flush=True)
    print(json.dumps({"benchmark": "phash", "machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
