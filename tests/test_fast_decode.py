"""The array path of the image stage (images/fast_decode.py, resize_pixels.py, encode_pixels.py) against Pillow's.

Decoding must give Pillow's pixels exactly (so the stored pHash does not change), fall back to Pillow for whatever
libjpeg-turbo is not given or refuses (same errors, same details), and the default resize must be at least as
close as Pillow's to a float64 reference of each filter (aligndata.images.resample_reference).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import COCO, encode, needs_coco
from PIL import Image

from aligndata.filters.image import DecodeError, decode_image, perceptual_hash
from aligndata.images.encode import encode_image
from aligndata.images.encode_pixels import encode_pixels
from aligndata.images.fast_decode import decode_pixels
from aligndata.images.geometry import RESIZE_MODES, plan_resize
from aligndata.images.process import RESAMPLE_FILTERS, ImageConfig, process_image, resize_image
from aligndata.images.resample_reference import psnr, reference_resize
from aligndata.images.resize_pixels import resize_pixels

DRAFT = (346, 346)


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth photo-like content with edges: a blurred noise field plus a few hard-edged blocks."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    for _ in range(4):
        x, y = int(rng.integers(width)), int(rng.integers(height))
        image.paste(tuple(int(v) for v in rng.integers(0, 256, 3)), (x, y, x + width // 6, y + height // 6))
    return image


@pytest.fixture(scope="module")
def coco_photos() -> list[bytes]:
    return [p.read_bytes() for p in sorted(COCO.glob("*.jpg"))]


def assert_same_decode(data: bytes, draft_size=DRAFT) -> None:
    fast = decode_pixels(data, draft_size=draft_size)
    slow = decode_image(data, draft_size=draft_size)
    assert np.array_equal(fast.pixels, np.asarray(slow.image))
    assert (fast.original_width, fast.original_height, fast.format) == \
        (slow.original_width, slow.original_height, slow.format)
    assert fast.pixels.flags.c_contiguous and fast.pixels.dtype == np.uint8 and fast.pixels.shape[2] == 3


# ------------------------------------------------------------------------------------------- same pixels


@pytest.mark.parametrize("size", [(640, 480), (700, 700), (1024, 768), (1500, 1100), (2048, 1536), (2900, 2800),
                                  (300, 250), (691, 1200)])
def test_jpeg_pixels_match_pillow_at_every_draft_scale(size):
    assert_same_decode(encode(photo(*size), "JPEG", quality=88))


@pytest.mark.parametrize("save", [{"progressive": True}, {"subsampling": 0}, {"subsampling": 1}, {"quality": 40}])
def test_jpeg_variants_match_pillow(save):
    assert_same_decode(encode(photo(900, 700, seed=1), "JPEG", **save))


def test_greyscale_jpeg_matches_pillow():
    assert_same_decode(encode(photo(800, 720).convert("L"), "JPEG"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo(760, 720), "JPEG", quality=90, exif=exif.tobytes())
    assert_same_decode(data)
    assert_same_decode(data, draft_size=None)


def test_no_draft_request_decodes_full_size():
    data = encode(photo(1400, 1000), "JPEG")
    assert decode_pixels(data, draft_size=None).pixels.shape == (1000, 1400, 3)
    assert decode_pixels(data, draft_size=DRAFT).pixels.shape == (500, 700, 3)


@needs_coco
def test_real_photos_decode_to_pillows_pixels(coco_photos):
    for data in coco_photos:
        assert_same_decode(data)


# ------------------------------------------------------------------------------------ Pillow's fallbacks


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_other_formats_decode_through_pillow(fmt):
    image = photo(400, 300)
    assert_same_decode(encode(image.quantize(64) if fmt == "GIF" else image, fmt))


def test_cmyk_jpeg_goes_through_pillow():
    assert_same_decode(encode(photo(500, 400).convert("CMYK"), "JPEG", quality=95))


def test_transparent_png_is_composited_on_white_as_before():
    image = Image.new("RGBA", (300, 300), (255, 0, 0, 0))
    assert decode_pixels(encode(image, "PNG")).pixels[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_jpeg_fails_with_pillows_detail(cut):
    data = encode(photo(800, 600), "JPEG")
    data = data[: int(len(data) * cut)]
    with pytest.raises(DecodeError) as slow:
        decode_image(data, draft_size=DRAFT)
    with pytest.raises(DecodeError) as fast:
        decode_pixels(data, draft_size=DRAFT)
    assert fast.value.detail == slow.value.detail


def test_corrupt_scan_data_ends_as_pillow_decides():
    data = bytearray(encode(photo(800, 600), "JPEG"))
    middle = len(data) // 2
    data[middle:middle + 400] = bytes(range(200)) * 2  # garbage inside the entropy-coded scan
    data = bytes(data)
    try:
        expected = np.asarray(decode_image(data, draft_size=DRAFT).image)
    except DecodeError as err:
        with pytest.raises(DecodeError) as fast:
            decode_pixels(data, draft_size=DRAFT)
        assert fast.value.detail == err.detail
    else:
        assert np.array_equal(decode_pixels(data, draft_size=DRAFT).pixels, expected)


def test_pixel_bomb_is_refused_before_libjpeg_sees_it():
    data = encode(photo(400, 300), "JPEG")
    with pytest.raises(DecodeError, match="decompression_bomb:400x300"):
        decode_pixels(data, max_pixels=400 * 300 - 1)


def test_a_jpeg_whose_frame_header_disagrees_with_pillows_is_left_to_pillow():
    data = bytearray(encode(photo(400, 300), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (30000).to_bytes(2, "big") + (30000).to_bytes(2, "big")  # height, width
    data = bytes(data)
    with pytest.raises(DecodeError) as slow:
        decode_image(data, max_pixels=10_000_000)
    with pytest.raises(DecodeError) as fast:
        decode_pixels(data, max_pixels=10_000_000)
    assert fast.value.detail == slow.value.detail


# ----------------------------------------------------------------------------------------- pHash, bytes


@needs_coco
def test_phash_is_bit_identical_to_the_pillow_path_on_real_photos(coco_photos):
    """process_image's stored pHash equals the one the Pillow decode gave, on COCO's photos as they are and upscaled
    to sizes where the 1/2 and 1/4 DCT scales apply."""
    cfg = ImageConfig()
    inputs = list(coco_photos)
    for data in coco_photos[:12]:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        for scale in (2, 3.3):
            big = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
            inputs.append(encode(big, "JPEG", quality=90))
    checked = 0
    for data in inputs:
        outcome = process_image(data, cfg)
        if outcome.phash is None:  # too small for ALIGN's rules: no hash stored either way
            continue
        assert outcome.phash == perceptual_hash(decode_image(data, draft_size=cfg.draft_size()).image)
        checked += 1
    assert checked > 150


@pytest.mark.parametrize("quality", [1, 50, 75, 90, 95, 100])
def test_jpeg_bytes_equal_pillows_for_the_same_pixels(quality):
    pixels = np.asarray(photo(461, 346))
    assert encode_pixels(pixels, "jpg", quality) == encode_image(Image.fromarray(pixels), "jpg", quality)


@pytest.mark.parametrize("fmt", ["webp", "png"])
def test_webp_and_png_bytes_equal_pillows(fmt):
    pixels = np.asarray(photo(200, 150))
    assert encode_pixels(pixels, fmt, 90) == encode_image(Image.fromarray(pixels), fmt, 90)


def test_encode_pixels_refuses_bad_options():
    with pytest.raises(ValueError, match="unknown encode format 'gif'"):
        encode_pixels(np.zeros((4, 4, 3), np.uint8), "gif")
    with pytest.raises(ValueError, match="quality"):
        encode_pixels(np.zeros((4, 4, 3), np.uint8), "jpg", 0)


def test_outputs_are_deterministic():
    data = encode(photo(1200, 900), "JPEG")
    first, second = process_image(data, ImageConfig()), process_image(data, ImageConfig())
    assert first.image_bytes == second.image_bytes and first.phash == second.phash


# ------------------------------------------------------------------------------------------ sizes, quality


@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize("size", [(800, 600), (600, 800), (347, 1000), (2500, 1300), (300, 250), (346, 346)])
@pytest.mark.parametrize("only_downscale", [True, False])
def test_array_resize_gives_the_pillow_paths_sizes(mode, size, only_downscale):
    image = photo(*size)
    expected = resize_image(image, mode, 346, only_downscale, resample="bilinear")  # the Pillow path
    plan = plan_resize(*size, mode, 346, only_downscale)
    out = resize_pixels(np.asarray(image), plan)
    assert (out.shape[1], out.shape[0]) == expected.size


def test_border_and_crop_on_arrays_match_pillow_geometry():
    image = Image.new("RGB", (800, 400), (255, 255, 255))
    padded = resize_pixels(np.asarray(image), plan_resize(800, 400, "border", 200), border_color=(0, 128, 0))
    assert padded.shape == (200, 200, 3)
    assert padded[10, 100].tolist() == [0, 128, 0] and padded[190, 100].tolist() == [0, 128, 0]
    assert padded[100, 100].tolist() == [255, 255, 255]
    wide = Image.new("RGB", (900, 300), (0, 0, 255))
    wide.paste(Image.new("RGB", (300, 300), (255, 0, 0)), (300, 0))
    cropped = resize_pixels(np.asarray(wide), plan_resize(900, 300, "center_crop", 150))
    assert cropped.shape == (150, 150, 3) and cropped[75, 2].tolist() == [255, 0, 0]


def _todays_pillow(image: Image.Image, new_size, filter_name: str) -> np.ndarray:
    """The resize process_image did before the array path: Pillow, BOX for area."""
    resample = RESAMPLE_FILTERS[filter_name]
    if filter_name == "area":
        return np.asarray(image.resize(new_size, resample))
    return np.asarray(image.resize(new_size, resample, reducing_gap=2.0))


def _chain_resize(pixels: np.ndarray, filter_name: str) -> np.ndarray:
    """What process_image does now for this filter (keep_ratio to 346)."""
    image = Image.fromarray(pixels)
    if filter_name == "area":
        return resize_pixels(pixels, plan_resize(image.width, image.height, "keep_ratio", 346), image=image)
    return np.asarray(resize_image(image, "keep_ratio", 346, resample=filter_name))


@needs_coco
@pytest.mark.parametrize("filter_name", list(RESAMPLE_FILTERS))
def test_every_filter_is_at_least_as_close_to_the_reference_as_pillow_was(coco_photos, filter_name):
    """PSNR against the float64 reference of the same decoded pixels, per photo and on average: COCO photos as the
    pipeline decodes them (640x480-ish: shrink 1.2-1.4x), at 2x (the 1/2 draft: 1024x768-ish) and a PNG-like 3.1x
    (no draft: the integer reduce then the last step)."""
    cases = []
    for i, data in enumerate(coco_photos[:10]):
        decoded = decode_pixels(data, draft_size=DRAFT)
        if min(decoded.pixels.shape[:2]) > 346:
            cases.append(decoded.pixels)
        image = Image.fromarray(decoded.pixels)
        # the reference is a dense float64 product: a few large cases, and only for the filter whose path changed
        if i < 3 and filter_name == "area":
            big = image.resize((round(image.width * 2.05), round(image.height * 2.05)), Image.Resampling.BICUBIC)
            cases.append(decode_pixels(encode(big, "JPEG", quality=92), draft_size=DRAFT).pixels)
            cases.append(np.asarray(image.resize((round(image.width * 3.1), round(image.height * 3.1)))))
    ours, theirs = [], []
    for pixels in cases:
        new = _chain_resize(pixels, filter_name)
        old = _todays_pillow(Image.fromarray(pixels), (new.shape[1], new.shape[0]), filter_name)
        reference = reference_resize(pixels, new.shape[1], new.shape[0], filter_name)
        ours.append(psnr(new, reference))
        theirs.append(psnr(old, reference))
        assert ours[-1] >= theirs[-1] - 1e-9, (pixels.shape, ours[-1], theirs[-1])
    assert np.mean(ours) >= np.mean(theirs)
    assert len(cases) >= (12 if filter_name == "area" else 6)
