"""ONNX export: a model as a file that onnxruntime, or any other ONNX runtime, serves.

Each layer adds its own nodes through :meth:`~chainrule.Layer.to_onnx`, given a
:class:`GraphBuilder`; this module never names a layer class. It adds the input and the
outputs, checks the graph with onnx's full checker and writes the file atomically. The graph,
opset 17 with the IR version that opset needs (8):

=================  ========================  =================================================
value              type                      what it is
=================  ========================  =================================================
``x``              float32 ``(batch, ...)``  what ``model.predict`` takes (raw pixels for a
                                             model that holds its ``Rescaling``); sizes the
                                             model leaves open are symbolic
``probabilities``  float32 ``(batch, K)``    ``model.predict_proba(x)``
``logits``         float32 ``(batch, K)``    ``model.forward(x)``, for a model that ends in
                                             logits (no final Softmax or Sigmoid)
=================  ========================  =================================================

onnx is an optional dependency (``pip install "chainrule[onnx]"``), imported only here and only
when a model is exported.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._checks import check_finite, check_int
from ._version import __version__
from .io import atomic_write
from .network import Sequential

__all__ = ["OPSET", "GraphBuilder", "export_onnx"]

#: The ONNX opset of exported graphs.
OPSET = 17
_BATCH = "batch"  # the symbolic batch dimension
Shape = tuple[int | None, ...]  # of one sample; None: a symbolic size


@dataclass(frozen=True)
class _Node:
    op_type: str
    inputs: tuple[str, ...]
    output: str
    attributes: dict[str, Any]


class GraphBuilder:
    """The graph a layer's :meth:`~chainrule.Layer.to_onnx` adds its nodes to.

    It records nodes and constants as plain data (no onnx needed to build it); every name it
    hands out is unique, prefixed with the position of the layer being exported, so a layer's
    constants are named as the model names its parameters (``"2.W"``) and its nodes by op type
    (``"2.Gemm"``).

    Examples
    --------
    >>> graph = GraphBuilder()
    >>> graph.scope = "0."
    >>> graph.node("Mul", ["x", graph.initializer("scale", np.float32(0.5))])
    '0.Mul'
    """

    def __init__(self) -> None:
        self.nodes: list[_Node] = []
        self.initializers: dict[str, np.ndarray] = {}
        #: Prefix of the names handed out: the exporter sets it to ``"{layer index}."``.
        self.scope = ""
        self._taken: set[str] = set()

    def unique(self, hint: str) -> str:
        """A name not used before: ``scope + hint``, with ``_1``, ``_2``... if it is taken."""
        name, n = f"{self.scope}{hint}", 1
        candidate = name
        while candidate in self._taken:
            candidate, n = f"{name}_{n}", n + 1
        self._taken.add(candidate)
        return candidate

    def node(
        self, op_type: str, inputs: Sequence[str], *, output: str | None = None, **attributes: Any
    ) -> str:
        """Add the operator ``op_type`` on the values ``inputs``; returns its output's name."""
        for name in inputs:
            if name not in self._taken:
                raise ValueError(f"{op_type} node: unknown input {name!r} (not in the graph)")
        out = self.unique(output or op_type)
        self.nodes.append(_Node(op_type, tuple(inputs), out, attributes))
        return out

    def initializer(self, name: str, array: np.ndarray | float) -> str:
        """Add a constant: floating values as float32 (finite), integers as int64."""
        value = np.asarray(array)
        if np.issubdtype(value.dtype, np.floating):
            check_finite(value, f"{self.scope}{name}")  # a diverged model is not exported
            value = value.astype(np.float32)
        elif np.issubdtype(value.dtype, np.integer):
            value = value.astype(np.int64)
        else:
            raise TypeError(f"initializer {name!r}: expected numbers, got dtype {value.dtype}")
        unique = self.unique(name)
        self.initializers[unique] = value
        return unique

    def has(self, name: str) -> bool:
        """Whether ``name`` is a value of the graph."""
        return name in self._taken


