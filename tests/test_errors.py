"""Bad input is refused at the boundary, with a message naming what was expected and received."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr


def test_dense_wrong_feature_count_and_ndim():
    layer = cr.Dense(784, 100, rng=0)
    with pytest.raises(
        ValueError,
        match=r"Dense\(784 -> 100\) expected input of shape \(N, 784\), got \(32, 28, 28\)",
    ):
        layer.forward(np.zeros((32, 28, 28)))
    with pytest.raises(ValueError, match=r"got \(32, 10\)"):
        layer.forward(np.zeros((32, 10)))


def test_sequential_reports_the_failing_layer():
    net = cr.Sequential(cr.Dense(4, 3, rng=0), cr.ReLU(), cr.Dense(5, 2, rng=0))
    with pytest.raises(
        ValueError, match=r"Dense\(5 -> 2\) expected input of shape \(N, 5\), got \(2, 3\)"
    ):
        net.forward(np.zeros((2, 4)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(bad):
    x = np.zeros((2, 3))
    x[1, 2] = bad
    with pytest.raises(ValueError, match=r"(NaN|infinity).*\(1, 2\)"):
        cr.Dense(3, 2, rng=0).forward(x)
    with pytest.raises(ValueError, match=r"NaN|infinity"):
        cr.MLP(3, [4], 2, rng=0).forward(x)
    with pytest.raises(ValueError, match=r"NaN|infinity"):
        cr.MeanSquaredError().forward(x, np.zeros((2, 3)))


def test_backward_before_forward():
    for layer in (cr.Dense(2, 2, rng=0), cr.ReLU(), cr.Softmax(), cr.BatchNorm(2)):
        with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
            layer.backward(np.zeros((1, 2)))
    with pytest.raises(RuntimeError, match="before forward"):
        cr.SoftmaxCrossEntropy().backward()


def test_backward_shape_must_match_the_output():
    layer = cr.Dense(3, 2, rng=0)
    layer.forward(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"\(4, 2\), got \(4, 3\)"):
        layer.backward(np.zeros((4, 3)))


@pytest.mark.parametrize(
    ("y_shape", "t_shape"), [((4, 1), (4,)), ((4,), (4, 1)), ((4, 3), (3, 4)), ((4, 3), (4, 2))]
)
def test_no_silent_broadcasting_in_mse_and_bce(y_shape, t_shape):
    y, t = np.full(y_shape, 0.5), np.zeros(t_shape)
    for loss in (cr.MeanSquaredError(), cr.BinaryCrossEntropy()):
        with pytest.raises(ValueError, match="shape"):
            loss.forward(y, t)


def test_batch_sizes_differ():
    with pytest.raises(ValueError, match="batch sizes differ"):
        cr.SoftmaxCrossEntropy().forward(np.zeros((4, 3)), np.array([0, 1, 2]))


@pytest.mark.parametrize("loss_cls", [cr.SoftmaxCrossEntropy, cr.CrossEntropy])
def test_class_labels_checked(loss_cls):
    y = np.full((3, 4), 0.25)
    with pytest.raises(ValueError, match=r"\[0, 3\].*got values from 0 to 4"):
        loss_cls().forward(y, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="from -1"):
        loss_cls().forward(y, np.array([0, -1, 2]))
    with pytest.raises(TypeError, match=r"integers.*float64.*astype\(int\)"):
        loss_cls().forward(y, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="one-hot"):
        loss_cls().forward(y, np.zeros((3, 5)))


def test_probability_losses_reject_logits():
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        cr.CrossEntropy().forward(np.array([[2.0, -1.0]]), np.array([0]))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: cr.Dense(0, 3), "in_features"),
        (lambda: cr.Dense(3, 2, init="glorot"), "Unknown init 'glorot'"),
        (lambda: cr.Dense(3, 2, rng="seed"), "rng must be"),
        (lambda: cr.Dropout(1.0), "Invalid p: 1.0"),
        (lambda: cr.LeakyReLU(alpha=-0.1), "Invalid alpha: -0.1"),
        (lambda: cr.MLP(3, [4], 2, activation="swish"), "Unknown activation 'swish'"),
        (lambda: cr.DNN(hidden_depth=-1), "Invalid hidden_depth: -1"),
        (lambda: cr.Sequential(cr.Dense(2, 2), "relu"), "argument 1 must be a Layer"),
        (lambda: cr.optim.SGD(lr=-0.1), "Invalid learning rate: -0.1"),
        (lambda: cr.optim.Adam(beta1=1.0), "Invalid beta1: 1.0"),
        (lambda: cr.BinaryCrossEntropy(reduction="sum"), "Invalid reduction"),
    ],
)
def test_constructors_validate(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_non_numeric_input():
    with pytest.raises(TypeError, match="array of numbers"):
        cr.Dense(2, 2, rng=0).forward(np.array([["a", "b"]]))
