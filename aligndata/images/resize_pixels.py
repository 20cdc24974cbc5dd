"""The ``area`` resize on pixel arrays (OpenCV), with images/process.py's resize modes and output sizes.

Pillow's BOX filter, our area filter until now, weighs each input pixel 0 or 1 by whether its centre falls in the
output pixel's footprint; at the shrink factors photos need after JPEG draft decoding (1x to 2x) that is 35-39 dB
PSNR against the exact area average (aligndata.images.resample_reference), and 2.0-2.2 ms per 640x480 photo.
Here: a shrink by an integer factor k >= 2 is Pillow's ``reduce(k)`` (the exact k x k mean), and what is left
(< 2x) is OpenCV's bilinear sampling, 0.4-0.5 ms, 45-53 dB on the same photos. OpenCV's exact INTER_AREA scores
59 dB but costs 2.8-3.2 ms; it is used only where the bilinear step would cover 2x or more (bench_codecs.py).
Enlarging (``only_downscale=False``) keeps Pillow's BOX, as before.
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
    caller has one (saves a copy when a ``reduce`` is needed)."""
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
    factor = min(in_width // width, in_height // height)
    if factor >= 2:
        source = image if image is not None else Image.fromarray(pixels)
        pixels = np.asarray(source.reduce(factor))
        in_height, in_width = pixels.shape[:2]
        if (in_width, in_height) == (width, height):
            return pixels
    small_step = in_width < 2 * width and in_height < 2 * height
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR if small_step else cv2.INTER_AREA)
