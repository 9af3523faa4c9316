"""Reading a photo or drawing of a digit and preparing it like an MNIST image.

MNIST digits are white on black, scaled so the digit fits a 20 x 20 box, and centred by their
centre of mass in a 28 x 28 image. :func:`load_digit` does the same to any PNG/JPEG: greyscale,
invert if the background is light, crop to the ink, scale, centre. Needs Pillow
(``pip install "chainrule[cli]"``).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

__all__ = ["load_digit", "prepare_digit"]


def load_digit(path: str | os.PathLike[str]) -> np.ndarray:
    """Load an image file of one digit as an MNIST-like ``(784,)`` float32 vector in [0, 1].

    The image is turned upright by its EXIF orientation (photos), 16-bit greyscale keeps its
    levels, and a transparent background (a drawing exported from a canvas) is laid on paper
    that contrasts with the ink.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an image Pillow can read, or has more pixels than Pillow opens
        safely (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 million).
    """
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError('reading images needs Pillow: pip install "chainrule[cli]"') from exc
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            # Pillow only warns below twice its pixel limit; a digit never needs that many.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                grey = _greyscale(ImageOps.exif_transpose(opened))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path} is too large to read safely: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path} is not a readable image: {exc}") from exc
    return prepare_digit(grey)


def _greyscale(im: Any) -> np.ndarray:
    """A Pillow image as greyscale ``(H, W)`` float32 in [0, 1]."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16/32-bit and float greyscale
        # Their range varies (12-bit data in 16 bits, 8-bit data in 32): stretch what is there.
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        return ((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)).astype(np.float32)
    if im.mode not in ("RGBA", "LA", "PA") and "transparency" not in im.info:
        return np.asarray(im.convert("L"), dtype=np.float32) / 255
    grey, alpha = (np.asarray(band, dtype=np.float32) / 255 for band in im.convert("LA").split())
    opaque = alpha > 0.5
    # Dark ink goes on white paper, light ink on black: either way the digit stays visible.
    paper = 1.0 if not opaque.any() or grey[opaque].mean() < 0.5 else 0.0
    return grey * alpha + paper * (1.0 - alpha)


def prepare_digit(grey: np.ndarray) -> np.ndarray:
    """Turn a greyscale image ``(H, W)`` in [0, 1] into an MNIST-like ``(784,)`` float32 vector.

    The border decides the polarity: a light border means dark ink on paper, which is inverted.
    """
    from PIL import Image

    if grey.ndim != 2 or min(grey.shape) < 1:
        raise ValueError(f"expected a 2-D greyscale image, got shape {grey.shape}")

    def border(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])

    ink = 1.0 - grey if np.median(border(grey)) > 0.5 else grey.astype(np.float32)
    ink = np.clip(ink - np.median(border(ink)), 0.0, None)  # the paper's tone becomes 0
    if ink.max() <= 0.0:
        raise ValueError("the image is blank: no digit found")
    ink /= ink.max()
    rows, cols = np.nonzero(ink > 0.2)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = ink.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pixels = np.rint(ink * 255).astype(np.uint8)  # rounded: truncation would darken by 0.5 level
    small = Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS)
    digit = np.asarray(small, dtype=np.float32) / 255
    canvas = np.zeros((28, 28), np.float32)
    # Place the 20x20 box so the centre of mass lands where MNIST puts it: pixel (14, 14), the mean
    # over its test digits (13.99, 14.00), not the geometric centre 13.5, which moved half of the
    # digits by a pixel.
    total = digit.sum()
    cy = (digit.sum(axis=1) @ np.arange(digit.shape[0])) / total
    cx = (digit.sum(axis=0) @ np.arange(digit.shape[1])) / total
    top = int(np.clip(round(14.0 - cy), 0, 28 - digit.shape[0]))
    left = int(np.clip(round(14.0 - cx), 0, 28 - digit.shape[1]))
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return np.clip(canvas, 0.0, 1.0).ravel()
