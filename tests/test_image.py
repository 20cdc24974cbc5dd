"""Safe decoding, ALIGN's image rules, resizing/encoding and the per-image chain, on real images made with Pillow."""

from __future__ import annotations

import hashlib
import io
import random
import re
import warnings
from concurrent.futures import ThreadPoolExecutor

import imagehash
import pytest
from helpers import COCO, encode, png_header_only
from PIL import Image, ImageOps

from aligndata.filters import reasons
from aligndata.filters.image import (
    DecodeError,
    decode_image,
    image_size_reason,
    perceptual_hash,
    to_rgb,
)
from aligndata.images.process import (
    EXTENSIONS,
    ImageConfig,
    encode_image,
    process_image,
    resize_image,
)

def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: gradient plus noise blocks, so JPEG has real content to code."""
    rng = random.Random(seed)
    base = Image.linear_gradient("L").resize((width, height))
    channels = [base.point(lambda v, k=rng.uniform(0.3, 1.0): int(v * k)) for _ in range(3)]
    image = Image.merge("RGB", channels)
    for _ in range(6):
        x, y = rng.randrange(width), rng.randrange(height)
        block = Image.new("RGB", (max(1, width // 5), max(1, height // 5)), tuple(rng.randrange(256) for _ in range(3)))
        image.paste(block, (x, y))
    return image


def close_to(pixel, expected, tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected))


# ----------------------------------------------------------------------------------------------- decoding


def test_rgb_jpeg_decodes_with_its_size_and_format():
    decoded = decode_image(encode(photo(320, 240), "JPEG"))
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (320, 240)
    assert (decoded.original_width, decoded.original_height) == (320, 240)
    assert decoded.format == "JPEG"


def test_rgba_alpha_is_composited_on_white():
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent red -> white
    image.putpixel((1, 0), (0, 0, 0, 128))  # half transparent black -> mid grey
    image.putpixel((2, 0), (0, 0, 255, 255))  # opaque blue stays blue
    rgb = decode_image(encode(image, "PNG")).image
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert close_to(rgb.getpixel((1, 0)), (127, 127, 127), tolerance=1)
    assert rgb.getpixel((2, 0)) == (0, 0, 255)


def test_la_transparent_pixel_becomes_white():
    image = Image.new("LA", (2, 1), (0, 0))
    image.putpixel((1, 0), (30, 255))
    rgb = decode_image(encode(image, "PNG")).image
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 0)) == (30, 30, 30)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_index_becomes_white(fmt):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    data = encode(image, fmt, transparency=0)
    assert Image.open(io.BytesIO(data)).info.get("transparency") == 0
    rgb = decode_image(data).image
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 0)) == (200, 10, 10)


def test_rgb_with_transparent_colour_key_becomes_white():
    image = Image.new("RGB", (2, 1), (255, 0, 0))
    image.putpixel((1, 0), (0, 0, 255))
    rgb = decode_image(encode(image, "PNG", transparency=(255, 0, 0))).image
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 0)) == (0, 0, 255)


def test_pa_and_premultiplied_modes_composite_on_white():
    pa_image = Image.new("PA", (1, 1))
    pa_image.putpalette([10, 20, 30] + [0] * 765)
    pa_image.putpixel((0, 0), (0, 0))
    assert to_rgb(pa_image).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("La", (1, 1), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("RGBa", (1, 1), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb():
    red_in_cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))
    rgb = decode_image(encode(red_in_cmyk, "JPEG", quality=95)).image
    assert rgb.mode == "RGB"
    assert close_to(rgb.getpixel((32, 32)), (255, 0, 0), tolerance=20)


def test_16bit_png_is_scaled_not_clipped():
    image = Image.new("I;16", (3, 1))
    image.putpixel((0, 0), 65535)
    image.putpixel((1, 0), 32896)  # 128 * 257
    image.putpixel((2, 0), 0)
    data = encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    rgb = decode_image(data).image
    assert [rgb.getpixel((x, 0)) for x in range(3)] == [(255,) * 3, (128,) * 3, (0,) * 3]


def test_32bit_int_and_float_tiffs_are_scaled():
    wide = Image.new("I", (2, 1))
    wide.putpixel((0, 0), 65535)
    wide.putpixel((1, 0), 0)
    assert [decode_image(encode(wide, "TIFF")).image.getpixel((x, 0)) for x in range(2)] == [(255,) * 3, (0,) * 3]
    unit = Image.new("F", (2, 1))
    unit.putpixel((0, 0), 1.0)
    unit.putpixel((1, 0), 0.5)
    rgb = decode_image(encode(unit, "TIFF")).image
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 0)) in ((127, 127, 127), (128, 128, 128))


def test_one_bit_image_is_black_and_white():
    image = Image.new("1", (2, 1), 0)
    image.putpixel((1, 0), 1)
    rgb = decode_image(encode(image, "PNG")).image
    assert rgb.getpixel((0, 0)) == (0, 0, 0)
    assert rgb.getpixel((1, 0)) == (255, 255, 255)


def test_ycbcr_lab_and_hsv_modes_convert():
    assert close_to(to_rgb(Image.new("YCbCr", (1, 1), (128, 128, 128))).getpixel((0, 0)), (128, 128, 128), 2)
    assert close_to(to_rgb(Image.new("LAB", (1, 1), (255, 128, 128))).getpixel((0, 0)), (255, 255, 255), 3)
    assert close_to(to_rgb(Image.new("LAB", (1, 1), (0, 128, 128))).getpixel((0, 0)), (0, 0, 0), 3)
    assert to_rgb(Image.new("HSV", (1, 1), (0, 255, 255))).getpixel((0, 0)) == (255, 0, 0)


def _oriented_jpeg(width: int, height: int, orientation: int) -> bytes:
    """Stored width x height, grey, with a red block in the stored top-left corner."""
    image = Image.new("RGB", (width, height), (128, 128, 128))
    image.paste(Image.new("RGB", (width // 4, height // 4), (255, 0, 0)), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


@pytest.mark.parametrize(
    ("orientation", "red_corner"),
    [(6, "top_right"), (8, "bottom_left")],  # 6: rotate 90 clockwise to display; 8: 90 counter-clockwise
)
def test_exif_orientation_rotates_and_reports_displayed_size(orientation, red_corner):
    decoded = decode_image(_oriented_jpeg(400, 240, orientation))
    assert decoded.image.size == (240, 400)
    assert (decoded.original_width, decoded.original_height) == (240, 400)
    corners = {"top_right": (235, 5), "bottom_left": (5, 395)}
    assert close_to(decoded.image.getpixel(corners[red_corner]), (255, 0, 0), 25)
    assert close_to(decoded.image.getpixel((5, 5)), (128, 128, 128), 25)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow_exif_transpose(orientation):
    data = _oriented_jpeg(64, 32, orientation)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    decoded = decode_image(data)
    assert decoded.image.size == expected.size == (decoded.original_width, decoded.original_height)
    assert decoded.image.tobytes() == expected.tobytes()


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_broken_exif_is_ignored_not_fatal():
    data = encode(photo(300, 240), "JPEG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xffgarbage")
    decoded = decode_image(data)
    assert decoded.image.size == (300, 240) == (decoded.original_width, decoded.original_height)


def test_draft_decodes_small_but_reports_header_size_with_orientation():
    data = _oriented_jpeg(2000, 1000, 6)
    decoded = decode_image(data, draft_size=(346, 346))
    assert (decoded.original_width, decoded.original_height) == (1000, 2000)
    # scale min(2000 // 346, 1000 // 346) = 2 -> stored 1000x500, displayed 500x1000
    assert decoded.image.size == (500, 1000)
    assert min(decoded.image.size) >= 346


def test_draft_never_drops_a_side_below_the_request():
    for width, height in [(692, 692), (691, 1400), (2000, 1500), (3000, 1001)]:
        decoded = decode_image(encode(photo(width, height), "JPEG"), draft_size=(346, 346))
        assert min(decoded.image.size) >= 346, (width, height, decoded.image.size)
        assert (decoded.original_width, decoded.original_height) == (width, height)


def test_draft_is_ignored_for_non_jpeg():
    decoded = decode_image(encode(photo(800, 800), "PNG"), draft_size=(100, 100))
    assert decoded.image.size == (800, 800)


def _frames(fmt: str) -> bytes:
    frames = [Image.new("RGB", (40, 30), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animation_gives_its_first_frame(fmt):
    data = _frames(fmt)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    rgb = decode_image(data).image
    assert rgb.size == (40, 30)
    assert close_to(rgb.getpixel((20, 15)), (255, 0, 0), 10)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_fails_to_decode(fmt):
    data = encode(photo(400, 300), fmt)
    with pytest.raises(DecodeError) as err:
        decode_image(data[: len(data) // 2])
    assert err.value.detail == "truncated"


def test_a_broken_header_is_named_after_its_format():
    with pytest.raises(DecodeError) as err:
        decode_image(encode(photo(400, 300), "JPEG")[:20])
    assert err.value.detail == "bad_header:jpeg"


def test_pixel_bomb_is_refused_from_the_header_without_touching_pillow_globals():
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(DecodeError) as err:
        decode_image(png_header_only(40000, 40000))
    assert err.value.detail == "decompression_bomb:40000x40000"
    assert Image.MAX_IMAGE_PIXELS == before


def test_pixel_limit_is_per_call_and_inclusive():
    data = encode(photo(300, 200), "PNG")
    assert decode_image(data, max_pixels=300 * 200).image.size == (300, 200)
    with pytest.raises(DecodeError, match="decompression_bomb:300x200"):
        decode_image(data, max_pixels=300 * 200 - 1)


def test_limit_does_not_depend_on_pillow_warning_machinery():
    # 100 M pixels: Image.open would emit a DecompressionBombWarning; our own check refuses it silently.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DecodeError, match="decompression_bomb:10000x10000"):
            decode_image(png_header_only(10000, 10000))


def test_per_call_limits_hold_across_threads():
    data = encode(photo(300, 200), "PNG")
    limits = [300 * 200, 300 * 200 - 1] * 16

    def attempt(limit: int) -> bool:
        try:
            decode_image(data, max_pixels=limit)
            return True
        except DecodeError:
            return False

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, limits))
    assert results == [limit == 300 * 200 for limit in limits]


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", "empty"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "not_raster:svg"),
        (b"\xef\xbb\xbf  <svg width='400' height='400'></svg>", "not_raster:svg"),
        (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "not_raster:html"),
        (b"%PDF-1.4\n%...", "not_raster:pdf"),
        (bytes(random.Random(1).randrange(256) for _ in range(4096)), "unidentified_format"),
        (b"8BPS" + b"\0" * 60, "unsupported_format:psd"),  # Photoshop: Pillow knows it, we refuse it
    ],
)
def test_non_images_raise_a_named_decode_error(data, detail):
    with pytest.raises(DecodeError) as err:
        decode_image(data)
    assert err.value.detail == detail


def test_eps_is_never_handed_to_ghostscript():
    with pytest.raises(DecodeError) as err:
        decode_image(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 300 300\n")
    assert err.value.detail in ("unsupported_format:eps", "unidentified_format")


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "WEBP", "GIF", "PNG"])
def test_common_web_formats_decode(fmt):
    decoded = decode_image(encode(photo(250, 210), fmt))
    assert decoded.image.mode == "RGB"
    assert (decoded.original_width, decoded.original_height) == (250, 210)


# -------------------------------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (199, 300, reasons.IMAGE_TOO_SMALL),
        (200, 300, reasons.IMAGE_TOO_SMALL),  # ALIGN: shorter side must be > 200, so 200 goes
        (201, 300, None),
        (300, 200, reasons.IMAGE_TOO_SMALL),
        (300, 201, None),
        (0, 0, reasons.IMAGE_TOO_SMALL),
        (100, 1000, reasons.IMAGE_TOO_SMALL),  # too small wins over aspect ratio
    ],
)
def test_shorter_side_must_exceed_200(width, height, expected):
    assert image_size_reason(width, height) == expected


@pytest.mark.parametrize(
    ("width", "height", "ratio", "expected"),
    [
        (897, 300, 2.99, None),
        (900, 300, 3.0, reasons.ASPECT_RATIO_TOO_LARGE),  # aspect must be < 3: exactly 3 goes
        (903, 300, 3.01, reasons.ASPECT_RATIO_TOO_LARGE),
        (602, 201, 602 / 201, None),
        (603, 201, 3.0, reasons.ASPECT_RATIO_TOO_LARGE),
        (604, 201, 604 / 201, reasons.ASPECT_RATIO_TOO_LARGE),
        (201, 603, 3.0, reasons.ASPECT_RATIO_TOO_LARGE),  # portrait: long / short
        (201, 602, 602 / 201, None),
    ],
)
def test_aspect_ratio_must_stay_below_3(width, height, ratio, expected):
    assert max(width, height) / min(width, height) == pytest.approx(ratio, abs=1e-12)
    assert image_size_reason(width, height) == expected


def test_rule_thresholds_are_configurable():
    assert image_size_reason(150, 150, min_side=100) is None
    assert image_size_reason(100, 150, min_side=100) == reasons.IMAGE_TOO_SMALL
    assert image_size_reason(1000, 300, max_aspect_ratio=4.0) is None
    assert image_size_reason(1200, 300, max_aspect_ratio=4.0) == reasons.ASPECT_RATIO_TOO_LARGE


def test_perceptual_hash_is_stable_and_survives_recompression():
    image = photo(400, 300, seed=3)
    digest = perceptual_hash(image)
    assert re.fullmatch(r"[0-9a-f]{16}", digest), digest  # 64 bits as lowercase hex
    assert bin(int(digest, 16)).count("1") == 32  # bits are "above the median" of 64 distinct DCT coefficients
    assert perceptual_hash(image) == digest
    recompressed = decode_image(encode(image.resize((200, 150)), "JPEG", quality=60)).image
    distance = imagehash.hex_to_hash(digest) - imagehash.hex_to_hash(perceptual_hash(recompressed))
    assert distance <= 6
    other = imagehash.hex_to_hash(perceptual_hash(photo(400, 300, seed=4).transpose(Image.Transpose.ROTATE_90)))
    assert other - imagehash.hex_to_hash(digest) > distance
    assert len(perceptual_hash(image, hash_size=16)) == 64


# ------------------------------------------------------------------------------------------------- resize


@pytest.mark.parametrize(
    ("mode", "size_in", "size_out"),
    [
        ("no", (800, 600), (800, 600)),
        ("keep_ratio", (800, 600), (461, 346)),  # 800 * 346 / 600 = 461.3
        ("keep_ratio", (600, 800), (346, 461)),
        ("keep_ratio_largest", (800, 600), (346, 260)),  # 600 * 346 / 800 = 259.5
        ("center_crop", (800, 600), (346, 346)),
        ("border", (800, 600), (346, 346)),
        ("keep_ratio", (347, 1000), (346, 997)),  # one pixel above the target still shrinks
    ],
)
def test_resize_modes_produce_img2dataset_sizes(mode, size_in, size_out):
    assert resize_image(photo(*size_in), mode, 346).size == size_out


@pytest.mark.parametrize("mode", ["keep_ratio", "center_crop", "border", "keep_ratio_largest"])
def test_no_enlargement_by_default_and_image_left_untouched(mode):
    small = photo(300, 250)
    assert resize_image(small, mode, 346) is small  # not enlarged, not cropped, not padded
    exact = photo(346, 500) if mode in ("keep_ratio", "center_crop") else photo(346, 200)
    assert resize_image(exact, mode, 346) is exact


def test_enlarges_when_asked():
    assert resize_image(photo(300, 250), "keep_ratio", 346, only_downscale=False).size == (415, 346)
    assert resize_image(photo(300, 250), "border", 346, only_downscale=False).size == (346, 346)


def test_center_crop_keeps_the_middle():
    image = Image.new("RGB", (900, 300), (0, 0, 255))
    image.paste(Image.new("RGB", (300, 300), (255, 0, 0)), (300, 0))
    cropped = resize_image(image, "center_crop", 150)
    assert cropped.size == (150, 150)
    assert close_to(cropped.getpixel((2, 75)), (255, 0, 0), 5)
    assert close_to(cropped.getpixel((147, 75)), (255, 0, 0), 5)


def test_border_pads_centred_with_the_border_colour():
    image = Image.new("RGB", (800, 400), (255, 255, 255))
    padded = resize_image(image, "border", 200, border_color=(0, 128, 0))
    assert padded.size == (200, 200)
    assert padded.getpixel((100, 10)) == (0, 128, 0)  # top bar: (200 - 100) // 2 = 50 rows
    assert padded.getpixel((100, 190)) == (0, 128, 0)
    assert padded.getpixel((100, 100)) == (255, 255, 255)


def test_unknown_resize_mode_is_refused():
    with pytest.raises(ValueError, match="unknown resize mode 'stretch'"):
        resize_image(photo(10, 10), "stretch", 5)


# ------------------------------------------------------------------------------------------------- encode


@pytest.mark.parametrize(("fmt", "pillow_format"), [("jpg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_encode_round_trips_and_is_deterministic(fmt, pillow_format):
    image = photo(120, 90)
    data = encode_image(image, fmt, quality=90)
    assert encode_image(image, fmt, quality=90) == data
    reopened = Image.open(io.BytesIO(data))
    assert reopened.format == pillow_format
    assert reopened.size == (120, 90)
    assert EXTENSIONS[fmt] == fmt
    if fmt == "png":
        assert reopened.convert("RGB").tobytes() == image.tobytes()


def test_encode_writes_no_metadata():
    source = Image.open(io.BytesIO(_oriented_jpeg(64, 48, 1)))
    source.load()
    source.info["icc_profile"] = b"not a real profile"
    assert "exif" in source.info
    for fmt in EXTENSIONS:
        reopened = Image.open(io.BytesIO(encode_image(source, fmt)))
        assert "exif" not in reopened.info and "icc_profile" not in reopened.info, fmt
    assert "icc_profile" in source.info  # the caller's image is not modified


def test_encode_refuses_unknown_format_and_quality():
    with pytest.raises(ValueError, match="unknown encode format 'gif'"):
        encode_image(photo(10, 10), "gif")
    with pytest.raises(ValueError, match="quality"):
        encode_image(photo(10, 10), "jpg", quality=0)


# ------------------------------------------------------------------------------------------ process_image


def test_process_image_keeps_a_good_photo():
    data = encode(photo(800, 600), "JPEG")
    outcome = process_image(data, ImageConfig())
    assert outcome.reason is None and outcome.detail == ""
    assert (outcome.width, outcome.height) == (461, 346)
    assert (outcome.original_width, outcome.original_height) == (800, 600)
    assert outcome.sha256 == hashlib.sha256(data).hexdigest()
    assert outcome.ext == "jpg" and len(outcome.phash) == 16
    assert Image.open(io.BytesIO(outcome.image_bytes)).size == (461, 346)


def test_process_image_uses_draft_for_big_jpegs_without_changing_the_result_size():
    outcome = process_image(encode(photo(2000, 1500), "JPEG"), ImageConfig())
    assert (outcome.width, outcome.height) == (461, 346)
    assert (outcome.original_width, outcome.original_height) == (2000, 1500)


@pytest.mark.parametrize(
    ("size", "reason"),
    [((199, 300), reasons.IMAGE_TOO_SMALL), ((200, 300), reasons.IMAGE_TOO_SMALL),
     ((603, 201), reasons.ASPECT_RATIO_TOO_LARGE), ((201, 300), None)],
)
def test_process_image_applies_the_rules_to_the_original_size(size, reason):
    data = encode(photo(*size), "PNG")
    outcome = process_image(data, ImageConfig())
    assert outcome.reason == reason
    assert (outcome.original_width, outcome.original_height) == size
    assert outcome.sha256 == hashlib.sha256(data).hexdigest()
    if reason:
        assert outcome.detail == f"{size[0]}x{size[1]}"
        assert outcome.image_bytes is None and outcome.phash is None and outcome.width is None


def test_rules_judge_the_original_not_the_resized_image():
    outcome = process_image(encode(photo(400, 300), "JPEG"), ImageConfig(image_size=100))
    assert outcome.reason is None
    assert (outcome.width, outcome.height) == (133, 100)


def test_rules_see_the_displayed_orientation():
    # stored 620x205 (aspect 3.02) is rejected whichever way it is displayed; stored 300x210 rotated is kept
    assert process_image(_oriented_jpeg(620, 205, 6), ImageConfig()).reason == reasons.ASPECT_RATIO_TOO_LARGE
    outcome = process_image(_oriented_jpeg(300, 210, 6), ImageConfig(resize_mode="no"))
    assert outcome.reason is None
    assert (outcome.original_width, outcome.original_height) == (210, 300)
    assert (outcome.width, outcome.height) == (210, 300)


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (encode(photo(400, 300), "JPEG")[:900], "truncated"),
        (b"\x00\x01garbage" * 50, "unidentified_format"),
        (b"", "empty"),
        (png_header_only(40000, 40000), "decompression_bomb:40000x40000"),
        (b"<html><body>moved</body></html>", "not_raster:html"),
    ],
)
def test_process_image_turns_bad_bytes_into_decode_failed(data, detail):
    outcome = process_image(data, ImageConfig())
    assert outcome.reason == reasons.DECODE_FAILED
    assert outcome.detail == detail
    assert outcome.image_bytes is None and outcome.original_width is None
    assert outcome.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("fmt", ["webp", "png"])
def test_process_image_encodes_in_the_configured_format(fmt):
    outcome = process_image(encode(photo(500, 400), "JPEG"), ImageConfig(encode_format=fmt, resize_mode="center_crop"))
    assert outcome.ext == fmt
    reopened = Image.open(io.BytesIO(outcome.image_bytes))
    assert reopened.format == fmt.upper() and reopened.size == (346, 346)


@pytest.mark.parametrize(
    "kwargs",
    [{"resize_mode": "stretch"}, {"encode_format": "gif"}, {"encode_quality": 101}, {"image_size": 0},
     {"max_aspect_ratio": 1.0}],
)
def test_image_config_rejects_bad_options(kwargs):
    with pytest.raises(ValueError):
        ImageConfig(**kwargs)


def test_real_coco_photos_go_through_the_chain():
    if not COCO.exists():
        pytest.skip(f"real data not present at {COCO}")
    paths = sorted(COCO.glob("*.jpg"))[:20]
    assert paths
    for path in paths:
        data = path.read_bytes()
        outcome = process_image(data, ImageConfig())
        with Image.open(path) as original:
            header_size = original.size
        assert outcome.reason in (None, reasons.IMAGE_TOO_SMALL, reasons.ASPECT_RATIO_TOO_LARGE), path.name
        assert (outcome.original_width, outcome.original_height) in (header_size, header_size[::-1])
        if outcome.reason is None:
            # never enlarged: a 500x333 photo stays 500x333
            assert min(outcome.width, outcome.height) == min(346, *header_size)
            assert Image.open(io.BytesIO(outcome.image_bytes)).size == (outcome.width, outcome.height)


@pytest.mark.parametrize("resample", ["area", "bilinear", "bicubic", "lanczos"])
def test_every_resize_filter_gives_the_target_size_and_keeps_colour(resample):
    img = Image.new("RGB", (640, 480), (200, 30, 40))
    out = resize_image(img, "keep_ratio", 346, resample=resample)
    assert out.size == (461, 346)
    assert out.getpixel((230, 173)) == (200, 30, 40)


def test_unknown_resize_filter_is_refused():
    with pytest.raises(ValueError, match="resize filter"):
        resize_image(Image.new("RGB", (640, 480)), "keep_ratio", 346, resample="nearest-ish")
