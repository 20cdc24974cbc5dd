"""Image stage throughput: `curate` fetching photo-like JPEGs from a loopback server, against a plain Pillow loop.

    .venv/bin/python benchmarks/bench_image_stage.py [--images 2000]

The images are real COCO photos (../shared/data/real/photos), each cropped, flipped and re-encoded into a
distinct ~640x480 JPEG. A separate process serves them (python -m http.server on 127.0.0.1), so the server
does not share our GIL. The pipeline does fetch + full decode + ALIGN's image rules + pHash + resize to 346 +
encode + shard writing; the floor is a plain Pillow loop over the same files on disk doing decode + resize +
encode only. "Per CPU second" divides by the CPU seconds this process and its finished children (the
multi_processing workers) used; the server's CPU is not counted (it is reaped only at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common import REAL, emit, write_parquet
from PIL import Image

from aligndata.pipeline.config import CurateConfig
from aligndata.pipeline.run import run_curate


def photo_jpegs(n: int, seed: int = 0, size: tuple[int, int] = (640, 480)) -> Iterator[bytes]:
    """``n`` distinct JPEGs made from the real COCO photos (random 5% crops, flips, quality 80-92), ``size``
    landscape or its transpose (COCO photos are ~640x480: larger sizes are upscaled, smooth but photo-like)."""
    sources = sorted((REAL / "photos" / "coco_val2017").glob("*.jpg"))
    if not sources:
        sys.exit(f"benchmark needs the COCO photos in {REAL / 'photos'}")
    rng = random.Random(seed)
    originals = [Image.open(p).convert("RGB") for p in sources]
    for i in range(n):
        img = originals[i % len(originals)]
        w, h = img.size
        dx, dy = rng.randint(0, w // 20), rng.randint(0, h // 20)
        crop = img.crop((dx, dy, w - rng.randint(0, w // 20), h - rng.randint(0, h // 20)))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop = crop.resize(size if crop.width >= crop.height else size[::-1], Image.Resampling.BICUBIC)
        out = io.BytesIO()
        crop.save(out, "JPEG", quality=rng.randint(80, 92))
        yield out.getvalue()


def make_photos(directory: Path, n: int, seed: int = 0, size: tuple[int, int] = (640, 480)) -> list[str]:
    names = []
    for i, data in enumerate(photo_jpegs(n, seed, size)):
        name = f"{i:06d}.jpg"
        (directory / name).write_bytes(data)
        names.append(name)
    return names


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pillow_floor(paths: list[Path], size: int = 346) -> tuple[float, float]:
    start, cpu = time.perf_counter(), cpu_seconds()
    for path in paths:
        img = Image.open(path)
        img = img.convert("RGB")
        scale = size / min(img.size)
        if scale < 1:
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=95)
    return time.perf_counter() - start, cpu_seconds() - cpu


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SERVER = """
import functools, http.server, sys
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
Server(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


@contextlib.contextmanager
def served_pairs(web: Path, names: list[str], pairs_path: Path) -> Iterator[str]:
    """Serve ``web`` from a separate process on 127.0.0.1 (it does not share our GIL): `python -m http.server`'s
    server and handler (HTTP/1.0, a thread per connection) with an accept queue of 1024 instead of socketserver's
    5, which dropped ~40-120 SYNs of each 2,000-photo run with 2 x 32 fetch threads (`nstat` TcpExtListenDrops),
    each a 1 s stall until the client's kernel retried; an image host's queue is hundreds deep (nginx: 511).
    Yields a pairs table (url, caption) of its photos; the server stops on exit."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port), str(web)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        yield write_parquet(
            {"url": [f"http://127.0.0.1:{port}/{n}" for n in names],
             "caption": [f"a real photo number {i} from the benchmark set" for i in range(len(names))]},
            pairs_path,
        )
    finally:
        server.terminate()
        server.wait()


@contextlib.contextmanager
def served_photos(n: int, size: tuple[int, int] = (640, 480)) -> Iterator[tuple[Path, list[Path], str]]:
    """``n`` photos written to a temporary directory and served from loopback: yields (the directory, the photo
    files, the pairs parquet of their URLs); everything is removed on exit."""
    with tempfile.TemporaryDirectory(prefix="aligndata-bench-") as tmp:
        tmp = Path(tmp)
        web = tmp / "web"
        web.mkdir()
        names = make_photos(web, n, size=size)
        with served_pairs(web, names, tmp / "pairs.parquet") as pairs:
            yield tmp, [web / name for name in names], pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2, help="also run multi_processing with this many workers")
    args = parser.parse_args()

    with served_photos(args.images) as (tmp, photos, path):
        floor_s, floor_cpu = pillow_floor(photos)
        runs = {}
        variants = [("fnapi", [])]
        if args.workers > 1:
            variants.append((f"multi_processing_{args.workers}", [
                "--direct_running_mode", "multi_processing", "--direct_num_workers", str(args.workers)]))
        for name, beam_args in variants:
            cfg = CurateConfig(inputs=(path,), output=str(tmp / f"out-{name}"), allow_private_networks=True,
                               samples_per_shard=1000)
            start, cpu = time.perf_counter(), cpu_seconds()
            report = run_curate(cfg, beam_args)
            seconds, used = time.perf_counter() - start, cpu_seconds() - cpu
            if report["kept"] != len(photos):
                raise SystemExit(f"{name}: kept {report['kept']} of {len(photos)}: {report['rejected_by_reason']}")
            runs[name] = {"seconds": round(seconds, 2), "images_per_s": round(len(photos) / seconds, 1),
                          "cpu_seconds": round(used, 1), "images_per_cpu_s": round(len(photos) / used, 1)}

    emit("image_stage", {
        "images": len(photos),
        "floor_pillow_loop": {"seconds": round(floor_s, 2), "images_per_s": round(len(photos) / floor_s, 1),
                              "images_per_cpu_s": round(len(photos) / floor_cpu, 1)},
        "pipeline": runs,
    })


if __name__ == "__main__":
    main()
