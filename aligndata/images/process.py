"""Resize and encode one image, and the whole per-image chain the pipeline runs on fetched bytes.

Pure functions (no Beam): decode -> size rules on the original size -> perceptual hash -> resize -> encode.
Resize modes follow img2dataset (``no``, ``keep_ratio``, ``keep_ratio_largest``, ``center_crop``, ``border``)
including its ``resize_only_if_bigger`` semantics (see :func:`resize_image`).

The chain works on pixel arrays (chosen by benchmarks/bench_codecs.py): JPEGs decode through libjpeg-turbo
directly (fast_decode.py, the same pixels as Pillow), the default ``area`` filter resizes with OpenCV
(resize_pixels.py) and JPEG output is written by OpenCV (encode_pixels.py, the same bytes as Pillow for the same
pixels). The other filters (bilinear, bicubic, lanczos) keep Pillow's antialiased resampling: OpenCV's are
not antialiased (41 dB against Pillow's 56-57 on COCO photos).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from aligndata.filters import reasons, registry
from aligndata.filters.options import Option, defaults, positive_int
from aligndata.filters.image import DecodeError, image_size_reason, perceptual_hash_pixels
from aligndata.images.encode import EXTENSIONS, encode_image
from aligndata.images.encode_pixels import encode_pixels
from aligndata.images.fast_decode import decode_pixels
from aligndata.images.geometry import RESIZE_MODES, plan_resize
from aligndata.images.resize_pixels import resize_pixels

__all__ = ["EXTENSIONS", "RESIZE_MODES", "RESAMPLE_FILTERS", "OUTPUT_IMAGE_OPTIONS", "ImageConfig", "ImageOutcome",
           "encode_image", "process_image", "resize_image"]

# Resampling filters. "area" is the default: in process_image an area downscale on arrays (resize_pixels.py:
# integer reduce, then bilinear for the last < 2x; 0.4-0.5 ms per 640x480 photo, 45-53 dB against the exact area
# average). Pillow's BOX below (each output pixel averages the input pixels whose centres it covers, 35-39 dB;
# the area filter until this path) is what enlarging and non-RGB images get.
RESAMPLE_FILTERS = {
    "area": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
# For the slower filters: reduce() by an integer factor (box) first, then filter the last <= 2x, as
# Image.thumbnail does. LANCZOS to a 346 px short side: 2000x1500 26.8 -> 10.6 ms, 4000x3000 89.6 -> 15.8 ms,
# mean abs pixel difference 0.3/255.
_REDUCING_GAP = 2.0


def resize_image(
    img: Image.Image,
    mode: str,
    size: int,
    only_downscale: bool = True,
    border_color: tuple[int, int, int] = (0, 0, 0),
    resample: str = "area",
) -> Image.Image:
    """Resize like img2dataset, with ``resample`` one of RESAMPLE_FILTERS (``area`` on an RGB image: the array
    path of resize_pixels.py, as process_image does).

    - ``no``: untouched.
    - ``keep_ratio``: the smaller side becomes ``size``.
    - ``keep_ratio_largest``: the larger side becomes ``size``.
    - ``center_crop``: the smaller side becomes ``size``, then the central ``size`` x ``size`` square is kept.
    - ``border``: the larger side becomes ``size``, then it is padded to ``size`` x ``size`` with
      ``border_color``, centred.

    ``only_downscale`` is img2dataset's ``resize_only_if_bigger``: when the side that would be scaled to ``size``
    (the smaller one for keep_ratio/center_crop, the larger one for keep_ratio_largest/border) is already
    <= ``size``, the image is returned untouched: no enlargement, and also no crop or padding, so such an
    image is not square in center_crop/border mode.
    """
    if resample not in RESAMPLE_FILTERS:
        raise ValueError(f"unknown resize filter {resample!r}; expected one of {', '.join(RESAMPLE_FILTERS)}")
    plan = plan_resize(img.width, img.height, mode, size, only_downscale)
    if plan.untouched:
        return img
    if resample == "area" and img.mode == "RGB":  # process_image's area path, on this image's pixels
        return Image.fromarray(resize_pixels(np.asarray(img), plan, border_color, image=img))
    resized = img if plan.scaled == img.size else _resample(img, plan.scaled, RESAMPLE_FILTERS[resample])
    if plan.crop is not None:
        return resized.crop(plan.crop)
    if plan.pad_to is not None:
        return _pad_to_square(resized, plan.pad_to, border_color)
    return resized


def _resample(img: Image.Image, new_size: tuple[int, int], resample: Image.Resampling) -> Image.Image:
    if resample == Image.Resampling.BOX:
        return img.resize(new_size, resample)  # already an area average at any scale
    # reducing_gap only helps when shrinking; it is ignored by Pillow when enlarging.
    return img.resize(new_size, resample, reducing_gap=_REDUCING_GAP)


def _pad_to_square(img: Image.Image, size: int, color: tuple[int, int, int]) -> Image.Image:
    canvas = Image.new(img.mode, (size, size), color if img.mode == "RGB" else 0)
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


# The output-image options of `curate` (the image rules' own options are in the rule registry).
OUTPUT_IMAGE_OPTIONS: tuple[Option, ...] = (
    Option("--resize-mode", "keep_ratio", "img2dataset's meanings; never enlarges",
           choices=("keep_ratio", "center_crop", "border", "no")),
    Option("--resize-filter", "area", "resampling filter for downscaling (area: integer box reduce, then "
           "bilinear for the last < 2x; fastest)", choices=tuple(RESAMPLE_FILTERS)),
    Option("--image-size", 346, "target size for resizing (ALIGN resizes to 346, then crops 289 in training)",
           type=positive_int),
    Option("--encode-format", "jpg", "output image format", choices=tuple(EXTENSIONS)),
    Option("--encode-quality", 95, "jpg/webp quality", type=positive_int),
)
_OUT = defaults(OUTPUT_IMAGE_OPTIONS)
_RULES = registry.defaults()


@dataclass
class ImageConfig:
    """Options of the per-image chain. Defaults: ALIGN's rules and its 346 px training resolution."""

    min_side: int = _RULES["min_side"]
    max_aspect_ratio: float = _RULES["max_aspect_ratio"]
    resize_mode: str = _OUT["resize_mode"]
    image_size: int = _OUT["image_size"]
    encode_format: str = _OUT["encode_format"]
    encode_quality: int = _OUT["encode_quality"]
    max_pixels: int = _RULES["max_pixels"]
    min_image_bytes: int = _RULES["min_image_bytes"]
    only_downscale: bool = True
    resample: str = _OUT["resize_filter"]

    @classmethod
    def from_options(cls, opts) -> "ImageConfig":
        """From an object carrying the image rules' and output-image options (a curate config)."""
        return cls(min_side=opts.min_side, max_aspect_ratio=opts.max_aspect_ratio, resize_mode=opts.resize_mode,
                   resample=opts.resize_filter, image_size=opts.image_size, encode_format=opts.encode_format,
                   encode_quality=opts.encode_quality, max_pixels=opts.max_pixels,
                   min_image_bytes=opts.min_image_bytes)

    def __post_init__(self) -> None:
        # A bad option is a user error: fail once, loudly, rather than reject every image.
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}")
        if self.resample not in RESAMPLE_FILTERS:
            raise ValueError(f"resample must be one of {', '.join(RESAMPLE_FILTERS)}, got {self.resample!r}")
        if self.encode_format not in EXTENSIONS:
            raise ValueError(f"encode_format must be one of {', '.join(EXTENSIONS)}, got {self.encode_format!r}")
        if not 1 <= self.encode_quality <= 100:
            raise ValueError(f"encode_quality must be within 1..100, got {self.encode_quality}")
        if self.image_size < 1 or self.max_pixels < 1:
            raise ValueError("image_size and max_pixels must be >= 1")
        if self.max_aspect_ratio <= 1.0:
            raise ValueError(
                f"max_aspect_ratio must be > 1 (every image would be rejected), got {self.max_aspect_ratio}"
            )

    def draft_size(self) -> tuple[int, int] | None:
        """JPEG draft request: both sides stay >= image_size, enough for every mode that shrinks to it."""
        return None if self.resize_mode == "no" else (self.image_size, self.image_size)


