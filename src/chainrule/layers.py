"""Layers: each one a class with ``forward(x)`` and ``backward(dy)``.

``forward`` computes the layer's output and caches what ``backward`` will need: this cache is
the "stored intermediate result" of the notes' dynamic-programming view of back-propagation.
``backward`` receives ``dy = dL/dy`` from the layer above, stores ``dL/dparam`` in
``layer.grads`` (same keys as ``layer.params``) and returns ``dx = dL/dx`` for the layer below.
It never touches the parameters: updating them is the optimizer's job, after the whole backward
pass (the notes' MNIST code updated W3 before using it to back-propagate, which is wrong).

Subclasses implement ``_forward`` and ``_backward``; the public ``forward``/``backward`` of the base
class check their arguments first, so every layer rejects bad input the same way.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from . import functional as F
from ._checks import (
    as_generator,
    as_input,
    check_array,
    check_float_dtype,
    check_int,
    check_positive,
)
from .initializers import INITIALIZERS, init_weight

__all__ = [
    "ACTIVATIONS",
    "LAYERS",
    "BatchNorm",
    "Dense",
    "Dropout",
    "Layer",
    "LeakyReLU",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
]


class Layer:
    """Base class of all layers.

    Attributes
    ----------
    params : dict of str to ndarray
        Trainable parameters, updated in place by an optimizer.
    grads : dict of str to ndarray
        ``dL/dparam`` from the last ``backward``, same keys and shapes as ``params``.
    buffers : dict of str to ndarray
        Non-trainable state that is saved with the model (BatchNorm's running statistics).
    """

    #: Whether ``forward`` behaves differently in training (Dropout, BatchNorm).
    has_training_mode: ClassVar[bool] = False
    #: The smallest batch ``forward(x, training=True)`` accepts (BatchNorm needs 2).
    min_batch: ClassVar[int] = 1

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self._out_shape: tuple[int, ...] | None = None  # None until the first forward

    # -- public API -------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for a batch ``x`` and cache what ``backward`` needs.

        Parameters
        ----------
        x : ndarray
            The input batch; its shape is checked by the layer. Integer input is converted as
            :class:`~chainrule.Sequential` converts it (``uint8`` pixels scaled to [0, 1]), to
            the parameters' dtype, or float32 for a layer without parameters.
        training : bool
            Training-mode behaviour for Dropout and BatchNorm; other layers ignore it.
        """
        dtype = next((p.dtype for p in self.params.values()), None)
        x = as_input(x, dtype, f"{self!r} input")
        with np.errstate(under="ignore"):  # underflow to 0 is the right answer (see functional)
            return self._call(x, training)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Back-propagate ``dy = dL/dy``: fill ``self.grads`` and return ``dL/dx``."""
        with np.errstate(under="ignore"):
            return self._backward_checked(dy, need_dx=True)  # type: ignore[return-value]

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self.forward(x, training)

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (JSON-serialisable)."""
        return {}

    def astype(self, dtype: np.dtype | type) -> Layer:
        """Convert parameters, gradients and buffers to ``dtype`` in place; returns ``self``."""
        dtype = check_float_dtype(dtype)
        for store in (self.params, self.grads, self.buffers):
            for key, value in store.items():
                store[key] = value.astype(dtype)
        return self

    @property
    def num_params(self) -> int:
        """Number of trainable scalars."""
        return sum(p.size for p in self.params.values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- used by Sequential, which checks the network's input once ----------------------------
    def _call(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._check_input(x)
        y = self._forward(x, training)
        self._out_shape = y.shape
        return y

    def _backward_checked(self, dy: np.ndarray, need_dx: bool) -> np.ndarray | None:
        if self._out_shape is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        dy = check_array(dy, f"{self!r} dy")
        if dy.shape != self._out_shape:
            raise ValueError(
                f"{self!r}: dy must have the shape of the last output {self._out_shape}, "
                f"got {dy.shape}"
            )
        return self._backward(dy, need_dx)

    # -- to implement -------------------------------------------------------------------------
    def _check_input(self, x: np.ndarray) -> None:
        """Raise ``ValueError`` if ``x`` has the wrong shape for this layer."""

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def _backward(self, dy: np.ndarray, need_dx: bool) -> np.ndarray | None:
        """Fill ``self.grads``; return ``dL/dx`` (``None`` allowed when ``need_dx`` is False)."""
        raise NotImplementedError


def _check_features(layer: Layer, x: np.ndarray, features: int) -> None:
    if x.ndim != 2 or x.shape[1] != features:
        raise ValueError(f"{layer!r} expected input of shape (N, {features}), got {x.shape}")


class Dense(Layer):
    """Fully connected (affine) layer: ``y = x @ W + b``.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of each input and output sample.
    init : {"he", "xavier", "normal"}
        Weight initialiser (see :mod:`chainrule.initializers`); the bias starts at zero.
    rng : numpy.random.Generator, int or None
        Source of the initial weights (an int is a seed; None draws fresh entropy).
    dtype : floating dtype
        Of the parameters; inputs of another dtype are converted to it (never up-cast silently).

    Shape
    -----
    x : (N, in_features) -> y : (N, out_features)

    Backward
    --------
    ``dW = x.T @ dy``, ``db = dy.sum(axis=0)``, ``dx = dy @ W.T``: the cached input ``x`` is all
    it needs.

    Examples
    --------
    >>> layer = Dense(3, 2, rng=0)
    >>> layer.forward(np.ones((4, 3), np.float32)).shape
    (4, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        init: str = "he",
        rng: np.random.Generator | int | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        super().__init__()
        self.in_features = check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
        if init not in INITIALIZERS:
            raise ValueError(f"Unknown init {init!r}; choose one of {sorted(INITIALIZERS)}")
        dtype = check_float_dtype(dtype)
        self.init = init
        shape = (self.in_features, self.out_features)
        self.params = {
            "W": init_weight(init, shape, as_generator(rng), dtype),
            "b": np.zeros(self.out_features, dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._x: np.ndarray | None = None

    def _check_input(self, x: np.ndarray) -> None:
        _check_features(self, x, self.in_features)

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        W, b = self.params["W"], self.params["b"]
        x = x.astype(W.dtype, copy=False)
        self._x = x
        y = x @ W
        y += b
        return y

    def _backward(self, dy: np.ndarray, need_dx: bool) -> np.ndarray | None:
        assert self._x is not None
        W = self.params["W"]
        dy = dy.astype(W.dtype, copy=False)
        # Written into the existing gradient arrays: no allocation per batch, and an optimizer
        # holding references to them sees the new values.
        np.matmul(self._x.T, dy, out=self.grads["W"])
        np.sum(dy, axis=0, out=self.grads["b"])
        return dy @ W.T if need_dx else None

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "init": self.init,
        }

    def __repr__(self) -> str:
        return f"Dense({self.in_features} -> {self.out_features})"


class _Activation(Layer):
    """An element-wise activation that caches its output ``y`` and back-propagates through it."""

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._y = self._apply(x)
        return self._y

    def _backward(self, dy: np.ndarray, need_dx: bool) -> np.ndarray:
        assert self._y is not None
        return dy * self._derivative(self._y)

    def _apply(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _derivative(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class ReLU(_Activation):
    """``y = max(x, 0)``; ``dx = dy * (y > 0)`` (the derivative at 0 is taken as 0)."""

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return F.relu(x)

    def _derivative(self, y: np.ndarray) -> np.ndarray:
        return F.relu_grad(y)

    def _backward(self, dy: np.ndarray, need_dx: bool) -> np.ndarray:
        assert self._y is not None
        # dy * (y > 0) straight from the boolean mask: one pass fewer than building the float
        # derivative first (ReLU's backward runs on the widest arrays of a training step).
        return np.multiply(dy, self._y > 0, dtype=dy.dtype)


class LeakyReLU(_Activation):
    """``y = x`` for ``x > 0`` else ``alpha * x``; ``alpha >= 0``."""

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        self.alpha = check_positive(alpha, "alpha", allow_zero=True)

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return F.leaky_relu(x, self.alpha)

    def _derivative(self, y: np.ndarray) -> np.ndarray:
        return F.leaky_relu_grad(y, self.alpha)  # sign(y) == sign(x) since alpha >= 0

    def config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def __repr__(self) -> str:
        return f"LeakyReLU(alpha={self.alpha})"


class Sigmoid(_Activation):
    """``y = 1 / (1 + exp(-x))``; ``dx = dy * y * (1 - y)``."""

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return F.sigmoid(x)

    def _derivative(self, y: np.ndarray) -> np.ndarray:
        return F.sigmoid_grad(y)


class Tanh(_Activation):
    """``y = tanh(x)``; ``dx = dy * (1 - y**2)``."""

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return F.tanh(x)

    def _derivative(self, y: np.ndarray) -> np.ndarray:
        return F.tanh_grad(y)


class Softmax(Layer):
    """Row-wise softmax over the last axis.

    Shape
    -----
    x : (N, K) -> y : (N, K), rows summing to 1.

    Backward
    --------
    The Jacobian of a row is ``diag(y) - y y^T``, so ``dx = y * (dy - sum(dy * y))`` row by row,
    without forming the K x K matrix. Paired with cross-entropy this reduces to ``y - t``; use
    :class:`~chainrule.losses.SoftmaxCrossEntropy` on logits for that fused, stabler form.
    """

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != 2:
            raise ValueError(f"Softmax expected input of shape (N, K), got {x.shape}")

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._y = F.softmax(x)
        return self._y

    def _backward(self, dy: np.ndarray, need_dx: bool) -> np.ndarray:
        y = self._y
        assert y is not None
        return y * (dy - (dy * y).sum(axis=1, keepdims=True))


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``p`` and scale the rest
    by ``1 / (1 - p)``, so inference needs no rescaling and is the identity.

    Parameters
    ----------
    p : float in [0, 1)
        Probability of dropping a unit.
    rng : numpy.random.Generator, int or None
        Source of the masks.
    """

    has_training_mode = True

    def __init__(self, p: float = 0.5, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        p = check_positive(p, "p", allow_zero=True)
        if p >= 1.0:
            raise ValueError(f"Invalid p: {p!r} (must be in [0, 1))")
        self.p = p
        self.rng = as_generator(rng)
        self._mask: np.ndarray | None = None

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if not training or self.p == 0.0:
            self._mask = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        self._mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._mask

    def _backward(self, dy: np.ndarray, need_dx: bool) -> np.ndarray:
        return dy if self._mask is None else dy * self._mask

    def config(self) -> dict[str, Any]:
        return {"p": self.p}

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


class BatchNorm(Layer):
    """Batch normalisation over the batch axis of ``(N, num_features)`` inputs.

    Training normalises with the batch's mean and variance and updates running averages
    (``running = momentum * running + (1 - momentum) * batch``); inference uses the running
    averages. ``gamma`` and ``beta`` are the learned scale and shift.

    Backward (training)
    -------------------
    With ``xhat = (x - mean) / std``: ``dgamma = sum(dy * xhat)``, ``dbeta = sum(dy)`` and
    ``dx = (g - mean(g) - xhat * mean(g * xhat)) / std`` where ``g = dy * gamma``.
    """

    has_training_mode = True
    min_batch = 2  # one sample has no spread to normalise by

    def __init__(
        self,
        num_features: int,
        momentum: float = 0.9,
        eps: float = 1e-5,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        super().__init__()
        self.num_features = check_int(num_features, "num_features")
        self.momentum = check_positive(momentum, "momentum", allow_zero=True)
        if self.momentum >= 1.0:
            raise ValueError(f"Invalid momentum: {momentum!r} (must be in [0, 1))")
        self.eps = check_positive(eps, "eps")
        dtype = check_float_dtype(dtype)
        n = self.num_features
        self.params = {"gamma": np.ones(n, dtype), "beta": np.zeros(n, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {"running_mean": np.zeros(n, dtype), "running_var": np.ones(n, dtype)}
        self._xhat: np.ndarray | None = None
        self._inv_std: np.ndarray | None = None
        self._batch_stats = False

    def _check_input(self, x: np.ndarray) -> None:
        _check_features(self, x, self.num_features)

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        x = x.astype(self.params["gamma"].dtype, copy=False)
        if training:
            if x.shape[0] < self.min_batch:
                raise ValueError(
                    f"{self!r} needs a batch of at least {self.min_batch} in training, "
                    f"got {x.shape}"
                )
            mean, var = x.mean(axis=0), x.var(axis=0)
            m = self.momentum
            self.buffers["running_mean"] *= m
            self.buffers["running_mean"] += (1 - m) * mean
            self.buffers["running_var"] *= m
            self.buffers["running_var"] += (1 - m) * var
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        self._batch_stats = training
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        self._xhat = (x - mean) * self._inv_std
        return self._xhat * self.params["gamma"] + self.params["beta"]

    def _backward(self, dy: np.ndarray, need_dx: bool) -> np.ndarray:
        xhat, inv_std = self._xhat, self._inv_std
        assert xhat is not None
        assert inv_std is not None
        np.sum(dy * xhat, axis=0, out=self.grads["gamma"])
        np.sum(dy, axis=0, out=self.grads["beta"])
        g = dy * self.params["gamma"]
        if not self._batch_stats:  # running statistics are constants
            return g * inv_std
        return (g - g.mean(axis=0) - xhat * (g * xhat).mean(axis=0)) * inv_std

    def config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}

    def __repr__(self) -> str:
        return f"BatchNorm({self.num_features})"


#: Activation names accepted by the model builders and the CLI.
ACTIVATIONS: dict[str, type[Layer]] = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "softmax": Softmax,
}

#: Every layer class by name, for loading saved models.
LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (Dense, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Dropout, BatchNorm)
}
