"""Callbacks: hooks into :func:`~chainrule.fit` (learning-rate schedules, early stopping, ...).

A callback sees the running fit through a :class:`TrainingRun` and may stop it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import check_int, check_positive
from .history import History
from .network import Sequential
from .optim import Optimizer
from .schedules import Schedule

__all__ = [
    "Callback",
    "EarlyStopping",
    "LearningRateScheduler",
    "TrainingRun",
    "restore",
    "snapshot",
]


@dataclass
class TrainingRun:
    """What callbacks see of a running :func:`fit`.

    Set ``stop = True`` to end training: in ``on_epoch_end`` after that epoch, in ``on_batch_end``
    after that batch (the epoch is then recorded over the samples it saw).
    """

    model: Sequential
    optimizer: Optimizer
    history: History
    epochs: int
    batches_per_epoch: int
    has_validation: bool = False
    stop: bool = False


class Callback:
    """Hooks called by :func:`fit`; override the ones you need."""

    def on_train_begin(self, run: TrainingRun) -> None: ...

    def on_epoch_begin(self, run: TrainingRun, epoch: int) -> None: ...

    def on_batch_end(self, run: TrainingRun, batch: int, loss: float) -> None: ...

    def on_epoch_end(self, run: TrainingRun, epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self, run: TrainingRun) -> None: ...


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of each epoch from a schedule.

    The schedule scales the optimizer's ``initial_lr`` (its learning rate at construction, which
    is saved with it), so a resumed run continues the same schedule.

    Examples
    --------
    >>> from chainrule.schedules import CosineLR
    >>> callback = LearningRateScheduler(CosineLR(epochs=10))
    """

    def __init__(self, schedule: Schedule) -> None:
        if not callable(schedule):
            raise TypeError(f"schedule must be callable (epoch, base_lr) -> lr, got {schedule!r}")
        self.schedule = schedule

    def on_epoch_begin(self, run: TrainingRun, epoch: int) -> None:
        run.optimizer.lr = float(self.schedule(epoch, run.optimizer.initial_lr))


class EarlyStopping(Callback):
    """Stop when a monitored figure has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str
        A :class:`History` field: ``"val_loss"`` (default), ``"val_accuracy"``, ``"loss"`` ...
        Loss-like figures must decrease, accuracy-like figures increase.
    patience : int
        Epochs without improvement tolerated before stopping.
    min_delta : float
        Smallest change that counts as an improvement.
    restore_best_weights : bool
        At the end, put back the parameters and buffers of the best epoch.

    Notes
    -----
    As in Keras, each ``fit`` starts afresh (the best score, the patience count, the saved
    weights are reset when training begins), so one instance can serve several runs.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best_weights: bool = True,
    ) -> None:
        if monitor not in History.__dataclass_fields__ or monitor in ("epoch", "lr", "seconds"):
            raise ValueError(f"Invalid monitor: {monitor!r} (e.g. 'val_loss', 'val_accuracy')")
        self.monitor = monitor
        self.patience = check_int(patience, "patience", minimum=0)
        self.min_delta = check_positive(min_delta, "min_delta", allow_zero=True)
        self.restore_best_weights = restore_best_weights
        self.sign = 1.0 if monitor.endswith("accuracy") else -1.0  # +1: bigger is better
        self.best_epoch: int | None = None
        self._best = -np.inf
        self._best_state: dict[str, np.ndarray] | None = None
        self._wait = 0

    def on_train_begin(self, run: TrainingRun) -> None:
        if self.monitor.startswith("val_") and not run.has_validation:
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, but fit has no validation data; pass "
                "validation_data or validation_split, or monitor 'loss'"
            )
        # Each fit starts afresh: an instance reused for a second run (or a second model) must
        # not compare against, or restore, the first run's best.
        self.best_epoch, self._best, self._best_state, self._wait = None, -np.inf, None, 0

    def on_epoch_end(self, run: TrainingRun, epoch: int, logs: dict[str, float]) -> None:
        score = self.sign * logs[self.monitor]
        if score > self._best + self.min_delta:
            self._best, self.best_epoch, self._wait = score, epoch, 0
            if self.restore_best_weights:
                self._best_state = snapshot(run.model)
        else:
            self._wait += 1
            if self._wait > self.patience:
                run.stop = True

    def on_train_end(self, run: TrainingRun) -> None:
        if self.restore_best_weights and self._best_state is not None:
            restore(run.model, self._best_state)


def snapshot(model: Sequential) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in {**model.params, **model.buffers}.items()}


def restore(model: Sequential, state: dict[str, np.ndarray]) -> None:
    for key, value in {**model.params, **model.buffers}.items():
        value[...] = state[key]
