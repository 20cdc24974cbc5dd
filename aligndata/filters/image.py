"""Safe image decoding and ALIGN's image rules (shorter side > 200 px, aspect ratio < 3).

Decoding is defensive because every byte comes from the open web:

* the pixel-bomb limit is checked on the header size *before* any pixel is decoded, per call, without touching
  Pillow's process-wide ``Image.MAX_IMAGE_PIXELS`` (the pipeline decodes from many threads at once, so global
  state cannot carry a per-call limit). Pillow's own global guard stays in place as a second line of defence;
* only the raster formats found on the web are parsed (``WEB_FORMATS``): exotic Pillow plugins (EPS runs
  Ghostscript, PSD, FITS, ...) are never given untrusted bytes;
* the image is fully decoded (``load()``), so a truncated file fails here and not later in a worker;
* the result is always RGB: alpha is composited on white, palettes/CMYK/16-bit/float/1-bit/YCbCr/LAB converted.

Everything that is not a decodable raster raises :class:`DecodeError` with a short, stable ``detail``.
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageCms

from aligndata.filters import reasons

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default, ~ 9459 x 9459

# Raster formats browsers display; tried in this order (each plugin checks the magic bytes first).
WEB_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "TIFF", "ICO")

# Loading all plugins once, at import, keeps the plugin registry read-only while threads decode.
Image.init()

# Orientations 5-8 rotate by 90 degrees: the displayed width is the stored height.
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_WHITE = (255, 255, 255)


class DecodeError(Exception):
    """The bytes are not a decodable raster image. ``detail`` is short and stable (goes into reports)."""

    def __init__(self, detail: str, message: str | None = None) -> None:
        super().__init__(f"{detail}: {message}" if message else detail)
        self.detail = detail


@dataclass
class Decoded:
    """A decoded RGB image and its size as displayed (after EXIF orientation), before any draft reduction."""

    image: Image.Image
    original_width: int
    original_height: int
    format: str = ""


def decode_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    formats: tuple[str, ...] = WEB_FORMATS,
) -> Decoded:
    """Decode untrusted bytes into an RGB image, or raise :class:`DecodeError`.

    ``max_pixels`` caps width*height read from the header (an image with more pixels is refused before decoding).
    ``draft_size`` lets JPEGs decode at a reduced DCT scale (1/2, 1/4, 1/8) while both sides stay >= the
    requested ones; the returned ``original_width/height`` are still the header's (oriented) size.
    The first frame of an animation is returned. ``original_*`` are the size as displayed: EXIF orientations
    5-8 swap width and height, matching what a browser shows and what the size rules should judge.
    """
    image = open_image(data, max_pixels, formats)
    return finish_decode(image, draft_size)


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, formats: tuple[str, ...] = WEB_FORMATS) -> Image.Image:
    """The first half of :func:`decode_image`: the header parsed by an allowed plugin and the pixel-bomb limit
    checked, no pixel decoded yet. A faster decoder may take it from here (images/fast_decode.py); anything it
    does not take goes on through :func:`finish_decode`."""
    if not data:
        raise DecodeError("empty")
    image = _identify(data, formats)
    width, height = image.size
    if width * height > max_pixels:
        raise DecodeError(
            f"decompression_bomb:{width}x{height}", f"{width}x{height} exceeds the limit of {max_pixels} pixels"
        )
    return image


def finish_decode(image: Image.Image, draft_size: tuple[int, int] | None = None) -> Decoded:
    """The second half of :func:`decode_image`: draft, load, EXIF orientation, RGB."""
    width, height = image.size
    image_format = image.format or ""
    if draft_size is not None and image_format in ("JPEG", "MPO"):
        image.draft("RGB", draft_size)
    _load(image)
    orientation = exif_orientation(image)
    if orientation in SWAPPING_ORIENTATIONS:
        width, height = height, width
    if orientation != 1:
        # ImageOps.exif_transpose's mapping; done directly because it also re-serialises EXIF, which can fail on
        # the broken EXIF common on the web, and the encoder drops EXIF anyway.
        image = image.transpose(_EXIF_TRANSPOSE[orientation])
    return Decoded(to_rgb(image), width, height, image_format)


def draft_scale(width: int, height: int, draft_size: tuple[int, int]) -> int:
    """The DCT scale denominator (1, 2, 4 or 8) Pillow's JPEG ``draft`` picks for ``draft_size``: the largest that
    keeps both sides >= the request (sizes as stored, before EXIF orientation)."""
    scale = min(width // draft_size[0], height // draft_size[1])
    return next((s for s in (8, 4, 2) if scale >= s), 1)


def _identify(data: bytes, formats: tuple[str, ...]) -> Image.Image:
    """Open lazily (header only) with the allowed plugins, like ``Image.open`` minus its global bomb check.

    ``Image.open`` applies the process-wide ``MAX_IMAGE_PIXELS``; calling the registered plugin factories directly
    lets each call apply its own limit (checked by the caller) and never mutates Pillow's globals.
    """
    prefix = data[:16]
    broken: str | None = None
    for name in formats:
        entry = Image.OPEN.get(name)
        if entry is None:  # plugin not built into this Pillow (e.g. AVIF)
            continue
        factory, accept = entry
        if accept is not None and not _accepts(accept, prefix):
            continue
        try:
            return factory(io.BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, ValueError, EOFError, struct.error):
            broken = broken or name  # the magic matched but the header is broken: let another plugin try
        except Image.DecompressionBombError as err:  # some plugins check sizes while parsing headers
            raise DecodeError("decompression_bomb:pillow_limit", str(err)) from err
        except OSError as err:
            raise DecodeError(_oserror_detail(err), str(err)) from err
    if broken is not None:
        raise DecodeError(f"bad_header:{broken.lower()}")
    raise DecodeError(_unidentified_detail(data, formats))


def _accepts(accept, prefix: bytes) -> bool:
    """A plugin's magic check; a string result is Pillow's "recognised but unsupported" warning, i.e. no."""
    try:
        result = accept(prefix)
    except Exception:  # a plugin's magic check must never take the decoder down
        return False
    return not isinstance(result, str) and bool(result)


def _unidentified_detail(data: bytes, formats: tuple[str, ...]) -> str:
    """Name what the bytes are when we can: markup (HTML error pages, SVG), PDF, or a format we refuse."""
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<"):
        if b"<svg" in head:
            return "not_raster:svg"
        if b"<html" in head or b"<!doctype html" in head or b"<head" in head or b"<body" in head:
            return "not_raster:html"
        return "not_raster:xml"
    if head.startswith(b"%pdf"):
        return "not_raster:pdf"
    prefix = data[:16]
    for name, (_factory, accept) in Image.OPEN.items():
        if name not in formats and accept is not None and _accepts(accept, prefix):
            return f"unsupported_format:{name.lower()}"
    return "unidentified_format"


def _load(image: Image.Image) -> None:
    try:
        image.load()
    except Image.DecompressionBombError as err:  # e.g. a GIF frame larger than its logical screen
        raise DecodeError("decompression_bomb:pillow_limit", str(err)) from err
    except OSError as err:
        raise DecodeError(_oserror_detail(err), str(err)) from err
    except (SyntaxError, ValueError, IndexError, TypeError, EOFError, struct.error, MemoryError) as err:
        raise DecodeError(f"load_failed:{type(err).__name__}", str(err)) from err


def _oserror_detail(err: OSError) -> str:
    message = str(err).lower()
    if "truncated" in message:
        return "truncated"
    if "decoder" in message and "not available" in message:
        return "decoder_unavailable"
    return f"load_failed:{type(err).__name__}"


def exif_orientation(image: Image.Image) -> int:
    """EXIF (or XMP) orientation 1-8; 1 when absent or unreadable (broken EXIF is common and harmless)."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# ---------------------------------------------------------------------------------------------- mode -> RGB


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Transparency (alpha band or palette/tRNS transparency) is composited on white."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    try:
        if _has_transparency(image):
            return _composite_on_white(image)
        if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
            return _high_depth_to_rgb(image)
        if mode == "LAB":
            return _lab_to_rgb(image)
        return image.convert("RGB")
    except (ValueError, OSError, ImageCms.PyCMSError) as err:
        raise DecodeError(f"unsupported_mode:{mode}", f"cannot convert mode {mode} to RGB: {err}") from err


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info


