"""Lesson ``depth`` (note 000: in deep networks "the sigmoid does not work well", use ReLU).

The same MNIST subset is learned by networks of 1 to 8 hidden layers of 64 units, once with
sigmoid and once with ReLU hidden units, each with its usual initialisation (Xavier for the
sigmoid, He for ReLU) and the same mini-batch SGD. Besides the test accuracy, the lesson measures
how much gradient reaches the first layer at initialisation: the sigmoid's derivative is at most
1/4, so every sigmoid layer shrinks the back-propagated signal, and a deep sigmoid network's first
layers hardly learn (the vanishing gradient).
"""

from __future__ import annotations

import numpy as np

from ..layers import Dense
from ..losses import SoftmaxCrossEntropy
from ..network import MLP
from ..optim import SGD
from ..train import evaluate, fit
from ._base import DataDir, Lesson, LessonResult
from ._common import check_seed, figure_png, format_table, load_mnist_bytes, new_figure, subset

__all__ = ["LESSON", "run"]

ACTIVATIONS = ("sigmoid", "relu")
DEPTHS, DEPTHS_QUICK = tuple(range(1, 9)), (1, 4, 8)
WIDTH = 64
LR, BATCH = 0.1, 100
#: (training images, epochs, test images) of the full and the quick form.
FULL, QUICK = (10_000, 10, 10_000), (2_000, 3, 1_000)
GRAD_BATCH = 500  # images on which the initial gradient is measured


def _layer_grad_norms(net: MLP, x: np.ndarray, y: np.ndarray) -> list[float]:
    """Frobenius norm of ``dL/dW`` of every Dense layer, input side first."""
    loss = SoftmaxCrossEntropy()
    loss.forward(net.forward(x), y)
    net.backward(loss.backward(), input_grad=False)
    return [float(np.linalg.norm(layer.grads["W"])) for layer in net if isinstance(layer, Dense)]


def run(*, quick: bool = False, seed: int = 0, data_dir: DataDir = None) -> LessonResult:
    """Train sigmoid and ReLU networks of growing depth on the same MNIST subset.

    Parameters
    ----------
    quick : bool
        Depths 1, 4, 8 on 2,000 images for 3 epochs (1,000 test images) instead of depths 1 to 8
        on 10,000 images for 10 epochs (the whole test set).
    seed : int
        Chooses the subsets, the initial weights and the order of the batches.
    data_dir : path, optional
        Directory of the MNIST IDX files (default: the copy shipped with chainrule).
    """
    rng = np.random.default_rng(check_seed(seed))
    n_train, epochs, n_test = QUICK if quick else FULL
    depths = DEPTHS_QUICK if quick else DEPTHS
    (x_all, y_all), (x_test_all, y_test_all) = load_mnist_bytes(data_dir)
    x, y = subset(x_all, y_all, n_train, rng)
    x_test, y_test = subset(x_test_all, y_test_all, n_test, rng)
    init_seed, order_seed = (int(s) for s in rng.integers(2**31, size=2))

    accuracy: dict[tuple[str, int], float] = {}
    norms: dict[tuple[str, int], list[float]] = {}
    classes: dict[tuple[str, int], int] = {}  # how many distinct classes the net predicts
    for activation in ACTIVATIONS:
        for depth in depths:
            net = MLP(784, [WIDTH] * depth, 10, activation, rescale=1 / 255, rng=init_seed)
            norms[activation, depth] = _layer_grad_norms(net, x[:GRAD_BATCH], y[:GRAD_BATCH])
            fit(
                net,
                x,
                y,
                loss=SoftmaxCrossEntropy(),
                optimizer=SGD(lr=LR),
                epochs=epochs,
                batch_size=BATCH,
                seed=order_seed,
            )
            accuracy[activation, depth] = evaluate(net, x_test, y_test)["accuracy"]
            classes[activation, depth] = len(np.unique(net.predict(x_test)))

    figures: dict[str, float] = {}
    for (activation, depth), acc in accuracy.items():
        figures[f"{activation}_depth{depth}_accuracy"] = acc
        figures[f"{activation}_depth{depth}_first_grad"] = norms[activation, depth][0]
        figures[f"{activation}_depth{depth}_classes"] = float(classes[activation, depth])
    rows = [
        [
            str(depth),
            *(f"{accuracy[a, depth]:.1%}" for a in ACTIVATIONS),
            *(f"{norms[a, depth][0]:.1e}" for a in ACTIVATIONS),
        ]
        for depth in depths
    ]
    table = format_table(
        ["hidden layers", "sigmoid acc.", "ReLU acc.", "sigmoid |dW1|", "ReLU |dW1|"], rows
    )
    deepest = depths[-1]
    ratio = {a: norms[a, deepest][-1] / norms[a, deepest][0] for a in ACTIVATIONS}
    collapsed = [f"{a} {d}" for (a, d), n in classes.items() if n == 1]
    text = "\n".join(
        [
            f"MNIST, {len(x):,} training images, {epochs} epochs of SGD (lr {LR:g}, batch "
            f"{BATCH}), hidden layers of {WIDTH} units;",
            f"test accuracy on {len(x_test):,} images; |dW1| = norm of the first layer's "
            f"gradient at initialisation ({GRAD_BATCH} images)",
            "",
            table,
            "",
            f"At depth {deepest} the last layer's gradient is {ratio['sigmoid']:,.0f} times the "
            f"first layer's with sigmoid, {ratio['relu']:,.1f} times with ReLU.",
            "Networks that give every test image the same class: "
            + (", ".join(collapsed) if collapsed else "none")
            + ".",
        ]
    )
    return LessonResult(text, _plot(depths, accuracy, norms), figures)


def _plot(
    depths: tuple[int, ...],
    accuracy: dict[tuple[str, int], float],
    norms: dict[tuple[str, int], list[float]],
) -> bytes:
    fig = new_figure(13, 4.2)
    ax_acc, ax_first, ax_layers = fig.subplots(1, 3)
    styles = {"sigmoid": ("C3", "o", "sigmoid"), "relu": ("C0", "s", "ReLU")}
    for activation, (color, marker, label) in styles.items():
        acc = [100 * accuracy[activation, d] for d in depths]
        first = [norms[activation, d][0] for d in depths]
        ax_acc.plot(depths, acc, marker=marker, color=color, label=label)
        ax_first.semilogy(depths, first, marker=marker, color=color, label=label)
        per_layer = norms[activation, depths[-1]]
        ax_layers.semilogy(
            range(1, len(per_layer) + 1), per_layer, marker=marker, color=color, label=label
        )
    ax_acc.set_xlabel("hidden layers")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_ylim(0, 100)
    ax_acc.set_title("Accuracy after training")
    ax_first.set_xlabel("hidden layers")
    ax_first.set_ylabel("|dL/dW| of the first layer")
    ax_first.set_title("Gradient reaching layer 1 (at init)")
    ax_layers.set_xticks(range(1, len(norms["sigmoid", depths[-1]]) + 1))  # every layer, 1 too
    ax_layers.set_xlabel("layer (1 = input side)")
    ax_layers.set_ylabel("|dL/dW|")
    ax_layers.set_title(f"Gradient per layer, {depths[-1]} hidden layers (at init)")
    for ax in (ax_acc, ax_first, ax_layers):
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    return figure_png(fig)


LESSON = Lesson(
    name="depth",
    title="deeper networks: sigmoid stops learning (vanishing gradient), ReLU does not",
    notes=("000",),
    run=run,
)
