"""A small learnable world for the demo: scenes of coloured, textured shapes and captions that describe them.

A scene has a shape, a colour, a count (1-3), a position, a texture and a background. Images are drawn with
Pillow at web-like sizes with background clutter, so codecs, resizing and perceptual hashes see photo-like
content; captions describe the scene in varied natural phrasing, so a dual encoder has something to learn.
The zero-shot classes are (colour, shape) pairs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "ring", "diamond")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "ring": "rings",
           "diamond": "diamonds"}
COLOURS = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "yellow": (240, 205, 30),
    "purple": (148, 70, 189),
    "orange": (255, 127, 14),
}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
POSITIONS = ("left", "right", "top", "bottom", "middle")
TEXTURES = ("plain", "striped", "dotted")
BACKGROUNDS = {
    "grass": (96, 140, 70),
    "sand": (214, 196, 150),
    "sky": (150, 190, 235),
    "stone": (128, 128, 128),
    "night": (30, 32, 60),
}
IMAGE_SIZES = ((640, 480), (480, 640), (512, 384), (400, 400), (600, 450), (360, 480))

POSITION_PHRASES = {
    "left": ("on the left", "at the left side", "to the left"),
    "right": ("on the right", "at the right side", "to the right"),
    "top": ("near the top", "at the top", "up high"),
    "bottom": ("near the bottom", "at the bottom", "down low"),
    "middle": ("in the middle", "in the centre", "right in the center"),
}
BACKGROUND_PHRASES = {
    "grass": ("on green grass", "over a grassy field", "on a lawn"),
    "sand": ("on sand", "on a sandy beach", "over sand"),
    "sky": ("against a blue sky", "in the sky", "against the sky"),
    "stone": ("on grey stone", "on a stone wall", "over concrete"),
    "night": ("at night", "on a dark night background", "in the dark"),
}
TEMPLATES = (
    "{count} {texture}{colour} {shapes} {position} {background}",
    "a photo of {count} {colour} {shapes} {background}",
    "{count} {colour} {shapes} {position}",
    "picture showing {count} {texture}{colour} {shapes} {position}",
    "{background_cap} with {count} {colour} {shapes} {position}",
    "there are {count} {colour} {shapes} {position} of the picture",
    "close view of {count} {texture}{colour} {shapes} {background}",
)
PROMPTS = ("a photo of a {}.", "a picture of a {}.", "{} in a scene.", "an image showing a {}.")


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    count: int
    position: str
    texture: str
    background: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


def class_names() -> list[str]:
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def sample_scene(rng: random.Random) -> Scene:
    return Scene(
        shape=rng.choice(SHAPES),
        colour=rng.choice(list(COLOURS)),
        count=rng.choice((1, 2, 3)),
        position=rng.choice(POSITIONS),
        texture=rng.choice(TEXTURES),
        background=rng.choice(list(BACKGROUNDS)),
        seed=rng.randrange(1 << 30),
    )


def caption(scene: Scene, rng: random.Random) -> str:
    """A natural description of the scene (5-14 words), one of several phrasings."""
    shapes = scene.shape if scene.count == 1 else PLURALS[scene.shape]
    texture = "" if scene.texture == "plain" else f"{scene.texture} "
    background = rng.choice(BACKGROUND_PHRASES[scene.background])
    text = rng.choice(TEMPLATES).format(
        count="a" if scene.count == 1 and rng.random() < 0.5 else COUNT_WORDS[scene.count],
        texture=texture,
        colour=scene.colour,
        shapes=shapes,
        position=rng.choice(POSITION_PHRASES[scene.position]),
        background=background,
        background_cap=f"a scene {background}",
    )
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


def _region(position: str, width: int, height: int) -> tuple[int, int, int, int]:
    w3, h3 = width // 3, height // 3
    return {
        "left": (0, h3 // 2, w3, height - h3 // 2),
        "right": (width - w3, h3 // 2, width, height - h3 // 2),
        "top": (w3 // 2, 0, width - w3 // 2, h3),
        "bottom": (w3 // 2, height - h3, width - w3 // 2, height),
        "middle": (w3, h3, width - w3, height - h3),
    }[position]


def shape_mask(shape: str, size: int) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    s = size - 1
    if shape == "circle":
        d.ellipse([0, 0, s, s], fill=255)
    elif shape == "square":
        d.rectangle([s * 0.1, s * 0.1, s * 0.9, s * 0.9], fill=255)
    elif shape == "triangle":
        d.polygon([(0, s), (s, s), (s / 2, 0)], fill=255)
    elif shape == "diamond":
        d.polygon([(s / 2, 0), (s, s / 2), (s / 2, s), (0, s / 2)], fill=255)
    elif shape == "ring":
        d.ellipse([0, 0, s, s], fill=255)
        d.ellipse([s * 0.3, s * 0.3, s * 0.7, s * 0.7], fill=0)
    else:  # star
        d.regular_polygon((s / 2, s / 2, s / 2), 5, fill=255)
        d.regular_polygon((s / 2, s / 2, s / 2), 5, rotation=36, fill=255)
    return mask


def _fill(texture: str, colour: tuple[int, int, int], size: int) -> Image.Image:
    fill = Image.new("RGB", (size, size), colour)
    if texture == "plain":
        return fill
    d = ImageDraw.Draw(fill)
    dark = tuple(int(c * 0.45) for c in colour)
    step = max(4, size // 7)
    if texture == "striped":
        for x in range(-size, size, step):
            d.line([(x, 0), (x + size, size)], fill=dark, width=max(2, step // 3))
    else:
        for y in range(step // 2, size, step):
            for x in range(step // 2, size, step):
                r = max(1, step // 5)
                d.ellipse([x - r, y - r, x + r, y + r], fill=dark)
    return fill


def _background(base: tuple[int, int, int], width: int, height: int, rng: random.Random) -> Image.Image:
    """The background's colour with a random tint and a random-direction gradient, so two scenes on the same
    background differ in their coarse structure too (what perceptual hashes look at), as real photos do."""
    tint = [rng.randint(-35, 35) for _ in range(3)]
    top = tuple(min(255, max(0, c + t + rng.randint(-25, 25))) for c, t in zip(base, tint))
    bottom = tuple(min(255, max(0, c + t + rng.randint(-25, 25))) for c, t in zip(base, tint))
    gradient = Image.linear_gradient("L").resize((width, height)).rotate(rng.choice((0, 90, 180, 270)),
                                                                          expand=False)
    return Image.composite(Image.new("RGB", (width, height), top), Image.new("RGB", (width, height), bottom),
                           gradient)


def draw(scene: Scene, width: int, height: int) -> Image.Image:
    rng = random.Random(scene.seed)
    base = BACKGROUNDS[scene.background]
    img = _background(base, width, height, rng)
    d = ImageDraw.Draw(img)
    for _ in range(60):  # clutter, so images look photo-like to codecs and hashes
        x, y, r = rng.randrange(width), rng.randrange(height), rng.randint(3, 25)
        shade = tuple(min(255, max(0, c + rng.randint(-28, 28))) for c in base)
        d.ellipse([x - r, y - r, x + r, y + r], fill=shade)
    x0, y0, x1, y1 = _region(scene.position, width, height)
    size = max(24, int(min(width, height) * rng.uniform(0.32, 0.42)))  # big enough to see at 64 px
    colour = tuple(min(255, max(0, c + rng.randint(-15, 15))) for c in COLOURS[scene.colour])
    mask = shape_mask(scene.shape, size)
    fill = _fill(scene.texture, colour, size)
    for i in range(scene.count):
        cx = x0 + (x1 - x0) * (i + 1) // (scene.count + 1)
        cy = rng.randint(y0 + size // 2, max(y0 + size // 2, y1 - size // 2))
        img.paste(fill, (cx - size // 2, cy - size // 2), mask)
    return img


def random_size(rng: random.Random) -> tuple[int, int]:
    return rng.choice(IMAGE_SIZES)
