"""Training: :func:`fit` and :func:`evaluate`.

One training step is the notes' loop done in the right order: forward through every layer (each
caches its intermediate result), the loss and its gradient, backward through every layer (each
turns ``dL/d(output)`` into its parameter gradients and ``dL/d(input)``), and only then the
optimizer updates the parameters, so no layer's weights change before the layer below has
back-propagated through them.

Everything about the data (shapes, finiteness, label ranges, the optimizer's keys) is checked
once, at :func:`fit`'s boundary; the loop itself trusts its batches.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import kernels
from ._checks import check_array, check_int, check_labels, check_positive
from .callbacks import (
    Callback,
    EarlyStopping,
    LearningRateScheduler,
    TrainingRun,
    restore,
    snapshot,
)
from .data import Batches, check_dataset, train_validation_split
from .distributed import GradientSum, MPIGroup
from .history import History
from .losses import LOSSES, Loss
from .metrics import as_labels
from .network import Sequential
from .optim import OPTIMIZERS, Optimizer

__all__ = [
    "Callback",
    "DivergenceError",
    "EarlyStopping",
    "History",
    "LearningRateScheduler",
    "TrainingRun",
    "evaluate",
    "fit",
    "resolve_loss",
    "resolve_optimizer",
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


def resolve_loss(loss: Loss | str) -> Loss:
    """A :class:`Loss`, given as one or by its name in :data:`~chainrule.losses.LOSSES`."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"Unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
        return LOSSES[loss]()
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a chainrule Loss or its name, got {type(loss).__name__}")
    return loss


def resolve_optimizer(optimizer: Optimizer | str) -> Optimizer:
    """An :class:`Optimizer`, given as one or by its name in :data:`~chainrule.optim.OPTIMIZERS`
    (with its default hyper-parameters)."""
    if isinstance(optimizer, str):
        if optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        return OPTIMIZERS[optimizer.lower()]()
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be a chainrule Optimizer or its name, got {type(optimizer).__name__}"
        )
    return optimizer