def export_onnx(
    model: Sequential,
    path: str | os.PathLike[str],
    *,
    input_shape: Sequence[int] | None = None,
) -> Path:
    """Write ``model`` to ``path`` as an ONNX graph computing its class probabilities.

    The graph's input ``x`` takes what :meth:`~chainrule.Sequential.predict` takes, as float32,
    with a symbolic batch dimension; its first output ``probabilities`` equals
    ``model.predict_proba(x)`` and, for a model ending in logits, its second output ``logits``
    equals ``model.forward(x)``. Preprocessing the model holds (``Rescaling``) is part of the
    graph; Dropout is dropped (the identity at inference) and BatchNorm uses its running
    statistics. Parameters are stored as float32.

    Parameters
    ----------
    model : Sequential
    path : path-like
        The ``.onnx`` file to write; replaced only once the new one is complete, and not
        touched if the model cannot be exported.
    input_shape : sequence of int, optional
        The shape of one input sample. Needed only when no layer declares it
        (``model.input_shape`` is None) or the number of classes depends on it; otherwise the
        sizes the model leaves open (None entries of ``model.input_shape``) stay symbolic.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    NotImplementedError
        Naming the layer and its position, if a layer cannot be exported.
    ImportError
        If onnx is not installed.
    ValueError
        If the input shape is unknown or does not fit the model, or a parameter is not finite.

    Examples
    --------
    >>> import chainrule as cr
    >>> model = cr.MLP(784, [128], 10, rescale=1 / 255, rng=0)
    >>> cr.export_onnx(model, "model.onnx")  # doctest: +SKIP
    PosixPath('model.onnx')
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a chainrule Sequential, got {type(model).__name__}")
    onnx = _import_onnx()
    sample = _sample_shape(model, input_shape)
    graph = GraphBuilder()
    x = graph.unique("x")
    y = _add_layers(graph, model, x)
    out_shape = _output_shape(onnx, model, graph, (x, sample), y)
    outputs = _heads(graph, y, model.layers[-1].outputs_probabilities, out_shape[0])
    proto = _model_proto(onnx, graph, (x, sample), [(name, out_shape) for name in outputs])
    proto.doc_string = repr(model)
    onnx.checker.check_model(proto, full_check=True)
    return atomic_write(path, proto.SerializeToString())


def _add_layers(graph: GraphBuilder, model: Sequential, x: str) -> str:
    """Each layer's nodes, in order, from the input ``x``; returns the model's output's name."""
    y = x
    for i, layer in enumerate(model.layers):
        graph.scope = f"{i}."
        try:
            y = layer.to_onnx(graph, y)
        except NotImplementedError as exc:
            raise NotImplementedError(f"layer {i}: {exc}") from exc
        if not isinstance(y, str) or not graph.has(y):
            raise TypeError(f"layer {i}: {layer!r}.to_onnx returned {y!r}, not a value's name")
    graph.scope = ""
    return y


def _heads(graph: GraphBuilder, y: str, probabilities: bool, units: int | None) -> list[str]:
    """The graph's outputs from the model's output ``y``: class probabilities by
    :meth:`~chainrule.Sequential.predict_proba`'s rule (the output as it is if it already holds
    probabilities, else a sigmoid for one unit and a softmax over the classes for more), then
    the logits when ``y`` holds them."""
    if probabilities:
        graph.node("Identity", [y], output="probabilities")
        return ["probabilities"]
    if units == 1:
        graph.node("Sigmoid", [y], output="probabilities")
    else:
        graph.node("Softmax", [y], output="probabilities", axis=1)
    graph.node("Identity", [y], output="logits")
    return ["probabilities", "logits"]


def _import_onnx() -> Any:
    try:
        return importlib.import_module("onnx")
    except ImportError as exc:
        raise ImportError(
            f'ONNX export needs the onnx package: pip install "chainrule[onnx]" ({exc})'
        ) from exc


