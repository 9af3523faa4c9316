"""The figures printed in the seed notes, reproduced."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr

# Seed 003: a "2" predicted with probability 0.6.
T_ONEHOT = np.array([[0, 0, 1, 0, 0, 0, 0, 0, 0, 0]], dtype=float)
Y = np.array([[0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]])


def test_mse_of_seed_003_example():
    assert cr.MeanSquaredError().forward(Y, T_ONEHOT) == pytest.approx(0.0195, abs=1e-12)
    assert cr.MeanSquaredError(half=True).forward(Y, T_ONEHOT) == pytest.approx(0.00975, abs=1e-12)


@pytest.mark.parametrize("target", [T_ONEHOT, np.array([2])], ids=["one-hot", "label"])
def test_cross_entropy_of_seed_003_example(target):
    assert cr.CrossEntropy().forward(Y, target) == pytest.approx(0.510825457099338, abs=1e-6)


def test_numerical_gradient_of_sum_of_squares():
    def f(x):
        return float(np.sum(x**2))

    x = np.array([-3.0, 4.0])
    for method in ("central", "forward"):
        g = cr.numerical_gradient(f, x, method=method)
        np.testing.assert_allclose(g, [-6.0, 8.0], atol=1e-3 if method == "forward" else 1e-7)
    np.testing.assert_array_equal(x, [-3.0, 4.0])  # restored exactly


def test_gradient_descent_on_sum_of_squares_converges():
    x, path = cr.gradient_descent(lambda v: float(np.sum(v**2)), [-3.0, 4.0], 0.1, 100)
    assert np.abs(x).max() < 1e-8
    assert path.shape == (101, 2)


def test_numerical_gradient_restores_on_error():
    x = np.array([1.0, 2.0])

    def f(v):
        if v[1] != 2.0:
            raise RuntimeError("boom")
        return float(v.sum())

    with pytest.raises(RuntimeError):
        cr.numerical_gradient(f, x)
    np.testing.assert_array_equal(x, [1.0, 2.0])


@pytest.mark.parametrize("method", ["central", "forward"])
def test_numerical_gradient_divides_by_the_step_actually_taken(method):
    # Next to 1e3, float64 cannot hold x + 4e-9 exactly: dividing by h itself would be off by
    # eps * 1e3 / 4e-9 = 5e-5 relative. A linear f makes the exact answer known: 3.
    x = np.array([1000.0 + 1 / 3])
    g = cr.numerical_gradient(lambda v: 3.0 * float(v[0]), x, h=4e-9, method=method)
    assert g[0] == pytest.approx(3.0, rel=1e-9)


def test_numerical_gradient_steps_to_the_neighbour_below_the_resolution():
    # In float32 at 1000 the spacing is 6e-5: a step of 1e-9 would not move x at all (the
    # difference quotient would be 0/h = 0). The next representable numbers are used instead.
    x = np.array([1000.0], dtype=np.float32)
    for method in ("central", "forward"):
        g = cr.numerical_gradient(lambda v: 3.0 * float(v[0]), x, h=1e-9, method=method)
        assert g[0] == pytest.approx(3.0, rel=1e-12)
    assert x[0] == 1000.0
