"""A synthetic noisy web: clean scene/caption pairs plus every kind of noise ALIGN's filters target.

Each row carries its hidden ground truth (`kind`): "clean", or the noise it was made to be. The demo compares
what curate rejected with this truth to report filter precision and recall.
"""

from __future__ import annotations

import io
import random
import string
from dataclasses import dataclass, field

from PIL import Image

from aligndata.demo.world import Scene, caption, draw, random_size, sample_scene

CLEAN = "clean"
# noise kind -> share of all rows (the rest are clean)
NOISE_SHARES = {
    "too_short": 0.02,
    "too_long": 0.02,
    "boilerplate": 0.03,
    "junk_tokens": 0.03,
    "small_image": 0.02,
    "banner": 0.02,
    "broken_file": 0.01,
    "dead_url": 0.01,
    "eval_near_duplicate": 0.03,
    "nsfw_caption": 0.01,
}
SHARED_CAPTION_IMAGES = 25  # one caption on many images
SHARED_CAPTION = "click here to enlarge this photo now"
MANY_CAPTIONS = 150  # one image with hundreds of captions... scaled to the demo (see demo --max-texts-per-image)
BOILERPLATE = (
    "WhatsApp Image 2021-03-05 at 10.12.44",
    "Screenshot 2021-01-01 at 10.00.00",
    "1920x1080 wallpaper hd",
    "IMG_2031.jpg",
    "DSC_0042.JPG",
    "no image available",
    "https://example.com/images/p123.jpg",
    "alt img",
)
NSFW_WORDS = ("porn", "nsfw", "hentai", "pornstar")  # words on the keywords list (aligndata.filters.nsfw)
SHORT = ("circle", "red one", "stars", "nice", "shapes")


@dataclass
class SyntheticWeb:
    rows: list[dict] = field(default_factory=list)  # {"path", "caption", "kind", "label"}
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # path -> (body, content type)
    eval_set: list[dict] = field(default_factory=list)  # {"id", "scene", "caption", "image": bytes}
    train_scenes: dict[str, Scene] = field(default_factory=dict)


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _junk(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(rng.randint(5, 9)))


def build_web(n_pairs: int = 2000, n_eval: int = 200, seed: int = 0) -> SyntheticWeb:
    rng = random.Random(seed)
    web = SyntheticWeb()

    for i in range(n_eval):  # held out: never served as themselves
        scene = sample_scene(rng)
        w, h = random_size(rng)
        web.eval_set.append({"id": f"eval-{i:04d}", "scene": scene, "caption": caption(scene, rng),
                             "image": jpeg(draw(scene, w, h))})

    def image_row(kind: str, text: str, img: Image.Image | None, scene: Scene | None, quality: int = 90,
                  body: bytes | None = None):
        path = f"/img/{len(web.rows):06d}.jpg"
        if body is None and img is not None:
            body = jpeg(img, quality)
        if body is not None:
            web.files[path] = (body, "image/jpeg")
        web.rows.append({"path": path, "caption": text, "kind": kind, "label": scene.label if scene else None})
        if scene is not None:
            web.train_scenes[path] = scene

    def fresh():
        scene = sample_scene(rng)
        return scene, draw(scene, *random_size(rng))

    counts = {kind: max(1, round(share * n_pairs)) for kind, share in NOISE_SHARES.items()}
    n_clean = n_pairs - sum(counts.values()) - SHARED_CAPTION_IMAGES - MANY_CAPTIONS
    plan = [CLEAN] * n_clean + [k for k, n in counts.items() for _ in range(n)]
    rng.shuffle(plan)
    for kind in plan:
        scene, img = fresh()
        if kind == CLEAN:
            image_row(kind, caption(scene, rng), img, scene)
        elif kind == "too_short":
            image_row(kind, rng.choice(SHORT), img, scene)
        elif kind == "too_long":
            image_row(kind, " and ".join(caption(scene, rng) for _ in range(3)), img, scene)
        elif kind == "boilerplate":
            image_row(kind, rng.choice(BOILERPLATE), img, scene)
        elif kind == "junk_tokens":
            words = caption(scene, rng).split()
            words.insert(rng.randrange(len(words) + 1), _junk(rng))
            image_row(kind, " ".join(words), img, scene)
        elif kind == "small_image":
            image_row(kind, caption(scene, rng), draw(scene, rng.randint(90, 200), rng.randint(90, 200)), scene)
        elif kind == "banner":
            image_row(kind, caption(scene, rng), draw(scene, rng.randint(900, 1200), rng.randint(210, 280)), scene)
        elif kind == "broken_file":
            image_row(kind, caption(scene, rng), None, scene, body=jpeg(img)[:400])
        elif kind == "dead_url":
            image_row(kind, caption(scene, rng), None, scene)  # no file: the server answers 404
        elif kind == "eval_near_duplicate":
            item = rng.choice(web.eval_set)
            original = Image.open(io.BytesIO(item["image"]))
            copy = original.resize((original.width * 3 // 4, original.height * 3 // 4))
            image_row(kind, caption(item["scene"], rng), copy, item["scene"], quality=60)
            web.rows[-1]["eval_id"] = item["id"]  # which held-out image leaks into the web
        elif kind == "nsfw_caption":
            image_row(kind, f"{rng.choice(NSFW_WORDS)} {caption(scene, rng)}", img, scene)

    for _ in range(SHARED_CAPTION_IMAGES):
        scene, img = fresh()
        image_row("shared_caption", SHARED_CAPTION, img, scene)
    scene, img = fresh()
    body = jpeg(img)
    first = len(web.rows)
    for i in range(MANY_CAPTIONS):  # the same image URL under many different captions
        path = f"/img/{first:06d}.jpg"
        web.files[path] = (body, "image/jpeg")
        web.rows.append({"path": path, "caption": f"best deals on product photo {i} buy now", "kind": "many_captions",
                         "label": scene.label})
    return web
