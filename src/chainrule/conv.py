"""Convolution and pooling on images: :class:`Conv2D`, :class:`MaxPool2D`, :class:`AvgPool2D`.

The public layout is NCHW, as in PyTorch and ONNX: inputs ``(N, C, H, W)``, a convolution's
weight ``(out_channels, in_channels, kH, kW)``. Inside, the layers work on NHWC views of the same
arrays (``x.transpose(0, 2, 3, 1)``), where a pixel's channels are contiguous:

* the convolution is one matrix product (im2col): every ``kH x kW x C`` patch of the padded input
  becomes a row of a float32 matrix, copied in one pass from a
  ``numpy.lib.stride_tricks.sliding_window_view`` of the input (a view, no copy) and multiplied by
  the weight flattened to ``(out_channels, kH * kW * C)``. The backward pass is the same chain rule
  as :class:`~chainrule.Dense`'s on those rows: ``dW = dy.T @ col``, ``dcol = dy @ W``, and col2im
  adds each kernel offset's slice of ``dcol`` back onto the input it was copied from (one strided
  addition per offset, never per pixel or sample);
* the outputs are NCHW views of NHWC arrays, so the next convolution or pooling layer gets its
  NHWC view without a copy. :class:`~chainrule.Flatten` flattens them in NCHW order (a copy), as
  PyTorch and ONNX do.

Output sizes follow PyTorch's floor rule: ``H_out = floor((H + 2 * padding - kernel) / stride) +
1`` (likewise for W; pooling has no padding), so rows and columns a window cannot reach at the
bottom and right are ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._checks import as_generator, check_float_dtype, check_int
from .initializers import INITIALIZERS, init_weight
from .layers import Layer, OnnxGraph

__all__ = ["AvgPool2D", "Conv2D", "MaxPool2D"]

Pair = tuple[int, int]


def _pair(value: Any, name: str, minimum: int = 1) -> Pair:
    """An int or a pair of ints (rows, columns), each >= ``minimum``, as a pair."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return (
            check_int(value[0], name, minimum=minimum),
            check_int(value[1], name, minimum=minimum),
        )
    v = check_int(value, name, minimum=minimum)
    return (v, v)


def _out_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """PyTorch's floor rule."""
    return (size + 2 * padding - kernel) // stride + 1


def _size_text(pair: Pair) -> str:
    return f"{pair[0]}x{pair[1]}"


def _minimum_text(least: Pair) -> str:
    return f"H, W >= {least[0]}" if least[0] == least[1] else f"H >= {least[0]}, W >= {least[1]}"


def _offsets(
    x: np.ndarray, window: Pair, stride: Pair, out: Pair
) -> Iterator[tuple[int, int, np.ndarray]]:
    """For each kernel offset ``(i, j)``, the strided view of the NHWC array ``x`` that holds
    the pixel at that offset of every window: ``x[:, i + stride * r, j + stride * c, :]``."""
    (kh, kw), (sh, sw), (ho, wo) = window, stride, out
    for i in range(kh):
        for j in range(kw):
            yield i, j, x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]


