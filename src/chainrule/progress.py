"""A progress display for :func:`chainrule.fit`: the one object chainrule exports that writes to a
terminal, and only because it was asked to (by being passed to ``fit`` as a callback).

>>> import io, numpy as np, chainrule as cr
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(64, 2)); y = (x[:, 0] > 0).astype(int)
>>> lines = io.StringIO()
>>> _ = cr.fit(cr.MLP(2, [4], 2, rng=0), x, y, loss=cr.SoftmaxCrossEntropy(),
...            optimizer=cr.Adam(0.01), epochs=2, seed=0,
...            callbacks=[cr.ProgressBar(file=lines, bar=False)])
>>> lines.getvalue().splitlines()[0].startswith("epoch   1/2  loss ")
True
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from .train import Callback, TrainingRun

__all__ = ["ProgressBar"]


class ProgressBar(Callback):
    """A bar per epoch (with tqdm, when it is installed) and one line when each epoch ends.

    Args:
        file: Where the epoch lines go (default: standard output, looked up when written).
        bar: Draw a tqdm bar on standard error while an epoch runs. It is drawn only when standard
            error is a terminal (not into a log file or a pipe), and not at all without tqdm.
        update_every: Batches between refreshes of the loss shown on the bar.

    Call :meth:`close` if training fails, so that the error message starts a line of its own.

    Example:
        ``cr.fit(model, x, y, ..., callbacks=[cr.ProgressBar()])``
    """

    def __init__(
        self, file: TextIO | None = None, bar: bool = True, update_every: int = 50
    ) -> None:
        self.file = file
        self.use_bar = bar
        self.update_every = max(1, int(update_every))
        self.bar: Any = None

    def on_epoch_begin(self, run: TrainingRun, epoch: int) -> None:
        if not self.use_bar:
            return
        try:
            from tqdm import tqdm
        except ImportError:  # the epoch lines still come
            return
        self.bar = tqdm(
            total=run.batches_per_epoch,
            desc=f"epoch {epoch + 1}/{run.epochs}",
            unit="batch",
            leave=False,
            file=sys.stderr,
            disable=None,  # no bar when stderr is not a terminal (a log file, a pipe)
            mininterval=0.2,
        )

    def on_batch_end(self, run: TrainingRun, batch: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if batch % self.update_every == 0:
                self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        """Remove the bar of the epoch under way, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_epoch_end(self, run: TrainingRun, epoch: int, logs: dict[str, float]) -> None:
        self.close()
        line = f"epoch {epoch + 1:>3}/{run.epochs}  loss {logs['loss']:.4f}"
        line += f"  acc {logs['accuracy']:.4f}"
        if "val_loss" in logs:
            line += f"  val_loss {logs['val_loss']:.4f}  val_acc {logs['val_accuracy']:.4f}"
        line += f"  lr {run.optimizer.lr:.2e}  {run.history.seconds[-1]:.1f}s"
        print(line, file=self.file or sys.stdout, flush=True)

    def on_train_end(self, run: TrainingRun) -> None:
        self.close()
