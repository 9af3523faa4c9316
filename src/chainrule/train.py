"""Training: :func:`fit`, :func:`evaluate`, the :class:`History` and callbacks.

One training step is the notes' loop done in the right order: forward through every layer (each
caches its intermediate result), the loss and its gradient, backward through every layer (each
turns ``dL/d(output)`` into its parameter gradients and ``dL/d(input)``), and only then the
optimizer updates the parameters, so no layer's weights change before the layer below has
back-propagated through them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._checks import check_array, check_int, check_labels, check_positive
from .data import Batches, check_dataset, train_validation_split
from .losses import Loss
from .metrics import to_labels
from .network import Sequential
from .optim import Optimizer
from .schedules import Schedule

__all__ = [
    "Callback",
    "DivergenceError",
    "EarlyStopping",
    "History",
    "LearningRateScheduler",
    "TrainingRun",
    "evaluate",
    "fit",
]


class DivergenceError(FloatingPointError):
    """Training produced NaN or infinity; the model and the optimizer are put back to the start of
    that epoch."""

    def __init__(self, epoch: int, batch: int, what: str) -> None:
        super().__init__(
            f"training diverged at epoch {epoch + 1}, batch {batch + 1}: {what}. The model's "
            f"weights are back to the start of epoch {epoch + 1}; try a smaller learning rate"
        )
        self.epoch, self.batch = epoch, batch


@dataclass
class History:
    """Per-epoch records of a :func:`fit` run (``val_*`` stay empty without validation data).

    ``accuracy`` is measured on the training batches as they were trained (in training mode, so
    with dropout), like Keras; evaluate the model afterwards for the inference-mode figure.
    """

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def append(self, **record: float) -> None:
        for key, value in record.items():
            getattr(self, key).append(value)

    def to_dict(self) -> dict[str, list[float]]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown history keys {sorted(unknown)}")
        return cls(**{k: list(v) for k, v in data.items()})

    def __len__(self) -> int:
        return len(self.epoch)


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
                self._best_state = _snapshot(run.model)
        else:
            self._wait += 1
            if self._wait > self.patience:
                run.stop = True

    def on_train_end(self, run: TrainingRun) -> None:
        if self.restore_best_weights and self._best_state is not None:
            _restore(run.model, self._best_state)


def _snapshot(model: Sequential) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in {**model.params, **model.buffers}.items()}


def _restore(model: Sequential, state: dict[str, np.ndarray]) -> None:
    for key, value in {**model.params, **model.buffers}.items():
        value[...] = state[key]


def _all_finite(*groups: Iterable[np.ndarray]) -> bool:
    return all(np.isfinite(a).all() for group in groups for a in group)


def _undo(
    model: Sequential, optimizer: Optimizer, before: tuple[dict[str, np.ndarray], dict[str, Any]]
) -> None:
    """Put the model and the optimizer back to the start of a diverged epoch."""
    _restore(model, before[0])
    optimizer.load_state_dict(before[1])


def fit(
    model: Sequential,
    x: np.ndarray,
    y: np.ndarray,
    *,
    loss: Loss,
    optimizer: Optimizer,
    epochs: int,
    batch_size: int = 32,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    validation_split: float = 0.0,
    seed: int | None = None,
    callbacks: Sequence[Callback] | None = None,
    initial_epoch: int = 0,
    divergence_factor: float | None = 1e4,
) -> History:
    """Train ``model`` by mini-batch back-propagation.

    Parameters
    ----------
    model : Sequential
    x : ndarray (N, features)
        Training inputs; ``uint8`` images stay bytes in memory and are scaled to [0, 1] per batch.
    y : ndarray (N,) labels or (N, K) targets
    loss : Loss
    optimizer : Optimizer
    epochs : int
        Index of the last epoch: training runs epochs ``initial_epoch .. epochs - 1``.
    batch_size : int
        Samples per step. The last batch of an epoch holds the remainder; with BatchNorm, which
        cannot train on one sample, a remainder of one joins the batch before it.
    validation_data : (x_val, y_val), optional
        Evaluated in inference mode after every epoch.
    validation_split : float
        Instead of ``validation_data``, hold out this fraction of ``(x, y)`` (chosen by ``seed``).
    seed : int, optional
        Seeds the split and each epoch's shuffle. Epoch ``e`` is shuffled by a generator seeded
        with ``(seed, e)``, so a run resumed at ``initial_epoch`` continues exactly as if it had
        not stopped. Dropout draws from its own generator, held by the layer (and saved with it).
    callbacks : sequence of Callback
    initial_epoch : int
        Epoch to start from when resuming (see :func:`chainrule.io.load_checkpoint`).
    divergence_factor : float or None
        Stop with :class:`DivergenceError` when a batch's loss exceeds this multiple of
        ``max(1, loss of the first batch)``: a learning rate far too large can blow the loss up
        by many orders of magnitude and kill every ReLU without ever producing NaN (Adam's step
        is bounded by its rate). ``None`` stops on NaN and infinity only.

    Returns
    -------
    History

    Raises
    ------
    DivergenceError
        If the loss, the network's output, a parameter or the optimizer's state becomes NaN or
        infinite, or the loss grows past ``divergence_factor``; the model and the optimizer are
        put back to what they were at the start of that epoch.
    ValueError
        Before any step, if a target does not fit the model's output (a label out of range, a
        target of the wrong shape), in ``y`` or in the validation data.

    Examples
    --------
    >>> import numpy as np, chainrule as cr
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 2)); y = (x[:, 0] * x[:, 1] > 0).astype(int)
    >>> model = cr.MLP(2, [16], 2, rng=0)
    >>> history = cr.fit(model, x, y, loss=cr.SoftmaxCrossEntropy(), optimizer=cr.Adam(0.05),
    ...                  epochs=30, batch_size=20, seed=0)
    >>> history.accuracy[-1] > 0.9
    True
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a chainrule Sequential, got {type(model).__name__}")
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a chainrule Loss, got {type(loss).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a chainrule Optimizer, got {type(optimizer).__name__}")
    epochs = check_int(epochs, "epochs", minimum=0)
    if divergence_factor is not None:
        divergence_factor = check_positive(divergence_factor, "divergence_factor")
    initial_epoch = check_int(initial_epoch, "initial_epoch", minimum=0)
    x, y = check_array(x, "x"), check_array(y, "y")
    check_dataset(x, y)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    seed = check_int(seed, "seed", minimum=0)
    if validation_split:
        if validation_data is not None:
            raise ValueError("pass validation_data or validation_split, not both")
        split_rng = np.random.default_rng([seed, 2**32])  # a stream no epoch number uses
        (x, y), validation_data = train_validation_split(x, y, validation_split, split_rng)
    if validation_data is not None:
        if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (x_val, y_val)")
        x_val, y_val = (
            check_array(validation_data[0], "x_val"),
            check_array(validation_data[1], "y_val"),
        )
        check_dataset(x_val, y_val, "x_val", "y_val")
        if x_val.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"x_val holds samples of shape {x_val.shape[1:]}, x holds {x.shape[1:]}"
            )

    # Every target checked against the model's output once, before a step can change the model.
    out_shape = model.forward(x[:1]).shape[1:]
    loss.check_target(y, (len(y), *out_shape), model.dtype)
    if validation_data is not None:
        loss.check_target(y_val, (len(y_val), *out_shape), model.dtype)

    optimizer.check_params(model.params)
    batches = Batches(x, y, batch_size, model.dtype, model.min_batch)
    history = History()
    run = TrainingRun(model, optimizer, history, epochs, len(batches), validation_data is not None)
    callbacks = list(callbacks or [])
    for cb in callbacks:
        cb.on_train_begin(run)
    params, grads = model.params, model.grads  # the layers' own arrays, updated in place
    loss_limit = np.inf  # set by the first batch

    for epoch in range(initial_epoch, epochs):
        for cb in callbacks:
            cb.on_epoch_begin(run, epoch)
        start = time.perf_counter()
        before = _snapshot(model), optimizer.state_dict()  # to undo a diverged epoch
        shuffle = np.random.default_rng([seed, epoch])
        total_loss = 0.0
        correct = seen = 0
        for b, (xb, yb) in enumerate(batches.epoch(shuffle)):
            # A diverging run overflows: detected here and raised as DivergenceError, not as a
            # floating-point warning from inside a layer (fatal under warnings-as-errors).
            with np.errstate(over="ignore", invalid="ignore"):
                out = model._forward_trusted(xb, training=True)
                value = loss.forward(out, yb) if np.isfinite(out).all() else np.nan
            if not np.isfinite(value):
                _undo(model, optimizer, before)
                raise DivergenceError(epoch, b, f"loss is {value}")
            if value > loss_limit:
                _undo(model, optimizer, before)
                raise DivergenceError(
                    epoch, b, f"loss {value:.4g} exceeds {divergence_factor:g} x the first batch's"
                )
            if loss_limit == np.inf and divergence_factor is not None:
                loss_limit = divergence_factor * max(1.0, value)
            with np.errstate(over="ignore", invalid="ignore"):
                model.backward(loss.backward(), input_grad=False)
                optimizer.step(params, grads)
            total_loss += value * len(xb)
            correct += int(np.count_nonzero(model.classes(out) == to_labels(yb)))
            seen += len(xb)
            for cb in callbacks:
                cb.on_batch_end(run, b, value)
            if run.stop:  # a callback may end training mid-epoch (a time budget, say)
                break
        # The last step of the epoch is checked by no later forward pass, and an optimizer's
        # state (Adam's g**2 in float32) can overflow while the parameters stay finite.
        if not _all_finite(params.values(), model.buffers.values()):
            _undo(model, optimizer, before)
            raise DivergenceError(epoch, b, "a parameter became NaN or infinite")
        if not _all_finite(*(slots.values() for slots in optimizer.state.values())):
            _undo(model, optimizer, before)
            raise DivergenceError(epoch, b, "the optimizer's state became NaN or infinite")
        logs = {"loss": total_loss / seen, "accuracy": correct / seen}
        if validation_data is not None:
            val = evaluate(model, x_val, y_val, loss)
            logs.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        seconds = time.perf_counter() - start
        history.append(epoch=epoch, **logs, lr=optimizer.lr, seconds=seconds)
        for cb in callbacks:
            cb.on_epoch_end(run, epoch, logs)
        if run.stop:
            break
    for cb in callbacks:
        cb.on_train_end(run)
    return history


