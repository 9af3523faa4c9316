"""Lesson ``overfitting`` (note 004: over-fitting, train / validation / test data).

A network with far more parameters than examples (784-256-256-10, 269,322 parameters) learns 300
MNIST images. It soon classifies every training image correctly while doing clearly worse on the
test set: the gap between the two accuracies is over-fitting. The same network is then trained
with weight decay (an L2 penalty on the weights), with dropout, and with both, and the gap is
measured after every epoch, in accuracy and in loss (the unregularised network becomes ever more
confident, so its test loss climbs while its training loss falls to almost 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..losses import SoftmaxCrossEntropy
from ..network import MLP
from ..optim import SGD
from ..train import Callback, TrainingRun, evaluate, fit
from ._base import DataDir, Lesson, LessonResult
from ._common import check_seed, figure_png, format_table, load_mnist_bytes, new_figure, subset

__all__ = ["LESSON", "run"]

N_TRAIN = 300
HIDDEN = (256, 256)
LR, BATCH = 0.05, 50
WEIGHT_DECAY, DROPOUT = 0.05, 0.5
#: (epochs, test images) of the full and the quick form.
FULL, QUICK = (100, 10_000), (30, 1_000)
#: name -> (weight decay, dropout probability)
SETTINGS: dict[str, tuple[float, float]] = {
    "none": (0.0, 0.0),
    "weight decay": (WEIGHT_DECAY, 0.0),
    "dropout": (0.0, DROPOUT),
    "both": (WEIGHT_DECAY, DROPOUT),
}


@dataclass(eq=False)
class _Curves(Callback):
    """Accuracy and loss on the training and the test set after every epoch, in inference mode
    (without dropout, unlike the training-time figures of :class:`~chainrule.History`)."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)

    def on_epoch_end(self, run: TrainingRun, epoch: int, logs: dict[str, float]) -> None:
        loss = SoftmaxCrossEntropy()
        train = evaluate(run.model, *self.train, loss)
        test = evaluate(run.model, *self.test, loss)
        self.train_acc.append(train["accuracy"])
        self.test_acc.append(test["accuracy"])
        self.train_loss.append(train["loss"])
        self.test_loss.append(test["loss"])

    @property
    def acc_gap(self) -> np.ndarray:
        return np.array(self.train_acc) - np.array(self.test_acc)

    @property
    def loss_gap(self) -> np.ndarray:
        return np.array(self.test_loss) - np.array(self.train_loss)


