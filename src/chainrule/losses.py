"""Loss functions: ``value = loss.forward(y, t)`` then ``dy = loss.backward()``.

``forward`` returns the mean loss over the batch as a Python float and caches what ``backward``
needs; ``backward`` returns ``dL/dy`` with the shape and dtype of ``y``. Targets are checked at the
boundary: shapes must match exactly (no silent ``(N, 1)`` vs ``(N,)`` broadcasting), class labels
must be integers in range, probabilities and one-hot rows must lie in [0, 1].

Class targets for the cross-entropies come either as integer labels of shape ``(N,)`` or as one-hot
(or soft) rows of shape ``(N, K)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import functional as F
from ._checks import check_array, check_finite, check_labels, describe

__all__ = [
    "LOSSES",
    "BinaryCrossEntropy",
    "CrossEntropy",
    "Loss",
    "MeanSquaredError",
    "SoftmaxCrossEntropy",
]

#: Added inside ``log`` by the probability-based cross-entropies so that a probability of exactly
#: 0 gives a large finite loss, as in the notes (``-log(y + 1e-7)``).
EPS = 1e-7


class Loss:
    """Base class: checks arguments, then calls ``_forward``/``_backward``."""

    def instead_for_probabilities(self) -> str | None:
        """For a loss that takes logits, the loss to use on a network that already outputs
        probabilities (its last layer is a Softmax or a Sigmoid); ``None`` otherwise."""
        return None

    def __init__(self) -> None:
        self._grad_args: tuple[Any, ...] | None = None

    def forward(self, y: np.ndarray, t: np.ndarray) -> float:
        """Mean loss of predictions ``y`` against targets ``t``; caches what backward needs."""
        y = check_array(y, f"{type(self).__name__} prediction y")
        if not np.issubdtype(y.dtype, np.floating):
            y = y.astype(np.float64)
        check_finite(y, f"{type(self).__name__} prediction y")
        t = check_array(t, f"{type(self).__name__} target t")
        if y.ndim == 0 or y.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}: y must be a non-empty batch, got {y.shape}")
        if t.ndim == 0 or t.shape[0] != y.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: batch sizes differ: y has shape {y.shape}, "
                f"t has shape {t.shape}"
            )
        return float(self._forward(y, self._target(y, t)))

    def _forward_trusted(self, y: np.ndarray, t: np.ndarray) -> float:
        """:meth:`forward` of the training loop, whose targets were checked once, before its
        first step (:meth:`check_target`), and whose ``y`` is the model's finite output."""
        return float(self._forward(y, self._as_target(y, t)))

    def backward(self) -> np.ndarray:
        """``dL/dy`` for the last ``forward``, of the shape and dtype of its ``y``."""
        if self._grad_args is None:
            raise RuntimeError(f"{type(self).__name__}: backward() called before forward()")
        return self._backward(*self._grad_args)

    def __call__(self, y: np.ndarray, t: np.ndarray) -> float:
        return self.forward(y, t)

    def check_target(
        self, t: np.ndarray, shape: tuple[int, ...], dtype: np.dtype | type = np.float32
    ) -> None:
        """Check targets ``t`` against predictions of ``shape`` without computing the loss.

        :func:`~chainrule.fit` checks a whole data set's targets this way before its first step,
        so a bad label in the last batch cannot stop training half-way through an epoch.
        """
        t = check_array(t, f"{type(self).__name__} target t")
        if t.ndim == 0 or t.shape[0] != shape[0]:
            raise ValueError(
                f"{type(self).__name__}: batch sizes differ: y has shape {shape}, "
                f"t has shape {t.shape}"
            )
        self._target(np.broadcast_to(np.zeros((), dtype), shape), t)  # a view: no memory

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this loss (JSON-serialisable)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def _target(self, y: np.ndarray, t: np.ndarray) -> Any:
        """Check ``t`` against ``y``'s shape and dtype; return it in the form ``_forward`` uses
        (a subclass that does not override this gets its targets checked batch by batch only)."""
        return t

    def _as_target(self, y: np.ndarray, t: np.ndarray) -> Any:
        """What :meth:`_target` returns, for a target already checked (the default checks
        anyway: a subclass that checks in ``_target`` and does not override this is safe)."""
        return self._target(y, t)

    def _forward(self, y: np.ndarray, t: Any) -> float:
        """The mean loss for ``t`` as :meth:`_target` returns it; caches what backward needs."""
        raise NotImplementedError

    def _backward(self, *args: Any) -> np.ndarray:
        raise NotImplementedError


