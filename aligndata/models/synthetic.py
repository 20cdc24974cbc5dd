"""A tiny synthetic image-text world written as shards in the output contract, for tests, demos and benchmarks.

Each image shows one large shape of one colour on a noisy background; its caption names the colour and shape in
one of a few phrasings; with ``with_classes`` each sample also carries ``.cls`` = index of "colour shape" in
``class_names()``. A tiny dual encoder learns the colour in a few dozen CPU steps, so evaluation can show it beats
chance, and the real shard writer (``aligndata.shards.writer``) produces the files.
"""

from __future__ import annotations

import hashlib
import io
import random

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 230), "yellow": (235, 215, 20)}
SHAPES = ("circle", "square")
PHRASES = ("a {c} {s}", "a photo of a {c} {s}", "one {c} {s} on a background", "picture of a {c} {s}")


def class_names() -> list[str]:
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


def draw(colour: str, shape: str, size: int, rng: random.Random) -> Image.Image:
    grey = rng.randint(90, 170)
    img = Image.new("RGB", (size, size), (grey, grey, grey))
    d = ImageDraw.Draw(img)
    for _ in range(6):  # clutter so the background is not constant
        x, y, r = rng.randrange(size), rng.randrange(size), rng.randint(1, size // 8)
        g = max(0, min(255, grey + rng.randint(-40, 40)))
        d.ellipse([x - r, y - r, x + r, y + r], fill=(g, g, g))
    extent = rng.randint(size // 2, size * 3 // 4)
    x0, y0 = rng.randint(0, size - extent), rng.randint(0, size - extent)
    box = [x0, y0, x0 + extent, y0 + extent]
    if shape == "circle":
        d.ellipse(box, fill=COLOURS[colour])
    else:
        d.rectangle(box, fill=COLOURS[colour])
    return img


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def make_samples(n: int, seed: int = 0, size: int = 40, with_classes: bool = False, start: int = 0):
    """``n`` Samples (aligndata.shards.writer.Sample) of the world; keys are stable for (seed, index)."""
    from aligndata.shards.writer import Sample

    rng = random.Random(seed)
    names = class_names()
    samples = []
    for i in range(start, start + n):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        text = rng.choice(PHRASES).format(c=colour, s=shape)
        img = draw(colour, shape, size, rng)
        key = hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()[:32]
        meta = {"uid": key, "url": f"https://example.invalid/{key}.jpg", "caption": text, "width": size,
                "height": size, "class_name": f"{colour} {shape}"}
        cls = names.index(f"{colour} {shape}") if with_classes else None
        samples.append(Sample(key, jpeg(img), "jpg", text, meta, cls))
    return samples


def write_world(output_dir: str, shards: int = 2, per_shard: int = 32, seed: int = 0, size: int = 40,
                with_classes: bool = False, extra: dict | None = None) -> list[str]:
    """Write ``shards`` tars of ``per_shard`` samples plus sizes.json; return the tar paths.

    ``extra`` maps a shard index to additional Samples to put in it (tests use it for corrupt samples).
    """
    import os

    from aligndata.shards.writer import shard_name, write_shard, write_sizes

    os.makedirs(output_dir, exist_ok=True)
    sizes, paths = {}, []
    for index in range(shards):
        samples = make_samples(per_shard, seed=seed * 1000 + index, size=size, with_classes=with_classes,
                               start=index * per_shard)
        samples += list((extra or {}).get(index, []))
        stats = write_shard(output_dir, index, samples)
        sizes[f"{shard_name(index)}.tar"] = stats["successes"]
        paths.append(os.path.join(output_dir, f"{shard_name(index)}.tar"))
    write_sizes(output_dir, sizes)
    return paths
