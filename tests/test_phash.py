"""perceptual_hash must return exactly what it returned when it called imagehash.phash: eval-set indexes built
with that function have to keep matching, so not one bit may change. ``reference_hash`` below is that code."""

from __future__ import annotations


import imagehash
import numpy as np
import pytest
import scipy.fftpack
from helpers import COCO, needs_coco
from PIL import Image

from aligndata.filters import image as image_module
from aligndata.filters.image import _PHASH_PRESHRINK, box_reduce, perceptual_hash, perceptual_hash_pixels

LANCZOS = Image.Resampling.LANCZOS


def reference_hash(image: Image.Image, hash_size: int = 8) -> str:
    """perceptual_hash as it was before it computed the DCT itself (do not change: it is the specification)."""
    factor = min(image.size) // (4 * hash_size * _PHASH_PRESHRINK)
    if factor >= 2:
        image = image.reduce(factor)
    return str(imagehash.phash(image, hash_size=hash_size))


def assert_same(images, hash_size: int = 8) -> None:
    """perceptual_hash equals the reference on each image, and so does perceptual_hash_pixels on each RGB one."""
    mismatches = []
    for i, image in enumerate(images):
        expected = reference_hash(image, hash_size)
        if perceptual_hash(image, hash_size) != expected:
            mismatches.append((i, image.mode, image.size))
        elif image.mode == "RGB" and perceptual_hash_pixels(np.asarray(image), hash_size) != expected:
            mismatches.append((i, "pixels", image.size))
    assert not mismatches, mismatches[:10]


def test_box_reduce_is_pillows_reduce():
    """Every shape class Reduce.c treats apart: full boxes, a partial last row and/or column, boxes larger than
    the image, factors odd and even, flat extremes (255 everywhere: the rounding's upper edge) and noise."""
    rng = np.random.default_rng(11)
    cases = [(h, w, f) for f in (2, 3, 7, 8, 13) for h, w in ((f * 9, f * 5), (f * 9 + 1, f * 5 + f - 1), (f - 1, 3))]
    cases += [(int(rng.integers(1, 900)), int(rng.integers(1, 900)), int(rng.integers(2, 60))) for _ in range(150)]
    cases += [(300, 270, 256), (300, 270, 257)]  # the largest factor on arrays, and Pillow's own beyond it
    for i, (h, w, f) in enumerate(cases):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if i % 4 else np.full((h, w, 3), 255 - i % 8, np.uint8)
        expected = np.asarray(Image.fromarray(pixels).reduce(f))
        got = box_reduce(pixels, f)
        assert got.shape == expected.shape and np.array_equal(got, expected), (h, w, f)


