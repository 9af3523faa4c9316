"""Extreme values under ``np.errstate(all="raise")``, and NaN/inf refused by name.

Logits and pre-activations of 0, +-1e2, +-1e3 and +-1e4 (every combination of three, 343 rows)
go through every activation layer and every loss, forward and backward, in float64 and float32:
no FloatingPointError, finite results in the input's dtype. The stateless maths of
``chainrule.functional`` and the losses are also driven by Hypothesis over values of magnitude
1e-6 to 1e4, with extra weight on the bands where ``exp`` produces subnormal numbers (about -708
to -745 in float64, -87 to -103 in float32). Through whole networks, extreme inputs must not
overflow or produce NaN, and underflow (to 0, the right answer) must not raise either.

tests/test_stability.py already checks +-1000 through each activation and a few losses.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import chainrule as cr
from chainrule import functional as F

SCALE = max(1, settings.default.max_examples // 100)
VALUES = [0.0, 1e2, -1e2, 1e3, -1e3, 1e4, -1e4]
GRID = np.array(list(itertools.product(VALUES, repeat=3)))  # (343, 3)
DTYPES = [np.float64, np.float32]


@pytest.fixture(autouse=True)
def _raise_on_fp_errors() -> Iterator[None]:
    with np.errstate(all="raise"):
        yield


def finite(a: np.ndarray, dtype: type) -> bool:
    return bool(np.isfinite(a).all()) and a.dtype == np.dtype(dtype)


# -- activations ----------------------------------------------------------------------------------
ACTIVATIONS = {
    "ReLU": cr.ReLU,
    "LeakyReLU": cr.LeakyReLU,
    "LeakyReLU(alpha=0)": lambda: cr.LeakyReLU(alpha=0.0),
    "Sigmoid": cr.Sigmoid,
    "Tanh": cr.Tanh,
    "Softmax": cr.Softmax,
}


def _activation_cases() -> Iterator:
    for dtype, name, dy in itertools.product(DTYPES, ACTIVATIONS, ["ones", "random"]):
        yield pytest.param(dtype, name, dy, id=f"{np.dtype(dtype)}-{name}-dy={dy}")


@pytest.mark.parametrize(("dtype", "name", "dy"), list(_activation_cases()))
def test_every_activation_on_the_grid(dtype, name, dy):
    x = GRID.astype(dtype)
    layer = ACTIVATIONS[name]()
    y = layer.forward(x)
    g = np.ones_like(x) if dy == "ones" else np.random.default_rng(0).normal(size=x.shape)
    dx = layer.backward(g.astype(dtype))
    assert finite(y, dtype)
    assert finite(dx, dtype)
    if name in ("Sigmoid", "Softmax"):
        assert y.min() >= 0
        assert y.max() <= 1
    if name == "Softmax":
        atol = 1e-12 if dtype is np.float64 else 1e-6
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=0, atol=atol)
    if name == "Tanh":
        assert np.abs(y).max() <= 1


# -- losses ---------------------------------------------------------------------------------------
def _targets(kind: str, n: int, k: int, dtype: type) -> np.ndarray:
    rng = np.random.default_rng(1)
    if kind == "labels":
        return rng.integers(0, k, n)
    if kind == "one-hot":
        return np.eye(k, dtype=dtype)[rng.integers(0, k, n)]
    if kind == "binary":
        return rng.integers(0, 2, (n, k)).astype(dtype)
    return GRID[::-1].astype(dtype)  # "grid": regression targets as extreme as the outputs


# name -> (loss, head applied to the logits first, target kind)
LOSSES = {
    "SoftmaxCrossEntropy/labels": (cr.SoftmaxCrossEntropy, None, "labels"),
    "SoftmaxCrossEntropy/one-hot": (cr.SoftmaxCrossEntropy, None, "one-hot"),
    "CrossEntropy/labels": (cr.CrossEntropy, F.softmax, "labels"),
    "CrossEntropy/one-hot": (cr.CrossEntropy, F.softmax, "one-hot"),
    "BinaryCrossEntropy": (cr.BinaryCrossEntropy, F.sigmoid, "binary"),
    "BinaryCrossEntropy/batchmean": (
        lambda: cr.BinaryCrossEntropy(reduction="batchmean"),
        F.sigmoid,
        "binary",
    ),
    "BinaryCrossEntropy/from_logits": (
        lambda: cr.BinaryCrossEntropy(from_logits=True),
        None,
        "binary",
    ),
    "MeanSquaredError": (cr.MeanSquaredError, None, "grid"),
    "MeanSquaredError/half": (lambda: cr.MeanSquaredError(half=True), None, "grid"),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_on_the_grid(name, dtype):
    make, head, kind = LOSSES[name]
    y = GRID.astype(dtype)
    if head is not None:
        y = head(y)
    loss = make()
    value = loss.forward(y, _targets(kind, *GRID.shape, dtype))
    assert np.isfinite(value)
    assert finite(loss.backward(), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("target", ["label", "one-hot"])
def test_cross_entropy_of_logits_1000_and_1_is_999(dtype, target):
    logits = np.array([[1000.0, 1.0], [1.0, 1000.0]], dtype)
    t = np.array([1, 0]) if target == "label" else np.array([[0, 1], [1, 0]], dtype)
    loss = cr.SoftmaxCrossEntropy()
    assert loss.forward(logits, t) == pytest.approx(999.0, rel=1e-6)
    np.testing.assert_allclose(loss.backward(), [[0.5, -0.5], [-0.5, 0.5]], atol=1e-7)


# -- whole networks -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_networks_on_the_grid_never_overflow(name, activation, dtype):
    """Through a whole MLP no overflow, invalid operation, division by zero or underflow error
    (underflow to 0 is the right answer and is taken silently)."""
    make, head, kind = LOSSES[name]
    output = {None: None, F.softmax: "softmax", F.sigmoid: "sigmoid"}[head]
    net = cr.MLP(3, [8, 8], 3, activation, output_activation=output, rng=0, dtype=dtype)
    loss = make()
    with np.errstate(all="raise"):
        value = loss.forward(net.forward(GRID, training=True), _targets(kind, *GRID.shape, dtype))
        dx = net.backward(loss.backward())
    assert np.isfinite(value)
    assert finite(dx, dtype)
    for g in net.grads.values():
        assert finite(g, dtype)


# -- Hypothesis: any value in [-1e4, 1e4] through the stateless maths and the losses ------------
def logits(dtype: type) -> st.SearchStrategy[np.ndarray]:
    """Values of magnitude 2**-20 (about 1e-6) to 1e4, or 0. Inputs that are themselves tiny (near
    the smallest normal number) are left out: what matters is large ones whose ``exp`` is tiny."""
    width = np.dtype(dtype).itemsize * 8
    magnitude = st.floats(2.0**-20, 1e4, width=width)
    # Where exp(v) (or exp of a difference from the row's maximum) is subnormal: a narrow band
    # that uniform draws would rarely hit.
    subnormal_exp = st.floats(-760.0, -690.0, width=width) | st.floats(-110.0, -80.0, width=width)
    return hnp.arrays(
        dtype,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
        elements=st.just(0.0) | magnitude | magnitude.map(lambda v: -v) | subnormal_exp,
    )


@settings(max_examples=200 * SCALE)
@given(x=st.sampled_from(DTYPES).flatmap(logits))
def test_functional_maths_on_any_value(x):
    dtype = x.dtype.type
    for f in (F.sigmoid, F.softplus, F.log_sigmoid, F.tanh, F.relu, F.softmax, F.log_softmax):
        assert finite(f(x), dtype), f.__name__
    assert finite(F.leaky_relu(x, 0.01), dtype)
    p = F.softmax(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12 if dtype is np.float64 else 1e-6)
    s = F.sigmoid(x)
    assert ((s >= 0) & (s <= 1)).all()
    assert (F.log_softmax(x) <= 0).all()
    assert (F.softplus(x) >= 0).all()


@settings(max_examples=200 * SCALE)
@given(x=st.sampled_from(DTYPES).flatmap(logits), name=st.sampled_from(sorted(LOSSES)))
def test_losses_on_any_value(x, name):
    make, head, kind = LOSSES[name]
    dtype = x.dtype.type
    y = head(x) if head is not None else x
    t = _targets(kind, *x.shape, dtype) if kind != "grid" else x[::-1].copy()
    loss = make()
    assert np.isfinite(loss.forward(y, t))
    assert finite(loss.backward(), dtype)


# -- NaN and infinity are refused, by name ---------------------------------------------------------
BAD = pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])


def poisoned(shape: tuple[int, ...], bad: float, dtype: type = np.float64) -> np.ndarray:
    a = np.zeros(shape, dtype)
    a.flat[-1] = bad
    return a


def named(bad: float) -> str:
    return "NaN" if np.isnan(bad) else "infinity"


@BAD
@pytest.mark.parametrize(
    "layer",
    [
        lambda: cr.Dense(3, 2, rng=0),
        cr.ReLU,
        cr.LeakyReLU,
        cr.Sigmoid,
        cr.Tanh,
        cr.Softmax,
        lambda: cr.Dropout(0.5, rng=0),
        lambda: cr.BatchNorm(3),
    ],
)
def test_every_layer_refuses_non_finite_input(layer, bad):
    with pytest.raises(ValueError, match=rf"input contains {named(bad)}.*\(1, 2\)"):
        layer().forward(poisoned((2, 3), bad), training=True)


@BAD
@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_refuses_non_finite_predictions_and_targets(name, bad):
    make, _, kind = LOSSES[name]
    y = np.full((4, 3), 0.25)
    t = _targets(kind, 4, 3, np.float64) if kind != "grid" else np.zeros((4, 3))
    with pytest.raises(ValueError, match=rf"prediction y contains {named(bad)}"):
        make().forward(poisoned((4, 3), bad), t)
    bad_t = poisoned(t.shape, bad) if t.dtype.kind == "f" else poisoned((4,), bad)
    with pytest.raises(ValueError, match=rf"target.*contains {named(bad)}"):
        make().forward(y, bad_t)


@BAD
def test_training_evaluation_prediction_and_metrics_refuse_non_finite_data(bad):
    model = cr.MLP(3, [4], 2, rng=0)
    x, y = np.zeros((6, 3)), np.array([0, 1, 0, 1, 0, 1])
    loss, optimizer = cr.SoftmaxCrossEntropy(), cr.SGD(0.1)
    kind = named(bad)
    with pytest.raises(ValueError, match=rf"^x contains {kind}"):
        cr.fit(model, poisoned(x.shape, bad), y, loss=loss, optimizer=optimizer, epochs=1)
    with pytest.raises(ValueError, match=rf"^y contains {kind}"):
        cr.fit(
            model,
            x,
            poisoned((6, 2), bad),
            loss=cr.MeanSquaredError(),
            optimizer=optimizer,
            epochs=1,
        )
    with pytest.raises(ValueError, match=rf"^x_val contains {kind}"):
        cr.fit(
            model,
            x,
            y,
            loss=loss,
            optimizer=optimizer,
            epochs=1,
            validation_data=(poisoned(x.shape, bad), y),
        )
    with pytest.raises(ValueError, match=rf"^x contains {kind}"):
        cr.evaluate(model, poisoned(x.shape, bad), y, loss)
    with pytest.raises(ValueError, match=rf"^x contains {kind}"):
        model.predict(poisoned(x.shape, bad))
    with pytest.raises(ValueError, match=rf"^x contains {kind}"):
        model.predict_proba(poisoned(x.shape, bad))
    with pytest.raises(ValueError, match=rf"x contains {kind}"):
        cr.gradient_check(model, loss, poisoned(x.shape, bad), y)
    with pytest.raises(ValueError, match=rf"y_pred contains {kind}"):
        cr.metrics.accuracy(y, poisoned((6, 2), bad))
    with pytest.raises(ValueError, match=rf"y_true contains {kind}"):
        cr.metrics.confusion_matrix(poisoned((6, 2), bad), y)
