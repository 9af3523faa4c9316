"""Data augmentation as layers: random transformations in training, the identity at inference.

An augmentation held by the model (as Keras's ``RandomTranslation``) is applied batch by batch to
the images already in memory, so training data stay ``uint8`` and nothing is copied per epoch; it
is saved with the model, dropped by inference and export, and replayed exactly by a resumed run
(its generator's state is saved like Dropout's).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import check_int
from .layers import OnnxGraph, _RandomLayer

__all__ = ["RandomShift"]


class RandomShift(_RandomLayer):
    """Shift each image of a training batch by a random whole number of pixels.

    Each sample gets its own vertical and horizontal shift, drawn uniformly from
    ``-max_shift .. max_shift``; pixels shifted in are 0 (put the layer after a
    :class:`~chainrule.Rescaling` that maps the background to 0). At inference it is the identity.

    Parameters
    ----------
    max_shift : int
        The largest shift in pixels, along each axis (>= 0; 0 never shifts).
    rng : numpy.random.Generator, int or None
        Source of the shifts.

    Shape
    -----
    x : (N, C, H, W) -> y : (N, C, H, W)

    Backward
    --------
    A shift with zero fill is linear, and its transpose shifts back: ``dx`` is ``dy`` moved by the
    opposite shift, 0 where the input pixel fell off the edge.

    Examples
    --------
    >>> layer = RandomShift(2, rng=0)
    >>> x = np.zeros((1, 1, 5, 5), np.float32); x[0, 0, 2, 2] = 1
    >>> float(layer.forward(x, training=True).sum())  # the pixel moved, but stayed in the image
    1.0
    >>> layer.forward(x) is x  # inference: the identity
    True
    """

    preserves_shape = True

    def __init__(self, max_shift: int = 2, rng: np.random.Generator | int | None = None) -> None:
        super().__init__(rng)
        self.max_shift = check_int(max_shift, "max_shift", minimum=0)
        # Where each output pixel comes from in the zero-padded input (None: no shift applied).
        self._index: tuple[np.ndarray, ...] | None = None

    @property
    def input_shape(self) -> tuple[None, None, None]:
        return (None, None, None)

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        s = self.max_shift
        if not training or s == 0:
            self._index = None
            return x
        n, c, h, w = x.shape
        dy, dx = self.rng.integers(-s, s + 1, size=(2, n))
        # Output pixel (i, j) of sample k is input pixel (i - dy[k], j - dx[k]), which sits at
        # (i - dy[k] + s, j - dx[k] + s) in the input padded by s zeros on every side.
        rows = np.arange(h) + (s - dy)[:, None]
        cols = np.arange(w) + (s - dx)[:, None]
        self._index = (
            np.arange(n)[:, None, None, None],
            np.arange(c)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        )
        padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)))
        return padded[self._index]

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray | None:
        if self._index is None:
            return dy
        if not input_grad:
            return None
        s = self.max_shift
        n, c, h, w = dy.shape
        padded = np.zeros((n, c, h + 2 * s, w + 2 * s), dy.dtype)
        padded[self._index] = dy  # each sample's map is one-to-one: no two outputs share a source
        return padded[:, :, s : s + h, s : s + w]

    def config(self) -> dict[str, Any]:
        return {"max_shift": self.max_shift}

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        return x  # the identity at inference

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift})"