def evaluate(
    model: Sequential,
    x: np.ndarray,
    y: np.ndarray,
    loss: Loss | None = None,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Accuracy (and mean loss, if ``loss`` is given) of ``model`` on ``(x, y)`` in inference mode.

    Returns
    -------
    dict
        ``{"accuracy": ...}`` and ``"loss"`` when a loss is given.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a chainrule Sequential, got {type(model).__name__}")
    x, y = check_array(x, "x"), check_array(y, "y")
    check_dataset(x, y)
    batch_size = check_int(batch_size, "batch_size")
    # Targets checked against the model's output before any figure is computed: a label out of
    # range or a one-hot row of the wrong width would otherwise just count as wrong.
    k = model.forward(x[:1]).shape[1]
    if loss is not None:
        loss.check_target(y, (len(y), k), model.dtype)
    elif y.ndim == 1:
        check_labels(y, max(k, 2), "y")  # a single sigmoid output scores classes 0 and 1
    elif y.shape[1] != k:
        raise ValueError(f"y has rows of {y.shape[1]} values, but the model outputs {k}")
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        out = model.forward(xb)
        if loss is not None:
            total_loss += loss.forward(out, yb) * len(xb)
        correct += int(np.count_nonzero(model.classes(out) == to_labels(yb)))
    result = {"accuracy": correct / len(x)}
    if loss is not None:
        result["loss"] = total_loss / len(x)
    return result