def run(*, quick: bool = False, seed: int = 0, data_dir: DataDir = None) -> LessonResult:
    """Train a big network on 300 images, without and with weight decay and dropout.

    Parameters
    ----------
    quick : bool
        30 epochs and 1,000 test images instead of 100 epochs and the whole test set.
    seed : int
        Chooses the 300 images, the test subset, the initial weights (the same for every
        setting), the batch order and the dropout masks.
    data_dir : path, optional
        Directory of the MNIST IDX files (default: the copy shipped with chainrule).
    """
    rng = np.random.default_rng(check_seed(seed))
    epochs, n_test = QUICK if quick else FULL
    (x_all, y_all), (x_test_all, y_test_all) = load_mnist_bytes(data_dir)
    x, y = subset(x_all, y_all, N_TRAIN, rng)
    x_test, y_test = subset(x_test_all, y_test_all, n_test, rng)
    init_seed, order_seed = (int(s) for s in rng.integers(2**31, size=2))

    curves: dict[str, _Curves] = {}
    num_params = 0
    for name, (weight_decay, dropout) in SETTINGS.items():
        net = MLP(784, HIDDEN, 10, "relu", dropout=dropout, rescale=1 / 255, rng=init_seed)
        num_params = net.num_params
        curves[name] = _Curves((x, y), (x_test, y_test))
        fit(
            net,
            x,
            y,
            loss=SoftmaxCrossEntropy(),
            optimizer=SGD(lr=LR, weight_decay=weight_decay),
            epochs=epochs,
            batch_size=BATCH,
            seed=order_seed,
            callbacks=[curves[name]],
        )

    figures: dict[str, float] = {"num_params": float(num_params), "epochs": float(epochs)}
    rows = []
    for name, c in curves.items():
        key = name.replace(" ", "_")
        figures[f"{key}_train_accuracy"] = c.train_acc[-1]
        figures[f"{key}_test_accuracy"] = c.test_acc[-1]
        figures[f"{key}_accuracy_gap"] = float(c.acc_gap[-1])
        figures[f"{key}_best_test_accuracy"] = max(c.test_acc)
        figures[f"{key}_train_loss"] = c.train_loss[-1]
        figures[f"{key}_test_loss"] = c.test_loss[-1]
        figures[f"{key}_loss_gap"] = float(c.loss_gap[-1])
        wd, p = SETTINGS[name]
        rows.append(
            [
                name,
                f"{wd:g}",
                f"{p:g}",
                f"{c.train_acc[-1]:.1%}",
                f"{c.test_acc[-1]:.1%}",
                f"{100 * c.acc_gap[-1]:.1f}",
                f"{max(c.test_acc):.1%}",
                f"{c.train_loss[-1]:.3f}",
                f"{c.test_loss[-1]:.3f}",
            ]
        )
    table = format_table(
        [
            "regularisation",
            "weight decay",
            "dropout",
            "train acc.",
            "test acc.",
            "gap (points)",
            "best test acc.",
            "train loss",
            "test loss",
        ],
        rows,
    )
    text = "\n".join(
        [
            f"MLP 784-{'-'.join(map(str, HIDDEN))}-10 (ReLU, {num_params:,} parameters) trained "
            f"on {N_TRAIN} MNIST images for {epochs} epochs (SGD, lr {LR:g}, batch {BATCH});",
            f"accuracy and cross-entropy after the last epoch, on the {N_TRAIN} training images "
            f"and on {len(x_test):,} test images",
            "",
            table,
        ]
    )
    return LessonResult(text, _plot(curves), figures)


def _plot(curves: dict[str, _Curves]) -> bytes:
    fig = new_figure(14, 4.2)
    ax_acc, ax_gap, ax_loss = fig.subplots(1, 3)
    colors = {"none": "C3", "weight decay": "C0", "dropout": "C2", "both": "C4"}
    for name in ("none", "both"):
        c = curves[name]
        epochs = np.arange(1, len(c.train_acc) + 1)
        label = "no regularisation" if name == "none" else "weight decay + dropout"
        ax_acc.plot(
            epochs, 100 * np.array(c.train_acc), "-", color=colors[name], label=f"{label}, train"
        )
        ax_acc.plot(
            epochs, 100 * np.array(c.test_acc), "--", color=colors[name], label=f"{label}, test"
        )
    for name, c in curves.items():
        epochs = np.arange(1, len(c.train_acc) + 1)
        ax_gap.plot(epochs, 100 * c.acc_gap, color=colors[name], label=name)
        ax_loss.plot(epochs, c.loss_gap, color=colors[name], label=name)
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_title(f"Train (solid) vs test (dashed), {N_TRAIN} images")
    ax_gap.set_ylabel("train - test accuracy (points)")
    ax_gap.set_title("Over-fitting gap, accuracy")
    ax_loss.set_ylabel("test - train cross-entropy")
    ax_loss.set_title("Over-fitting gap, loss")
    for ax, columns in ((ax_acc, 2), (ax_gap, 4), (ax_loss, 4)):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        # below the panel: the gap curves move about, and inside they ran under the legend
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=columns)
    return figure_png(fig)


LESSON = Lesson(
    name="overfitting",
    title="300 training images: train vs test accuracy, with weight decay and dropout",
    notes=("004",),
    run=run,
)
