"""Figures of a training run: learning curves, the confusion matrix, a gallery of digits, the
first layer's convolution filters.

Needs matplotlib (``pip install "chainrule[cli]"``). Figures are drawn on
``matplotlib.figure.Figure`` objects directly, without pyplot, so nothing global (backends, open
windows) is touched; each function returns PNG bytes, which the caller writes where it wants (the
CLI writes atomically).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .history import History

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "confusion_png",
    "digits_figure",
    "digits_png",
    "figure_png",
    "filters_png",
    "history_png",
]


def _figure(**kwargs: Any) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            'plots need matplotlib: pip install "chainrule[cli]" (or pip install matplotlib)'
        ) from exc
    return Figure(**kwargs)


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """Render ``fig`` as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def history_png(history: History, title: str = "") -> bytes:
    """Loss and accuracy per epoch, training and (if recorded) validation, side by side."""
    fig = _figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [e + 1 for e in history.epoch]
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, getattr(history, key), "o-", label="train")
        val = getattr(history, f"val_{key}")
        if val:
            ax.plot(epochs, val, "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return figure_png(fig)


def confusion_png(matrix: np.ndarray, title: str = "Confusion matrix") -> bytes:
    """The confusion matrix as a heat map with counts (rows: true class, columns: predicted)."""
    k = matrix.shape[0]
    fig = _figure(figsize=(0.55 * k + 2, 0.55 * k + 1.5))
    ax = fig.subplots()
    # Log scale so the few errors off the diagonal are visible next to thousands on it.
    ax.imshow(np.log1p(matrix), cmap="Blues")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = np.log1p(matrix).max() / 2
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            color = "white" if np.log1p(count) > threshold else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
    return figure_png(fig)


def digits_png(
    images: np.ndarray,
    captions: Sequence[str],
    title: str = "",
    columns: int = 10,
) -> bytes:
    """:func:`digits_figure` as PNG bytes."""
    return figure_png(digits_figure(images, captions, title, columns))


def digits_figure(
    images: np.ndarray,
    captions: Sequence[str],
    title: str = "",
    columns: int = 10,
) -> Figure:
    """A gallery of images with a caption under each.

    ``images`` is ``(N, rows, cols)``, or ``(N, side * side)`` for square images flattened
    (``(N, 784)`` for MNIST).
    """
    images = np.asarray(images)
    if images.ndim == 2:
        side = round(float(np.sqrt(images.shape[1])))
        if side * side != images.shape[1]:
            raise ValueError(
                f"images of {images.shape[1]} values are not square: pass them as (N, rows, cols)"
            )
        images = images.reshape(len(images), side, side)
    n = len(images)
    rows = max(1, -(-n // columns))
    # constrained layout puts the title just above the first row (fixed margins left a gap)
    fig = _figure(figsize=(columns * 1.0, rows * 1.2 + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, caption in zip(axes, images, captions, strict=False):
        ax.imshow(image, cmap="gray_r")
        ax.set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def filters_png(weights: np.ndarray, title: str = "", columns: int = 8) -> bytes:
    """Convolution filters ``(out_channels, in_channels, kH, kW)`` as a grid of small images.

    Each filter is drawn on one colour scale shared by all of them, symmetric around 0 (red
    positive, blue negative), so that filters can be compared; a filter over several input
    channels shows their sum.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 4:
        raise ValueError(f"filters must be (out, in, kH, kW), got shape {weights.shape}")
    images = weights.sum(axis=1)
    n = len(images)
    columns = min(columns, n)
    rows = -(-n // columns)
    limit = float(np.abs(images).max()) or 1.0
    fig = _figure(figsize=(columns * 0.9 + 0.8, rows * 0.9 + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    shown = None
    for ax in axes:
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes, images, strict=False)):
        shown = ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(str(i), fontsize=7)
    if shown is not None:
        fig.colorbar(shown, ax=list(axes), shrink=0.8, label="weight")
    if title:
        fig.suptitle(title)
    return figure_png(fig)
