"""Decoding to an RGB pixel array: JPEGs through libjpeg-turbo directly (simplejpeg), everything else through Pillow.

Same safety as filters.image.decode_image, because it starts the same way: ``open_image`` parses the header with
an allowed Pillow plugin and checks the pixel-bomb limit before any pixel is decoded. Only then is a plain
JPEG (YCbCr or greyscale, one scan tile; not CMYK/YCCK) handed to simplejpeg, at the DCT scale Pillow's
``draft`` would pick (1/2, 1/4, 1/8), with the same EXIF orientation. Pillow and simplejpeg run the same
libjpeg-turbo with the same settings (accurate integer IDCT, fancy upsampling), so the pixels are identical
(tests/test_fast_decode.py; bench_codecs.py) and so is the pHash taken on them. Measured per 640x480 photo on
one core: 1.35 ms against Pillow's 2.0-2.2; at 1024x768 with the 1/2 scale, 2.5 against 3.0-3.2.

Anything simplejpeg refuses or reports (a truncated or corrupt stream, even a recoverable warning; a header
that disagrees with Pillow's) goes back to Pillow's decode of the same bytes, so broken images end exactly as
before: ``decode_failed`` with Pillow's detail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import simplejpeg
from PIL import Image

from aligndata.filters.image import (
    DEFAULT_MAX_PIXELS,
    SWAPPING_ORIENTATIONS,
    Decoded,
    draft_scale,
    exif_orientation,
    finish_decode,
    open_image,
)

# The JPEG colour spaces libjpeg converts to RGB exactly as Pillow does (Pillow reads these as "RGB" or "L").
_PLAIN_JPEG = {"YCbCr", "Gray", "RGB"}

# Pillow's Image.Transpose for each EXIF orientation (filters.image._EXIF_TRANSPOSE), as array views.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@dataclass
class DecodedPixels:
    """A decoded image as a C-contiguous (H, W, 3) uint8 RGB array, its displayed size before any DCT scaling, and
    its format. ``image`` is the same pixels as a Pillow image, made on first use (the image checks and Pillow's
    resize filters take Pillow images; the pHash works on the array)."""

    pixels: np.ndarray
    original_width: int
    original_height: int
    format: str = ""
    _image: Image.Image | None = field(default=None, repr=False)

    @property
    def image(self) -> Image.Image:
        if self._image is None:
            self._image = Image.fromarray(self.pixels)
        return self._image

    @classmethod
    def from_pillow(cls, decoded: Decoded) -> "DecodedPixels":
        return cls(np.asarray(decoded.image), decoded.original_width, decoded.original_height, decoded.format,
                   decoded.image)


def decode_pixels(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                  draft_size: tuple[int, int] | None = None) -> DecodedPixels:
    """decode_image's contract (same errors, sizes, orientation, draft scale, RGB), returning pixels."""
    header = open_image(data, max_pixels)
    if header.format in ("JPEG", "MPO"):
        pixels = _libjpeg(data, header, draft_size)
        if pixels is not None:
            width, height = header.size
            orientation = exif_orientation(header)
            if orientation in SWAPPING_ORIENTATIONS:
                width, height = height, width
            if orientation != 1:
                pixels = np.ascontiguousarray(_ORIENT[orientation](pixels))
            return DecodedPixels(pixels, width, height, header.format)
    return DecodedPixels.from_pillow(finish_decode(header, draft_size))


def _libjpeg(data: bytes, header: Image.Image, draft_size: tuple[int, int] | None) -> np.ndarray | None:
    """The JPEG's pixels at Pillow's draft scale, or None where Pillow must decode it."""
    if header.mode not in ("RGB", "L") or len(header.tile) != 1:
        return None
    width, height = header.size
    try:
        jpeg_height, jpeg_width, colorspace, _subsampling = simplejpeg.decode_jpeg_header(data)
    except Exception:  # whatever simplejpeg thinks of the bytes, Pillow decides (and names the error)
        return None
    if (jpeg_width, jpeg_height) != (width, height) or colorspace not in _PLAIN_JPEG:
        return None  # a header Pillow read differently (or CMYK/YCCK): allocate nothing on its word
    scale = 1 if draft_size is None else draft_scale(width, height, draft_size)
    want = (-(-height // scale), -(-width // scale))
    try:
        # min_factor and the minimum size together leave libjpeg exactly the 1/scale Pillow's draft uses
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_factor=scale, min_width=want[1],
                                        min_height=want[0], strict=True)
    except Exception:
        return None
    return pixels if pixels.shape == (*want, 3) else None
