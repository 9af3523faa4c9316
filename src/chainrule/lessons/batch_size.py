"""Lesson ``batch-size`` (notes 003 and 004: mini-batches, SGD, MSE and cross-entropy).

Note 003's two-layer network (784-50-10, ReLU, softmax) learns MNIST by SGD at learning rate 0.1
with mini-batches of 100. This lesson gives the same network the same wall-clock budget with
batches of 1, 10, 100 and 1000 images: a large batch costs far less time per image (one matrix
product instead of many small ones, as note 004 says of GPUs), a small batch makes many more
updates per image. It then trains the network once with cross-entropy and once with note 004's
mean squared error ``1/2 * sum_k (y_k - t_k)**2`` on the softmax output, same batches, same rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..losses import Loss, MeanSquaredError, SoftmaxCrossEntropy
from ..network import MLP
from ..optim import SGD
from ..train import Callback, TrainingRun, evaluate, fit
from ._base import DataDir, Lesson, LessonResult
from ._common import check_seed, figure_png, format_table, load_mnist_bytes, new_figure, subset

__all__ = ["LESSON", "run"]

BATCH_SIZES = (1, 10, 100, 1000)
HIDDEN, LR = 50, 0.1
#: (seconds per batch size, test images, epochs of the loss comparison, its training images)
FULL, QUICK = (10.0, 10_000, 5, 60_000), (0.4, 1_000, 2, 10_000)
#: Fractions of the budget at which test accuracy is measured (log-spaced: learning is fastest
#: at the start); a first measurement is taken before training.
CHECKPOINTS = np.geomspace(0.01, 1.0, 13)
LOSS_BATCH = 100


@dataclass(eq=False)
class _Budget(Callback):
    """Stop training after ``seconds`` of training time, measuring test accuracy on the way.

    The clock is paused while accuracy is measured, so every batch size gets the same time to
    train, whatever its evaluations cost.
    """

    seconds: float
    batch_size: int
    n_train: int
    test: tuple[np.ndarray, np.ndarray]
    times: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    images: int = 0
    trained: float = 0.0
    _start: float = 0.0

    def on_train_begin(self, run: TrainingRun) -> None:
        self._checkpoint(run)
        self._start = time.perf_counter()

    def on_batch_end(self, run: TrainingRun, batch: int, loss: float) -> None:
        now = time.perf_counter()
        self.trained += now - self._start
        last = batch == run.batches_per_epoch - 1  # the remainder, when the size does not divide
        self.images += self.n_train - batch * self.batch_size if last else self.batch_size
        if self.trained >= self.seconds:
            self._checkpoint(run)
            run.stop = True  # fit ends after this batch
            return
        due = len(self.times) - 1  # the first entry is the measurement before training
        if due < len(CHECKPOINTS) - 1 and self.trained >= self.seconds * CHECKPOINTS[due]:
            self._checkpoint(run)
        self._start = time.perf_counter()

    def _checkpoint(self, run: TrainingRun) -> None:
        self.times.append(self.trained)
        self.accuracy.append(evaluate(run.model, *self.test)["accuracy"])

    @property
    def seconds_per_image(self) -> float:
        return self.trained / self.images


@dataclass(eq=False)
class _TestAccuracy(Callback):
    test: tuple[np.ndarray, np.ndarray]
    accuracy: list[float] = field(default_factory=list)

    def on_epoch_end(self, run: TrainingRun, epoch: int, logs: dict[str, float]) -> None:
        self.accuracy.append(evaluate(run.model, *self.test)["accuracy"])


def _race(
    batch_size: int,
    seconds: float,
    x: np.ndarray,
    y: np.ndarray,
    test: tuple[np.ndarray, np.ndarray],
    init_seed: int,
    order_seed: int,
) -> _Budget:
    net = MLP(784, [HIDDEN], 10, "relu", rescale=1 / 255, rng=init_seed)
    budget = _Budget(seconds, batch_size, len(x), test)
    # The budget ends training (run.stop), not the epoch count.
    fit(
        net,
        x,
        y,
        loss=SoftmaxCrossEntropy(),
        optimizer=SGD(lr=LR),
        epochs=1_000_000,
        batch_size=batch_size,
        seed=order_seed,
        callbacks=[budget],
    )
    return budget


def _compare_losses(
    epochs: int,
    x: np.ndarray,
    y: np.ndarray,
    test: tuple[np.ndarray, np.ndarray],
    init_seed: int,
    order_seed: int,
) -> dict[str, list[float]]:
    curves = {}
    targets = np.eye(10, dtype=np.float32)[y]
    runs: dict[str, tuple[str | None, Loss, float, np.ndarray]] = {
        "cross-entropy": (None, SoftmaxCrossEntropy(), LR, y),
        # Note 004's 1/2 * sum over the 10 outputs; chainrule's half=True averages over them
        # instead, so the same objective and step need a learning rate 10 times larger.
        "MSE": ("softmax", MeanSquaredError(half=True), LR * 10, targets),
    }
    for name, (output, loss, lr, target) in runs.items():
        net = MLP(
            784, [HIDDEN], 10, "relu", output_activation=output, rescale=1 / 255, rng=init_seed
        )
        record = _TestAccuracy(test)
        fit(
            net,
            x,
            target,
            loss=loss,
            optimizer=SGD(lr=lr),
            epochs=epochs,
            batch_size=LOSS_BATCH,
            seed=order_seed,
            callbacks=[record],
        )
        curves[name] = record.accuracy
    return curves


def run(*, quick: bool = False, seed: int = 0, data_dir: DataDir = None) -> LessonResult:
    """Race the batch sizes against the clock, then compare MSE with cross-entropy.

    Parameters
    ----------
    quick : bool
        0.4 s per batch size, 1,000 test images and 2 epochs on 10,000 images for the loss
        comparison, instead of 10 s, the whole test set and 5 epochs on all 60,000 images.
    seed : int
        The initial weights (the same for every run), the batch order and the subsets.
    data_dir : path, optional
        Directory of the MNIST IDX files (default: the copy shipped with chainrule).
    """
    rng = np.random.default_rng(check_seed(seed))
    seconds, n_test, epochs, n_loss = QUICK if quick else FULL
    (x, y), (x_test_all, y_test_all) = load_mnist_bytes(data_dir)
    test = subset(x_test_all, y_test_all, n_test, rng)
    x_loss, y_loss = subset(x, y, n_loss, rng)
    init_seed, order_seed = (int(s) for s in rng.integers(2**31, size=2))

    # A throwaway step of the same training first: the first step of a process loads the compiled
    # kernels (about a second), which the first race's budget would otherwise pay for.
    fit(
        MLP(784, [HIDDEN], 10, "relu", rescale=1 / 255, rng=init_seed),
        x[:LOSS_BATCH],
        y[:LOSS_BATCH],
        loss=SoftmaxCrossEntropy(),
        optimizer=SGD(lr=LR),
        epochs=1,
        batch_size=LOSS_BATCH,
        seed=order_seed,
    )
    races = {b: _race(b, seconds, x, y, test, init_seed, order_seed) for b in BATCH_SIZES}
    curves = _compare_losses(epochs, x_loss, y_loss, test, init_seed, order_seed)

    figures: dict[str, float] = {"budget_s": seconds, "test_images": float(len(test[0]))}
    rows = []
    for b, race in races.items():
        figures[f"batch{b}_seconds_per_epoch"] = race.seconds_per_image * len(x)
        figures[f"batch{b}_accuracy"] = race.accuracy[-1]
        figures[f"batch{b}_epochs"] = race.images / len(x)
        rows.append(
            [
                str(b),
                f"{race.seconds_per_image * len(x):.2f} s",
                f"{race.seconds_per_image * 1e6:.1f} us",
                f"{race.images // b:,}",
                f"{race.images / len(x):.2f}",
                f"{race.accuracy[-1]:.2%}",
            ]
        )
    for name, accuracy in curves.items():
        figures[f"{name.lower().replace('-', '_')}_accuracy"] = accuracy[-1]
    table = format_table(
        ["batch", "time/epoch", "per image", "updates", "epochs", "test acc."], rows
    )
    loss_table = format_table(
        ["epoch", *curves],
        [[str(e + 1), *(f"{c[e]:.2%}" for c in curves.values())] for e in range(epochs)],
    )
    text = "\n".join(
        [
            f"MLP 784-{HIDDEN}-10 (ReLU), SGD lr {LR:g}, softmax cross-entropy; each batch size "
            f"trains for {seconds:g} s on the {len(x):,} training images",
            f"(time per epoch measured over the images actually trained; accuracy on "
            f"{len(test[0]):,} test images when the time is up)",
            "",
            table,
            "",
            f"Same network and batches of {LOSS_BATCH}, {epochs} epochs on {len(x_loss):,} "
            "images: cross-entropy vs 1/2 * sum (y - t)^2 on the softmax output "
            "(test accuracy after each epoch)",
            "",
            loss_table,
        ]
    )
    return LessonResult(text, _plot(races, curves, len(x)), figures)


def _plot(races: dict[int, _Budget], curves: dict[str, list[float]], n_train: int) -> bytes:
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(14, 4.2)
    ax_race, ax_epoch, ax_loss = fig.subplots(1, 3)
    for i, (b, race) in enumerate(races.items()):
        ax_race.plot(
            race.times, 100 * np.array(race.accuracy), "o-", ms=3, color=f"C{i}", label=f"batch {b}"
        )
    ax_race.set_xscale("symlog", linthresh=CHECKPOINTS[0] * races[BATCH_SIZES[0]].seconds)
    ax_race.set_xlabel("training time (s)")
    ax_race.set_ylabel("test accuracy (%)")
    ax_race.set_title("Same time budget, different batch sizes")

    sizes = list(races)
    labels = [str(b) for b in sizes]
    ax_epoch.bar(
        labels,
        [races[b].seconds_per_image * n_train for b in sizes],
        color=[f"C{i}" for i in range(len(sizes))],
    )
    ax_epoch.set_yscale("log")
    ax_epoch.set_xlabel("batch size")
    ax_epoch.set_ylabel(f"seconds per epoch ({n_train:,} images)")
    ax_epoch.set_title("Time per epoch")

    for (name, accuracy), style in zip(curves.items(), ("o-", "s--"), strict=True):
        ax_loss.plot(range(1, len(accuracy) + 1), 100 * np.array(accuracy), style, label=name)
    ax_loss.set_xlabel("epoch")
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, not 1.5, 2.5
    ax_loss.set_ylabel("test accuracy (%)")
    ax_loss.set_title(f"Cross-entropy vs MSE (batch {LOSS_BATCH}, lr {LR:g})")
    for ax in (ax_race, ax_epoch, ax_loss):
        ax.grid(alpha=0.3, which="both")
    # below the panel: inside, the curves of another run can pass under it
    ax_race.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)
    ax_loss.legend()
    return figure_png(fig)


LESSON = Lesson(
    name="batch-size",
    title="mini-batch size: time per epoch and accuracy on a fixed time budget; MSE vs CE",
    notes=("003", "004"),
    run=run,
)
