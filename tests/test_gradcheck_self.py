"""The checker checks itself: gradient_check must catch deliberately broken backward passes.

Each bug below is a subclass of a real layer or loss that changes only its backward pass (the
forward pass, hence the numerical gradient, is the library's). For random networks, batches and
inputs (Hypothesis), ``gradient_check`` must report a failure, on the array the bug corrupts, at
its default tolerance and at the looser ``rtol=1e-5`` the property tests use. A check that cannot
fail proves nothing, so these tests are what make tests/test_gradients.py and
tests/test_properties.py meaningful.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import chainrule as cr
from chainrule import functional as F

SCALE = max(1, settings.default.max_examples // 100)


# -- broken layers (forward untouched) ------------------------------------------------------------
class DenseWGradTimes2(cr.Dense):
    """dW twice too large."""

    def _backward(self, dy, need_dx):
        dx = super()._backward(dy, need_dx)
        self.grads["W"] *= 2
        return dx


class DenseWGradTransposed(cr.Dense):
    """dW = (dy^T x) instead of x^T dy: the transpose forgotten (square layers only)."""

    def _backward(self, dy, need_dx):
        dx = super()._backward(dy, need_dx)
        self.grads["W"][...] = (dy.T @ self._x).copy()
        return dx


class DenseInputGradTransposed(cr.Dense):
    """dx = dy W instead of dy W^T (square layers only)."""

    def _backward(self, dy, need_dx):
        super()._backward(dy, need_dx)
        return dy @ self.params["W"]


class DenseBiasSignFlipped(cr.Dense):
    """db = -sum(dy)."""

    def _backward(self, dy, need_dx):
        dx = super()._backward(dy, need_dx)
        self.grads["b"] *= -1
        return dx


class DenseInputGradSignFlipped(cr.Dense):
    """dx = -(dy W^T)."""

    def _backward(self, dy, need_dx):
        return -super()._backward(dy, need_dx)


class DenseGradNotStored(cr.Dense):
    """Computes dx but never writes dW (stale zeros)."""

    def _backward(self, dy, need_dx):
        return dy @ self.params["W"].T


class TanhDerivativeFromInput(cr.Tanh):
    """1 - tanh(y)^2 instead of 1 - y^2: the cached output taken for the input."""

    def _derivative(self, y):
        return F.tanh_grad(np.tanh(y))


class SigmoidDerivativeTimes2(cr.Sigmoid):
    def _derivative(self, y):
        return 2 * F.sigmoid_grad(y)


class SoftmaxJacobianSignFlipped(cr.Softmax):
    """y * (dy + sum(dy y)) instead of y * (dy - sum(dy y))."""

    def _backward(self, dy, need_dx):
        y = self._y
        return y * (dy + (dy * y).sum(axis=1, keepdims=True))


class NaNGradient(cr.Tanh):
    """A backward pass that produces NaN must fail the check, never pass it."""

    def _derivative(self, y):
        d = F.tanh_grad(y)
        d.flat[0] = np.nan
        return d


# -- broken losses --------------------------------------------------------------------------------
class SoftmaxCrossEntropyWithout1OverN(cr.SoftmaxCrossEntropy):
    """(softmax(y) - t) without the 1/N of the batch mean."""

    def _backward(self, *args):
        return super()._backward(*args) * args[0].shape[0]


class MeanSquaredErrorWithoutFactor2(cr.MeanSquaredError):
    """(y - t) / n for the value mean((y - t)^2): the notes' missing factor."""

    def _backward(self, diff, scale):
        return super()._backward(diff, scale) / 2


class BinaryCrossEntropySignFlipped(cr.BinaryCrossEntropy):
    def _backward(self, *args):
        return -super()._backward(*args)


WIDTH = 5  # hidden width: square Dense layers, so a forgotten transpose still has the right shape


def _labels(rng, n):
    return rng.integers(0, 3, n)


def _real(rng, n):
    return rng.normal(size=(n, 3))


def _soft(rng, n):
    return rng.uniform(size=(n, 3))


# name -> (middle layer, loss, target maker, the array the bug must be reported on)
BUGS: dict[str, tuple[Callable[[], cr.Layer], Callable[[], cr.Loss], Callable, str]] = {
    "dW x2": (lambda: DenseWGradTimes2(WIDTH, WIDTH, rng=7), cr.MeanSquaredError, _real, "2.W"),
    "dW transpose missing": (
        lambda: DenseWGradTransposed(WIDTH, WIDTH, rng=7),
        cr.SoftmaxCrossEntropy,
        _labels,
        "2.W",
    ),
    "dx transpose missing": (
        lambda: DenseInputGradTransposed(WIDTH, WIDTH, rng=7),
        cr.SoftmaxCrossEntropy,
        _labels,
        "0.W",
    ),
    "db sign flipped": (
        lambda: DenseBiasSignFlipped(WIDTH, WIDTH, rng=7),
        cr.MeanSquaredError,
        _real,
        "2.b",
    ),
    "dx sign flipped": (
        lambda: DenseInputGradSignFlipped(WIDTH, WIDTH, rng=7),
        lambda: cr.BinaryCrossEntropy(from_logits=True),
        _soft,
        "0.W",
    ),
    "dW never stored": (
        lambda: DenseGradNotStored(WIDTH, WIDTH, rng=7),
        cr.MeanSquaredError,
        _real,
        "2.W",
    ),
    "tanh derivative of the wrong variable": (
        TanhDerivativeFromInput,
        cr.SoftmaxCrossEntropy,
        _labels,
        "0.W",
    ),
    "sigmoid derivative x2": (SigmoidDerivativeTimes2, cr.MeanSquaredError, _real, "0.W"),
    "softmax Jacobian sign": (SoftmaxJacobianSignFlipped, cr.MeanSquaredError, _real, "0.W"),
    "NaN in backward": (NaNGradient, cr.MeanSquaredError, _real, "0.W"),
    "1/N dropped (SoftmaxCrossEntropy)": (
        cr.Tanh,
        SoftmaxCrossEntropyWithout1OverN,
        _labels,
        "3.W",
    ),
    "factor 2 dropped (MeanSquaredError)": (
        cr.Tanh,
        MeanSquaredErrorWithoutFactor2,
        _real,
        "3.W",
    ),
    "sign flipped (BinaryCrossEntropy)": (
        cr.Sigmoid,
        lambda: BinaryCrossEntropySignFlipped(from_logits=True),
        _soft,
        "3.W",
    ),
}


