"""A float64 reference of each resize filter: what the fast paths' output is measured against (PSNR).

Separable, no rounding anywhere, computed from the filters' definitions rather than from any library:

- ``area``: each output pixel is the exact mean of the input area it covers (input pixels are squares; a pixel
  partly covered counts by the covered fraction), which is what "area" resampling (OpenCV's INTER_AREA) means.
- ``bilinear`` / ``bicubic`` / ``lanczos``: the triangle, Keys cubic (a = -0.5) and Lanczos-3 kernels, widened
  by the downscale factor (antialiased) and sampled at the input pixel centres, weights normalised over the
  pixels inside the image, as Pillow, libvips and torchvision's antialias define them.

Slow (dense weight matrices): for tests and benchmarks on photo-sized images, never for the pipeline.
"""

from __future__ import annotations

import math

import numpy as np

REFERENCE_FILTERS = ("area", "bilinear", "bicubic", "lanczos")


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((x - 5.0) * x + 8.0) * x * a - 4.0 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _lanczos3(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)


_KERNELS = {"bilinear": (_triangle, 1.0), "bicubic": (_cubic, 2.0), "lanczos": (_lanczos3, 3.0)}


def weights(in_size: int, out_size: int, filter_name: str) -> np.ndarray:
    """(out_size, in_size) float64 matrix whose rows sum to 1."""
    scale = in_size / out_size
    if filter_name == "area":
        starts = np.arange(out_size)[:, None] * scale
        pixels = np.arange(in_size)[None, :]
        overlap = np.clip(np.minimum(starts + scale, pixels + 1) - np.maximum(starts, pixels), 0.0, None)
        matrix = overlap
    else:
        kernel, support = _KERNELS[filter_name]
        widen = max(scale, 1.0)
        centres = (np.arange(out_size)[:, None] + 0.5) * scale
        matrix = kernel((np.arange(in_size)[None, :] + 0.5 - centres) / widen)
        # outside the kernel's support exactly zero (np.sinc is not); keeps the matrix honest for wide images
        matrix[np.abs(np.arange(in_size)[None, :] + 0.5 - centres) >= support * widen] = 0.0
    return matrix / matrix.sum(axis=1, keepdims=True)


def reference_resize(pixels: np.ndarray, width: int, height: int, filter_name: str) -> np.ndarray:
    """``pixels`` (H, W) or (H, W, C) resized to (height, width[, C]) in float64, unrounded, unclipped."""
    if filter_name not in REFERENCE_FILTERS:
        raise ValueError(f"unknown filter {filter_name!r}; expected one of {', '.join(REFERENCE_FILTERS)}")
    values = np.asarray(pixels, dtype=np.float64)
    rows = weights(values.shape[0], height, filter_name)
    cols = weights(values.shape[1], width, filter_name)
    out = np.tensordot(rows, values, axes=(1, 0))  # (height, W[, C]); BLAS, unlike a plain einsum
    return np.moveaxis(np.tensordot(cols, out, axes=(1, 1)), 0, 1)


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of an 8-bit ``output`` against a float ``reference`` of the same shape."""
    error = np.asarray(output, dtype=np.float64) - reference
    mse = float(np.mean(error * error))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 * 255.0 / mse)
