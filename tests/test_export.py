"""ONNX export: every layer of the registry run in onnxruntime against chainrule, a trained MNIST
model on the whole test set, a user's own layer, the refusals, and ``chainrule export``."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import chainrule as cr
from chainrule import functional as F
from chainrule.cli import main
from chainrule.export import OPSET
from chainrule.layers import LAYERS, OnnxGraph
from layer_cases import CASES, LayerCase

#: Layers of ``LAYERS`` that refuse export on purpose (their ``to_onnx`` raises
#: ``NotImplementedError`` saying why), by name. None today: every layer exports.
REFUSED: set[str] = set()

#: The ONNX operators each layer becomes (the issue's mapping); Dropout and RandomShift none, as
#: the identity at inference.
OPERATORS = {
    "Rescaling": ["Mul", "Add"],
    "Rescaling-images": ["Mul"],
    "Dense": ["Gemm"],
    "Dense-he-batch1": ["Gemm"],
    "ReLU": ["Relu"],
    "LeakyReLU": ["LeakyRelu"],
    "Sigmoid": ["Sigmoid"],
    "Tanh": ["Tanh"],
    "Softmax": ["Softmax"],
    "Dropout": [],
    "Flatten": ["Flatten"],
    "RandomShift": [],
    "RandomShift-0": [],
    "BatchNorm": ["BatchNormalization"],
    "Conv2D": ["Conv"],
    "Conv2D-stride2-padding": ["Conv"],
    "Conv2D-rect-stride": ["Conv"],
    "Conv2D-padding-only-window": ["Conv"],
    "MaxPool2D": ["MaxPool"],
    "MaxPool2D-overlapping": ["MaxPool"],
    "MaxPool2D-rect": ["MaxPool"],
    "AvgPool2D": ["AveragePool"],
    "AvgPool2D-overlapping": ["AveragePool"],
}
EXPORTED = [case for case in CASES if case.layer_class.__name__ not in REFUSED]


def run(path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The exported graph's outputs by name, from onnxruntime."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"x": x}), strict=True))


def assert_same_as_chainrule(path, model: cr.Sequential, x: np.ndarray) -> None:
    got = run(path, x)
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(x), rtol=0, atol=1e-5)
    if model.layers[-1].outputs_probabilities:
        assert list(got) == ["probabilities"]
    else:
        assert list(got) == ["probabilities", "logits"]
        np.testing.assert_allclose(got["logits"], model.forward(x), rtol=1e-5, atol=1e-5)


def one_layer_model(case: LayerCase, dtype: type[np.floating] = np.float32) -> cr.Sequential:
    model = cr.Sequential(case.build(dtype))
    if model.layers[0].has_training_mode:  # running statistics that are not the identity
        model.forward(case.x(seed=9, batch=16) * 3.0 + 2.0, training=True)
    return model


# -- every layer of the registry -----------------------------------------------------------------
def test_every_layer_exports_or_refuses_on_purpose():
    """A layer inheriting the default ``to_onnx`` is an oversight; a refusal is an override."""
    inherited = sorted(name for name, cls in LAYERS.items() if cls.to_onnx is cr.Layer.to_onnx)
    assert not inherited, f"give these layers a to_onnx (or a deliberate refusal): {inherited}"
    assert {case.name for case in EXPORTED} == set(OPERATORS), "list the operators of each case"
    for name in REFUSED:
        case = next(case for case in CASES if case.layer_class.__name__ == name)
        with pytest.raises(NotImplementedError, match=f"layer 0: {name}"):
            cr.export_onnx(cr.Sequential(case.build(np.float32)), "never-written.onnx")


@pytest.mark.parametrize("batch", [1, 37])
@pytest.mark.parametrize("case", EXPORTED, ids=str)
def test_each_layer_runs_in_onnxruntime_as_in_chainrule(case: LayerCase, batch: int, tmp_path):
    model = one_layer_model(case)
    path = cr.export_onnx(model, tmp_path / "layer.onnx", input_shape=case.sample)
    x = (case.x(seed=1, batch=batch) * 2.0).astype(np.float32)
    assert_same_as_chainrule(path, model, x)


@pytest.mark.parametrize("case", EXPORTED, ids=str)
def test_each_layer_becomes_its_onnx_operators(case: LayerCase, tmp_path):
    path = cr.export_onnx(one_layer_model(case), tmp_path / "layer.onnx", input_shape=case.sample)
    graph = onnx.load(path).graph
    assert [n.op_type for n in graph.node if n.name.startswith("0.")] == OPERATORS[case.name]
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in graph.initializer)


# -- the file ------------------------------------------------------------------------------------
def test_the_file_is_opset_17_at_its_ir_version_with_a_symbolic_batch(tmp_path):
    model = cr.MLP(12, [8], 3, batchnorm=True, dropout=0.5, rescale=1 / 255, rng=0)
    path = cr.export_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    assert OPSET == 17
    assert proto.ir_version == 8  # what opset 17 needs, not the newest IR onnx knows
    assert proto.producer_name == "chainrule"

    def shape(value: Any) -> list[Any]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [(v.name, shape(v)) for v in proto.graph.input] == [("x", ["batch", 12])]
    outputs = [(v.name, shape(v)) for v in proto.graph.output]
    assert outputs == [("probabilities", ["batch", 3]), ("logits", ["batch", 3])]
    # Parameters are named as the model names them.
    assert {t.name for t in proto.graph.initializer} >= set(model.params) | set(model.buffers)


def test_float64_models_are_exported_as_float32(tmp_path):
    model = cr.MLP(6, [16, 16], 4, activation="tanh", dtype=np.float64, rng=1)
    path = cr.export_onnx(model, tmp_path / "m.onnx")
    assert {t.data_type for t in onnx.load(path).graph.initializer} == {onnx.TensorProto.FLOAT}
    x = np.random.default_rng(0).normal(size=(37, 6)).astype(np.float32)
    assert_same_as_chainrule(path, model, x)


@pytest.mark.parametrize("output_activation", [None, "sigmoid", "softmax"])
@pytest.mark.parametrize("outputs", [1, 3])
def test_probabilities_follow_predict_proba(output_activation, outputs, tmp_path):
    """Logits become probabilities as predict_proba makes them: a sigmoid for one unit, a softmax
    for more; a final Sigmoid or Softmax is the output as it is."""
    model = cr.MLP(5, [8], outputs, output_activation=output_activation, rng=2)
    path = cr.export_onnx(model, tmp_path / "m.onnx")
    x = np.random.default_rng(3).normal(size=(37, 5)).astype(np.float32) * 4
    assert_same_as_chainrule(path, model, x)


def test_sizes_the_model_leaves_open_stay_symbolic(tmp_path):
    """An augmented MLP takes images of any C, H, W with C * H * W inputs, and so does its graph."""
    model = cr.MLP(36, [8], 3, augment=1, rescale=1 / 255, rng=0)
    path = cr.export_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    assert all(not isinstance(d, int) for d in session.get_inputs()[0].shape[1:])
    assert [o.shape for o in session.get_outputs()] == [["batch", 3]] * 2
    images = np.random.default_rng(0).integers(0, 256, size=(37, 36))
    for shape in ((1, 6, 6), (4, 3, 3)):
        assert_same_as_chainrule(path, model, images.reshape(37, *shape).astype(np.float32))


# -- a trained model -----------------------------------------------------------------------------
def test_a_trained_mnist_model_predicts_the_whole_test_set_as_chainrule_does(tmp_path):
    """Rescaling, RandomShift, Flatten, Dense, BatchNorm, ReLU and Dropout, trained together."""
    (x_train, y_train), (x_test, y_test) = cr.datasets.load_mnist(normalize=False, flatten=False)
    model = cr.MLP(784, [64], 10, batchnorm=True, dropout=0.2, rescale=1 / 255, augment=1, rng=0)
    cr.fit(
        model, x_train[:6000], y_train[:6000], loss="softmax_cross_entropy", optimizer="adam",
        epochs=1, batch_size=64, seed=0,
    )  # fmt: skip
    predicted = model.predict(x_test)
    assert np.mean(predicted == y_test) > 0.85  # a trained model, not a random one
    path = cr.export_onnx(model, tmp_path / "mnist.onnx")
    got = run(path, x_test.astype(np.float32))  # raw (N, 1, 28, 28) pixels: the graph scales
    np.testing.assert_array_equal(got["probabilities"].argmax(axis=1), predicted)
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(x_test), atol=1e-5)


def test_a_trained_cnn_predicts_the_test_images_as_chainrule_does(tmp_path):
    """Rescaling, RandomShift, Conv2D, ReLU, MaxPool2D, Flatten, Dense and Dropout together: the
    graph takes raw (N, 1, H, W) pixels, its channels fixed by the first convolution."""
    (x_train, y_train), (x_test, y_test) = cr.datasets.load_mnist(normalize=False, flatten=False)
    model = cr.CNN((1, 28, 28), [4, 8], 10, padding=[2, 0], hidden=[32], dropout=0.25,
                   rescale=1 / 255, augment=2, rng=0)  # fmt: skip
    cr.fit(model, x_train[:3000], y_train[:3000], loss="softmax_cross_entropy",
           optimizer="adam", epochs=1, batch_size=64, seed=0)  # fmt: skip
    x = x_test[:2000]
    predicted = model.predict(x)
    assert np.mean(predicted == y_test[:2000]) > 0.5  # trained (chance: 0.1), not random
    path = cr.export_onnx(model, tmp_path / "cnn.onnx")
    graph = onnx.load(path).graph
    assert [n.op_type for n in graph.node if n.op_type in ("Conv", "MaxPool")] == [
        "Conv", "MaxPool", "Conv", "MaxPool",
    ]  # fmt: skip
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[:2] == ["batch", 1]
    got = run(path, x.astype(np.float32))
    np.testing.assert_array_equal(got["probabilities"].argmax(axis=1), predicted)
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(x), atol=1e-5)


# -- a user's own layer --------------------------------------------------------------------------
class Swish(cr.Layer):
    """``y = x * sigmoid(beta * x)``: a layer chainrule does not have, with its own export."""

    preserves_shape = True

    def __init__(self, beta: float = 1.5) -> None:
        super().__init__()
        self.beta = beta

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return x * F.sigmoid(x * x.dtype.type(self.beta))

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        scaled = graph.node("Mul", [x, graph.initializer("beta", np.float32(self.beta))])
        return graph.node("Mul", [x, graph.node("Sigmoid", [scaled])])


class Unexportable(Swish):
    to_onnx = cr.Layer.to_onnx


def test_a_users_own_layer_exports_through_its_to_onnx(tmp_path):
    model = cr.Sequential(cr.Dense(4, 8, rng=0), Swish(), Swish(0.5), cr.Dense(8, 3, rng=1))
    path = cr.export_onnx(model, tmp_path / "m.onnx")
    names = {t.name for t in onnx.load(path).graph.initializer}
    assert {"1.beta", "2.beta"} <= names  # unique names, scoped by the layer's position
    for batch in (1, 37):
        x = np.random.default_rng(batch).normal(size=(batch, 4)).astype(np.float32)
        assert_same_as_chainrule(path, model, x)


def test_a_layer_that_cannot_be_exported_is_named_and_nothing_is_written(tmp_path):
    model = cr.Sequential(cr.Dense(4, 8, rng=0), Unexportable(), cr.Dense(8, 3, rng=1))
    old = tmp_path / "old.onnx"
    old.write_bytes(b"the previous export")
    for path in (old, tmp_path / "new.onnx"):
        with pytest.raises(NotImplementedError) as info:
            cr.export_onnx(model, path)
        assert str(info.value) == (
            "layer 1: Unexportable() cannot be exported to ONNX: Unexportable does not implement "
            "to_onnx(graph, x)"
        )
    assert old.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["old.onnx"]  # no temporary file left


class Broken(Swish):
    def __init__(self, returns: Any) -> None:
        super().__init__()
        self.returns = returns

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        return self.returns(graph, x)


@pytest.mark.parametrize(
    ("returns", "error", "message"),
    [
        (lambda graph, x: None, TypeError, r"layer 0: Broken\(\)\.to_onnx returned None"),
        (lambda graph, x: "y", TypeError, r"returned 'y', not a value's name"),
        (lambda graph, x: graph.node("Relu", ["nowhere"]), ValueError, "unknown input 'nowhere'"),
        (lambda graph, x: graph.initializer("w", np.array(["a"])), TypeError, "expected numbers"),
        (lambda graph, x: graph.node("Gemm", [x]), onnx.checker.ValidationError, r"0\.Gemm"),
    ],
)
def test_a_users_broken_to_onnx_is_caught_at_the_boundary(returns, error, message, tmp_path):
    model = cr.Sequential(Broken(returns))
    with pytest.raises(error, match=message):
        cr.export_onnx(model, tmp_path / "m.onnx", input_shape=(3,))
    assert not list(tmp_path.iterdir())


# -- refusals ------------------------------------------------------------------------------------
def test_a_non_finite_parameter_is_refused(tmp_path):
    model = cr.MLP(4, [8], 3, rng=0)
    model.params["2.W"][1, 2] = np.nan
    with pytest.raises(ValueError, match=r"2\.W contains NaN .* first at index \(1, 2\)"):
        cr.export_onnx(model, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_the_input_shape_must_be_known_and_fit_the_model(tmp_path):
    with pytest.raises(ValueError, match=r"does not fix the shape of its input samples \(no layer"):
        cr.export_onnx(cr.Sequential(cr.Tanh()), tmp_path / "m.onnx")
    shapeless = cr.Sequential(cr.RandomShift(1), cr.Flatten())  # classes: C * H * W
    with pytest.raises(
        ValueError,
        match=r"number of classes from its input x of shape \(batch, \?, \?, \?\)",
    ):
        cr.export_onnx(shapeless, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"does not take samples of shape \(2, 3, 4\): Dense"):
        cr.export_onnx(cr.MLP(784, [8], 3, augment=1), tmp_path / "m.onnx", input_shape=(2, 3, 4))
    with pytest.raises(ValueError, match=r"input_shape \(5,\) does not fit the model.*\(4,\)"):
        cr.export_onnx(cr.MLP(4, [8], 3, rng=0), tmp_path / "m.onnx", input_shape=(5,))
    with pytest.raises(TypeError, match="input_shape must be a sequence of ints, got 4"):
        cr.export_onnx(cr.MLP(4, [8], 3, rng=0), tmp_path / "m.onnx", input_shape=4)
    with pytest.raises(TypeError, match="model must be a chainrule Sequential, got Dense"):
        cr.export_onnx(cr.Dense(4, 3), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


class Total(cr.Layer):
    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return x.sum(axis=1)

    def to_onnx(self, graph: OnnxGraph, x: str) -> str:
        axes = graph.initializer("axes", np.array([1]))  # an int64 constant
        return graph.node("ReduceSum", [x, axes], keepdims=0)


def test_a_model_must_output_class_scores(tmp_path):
    with pytest.raises(ValueError, match=r"output has shape \(N,\); a classifier's is \(N, K\)"):
        cr.export_onnx(cr.Sequential(cr.Dense(4, 3), Total()), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_without_onnx_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "chainrule\[onnx\]"'):
        cr.export_onnx(cr.MLP(4, [8], 3, rng=0), tmp_path / "m.onnx")


def test_the_docs_five_lines_serve_the_model_as_it_predicts(tmp_path, monkeypatch):
    doc = Path(__file__).resolve().parents[1] / "docs" / "onnx.md"
    block = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)[0]
    assert len([line for line in block.splitlines() if line.strip()]) == 5
    model = cr.MLP(784, [32], 10, rescale=1 / 255, rng=0)
    monkeypatch.chdir(tmp_path)
    cr.export_onnx(model, "model.onnx")
    _, (images, _) = cr.datasets.load_mnist(normalize=False)
    scope = {"images": images[:200]}  # the server's raw pixels
    exec(compile(block, "docs/onnx.md", "exec"), scope)
    np.testing.assert_array_equal(scope["classes"], model.predict(images[:200]))
    np.testing.assert_allclose(scope["probabilities"], model.predict_proba(images[:200]), atol=1e-5)


# -- chainrule export ----------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    model = cr.MLP(784, [16], 10, rescale=1 / 255, rng=0)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cr.save(model, run_dir / "model.npz")
    return model, run_dir / "model.npz"


def test_export_command_writes_a_graph_that_predicts_as_the_model(saved, tmp_path, capsys):
    model, path = saved
    out = tmp_path / "model.onnx"
    assert main(["export", str(path), "--onnx", str(out)]) == 0
    assert capsys.readouterr().out == (
        f"wrote {out} (ONNX opset 17): input x, float32 (batch, 784); first output: probabilities\n"
    )
    _, (x_test, _) = cr.datasets.load_mnist(normalize=False)
    assert_same_as_chainrule(out, model, x_test[:100].astype(np.float32))


def test_export_command_errors_are_one_line_and_exit_2(saved, tmp_path, capsys, monkeypatch):
    _, path = saved
    out = tmp_path / "model.onnx"

    def error(*argv: str) -> str:
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1, err
        return err.strip()

    assert error(str(tmp_path / "absent.npz"), "--onnx", str(out)) == (
        f"chainrule: error: model file not found: {tmp_path / 'absent.npz'}"
    )
    assert error(str(path.parent), "--onnx", str(out)).endswith(f"did you mean {path}?")
    assert error(str(path), "--onnx", str(tmp_path)) == (
        f"chainrule: error: --onnx {tmp_path} is a directory; --onnx names the file to write"
    )
    missing = tmp_path / "no" / "model.onnx"
    assert error(str(path), "--onnx", str(missing)) == (
        f"chainrule: error: {missing}: directory {missing.parent} does not exist"
    )
    # A layer without an ONNX form: saved models hold only chainrule's layers, so make one so.
    monkeypatch.setattr(cr.Rescaling, "to_onnx", cr.Layer.to_onnx)
    assert error(str(path), "--onnx", str(out)) == (
        f"chainrule: error: {path}: layer 0: Rescaling(scale=0.00392157) cannot be exported to "
        "ONNX: Rescaling does not implement to_onnx(graph, x)"
    )
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert "ONNX export needs the onnx package" in error(str(path), "--onnx", str(out))
    assert not out.exists()