def _composite_on_white(image: Image.Image) -> Image.Image:
    if image.mode == "La":  # premultiplied; Pillow converts it only to LA
        image = image.convert("LA")
    rgba = image.convert("RGBA")  # also resolves palette / tRNS transparency, and premultiplied RGBa
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float greyscale -> 8-bit. Pillow's plain convert clips (most 16-bit images turn white).

    16-bit modes scale by 255/65535. For ``I`` and ``F`` the range is not in the mode, so it is inferred from the
    values: [0, 1] floats scale by 255, values already within 0..255 are kept, values within 0..65535 scale like
    16-bit, anything else is stretched from its min..max.
    """
    values = np.asarray(image.convert("F") if image.mode.startswith("I;16") else image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if image.mode.startswith("I;16"):
        scaled = values * (255.0 / 65535.0)
    elif low >= 0 and high <= 1.0 and image.mode == "F":
        scaled = values * 255.0
    elif low >= 0 and high <= 255:
        scaled = values
    elif low >= 0 and high <= 65535:
        scaled = values * (255.0 / 65535.0)
    else:
        scaled = (values - low) * (255.0 / (high - low))
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _lab_to_rgb(image: Image.Image) -> Image.Image:
    transform = ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
    )
    return ImageCms.applyTransform(image, transform)


# --------------------------------------------------------------------------------------------------- rules


def image_size_reason(
    width: int, height: int, min_side: int = 200, max_aspect_ratio: float = 3.0
) -> str | None:
    """ALIGN's image rules, strict as in the paper: keep shorter side > ``min_side`` and long/short < max.

    (img2dataset and DataComp keep exactly 200 px and exactly 3.0; ALIGN does not.) Too small is checked first.
    """
    short, long = min(width, height), max(width, height)
    if short <= min_side:
        return reasons.IMAGE_TOO_SMALL
    if long / short >= max_aspect_ratio:
        return reasons.ASPECT_RATIO_TOO_LARGE
    return None


# imagehash.phash shrinks the image to 4 * hash_size px with LANCZOS, whose kernel widens with the shrink
# factor: 1.3-2.5 ms on a 640x480 photo. A box reduce() to about twice that size first brings the whole hash to
# ~0.35 ms and changes a photo's hash by 0-6 of 64 bits (measured on COCO). Eval indexes and queries both use
# this function, so they agree.
_PHASH_PRESHRINK = 2

# perceptual_hash returns exactly str(imagehash.phash(reduced)), bit for bit (tests/test_phash.py keeps that code
# as the reference), for ~0.05 ms less of ~0.5 ms on a 640x480 photo: the grey 32x32 LANCZOS copy is still
# Pillow's, but only the hash_size x hash_size low-frequency block of scipy.fftpack's 2-D DCT-II is computed, as
# products with a cosine matrix. That and scipy's FFT are both within rounding (measured <= 2e-10, ~2e-16 of the
# largest possible coefficient 4 * 255 * side**2) of the exact DCT, so they can disagree on a bit only if a
# coefficient is within ~4e-10 of the median. The fast bits are kept when every coefficient is more than
# _PHASH_MARGIN * 4 * 255 * side**2 (~1e-3 at hash_size 8, millions of times that) from the median; otherwise
# (flat or mirror-symmetric images, whose coefficients tie exactly) scipy's DCT decides, as imagehash did. The
# closest a COCO photo came was 0.017 (2,067 photos and variants), so photos never pay for the fallback.
_PHASH_HIGHFREQ = 4  # imagehash.phash's highfreq_factor: the DCT input is 4 * hash_size px square
_PHASH_MARGIN = 2.0**-30  # relative to the largest possible coefficient; see above


def perceptual_hash(image: Image.Image, hash_size: int = 8) -> str:
    """DCT perceptual hash (imagehash.phash of a box-reduced copy) as hex: 16 hex chars for 64 bits."""
    factor = _phash_reduce_factor(min(image.size), hash_size)
    return _phash_of_reduced(image.reduce(factor) if factor >= 2 else image, hash_size)


def perceptual_hash_pixels(pixels: np.ndarray, hash_size: int = 8) -> str:
    """perceptual_hash of an (H, W, 3) uint8 RGB array, bit for bit, without first copying the array into a Pillow
    image (1.2 MB for a 640x480 photo, ~0.5 ms of the image stage): the reduce is ``box_reduce``, and only its
    small result becomes a Pillow image."""
    factor = _phash_reduce_factor(min(pixels.shape[:2]), hash_size)
    return _phash_of_reduced(Image.fromarray(box_reduce(pixels, factor) if factor >= 2 else pixels), hash_size)


def _phash_reduce_factor(short_side: int, hash_size: int) -> int:
    return short_side // (4 * hash_size * _PHASH_PRESHRINK)


def box_reduce(pixels: np.ndarray, factor: int) -> np.ndarray:
    """``Image.reduce(factor)`` of an (H, W, C) uint8 array, bit for bit: each output pixel is its factor x factor
    box's mean (the last row and column of boxes are partial) in Pillow's fixed-point arithmetic, Reduce.c's
    ``((sum + n / 2) * multiplier) >> 24`` with ``multiplier = (UINT32)(2^32f / (256 * n))`` in float for a box of n
    pixels. ~0.5 ms for a 640x480 photo against ~0.7 for Pillow's copy and reduce. tests/test_phash.py checks
    it against the installed Pillow's reduce."""
    if factor > _MAX_ARRAY_REDUCE:
        return np.asarray(Image.fromarray(pixels).reduce(factor))
    height, width, channels = pixels.shape
    out_h, out_w, full_w = -(-height // factor), -(-width // factor), width // factor
    # each box's rows summed: factor passes over contiguous rows (a sum <= 255 * factor: uint16)
    rows = pixels[0::factor].astype(np.uint16)
    for k in range(1, min(factor, height)):
        part = pixels[k::factor]
        rows[:len(part)] += part
    # then each full box's row sums at once, as a product with a 0/1 matrix: float32 holds these integer sums
    # exactly (< 2^24 up to _MAX_ARRAY_REDUCE), in any order BLAS adds them; the partial last column apart
    sums = np.empty((out_h, out_w, channels), np.float64)
    if full_w:
        flat = rows[:, :full_w * factor].astype(np.float32).reshape(out_h * full_w, factor * channels)
        sums[:, :full_w] = (flat @ _summing_matrix(factor, channels)).reshape(out_h, full_w, channels)
    if out_w > full_w:
        sums[:, full_w] = rows[:, full_w * factor:].sum(axis=1)
    scale, offset = _box_arithmetic(height, width, factor)
    # (sum + n / 2) * multiplier >> 24 in float64, exactly: each term is an integer below 2^32 times 2^-24
    return np.floor(sums * scale + offset).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _box_arithmetic(height: int, width: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel of box_reduce: (multiplier / 2^24, (n / 2) * multiplier / 2^24), shaped (H', W', 1)."""
    out_h, out_w = -(-height // factor), -(-width // factor)
    box_h = np.full(out_h, factor, np.int64)
    box_h[-1] = height - (out_h - 1) * factor
    box_w = np.full(out_w, factor, np.int64)
    box_w[-1] = width - (out_w - 1) * factor
    n = box_h[:, None] * box_w[None, :]
    multiplier = (np.float32(2.0**32) / (256 * n).astype(np.float32)).astype(np.uint64)  # float, then truncated
    scale = (multiplier * 2.0**-24)[..., None]
    offset = ((n // 2) * multiplier * 2.0**-24)[..., None]
    scale.setflags(write=False)
    offset.setflags(write=False)
    return scale, offset


_MAX_ARRAY_REDUCE = 256  # 255 * 256**2 < 2**24; larger factors (short sides over 16,384 px) take Pillow's reduce


@functools.lru_cache(maxsize=16)
def _summing_matrix(factor: int, channels: int) -> np.ndarray:
    """(factor * channels, channels): summing ``factor`` interleaved pixels channel by channel."""
    matrix = np.tile(np.eye(channels, dtype=np.float32), (factor, 1))
    matrix.setflags(write=False)
    return matrix


def _phash_of_reduced(image: Image.Image, hash_size: int) -> str:
    if hash_size < 2:
        raise ValueError("Hash size must be greater than or equal to 2")  # imagehash's check
    side = _PHASH_HIGHFREQ * hash_size
    # as imagehash.phash: to grey, then resize (the box reduce above comes first: the other order changes hashes)
    pixels = np.asarray(image.convert("L").resize((side, side), Image.Resampling.LANCZOS), dtype=np.float64)
    cosines = _dct_cosines(side, hash_size)
    coefficients = (cosines @ pixels @ cosines.T).ravel()
    ordered = np.sort(coefficients)
    n = coefficients.size
    middle = n // 2
    if n % 2:
        median = ordered[middle]
        margin = min(ordered[middle] - ordered[middle - 1], ordered[middle + 1] - ordered[middle])
    else:
        median = (ordered[middle - 1] + ordered[middle]) / 2
        margin = (ordered[middle] - ordered[middle - 1]) / 2
    if margin > _PHASH_MARGIN * 4 * 255 * side * side:
        bits = coefficients > median
    else:  # near or exact ties: imagehash.phash's own computation on the same pixels
        import scipy.fftpack  # noqa: PLC0415 - only this rare path needs it

        dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels.astype(np.uint8), axis=0), axis=1)
        low = dct[:hash_size, :hash_size]
        bits = (low > np.median(low)).ravel()
    value = int.from_bytes(np.packbits(bits).tobytes(), "big") >> (-n % 8)
    return f"{value:0{(n + 3) // 4}x}"  # imagehash's hex: the bits row by row, first bit most significant


@functools.lru_cache(maxsize=8)
def _dct_cosines(side: int, hash_size: int) -> np.ndarray:
    """The first hash_size rows of scipy.fftpack.dct's type-II matrix (norm=None): 2 cos(pi k (2n + 1) / 2N)."""
    k = np.arange(hash_size)[:, None]
    n = np.arange(side)[None, :]
    cosines = 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * side))
    cosines.setflags(write=False)
    return cosines