@dataclass
class ImageOutcome:
    """What happened to one fetched image. ``reason`` None means kept, with ``image_bytes`` set."""

    reason: str | None
    detail: str
    image_bytes: bytes | None
    ext: str
    width: int | None
    height: int | None
    original_width: int | None
    original_height: int | None
    sha256: str
    phash: str | None


def process_image(data: bytes, cfg: ImageConfig, image_check=None) -> ImageOutcome:
    """The per-image chain; never raises for bad image bytes (they end as ``decode_failed`` with a detail).

    The size rules judge the ORIGINAL (header, EXIF-oriented) size, never the resized one. The pHash is taken on
    the decoded image before resizing so it does not depend on the output options. ``image_check(decoded, phash)``
    (eval-set near-duplicates, NSFW image scores) runs after the size rules and may return (reason, detail).
    """
    outcome = ImageOutcome(
        reason=None, detail="", image_bytes=None, ext=EXTENSIONS[cfg.encode_format], width=None, height=None,
        original_width=None, original_height=None, sha256=hashlib.sha256(data).hexdigest(), phash=None,
    )
    if len(data) < cfg.min_image_bytes:  # judged on the bytes as downloaded, before any decoding work
        return _rejected(outcome, reasons.IMAGE_FILE_TOO_SMALL, f"{len(data)} bytes")
    try:
        decoded = decode_pixels(data, max_pixels=cfg.max_pixels, draft_size=cfg.draft_size())
    except DecodeError as err:
        return _rejected(outcome, reasons.DECODE_FAILED, err.detail)
    except Exception as err:  # a Pillow bug on hostile bytes must not kill the worker
        return _rejected(outcome, reasons.DECODE_FAILED, type(err).__name__)
    outcome.original_width, outcome.original_height = decoded.original_width, decoded.original_height
    size_reason = image_size_reason(
        decoded.original_width, decoded.original_height, cfg.min_side, cfg.max_aspect_ratio
    )
    if size_reason is not None:
        return _rejected(outcome, size_reason, f"{decoded.original_width}x{decoded.original_height}")
    try:
        outcome.phash = perceptual_hash_pixels(decoded.pixels)  # no Pillow copy of the pixels for it
    except Exception as err:
        return _rejected(outcome, reasons.DECODE_FAILED, f"hash_failed:{type(err).__name__}")
    if image_check is not None:
        hit = image_check(decoded, outcome.phash)  # errors here are the caller's (a broken plugin): raise
        if hit is not None:
            return _rejected(outcome, *hit)
    try:
        if cfg.resample == "area":  # the default: arrays all the way (OpenCV resize, OpenCV JPEG)
            plan = plan_resize(*decoded.pixels.shape[1::-1], cfg.resize_mode, cfg.image_size, cfg.only_downscale)
            pixels = resize_pixels(decoded.pixels, plan)
            outcome.image_bytes = encode_pixels(pixels, cfg.encode_format, cfg.encode_quality)
            outcome.width, outcome.height = pixels.shape[1], pixels.shape[0]
        else:
            resized = resize_image(decoded.image, cfg.resize_mode, cfg.image_size, cfg.only_downscale,
                                   resample=cfg.resample)
            outcome.image_bytes = encode_image(resized, cfg.encode_format, cfg.encode_quality)
            outcome.width, outcome.height = resized.size
    except Exception as err:  # e.g. MemoryError on a huge image in mode "no"
        outcome.phash = None
        outcome.width = outcome.height = None
        return _rejected(outcome, reasons.DECODE_FAILED, f"encode_failed:{type(err).__name__}")
    return outcome


def _rejected(outcome: ImageOutcome, reason: str, detail: str) -> ImageOutcome:
    outcome.reason, outcome.detail = reason, detail
    return outcome
