"""Splitting a data set and cutting it into shuffled mini-batches.

Images may stay ``uint8`` in memory (a quarter of the float32 size): each batch is gathered into a
reused buffer and converted to the model's dtype there (a model given raw pixels scales them with
its own :class:`~chainrule.Rescaling` layer), so an epoch allocates nothing per batch and never
makes a permuted copy of the whole training set.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from ._checks import (
    as_generator,
    check_array,
    check_finite,
    check_float_dtype,
    check_fraction,
    check_int,
)

__all__ = ["Batches", "check_dataset", "train_validation_split"]


def check_dataset(x: np.ndarray, y: np.ndarray, x_name: str = "x", y_name: str = "y") -> None:
    """Check a data set once, up front: numeric arrays, one target per sample, no NaN/inf.

    Samples may have any shape (``x`` is ``(N, ...)``); whether the model takes it is the first
    layer's to say.
    """
    check_array(x, x_name)
    if x.ndim < 2:
        raise ValueError(f"{x_name} must be a batch of samples (N, ...), got shape {x.shape}")
    check_array(y, y_name, ndim=(1, 2))
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{x_name} and {y_name} must hold the same number of samples, got {x.shape[0]} "
            f"and {y.shape[0]}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{x_name} is empty (shape {x.shape})")
    check_finite(x, x_name)
    check_finite(y, y_name)


def train_validation_split(
    x: np.ndarray,
    y: np.ndarray,
    validation_split: float,
    rng: np.random.Generator | int | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Hold out a random fraction of ``(x, y)`` for validation.

    Parameters
    ----------
    x, y : ndarray
        Samples and targets (first axes equal).
    validation_split : float
        Fraction in (0, 1) held out, e.g. 0.1 for the notes' 9:1 split.
    rng : numpy.random.Generator, int or None
        Chooses the held-out samples.

    Returns
    -------
    (x_train, y_train), (x_val, y_val)
    """
    fraction = check_fraction(validation_split, "validation_split", allow_zero=False)
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y hold different numbers of samples: {n} and {len(y)}")
    n_val = round(n * fraction)
    if not 0 < n_val < n:
        raise ValueError(
            f"validation_split={validation_split} of {n} samples leaves an empty train or "
            "validation set"
        )
    order = as_generator(rng).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])  # sorted: sequential gathers
    return (x[train], y[train]), (x[val], y[val])


class Batches:
    """Mini-batches of ``(x, y)`` in a fresh random order each epoch, without replacement.

    Parameters
    ----------
    x : ndarray (N, ...)
        Inputs, converted to ``dtype`` batch by batch (``uint8`` images stay bytes in memory).
    y : ndarray (N,) or (N, K)
        Targets.
    batch_size : int
        The last batch of an epoch holds the remainder (it is not dropped).
    dtype : floating dtype
        Of the input batches handed to the model.
    min_batch : int
        The smallest batch the model trains on (2 with BatchNorm): a smaller remainder joins
        the batch before it, so every sample is still used once per epoch.
    part : (rank, size)
        For data-parallel training: yield only the ``rank``-th of ``size`` contiguous slices of
        each batch (their sizes differ by one at most). Every process shuffles alike, so the
        slices of all processes make up the batch one process would train on. A remainder of
        fewer than ``size`` samples joins the batch before it.

    Notes
    -----
    The arrays yielded are views of buffers reused for the next batch: use them before asking for
    the next one (a training step does).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        dtype: np.dtype | type,
        min_batch: int = 1,
        part: tuple[int, int] = (0, 1),
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = min(check_int(batch_size, "batch_size"), len(x))
        self.dtype = check_float_dtype(dtype)
        self.size = check_int(part[1], "size")
        self.rank = check_int(part[0], "rank", minimum=0)
        if self.rank >= self.size:
            raise ValueError(f"rank must be below size {self.size}, got {self.rank}")
        n, b = len(x), self.batch_size
        if b < self.size:
            raise ValueError(
                f"batch_size {b} is smaller than the {self.size} processes that share each batch"
                + (f" (the data set holds {n} samples)" if n < self.size else "")
            )
        self._stops = [*range(b, n, b), n]  # where each batch ends
        smallest = max(check_int(min_batch, "min_batch"), self.size)
        if len(self._stops) > 1 and n - self._stops[-2] < smallest:
            del self._stops[-2]
        b = max(hi - lo for lo, hi in (self._slice(*bounds) for bounds in self._bounds()))
        self._x_raw = np.empty((b, *x.shape[1:]), x.dtype)
        self._y = np.empty((b, *y.shape[1:]), y.dtype)
        # A separate float buffer only when the raw dtype is not already the model's.
        self._x = None if x.dtype == self.dtype else np.empty((b, *x.shape[1:]), self.dtype)

    def __len__(self) -> int:
        return len(self._stops)

    def _bounds(self) -> Iterator[tuple[int, int]]:
        """Where each batch of the whole data set starts and stops."""
        return itertools.pairwise([0, *self._stops])

    def _slice(self, start: int, stop: int) -> tuple[int, int]:
        """This part's share of the batch ``[start, stop)``."""
        m = stop - start
        return start + m * self.rank // self.size, start + m * (self.rank + 1) // self.size

    def epoch(self, rng: np.random.Generator | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield the batches of one epoch, shuffled by ``rng`` (in order if ``rng`` is None)."""
        n = len(self.x)
        order = rng.permutation(n) if rng is not None else np.arange(n)
        for start, stop in self._bounds():
            idx = order[slice(*self._slice(start, stop))]
            m = len(idx)
            x_raw = np.take(self.x, idx, axis=0, out=self._x_raw[:m])
            y = np.take(self.y, idx, axis=0, out=self._y[:m])
            if self._x is None:
                yield x_raw, y
            else:
                self._x[:m] = x_raw  # the cast as_input makes, into the reused buffer
                yield self._x[:m], y
