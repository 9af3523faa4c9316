"""Lesson ``note-002``: the note's MNIST network, and what its update order costs.

Note 002 trains a 784-100-10 sigmoid network on MNIST one example at a time (learning rate 0.3,
inputs scaled to 0.01..1.0, He-style weights, biases drawn uniformly from [0, 1)), reports the
binary cross-entropy summed over the ten outputs, and says that 50,000 training steps take about
26 seconds. Its ``train`` method has two departures from back-propagation:

* it updates the output weights ``W3`` *before* using them to back-propagate into the hidden
  layer, so the hidden layer learns from ``delta3 @ W3_new.T`` instead of ``delta3 @ W3.T``.
  Since ``W3_new = W3 - lr * a2.T @ delta3``, the hidden layer's signal is off by exactly
  ``-lr * |delta3|**2 * a2``: a push in the same direction (all of ``a2`` is positive) on every
  hidden unit, quadratic in the output error;
* its output delta ``(A3 - t) * A3 * (1 - A3)`` is the gradient of ``1/2 * sum((A3 - t)**2)``,
  not of the cross-entropy it reports (whose delta is ``A3 - t``).

The lesson trains the four combinations for one epoch and compares them with chainrule's own
training step (forward, loss, backward through every layer, *then* the update).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..layers import Dense, Sigmoid
from ..losses import BinaryCrossEntropy
from ..network import Sequential
from ..optim import SGD
from ._base import DataDir, Lesson, LessonResult
from ._common import (
    check_seed,
    figure_png,
    format_table,
    load_mnist_bytes,
    load_update_kernels,
    new_figure,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["LESSON", "run"]

LR = 0.3
HIDDEN = 100
#: (training steps, test images, steps between accuracy checks) of the full and the quick form.
FULL, QUICK = (60_000, 10_000, 5_000), (1_500, 1_000, 300)
CURVE_IMAGES = 2_000  # test images behind the accuracy-during-training curve
SATURATED = 0.99  # a hidden sigmoid output above this is saturated: its derivative is < 0.01


@dataclass(frozen=True)
class _Variant:
    label: str
    w3_first: bool  # the note's order: update W3, then back-propagate through it
    note_delta: bool  # the note's output delta (A3 - t) A3 (1 - A3) instead of the BCE's A3 - t


VARIANTS: dict[str, _Variant] = {
    "corrected": _Variant("corrected: backprop, then update", False, False),
    "w3_first": _Variant("W3 updated first (note's order)", True, False),
    "as_written": _Variant("note 002 as written (W3 first + note's delta)", True, True),
    "note_delta": _Variant("note's delta, corrected order", False, True),
}


@dataclass
class _Run:
    steps: list[int] = field(default_factory=list)
    curve: list[float] = field(default_factory=list)
    signal_error: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _scale(pixels: np.ndarray) -> np.ndarray:
    """The note's input scaling: 0..255 to 0.01..1.0."""
    return pixels * (0.99 / 255) + 0.01


def _network(rng: np.random.Generator) -> Sequential:
    hidden = Dense(784, HIDDEN, init="he", rng=rng, dtype=np.float64)
    output = Dense(HIDDEN, 10, init="he", rng=rng, dtype=np.float64)
    for layer in (hidden, output):  # the note draws its biases from U[0, 1)
        layer.params["b"][:] = rng.random(layer.out_features)
    return Sequential(hidden, Sigmoid(), output, Sigmoid())


def _sgd(layer: Dense) -> None:
    for key, p in layer.params.items():
        p -= LR * layer.grads[key]


def _explicit_step(
    net: Sequential, loss: BinaryCrossEntropy, x: np.ndarray, t: np.ndarray, variant: _Variant
) -> float:
    """One step with the layers' arrays, in the order the variant asks for.

    Returns the relative error of the signal the hidden layer receives,
    ``|dL/da2 (used) - dL/da2 (true)| / |dL/da2 (true)|`` (0 in the corrected order).
    """
    hidden, hidden_act, output, output_act = net.layers
    assert isinstance(hidden, Dense)
    assert isinstance(output, Dense)
    y = net.forward(x)
    loss.forward(y, t)
    dy = y - t if variant.note_delta else loss.backward()
    delta3 = output_act.backward(dy)
    true_signal = output.backward(delta3)  # fills dW3, db3; dx through the current W3
    signal = true_signal
    if variant.w3_first:
        _sgd(output)  # the note: W3 and b3 change here ...
        signal = delta3 @ output.params["W"].T  # ... before the hidden layer's signal is formed
    hidden.backward(hidden_act.backward(signal))
    if not variant.w3_first:
        _sgd(output)
    _sgd(hidden)
    norm = float(np.linalg.norm(true_signal))
    return float(np.linalg.norm(signal - true_signal)) / norm if norm else 0.0