def fit(
    model: Sequential,
    x: np.ndarray,
    y: np.ndarray,
    *,
    loss: Loss | str,
    optimizer: Optimizer | str,
    epochs: int,
    batch_size: int = 32,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    validation_split: float = 0.0,
    seed: int | None = None,
    shuffle: bool = True,
    callbacks: Sequence[Callback] | None = None,
    initial_epoch: int = 0,
    divergence_factor: float | None = 1e4,
    threads: int | None = None,
    comm: Any = None,
) -> History:
    """Train ``model`` by mini-batch back-propagation.

    Parameters
    ----------
    model : Sequential
    x : ndarray (N, ...)
        Training inputs, samples of any shape the first layer takes; ``uint8`` images stay bytes
        in memory and are converted batch by batch (a model given raw pixels scales them with
        its own :class:`~chainrule.Rescaling` layer).
    y : ndarray (N,) labels or (N, K) targets
    loss : Loss or str
        A loss, or its name (``"softmax_cross_entropy"``, ``"mse"`` ...).
    optimizer : Optimizer or str
        An optimizer, or its name with default settings (``"adam"``, ``"sgd"`` ...).
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
    shuffle : bool
        Shuffle the samples each epoch (``False``: every epoch in the order given).
    callbacks : sequence of Callback
    initial_epoch : int
        Epoch to start from when resuming (see :func:`chainrule.io.load_checkpoint`).
    divergence_factor : float or None
        Stop with :class:`DivergenceError` when a batch's loss exceeds this multiple of
        ``max(1, loss of the first batch)``: a learning rate far too large can blow the loss up
        by many orders of magnitude and kill every ReLU without ever producing NaN (Adam's step
        is bounded by its rate). ``None`` stops on NaN and infinity only.
    threads : int, optional
        Use at most this many threads in BLAS and the compiled kernels while training (see
        :func:`chainrule.threads`; needs threadpoolctl). ``None`` leaves the libraries' own
        setting (one thread per core unless set otherwise). A run is repeatable bit for bit
        with the same thread count on the same kind of CPU.
    comm : mpi4py communicator, optional
        Train data-parallel on the processes of ``comm`` (``mpi4py.MPI.COMM_WORLD`` in a script
        started by ``mpirun -n N python -m mpi4py script.py``), each on a slice of every batch:
        the model one process would train with the same ``batch_size``, to rounding (see
        :mod:`chainrule.distributed`). Every process calls ``fit`` with the same arguments (a
        ``ValueError`` on all of them says which differ); rank 0's model and optimizer state
        are the ones trained, and every process ends with the same. ``None``: this process
        alone.

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
    _check_model(model)
    loss, optimizer = resolve_loss(loss), resolve_optimizer(optimizer)
    epochs = check_int(epochs, "epochs", minimum=0)
    initial_epoch = check_int(initial_epoch, "initial_epoch", minimum=0)
    group = None if comm is None else MPIGroup(comm, seed, initial_epoch)  # agrees on the seed
    if group is not None:
        seed = group.seed
    elif seed is None:
        seed = int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    seed = check_int(seed, "seed", minimum=0)
    if threads is not None:
        threads = check_int(threads, "threads")
    x, y, validation = _training_data(x, y, validation_data, validation_split, seed)
    _check_against_model(model, loss, optimizer, x, y, validation)
    guard = _DivergenceGuard(model, optimizer, divergence_factor)

    part = (0, 1) if group is None else (group.rank, group.size)
    batches = Batches(x, y, batch_size, model.dtype, model.min_batch, part)
    history = History()
    run = TrainingRun(model, optimizer, history, epochs, len(batches), validation is not None)
    callbacks = list(callbacks or [])
    with contextlib.ExitStack() as stack:
        if threads is not None:
            stack.enter_context(kernels.threads(threads))
        summed = stack.enter_context(
            _data_parallel(group, run, loss, x, batches, shuffle, validation)
        )
        # Plain SGD folded into the weight-gradient products never materialises the gradients
        # that data-parallel training must sum first.
        fuse = summed is None and kernels.fold_pays()
        for cb in callbacks:
            cb.on_train_begin(run)
        for epoch in range(initial_epoch, epochs):
            for cb in callbacks:
                cb.on_epoch_begin(run, epoch)
            start = time.perf_counter()
            order = np.random.default_rng([seed, epoch]) if shuffle else None
            logs = _train_epoch(
                run, batches.epoch(order), loss, guard, epoch, callbacks, fuse, summed
            )
            if validation is not None:
                logs.update(_validate(model, validation, loss, group))
            seconds = time.perf_counter() - start
            history.append(epoch=epoch, **logs, lr=optimizer.lr, seconds=seconds)
            for cb in callbacks:
                cb.on_epoch_end(run, epoch, logs)
            if run.stop:
                break
        for cb in callbacks:
            cb.on_train_end(run)
    return history


def _data_parallel(
    group: MPIGroup | None,
    run: TrainingRun,
    loss: Loss,
    x: np.ndarray,
    batches: Batches,
    shuffle: bool,
    validation: tuple[np.ndarray, np.ndarray] | None,
) -> contextlib.AbstractContextManager[GradientSum | None]:
    """Data-parallel, every process checked to train alike, started from rank 0's state and
    summing its gradients with the others'; alone, nothing."""
    if group is None:
        return contextlib.nullcontext()
    return group.training(
        run.model,
        run.optimizer,
        samples=x.shape,
        validation_samples=None if validation is None else validation[0].shape,
        batches=(batches.batch_size, len(batches)),
        epochs=run.epochs,
        shuffle=shuffle,
        loss=(type(loss).__name__, loss.config()),
    )


def _check_model(model: Any) -> None:
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a chainrule Sequential, got {type(model).__name__}")


