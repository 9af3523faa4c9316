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

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from . import functional as F
from . import kernels
from ._checks import (
    as_generator,
    as_input,
    check_array,
    check_float_dtype,
    check_fraction,
    check_int,
    check_positive,
    check_real,
)
from .initializers import INITIALIZERS, init_weight

__all__ = [
    "ACTIVATIONS",
    "LAYERS",
    "BatchNorm",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "LeakyReLU",
    "OnnxGraph",
    "ProcessGroup",
    "ReLU",
    "Rescaling",
    "Sigmoid",
    "Softmax",
    "Tanh",
]


class ProcessGroup(Protocol):
    """The processes that train one model together, as a layer sees them.

    Each process holds a contiguous slice of every batch (see :mod:`chainrule.distributed`, which
    implements this on MPI); a layer reaches the others only through these calls.
    """

    #: This process's number, 0 to ``size - 1``.
    rank: int
    #: The number of processes.
    size: int

    def sum(self, buffer: np.ndarray) -> None:
        """Replace ``buffer``, on every process, by its element-wise sum over the processes.

        A collective call: every process makes it, with a buffer of the same shape and dtype, in
        the same order as the others.
        """

    def generator(self) -> np.random.Generator:
        """A random generator of this process's own, derived from the run's seed and the rank;
        each call gives the next of a fixed sequence."""


