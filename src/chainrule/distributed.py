"""Data-parallel training on MPI: N processes train the model that one process would.

``fit(..., comm=MPI.COMM_WORLD)``, with every process started by ``mpirun -n N python -m mpi4py
script.py`` and calling ``fit`` with the same arguments, trains one model on N processes
(``chainrule train --distributed`` does this from the command line). A step of N processes is the
step of one process with the same ``batch_size``, to rounding:

* rank 0's parameters, buffers and optimizer state are broadcast in one buffer before the first
  step, so every process starts from the same model whatever it built or loaded;
* every process shuffles with the same seed and takes a contiguous slice of each batch (the
  slices differ in size by one sample at most); the number of steps comes from the whole batches,
  so every process makes the same collective calls;
* each process back-propagates the gradient of its slice's *summed* loss (the losses return the
  gradient of the mean, which is multiplied by the slice's size), so that its layers' gradients
  are sums over its samples. They are written into one preallocated buffer, summed over the
  processes by a single in-place ``Allreduce`` and divided by the batch's sample count: the mean
  over the whole batch, exact also when slices differ in size (a mean of the processes' means
  would not be). Every process then makes the same update; the learning rate is not rescaled,
  since the batch is the one a single process would train on;
* a layer that needs the whole batch (BatchNorm's statistics) or draws random numbers (Dropout,
  RandomShift) does so through :meth:`~chainrule.Layer.distribute`, so the training loop names
  no layer;
* the loss and accuracy of each epoch, and of the validation data, are sums over every process's
  samples, so every process sees the same figures (and stops, or diverges, at the same step).

mpi4py is imported only once a communicator is given: the rest of chainrule never needs it.
An exception on one process ends the whole job when the script runs under ``python -m mpi4py``
(which turns it into ``MPI_Abort``); without it, the other processes would wait forever.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .layers import Layer
from .losses import Loss
from .network import Sequential
from .optim import Optimizer

__all__ = ["GradientSum", "MPIGroup", "world"]

#: Mixed into the seed of every process's own random streams, which no shuffle and no validation
#: split uses (those seed ``[seed, epoch]`` and ``[seed, 2**32]``).
_PROCESS_STREAMS = 2**32 + 1


def world() -> Any:
    """``mpi4py.MPI.COMM_WORLD`` when this process is one of two or more started by ``mpirun``.

    Raises
    ------
    ImportError
        If mpi4py or the MPI library it loads is missing.
    RuntimeError
        If this process runs alone (not under ``mpirun``, or ``mpirun -n 1``).
    """
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            'data-parallel training needs mpi4py: pip install "chainrule[mpi]", with an MPI '
            f"library such as Debian's openmpi-bin ({exc})"
        ) from exc
    except RuntimeError as exc:  # mpi4py installed, but no MPI library for it to load
        raise ImportError(
            f"mpi4py cannot load an MPI library (install one, such as Debian's openmpi-bin): {exc}"
        ) from exc
    comm = MPI.COMM_WORLD
    if comm.Get_size() < 2:
        raise RuntimeError(
            "this is a single process: start two or more with mpirun, as in 'mpirun -n 2 python "
            "-m mpi4py -m chainrule train --distributed'"
        )
    return comm


class MPIGroup:
    """The processes of an MPI communicator, as the layers (:class:`~chainrule.layers.
    ProcessGroup`) and the training loop use them.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
        The processes that train together (``MPI.COMM_WORLD``, or a split of it).
    seed : int or None
        The run's seed, as this process was given it: every process must be given the same one,
        or all ``None`` (rank 0 then draws it).
    initial_epoch : int
        Mixed into the seed of each process's own random streams, so a resumed run does not
        repeat the draws of its first epochs.
    """

    def __init__(self, comm: Any, seed: int | None, initial_epoch: int) -> None:
        for method in ("Get_rank", "Get_size", "Allreduce", "Bcast", "allgather", "bcast"):
            if not callable(getattr(comm, method, None)):
                raise TypeError(
                    f"comm must be an mpi4py communicator such as MPI.COMM_WORLD, got "
                    f"{type(comm).__name__} (it has no {method})"
                )
        from mpi4py import MPI

        self.comm = comm
        self.rank, self.size = int(comm.Get_rank()), int(comm.Get_size())
        self._in_place, self._op = MPI.IN_PLACE, MPI.SUM
        seeds = comm.allgather(seed)
        if all(s is None for s in seeds):
            fresh = int(np.random.SeedSequence().entropy) if self.rank == 0 else None  # type: ignore[arg-type]
            seeds = [comm.bcast(fresh, root=0)] * self.size
        if any(s != seeds[0] for s in seeds):
            raise ValueError(
                f"every process must be given the same seed (or none), got {seeds} by rank"
            )
        self.seed: int = seeds[0]
        self._streams = np.random.SeedSequence(
            [self.seed, _PROCESS_STREAMS, initial_epoch, self.rank]
        )

    def sum(self, buffer: np.ndarray) -> None:
        """Replace ``buffer`` on every process by its sum over the processes (one ``Allreduce``,
        in place)."""
        self.comm.Allreduce(self._in_place, buffer, op=self._op)

    def generator(self) -> np.random.Generator:
        """The next of this process's own random generators, derived from ``(seed,
        initial_epoch, rank)``: the processes draw differently, and the same on every run."""
        return np.random.default_rng(self._streams.spawn(1)[0])

    @contextlib.contextmanager
    def training(
        self, model: Sequential, optimizer: Optimizer, **settings: Any
    ) -> Iterator[GradientSum]:
        """Train ``model`` together while the context lasts.

        Checks that every process was given the same model, optimizer and ``settings`` (a
        ``ValueError`` on every process says which differ), starts all from rank 0's
        parameters, buffers and optimizer state, hands every layer the group
        (:meth:`~chainrule.Layer.distribute`) and yields the sum of each step's gradients. On
        leaving, the layers are one process's again.
        """
        self._agree(
            model=[(type(la).__name__, la.config(), _shapes(la)) for la in model.layers],
            optimizer=type(optimizer).__name__,
            **settings,
        )
        self._broadcast(model, optimizer)
        for layer in model.layers:
            layer.distribute(self)
        try:
            yield GradientSum(self, model)
        finally:
            for layer in model.layers:
                layer.distribute(None)

    def _agree(self, **settings: Any) -> None:
        """Raise ``ValueError`` on every process unless all were given the same ``settings``: a
        process that trains on other data, another model or for other epochs would make other
        collective calls than the rest, and the job would hang instead of failing."""
        everyone = self.comm.allgather(settings)
        for rank, theirs in enumerate(everyone):
            for key, value in theirs.items():
                if value != everyone[0][key]:
                    raise ValueError(
                        f"every process must call fit alike, but rank {rank} has {key} "
                        f"{value!r} and rank 0 has {everyone[0][key]!r}"
                    )

    def _broadcast(self, model: Sequential, optimizer: Optimizer) -> None:
        """Make every process's parameters, buffers and optimizer state those of rank 0, in one
        ``Bcast`` (the optimizer's hyper-parameters and step count come with them)."""
        description = self.comm.bcast(_describe(optimizer) if self.rank == 0 else None, root=0)
        if self.rank != 0:
            optimizer.load_state_dict(_zero_state(description))
        arrays = _model_arrays(model) + _optimizer_arrays(optimizer)
        if self.rank == 0:
            buffer = np.concatenate([a.ravel() for a in arrays])
        else:
            buffer = np.empty(sum(a.size for a in arrays), model.dtype)
        self.comm.Bcast(buffer, root=0)
        start = 0
        for a in arrays:
            a[...] = buffer[start : start + a.size].reshape(a.shape)
            start += a.size


class GradientSum:
    """Each step's backward pass of one process, and the sum of every process's gradients.

    The layers' gradient arrays become views of one preallocated buffer of the model's dtype, so
    the backward pass writes straight into it; two more entries carry the slice's summed loss and
    its sample count. One in-place ``Allreduce`` sums it over the processes, and a division by the
    whole batch's count leaves the batch's mean gradient and mean loss on every process.
    """

    def __init__(self, group: MPIGroup, model: Sequential) -> None:
        if model.dtype not in (np.float32, np.float64):  # what MPI can sum
            raise TypeError(
                f"data-parallel training sums float32 or float64 gradients, and the model is "
                f"{model.dtype}: convert it with model.astype(np.float32)"
            )
        self.group, self.model = group, model
        slots = [(layer, key) for layer in model.layers for key in layer.grads]
        self.buffer = np.zeros(sum(layer.grads[k].size for layer, k in slots) + 2, model.dtype)
        self._views: list[tuple[dict[str, np.ndarray], str, np.ndarray]] = []
        start = 0
        for layer, key in slots:
            g = layer.grads[key]
            view = self.buffer[start : start + g.size].reshape(g.shape)
            layer.grads[key] = view
            self._views.append((layer.grads, key, view))
            start += g.size

    def backward(self, loss: Loss, out: np.ndarray, value: float) -> float:
        """Back-propagate this process's slice and sum the gradients of all; return the mean loss
        of the whole batch (NaN on every process if it is NaN on one).

        ``value`` is the loss of the slice's output ``out`` (NaN if ``out`` is not finite, in
        which case the slice back-propagates zeros: every process still makes the same calls).
        """
        n = len(out)
        if np.isfinite(value):
            dy = loss.backward()
            dy = dy * dy.dtype.type(n)  # the gradient of the slice's summed loss
        else:
            dy = np.zeros_like(out)
        self.model._backward_trusted(dy)
        for grads, key, view in self._views:
            if grads[key] is not view:  # a layer that assigned a new array instead of writing
                view[...] = grads[key]
                grads[key] = view
        buffer = self.buffer
        buffer[-2], buffer[-1] = value * n, n
        self.group.sum(buffer)
        buffer /= buffer[-1]  # the batch's count, read before the division
        return float(buffer[-2])


def _model_arrays(model: Sequential) -> list[np.ndarray]:
    return [*model.params.values(), *model.buffers.values()]


def _optimizer_arrays(optimizer: Optimizer) -> list[np.ndarray]:
    return [
        slots[slot] for name, slots in sorted(optimizer.state.items()) for slot in sorted(slots)
    ]


def _describe(optimizer: Optimizer) -> dict[str, Any]:
    """The optimizer's state dict with each array replaced by its shape and dtype."""
    state = optimizer.state_dict()
    state["state"] = {
        name: {slot: (a.shape, a.dtype.str) for slot, a in slots.items()}
        for name, slots in state["state"].items()
    }
    return state


def _zero_state(description: Mapping[str, Any]) -> dict[str, Any]:
    """A state dict of :func:`_describe`'s shapes, filled with zeros."""
    return {
        **description,
        "state": {
            name: {slot: np.zeros(shape, dtype) for slot, (shape, dtype) in slots.items()}
            for name, slots in description["state"].items()
        },
    }


def _shapes(layer: Layer) -> dict[str, tuple[tuple[int, ...], str]]:
    arrays = {**layer.params, **layer.buffers}
    return {key: (a.shape, a.dtype.str) for key, a in arrays.items()}
