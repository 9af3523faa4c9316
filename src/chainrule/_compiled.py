"""The compiled loops behind :mod:`chainrule.kernels` (numba; imported only when first needed).

Each optimizer's update is one pass over a parameter and its state, in the order of operations
of that optimizer's NumPy code (``Optimizer._update``), so both give the same numbers up to
rounding. Every scalar arrives in the parameter's dtype, which keeps float32 arithmetic in
float32. The loops are ``prange`` loops, split over the threads of numba's pool.
``error_model="numpy"``: a division by zero gives infinity, as in NumPy, without a check per
element (a check that also keeps the loop from being vectorised); ``cache=True`` keeps the
machine code on disk, so only the first run compiles.
"""

from __future__ import annotations

import os

import numba
import numpy as np

__all__ = ["adam", "momentum", "scaled", "sgd"]

if "NUMBA_THREADING_LAYER" not in os.environ:  # a user's choice stands
    # Set before the first parallel loop: a thread pool that survives a fork of the process
    # (numba's work queue, or TBB when installed; GNU OpenMP's does not). The work queue must not
    # be entered by two threads at once, which kernels.call() sees to.
    numba.config.THREADING_LAYER = "forksafe"  # type: ignore[attr-defined]

_compile = numba.njit(parallel=True, cache=True, error_model="numpy", nogil=True)


@_compile
def sgd(p: np.ndarray, g: np.ndarray, lr: float, wd: float) -> None:
    """``p -= lr * (g + wd * p)``."""
    for i in numba.prange(p.size):
        gi = g[i]
        if wd != 0:
            gi = p[i] * wd + gi
        p[i] -= gi * lr


@_compile
def momentum(
    p: np.ndarray, g: np.ndarray, v: np.ndarray, lr: float, wd: float, mu: float, nesterov: bool
) -> None:
    """``v = mu * v + g; p -= lr * v`` (Nesterov: ``p -= lr * (g + mu * v)``)."""
    for i in numba.prange(p.size):
        gi = g[i]
        if wd != 0:
            gi = p[i] * wd + gi
        vi = v[i] * mu + gi
        v[i] = vi
        if nesterov:
            p[i] -= (vi * mu + gi) * lr
        else:
            p[i] -= vi * lr


@_compile
def scaled(
    p: np.ndarray,
    g: np.ndarray,
    h: np.ndarray,
    lr: float,
    wd: float,
    eps: float,
    decay: float,
    gain: float,
) -> None:
    """AdaGrad (``decay = gain = 1``) and RMSProp: ``h = decay * h + gain * g**2;
    p -= lr * g / (sqrt(h) + eps)``."""
    for i in numba.prange(p.size):
        gi = g[i]
        if wd != 0:
            gi = p[i] * wd + gi
        hi = h[i] * decay + gi * gi * gain
        h[i] = hi
        p[i] -= gi / (np.sqrt(hi) + eps) * lr


@_compile
def adam(
    p: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    wd: float,
    shrink: float,
    b1: float,
    c1: float,
    b2: float,
    c2: float,
    eps: float,
    step: float,
) -> None:
    """Adam with the bias corrections folded into ``step`` and ``eps`` (see ``Adam._update``);
    ``shrink = 1 - lr * weight_decay`` for AdamW's decoupled decay, else 1."""
    for i in numba.prange(p.size):
        pi = p[i]
        gi = g[i]
        if wd != 0:
            gi = pi * wd + gi
        mi = m[i] * b1 + gi * c1
        vi = v[i] * b2 + gi * gi * c2
        m[i] = mi
        v[i] = vi
        p[i] = pi * shrink - mi / (np.sqrt(vi) + eps) * step
