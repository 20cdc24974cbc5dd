"""Encoding a pixel array: JPEG through OpenCV's libjpeg-turbo, WebP and PNG through Pillow (process.encode_image).

OpenCV writes the same JPEG as Pillow for the same pixels and quality (same libjpeg-turbo defaults: 4:2:0, accurate
DCT, standard Huffman tables, a bare JFIF header; tests/test_fast_decode.py checks the bytes), without first
copying the array into a Pillow image. No metadata is written either way.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from aligndata.images.encode import EXTENSIONS, check_encode_options, encode_image


def encode_pixels(pixels: np.ndarray, fmt: str = "jpg", quality: int = 95) -> bytes:
    """An (H, W, 3) RGB uint8 array as jpg/webp/png; the same bytes as ``encode_image`` of the same pixels."""
    check_encode_options(fmt, quality)
    if fmt != "jpg":
        return encode_image(Image.fromarray(pixels), fmt, quality)
    ok, out = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), (cv2.IMWRITE_JPEG_QUALITY, quality))
    if not ok:  # OpenCV reports failure by a flag, not an exception
        raise ValueError(f"JPEG encoding failed for a {pixels.shape} array")
    return out.tobytes()


__all__ = ["EXTENSIONS", "encode_pixels"]
