"""A synthetic noisy web: clean scene/caption pairs plus every kind of noise ALIGN's filters target.

Each row carries its hidden ground truth (`kind`): "clean", or the noise it was made to be. The demo compares
what curate rejected with this truth to report filter precision and recall.
"""

from __future__ import annotations

import io
import random
import string
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from aligndata.demo.world import COLOURS, SHAPES, Scene, caption, draw, random_size, sample_scene, shape_mask

CLEAN = "clean"
# noise kind -> share of all rows (the rest are clean). Each kind looks like what the web puts there: the rule that
# targets it exists because such rows carry nothing (or something wrong) about their image.
NOISE_SHARES = {
    "too_short": 0.04,  # too generic to teach anything: "image", "logo"
    "too_long": 0.04,  # SEO keyword stuffing
    "boilerplate": 0.04,  # file names, dimensions, camera defaults
    "junk_tokens": 0.04,  # "image tid 25&id mggqpuweqdpd&cache 0&lan code 0" (the paper's example)
    "small_image": 0.04,  # icons and buttons with their navigation text
    "banner": 0.03,  # advertising banners with ad copy
    "broken_file": 0.01,
    "dead_url": 0.01,
    "eval_near_duplicate": 0.03,  # held-out images re-published (resized, recompressed) with a true caption
    "nsfw_caption": 0.02,
}
SHARED_CAPTION_IMAGES = 25  # one caption on many images
SHARED_CAPTION = "click here to enlarge this photo now"
# One image with hundreds of captions: a shop's "no image" placeholder under the names of the products it stands
# in for, i.e. descriptions of scenes it does not show. Scaled to the demo (see demo --max-texts-per-image).
MANY_CAPTIONS = 150
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
NSFW_SPAM = ("free videos in hd", "hot pics of the day", "live cams tonight", "best free clips")
SHORT = ("image", "photo", "logo", "thumbnail", "view larger", "picture", "click here")
NAVIGATION = ("share this on facebook", "follow us on twitter", "back to the top", "go to the home page",
              "subscribe to our newsletter", "print this article", "search this site", "rss feed icon")
SALES = ("summer sale", "black friday deals", "clearance sale", "new arrivals", "flash sale")
KEYWORDS = ("buy shapes online", "cheap", "best price", "free shipping", "shapes store", "discount", "hd")


@dataclass
class SyntheticWeb:
    rows: list[dict] = field(default_factory=list)  # {"path", "caption", "kind", "label"}
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # path -> (body, content type)
    eval_set: list[dict] = field(default_factory=list)  # {"id", "scene", "caption", "image": bytes}


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _junk(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(rng.randint(5, 9)))


def junk_caption(scene: Scene, rng: random.Random) -> str:
    """Text with tokens seen nowhere else: mostly URL and CMS debris, sometimes a product code in a caption."""
    form = rng.randrange(3)
    if form == 0:
        return f"image tid {rng.randint(1, 99)}&id {_junk(rng)}&cache 0&lan code {rng.randint(0, 9)}"
    if form == 1:
        return f"{_junk(rng)} {_junk(rng)} jpg {rng.randint(100, 9999)}"
    return f"{caption(scene, rng)} sku {_junk(rng)}"


def keyword_stuffing(rng: random.Random) -> str:
    """An over-long alt text listing what a shop sells (more than 20 words), not what the image shows."""
    words: list[str] = []
    while len(words) <= 24:
        words += rng.choice((f"{rng.choice(list(COLOURS))} {rng.choice(SHAPES)}", rng.choice(KEYWORDS))).split()
    return " ".join(words)


def icon(rng: random.Random) -> Image.Image:
    """A button or icon: one flat shape on a flat square, 24-150 px."""
    size = rng.randint(24, 150)
    img = Image.new("RGB", (size, size), rng.choice(((255, 255, 255), (59, 89, 152), (29, 161, 242), (40, 40, 40))))
    img.paste(Image.new("RGB", (size, size), (250, 250, 250)), (0, 0), shape_mask(rng.choice(SHAPES), size))
    return img


def placeholder() -> Image.Image:
    """A shop's grey "no image" picture."""
    img = Image.new("RGB", (400, 400), (225, 225, 225))
    d = ImageDraw.Draw(img)
    d.rectangle([120, 130, 280, 270], outline=(160, 160, 160), width=8)
    d.polygon([(135, 255), (190, 185), (225, 230), (245, 205), (265, 255)], fill=(170, 170, 170))
    return img


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
            image_row(kind, keyword_stuffing(rng), img, scene)
        elif kind == "boilerplate":
            image_row(kind, rng.choice(BOILERPLATE), img, scene)
        elif kind == "junk_tokens":
            image_row(kind, junk_caption(scene, rng), img, scene)
        elif kind == "small_image":
            image_row(kind, rng.choice(NAVIGATION), icon(rng), None)
        elif kind == "banner":
            ad = f"{rng.choice(SALES)} up to {rng.choice((20, 30, 40, 50, 70))} percent off today shop now"
            image_row(kind, ad, draw(scene, rng.randint(900, 1200), rng.randint(210, 280)), None)
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
            image_row(kind, f"{rng.choice(NSFW_WORDS)} {rng.choice(NSFW_SPAM)}", img, None)

    for _ in range(SHARED_CAPTION_IMAGES):
        scene, img = fresh()
        image_row("shared_caption", SHARED_CAPTION, img, scene)
    path = f"/img/{len(web.rows):06d}.jpg"
    web.files[path] = (jpeg(placeholder()), "image/jpeg")
    for _ in range(MANY_CAPTIONS):  # the same image URL under many different captions
        web.rows.append({"path": path, "caption": caption(sample_scene(rng), rng), "kind": "many_captions",
                         "label": None})
    return web
