"""The ``area`` resize on pixel arrays (OpenCV), with images/process.py's resize modes and output sizes.

Pillow's BOX filter, our area filter until now, weighs each input pixel 0 or 1 by whether its centre falls in the
output pixel's footprint; at the shrink factors photos need after JPEG draft decoding (1x to 2x) that is 35-39 dB
PSNR against the exact area average (aligndata.images.resample_reference), and 2.0-2.2 ms per 640x480 photo.
Here: a shrink by less than 2x (every JPEG in the default modes, thanks to the draft scale) is OpenCV's bilinear
sampling, 0.4-0.5 ms, 45-53 dB on the same photos; 2x or more is OpenCV's exact INTER_AREA (59 dB; 2.8-3.2 ms at
640x480, which is why it is not used below 2x, where bilinear already beats BOX). bench_codecs.py has the
numbers. Enlarging (``only_downscale=False``) keeps Pillow's BOX, as before.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from aligndata.images.geometry import ResizePlan


def use_one_thread() -> None:
    """OpenCV's own thread pool: off. The image stage already runs one image per core (--image-threads); OpenCV
    splitting a 0.5 ms resize across threads only adds hand-offs. Process-wide, so called by the fetch stage's
    workers, never at import."""
    cv2.setNumThreads(1)


def resize_pixels(pixels: np.ndarray, plan: ResizePlan, border_color: tuple[int, int, int] = (0, 0, 0),
                  image: Image.Image | None = None) -> np.ndarray:
    """Apply ``plan`` (images.geometry) with the area filter. ``image``: the same pixels as a Pillow image, if the
    caller has one (saves a copy when enlarging, which Pillow does)."""
    if plan.untouched:
        return pixels
    if plan.scaled != (pixels.shape[1], pixels.shape[0]):
        pixels = _area(pixels, *plan.scaled, image)
    if plan.crop is not None:
        left, top, right, bottom = plan.crop
        pixels = np.ascontiguousarray(pixels[top:bottom, left:right])
    if plan.pad_to is not None:
        height, width = pixels.shape[:2]
        canvas = np.empty((plan.pad_to, plan.pad_to, 3), dtype=np.uint8)
        canvas[:] = border_color
        left, top = (plan.pad_to - width) // 2, (plan.pad_to - height) // 2
        canvas[top:top + height, left:left + width] = pixels
        pixels = canvas
    return pixels


def _area(pixels: np.ndarray, width: int, height: int, image: Image.Image | None) -> np.ndarray:
    in_height, in_width = pixels.shape[:2]
    if width > in_width or height > in_height:  # enlarging: Pillow's BOX (nearest-like), unchanged
        source = image if image is not None else Image.fromarray(pixels)
        return np.asarray(source.resize((width, height), Image.Resampling.BOX))
    if in_width < 2 * width and in_height < 2 * height:
        return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
    # 2x or more (no JPEG draft: PNG, WebP, GIF; or the long side scaled): OpenCV's exact area average. An integer
    # reduce() first would be cheaper, but its partial last box shifts the grid: 44 dB against BOX's 47 at 3.8x.
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)
