"""Weight initialisers: ``"normal"`` (N(0, 0.01^2), as in the notes), ``"xavier"`` and ``"he"``.

Xavier and He follow the notes' (and Deep Learning from Scratch's) convention, scaling a standard
normal by the fan-in ``n``: Xavier ``std = sqrt(1 / n)`` keeps the variance of sigmoid/tanh
pre-activations steady through the layers; He ``std = sqrt(2 / n)`` compensates for ReLU zeroing
half of its inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["INITIALIZERS", "init_weight"]


def _normal(fan_in: int) -> float:
    return 0.01


def _xavier(fan_in: int) -> float:
    return float(np.sqrt(1.0 / fan_in))


def _he(fan_in: int) -> float:
    return float(np.sqrt(2.0 / fan_in))


#: Name -> function from fan-in to the standard deviation of the weights.
INITIALIZERS: dict[str, Callable[[int], float]] = {"normal": _normal, "xavier": _xavier, "he": _he}


def init_weight(
    init: str, shape: tuple[int, int], rng: np.random.Generator, dtype: np.dtype | type
) -> np.ndarray:
    """Draw a ``(fan_in, fan_out)`` weight matrix with the named initialiser.

    Parameters
    ----------
    init : {"normal", "xavier", "he"}
    shape : (fan_in, fan_out)
    rng : numpy.random.Generator
    dtype : floating dtype of the result

    Examples
    --------
    >>> w = init_weight("he", (784, 100), np.random.default_rng(0), np.float32)
    >>> w.shape, w.dtype
    ((784, 100), dtype('float32'))
    """
    if init not in INITIALIZERS:
        raise ValueError(f"Unknown init {init!r}; choose one of {sorted(INITIALIZERS)}")
    std = INITIALIZERS[init](shape[0])
    return (rng.standard_normal(shape) * std).astype(dtype)