def _sample_shape(model: Sequential, input_shape: Sequence[int] | None) -> Shape:
    """The shape of one input sample: ``input_shape`` if given (checked against the model's),
    else the one the model declares (its None entries, any size, stay symbolic in the graph)."""
    declared = model.input_shape
    if input_shape is None:
        if declared is None:
            raise ValueError(
                "the model does not fix the shape of its input samples (no layer declares "
                "one); pass input_shape=(...) for one sample"
            )
        return declared
    if isinstance(input_shape, str) or not hasattr(input_shape, "__iter__"):
        raise TypeError(f"input_shape must be a sequence of ints, got {input_shape!r}")
    shape = tuple(check_int(d, "input_shape entry") for d in input_shape)
    if declared is not None and (
        len(declared) != len(shape)
        or any(d not in (None, s) for d, s in zip(declared, shape, strict=True))
    ):
        raise ValueError(f"input_shape {shape} does not fit the model, which takes {declared}")
    return shape


def _output_shape(
    onnx: Any, model: Sequential, graph: GraphBuilder, inputs: tuple[str, Shape], y: str
) -> Shape:
    """The shape of one sample of the model's output ``y``, ``(K, ...)`` with a known number of
    classes K (None entries: sizes that depend on the input's symbolic ones)."""
    shape = _infer_output_shape(onnx, model, graph, inputs, y)
    if shape == ():
        raise ValueError("the model's output has shape (N,); a classifier's is (N, K) scores")
    if shape is None or (shape[0] is None and not model.layers[-1].outputs_probabilities):
        dims = ", ".join("?" if d is None else str(d) for d in inputs[1])
        raise ValueError(
            f"onnx cannot infer the model's number of classes from its input x of shape (batch, "
            f"{dims}); pass input_shape=(...) for one sample"
        )
    return shape


def _infer_output_shape(
    onnx: Any, model: Sequential, graph: GraphBuilder, inputs: tuple[str, Shape], y: str
) -> Shape | None:
    """The shape of one sample of ``y``: from chainrule's forward pass when the input's is
    concrete, else from onnx's shape inference of the graph (None: a shape onnx cannot infer,
    such as that of a malformed node, which the full check names once the shape is given)."""
    x, sample = inputs
    concrete = tuple(d for d in sample if d is not None)
    if len(concrete) == len(sample):
        try:
            return model.forward(np.zeros((1, *concrete), np.float32)).shape[1:]
        except ValueError as exc:
            raise ValueError(f"the model does not take samples of shape {sample}: {exc}") from exc
    if y == x:
        return sample
    proto = _model_proto(onnx, graph, inputs, [(y, None)])
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    for value in [*inferred.value_info, *inferred.output]:
        if value.name == y and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim[1:]
            return tuple(d.dim_value or None for d in dims)
    return None


def _model_proto(
    onnx: Any,
    graph: GraphBuilder,
    inputs: tuple[str, Shape],
    outputs: list[tuple[str, Shape | None]],
) -> Any:
    """The ``ModelProto`` of ``graph``: opset :data:`OPSET`, and the IR version it needs (newer
    IR versions are refused by older onnxruntime releases). A shape of None leaves an output's
    shape to inference."""
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    float32 = onnx.TensorProto.FLOAT

    def value(name: str, shape: Shape | None) -> Any:
        dims = None if shape is None else [_BATCH, *shape]
        return helper.make_tensor_value_info(name, float32, dims)

    nodes = [
        helper.make_node(n.op_type, list(n.inputs), [n.output], name=n.output, **n.attributes)
        for n in graph.nodes
    ]
    onnx_graph = helper.make_graph(
        nodes,
        "chainrule",
        [value(*inputs)],
        [value(*output) for output in outputs],
        [numpy_helper.from_array(array, name) for name, array in graph.initializers.items()],
    )
    return helper.make_model_gen_version(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="chainrule",
        producer_version=__version__,
    )