def _training_data(
    x: Any,
    y: Any,
    validation_data: Any,
    validation_split: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """The checked training arrays and validation pair (held out by ``seed`` if asked)."""
    x, y = check_array(x, "x"), check_array(y, "y")
    check_dataset(x, y)
    if validation_split:
        if validation_data is not None:
            raise ValueError("pass validation_data or validation_split, not both")
        (x, y), validation_data = train_validation_split(
            x, y, validation_split, validation_rng(seed)
        )
    if validation_data is None:
        return x, y, None
    if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
        raise TypeError("validation_data must be a pair (x_val, y_val)")
    x_val, y_val = (
        check_array(validation_data[0], "x_val"),
        check_array(validation_data[1], "y_val"),
    )
    check_dataset(x_val, y_val, "x_val", "y_val")
    if x_val.shape[1:] != x.shape[1:]:
        raise ValueError(f"x_val holds samples of shape {x_val.shape[1:]}, x holds {x.shape[1:]}")
    return x, y, (x_val, y_val)


def validation_rng(seed: int) -> np.random.Generator:
    """The generator that chooses :func:`fit`'s held-out samples for ``seed`` (a stream no epoch's
    shuffle uses), so any caller can hold out the same ones."""
    return np.random.default_rng([seed, 2**32])


def _check_against_model(
    model: Sequential,
    loss: Loss,
    optimizer: Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """The model, the loss, the optimizer and every target checked against one another once,
    before a step can change the model."""
    hint = loss.instead_for_probabilities()
    if hint is not None and model.layers[-1].outputs_probabilities:
        raise ValueError(
            f"the network ends in {model.layers[-1]!r}, which outputs probabilities, and "
            f"{type(loss).__name__} expects logits (it would apply its own softmax or sigmoid "
            f"again); remove the last layer, or train with {hint}"
        )
    out_shape = model.forward(x[:1]).shape[1:]  # also checks the samples' shape and dtype
    loss.check_target(y, (len(y), *out_shape), model.dtype)
    if validation is not None:
        y_val = validation[1]
        loss.check_target(y_val, (len(y_val), *out_shape), model.dtype)
    optimizer.check_params(model.params)


@dataclass
class _Tally:
    """Loss and accuracy of an epoch, summed over the samples its batches held."""

    loss: float = 0.0
    correct: int = 0
    seen: int = 0

    def add(self, model: Sequential, value: float, out: np.ndarray, yb: np.ndarray) -> None:
        self.loss += value * len(yb)
        self.correct += int(np.count_nonzero(model.classes(out) == as_labels(yb)))
        self.seen += len(yb)

    def logs(self, group: MPIGroup | None = None) -> dict[str, float]:
        """The means, over every process's samples when ``group`` is given."""
        totals = np.array([self.loss, self.correct, self.seen], np.float64)
        if group is not None:
            group.sum(totals)
        loss, correct, seen = totals.tolist()
        return {"loss": loss / seen, "accuracy": correct / seen}


def _train_epoch(
    run: TrainingRun,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    loss: Loss,
    guard: _DivergenceGuard,
    epoch: int,
    callbacks: Sequence[Callback],
    fuse: bool = False,
    summed: GradientSum | None = None,
) -> dict[str, float]:
    """One pass over the batches: forward, loss, backward, update; returns the epoch's logs.

    ``fuse`` lets layers apply plain SGD inside the matrix products of their gradients (see
    :func:`_backward_and_update`). Data-parallel (``summed`` given), the backward pass of each
    process's slice comes with the sum of every process's gradients and losses, before the
    update checks the batch's loss.
    """
    model, optimizer = run.model, run.optimizer
    params, grads = model.params, model.grads  # the layers' own arrays, updated in place
    guard.begin_epoch()
    tally = _Tally()
    b = 0
    for b, (xb, yb) in enumerate(batches):
        # A diverging run overflows: detected by the guard and raised as DivergenceError, not as
        # a floating-point warning from inside a layer (fatal under warnings-as-errors). Underflow
        # to 0 is the right answer (see Sequential.forward).
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            out = model._forward_trusted(xb, training=True, check=False)
            value = loss._forward_trusted(out, yb) if np.isfinite(out).all() else np.nan
            batch_loss = value if summed is None else summed.backward(loss, out, value)
            guard.check_loss(batch_loss, epoch, b)
            if summed is None:
                _backward_and_update(model, optimizer, params, grads, loss.backward(), fuse)
            else:
                optimizer._step_trusted(params, grads)
            tally.add(model, value, out, yb)
        for cb in callbacks:
            cb.on_batch_end(run, b, batch_loss)
        if run.stop:  # a callback may end training mid-epoch (a time budget, say)
            break
    guard.check_state(epoch, b)
    return tally.logs(None if summed is None else summed.group)


def _backward_and_update(
    model: Sequential,
    optimizer: Optimizer,
    params: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    dy: np.ndarray,
    fuse: bool = False,
) -> None:
    """Back-propagate ``dy``, then update the parameters: the one place where a training step
    makes its gradients and uses them. Every layer back-propagates before any parameter
    changes, except where a layer folds plain SGD into the matrix product of its weight
    gradient (fast path, ``fuse``): it computes its input gradient first, then updates that
    weight in the product, and ``grads`` of that weight is not written.
    """
    coefficients = optimizer.gemm_coefficients() if fuse else None
    if coefficients is None:
        model._backward_trusted(dy)
        optimizer._step_trusted(params, grads)
    else:
        done = model._backward_update(dy, *coefficients)
        optimizer._step_trusted({k: p for k, p in params.items() if k not in done}, grads)


class _DivergenceGuard:
    """Detects a diverging run and puts the model and the optimizer back to the epoch's start.

    ``divergence_factor`` bounds each batch's loss by that multiple of ``max(1, first loss)``.
    """

    def __init__(
        self, model: Sequential, optimizer: Optimizer, divergence_factor: float | None
    ) -> None:
        if divergence_factor is not None:
            divergence_factor = check_positive(divergence_factor, "divergence_factor")
        self.model, self.optimizer, self.factor = model, optimizer, divergence_factor
        self.limit = np.inf  # set by the first batch
        self._before: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None

    def begin_epoch(self) -> None:
        self._before = snapshot(self.model), self.optimizer.state_dict()

    def check_loss(self, value: float, epoch: int, batch: int) -> None:
        if not np.isfinite(value):
            self._fail(epoch, batch, f"loss is {value}")
        if value > self.limit:
            self._fail(
                epoch, batch, f"loss {value:.4g} exceeds {self.factor:g} x the first batch's"
            )
        if self.limit == np.inf and self.factor is not None:
            self.limit = self.factor * max(1.0, value)

    def check_state(self, epoch: int, batch: int) -> None:
        """After an epoch's last step, which no later forward pass checks: an optimizer's state
        (Adam's g**2 in float32) can overflow while the parameters stay finite."""
        model, optimizer = self.model, self.optimizer
        if not _all_finite(model.params.values(), model.buffers.values()):
            self._fail(epoch, batch, "a parameter became NaN or infinite")
        if not _all_finite(*(slots.values() for slots in optimizer.state.values())):
            self._fail(epoch, batch, "the optimizer's state became NaN or infinite")

    def _fail(self, epoch: int, batch: int, what: str) -> None:
        assert self._before is not None
        restore(self.model, self._before[0])
        self.optimizer.load_state_dict(self._before[1])
        raise DivergenceError(epoch, batch, what)


def _all_finite(*groups: Iterable[np.ndarray]) -> bool:
    return all(np.isfinite(a).all() for group in groups for a in group)


def evaluate(
    model: Sequential,
    x: np.ndarray,
    y: np.ndarray,
    loss: Loss | str | None = "auto",
    batch_size: int = Sequential.INFERENCE_BATCH,
) -> dict[str, float]:
    """Accuracy and mean loss of ``model`` on ``(x, y)`` in inference mode.

    Parameters
    ----------
    loss : Loss, str, "auto" or None
        The loss to report. ``"auto"``: the classification loss that fits the model's output
        (softmax cross-entropy on logits, cross-entropy on a final Softmax, binary cross-entropy
        for one output unit); ``None``: accuracy only.

    Returns
    -------
    dict
        ``{"accuracy": ..., "loss": ...}`` (no ``"loss"`` with ``loss=None``).
    """
    _check_model(model)
    x, y = check_array(x, "x"), check_array(y, "y")
    check_dataset(x, y)
    batch_size = check_int(batch_size, "batch_size")
    # Targets checked against the model's output before any figure is computed: a label out of
    # range or a one-hot row of the wrong width would otherwise just count as wrong.
    k = model.forward(x[:1]).shape[1]
    if isinstance(loss, str) and loss == "auto":
        loss = _classification_loss(model, k)
    elif loss is not None:
        loss = resolve_loss(loss)
    if loss is not None:
        loss.check_target(y, (len(y), k), model.dtype)
    elif y.ndim == 1:
        check_labels(y, max(k, 2), "y")  # a single sigmoid output scores classes 0 and 1
    elif y.shape[1] != k:
        raise ValueError(f"y has rows of {y.shape[1]} values, but the model outputs {k}")
    total_loss, correct = _totals(model, x, y, loss, batch_size)
    result = {"accuracy": correct / len(x)}
    if loss is not None:
        result["loss"] = total_loss / len(x)
    return result


def _totals(
    model: Sequential, x: np.ndarray, y: np.ndarray, loss: Loss | None, batch_size: int
) -> tuple[float, int]:
    """The summed loss (0 without one) and the number of samples classified right."""
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        out = model.forward(xb)
        if loss is not None:
            total_loss += loss.forward(out, yb) * len(xb)
        correct += int(np.count_nonzero(model.classes(out) == as_labels(yb)))
    return total_loss, correct


def _validate(
    model: Sequential,
    validation: tuple[np.ndarray, np.ndarray],
    loss: Loss,
    group: MPIGroup | None,
) -> dict[str, float]:
    """The validation loss and accuracy; data-parallel, each process evaluates a slice."""
    if group is None:
        val = evaluate(model, *validation, loss)
        return {"val_loss": val["loss"], "val_accuracy": val["accuracy"]}
    x, y = validation
    lo, hi = len(x) * group.rank // group.size, len(x) * (group.rank + 1) // group.size
    totals = np.array([*_totals(model, x[lo:hi], y[lo:hi], loss, 1000), hi - lo], np.float64)
    group.sum(totals)
    total_loss, correct, count = totals.tolist()
    return {"val_loss": total_loss / count, "val_accuracy": correct / count}


def _classification_loss(model: Sequential, outputs: int) -> Loss:
    probabilities = model.layers[-1].outputs_probabilities
    if outputs == 1:
        return LOSSES["binary_cross_entropy"](from_logits=not probabilities)  # type: ignore[call-arg]
    return LOSSES["cross_entropy" if probabilities else "softmax_cross_entropy"]()
