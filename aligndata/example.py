"""`aligndata example`: curate a small bundled corpus served from a local HTTP server on 127.0.0.1.

The corpus is made here, deterministically: real JPEG/PNG images drawn with Pillow and captions describing
them, plus one row for each kind of noise ALIGN's filters remove, so the run shows every stage of the funnel.
"""

from __future__ import annotations

import io
import json
import os
import random
import tempfile

from PIL import Image, ImageDraw

from aligndata.localweb import StaticWeb

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"white": (245, 245, 245), "grey": (128, 128, 128), "black": (20, 20, 20)}


def draw_scene(width: int, height: int, shape: str, colour: str, background: str, seed: int) -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", (width, height), BACKGROUNDS[background])
    draw = ImageDraw.Draw(img)
    for _ in range(30):  # texture, so images are photo-like for the codec and distinct for perceptual hashes
        x, y = rng.randrange(width), rng.randrange(height)
        shade = tuple(min(255, max(0, c + rng.randint(-30, 30))) for c in BACKGROUNDS[background])
        draw.ellipse([x, y, x + rng.randint(4, 30), y + rng.randint(4, 30)], fill=shade)
    size = min(width, height) // 2
    cx, cy = width // 2 + rng.randint(-size // 4, size // 4), height // 2 + rng.randint(-size // 4, size // 4)
    box = [cx - size // 2, cy - size // 2, cx + size // 2, cy + size // 2]
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), (cx, box[1])], fill=fill)
    return img


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def build_corpus(web: StaticWeb) -> list[dict]:
    """Register the images on ``web`` and return the pairs table rows (url, caption, kind)."""
    rows = []
    rng = random.Random(7)
    phrasings = [
        "a {colour} {shape} on a {background} background",
        "photo of a {colour} {shape} in front of a {background} wall",
        "the {colour} {shape} sits in the middle of a {background} scene",
    ]
    n = 0
    for shape in SHAPES:
        for colour in COLOURS:
            background = rng.choice(list(BACKGROUNDS))
            n += 1
            w, h = rng.choice([(640, 480), (480, 640), (500, 375), (400, 400)])
            url = web.add(f"/img/{n}.jpg", jpeg(draw_scene(w, h, shape, colour, background, n)))
            caption = rng.choice(phrasings).format(colour=colour, shape=shape, background=background)
            rows.append({"url": url, "caption": caption, "kind": "good"})

    def add(kind: str, caption: str, path: str, body: bytes | None, content_type: str = "image/jpeg"):
        url = web.add(path, body, content_type) if body is not None else web.base + path
        rows.append({"url": url, "caption": caption, "kind": kind})

    scene = lambda w, h, seed: jpeg(draw_scene(w, h, "circle", "red", "white", seed))  # noqa: E731
    add("text_too_short", "red circle", "/noise/short.jpg", scene(400, 300, 101))
    add("text_too_long", " ".join(["a very long rambling caption"] * 5), "/noise/long.jpg", scene(400, 300, 102))
    add("text_boilerplate", "WhatsApp Image 2021-03-05 at 10.12.44", "/noise/camera.jpg", scene(400, 300, 103))
    add("text_boilerplate", "1920x1080 wallpaper hd", "/noise/resolution.jpg", scene(400, 300, 104))
    for i in range(12):  # one caption on many images: ALIGN drops texts shared by more than 10 images
        add("text_shared_by_too_many_images", "click here to see the full gallery", f"/noise/shared{i}.jpg",
            scene(400, 300, 200 + i))
    add("image_too_small", "a small red circle on a white background", "/noise/small.jpg", scene(150, 150, 105))
    add("aspect_ratio_too_large", "a wide banner with a red circle on white", "/noise/banner.jpg",
        scene(1200, 300, 106))
    add("download_failed", "a photo that is no longer on the server", "/noise/gone.jpg", None)
    add("decode_failed", "a broken file that is not really an image", "/noise/broken.jpg",
        scene(400, 300, 107)[:500])
    rows.append(dict(rows[0], kind="duplicate_pair"))
    rows.append({"url": "ftp://example.invalid/x.jpg", "caption": "an image behind an unsupported scheme",
                 "kind": "invalid_row"})
    rows.append({"url": None, "caption": "a row without any image url", "kind": "invalid_row"})
    return rows


# A fixed port keeps the URLs, and so the sample keys and the URL-hash shard assignment, the same from run to run
# (3 shards of 8, 4 and 6 samples); when it is taken StaticWeb falls back to a free port and only the spread of
# samples over shards changes. The demo uses 48,765.
EXAMPLE_PORT = 48_764


def run_example(output: str, overwrite: bool = False, beam_args: list[str] | None = None, progress: str = "off",
                progress_interval: float = 5.0) -> dict:
    from aligndata.pipeline.config import CurateConfig
    from aligndata.pipeline.run import run_curate

    with StaticWeb(EXAMPLE_PORT) as web, tempfile.TemporaryDirectory(prefix="aligndata-example-") as tmp:
        rows = build_corpus(web)
        pairs = os.path.join(tmp, "pairs.jsonl")
        with open(pairs, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        cfg = CurateConfig(
            inputs=(pairs,),
            output=output,
            extra_cols=("kind",),
            samples_per_shard=10,
            allow_private_networks=True,  # the corpus is served from 127.0.0.1
            retries=0,
            timeout=30.0,  # loopback answers at once; a generous limit keeps a loaded machine from failing a row
            overwrite=overwrite,
        )
        return run_curate(cfg, beam_args, progress, progress_interval)
