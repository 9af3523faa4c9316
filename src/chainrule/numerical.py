"""The numerical gradient, and gradient descent on a function: the notes' slow reference.

A central difference needs two evaluations of ``f`` per element of ``x``, so the gradient of P
parameters costs 2P forward passes, against one forward and one backward pass for
back-propagation (:mod:`chainrule.gradcheck` compares the two).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._checks import check_int, check_positive

__all__ = ["gradient_descent", "numerical_gradient"]


def numerical_gradient(
    f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-4, method: str = "central"
) -> np.ndarray:
    """Finite-difference gradient of a scalar function ``f`` at ``x``.

    ``"central"``: ``(f(x + h e_i) - f(x - h e_i)) / 2h``, error O(h^2);
    ``"forward"``: ``(f(x + h e_i) - f(x)) / h``, error O(h).

    ``x`` is perturbed in place one element at a time (so ``f`` may close over it, as a network
    closes over its weights) and every element is restored to its exact original value. The
    difference is divided by the step as stored in ``x``'s dtype: ``h`` up to rounding, or the
    distance to the next representable number where ``h`` is smaller than that.

    Parameters
    ----------
    f : callable
        ``f(x) -> float``.
    x : ndarray of float
        The point; any shape.
    h : float
        The step.
    method : {"central", "forward"}

    Returns
    -------
    ndarray
        ``df/dx``, shape of ``x``, dtype float64.

    Examples
    --------
    >>> g = numerical_gradient(lambda v: float(np.sum(v**2)), np.array([-3.0, 4.0]))
    >>> np.round(g, 6)
    array([-6.,  8.])
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise TypeError("x must be a floating-point ndarray (it is perturbed in place)")
    h = check_positive(h, "h")
    if method not in ("central", "forward"):
        raise ValueError(f"Invalid method: {method!r} (choose 'central' or 'forward')")
    grad = np.zeros(x.shape, np.float64)
    base = float(f(x)) if method == "forward" else 0.0
    for index in np.ndindex(x.shape):
        original = x[index].copy()
        try:
            # Divide by the step actually stored, (x + h) - x, not by h: next to a large x the
            # dtype cannot hold x + h exactly, and the difference would be a relative error of
            # eps |x| / h in the gradient (5e-5 for x = 1e3, h = 4e-9 in float64). Where h is
            # below the resolution altogether, the step is to the nearest representable value.
            x[index] = _step(original, h, np.inf)
            up = float(x[index]) - float(original)
            plus = float(f(x))
            if method == "forward":
                grad[index] = (plus - base) / up
            else:
                x[index] = _step(original, h, -np.inf)
                down = float(original) - float(x[index])
                grad[index] = (plus - float(f(x))) / (up + down)
        finally:
            x[index] = original  # the exact value, not (x + h) - h
    return grad


def _step(value: np.floating[Any], h: float, direction: float) -> np.floating[Any]:
    """``value + h`` (``direction`` +inf) or ``value - h`` (-inf), in ``value``'s dtype, or the
    next representable number that way if ``h`` is too small to move ``value`` at all."""
    moved = value + h if direction > 0 else value - h  # h a Python float: value's dtype
    return moved if moved != value else np.nextafter(value, direction)


def gradient_descent(
    f: Callable[[np.ndarray], float],
    init_x: np.ndarray,
    lr: float = 0.01,
    step_num: int = 100,
    grad: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``f`` from ``init_x`` by ``x -= lr * grad(x)``, ``step_num`` times.

    ``grad`` defaults to the central-difference :func:`~chainrule.numerical_gradient` of ``f``,
    as in the notes. Returns the end point and the path, shape ``(step_num + 1, *x.shape)``.

    Examples
    --------
    >>> x, path = gradient_descent(lambda v: float(np.sum(v**2)), np.array([-3.0, 4.0]), lr=0.1)
    >>> bool(np.abs(x).max() < 1e-8)
    True
    """
    check_positive(lr, "learning rate")
    step_num = check_int(step_num, "step_num", minimum=0)
    x = np.array(init_x, dtype=np.float64)
    gradient = grad if grad is not None else (lambda v: numerical_gradient(f, v))
    path = [x.copy()]
    with np.errstate(over="ignore", invalid="ignore"):  # a too-large lr diverges, visibly
        for _ in range(step_num):
            x = x - lr * gradient(x)
            path.append(x.copy())
    return x, np.array(path)