class Layer:
    """Base class of all layers: the one contract the rest of chainrule talks to.

    A layer owns everything that is its own, so the network, the training loop, saving, loading,
    the gradient check and the exporters never name a concrete layer class:

    * ``_forward(x, training)`` / ``_backward(dy, input_grad)``: the maths; ``_backward`` fills
      ``self.grads`` and returns ``dL/dx`` (or ``None`` when ``input_grad`` is False);
    * ``_check_input(x)`` and :attr:`input_shape`: the input it accepts, and the clear error it
      raises for any other;
    * :meth:`config` and :meth:`declared_shapes`: how to rebuild it, and what it will allocate;
    * :meth:`get_extra_state` / :meth:`set_extra_state`: state beyond arrays (a random generator);
    * :meth:`to_onnx`: the ONNX nodes that compute its inference forward pass, for
      :func:`~chainrule.export_onnx` (a layer without them cannot be exported);
    * :meth:`distribute`: what it shares with the other processes in data-parallel training;
    * optionally ``_backward_update``: a backward pass that applies plain SGD inside the matrix
      product that makes a weight gradient (the training loop's fast path; Dense has one).

    Every public subclass defined inside chainrule registers itself in :data:`LAYERS` by name;
    a user's own subclass loads with ``cr.load(path, custom_layers={"Name": cls})``.

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
    #: Whether each output sample has its input sample's shape (so a network's input shape is
    #: that of the first layer that fixes one).
    preserves_shape: ClassVar[bool] = False
    #: Whether the output is already class probabilities (a final Softmax or Sigmoid), so
    #: ``predict_proba`` returns it as it is.
    outputs_probabilities: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.split(".")[0] == __name__.split(".")[0] and not cls.__name__.startswith(
            "_"
        ):
            LAYERS[cls.__name__] = cls

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
            The input batch; its shape is checked by the layer. It is converted to the layer's
            dtype (integers as they are: scaling is a :class:`Rescaling` layer's job); a layer
            without parameters keeps a floating input's dtype and takes integers as float32.
        training : bool
            Training-mode behaviour for Dropout and BatchNorm; other layers ignore it.
        """
        x = as_input(x, self.dtype, f"{self!r} input")
        with np.errstate(under="ignore"):  # underflow to 0 is the right answer (see functional)
            return self._call(x, training)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Back-propagate ``dy = dL/dy``: fill ``self.grads`` and return ``dL/dx``."""
        with np.errstate(under="ignore"):
            return self._backward_checked(dy, input_grad=True)  # type: ignore[return-value]

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self.forward(x, training)

    @property
    def dtype(self) -> np.dtype | None:
        """The floating dtype of the parameters, or None for a layer without any."""
        return next((p.dtype for p in self.params.values()), None)

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        """The shape of one input sample this layer requires (``None`` entries: any size), or
        ``None`` if it takes samples of any shape."""
        return None

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (JSON-serialisable).

        ``dtype`` is not among them: the loader passes the saved model's dtype to every
        constructor that takes a ``dtype`` argument.
        """
        return {}

    @classmethod
    def declared_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Shapes of the parameters and buffers ``cls(**config)`` would allocate.

        Loading checks their total against the file's size before building anything, so a few
        bytes of JSON cannot ask for terabytes. Raises ``ValueError`` for a bad configuration.
        """
        return {}

    def get_extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state beyond ``params`` and ``buffers`` (a random generator's)."""
        return {}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` returned; raises ``ValueError`` if it is bad."""
        if state:
            raise ValueError(f"{self!r} keeps no extra state, got keys {sorted(state)}")

    def distribute(self, group: ProcessGroup | None) -> None:
        """Join the processes that train the model together (``None``: leave them).

        :func:`~chainrule.fit` calls this on every layer, in order, before it trains data-parallel
        and with ``None`` when it ends. Each process then holds a slice of every batch: a layer
        whose training-mode output depends on the whole batch (BatchNorm's statistics) sums what
        it needs over the processes with ``group.sum``, and one that draws random numbers
        (Dropout, RandomShift) takes a generator of its own from ``group.generator()``, so that
        the processes draw differently. Parameter gradients need nothing here: the training loop
        sums them. The default does nothing.
        """

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        """Add the ONNX nodes of the inference forward pass to ``graph``; return the output's name.

        ``x`` names the input value (float32, batch first). A layer that is the identity at
        inference returns ``x`` itself. The layers never import onnx: ``graph`` offers
        :meth:`OnnxGraph.node` and :meth:`OnnxGraph.initializer`, which name values uniquely.

        Raises
        ------
        NotImplementedError
            Naming the layer, if it cannot be exported: the default, for a layer that does not
            implement this method.

        Examples
        --------
        A layer computing ``y = 2 x`` would return
        ``graph.node("Mul", [x, graph.initializer("two", np.float32(2))])``.
        """
        raise NotImplementedError(
            f"{self!r} cannot be exported to ONNX: {type(self).__name__} does not implement "
            "to_onnx(graph, x)"
        )

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
    def _call(self, x: np.ndarray, training: bool, check: bool = True) -> np.ndarray:
        if check:
            self._check_input(x)
        y = self._forward(x, training)
        self._out_shape = y.shape
        return y

    def _backward_checked(self, dy: np.ndarray, input_grad: bool) -> np.ndarray | None:
        if self._out_shape is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        dy = check_array(dy, f"{self!r} dy")
        if dy.shape != self._out_shape:
            raise ValueError(
                f"{self!r}: dy must have the shape of the last output {self._out_shape}, "
                f"got {dy.shape}"
            )
        return self._backward(dy, input_grad)

    # -- to implement -------------------------------------------------------------------------
    def _check_input(self, x: np.ndarray) -> None:
        """Raise ``ValueError`` if ``x`` has the wrong shape for this layer."""
        want = self.input_shape
        if want is not None and (
            x.ndim != len(want) + 1
            or any(w is not None and w != d for w, d in zip(want, x.shape[1:], strict=True))
        ):
            dims = ", ".join(["N", *("?" if w is None else str(w) for w in want)])
            raise ValueError(f"{self!r} expected input of shape ({dims}), got {x.shape}")

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray | None:
        """Fill ``self.grads``; return ``dL/dx`` (``None`` allowed when ``input_grad`` is False)."""
        raise NotImplementedError

    # -- may override: the training loop's fused step ---------------------------------------
    def _backward_update(
        self, dy: np.ndarray, input_grad: bool, alpha: float, beta: float
    ) -> tuple[np.ndarray | None, tuple[str, ...]]:
        """:meth:`_backward`, applying plain SGD to the parameters whose gradient is a matrix
        product inside that product: ``p = beta * p + alpha * dL/dp`` in one BLAS call
        (:func:`chainrule.kernels.gemm_update`), instead of writing ``grads[name]``.

        Returns ``dL/dx``, computed with the parameters as they were before the step, and the
        names of the parameters it updated; the training loop's optimizer updates the others from
        ``grads``. The default updates none. Only the training loop calls this, and only for
        plain SGD on the fast path (:meth:`chainrule.Optimizer.gemm_coefficients`).
        """
        return self._backward(dy, input_grad), ()


#: Every layer class by name, for loading saved models; filled as the classes are defined.
LAYERS: dict[str, type[Layer]] = {}


class OnnxGraph(Protocol):
    """The graph :meth:`Layer.to_onnx` adds its nodes to (:mod:`chainrule.export` builds it).

    Every name it returns is unique in the graph; the values are float32 tensors, batch first.
    """

    def node(
        self, op_type: str, inputs: Sequence[str], *, output: str | None = None, **attributes: Any
    ) -> str:
        """Add the ONNX operator ``op_type`` (opset 17) on the values named ``inputs``, with its
        ONNX ``attributes`` (ints, floats, strings or lists of them); returns the name of its
        output (``output`` or the op type, made unique)."""
        ...

    def initializer(self, name: str, array: np.ndarray | float) -> str:
        """Add a constant (floating values stored as float32, integers as int64); returns its
        unique name, ``name`` prefixed with the layer's position (``"2.W"``)."""
        ...


class Rescaling(Layer):
    """Preprocessing held by the model: ``y = x * scale + offset``.

    A model that expects pixels in [0, 1] starts with ``Rescaling(1 / 255)`` and is then given the
    raw pixels, in any dtype (``uint8`` images stay bytes in memory during training and are
    scaled batch by batch); the scaling is saved with the model and exported with it. Every
    input dtype means the same here: no dtype is scaled implicitly.

    Parameters
    ----------
    scale, offset : float
        Finite reals; ``scale`` non-zero.

    Shape
    -----
    x : (N, ...) -> y : same shape

    Backward
    --------
    ``dx = dy * scale``.

    Examples
    --------
    >>> Rescaling(1 / 255).forward(np.array([[0, 51, 255]], np.uint8))
    array([[0. , 0.2, 1. ]], dtype=float32)
    """

    preserves_shape = True

    def __init__(self, scale: float, offset: float = 0.0) -> None:
        super().__init__()
        self.scale = check_real(scale, "scale")
        self.offset = check_real(offset, "offset")
        if self.scale == 0:
            raise ValueError("Invalid scale: 0.0 (the output would not depend on the input)")

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        y = x * x.dtype.type(self.scale)
        if self.offset:
            y += x.dtype.type(self.offset)
        return y

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray:
        return dy * dy.dtype.type(self.scale)

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        y = graph.node("Mul", [x, graph.initializer("scale", np.float32(self.scale))])
        if self.offset:
            y = graph.node("Add", [y, graph.initializer("offset", np.float32(self.offset))])
        return y

    def config(self) -> dict[str, Any]:
        return {"scale": self.scale, "offset": self.offset}

    def __repr__(self) -> str:
        offset = f", offset={self.offset:g}" if self.offset else ""
        return f"Rescaling(scale={self.scale:.6g}{offset})"


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

    @property
    def input_shape(self) -> tuple[int]:
        return (self.in_features,)

    @classmethod
    def declared_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        n_in = check_int(config.get("in_features"), "in_features")
        n_out = check_int(config.get("out_features"), "out_features")
        return {"W": (n_in, n_out), "b": (n_out,)}

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        W, b = self.params["W"], self.params["b"]
        x = x.astype(W.dtype, copy=False)
        self._x = x
        y = x @ W
        y += b
        return y

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray | None:
        assert self._x is not None
        W = self.params["W"]
        dy = dy.astype(W.dtype, copy=False)
        # Written into the existing gradient arrays: no allocation per batch, and an optimizer
        # holding references to them sees the new values.
        np.matmul(self._x.T, dy, out=self.grads["W"])
        np.sum(dy, axis=0, out=self.grads["b"])
        return dy @ W.T if input_grad else None

    def _backward_update(
        self, dy: np.ndarray, input_grad: bool, alpha: float, beta: float
    ) -> tuple[np.ndarray | None, tuple[str, ...]]:
        assert self._x is not None
        W = self.params["W"]
        dy = dy.astype(W.dtype, copy=False)
        dx = dy @ W.T if input_grad else None  # first: the layer below needs W before its step
        np.sum(dy, axis=0, out=self.grads["b"])
        if kernels.gemm_update(self._x, dy, W, alpha, beta):  # W = beta W + alpha x.T @ dy
            return dx, ("W",)
        np.matmul(self._x.T, dy, out=self.grads["W"])
        return dx, ()

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        W, b = (graph.initializer(key, self.params[key]) for key in ("W", "b"))
        return graph.node("Gemm", [x, W, b])  # x @ W + b

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

    preserves_shape = True

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._y = self._apply(x)
        return self._y

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray:
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

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray:
        assert self._y is not None
        # dy * (y > 0) straight from the boolean mask: one pass fewer than building the float
        # derivative first (ReLU's backward runs on the widest arrays of a training step).
        return np.multiply(dy, self._y > 0, dtype=dy.dtype)

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        return graph.node("Relu", [x])


class LeakyReLU(_Activation):
    """``y = x`` for ``x > 0`` else ``alpha * x``; ``alpha >= 0``."""

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        self.alpha = check_positive(alpha, "alpha", allow_zero=True)

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return F.leaky_relu(x, self.alpha)

    def _derivative(self, y: np.ndarray) -> np.ndarray:
        return F.leaky_relu_grad(y, self.alpha)  # sign(y) == sign(x) since alpha >= 0

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        return graph.node("LeakyRelu", [x], alpha=self.alpha)

    def config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def __repr__(self) -> str:
        return f"LeakyReLU(alpha={self.alpha})"


class Sigmoid(_Activation):
    """``y = 1 / (1 + exp(-x))``; ``dx = dy * y * (1 - y)``."""

    outputs_probabilities = True

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return F.sigmoid(x)

    def _derivative(self, y: np.ndarray) -> np.ndarray:
        return F.sigmoid_grad(y)

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        return graph.node("Sigmoid", [x])


class Tanh(_Activation):
    """``y = tanh(x)``; ``dx = dy * (1 - y**2)``."""

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return F.tanh(x)

    def _derivative(self, y: np.ndarray) -> np.ndarray:
        return F.tanh_grad(y)

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        return graph.node("Tanh", [x])


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

    preserves_shape = True
    outputs_probabilities = True

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != 2:
            raise ValueError(f"Softmax expected input of shape (N, K), got {x.shape}")

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._y = F.softmax(x)
        return self._y

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray:
        y = self._y
        assert y is not None
        return y * (dy - (dy * y).sum(axis=1, keepdims=True))

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        return graph.node("Softmax", [x], axis=1)


class _RandomLayer(Layer):
    """A layer that draws from its own random generator in training (Dropout, augmentation).

    The generator's position is the layer's extra state: saved with the model, so a resumed run
    draws what it would have drawn, and replayed by the gradient check at every evaluation.
    """

    has_training_mode = True

    def __init__(self, rng: np.random.Generator | int | None) -> None:
        super().__init__()
        self.rng = as_generator(rng)

    def get_extra_state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        try:
            self.rng.bit_generator.state = state["rng"]
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{self!r}: bad random-generator state ({exc!r})") from exc

    def distribute(self, group: ProcessGroup | None) -> None:
        # Every process draws for its own samples: from a generator of its own, not the shared one.
        if group is not None:
            self.rng = group.generator()


class Dropout(_RandomLayer):
    """Inverted dropout: in training, zero each unit with probability ``p`` and scale the rest
    by ``1 / (1 - p)``, so inference needs no rescaling and is the identity.

    Parameters
    ----------
    p : float in [0, 1)
        Probability of dropping a unit.
    rng : numpy.random.Generator, int or None
        Source of the masks.
    """

    preserves_shape = True

    def __init__(self, p: float = 0.5, rng: np.random.Generator | int | None = None) -> None:
        super().__init__(rng)
        self.p = check_fraction(p, "p")
        self._mask: np.ndarray | None = None

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if not training or self.p == 0.0:
            self._mask = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        self._mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._mask

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray:
        return dy if self._mask is None else dy * self._mask

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        return x  # the identity at inference

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

    Data-parallel
    -------------
    Trained by several processes (:meth:`~Layer.distribute`), each holding a slice of the batch,
    it normalises with the statistics of the whole batch: the processes sum ``x``, ``x**2`` and
    their sample counts in the forward pass, ``g`` and ``g * xhat`` in the backward pass, so
    that N processes compute what one would.
    """

    has_training_mode = True
    min_batch = 2  # one sample has no spread to normalise by
    preserves_shape = True

    def __init__(
        self,
        num_features: int,
        momentum: float = 0.9,
        eps: float = 1e-5,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        super().__init__()
        self.num_features = check_int(num_features, "num_features")
        self.momentum = check_fraction(momentum, "momentum")
        self.eps = check_positive(eps, "eps")
        dtype = check_float_dtype(dtype)
        n = self.num_features
        self.params = {"gamma": np.ones(n, dtype), "beta": np.zeros(n, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {"running_mean": np.zeros(n, dtype), "running_var": np.ones(n, dtype)}
        self._xhat: np.ndarray | None = None
        self._inv_std: np.ndarray | None = None
        self._batch_stats = False
        self._group: ProcessGroup | None = None
        self._count = 0  # samples in the whole batch of the last training forward

    @property
    def input_shape(self) -> tuple[int]:
        return (self.num_features,)

    @classmethod
    def declared_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        n = (check_int(config.get("num_features"), "num_features"),)
        return {"gamma": n, "beta": n, "running_mean": n, "running_var": n}

    def distribute(self, group: ProcessGroup | None) -> None:
        self._group = group

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        x = x.astype(self.params["gamma"].dtype, copy=False)
        if training:
            mean, var = self._batch_moments(x)
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

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray:
        xhat, inv_std = self._xhat, self._inv_std
        assert xhat is not None
        assert inv_std is not None
        np.sum(dy * xhat, axis=0, out=self.grads["gamma"])
        np.sum(dy, axis=0, out=self.grads["beta"])
        g = dy * self.params["gamma"]
        if not self._batch_stats:  # running statistics are constants
            return g * inv_std
        gx = g * xhat
        if self._group is None:
            return (g - g.mean(axis=0) - xhat * gx.mean(axis=0)) * inv_std
        sums = np.concatenate([g.sum(axis=0, dtype=np.float64), gx.sum(axis=0, dtype=np.float64)])
        self._group.sum(sums)
        means = (sums / self._count).astype(g.dtype)
        f = self.num_features
        return (g - means[:f] - xhat * means[f:]) * inv_std

    def _batch_moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and (biased) variance of the batch, over every process's slice of it."""
        if self._group is None:
            count, mean, var = len(x), x.mean(axis=0), x.var(axis=0)
        else:
            # Sums in float64, so that E[x**2] - E[x]**2 loses nothing to cancellation.
            sums = np.concatenate(
                [
                    x.sum(axis=0, dtype=np.float64),
                    np.square(x, dtype=np.float64).sum(axis=0),
                    [len(x)],
                ]
            )
            self._group.sum(sums)
            f, count = self.num_features, int(sums[-1])
            mean64 = sums[:f] / count
            var64 = np.maximum(sums[f : 2 * f] / count - mean64**2, 0.0)
            mean, var = mean64.astype(x.dtype), var64.astype(x.dtype)
        if count < self.min_batch:
            raise ValueError(
                f"{self!r} needs a batch of at least {self.min_batch} in training, got {x.shape}"
            )
        self._count = count
        return mean, var

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        # Inference: normalised by the running statistics, as forward(x, training=False) is.
        names = [graph.initializer(k, self.params[k]) for k in ("gamma", "beta")]
        names += [graph.initializer(k, self.buffers[k]) for k in ("running_mean", "running_var")]
        return graph.node("BatchNormalization", [x, *names], epsilon=self.eps)

    def config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}

    def __repr__(self) -> str:
        return f"BatchNorm({self.num_features})"


class Flatten(Layer):
    """Flattens each sample to a vector: ``(N, d1, d2, ...) -> (N, d1 * d2 * ...)``.

    The bridge from images (or feature maps) to :class:`Dense` layers; a view, no copy.

    Shape
    -----
    x : (N, ...) with at least one axis after N -> y : (N, prod(...))

    Backward
    --------
    ``dx = dy`` reshaped to the input's shape.

    Examples
    --------
    >>> Flatten().forward(np.zeros((4, 1, 28, 28), np.float32)).shape
    (4, 784)
    """

    def __init__(self) -> None:
        super().__init__()
        self._in_shape: tuple[int, ...] | None = None

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim < 2:
            raise ValueError(f"Flatten expected input of shape (N, ...), got {x.shape}")

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._in_shape = x.shape
        return x.reshape(len(x), -1)

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray:
        assert self._in_shape is not None
        return dy.reshape(self._in_shape)

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        return graph.node("Flatten", [x], axis=1)


#: Activation names accepted by the model builders and the CLI.
ACTIVATIONS: dict[str, type[Layer]] = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "softmax": Softmax,
}
