"""Extreme inputs give finite values and gradients, with no floating-point warnings."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr

BIG = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]])


@pytest.fixture(autouse=True)
def _raise_on_fp_errors():
    with np.errstate(all="raise"):
        yield


@pytest.mark.parametrize(
    "layer", [cr.Sigmoid(), cr.Tanh(), cr.ReLU(), cr.LeakyReLU(), cr.Softmax()]
)
def test_activations_at_plus_minus_1000(layer):
    y = layer.forward(BIG)
    dx = layer.backward(np.ones_like(BIG))
    assert np.isfinite(y).all()
    assert np.isfinite(dx).all()


def test_sigmoid_saturates_exactly():
    y = cr.Sigmoid().forward(np.array([[-1000.0, 0.0, 1000.0]]))
    np.testing.assert_array_equal(y, [[0.0, 0.5, 1.0]])


def test_softmax_rows_sum_to_one():
    y = cr.Softmax().forward(BIG)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("target", [np.array([1, 2]), np.eye(3)[[1, 2]]], ids=["label", "onehot"])
def test_softmax_cross_entropy_with_huge_logits(target):
    loss = cr.SoftmaxCrossEntropy()
    value = loss.forward(BIG, target)
    assert value == pytest.approx((2000.0 + 1.0 + np.log1p(np.exp(-1.0))) / 2)
    assert np.isfinite(loss.backward()).all()


def test_cross_entropy_of_logits_1000_and_1():
    loss = cr.SoftmaxCrossEntropy()
    assert loss.forward(np.array([[1000.0, 1.0]]), np.array([1])) == pytest.approx(999.0)


@pytest.mark.parametrize("loss", [cr.CrossEntropy(), cr.BinaryCrossEntropy()], ids=["CE", "BCE"])
def test_probability_losses_at_0_and_1(loss):
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    t = np.array([[1.0, 0.0], [1.0, 0.0]])
    value = loss.forward(y, t)
    assert np.isfinite(value)
    assert value > 1.0  # a confident wrong answer costs a lot
    assert np.isfinite(loss.backward()).all()


def test_bce_from_logits_is_stable():
    loss = cr.BinaryCrossEntropy(from_logits=True)
    value = loss.forward(np.array([[1000.0, -1000.0]]), np.array([[0.0, 1.0]]))
    assert value == pytest.approx(1000.0)
    np.testing.assert_allclose(loss.backward(), [[0.5, -0.5]])