@pytest.mark.parametrize("bug", list(BUGS))
@settings(max_examples=15 * SCALE)
@given(
    n=st.integers(2, 8),  # a dropped 1/N is invisible at N = 1
    seed=st.integers(0, 2**32 - 1),
    magnitude=st.sampled_from([0.1, 1.0, 3.0]),
    rtol=st.sampled_from([1e-6, 1e-5]),
)
def test_a_broken_backward_pass_is_caught(bug, n, seed, magnitude, rtol):
    middle, loss, target, where = BUGS[bug]
    # tanh(y) = y - y**3/3 + ...: for inputs of 0.1 this bug moves the gradient by about y**4, less
    # than rtol, so no check at that tolerance can (or should) see it there.
    assume(bug != "tanh derivative of the wrong variable" or magnitude >= 1.0)
    rng = np.random.default_rng(seed)
    # Dense(4 -> 5), the layer under test, Dense(5 -> 3): parameters 0.*, [1.* or 2.*], 2.*/3.*
    net = cr.Sequential(
        cr.Dense(4, WIDTH, init="xavier", rng=rng.integers(2**32)),
        cr.Tanh(),
        middle(),
        cr.Dense(WIDTH, 3, init="xavier", rng=rng.integers(2**32)),
    )
    x, t = rng.normal(size=(n, 4)) * magnitude, target(rng, n)
    with np.errstate(invalid="ignore"):  # the NaN bug
        report = cr.gradient_check(net, loss(), x, t, rtol=rtol)
    assert not report.passed, f"{bug} went unnoticed:\n{report}"
    failed = {c.name for c in report.checks if not report.ok(c)}
    assert where in failed, f"{bug}: expected {where} among the failures {failed}\n{report}"
    with (
        pytest.raises(cr.GradientCheckError, match="gradient check failed"),
        np.errstate(invalid="ignore"),
    ):
        cr.gradient_check(net, loss(), x, t, rtol=rtol, raise_on_failure=True)


def test_the_same_networks_without_the_bugs_pass():
    """The control: the real layers and losses in the same places pass."""
    rng = np.random.default_rng(0)
    for middle, loss in [
        (lambda: cr.Dense(WIDTH, WIDTH, rng=7), cr.SoftmaxCrossEntropy()),
        (cr.Tanh, cr.MeanSquaredError()),
        (cr.Sigmoid, cr.BinaryCrossEntropy(from_logits=True)),
        (cr.Softmax, cr.MeanSquaredError()),
    ]:
        net = cr.Sequential(
            cr.Dense(4, WIDTH, rng=1), cr.Tanh(), middle(), cr.Dense(WIDTH, 3, rng=2)
        )
        x = rng.normal(size=(6, 4))
        t = (
            rng.integers(0, 3, 6)
            if isinstance(loss, cr.SoftmaxCrossEntropy)
            else rng.random((6, 3))
        )
        report = cr.gradient_check(net, loss, x, t)
        assert report.passed, str(report)


# -- float32 input is promoted, never a false pass ------------------------------------------------
class SlightlyWrongDense(cr.Dense):
    """dW off by one part in 10^4: invisible in float32 arithmetic, obvious in float64."""

    def _backward(self, dy, need_dx):
        dx = super()._backward(dy, need_dx)
        self.grads["W"] *= 1 + 1e-4
        return dx


@pytest.mark.parametrize("x_dtype", [np.float32, np.float16, np.int64, np.uint8])
def test_float32_networks_and_inputs_are_checked_in_float64(x_dtype):
    rng = np.random.default_rng(3)
    x = (rng.random((5, 4)) * 3).astype(x_dtype)  # integers 0 to 2 for the integer dtypes
    t = rng.random((5, 3)).astype(np.float32)
    good = cr.Sequential(cr.Dense(4, WIDTH, rng=1), cr.Tanh(), cr.Dense(WIDTH, 3, rng=2))
    bad = cr.Sequential(SlightlyWrongDense(4, WIDTH, rng=1), cr.Tanh(), cr.Dense(WIDTH, 3, rng=2))
    assert good.dtype == bad.dtype == np.float32
    report = cr.gradient_check(good, cr.MeanSquaredError(), x, t)
    # float32 round-off alone is ~1e-3 relative over a central difference: this needs float64.
    assert report.passed, str(report)
    assert report.max_rel_error < 1e-7, str(report)
    report = cr.gradient_check(bad, cr.MeanSquaredError(), x, t)
    assert not report.passed, f"a 1e-4 error in dW passed in float32:\n{report}"
    assert {c.name for c in report.checks if not report.ok(c)} == {"0.W"}
