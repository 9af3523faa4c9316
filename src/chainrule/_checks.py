"""Argument checks shared by the public entry points.

Each check raises ``TypeError`` or ``ValueError`` at the boundary with a message that names the
argument and echoes what was received, so a user never has to read a traceback from inside NumPy.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = [
    "as_generator",
    "as_input",
    "check_array",
    "check_finite",
    "check_fraction",
    "check_int",
    "check_labels",
    "check_positive",
    "check_real",
    "describe",
]


def describe(x: Any) -> str:
    """A short description of ``x`` for error messages: shape and dtype for arrays."""
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}" if np.isscalar(x) else type(x).__name__


def check_array(x: Any, name: str, *, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Return ``x`` as an ndarray with a numeric dtype, or raise naming ``name``.

    Lists are converted; object, string and boolean arrays are refused.
    """
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be an array of numbers, got {describe(x)}") from exc
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"{name} must be an array of numbers, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got shape {x.shape}")
    return x


def check_finite(x: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` if a floating array holds NaN or infinity, saying where."""
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))
        kind = "NaN" if np.isnan(x).any() else "infinity"
        raise ValueError(
            f"{name} contains {kind} ({len(bad)} non-finite value(s), first at index "
            f"{tuple(int(i) for i in bad[0])})"
        )


def check_labels(t: np.ndarray, num_classes: int, name: str = "target") -> np.ndarray:
    """Check integer class labels ``t`` of shape ``(N,)`` lie in ``[0, num_classes)``."""
    check_finite(t, f"{name} labels")  # NaN is named as such, not as a float dtype
    if not np.issubdtype(t.dtype, np.integer):
        if np.issubdtype(t.dtype, np.floating) and t.size and np.all(t == np.round(t)):
            hint = " (they are whole numbers: cast with .astype(int))"
        else:
            hint = ""
        raise TypeError(f"{name} labels must be integers, got dtype {t.dtype}{hint}")
    if t.size:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes - 1}] for {num_classes} classes, "
                f"got values from {lo} to {hi}"
            )
    return t


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if it is a finite real > 0 (>= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Invalid {name}: {value!r} (must be finite and {bound})")
    return v


def check_real(value: Any, name: str) -> float:
    """Return ``value`` as a float if it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    if not np.isfinite(float(value)):
        raise ValueError(f"Invalid {name}: {value!r} (must be finite)")
    return float(value)


def check_fraction(value: Any, name: str, *, allow_zero: bool = True) -> float:
    """Return ``value`` as a float if it lies in [0, 1) ((0, 1) without ``allow_zero``): the one
    rule for probabilities of dropping, momenta and held-out fractions."""
    v = check_positive(value, name, allow_zero=allow_zero)
    if v >= 1:
        low = "[0" if allow_zero else "(0"
        raise ValueError(f"Invalid {name}: {value!r} (must be in {low}, 1))")
    return v


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {describe(value)}")
    if value < minimum:
        raise ValueError(f"Invalid {name}: {value!r} (must be >= {minimum})")
    return int(value)


def check_float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """Return ``dtype`` as a NumPy dtype if it is a floating type (float16/32/64)."""
    try:
        result = np.dtype(dtype)
    except TypeError:
        result = None
    if result is None or not np.issubdtype(result, np.floating):
        raise TypeError(f"{name} must be a floating type such as np.float32, got {dtype!r}")
    return result


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A ``numpy.random.Generator`` from a Generator, an integer seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(
        f"rng must be a numpy.random.Generator, an int seed or None, got {describe(rng)}"
    )


def as_input(x: Any, dtype: np.dtype | None, name: str = "x") -> np.ndarray:
    """Convert a batch of inputs to the model's floating ``dtype``, checking it on the way.

    Every integer dtype is converted as it is (scaling pixels is a :class:`~chainrule.Rescaling`
    layer's job, held by the model); NaN or infinity is refused. ``dtype=None`` keeps a floating
    input's own dtype and converts integers to float32.
    """
    x = check_array(x, name)
    if dtype is None:
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
    converted = x.astype(dtype, copy=False)
    # Any integer is finite in float32 or float64 (no pass over a batch of pixels for nothing);
    # a float may not be, nor a large one once narrowed.
    if not (np.issubdtype(x.dtype, np.integer) and np.finfo(dtype).max > 2.0**64):
        check_finite(converted, name)
    return converted
