"""Image preprocessing: ALIGN's recipe, in Pillow + torch (no torchvision dependency).

Train: resize to ``resize_size`` x ``resize_size`` (ALIGN resizes to 346x346), random ``image_size`` crop (289),
random horizontal flip. Eval: the same resize, then a center crop. Pixels are scaled to [-1, 1] (ALIGN's
EfficientNet input range; transformers' ALIGN processor does the same with ``rescale_offset``).

``image_processor`` returns the matching transformers ``EfficientNetImageProcessor``, saved with every trained model
so ``AutoProcessor``/``AutoImageProcessor`` users get the eval transform without aligndata.
"""

from __future__ import annotations

import io
import random
import warnings

import numpy as np
import torch
from PIL import Image

RESAMPLE = Image.Resampling.BICUBIC


class BadImage(Exception):
    """The image bytes do not decode to a usable picture."""


def decode(data: bytes, draft_size: int | None = None) -> Image.Image:
    """Decode to RGB; ``draft_size`` lets JPEG decode at a reduced scale (>= that size) for speed in training."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if draft_size and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img = img.convert("RGB")
            img.load()
    except Exception as err:  # PIL raises many types for bad data (OSError, SyntaxError, ValueError, ...)
        raise BadImage(f"{type(err).__name__}: {err}") from err
    if img.width < 1 or img.height < 1:
        raise BadImage("empty image")
    return img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """HWC uint8 -> CHW float in [-1, 1]."""
    array = np.asarray(img, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).div_(127.5).sub_(1.0)


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    # Same rounding as transformers' center_crop: top = (H - h) // 2 on integers.
    left = (width - size) // 2
    top = (height - size) // 2
    return left, top, left + size, top + size


def resized(img: Image.Image, resize_size: int) -> Image.Image:
    """The deterministic first step of both transforms (what a decoded-image cache may keep)."""
    return img.resize((resize_size, resize_size), RESAMPLE)


def augment(img: Image.Image, rng: random.Random, image_size: int) -> torch.Tensor:
    """Random ``image_size`` crop and horizontal flip of an already resized image."""
    resize_size = img.width
    left = rng.randint(0, resize_size - image_size)
    top = rng.randint(0, resize_size - image_size)
    img = img.crop((left, top, left + image_size, top + image_size))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(img)


def eval_image(img: Image.Image, image_size: int, resize_size: int) -> torch.Tensor:
    img = resized(img, resize_size)
    img = img.crop(center_crop_box(resize_size, resize_size, image_size))
    return to_tensor(img)


def check_sizes(image_size: int, resize_size: int) -> None:
    if image_size < 8:
        raise ValueError(f"--image-size must be >= 8, got {image_size}")
    if resize_size < image_size:
        raise ValueError(f"--resize-size ({resize_size}) must be >= --image-size ({image_size})")


def image_processor(image_size: int, resize_size: int):
    """The transformers image processor that reproduces ``eval_image``."""
    try:  # the Pillow backend matches eval_image bit for bit; the torchvision one resizes slightly differently
        from transformers import EfficientNetImageProcessorPil as Processor
    except ImportError:  # transformers 4.x
        from transformers import EfficientNetImageProcessor as Processor

    return Processor(
        do_resize=True, size={"height": resize_size, "width": resize_size}, resample=RESAMPLE,
        do_center_crop=True, crop_size={"height": image_size, "width": image_size},
        do_rescale=True, rescale_factor=1 / 127.5, rescale_offset=True,
        do_normalize=False, include_top=False,
    )
