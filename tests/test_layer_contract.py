"""Every layer through the same checks, driven by the case registry in ``layer_cases.py``.

The float64 gradient check (both modes for layers that have a training mode), the input guards,
the save/load round trip and the dtype rules run over :data:`layer_cases.CASES`; a layer in
``cr.layers.LAYERS`` without a case fails the first test. A user's own layer, defined here,
goes through the same ``fit`` / ``gradient_check`` / ``save`` / ``load`` as chainrule's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

import chainrule as cr
from chainrule.layers import LAYERS
from layer_cases import CASES, LayerCase

K = 3  # classes of the read-out


class Readout(cr.Layer):
    """A fixed random projection of the flattened sample to K outputs: no parameters, so the
    gradient check of the layer under test checks that layer alone (and dL/dx through it)."""

    def __init__(self, features: int, seed: int = 0) -> None:
        super().__init__()
        self.features = features
        self.seed = seed
        self.matrix = np.random.default_rng(seed).normal(size=(features, K)) / np.sqrt(features)

    def config(self) -> dict[str, Any]:
        return {"features": self.features, "seed": self.seed}

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(len(x), -1) @ self.matrix.astype(x.dtype)

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray:
        return (dy @ self.matrix.T.astype(dy.dtype)).reshape(self._shape)


def probed(case: LayerCase, dtype: type[np.floating] = np.float64) -> cr.Sequential:
    layer = case.build(dtype)
    features = int(np.prod(layer.forward(case.x(), training=False).shape[1:]))
    return cr.Sequential(case.build(dtype), Readout(features))


def modes(case: LayerCase) -> tuple[bool, ...]:
    return (True, False) if case.build(np.float64).has_training_mode else (True,)


def test_every_layer_has_a_case():
    covered = {case.layer_class for case in CASES}
    missing = sorted(name for name, cls in LAYERS.items() if cls not in covered)
    assert not missing, f"add a LayerCase to tests/layer_cases.py for: {missing}"
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)), "case names must be unique"


# -- gradients -----------------------------------------------------------------------------------
LOSSES = {
    "SoftmaxCE": (cr.SoftmaxCrossEntropy, lambda rng, n: rng.integers(0, K, size=n)),
    "MSE": (cr.MeanSquaredError, lambda rng, n: rng.normal(size=(n, K))),
}


@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize(
    ("case", "training"), [(case, mode) for case in CASES for mode in modes(case)], ids=str
)
def test_backprop_matches_central_differences(case: LayerCase, training: bool, loss_name: str):
    net = probed(case)
    if not training:  # non-trivial running statistics first (BatchNorm)
        net.forward(case.x(seed=9, batch=16) * 3.0 + 2.0, training=True)
    make_loss, make_target = LOSSES[loss_name]
    x, t = case.x(seed=1), make_target(np.random.default_rng(2), case.batch)
    report = cr.gradient_check(net, make_loss(), x, t, training=training)
    assert report.passed, str(report)
    assert {c.name for c in report.checks} == {*net.params, "x"}


# -- input guards --------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=str)
def test_wrong_shapes_are_refused_naming_the_layer_and_the_shape(case: LayerCase):
    for shape in case.bad_shapes:
        layer = case.build(np.float32)
        with pytest.raises(ValueError, match="expected input of shape") as info:
            layer.forward(np.zeros(shape))
        assert str(shape) in str(info.value)
        assert type(layer).__name__ in str(info.value)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_non_finite_inputs_and_misused_backward_are_refused(case: LayerCase):
    layer = case.build(np.float64)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((case.batch, *case.sample)))
    for bad in (np.nan, np.inf):
        x = case.x()
        x.flat[3] = bad
        with pytest.raises(ValueError, match=r"input contains .*non-finite value"):
            layer.forward(x)
    y = layer.forward(case.x(), training=True)
    with pytest.raises(ValueError, match=r"dy must have the shape of the last output"):
        layer.backward(np.ones((y.shape[0] + 1, *y.shape[1:])))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_integer_inputs_mean_their_values_whatever_the_dtype(case: LayerCase):
    pixels = np.random.default_rng(0).integers(0, 256, size=(case.batch, *case.sample))
    want = case.build(np.float32).forward(pixels.astype(np.float32), training=True)
    for dtype in (np.uint8, np.int16, np.int64):
        got = case.build(np.float32).forward(pixels.astype(dtype), training=True)
        assert got.dtype == np.float32
        assert got.tobytes() == want.tobytes(), dtype


# -- dtypes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_layer_computes_in_its_dtype(case: LayerCase, dtype: type[np.floating]):
    layer = case.build(dtype)
    other = np.float64 if dtype is np.float32 else np.float32
    y = layer.forward(case.x().astype(other), training=True)
    # A layer with parameters computes in theirs; one without keeps the input's float dtype.
    want = np.dtype(dtype) if layer.params else np.dtype(other)
    assert y.dtype == want
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == want
    for name, p in layer.params.items():
        assert p.dtype == np.dtype(dtype), name
        assert layer.grads[name].dtype == p.dtype, name
    for name, b in layer.buffers.items():
        assert b.dtype == np.dtype(dtype), name


# -- save / load ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_save_load_round_trip(tmp_path, case: LayerCase, dtype: type[np.floating]):
    model = cr.Sequential(case.build(dtype))
    x = case.x().astype(dtype)
    model.forward(x * 2.0 + 1.0, training=True)  # move running statistics and generators
    path = cr.save(model, tmp_path / "m.npz")
    loaded = cr.load(path)

    assert type(loaded[0]) is type(model[0])
    assert loaded.config() == model.config()
    for store in ("params", "buffers"):
        a, b = getattr(model[0], store), getattr(loaded[0], store)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype
            assert a[key].tobytes() == b[key].tobytes(), key
    assert loaded[0].get_extra_state() == model[0].get_extra_state()
    for training in (False, True):  # training mode replays the restored generator
        assert loaded.forward(x, training).tobytes() == model.forward(x, training).tobytes()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_declared_shapes_are_what_the_layer_allocates(case: LayerCase):
    layer = case.build(np.float32)
    arrays = {**layer.params, **layer.buffers}
    declared = type(layer).declared_shapes(layer.config())
    assert declared == {name: a.shape for name, a in arrays.items()}


@pytest.mark.parametrize(
    ("case", "training"), [(case, mode) for case in CASES for mode in modes(case)], ids=str
)
def test_a_later_call_never_overwrites_what_an_earlier_one_returned(case, training):
    """Buffers are reused only where no caller can hold them: what forward and backward return
    stays as it was through the next calls, and the input is never written."""
    layer = case.build(np.float32)
    x1, x2 = case.x(seed=1).astype(np.float32), case.x(seed=2).astype(np.float32)
    x1_before = x1.copy()
    y1 = layer.forward(x1, training)
    y1_before = y1.copy()
    dx1 = layer.backward(np.ones_like(y1))
    dx1_before = dx1.copy()
    y2 = layer.forward(x2, training)
    layer.backward(np.full_like(y2, 2.0))
    np.testing.assert_array_equal(x1, x1_before)
    np.testing.assert_array_equal(y1, y1_before)
    np.testing.assert_array_equal(dx1, dx1_before)


# -- data-parallel -------------------------------------------------------------------------------
class Threads:
    """Threads as the processes of a data-parallel run: each one's :class:`cr.layers.
    ProcessGroup` sums in rank order (what MPI does, without MPI)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=30)  # a missed sum fails, never hangs
        self.parts: list[np.ndarray] = [np.empty(0)] * size

    def group(self, rank: int) -> Any:
        hub = self

        class Group:
            def __init__(self) -> None:
                self.rank, self.size = rank, hub.size
                self.streams = np.random.SeedSequence([7, rank])

            def sum(self, buffer: np.ndarray) -> None:
                hub.parts[rank] = buffer.copy()
                hub.barrier.wait()
                total = np.sum(hub.parts, axis=0)
                hub.barrier.wait()  # every thread has read the parts before any writes again
                buffer[...] = total

            def generator(self) -> np.random.Generator:
                return np.random.default_rng(self.streams.spawn(1)[0])

        return Group()

    def run(self, work: Callable[[int], Any]) -> list[Any]:
        with ThreadPoolExecutor(self.size) as pool:
            return [f.result(timeout=60) for f in [pool.submit(work, r) for r in range(self.size)]]


def split(n: int, size: int) -> list[slice]:
    """Contiguous slices as fit cuts a batch: sizes differ by one at most."""
    return [slice(n * r // size, n * (r + 1) // size) for r in range(size)]


@pytest.mark.parametrize("case", [c for c in CASES if not c.draws], ids=str)
def test_a_batch_split_over_processes_gives_one_process_output_and_gradients(case: LayerCase):
    """What data-parallel training needs of a layer: 3 processes, each given a slice of a batch
    (of 7: slices of 2, 2 and 3) and the same slice of ``dy``, compute the whole batch's output
    and ``dx``; their parameter gradients sum to the whole batch's and their buffers agree."""
    x = case.x(seed=1, batch=7)
    whole = case.build(np.float64)
    y = whole.forward(x, training=True)
    dy = np.random.default_rng(2).normal(size=y.shape)
    dx = whole.backward(dy)
    threads, parts = Threads(3), split(7, 3)

    def process(rank: int) -> cr.Layer:
        layer = case.build(np.float64)
        layer.distribute(threads.group(rank))
        layer._out = layer.forward(x[parts[rank]], training=True)  # type: ignore[attr-defined]
        layer._dx = layer.backward(dy[parts[rank]])  # type: ignore[attr-defined]
        layer.distribute(None)
        return layer

    layers = threads.run(process)
    np.testing.assert_allclose(np.concatenate([la._out for la in layers]), y, rtol=1e-12)
    np.testing.assert_allclose(np.concatenate([la._dx for la in layers]), dx, rtol=1e-10)
    for key, g in whole.grads.items():
        np.testing.assert_allclose(sum(la.grads[key] for la in layers), g, rtol=1e-10, err_msg=key)
    for layer in layers:
        for key, b in whole.buffers.items():
            np.testing.assert_allclose(layer.buffers[key], b, rtol=1e-12, err_msg=key)
    alone = whole.forward(x[:3], training=True)
    for layer in layers:  # once it has left the group, a layer trains on its own batch again
        np.testing.assert_allclose(layer.forward(x[:3], training=True), alone, rtol=1e-12)


@pytest.mark.parametrize("case", [c for c in CASES if c.draws], ids=str)
def test_a_layer_that_draws_draws_differently_in_each_process(case: LayerCase):
    x = case.x(seed=1, batch=64)
    threads = Threads(2)

    def process(rank: int) -> np.ndarray:
        layer = case.build(np.float64)
        layer.distribute(threads.group(rank))
        return layer.forward(x, training=True)

    first, second = threads.run(process)
    assert not np.array_equal(first, second)
    assert np.array_equal(threads.run(process)[0], first)  # the same again: seeded by the rank


# -- a user's own layer --------------------------------------------------------------------------
class Scale(cr.Layer):
    """y = x * w, one learned weight per feature: a layer written outside chainrule."""

    def __init__(self, features: int, dtype: Any = np.float32) -> None:
        super().__init__()
        self.features = features
        self.params["w"] = np.ones(features, dtype=dtype)
        self.grads["w"] = np.zeros(features, dtype=dtype)

    @property
    def input_shape(self) -> tuple[int]:
        return (self.features,)

    def config(self) -> dict[str, Any]:
        return {"features": self.features}

    @classmethod
    def declared_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        return {"w": (int(config["features"]),)}

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._x = x
        return x * self.params["w"]

    def _backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray:
        self.grads["w"][...] = (dy * self._x).sum(axis=0)
        return dy * self.params["w"]


def test_a_users_own_layer_trains_checks_saves_and_loads(tmp_path):
    assert "Scale" not in LAYERS  # a user's class is not registered behind their back
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4))
    y = (x[:, 0] - x[:, 1] > 0).astype(int)
    model = cr.Sequential([Scale(4), cr.Dense(4, 2, rng=0)])
    history = cr.fit(model, x, y, loss="softmax_cross_entropy", optimizer="sgd", epochs=3, seed=0)
    assert history.loss[-1] < history.loss[0]
    assert not np.all(model[0].params["w"] == 1.0)  # fit trained the user's layer

    assert cr.gradient_check(model, cr.SoftmaxCrossEntropy(), x[:5], y[:5]).passed

    path = cr.save(model, tmp_path / "scale.npz")
    with pytest.raises(ValueError, match=r"unknown layer type 'Scale'.*custom_layers"):
        cr.load(path)
    loaded = cr.load(path, custom_layers={"Scale": Scale})
    assert isinstance(loaded[0], Scale)
    assert loaded.predict_proba(x).tobytes() == model.predict_proba(x).tobytes()
