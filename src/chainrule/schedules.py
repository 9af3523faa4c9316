"""Learning-rate schedules: the learning rate of each epoch as a function of the epoch number.

A schedule is a callable ``schedule(epoch, base_lr) -> lr``;
:class:`~chainrule.train.LearningRateScheduler` applies one during :func:`~chainrule.train.fit`, and
the CLI's ``--schedule`` picks one by name.
"""

from __future__ import annotations

import math

from ._checks import check_int, check_positive

__all__ = ["SCHEDULES", "ConstantLR", "CosineLR", "Schedule", "StepLR"]


class Schedule:
    """Base class: ``schedule(epoch, base_lr)`` gives the learning rate of ``epoch`` (from 0)."""

    def __call__(self, epoch: int, base_lr: float) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class ConstantLR(Schedule):
    """The base learning rate every epoch."""

    def __call__(self, epoch: int, base_lr: float) -> float:
        return base_lr


class StepLR(Schedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    Examples
    --------
    >>> [StepLR(step_size=2, gamma=0.5)(e, 0.1) for e in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    """

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = check_int(step_size, "step_size")
        self.gamma = check_positive(gamma, "gamma")

    def __call__(self, epoch: int, base_lr: float) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class CosineLR(Schedule):
    """Cosine annealing from ``base_lr`` down to ``min_lr`` over ``epochs`` epochs.

    ``lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2``; after ``epochs``
    it stays at ``min_lr``.

    Examples
    --------
    >>> [round(CosineLR(epochs=4)(e, 1.0), 3) for e in range(5)]
    [1.0, 0.854, 0.5, 0.146, 0.0]
    """

    def __init__(self, epochs: int, min_lr: float = 0.0) -> None:
        self.epochs = check_int(epochs, "epochs")
        self.min_lr = check_positive(min_lr, "min_lr", allow_zero=True)

    def __call__(self, epoch: int, base_lr: float) -> float:
        progress = min(epoch, self.epochs) / self.epochs
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2


#: Schedules by the name the CLI uses.
SCHEDULES: dict[str, type[Schedule]] = {"constant": ConstantLR, "step": StepLR, "cosine": CosineLR}
