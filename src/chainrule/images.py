"""Reading a photo or drawing of a digit and preparing it like an MNIST image.

MNIST digits are white on black, scaled so the digit fits a 20 x 20 box, and centred by their
centre of mass in a 28 x 28 image. :func:`prepare_digit` does the same to a greyscale array of a
drawing or a photo (NumPy only): it finds the ink against the paper's own level, which may vary
across the image (uneven light, a shadow), keeps the digit's connected strokes, then crops,
scales by area averaging and centres. :func:`load_digit` reads a PNG/JPEG file for it; that
needs Pillow (``pip install "chainrule[cli]"``).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

__all__ = ["find_digit", "label_components", "load_digit", "prepare_digit"]


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


#: Larger images are first reduced by area averaging (an integer factor) until no side exceeds
#: this: ample for a digit that ends up 20 pixels tall, and it averages a camera's noise away.
MAX_SIDE = 512
#: The background is the image's grey opening (or closing, for dark ink) with a square window of
#: 1/WINDOW_SHARE of the longer side: wider than the strokes of a digit that fills the frame, so
#: they are removed, while a lighting gradient or a shadow's edge, wider than that, stays.
WINDOW_SHARE = 5
#: ... and at least this many pixels: on an image of up to half this size (an MNIST digit, a small
#: drawing), which the digit fills, the window spans the whole image and the background is flat.
MIN_WINDOW = 65
#: A border whose levels (10th to 90th percentile, after a 3 x 3 blur) differ by less than this
#: is even paper: the background is then its median, one level, whatever the digit's strokes.
FLAT = 0.1
#: The ink's contrast is taken relative to the paper's level, but never a level below this: on
#: black (a drawing's canvas, a dark board) it would only magnify the noise.
PAPER_FLOOR = 0.05


def prepare_digit(grey: np.ndarray) -> np.ndarray:
    """Turn a greyscale image ``(H, W)`` in [0, 1] into an MNIST-like ``(784,)`` float32 vector.

    As MNIST was made: the digit is cropped to its ink, scaled (area averaging) so its longer
    side is 20 pixels, and placed in a 28 x 28 image with its centre of mass at the centre;
    white ink on black, 0 to 1. The ink is found as in :func:`find_digit`: against a background
    estimated from the image itself (lighting gradients and shadows are removed), with either
    polarity, keeping the largest connected strokes.

    Args:
        grey: ``(H, W)`` greyscale levels in [0, 1], any size, dark ink on light paper or light
            ink on dark.

    Returns:
        ``(784,)`` float32 in [0, 1], the 28 x 28 image row by row.

    Raises:
        ValueError: if ``grey`` is not a non-empty 2-D array of finite numbers, or holds no
            digit (``the image is blank: no digit found``).

    Shape:
        ``(H, W)`` -> ``(784,)``.

    Example:
        >>> x = prepare_digit(drawing)  # doctest: +SKIP
        >>> model.predict(x[None, :] * 255)  # doctest: +SKIP
    """
    ink, _ = find_digit(grey)
    h, w = ink.shape
    scale = 20.0 / max(h, w)
    digit = _area_resize(ink, max(1, round(h * scale)), max(1, round(w * scale)))
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


def find_digit(grey: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The digit's ink, cropped, and where it was found in ``grey``.

    1. Images larger than :data:`MAX_SIDE` are reduced by area averaging.
    2. The polarity: against the median of each block of a 12 x 12 grid (the paper, whichever
       its tone), the ink is the side whose pixels stand out more beyond the noise.
    3. The background: if the border is even (:data:`FLAT`), its median. Otherwise the
       image's grey closing (dark ink) or opening (light ink), after a 3 x 3
       blur, with a square window wider than the thickest stroke (:data:`WINDOW_SHARE`,
       :data:`MIN_WINDOW`): the strokes are removed, a lighting gradient or a shadow's edge
       stays. The ink is the difference, relative to the paper's level (light multiplies both).
    4. The noise level ``sigma`` from the median absolute deviation; the ink mask is what
       exceeds both 3 sigma and 30 % of the strongest ink (of 3 x 3 means).
    5. The connected parts of the mask (8-connected, :func:`label_components`): of the parts
       that are not specks, those with at least 60 % of the strongest one's median contrast
       (where a shadow's corner was not followed exactly the leftover is fainter than ink); of
       these, the largest and those at least a tenth its size. The pixels next to them keep
       their soft edges; the rest is dropped.

    Args:
        grey: ``(H, W)`` greyscale levels in [0, 1].

    Returns:
        ``(ink, (top, left, bottom, right))``: the ink in [0, 1] (1 where the strokes are
        strongest) cropped to the digit at the analysed scale, and that crop's box in ``grey``'s
        pixels (``bottom`` and ``right`` exclusive).

    Raises:
        ValueError: as :func:`prepare_digit`.

    Shape:
        ``(H, W)`` -> ``((h, w), 4-tuple)`` with ``h <= H``, ``w <= W``.

    Example:
        >>> ink, (top, left, bottom, right) = find_digit(photo)  # doctest: +SKIP
    """
    grey = np.asarray(grey)
    if grey.ndim != 2 or min(grey.shape) < 1 or grey.dtype.kind not in "biuf":
        raise ValueError(
            f"expected a 2-D greyscale image of numbers, got shape {grey.shape} of {grey.dtype}"
        )
    if not np.isfinite(grey).all():
        raise ValueError("the greyscale image holds NaN or infinite values")
    factor = -(-max(grey.shape) // MAX_SIDE)
    image = _reduce(grey.astype(np.float64), factor)
    window = max(MIN_WINDOW, -(-max(image.shape) // WINDOW_SHARE) | 1)  # odd
    # Polarity: against a local median (the paper, whichever its tone), the ink is the side
    # that stands out more beyond the noise. (An opening would not do: the paper inside a loop
    # of dark ink is itself a narrow light feature.)
    block = max(2, -(-max(image.shape) // 12))
    paper = _upsample(_filter3(_blocks(image, block, 50), np.median), block, image.shape)
    dark_ink = _stand_out(paper - image) > _stand_out(image - paper)
    # A light 3 x 3 blur first, so the window's extrema follow the paper, not its grain.
    smooth = _box3(image)
    edge = np.concatenate([smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1]])
    low, high = np.percentile(edge, [10, 90])
    if high - low < FLAT:  # an even border: a drawing or a scan, whose paper is one level
        background = np.full(image.shape, np.median(edge))
    else:
        window = max(window, _thickest(1.0 - image if dark_ink else image, block) + 4)
        if dark_ink:  # a grey closing: the paper with the dark strokes filled in
            background = _slide(_slide(smooth, window, np.maximum), window, np.minimum)
        else:  # a grey opening
            background = _slide(_slide(smooth, window, np.minimum), window, np.maximum)
    residual = background - image if dark_ink else image - background
    # Light multiplies what the paper and the ink reflect: relative to the paper's own level,
    # the ink's contrast is the same in a shadow as in full light.
    residual /= np.maximum(background, PAPER_FLOOR)
    sigma = _sigma(residual)
    ink = np.clip(residual, 0.0, None)
    peak = float(_box3(ink).max())  # of 3 x 3 means: a speck of grain is no stroke
    mask = ink > max(0.3 * peak, 3 * sigma)
    if peak < 0.04 or not mask.any():
        raise ValueError("the image is blank: no digit found")
    labels, sizes = label_components(mask)
    strength = _medians(ink, labels, len(sizes))
    # The digit's strokes share one contrast; where a background with corners was not followed
    # exactly (the meeting of a shadow and a gradient), the leftover is fainter. So: among the
    # parts not mere specks, those nearly as strong as the strongest; of these, the largest and
    # those at least a tenth its size.
    candidate = sizes >= max(0.02 * sizes.max(), 2e-4 * image.size, 4)
    best = strength[candidate].max() if candidate.any() else 0.0
    if best <= 6 * sigma:  # the strongest part is only grain
        raise ValueError("the image is blank: no digit found")
    strong = candidate & (strength >= 0.6 * best)
    kept = np.isin(labels, np.flatnonzero(strong & (sizes >= 0.1 * sizes[strong].max())) + 1)
    level = float(np.percentile(ink[kept], 90))
    # The pixels next to the strokes keep their soft edges (anti-aliasing, blur).
    ink = np.where(_slide(kept, 3, np.maximum), np.minimum(ink / level, 1.0), 0.0)
    rows, cols = np.nonzero(ink)
    top, bottom, left, right = (
        int(rows.min()),
        int(rows.max()) + 1,
        int(cols.min()),
        int(cols.max()) + 1,
    )
    height, width = grey.shape
    box = (top * factor, left * factor, min(bottom * factor, height), min(right * factor, width))
    return ink[top:bottom, left:right].astype(np.float32), box


def label_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label the 8-connected components of a boolean image.

    Works on runs (horizontal stretches of ``True``): runs in neighbouring rows that touch,
    diagonals included, are joined by a vectorised union-find (hooking each root onto the
    smallest root it touches, then pointer jumping), so the cost follows the number of runs,
    not the pixels or the components' shapes.

    Args:
        mask: ``(H, W)`` booleans.

    Returns:
        ``(labels, sizes)``: ``labels`` ``(H, W)`` int64, 0 off the mask and 1 to ``n`` on it,
        numbered in the order of each component's first pixel (row by row); ``sizes`` ``(n,)``
        the pixels of each.

    Shape:
        ``(H, W)`` -> ``((H, W), (n,))``.

    Example:
        >>> label_components(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]], bool))[1]
        array([2, 2])
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    h, w = mask.shape
    labels = np.zeros((h, w), np.int64)
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    start_row, start = np.nonzero(edges == 1)  # row-major: runs in reading order
    _, end = np.nonzero(edges == -1)  # exclusive ends, in the same order
    n = len(start)
    if n == 0:
        return labels, np.zeros(0, np.int64)
    # Run a in row y touches run b in row y + 1 when b starts at most one past a's last pixel
    # and ends at most one before a's first: a contiguous range of row y + 1's runs.
    stride = w + 2
    first = np.searchsorted(start_row * stride + end, (start_row + 1) * stride + start)
    last = np.searchsorted(start_row * stride + start, (start_row + 1) * stride + end, "right")
    count = np.maximum(last - first, 0)
    a = np.repeat(np.arange(n), count)
    b = np.repeat(first - np.cumsum(count) + count, count) + np.arange(count.sum())
    parent = np.arange(n)
    while True:
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            break
        lo, hi = np.minimum(ra[differ], rb[differ]), np.maximum(ra[differ], rb[differ])
        np.minimum.at(parent, hi, lo)  # a root hooks onto the smallest root it touches
        while True:  # pointer jumping: every run points straight at its root again
            grand = parent[parent]
            if (grand == parent).all():
                break
            parent = grand
    roots, component = np.unique(parent, return_inverse=True)
    length = end - start
    sizes = np.bincount(component, weights=length, minlength=len(roots)).astype(np.int64)
    flat = np.repeat(start_row * w + start - np.cumsum(length) + length, length)
    labels.ravel()[flat + np.arange(length.sum())] = np.repeat(component + 1, length)
    return labels, sizes


def _medians(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """The median of ``values`` over each label 1 to ``n``."""
    on = labels > 0
    order = np.lexsort((values[on], labels[on]))
    ranked = values[on][order]
    counts = np.bincount(labels[on], minlength=n + 1)[1:]
    starts = np.cumsum(counts) - counts
    return (ranked[starts + (counts - 1) // 2] + ranked[starts + counts // 2]) / 2


def _reduce(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` shrunk ``factor`` times by averaging blocks (the edge repeated to fill)."""
    if factor == 1:
        return image
    h, w = image.shape
    hh, ww = -(-h // factor), -(-w // factor)
    padded = np.pad(image, ((0, hh * factor - h), (0, ww * factor - w)), mode="edge")
    return padded.reshape(hh, factor, ww, factor).mean(axis=(1, 3))


def _thickest(ink_up: np.ndarray, block: int) -> int:
    """The side of the widest square that fits in the ink (bright) of ``ink_up``: a window wider
    than this removes every stroke. The paper here is each block's lower quartile (paper unless
    three quarters of the block is ink), opened over 3 x 3 blocks: no cluster of 2 x 2 ink blocks
    survives that, so a thick stroke is not taken for paper."""
    floor = _filter3(_filter3(_blocks(ink_up, block, 25), np.min), np.max)
    rough = _box3(ink_up - _upsample(floor, block, ink_up.shape))  # blurred as the image is
    solid = rough > 0.5 * rough.max()
    thin, thick = 0, max(ink_up.shape) // 2  # a square of side 2 * thin + 1 fits in the ink
    while thin < thick:  # bisection: one erosion each, whatever the width
        half = (thin + thick + 1) // 2
        fits = _slide(solid, 2 * half + 1, np.minimum).any()
        thin, thick = (half, thick) if fits else (thin, half - 1)
    return 2 * thin + 1


def _blocks(image: np.ndarray, block: int, percentile: float) -> np.ndarray:
    """The ``percentile`` of each ``block`` x ``block`` tile: a ``(ceil(H/b), ceil(W/b))`` grid."""
    h, w = image.shape
    gh, gw = -(-h // block), -(-w // block)
    padded = np.pad(image, ((0, gh * block - h), (0, gw * block - w)), mode="edge")
    tiles = padded.reshape(gh, block, gw, block).transpose(0, 2, 1, 3).reshape(gh, gw, -1)
    return np.percentile(tiles, percentile, axis=-1)


def _filter3(grid: np.ndarray, reduce: Any) -> np.ndarray:
    """``reduce`` (such as ``np.median``) over each 3 x 3 neighbourhood (the edge repeated)."""
    h, w = grid.shape
    padded = np.pad(grid, 1, mode="edge")
    stack = np.stack([padded[i : i + h, j : j + w] for i in range(3) for j in range(3)])
    return reduce(stack, axis=0)


def _upsample(grid: np.ndarray, block: int, shape: tuple[int, ...]) -> np.ndarray:
    """The grid of block values interpolated bilinearly between the blocks' centres."""

    def weights(cells: int, size: int) -> np.ndarray:
        centres = (np.arange(cells) + 0.5) * block - 0.5
        eye = np.eye(cells)
        return np.stack([np.interp(np.arange(size), centres, eye[k]) for k in range(cells)], 1)

    return weights(grid.shape[0], shape[0]) @ grid @ weights(grid.shape[1], shape[1]).T


def _slide(image: np.ndarray, size: int, op: Any) -> np.ndarray:
    """``op`` (``np.minimum`` or ``np.maximum``) over each ``size`` x ``size`` square centred on a
    pixel (``size`` odd; the edge repeated beyond the image). Van Herk / Gil-Werman: running
    extrema within blocks of ``size``, forwards and backwards, so the cost does not grow with
    ``size``."""
    for axis in (0, 1):
        x = np.moveaxis(image, axis, -1)
        n = x.shape[-1]
        half = size // 2
        blocks = -(-(n + 2 * half) // size)
        pad = (half, blocks * size - n - half)
        x = np.pad(x, [(0, 0), pad], mode="edge").reshape(-1, blocks, size)
        ahead = op.accumulate(x, axis=-1).reshape(len(x), -1)
        behind = op.accumulate(x[..., ::-1], axis=-1)[..., ::-1].reshape(len(x), -1)
        image = np.moveaxis(op(behind[:, :n], ahead[:, size - 1 : size - 1 + n]), -1, axis)
    return image


def _box3(image: np.ndarray) -> np.ndarray:
    """The mean over each 3 x 3 neighbourhood (the edge repeated)."""
    h, w = image.shape
    padded = np.pad(image, 1, mode="edge")
    total = np.zeros((h, w))
    for i in range(3):
        for j in range(3):
            total += padded[i : i + h, j : j + w]
    return total / 9


def _stand_out(residual: np.ndarray) -> float:
    """How much of ``residual`` lies beyond three times its noise: the ink's total strength."""
    return float(np.clip(residual - 3 * _sigma(residual), 0.0, None).sum())


def _sigma(values: np.ndarray) -> float:
    """The noise's standard deviation, from the median absolute deviation (robust to ink)."""
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _area_resize(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``image`` resized to ``(rows, cols)``, each output pixel the mean of the area it covers."""

    def weights(out: int, size: int) -> np.ndarray:
        step = size / out
        lo = np.arange(out)[:, None] * step
        i = np.arange(size)[None, :]
        return np.clip(np.minimum(i + 1, lo + step) - np.maximum(i, lo), 0, None) / step

    return weights(rows, image.shape[0]) @ image @ weights(cols, image.shape[1]).T
