"""Encoding a Pillow image as jpg/webp/png, deterministically and without metadata (moved from process.py)."""

from __future__ import annotations

import io

from PIL import Image

EXTENSIONS = {"jpg": "jpg", "webp": "webp", "png": "png"}


def check_encode_options(fmt: str, quality: int) -> None:
    if fmt not in EXTENSIONS:
        raise ValueError(f"unknown encode format {fmt!r}; expected one of {', '.join(EXTENSIONS)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"encode quality must be within 1..100, got {quality}")


def encode_image(img: Image.Image, fmt: str = "jpg", quality: int = 95) -> bytes:
    """Encode as jpg/webp/png. Same pixels and options -> same bytes: no EXIF, ICC, XMP or timestamps written.

    ``quality`` applies to jpg and (lossy) webp; png is lossless (zlib level 6).
    """
    check_encode_options(fmt, quality)
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    if img.info:  # PNG/WebP savers copy some metadata (ICC profile, EXIF) from .info: drop it
        img = img.copy()
        img.info = {}
    buffer = io.BytesIO()
    if fmt == "jpg":
        img.save(buffer, "JPEG", quality=quality)
    elif fmt == "webp":
        img.save(buffer, "WEBP", quality=quality, method=4)
    else:
        img.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()
