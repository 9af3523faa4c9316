"""The compiled loops behind :mod:`chainrule.kernels` (numba; imported only when first needed).

Each optimizer's update is one pass over a parameter and its state, in the order of operations
of that optimizer's NumPy code (``Optimizer._update``), so both give the same numbers up to
rounding. Every scalar arrives in the parameter's dtype, which keeps float32 arithmetic in
float32.

``error_model="numpy"``: a division by zero gives infinity, as in NumPy, without the check per
element that would also keep LLVM from vectorising the loop (with it, a loop runs slower than
NumPy's several passes). The loops are serial: a ``prange`` loop was no faster on one thread,
cost milliseconds per call to wake its thread pool on a busy machine, and such a pool is either
not fork-safe (GNU OpenMP) or not safe to enter from two threads (numba's work queue).
``cache=True`` keeps the machine code on disk, so only the first run compiles.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["adam", "momentum", "scaled", "sgd"]

_compile = numba.njit(cache=True, error_model="numpy", nogil=True)


@_compile
def sgd(p: np.ndarray, g: np.ndarray, lr: float, wd: float) -> None:
    """``p -= lr * (g + wd * p)``."""
    for i in range(p.size):
        gi = g[i]
        if wd != 0:
            gi = p[i] * wd + gi
        p[i] -= gi * lr


@_compile
def momentum(
    p: np.ndarray, g: np.ndarray, v: np.ndarray, lr: float, wd: float, mu: float, nesterov: bool
) -> None:
    """``v = mu * v + g; p -= lr * v`` (Nesterov: ``p -= lr * (g + mu * v)``)."""
    for i in range(p.size):
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
    for i in range(p.size):
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
    for i in range(p.size):
        pi = p[i]
        gi = g[i]
        if wd != 0:
            gi = pi * wd + gi
        mi = m[i] * b1 + gi * c1
        vi = v[i] * b2 + gi * gi * c2
        m[i] = mi
        v[i] = vi
        p[i] = pi * shrink - mi / (np.sqrt(vi) + eps) * step