def _accuracy_and_hidden(
    net: Sequential, x: np.ndarray, y: np.ndarray, chunk: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each image is classified correctly, and the hidden layer's outputs."""
    first, second = Sequential(*net.layers[:2]), Sequential(*net.layers[2:])
    correct, hidden = [], []
    for start in range(0, len(x), chunk):
        h = first.forward(_scale(x[start : start + chunk]))
        correct.append(net.classes(second.forward(h)) == y[start : start + chunk])
        hidden.append(h)
    return np.concatenate(correct), np.concatenate(hidden)


def _train(
    key: str,
    net: Sequential,
    x: np.ndarray,
    y: np.ndarray,
    curve_data: tuple[np.ndarray, np.ndarray],
    every: int,
) -> _Run:
    variant, record = VARIANTS[key], _Run()
    loss, optimizer = BinaryCrossEntropy(reduction="batchmean"), SGD(lr=LR)
    onehot = np.eye(10)
    params, grads = net.params, net.grads  # the layers' own arrays, updated in place

    def check(step: int) -> None:
        record.steps.append(step)
        record.curve.append(float(_accuracy_and_hidden(net, *curve_data)[0].mean()))

    check(0)
    load_update_kernels(params)  # or the first variant's time pays for loading them
    for start in range(0, len(x), every):
        begin = time.perf_counter()
        for i in range(start, min(start + every, len(x))):
            xi, ti = _scale(x[i : i + 1]), onehot[y[i] : y[i] + 1]
            if key == "corrected":  # chainrule's own training step
                loss.forward(net.forward(xi), ti)
                net.backward(loss.backward(), input_grad=False)
                optimizer.step(params, grads)
            else:
                error = _explicit_step(net, loss, xi, ti, variant)
                if variant.w3_first:
                    record.signal_error.append(error)
        record.seconds += time.perf_counter() - begin
        check(min(start + every, len(x)))
    return record


def run(*, quick: bool = False, seed: int = 0, data_dir: DataDir = None) -> LessonResult:
    """Train note 002's network for one epoch, in the corrected order and in the note's.

    Parameters
    ----------
    quick : bool
        1,500 training steps and 1,000 test images instead of 60,000 and 10,000.
    seed : int
        The initial weights (the same for all four runs) and, in the quick form, which images.
        The full form steps through the training set in file order, as the note does.
    data_dir : path, optional
        Directory of the MNIST IDX files (default: the copy shipped with chainrule).
    """
    rng = np.random.default_rng(check_seed(seed))
    n_train, n_test, every = QUICK if quick else FULL
    (x_all, y_all), (x_test_all, y_test_all) = load_mnist_bytes(data_dir)
    if quick:
        train_idx = rng.permutation(len(x_all))[:n_train]
        test_idx = np.sort(rng.permutation(len(x_test_all))[:n_test])
        x, y = x_all[train_idx], y_all[train_idx]
        x_test, y_test = x_test_all[test_idx], y_test_all[test_idx]
    else:
        x, y = x_all[:n_train], y_all[:n_train]
        x_test, y_test = x_test_all[:n_test], y_test_all[:n_test]
    curve_data = (x_test[:CURVE_IMAGES], y_test[:CURVE_IMAGES])
    init_seed = int(rng.integers(2**31))

    runs: dict[str, _Run] = {}
    hidden_outputs: dict[str, np.ndarray] = {}
    figures: dict[str, float] = {"train_steps": float(len(x)), "test_images": float(len(x_test))}
    for key in VARIANTS:
        net = _network(np.random.default_rng(init_seed))
        runs[key] = _train(key, net, x, y, curve_data, every)
        correct, hidden_outputs[key] = _accuracy_and_hidden(net, x_test, y_test)
        figures[f"{key}_accuracy"] = float(correct.mean())
        figures[f"{key}_matched"] = float(np.count_nonzero(correct))
        figures[f"{key}_not_matched"] = float(np.count_nonzero(~correct))
        figures[f"{key}_seconds_per_50k"] = runs[key].seconds / len(x) * 50_000
        figures[f"{key}_saturated"] = float(np.mean(hidden_outputs[key] > SATURATED))
        if runs[key].signal_error:
            figures[f"{key}_signal_error_mean"] = float(np.mean(runs[key].signal_error))
            figures[f"{key}_signal_error_median"] = float(np.median(runs[key].signal_error))
    return LessonResult(
        _text(figures, len(x), len(x_test)),
        _plot(runs, hidden_outputs, len(curve_data[1])),
        figures,
    )


def _text(fig: dict[str, float], n_train: int, n_test: int) -> str:
    rows = []
    for key, variant in VARIANTS.items():
        error = fig.get(f"{key}_signal_error_mean")
        rows.append(
            [
                variant.label,
                f"{fig[f'{key}_accuracy']:.2%}",
                f"{fig[f'{key}_matched']:,.0f}",
                f"{fig[f'{key}_not_matched']:,.0f}",
                f"{fig[f'{key}_seconds_per_50k']:.1f} s",
                f"{fig[f'{key}_saturated']:.1%}",
                "-" if error is None else f"{error:.1%}",
            ]
        )
    table = format_table(
        [
            "update order / output delta",
            "test acc.",
            "matched",
            "not matched",
            "per 50k steps",
            "saturated a2",
            "signal error",
        ],
        rows,
    )
    return "\n".join(
        [
            f"784-{HIDDEN}-10 sigmoid network, one example at a time, lr {LR:g}, {n_train:,} "
            f"training steps (one pass), inputs scaled to 0.01..1.0; {n_test:,} test images",
            "saturated a2: share of hidden outputs above 0.99 on the test images; signal error: "
            "mean |dL/da2 used - true| / |dL/da2 true| over the steps",
            "",
            table,
            "",
            "The note: 'about 26 seconds for 50,000 training steps'.",
        ]
    )


def _plot(runs: dict[str, _Run], hidden: dict[str, np.ndarray], curve_images: int) -> bytes:
    return figure_png(_figure(runs, hidden, curve_images))


def _figure(runs: dict[str, _Run], hidden: dict[str, np.ndarray], curve_images: int) -> Figure:
    """The three panels, with one legend for all of them below (inside, it covered the curves)."""
    fig = new_figure(14, 4.6)
    ax_acc, ax_err, ax_hist = fig.subplots(1, 3)
    colors = {"corrected": "C0", "w3_first": "C3", "as_written": "C1", "note_delta": "C2"}
    for key, record in runs.items():
        label = VARIANTS[key].label
        ax_acc.plot(
            record.steps, 100 * np.array(record.curve), "o-", ms=3, color=colors[key], label=label
        )
        if record.signal_error:
            errors = np.array(record.signal_error)
            window = max(1, len(errors) // 100)
            smooth = np.convolve(errors, np.ones(window) / window, mode="valid")
            ax_err.semilogy(np.arange(len(smooth)) + window, smooth, color=colors[key], label=label)
        ax_hist.hist(
            hidden[key].ravel(),
            bins=50,
            range=(0, 1),
            histtype="step",
            color=colors[key],
            label=label,
            density=True,
        )
    ax_acc.set_xlabel("training step (one example each)")
    ax_acc.set_ylabel(f"test accuracy (%), {curve_images:,} images")
    ax_acc.set_title("Accuracy during the epoch")
    ax_err.set_xlabel("training step")
    ax_err.set_ylabel("relative error of dL/da2 (moving mean)")
    ax_err.set_title("Error the update order puts into the hidden signal")
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("hidden sigmoid output a2")
    ax_hist.set_ylabel("density")
    ax_hist.set_title("Hidden outputs after training (test images)")
    for ax in (ax_acc, ax_err, ax_hist):
        ax.grid(alpha=0.3, which="both")
    handles, labels = ax_acc.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    return fig


LESSON = Lesson(
    name="note-002",
    title="note 002's 784-100-10 sigmoid network, one example at a time, and its update order",
    notes=("002",),
    run=run,
)
