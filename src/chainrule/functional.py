"""Stateless maths: activations, their derivatives, and stable log-probabilities.

Every function here takes and returns plain arrays and keeps the input's floating dtype. The layer
classes in :mod:`chainrule.layers` hold state (cached results) and call these for the maths.

Numerical stability is handled here once, so that nothing downstream overflows:

* ``sigmoid`` never evaluates ``exp`` of a positive number (``exp(-|x|)`` only).
* ``softmax`` and ``log_softmax`` subtract the row maximum first.
* ``exp`` of a very negative number underflows to 0, which is the right answer; that underflow is
  silenced locally so code running under ``np.errstate(all="raise")`` does not trip on it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]

__all__ = [
    "exp",
    "leaky_relu",
    "leaky_relu_grad",
    "log_sigmoid",
    "log_softmax",
    "relu",
    "relu_grad",
    "sigmoid",
    "sigmoid_grad",
    "softmax",
    "softplus",
    "tanh",
    "tanh_grad",
]


def exp(x: Array, out: Array | None = None) -> Array:
    """``np.exp`` with underflow to 0 allowed: ``exp(-1000)`` is 0, not a floating-point error."""
    with np.errstate(under="ignore"):
        return np.exp(x, out=out)


def sigmoid(x: Array) -> Array:
    """Logistic function ``1 / (1 + exp(-x))``, stable for any finite ``x``.

    Written as ``exp(min(x, 0)) / (1 + exp(-|x|))``: both exponents are <= 0, so nothing overflows
    at ``x = +-1000``, and for ``x >= 0`` it is the textbook formula.
    """
    e = exp(-np.abs(x))  # in [0, 1]
    numerator = np.where(x >= 0, 1.0, e).astype(x.dtype, copy=False)
    return numerator / (1.0 + e)


def sigmoid_grad(y: Array) -> Array:
    """Derivative of the sigmoid expressed through its output: ``y * (1 - y)``."""
    return y * (1.0 - y)


def log_sigmoid(x: Array) -> Array:
    """``log(sigmoid(x)) = -softplus(-x)``."""
    return -softplus(-x)


def softplus(x: Array) -> Array:
    """``log(1 + exp(x))``, computed as ``max(x, 0) + log1p(exp(-|x|))`` so it never overflows."""
    e = exp(-np.abs(x))
    with np.errstate(under="ignore"):  # log1p of a subnormal e is e itself, also subnormal
        return np.maximum(x, 0.0) + np.log1p(e)


def relu(x: Array) -> Array:
    """``max(x, 0)``."""
    return np.maximum(x, 0.0, dtype=x.dtype)


def relu_grad(y: Array) -> Array:
    """Derivative of ReLU through its output: 1 where ``y > 0``, else 0 (0 at the kink)."""
    return (y > 0).astype(y.dtype)


def leaky_relu(x: Array, alpha: float) -> Array:
    """``x`` where ``x > 0``, else ``alpha * x``."""
    return np.where(x > 0, x, x * x.dtype.type(alpha))


def leaky_relu_grad(x: Array, alpha: float) -> Array:
    """Derivative of leaky ReLU: 1 where ``x > 0``, else ``alpha``."""
    return np.where(x > 0, 1.0, alpha).astype(x.dtype)


def tanh(x: Array) -> Array:
    """Hyperbolic tangent."""
    return np.tanh(x)


def tanh_grad(y: Array) -> Array:
    """Derivative of tanh through its output: ``1 - y**2``."""
    return 1.0 - y * y


def softmax(x: Array) -> Array:
    """Row-wise softmax of ``x`` of shape ``(N, K)``; each row sums to 1.

    The row maximum is subtracted first, so logits of +-1000 give exact, finite probabilities.
    """
    z = x - x.max(axis=1, keepdims=True)
    exp(z, out=z)
    with np.errstate(under="ignore"):  # a subnormal exp(z) divided by the row sum
        z /= z.sum(axis=1, keepdims=True)
    return z


def log_softmax(x: Array) -> Array:
    """Row-wise ``log(softmax(x))`` of shape ``(N, K)``, via the log-sum-exp trick."""
    z = x - x.max(axis=1, keepdims=True)
    z -= np.log(exp(z).sum(axis=1, keepdims=True))
    return z