def _check_image(layer: Layer, x: np.ndarray, channels: int | None, least: Pair) -> None:
    """The boundary error of an image layer: ``Conv2D(1 -> 32, 5x5) expected input of shape
    (N, 1, H, W) with H, W >= 5, got (64, 784)``."""
    ok = x.ndim == 4 and x.shape[2] >= least[0] and x.shape[3] >= least[1]
    if ok and channels is not None and x.shape[1] != channels:
        ok = False
    if not ok:
        c = "C" if channels is None else str(channels)
        raise ValueError(
            f"{layer!r} expected input of shape (N, {c}, H, W) with {_minimum_text(least)}, "
            f"got {x.shape}"
        )


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in every deep-learning library) with a bias.

    ``y[n, o, r, c] = b[o] + sum over (ch, i, j) of W[o, ch, i, j] * xp[n, ch, r * sh + i,
    c * sw + j]``, where ``xp`` is the input with ``padding`` zeros on each side.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and of the output.
    kernel_size : int or (int, int)
        Window height and width.
    stride : int or (int, int)
        Step between windows, down and across.
    padding : int or (int, int)
        Zeros added above and below (first), left and right (second).
    init : {"he", "xavier", "normal"}
        Weight initialiser, with fan-in ``in_channels * kH * kW``; the bias starts at zero.
    rng : numpy.random.Generator, int or None
        Source of the initial weights.
    dtype : floating dtype
        Of the parameters and of the computation.

    Shape
    -----
    x : (N, in_channels, H, W) -> y : (N, out_channels, H_out, W_out), with PyTorch's floor rule
    ``H_out = floor((H + 2 * padding - kH) / stride) + 1`` (likewise W_out): rows and columns at
    the bottom and right that no window reaches are ignored. The input must leave at least one
    window: ``H + 2 * padding >= kH``.

    Backward
    --------
    With ``col`` the im2col matrix (one row per output pixel, one column per weight of a filter):
    ``dW = dy.T @ col``, ``db = dy.sum()`` over samples and pixels, ``dcol = dy @ W``, and ``dx``
    is ``dcol`` added back onto the pixels each row was copied from (col2im).

    Examples
    --------
    >>> conv = Conv2D(1, 8, 5, padding=2, rng=0)
    >>> conv.forward(np.zeros((4, 1, 28, 28), np.float32)).shape
    (4, 8, 28, 28)
    >>> conv.params["W"].shape
    (8, 1, 5, 5)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        init: str = "he",
        rng: np.random.Generator | int | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels")
        self.out_channels = check_int(out_channels, "out_channels")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding", minimum=0)
        if init not in INITIALIZERS:
            raise ValueError(f"Unknown init {init!r}; choose one of {sorted(INITIALIZERS)}")
        self.init = init
        dtype = check_float_dtype(dtype)
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        # Drawn as a (fan_in, out) matrix, as Dense draws its weight, then laid out as
        # (out, in, kH, kW).
        w = init_weight(init, (fan_in, self.out_channels), as_generator(rng), dtype)
        self.params = {
            "W": np.ascontiguousarray(w.T.reshape(self.out_channels, self.in_channels, kh, kw)),
            "b": np.zeros(self.out_channels, dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._col: np.ndarray | None = None  # im2col: (N * H_out * W_out, kH * kW * C + 1)
        self._w: np.ndarray | None = None  # [W | b] as (out, kH * kW * C + 1)
        self._in_shape: tuple[int, ...] | None = None
        # Work arrays of the training loop, kept between batches of one shape: a fresh 10-40 MB
        # array per batch costs as much in page faults as the product that fills it.
        self._scratch: dict[str, np.ndarray] = {}

    def _work(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, bool]:
        """An uninitialised array of the layer's own (never returned to a caller), and whether
        it is the one of the last call (kept contents)."""
        old = self._scratch.get(name)
        if old is not None and old.shape == shape and old.dtype == dtype:
            return old, True
        self._scratch[name] = new = np.empty(shape, dtype)
        return new, False

    @property
    def input_shape(self) -> tuple[int, None, None]:
        return (self.in_channels, None, None)

    @property
    def _least(self) -> Pair:
        """The smallest input height and width that leave one window."""
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        return (max(1, kh - 2 * ph), max(1, kw - 2 * pw))

    @classmethod
    def declared_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        c_in = check_int(config.get("in_channels"), "in_channels")
        c_out = check_int(config.get("out_channels"), "out_channels")
        kh, kw = _pair(config.get("kernel_size"), "kernel_size")
        return {"W": (c_out, c_in, kh, kw), "b": (c_out,)}

    def _check_input(self, x: np.ndarray) -> None:
        _check_image(self, x, self.in_channels, self._least)

    def _extended_weight(self) -> np.ndarray:
        """``[W | b]``: the weight as ``(out, kH * kW * C)``, in the column order of im2col's
        rows, with the bias as one more column (im2col's rows end with a 1)."""
        w, b = self.params["W"], self.params["b"]
        k = w[0].size
        extended = np.empty((self.out_channels, k + 1), w.dtype)
        extended[:, :k] = w.transpose(0, 2, 3, 1).reshape(self.out_channels, k)
        extended[:, k] = b
        return extended

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        w = self._extended_weight()
        x = x.astype(w.dtype, copy=False)
        n, c, h, wd = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = _out_size(h, kh, sh, ph), _out_size(wd, kw, sw, pw)
        xh = x.transpose(0, 2, 3, 1)  # NHWC: a view
        if ph or pw:
            padded, kept = self._work("padded", (n, h + 2 * ph, wd + 2 * pw, c), w.dtype)
            if not kept:
                padded.fill(0)  # the border; the inside is written below, every batch
            padded[:, ph : ph + h, pw : pw + wd, :] = xh
            xh = padded
        # Every window as (N, H_out, W_out, C, kH, kW), without a copy; copied once into rows
        # ordered (kH, kW, C), which keeps each pixel's channels contiguous in the copy (measured
        # 6x faster than rows ordered (C, kH, kW) for 32 channels). Each row ends with a 1 that
        # multiplies the bias: the bias is added inside the product, and its gradient comes out
        # of the weight gradient's product (a separate broadcast addition over 16 channels, and
        # the sum for db, each took as long as the product).
        windows = sliding_window_view(xh, (kh, kw), axis=(1, 2))[:, ::sh, ::sw][:, :ho, :wo]
        k = kh * kw * c
        # The dtype given: an im2col buffer allocated without one would silently be float64.
        # Kept in training only (inference batches are larger and come once).
        col, kept = (
            self._work("col", (n * ho * wo, k + 1), w.dtype)
            if training
            else (
                np.empty((n * ho * wo, k + 1), w.dtype),
                False,
            )
        )
        if not kept:
            col[:, k] = 1
        np.copyto(col[:, :k].reshape(n, ho, wo, kh, kw, c), windows.transpose(0, 1, 2, 4, 5, 3))
        y = col @ w.T
        self._col, self._w, self._in_shape = col, w, x.shape
        return y.reshape(n, ho, wo, self.out_channels).transpose(0, 3, 1, 2)

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray | None:
        col, w, in_shape = self._col, self._w, self._in_shape
        assert col is not None
        assert w is not None
        assert in_shape is not None
        n, o, ho, wo = dy.shape
        # (N * H_out * W_out, out): free when dy is an NHWC array seen as NCHW (what the layers
        # here return), one copy otherwise.
        d = dy.astype(w.dtype, copy=False).transpose(0, 2, 3, 1).reshape(-1, o)
        c = self.in_channels
        (kh, kw), stride, (ph, pw) = self.kernel_size, self.stride, self.padding
        k = kh * kw * c
        g = d.T @ col  # [dW | db]: (out, kH * kW * C + 1)
        self.grads["W"][...] = g[:, :k].reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
        self.grads["b"][...] = g[:, k]
        if not input_grad:
            return None
        # dcol = d @ W, added back onto the pixels each row was copied from (col2im): one
        # product and one strided addition per kernel offset (np.add.at would be 10-50x
        # slower). Each offset's (N * H_out * W_out, C) block of dcol is made on its own, so that
        # it is contiguous and adds onto dx in runs of W_out * C values (measured 2.5x faster
        # than slicing the offsets' columns out of the whole dcol, in runs of C).
        per_offset = np.ascontiguousarray(w[:, :k].reshape(o, kh * kw, c).transpose(1, 0, 2))
        block, _ = self._work("dcol", (len(d), c), w.dtype)
        _, _, h, wd = in_shape
        dx = np.zeros((n, h + 2 * ph, wd + 2 * pw, c), w.dtype)
        for i, j, target in _offsets(dx, (kh, kw), stride, (ho, wo)):
            np.matmul(d, per_offset[i * kw + j], out=block)
            target += block.reshape(n, ho, wo, c)
        return dx[:, ph : ph + h, pw : pw + wd, :].transpose(0, 3, 1, 2)

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        w, b = (graph.initializer(key, self.params[key]) for key in ("W", "b"))
        (ph, pw) = self.padding
        return graph.node(
            "Conv",
            [x, w, b],
            kernel_shape=list(self.kernel_size),
            strides=list(self.stride),
            pads=[ph, pw, ph, pw],
        )

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "init": self.init,
        }

    def __repr__(self) -> str:
        extra = ""
        if self.stride != (1, 1):
            extra += f", stride={_size_text(self.stride)}"
        if self.padding != (0, 0):
            extra += f", padding={_size_text(self.padding)}"
        return (
            f"Conv2D({self.in_channels} -> {self.out_channels}, "
            f"{_size_text(self.kernel_size)}{extra})"
        )


class _Pool2D(Layer):
    """A pooling layer: a window slides over each channel of each image, without padding."""

    def __init__(self, pool_size: int | Sequence[int], stride: int | Sequence[int] | None) -> None:
        super().__init__()
        self.pool_size = _pair(pool_size, "pool_size")
        self.stride = self.pool_size if stride is None else _pair(stride, "stride")
        self._in_shape: tuple[int, ...] | None = None
        self._out_hw: Pair = (0, 0)

    @property
    def input_shape(self) -> tuple[None, None, None]:
        return (None, None, None)

    def _check_input(self, x: np.ndarray) -> None:
        _check_image(self, x, None, self.pool_size)

    def _windows(self, x: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        """The NHWC view of ``x`` at each offset of the window (see :func:`_offsets`)."""
        h, w = x.shape[2:]
        (kh, kw), (sh, sw) = self.pool_size, self.stride
        self._in_shape = x.shape
        self._out_hw = (_out_size(h, kh, sh), _out_size(w, kw, sw))
        return _offsets(x.transpose(0, 2, 3, 1), self.pool_size, self.stride, self._out_hw)

    def _scatter(self, parts: Iterator[np.ndarray], dtype: np.dtype) -> np.ndarray:
        """``dx`` from the gradient each window offset receives (summed where windows overlap).

        Windows side by side (stride = size) never share an input: each part is written straight
        into its place, and only inputs no window covers (the floor rule's leftovers) need zeros.
        """
        assert self._in_shape is not None
        n, c, h, w = self._in_shape
        (kh, kw), (sh, sw), (ho, wo) = self.pool_size, self.stride, self._out_hw
        apart = sh >= kh and sw >= kw
        covered = (ho - 1) * sh + kh == h and (wo - 1) * sw + kw == w and (sh, sw) == (kh, kw)
        dx = (np.empty if apart and covered else np.zeros)((n, h, w, c), dtype)
        offsets = _offsets(dx, self.pool_size, self.stride, self._out_hw)
        for (_, _, target), part in zip(offsets, parts, strict=True):
            if apart:
                np.copyto(target, part)
            else:
                target += part
        return dx.transpose(0, 3, 1, 2)

    def config(self) -> dict[str, Any]:
        return {"pool_size": list(self.pool_size), "stride": list(self.stride)}

    def __repr__(self) -> str:
        stride = "" if self.stride == self.pool_size else f", stride={_size_text(self.stride)}"
        return f"{type(self).__name__}({_size_text(self.pool_size)}{stride})"


class MaxPool2D(_Pool2D):
    """The largest value of each window, channel by channel.

    Parameters
    ----------
    pool_size : int or (int, int)
        Window height and width.
    stride : int or (int, int), optional
        Step between windows; by default the window's size (windows side by side).

    Shape
    -----
    x : (N, C, H, W) -> y : (N, C, H_out, W_out), with PyTorch's floor rule
    ``H_out = floor((H - pool_h) / stride) + 1`` (likewise W_out): rows and columns at the bottom
    and right that no window covers are ignored. No padding.

    Backward
    --------
    Each window's ``dy`` goes to the one input that was its maximum; on a tie, to the first of
    the tied inputs in row-major order within the window (so a tie never doubles a gradient).
    Where windows overlap, an input receives the sum over the windows it was the maximum of.

    Examples
    --------
    >>> pool = MaxPool2D(2)
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> pool.forward(x)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    """

    def __init__(
        self, pool_size: int | Sequence[int], stride: int | Sequence[int] | None = None
    ) -> None:
        super().__init__(pool_size, stride)
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None  # NHWC

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        views = [view for _, _, view in self._windows(x)]
        y = views[0].copy()
        for view in views[1:]:
            np.maximum(y, view, out=y)
        # Which input was the maximum is found again in backward, from x and y: the forward pass
        # (all of inference) stays a running maximum (measured: 7x faster than keeping the
        # arg-max here with a masked copy per offset).
        self._x, self._y = x, y
        return y.transpose(0, 3, 1, 2)

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray:
        x, y = self._x, self._y
        assert x is not None
        assert y is not None
        d = dy.transpose(0, 2, 3, 1)
        taken = np.zeros(y.shape, bool)  # windows whose maximum has had its gradient

        def parts() -> Iterator[np.ndarray]:
            for _, _, view in self._windows(x):
                hit = view == y
                hit &= ~taken  # a tie: the first maximum in row-major order, and only it
                taken[...] |= hit
                yield np.multiply(d, hit, dtype=dy.dtype)

        return self._scatter(parts(), dy.dtype)

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        return graph.node(
            "MaxPool", [x], kernel_shape=list(self.pool_size), strides=list(self.stride)
        )


class AvgPool2D(_Pool2D):
    """The mean of each window, channel by channel.

    Parameters
    ----------
    pool_size : int or (int, int)
        Window height and width.
    stride : int or (int, int), optional
        Step between windows; by default the window's size (windows side by side).

    Shape
    -----
    x : (N, C, H, W) -> y : (N, C, H_out, W_out), with PyTorch's floor rule
    ``H_out = floor((H - pool_h) / stride) + 1`` (likewise W_out). No padding.

    Backward
    --------
    Each input of a window receives ``dy / (pool_h * pool_w)``; summed where windows overlap.

    Examples
    --------
    >>> AvgPool2D(2).forward(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    """

    def __init__(
        self, pool_size: int | Sequence[int], stride: int | Sequence[int] | None = None
    ) -> None:
        super().__init__(pool_size, stride)

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        views = self._windows(x)
        _, _, first = next(views)
        y = first.copy()
        for _, _, view in views:
            y += view
        y *= y.dtype.type(1.0 / (self.pool_size[0] * self.pool_size[1]))
        return y.transpose(0, 3, 1, 2)

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray:
        share = dy.transpose(0, 2, 3, 1) * dy.dtype.type(
            1.0 / (self.pool_size[0] * self.pool_size[1])
        )
        size = self.pool_size[0] * self.pool_size[1]
        return self._scatter((share for _ in range(size)), dy.dtype)

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        return graph.node(
            "AveragePool", [x], kernel_shape=list(self.pool_size), strides=list(self.stride)
        )