def synthetic_array(rng: np.random.Generator, kind: int, width: int, height: int) -> np.ndarray:
    shape = (height, width, 3)
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    if kind == 0:  # noise
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == 1:  # gradients in random directions, per channel
        a, b = rng.random((2, 3), dtype=np.float32)
        return (127 * a * x).astype(np.uint8) + (127 * b * y).astype(np.uint8)
    if kind == 2:  # flat: every AC coefficient ties at zero
        return np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), shape)
    if kind == 3:  # blocks of flat colour
        blocks = rng.integers(0, 256, (int(rng.integers(1, 9)), int(rng.integers(1, 9)), 3), dtype=np.uint8)
        return np.asarray(Image.fromarray(blocks).resize((width, height), Image.Resampling.NEAREST))
    if kind == 4:  # mirror-symmetric noise: the odd horizontal frequencies tie at zero
        half = rng.integers(0, 256, (height, (width + 1) // 2, 3), dtype=np.uint8)
        return np.concatenate([half, half[:, ::-1]], axis=1)[:, :width]
    if kind == 5:  # stripes and checkerboards
        period, across = int(rng.integers(1, 12)), int(rng.integers(0, 2))
        columns = (np.arange(width)[None, :, None] // period % 2).astype(np.uint8)
        rows = (np.arange(height)[:, None, None] // period % 2 * across).astype(np.uint8)
        return (columns ^ rows) * rng.integers(0, 256, 3, dtype=np.uint8)
    if kind == 6:  # low-contrast noise on a gradient: close coefficients
        return (100 + 20 * x).astype(np.uint8) + (10 * y).astype(np.uint8) + rng.integers(0, 3, shape, dtype=np.uint8)
    # smooth random field: upsampled noise
    small = rng.integers(0, 256, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def synthetic_size(rng: np.random.Generator, i: int) -> tuple[int, int]:
    which = i % 10
    if which < 4:  # tiny, no reduce(): resize enlarges or barely shrinks
        return int(rng.integers(1, 70)), int(rng.integers(1, 70))
    if which < 8:  # reduce() by 2..6
        return int(rng.integers(64, 420)), int(rng.integers(64, 420))
    if which == 8:  # extreme aspect ratios, both ways (some over 100:1)
        long, short = int(rng.integers(200, 2600)), int(rng.integers(1, 40))
        return (long, short) if rng.random() < 0.5 else (short, long)
    return int(rng.integers(400, 800)), int(rng.integers(400, 800))  # larger reduce() factors


def synthetic_images(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(count):
        width, height = synthetic_size(rng, i)
        yield Image.fromarray(np.ascontiguousarray(synthetic_array(rng, i % 8, width, height)))


def test_synthetic_images_hash_exactly_as_before():
    assert_same(synthetic_images(2000))


@pytest.mark.parametrize("hash_size", [2, 3, 5, 16])
def test_other_hash_sizes_hash_exactly_as_before(hash_size):
    assert_same(synthetic_images(80, seed=hash_size), hash_size)


def test_flat_images_hash_exactly_as_before():
    # All 63 AC coefficients are 0 in exact arithmetic, so each bit is decided by rounding noise: the fast path
    # cannot know it, the fallback (scipy's DCT, as imagehash) must be taken.
    flats = [Image.new("RGB", size, colour) for size in [(1, 1), (32, 32), (33, 33), (640, 480), (7, 300)]
             for colour in [(0, 0, 0), (255, 255, 255), (128, 64, 3), (1, 1, 1)]]
    assert_same(flats)
    assert_same(flats[:8], hash_size=16)
    assert perceptual_hash(Image.new("RGB", (64, 64))) == reference_hash(Image.new("RGB", (64, 64)))


def test_near_ties_fall_back_to_scipys_dct(monkeypatch):
    calls = []
    dct = scipy.fftpack.dct
    monkeypatch.setattr(scipy.fftpack, "dct", lambda *a, **k: calls.append(1) or dct(*a, **k))
    perceptual_hash(Image.new("RGB", (640, 480), (10, 200, 30)))
    assert calls  # a flat image ties: scipy's DCT decides
    calls.clear()
    noise = [image for i, image in enumerate(synthetic_images(400, seed=7)) if i % 8 == 0 and min(image.size) >= 8]
    for image in noise:  # random noise comes nowhere near a tie: the fast path decides
        perceptual_hash(image)
    assert len(noise) > 20 and not calls


def test_the_fallback_alone_also_matches(monkeypatch):
    monkeypatch.setattr(image_module, "_PHASH_MARGIN", float("inf"))  # always take scipy's DCT
    assert_same(synthetic_images(200, seed=3))


def test_fast_dct_is_far_inside_the_margin():
    """The fast DCT and scipy's differ by rounding only: measure it against the margin that guards the bits."""
    worst = 0.0
    cosines = image_module._dct_cosines(32, 8)
    for image in synthetic_images(300, seed=5):
        pixels = np.asarray(image.convert("L").resize((32, 32), LANCZOS))
        exact = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:8, :8]
        worst = max(worst, float(np.abs(cosines @ pixels.astype(np.float64) @ cosines.T - exact).max()))
    margin = image_module._PHASH_MARGIN * 4 * 255 * 32 * 32
    assert worst < margin / 1e5  # measured ~2e-10 against ~1e-3


def test_other_modes_hash_exactly_as_before():
    rng = np.random.default_rng(2)
    rgb = [Image.fromarray(synthetic_array(rng, kind, w, h)) for kind, (w, h) in
           zip(range(8), [(300, 200), (130, 140), (64, 64), (500, 90), (41, 77), (200, 600), (90, 90), (140, 130)])]
    converted = [image.convert(mode) for image in rgb for mode in ("L", "LA", "RGBA", "RGBX", "CMYK", "I", "F")]
    small = [image.resize((100, 70)) for image in rgb]  # reduce() refuses "P" and "1": only small ones hash
    converted += [image.convert("P", palette=Image.Palette.ADAPTIVE) for image in small]
    converted += [image.convert("1") for image in small] + [image.convert("I;16") for image in small]
    assert_same(converted)


def test_errors_are_the_same():
    for image, hash_size in [(Image.new("P", (640, 480)), 8), (Image.new("RGB", (64, 64)), 1)]:
        with pytest.raises(ValueError) as old:
            reference_hash(image, hash_size)
        with pytest.raises(ValueError) as new:
            perceptual_hash(image, hash_size)
        assert str(new.value) == str(old.value)


@needs_coco
def test_real_photos_hash_exactly_as_before():
    paths = sorted(COCO.glob("*.jpg"))
    assert paths
    rng = np.random.default_rng(0)
    photos = []
    for path in paths:
        with Image.open(path) as opened:
            photo = opened.convert("RGB")
        w, h = photo.size
        crop = photo.crop((int(rng.integers(0, w // 20)), int(rng.integers(0, h // 20)), w, h))
        photos += [photo, crop.resize((640, 480) if w >= h else (480, 640), Image.Resampling.BICUBIC)]
    assert_same(photos)
    assert_same(photos[::8], hash_size=16)
