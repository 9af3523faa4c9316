"""Photo-like pictures of MNIST digits: uneven light, a shadow, grain, a tilt and JPEG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def render(
    digit: np.ndarray, size: int, angle: float, frame: tuple[int, int], corner: tuple[int, int]
) -> np.ndarray:
    """The 28x28 ``uint8`` digit scaled to ``size`` px, turned ``angle`` degrees and placed with
    its top-left at ``corner`` of a ``frame`` of zeros: the ink's coverage, 0 to 1."""
    big = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    turned = np.asarray(big.rotate(angle, Image.Resampling.BICUBIC, expand=True), np.float64)
    ink = np.zeros(frame)
    top, left = corner
    ink[top : top + turned.shape[0], left : left + turned.shape[1]] = turned / 255
    return ink


def photograph(
    ink: np.ndarray, rng: np.random.Generator, dark_ink: bool = True, quality: int = 70
) -> np.ndarray:
    """``ink`` (0 to 1) as a camera might see it, as 8-bit greyscale after a JPEG round trip:
    paper (or board) lit from one side (half as bright on the other), a soft-edged shadow that
    takes 40 % of the light, Gaussian grain of 3 % and JPEG at ``quality``."""
    h, w = ink.shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(theta) * xx + np.sin(theta) * yy
    light = 1.0 - 0.5 * (ramp - ramp.min()) / (ramp.max() - ramp.min())
    phi = rng.uniform(0, 2 * np.pi)  # the shadow's edge: a line through a point of the middle
    cy, cx = rng.uniform(0.3, 0.7) * h / max(h, w), rng.uniform(0.3, 0.7) * w / max(h, w)
    side = np.cos(phi) * (xx - cx) + np.sin(phi) * (yy - cy)
    light *= 1.0 - 0.4 / (1.0 + np.exp(-side / 0.02))
    paper, pen = (0.85, 0.1) if dark_ink else (0.2, 0.8)
    value = light * (paper * (1 - ink) + pen * ink) + rng.normal(0, 0.03, ink.shape)
    pixels = np.rint(np.clip(value, 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as jpeg:
        return np.asarray(jpeg.convert("L"), np.float32) / 255
