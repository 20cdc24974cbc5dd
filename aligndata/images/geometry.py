"""The resize modes' arithmetic, shared by the Pillow path (process.resize_image) and the array path
(resize_pixels), so both give the same output sizes: img2dataset's modes and ``resize_only_if_bigger``."""

from __future__ import annotations

from dataclasses import dataclass

RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")


@dataclass(frozen=True)
class ResizePlan:
    """``untouched``: returned as is. Otherwise scale to ``scaled`` (w, h) (may equal the input size), then crop
    to ``crop`` (left, top, right, bottom) or pad to a ``pad_to`` square."""

    untouched: bool
    scaled: tuple[int, int] | None = None
    crop: tuple[int, int, int, int] | None = None
    pad_to: int | None = None


def plan_resize(width: int, height: int, mode: str, size: int, only_downscale: bool = True) -> ResizePlan:
    """See process.resize_image for the modes. Raises ValueError for an unknown mode or a size < 1."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {', '.join(RESIZE_MODES)}")
    if size < 1:
        raise ValueError(f"resize size must be >= 1, got {size}")
    if mode == "no":
        return ResizePlan(True)
    uses_smaller_side = mode in ("keep_ratio", "center_crop")
    side = min(width, height) if uses_smaller_side else max(width, height)
    if only_downscale and side <= size:
        return ResizePlan(True)
    scale = size / side
    scaled = (max(1, round(width * scale)), max(1, round(height * scale)))  # the other side rounded, >= 1 px
    if mode == "center_crop":
        left, top = (scaled[0] - size) // 2, (scaled[1] - size) // 2
        return ResizePlan(False, scaled, crop=(left, top, left + size, top + size))
    if mode == "border":
        return ResizePlan(False, scaled, pad_to=size)
    return ResizePlan(False, scaled)
