"""Helpers shared by the lessons: argument checks, text tables, figures and MNIST."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._checks import check_int
from ..optim import SGD
from ..plots import figure_png
from ._base import DataDir

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "check_seed",
    "figure_png",
    "format_table",
    "load_mnist_bytes",
    "load_update_kernels",
    "new_figure",
    "subset",
]


def check_seed(seed: Any) -> int:
    """The seed as a non-negative int (what ``np.random.default_rng`` accepts)."""
    return check_int(seed, "seed", minimum=0)


def load_update_kernels(params: Mapping[str, np.ndarray]) -> None:
    """One SGD step on copies of ``params`` with zero gradients, thrown away.

    The first optimizer step of a process loads the compiled update kernels (about a second);
    a lesson that times training takes it here, before its clock starts.
    """
    SGD(lr=1.0).step(
        {name: p.copy() for name, p in params.items()},
        {name: np.zeros_like(p) for name, p in params.items()},
    )


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Align already-formatted cells: the first column to the left, the others to the right."""
    cells = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib ``Figure`` made without pyplot (no global state, no window)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            'lessons draw their plots with matplotlib: pip install "chainrule[cli]"'
        ) from exc
    return Figure(figsize=(width, height), layout="constrained")


@functools.lru_cache(maxsize=1)
def _load(path: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from ..datasets import load_mnist

    (x_train, y_train), (x_test, y_test) = load_mnist(path=path, normalize=False)
    for array in (x_train, y_train, x_test, y_test):
        array.flags.writeable = False  # shared by every lesson of this process: read-only
    return x_train, y_train, x_test, y_test


def load_mnist_bytes(
    data_dir: DataDir,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """MNIST as ``uint8`` images ``(N, 784)`` and integer labels, read once per process.

    The arrays are read-only: lessons take subsets (copies) and scale them as they need.
    """
    path = None if data_dir is None else str(Path(os.fspath(data_dir)).resolve())
    x_train, y_train, x_test, y_test = _load(path)
    return (x_train, y_train), (x_test, y_test)


def subset(
    x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of ``(x, y)`` drawn without replacement (all of them, shuffled, if fewer)."""
    idx = np.sort(rng.permutation(len(x))[: min(n, len(x))])
    return x[idx], y[idx]
