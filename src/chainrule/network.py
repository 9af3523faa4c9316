"""Networks: a :class:`Sequential` stack of layers and the :class:`MLP` / :class:`DNN` /
:class:`CNN` builders.

Forward inference runs the layers in order and each layer keeps its intermediate result; backward
runs them in reverse, each turning ``dL/d(output)`` into ``dL/d(input)`` with its cache. One forward
and one backward pass give the gradient of every parameter.
"""

from __future__ import annotations

import copy
import inspect
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import functional as F
from ._checks import as_generator, as_input, check_array, check_fraction, check_int
from .augmentation import RandomShift
from .conv import Conv2D, MaxPool2D
from .layers import ACTIVATIONS, LAYERS, BatchNorm, Dense, Dropout, Flatten, Layer, Rescaling

__all__ = ["CNN", "DNN", "MLP", "MODELS", "Sequential", "as_input", "resolve_layers"]


class Sequential:
    """A stack of layers applied in order.

    Parameters are addressed by stable names ``"{layer index}.{key}"`` (``"0.W"``, ``"0.b"``,
    ``"2.W"`` ...), which is how optimizers keep their state and how models are saved.

    Parameters
    ----------
    *layers : Layer, or one list of them
        The layers, input side first: ``Sequential(a, b)`` or, as Keras takes them,
        ``Sequential([a, b])``.

    Examples
    --------
    >>> import chainrule as cr
    >>> net = cr.Sequential(cr.Dense(4, 8, rng=0), cr.ReLU(), cr.Dense(8, 3, rng=1))
    >>> net.forward(np.ones((2, 4))).shape
    (2, 3)
    >>> sorted(net.params)
    ['0.W', '0.b', '2.W', '2.b']
    """

    #: Constructor arguments of a builder (:class:`MLP`), saved with the model.
    _arguments: dict[str, Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.split(".")[0] == __name__.split(".")[0]:
            MODELS[cls.__name__] = cls

    def __init__(self, *layers: Layer | Sequence[Layer]) -> None:
        if len(layers) == 1 and isinstance(layers[0], list | tuple):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"Sequential: argument {i} must be a Layer, got {type(layer).__name__}"
                )
        self.layers: list[Layer] = list(layers)  # type: ignore[arg-type]

    # -- parameters -------------------------------------------------------------------------
    def _named(self, attr: str) -> dict[str, np.ndarray]:
        return {
            f"{i}.{key}": value
            for i, layer in enumerate(self.layers)
            for key, value in getattr(layer, attr).items()
        }

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Every trainable parameter by name; the arrays are the layers' own (update in place)."""
        return self._named("params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """``dL/dparam`` from the last backward, same keys as :attr:`params`."""
        return self._named("grads")

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state saved with the model (BatchNorm running statistics)."""
        return self._named("buffers")

    @property
    def num_params(self) -> int:
        """Number of trainable scalars."""
        return sum(layer.num_params for layer in self.layers)

    @property
    def dtype(self) -> np.dtype:
        """The floating dtype of the parameters (float32 for a network with none).

        Raises ``ValueError`` if the layers hold parameters of different dtypes: a network
        computes, trains and is saved in one dtype, so ``forward``, ``fit`` and ``save`` refuse
        such a network until :meth:`astype` converts it.
        """
        dtypes = {layer.dtype for layer in self.layers if layer.dtype is not None}
        if len(dtypes) > 1:
            found = ", ".join(
                f"{i}: {layer!r} {layer.dtype}"
                for i, layer in enumerate(self.layers)
                if layer.dtype is not None
            )
            raise ValueError(
                f"Sequential: the layers hold parameters of different dtypes ({found}); build "
                "them with one dtype, or convert the network with .astype(dtype)"
            )
        return dtypes.pop() if dtypes else np.dtype(np.float32)

    @property
    def min_batch(self) -> int:
        """The smallest batch every layer can train on (2 with BatchNorm, else 1)."""
        return max(layer.min_batch for layer in self.layers)

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        """The shape of one input sample, as the layers up to the first reshaping one declare
        it (``None`` entries: any size; a later layer fills in what an earlier one left open, as
        a convolution's channels after a shift), or ``None`` if none of them does."""
        shape: tuple[int | None, ...] | None = None
        for layer in self.layers:
            want = layer.input_shape
            if shape is None:
                shape = want
            elif want is not None and len(want) == len(shape):
                shape = tuple(d if d is not None else w for d, w in zip(shape, want, strict=True))
            if not layer.preserves_shape:
                break
        return shape

    def astype(self, dtype: np.dtype | type) -> Sequential:
        """Convert every parameter, gradient and buffer to ``dtype`` in place; returns ``self``."""
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def copy(self) -> Sequential:
        """A deep copy (parameters, buffers and random generators' states)."""
        return copy.deepcopy(self)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    # -- passes -----------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Run every layer on the batch ``x``; each layer caches what its backward needs.

        ``x`` is converted to the network's dtype (see :func:`as_input`).
        """
        return self._forward_trusted(as_input(x, self.dtype), training)

    def _forward_trusted(self, x: np.ndarray, training: bool, check: bool = True) -> np.ndarray:
        """:meth:`forward` for a batch already checked and in the network's dtype; with
        ``check=False`` the layers do not check their inputs either (the training loop checks its
        samples against every layer once, before its first step, not every batch)."""
        # exp(-100) in float32, a saturated sigmoid times a small gradient: underflow to 0 is the
        # right answer, not a FloatingPointError for code running under np.errstate(all="raise").
        with np.errstate(under="ignore"):
            for layer in self.layers:
                x = layer._call(x, training, check)
        return x

    def backward(self, dy: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate ``dy = dL/d(output)`` through every layer, last to first.

        Fills every layer's ``grads`` and returns ``dL/dx`` for the network's input, or ``None``
        with ``input_grad=False``: training needs no input gradient, so the pass then stops at
        the first layer that holds parameters (which computes no input gradient either: its
        largest matrix product saved; the layers below it have nothing to learn).
        """
        last = len(self.layers) - 1
        stop = 0 if input_grad else min(self._first_trained(), last)
        # Only the caller's dy needs checking: each layer below receives the gradient its own
        # forward output shape implies.
        with np.errstate(under="ignore"):  # as in forward
            grad = self.layers[last]._backward_checked(dy, last > stop or input_grad)
            for i in range(last - 1, stop - 1, -1):
                assert grad is not None
                grad = self.layers[i]._backward(grad, i > stop or input_grad)
        return grad if input_grad else None

    def _first_trained(self) -> int:
        """The index of the first layer that holds parameters (``len(self)`` if none does)."""
        return next((i for i, layer in enumerate(self.layers) if layer.params), len(self.layers))

    def _backward_trusted(self, dy: np.ndarray) -> None:
        """:meth:`backward` of the training loop: ``dy`` from its own loss, no input gradient."""
        grad: np.ndarray | None = dy
        stop = self._first_trained()
        with np.errstate(under="ignore"):
            for i in range(len(self.layers) - 1, stop - 1, -1):
                assert grad is not None
                grad = self.layers[i]._backward(grad, i > stop)

    def _backward_update(self, dy: np.ndarray, alpha: float, beta: float) -> set[str]:
        """:meth:`_backward_trusted` in which the layers that can apply plain SGD
        (``p = beta * p + alpha * grad``) inside a matrix product do so (see
        :meth:`Layer._backward_update`); returns the names of the parameters updated."""
        grad: np.ndarray | None = dy
        stop = self._first_trained()
        updated: set[str] = set()
        with np.errstate(under="ignore"):
            for i in range(len(self.layers) - 1, stop - 1, -1):
                assert grad is not None
                grad, names = self.layers[i]._backward_update(grad, i > stop, alpha, beta)
                updated.update(f"{i}.{name}" for name in names)
        return updated

    __call__ = forward

    # -- inference --------------------------------------------------------------------------
    #: Samples per batch of the inference passes. Measured on a 2-core AMD EPYC over the 10,000
    #: MNIST test images: a CNN's im2col rows of 1,000 images peak at 1,048 MiB (4.8 s), of 250 at
    #: 439 MiB (3.0 s); the default MLP takes 0.079 s in batches of 250, 0.088 s of 1,000.
    INFERENCE_BATCH = 256

    def predict_proba(self, x: np.ndarray, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
        """Class probabilities for ``x``, computed in batches in inference mode.

        A final Softmax or Sigmoid layer's output is returned as it is; logits are turned into
        probabilities by softmax (or by sigmoid for a single output unit).

        Shape
        -----
        x : (N, ...) -> (N, K)
        """
        batch_size = check_int(batch_size, "batch_size")
        x = check_array(x, "x")
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"x must be a non-empty batch, got shape {x.shape}")
        outputs = []
        for start in range(0, x.shape[0], batch_size):
            y = self.forward(x[start : start + batch_size])
            if not self._outputs_probabilities:
                y = F.sigmoid(y) if y.shape[1] == 1 else F.softmax(y)
            outputs.append(y)
        return np.concatenate(outputs)

    def predict(self, x: np.ndarray, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
        """Predicted class ids ``(N,)``: the most probable class (probability > 0.5 for one
        output unit)."""
        batch_size = check_int(batch_size, "batch_size")
        x = check_array(x, "x")
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"x must be a non-empty batch, got shape {x.shape}")
        return np.concatenate(
            [
                self.classes(self.forward(x[i : i + batch_size]))
                for i in range(0, len(x), batch_size)
            ]
        )

    @property
    def _outputs_probabilities(self) -> bool:
        return self.layers[-1].outputs_probabilities

    def classes(self, out: np.ndarray) -> np.ndarray:
        """Class ids ``(N,)`` from this network's raw output ``(N, K)``: the arg-max, or for a
        single output unit, probability > 0.5 (logit > 0 when there is no final Sigmoid).

        No softmax is needed for the arg-max, which is why :meth:`predict` skips it.
        """
        if out.shape[1] == 1:
            threshold = 0.5 if self._outputs_probabilities else 0.0
            return (out[:, 0] > threshold).astype(np.int64)
        return out.argmax(axis=1)

    # -- description ------------------------------------------------------------------------
    def config(self) -> list[dict[str, Any]]:
        """The architecture as JSON-serialisable data: one ``{"type", "config"}`` per layer."""
        return [{"type": type(layer).__name__, "config": layer.config()} for layer in self.layers]

    def arguments(self) -> dict[str, Any] | None:
        """The constructor arguments a builder such as :class:`MLP` was given (saved with the
        model, as a description), or ``None`` for a plain stack."""
        return None if self._arguments is None else dict(self._arguments)

    @classmethod
    def rebuilt(cls, layers: Sequence[Layer], arguments: dict[str, Any] | None) -> Sequential:
        """A network of this class around already built ``layers`` (how :func:`~chainrule.load`
        gives back the class that was saved without building the layers twice)."""
        model = cls.__new__(cls)
        Sequential.__init__(model, *layers)
        model._arguments = arguments
        return model

    @classmethod
    def from_config(
        cls,
        layers: Sequence[dict[str, Any]],
        dtype: np.dtype | type,
        custom_layers: dict[str, type[Layer]] | None = None,
    ) -> Sequential:
        """Rebuild a network from :meth:`config` (parameters freshly initialised).

        ``custom_layers`` maps the names of a user's own :class:`Layer` subclasses to the classes.
        ``dtype`` goes to every layer whose constructor takes one.
        """
        known = resolve_layers(custom_layers)
        built = []
        for i, spec in enumerate(layers):
            kind = spec.get("type") if isinstance(spec, dict) else None
            if not isinstance(kind, str) or kind not in known:
                raise ValueError(
                    f"layer {i}: unknown layer type {kind!r}; known: {sorted(known)} (pass your "
                    "own layer classes as custom_layers={name: cls})"
                )
            layer_cls = known[kind]
            kwargs = dict(spec.get("config", {}))
            if "dtype" in inspect.signature(layer_cls).parameters:
                kwargs["dtype"] = dtype
            try:
                built.append(layer_cls(**kwargs))
            except TypeError as exc:
                raise ValueError(f"layer {i} ({kind}): bad configuration {kwargs}: {exc}") from exc
        return Sequential(*built)

    def summary(self) -> str:
        """A table of the layers, their output widths and parameter counts."""
        rows = [f"{'#':>3}  {'layer':<24}{'params':>10}"]
        for i, layer in enumerate(self.layers):
            rows.append(f"{i:>3}  {layer!r:<24}{layer.num_params:>10,}")
        rows.append(f"     {'total':<24}{self.num_params:>10,}")
        return "\n".join(rows)

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"{type(self).__name__}({inner})"


def resolve_layers(custom_layers: dict[str, type[Layer]] | None) -> dict[str, type[Layer]]:
    """chainrule's layers by name, with a user's own ``custom_layers`` added (checked)."""
    if custom_layers is None:
        return LAYERS
    if not isinstance(custom_layers, dict):
        got = type(custom_layers).__name__
        raise TypeError(f"custom_layers must be a dict of name to Layer class, got {got}")
    for name, layer_cls in custom_layers.items():
        if not (isinstance(layer_cls, type) and issubclass(layer_cls, Layer)):
            raise TypeError(f"custom_layers[{name!r}] must be a Layer subclass, got {layer_cls!r}")
    return {**LAYERS, **custom_layers}


#: Every network class of chainrule by name, so that loading gives back the class that was saved.
MODELS: dict[str, type[Sequential]] = {"Sequential": Sequential}


def _check_hidden_activation(activation: str) -> None:
    """A builder's hidden layers take an element-wise activation (not softmax)."""
    if activation not in ACTIVATIONS or activation == "softmax":
        raise ValueError(
            f"Unknown activation {activation!r}; choose one of "
            f"{sorted(set(ACTIVATIONS) - {'softmax'})}"
        )


class MLP(Sequential):
    """A multi-layer perceptron: ``Dense -> activation [-> BatchNorm] [-> Dropout]`` per hidden
    layer, then an output ``Dense`` (and an optional output activation).

    Parameters
    ----------
    num_input : int
        Features per sample (784 for MNIST).
    hidden : sequence of int
        Width of each hidden layer, input side first.
    num_output : int
        Output units (10 classes for MNIST).
    activation : {"relu", "leaky_relu", "sigmoid", "tanh"}
        Hidden activation.
    output_activation : {None, "softmax", "sigmoid"}
        None leaves logits (for SoftmaxCrossEntropy or BinaryCrossEntropy(from_logits=True)).
    init : {"he", "xavier", "normal"} or None
        Weight initialiser; None picks He for ReLU-like activations and Xavier otherwise.
    dropout : float
        Dropout probability after each hidden activation (0 adds no Dropout layer).
    batchnorm : bool
        Add BatchNorm after each hidden Dense layer.
    rescale : float or None
        Start with ``Rescaling(rescale)``: ``1 / 255`` for a model given raw pixels (the model
        then holds its preprocessing, and saves and exports it).
    augment : int
        Shift each training image by up to this many pixels (:class:`RandomShift`). The model
        then takes images ``(N, C, H, W)`` and flattens them itself (``C * H * W`` must be
        ``num_input``); 0 adds no shift and the model takes vectors ``(N, num_input)``.
    rng : numpy.random.Generator, int or None
        Source of initial weights; each random layer (Dropout, RandomShift) draws from a
        generator spawned from it.
    dtype : floating dtype

    Examples
    --------
    >>> net = MLP(784, [256, 128], 10, rng=0)
    >>> net.num_params
    235146
    """

    def __init__(
        self,
        num_input: int,
        hidden: Sequence[int],
        num_output: int,
        activation: str = "relu",
        output_activation: str | None = None,
        init: str | None = None,
        dropout: float = 0.0,
        batchnorm: bool = False,
        rescale: float | None = None,
        augment: int = 0,
        rng: np.random.Generator | int | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        _check_hidden_activation(activation)
        if output_activation not in (None, "softmax", "sigmoid"):
            raise ValueError(
                f"Invalid output_activation: {output_activation!r} (None, 'softmax' or 'sigmoid')"
            )
        dropout = check_fraction(dropout, "dropout")
        arguments: dict[str, Any] = {
            "num_input": num_input,
            "hidden": [int(h) for h in hidden] if isinstance(hidden, list | tuple) else hidden,
            "num_output": num_output,
            "activation": activation,
            "output_activation": output_activation,
            "init": init,
            "dropout": dropout,
            "batchnorm": bool(batchnorm),
            "rescale": rescale,
            "augment": check_int(augment, "augment", minimum=0),
        }
        if init is None:
            init = "he" if activation in ("relu", "leaky_relu") else "xavier"
        rng = as_generator(rng)
        sizes = [check_int(num_input, "num_input")]
        if isinstance(hidden, str) or not hasattr(hidden, "__iter__"):
            raise TypeError(
                f"hidden must be a sequence of layer widths such as [256, 128], got {hidden!r}"
            )
        sizes += [check_int(h, "hidden width") for h in hidden]
        sizes.append(check_int(num_output, "num_output"))
        layers: list[Layer] = [] if rescale is None else [Rescaling(rescale)]
        if augment:
            layers += [RandomShift(augment, rng=rng.spawn(1)[0]), Flatten()]
        for fan_in, fan_out in itertools.pairwise(sizes[:-1]):
            layers.append(Dense(fan_in, fan_out, init=init, rng=rng, dtype=dtype))
            if batchnorm:
                layers.append(BatchNorm(fan_out, dtype=dtype))
            layers.append(ACTIVATIONS[activation]())
            if dropout:
                # A generator of its own (spawning does not advance rng): each layer's state is
                # then its own to save and restore.
                layers.append(Dropout(dropout, rng=rng.spawn(1)[0]))
        out_init = "xavier" if init == "he" else init  # no ReLU follows the output layer
        layers.append(Dense(sizes[-2], sizes[-1], init=out_init, rng=rng, dtype=dtype))
        if output_activation is not None:
            layers.append(ACTIVATIONS[output_activation]())
        super().__init__(*layers)
        self._arguments = arguments


class DNN(MLP):
    """The notes' deep network: ``hidden_depth`` hidden layers of ``num_neuron`` units each.

    Parameters
    ----------
    hidden_depth : int
        Number of hidden layers.
    num_neuron : int
        Units in each hidden layer.
    num_input, num_output : int
        Input features and output units.
    activation : str
        Hidden activation (the notes use ``"sigmoid"``).
    **kwargs
        Passed to :class:`MLP` (``output_activation``, ``init``, ``dropout``, ``batchnorm``,
        ``rng``, ``dtype``).

    Examples
    --------
    >>> net = DNN(hidden_depth=5, num_neuron=32, num_input=10, num_output=2, rng=0)
    >>> len([layer for layer in net.layers if isinstance(layer, Dense)])
    6
    """

    def __init__(
        self,
        hidden_depth: int = 5,
        num_neuron: int = 32,
        num_input: int = 10,
        num_output: int = 2,
        activation: str = "sigmoid",
        **kwargs: Any,
    ) -> None:
        depth = check_int(hidden_depth, "hidden_depth", minimum=0)
        width = check_int(num_neuron, "num_neuron")
        super().__init__(num_input, [width] * depth, num_output, activation, **kwargs)
        assert self._arguments is not None
        self._arguments = {
            "hidden_depth": depth,
            "num_neuron": width,
            **{k: v for k, v in self._arguments.items() if k != "hidden"},
        }


class CNN(Sequential):
    """A convolutional network: ``Conv2D -> activation -> MaxPool2D`` per convolution block, then
    ``Flatten`` and an :class:`MLP`'s ``Dense -> activation [-> Dropout]`` hidden layers and
    output ``Dense``.

    Parameters
    ----------
    input_shape : (int, int, int)
        ``(channels, height, width)`` of one image: ``(1, 28, 28)`` for MNIST.
    channels : sequence of int
        Output channels of each convolution, input side first.
    num_output : int
        Output units (10 classes for MNIST).
    kernel_size : int
        Square kernel of every convolution.
    padding : int or sequence of int
        Zeros around the input of each convolution (one value for all, or one per convolution).
    pool : int
        Window and stride of the max pooling after each convolution (1 adds no pooling).
    hidden : sequence of int
        Widths of the Dense hidden layers after the convolutions.
    activation : {"relu", "leaky_relu", "sigmoid", "tanh"}
    dropout : float
        Dropout probability after each Dense hidden layer's activation (0 adds none).
    rescale : float or None
        Start with ``Rescaling(rescale)`` (``1 / 255`` for raw pixels).
    augment : int
        Shift each training image by up to this many pixels (:class:`RandomShift`).
    rng : numpy.random.Generator, int or None
        Source of the initial weights; Dropout and RandomShift draw from generators spawned
        from it.
    dtype : floating dtype

    Shape
    -----
    x : (N, *input_shape) -> y : (N, num_output) logits. Each convolution and pooling follows
    PyTorch's floor rule (see :class:`Conv2D`); a configuration that leaves no pixel is refused.

    Examples
    --------
    >>> net = CNN((1, 28, 28), [8, 16], 10, padding=[2, 0], hidden=[32], rng=0)
    >>> net.forward(np.zeros((2, 1, 28, 28), np.float32)).shape
    (2, 10)
    >>> [repr(layer) for layer in net.layers[:3]]
    ['Conv2D(1 -> 8, 5x5, padding=2x2)', 'ReLU()', 'MaxPool2D(2x2)']
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int],
        num_output: int,
        kernel_size: int = 5,
        padding: int | Sequence[int] = 0,
        pool: int = 2,
        hidden: Sequence[int] = (128,),
        activation: str = "relu",
        dropout: float = 0.0,
        rescale: float | None = None,
        augment: int = 0,
        rng: np.random.Generator | int | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        _check_hidden_activation(activation)
        if isinstance(input_shape, str) or len(input_shape) != 3:
            raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
        c, h, w = (check_int(d, "input_shape entry") for d in input_shape)
        widths = [check_int(k, "channels entry") for k in channels]
        if not widths:
            raise ValueError("channels must name at least one convolution, got []")
        pads = [padding] * len(widths) if isinstance(padding, int) else list(padding)
        if len(pads) != len(widths):
            raise ValueError(
                f"padding has {len(pads)} values for {len(widths)} convolutions: {padding!r}"
            )
        pads = [check_int(p, "padding", minimum=0) for p in pads]
        kernel_size = check_int(kernel_size, "kernel_size")
        pool = check_int(pool, "pool")
        dropout = check_fraction(dropout, "dropout")
        dense = [check_int(k, "hidden width") for k in hidden]
        arguments: dict[str, Any] = {
            "input_shape": [c, h, w],
            "channels": widths,
            "num_output": num_output,
            "kernel_size": kernel_size,
            "padding": pads,
            "pool": pool,
            "hidden": dense,
            "activation": activation,
            "dropout": dropout,
            "rescale": rescale,
            "augment": check_int(augment, "augment", minimum=0),
        }
        rng = as_generator(rng)
        init = "he" if activation in ("relu", "leaky_relu") else "xavier"
        layers: list[Layer] = [] if rescale is None else [Rescaling(rescale)]
        if augment:
            layers.append(RandomShift(augment, rng=rng.spawn(1)[0]))
        for width, pad in zip(widths, pads, strict=True):
            layers.append(
                Conv2D(c, width, kernel_size, padding=pad, init=init, rng=rng, dtype=dtype)
            )
            h, w, c = h + 2 * pad - kernel_size + 1, w + 2 * pad - kernel_size + 1, width
            layers.append(ACTIVATIONS[activation]())
            if pool > 1:
                layers.append(MaxPool2D(pool))
                h, w = (h - pool) // pool + 1, (w - pool) // pool + 1
            if h < 1 or w < 1:
                raise ValueError(
                    f"CNN: {input_shape!r} images leave no pixel after convolution "
                    f"{len(layers)}; use fewer convolutions, more padding or a smaller pool"
                )
        layers.append(Flatten())
        sizes = [c * h * w, *dense]
        for fan_in, fan_out in itertools.pairwise(sizes):
            layers.append(Dense(fan_in, fan_out, init=init, rng=rng, dtype=dtype))
            layers.append(ACTIVATIONS[activation]())
            if dropout:
                layers.append(Dropout(dropout, rng=rng.spawn(1)[0]))
        num_output = check_int(num_output, "num_output")
        layers.append(Dense(sizes[-1], num_output, init="xavier", rng=rng, dtype=dtype))
        super().__init__(*layers)
        self._arguments = arguments
