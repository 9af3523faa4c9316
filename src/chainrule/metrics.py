"""Classification metrics: accuracy, the confusion matrix and per-class accuracy."""

from __future__ import annotations

import numpy as np

from ._checks import check_array, check_finite, check_int

__all__ = ["accuracy", "as_labels", "confusion_matrix", "per_class_accuracy", "to_labels"]


def to_labels(y: np.ndarray, name: str = "y") -> np.ndarray:
    """Class ids ``(N,)`` from labels ``(N,)``, one-hot or probability rows ``(N, K)``, or a single
    sigmoid output ``(N, 1)`` (threshold 0.5)."""
    y = check_array(y, name, ndim=(1, 2))
    check_finite(y, name)  # argmax would silently take a NaN for the largest score
    if y.ndim == 1 and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name} labels must be integers, got dtype {y.dtype}")
    return as_labels(y)


def as_labels(y: np.ndarray) -> np.ndarray:
    """:func:`to_labels` of targets already checked (the training loop's, batch by batch)."""
    if y.ndim == 1:
        return y
    if y.shape[1] == 1:
        return (y[:, 0] > 0.5).astype(np.int64)
    return y.argmax(axis=1)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of samples whose predicted class equals the true class.

    Both arguments may be labels ``(N,)`` or rows of scores ``(N, K)`` (see :func:`to_labels`).

    Examples
    --------
    >>> accuracy(np.array([0, 1, 2]), np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [1.0, 0, 0]]))
    0.6666666666666666
    """
    t, p = to_labels(y_true, "y_true"), to_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(
            f"y_true and y_pred hold different numbers of samples: {t.shape} vs {p.shape}"
        )
    if t.size == 0:
        raise ValueError("accuracy of an empty batch is undefined")
    return float(np.mean(t == p))


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``i`` predicted as class ``j``.

    Shape
    -----
    y_true, y_pred : (N,) labels or (N, K) scores -> (K, K) int64
    """
    t, p = to_labels(y_true, "y_true"), to_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(
            f"y_true and y_pred hold different numbers of samples: {t.shape} vs {p.shape}"
        )
    if num_classes is None:
        k = int(max(t.max(initial=0), p.max(initial=0))) + 1
    else:
        k = check_int(num_classes, "num_classes")
    if t.size and (min(int(t.min()), int(p.min())) < 0 or max(int(t.max()), int(p.max())) >= k):
        raise ValueError(f"labels must lie in [0, {k - 1}] for num_classes={k}")
    # bincount over the flattened (true, predicted) pair index: one pass, no Python loop. The
    # labels are in [0, k) by now, so int64 holds them whatever integer type they came in.
    pairs = t.astype(np.int64) * k + p.astype(np.int64)
    return np.bincount(pairs, minlength=k * k).reshape(k, k)


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Recall of each class from a confusion matrix: ``C[i, i] / sum(C[i, :])`` (NaN if a class
    has no samples)."""
    matrix = check_array(matrix, "matrix", ndim=2)
    check_finite(matrix, "matrix")
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1), np.nan)