def _same_shape_target(loss: Loss, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A float target of exactly ``y``'s shape, in ``y``'s dtype."""
    if t.shape != y.shape:
        raise ValueError(
            f"{type(loss).__name__}: target shape {t.shape} does not match prediction shape "
            f"{y.shape}; reshape one of them explicitly"
        )
    t = t.astype(y.dtype, copy=False)
    check_finite(t, f"{type(loss).__name__} target t")
    return t


def _class_target(
    loss: Loss, y: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Check a class target: ``(labels, None)`` for labels ``(N,)``, ``(None, rows)`` for
    one-hot rows ``(N, K)`` in ``y``'s dtype."""
    name = type(loss).__name__
    if y.ndim != 2:
        raise ValueError(f"{name}: y must have shape (N, K), got {y.shape}")
    if t.ndim == 1:
        return check_labels(t, y.shape[1], f"{name} target"), None
    if t.shape != y.shape:
        raise ValueError(
            f"{name}: target must be labels of shape ({y.shape[0]},) or one-hot rows of shape "
            f"{y.shape}, got {describe(t)}"
        )
    t = t.astype(y.dtype, copy=False)
    check_finite(t, f"{name} target t")
    if t.min() < 0 or t.max() > 1:
        raise ValueError(f"{name}: one-hot target values must lie in [0, 1]")
    return None, t


def _as_class_target(y: np.ndarray, t: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """:func:`_class_target` for a target already checked."""
    return (t, None) if t.ndim == 1 else (None, t.astype(y.dtype, copy=False))


def _check_probabilities(loss: Loss, y: np.ndarray) -> None:
    if y.min() < 0 or y.max() > 1:
        raise ValueError(
            f"{type(loss).__name__} expects probabilities in [0, 1], got values from "
            f"{y.min():.4g} to {y.max():.4g} (logits? use SoftmaxCrossEntropy or from_logits=True)"
        )


class MeanSquaredError(Loss):
    """``mean((y - t)**2)`` over all elements; ``half=True`` gives half of it.

    The gradient is ``2 * (y - t) / n`` (``(y - t) / n`` with ``half``), ``n = y.size``: the
    exact derivative of the value returned (the notes' gradient dropped the ``1/n``).

    Examples
    --------
    >>> t = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0.0])
    >>> y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    >>> round(MeanSquaredError().forward(y, t), 10)
    0.0195
    """

    def __init__(self, half: bool = False) -> None:
        super().__init__()
        self.half = bool(half)

    def _target(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        return _same_shape_target(self, y, t)

    def _as_target(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        return t.astype(y.dtype, copy=False)

    def _forward(self, y: np.ndarray, t: np.ndarray) -> float:
        diff = y - t
        scale = (1.0 if self.half else 2.0) / y.size
        self._grad_args = (diff, scale)
        return float(np.vdot(diff, diff)) / y.size * (0.5 if self.half else 1.0)

    def _backward(self, diff: np.ndarray, scale: float) -> np.ndarray:
        return diff * diff.dtype.type(scale)

    def config(self) -> dict[str, Any]:
        return {"half": self.half}


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy, computed from logits in one stable step.

    ``L = -mean_n log softmax(y)[n, t_n]`` (or ``-sum(t * log softmax(y)) / N`` for target
    rows); the gradient is ``(softmax(y) - t) / N``: the ``y - t`` of the notes, per sample.
    Target rows need not be one-hot (soft labels, multi-hot): the gradient is then
    ``(softmax(y) * sum_k t_k - t) / N``, which is the same thing when a row sums to 1.
    """

    def instead_for_probabilities(self) -> str | None:
        return "CrossEntropy"

    def _target(self, y: np.ndarray, t: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        return _class_target(self, y, t)

    def _as_target(
        self, y: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        return _as_class_target(y, t)

    def _forward(self, y: np.ndarray, t: tuple[np.ndarray | None, np.ndarray | None]) -> float:
        labels, onehot = t
        logp = F.log_softmax(y)
        n = y.shape[0]
        self._grad_args = (logp, labels, onehot)
        if labels is not None:
            return -float(logp[np.arange(n), labels].sum()) / n
        assert onehot is not None
        return -float(np.vdot(onehot, logp)) / n

    def _backward(
        self, logp: np.ndarray, labels: np.ndarray | None, onehot: np.ndarray | None
    ) -> np.ndarray:
        n = logp.shape[0]
        grad = F.exp(logp)
        if labels is not None:
            grad[np.arange(n), labels] -= 1
        else:
            assert onehot is not None
            grad *= onehot.sum(axis=1, keepdims=True)  # 1 for one-hot rows, exactly
            grad -= onehot
        with np.errstate(under="ignore"):  # subnormal probabilities scaled by 1/N
            grad *= grad.dtype.type(1.0 / n)
        return grad


class CrossEntropy(Loss):
    """Cross-entropy of probabilities ``y`` (e.g. a Softmax layer's output).

    ``L = -sum(t * log(y + eps)) / N`` with ``eps = 1e-7`` as in the notes, so a probability of 0
    gives a large finite value; the gradient is ``-t / (y + eps) / N``.

    Examples
    --------
    >>> y = np.array([[0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]])
    >>> round(CrossEntropy().forward(y, np.array([2])), 12)
    0.510825457099
    """

    def _target(self, y: np.ndarray, t: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        return _class_target(self, y, t)

    def _as_target(
        self, y: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        return _as_class_target(y, t)

    def _forward(self, y: np.ndarray, t: tuple[np.ndarray | None, np.ndarray | None]) -> float:
        labels, onehot = t
        _check_probabilities(self, y)
        if labels is not None:  # not the hot path: one code path via one-hot rows
            onehot = np.zeros_like(y)
            onehot[np.arange(y.shape[0]), labels] = 1
        assert onehot is not None
        self._grad_args = (y, onehot)
        return -float(np.vdot(onehot, np.log(y + EPS))) / y.shape[0]

    def _backward(self, y: np.ndarray, onehot: np.ndarray) -> np.ndarray:
        return -onehot / (y + EPS) / y.dtype.type(y.shape[0])


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy of independent outputs against 0/1 (or soft) targets.

    ``L = -mean(t * log(y) + (1 - t) * log(1 - y))`` on probabilities (with ``eps = 1e-7`` inside
    the logs), or, with ``from_logits=True``, the same loss of ``sigmoid(y)`` computed stably as
    ``mean(max(y, 0) - t * y + log(1 + exp(-|y|)))`` with gradient ``(sigmoid(y) - t) / n``.

    Parameters
    ----------
    from_logits : bool
        Whether ``y`` holds logits rather than probabilities.
    reduction : {"mean", "batchmean"}
        ``"mean"`` averages over every element; ``"batchmean"`` sums over the outputs of a sample
        and averages over the batch (the notes' MNIST network sums over its 10 outputs).
    """

    def __init__(self, from_logits: bool = False, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "batchmean"):
            raise ValueError(f"Invalid reduction: {reduction!r} (choose 'mean' or 'batchmean')")
        self.from_logits = bool(from_logits)
        self.reduction = reduction

    def _target(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        t = _same_shape_target(self, y, t)
        if t.min() < 0 or t.max() > 1:
            raise ValueError("BinaryCrossEntropy: target values must lie in [0, 1]")
        return t

    def _as_target(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        return t.astype(y.dtype, copy=False)

    def _forward(self, y: np.ndarray, t: np.ndarray) -> float:
        n = y.shape[0] if self.reduction == "batchmean" else y.size
        self._grad_args = (y, t, n)
        if self.from_logits:
            return float((F.softplus(y) - t * y).sum()) / n
        _check_probabilities(self, y)
        return -float((t * np.log(y + EPS) + (1 - t) * np.log(1 - y + EPS)).sum()) / n

    def _backward(self, y: np.ndarray, t: np.ndarray, n: int) -> np.ndarray:
        if self.from_logits:
            with np.errstate(under="ignore"):  # a subnormal sigmoid(y) scaled by 1/n
                return (F.sigmoid(y) - t) / y.dtype.type(n)
        return (-t / (y + EPS) + (1 - t) / (1 - y + EPS)) / y.dtype.type(n)

    def config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits, "reduction": self.reduction}

    def instead_for_probabilities(self) -> str | None:
        return "BinaryCrossEntropy(from_logits=False)" if self.from_logits else None


#: Losses by the names the CLI and saved models use.
LOSSES: dict[str, type[Loss]] = {
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "cross_entropy": CrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy,
    "mse": MeanSquaredError,
}
