"""Back-propagation against central differences, in float64: every layer x every loss.

Adding a loss means adding one entry to LOSSES below; adding a layer, one case to
``layer_cases.py`` (``test_layer_contract.py`` checks every layer on its own, in both modes).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import chainrule as cr

IN, HIDDEN, K, N = 4, 6, 3, 5


def _labels(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, K, size=N)


def _onehot(rng: np.random.Generator) -> np.ndarray:
    return np.eye(K)[_labels(rng)]


def _soft(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 1, size=(N, K))


def _real(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=(N, K))


# Each layer is checked on its own over the case registry (test_layer_contract.py); here every
# loss is checked at the end of a deep network, so the chain rule runs through many layers.
def _deep() -> list[cr.Layer]:
    return [
        layer
        for seed in range(4)
        for layer in (cr.Dense(HIDDEN, HIDDEN, init="xavier", rng=5 + seed), cr.Tanh())
    ]


# name -> (loss, output head after the last Dense, target maker)
LOSSES: dict[str, tuple[Callable[[], cr.Loss], list[type[cr.Layer]], Callable]] = {
    "SoftmaxCE-labels": (cr.SoftmaxCrossEntropy, [], _labels),
    "SoftmaxCE-onehot": (cr.SoftmaxCrossEntropy, [], _onehot),
    "SoftmaxCE-soft": (cr.SoftmaxCrossEntropy, [], _soft),  # rows that do not sum to 1
    "CE-labels": (cr.CrossEntropy, [cr.Softmax], _labels),
    "CE-onehot": (cr.CrossEntropy, [cr.Softmax], _onehot),
    "CE-soft": (cr.CrossEntropy, [cr.Softmax], _soft),
    "BCE": (cr.BinaryCrossEntropy, [cr.Sigmoid], _soft),
    "BCE-logits": (lambda: cr.BinaryCrossEntropy(from_logits=True), [], _soft),
    "BCE-batchmean": (lambda: cr.BinaryCrossEntropy(reduction="batchmean"), [cr.Sigmoid], _soft),
    "MSE": (cr.MeanSquaredError, [], _real),
    "MSE-half": (lambda: cr.MeanSquaredError(half=True), [], _real),
}


@pytest.mark.parametrize("loss_name", LOSSES)
def test_backprop_matches_numerical_gradient(loss_name: str):
    rng = np.random.default_rng(0)
    make_loss, head, make_target = LOSSES[loss_name]
    net = cr.Sequential(
        cr.Dense(IN, HIDDEN, init="xavier", rng=1),
        *_deep(),
        cr.Dense(HIDDEN, K, init="xavier", rng=2),
        *(cls() for cls in head),
    )
    x, t = rng.normal(size=(N, IN)), make_target(rng)
    report = cr.gradient_check(net, make_loss(), x, t)
    assert report.passed, str(report)  # relative error <= 1e-6 (or a zero gradient, see atol)
    assert {c.name for c in report.checks} == {*net.params, "x"}


def test_batch_of_one_and_notes_dnn():
    net = cr.DNN(hidden_depth=5, num_neuron=32, num_input=10, num_output=2, rng=0)
    rng = np.random.default_rng(1)
    for n in (1, 7):
        x, t = rng.normal(size=(n, 10)), rng.uniform(size=(n, 2))
        report = cr.gradient_check(net, cr.MeanSquaredError(), x, t)
        assert report.passed, str(report)


def test_float32_network_is_checked_in_float64_and_left_untouched():
    net = cr.MLP(3, [5], 2, rng=0)
    before = {k: v.copy() for k, v in net.params.items()}
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    report = cr.gradient_check(net, cr.SoftmaxCrossEntropy(), x, np.array([0, 1, 1, 0]))
    assert report.max_rel_error < 1e-6  # float32 differences could never get this close
    for k, v in net.params.items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, before[k])
