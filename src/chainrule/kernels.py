"""The fast path: compiled optimizer steps, plain SGD inside BLAS, and thread control.

With the ``fast`` extra installed (``pip install "chainrule[fast]"``: numba, SciPy and
threadpoolctl), training updates each parameter in one compiled pass (every optimizer) and
applies plain SGD to a weight matrix inside the BLAS product that makes its gradient. Without
it, each optimizer's NumPy code runs: that code is the reference, and the tests hold the fast
path to it within float32 rounding (the order of the operations is the same; a product inside
BLAS rounds once where NumPy rounds twice).

Threads: NumPy's BLAS starts one thread per core by default (the compiled kernels run on one).
:func:`threads` caps BLAS for a block of code (``chainrule train --threads N``, ``fit(...,
threads=N)``). The thread count decides how sums are split, so a model is reproducible bit for
bit only with the same thread count on the same kind of CPU.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import threading
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from ._checks import check_int

__all__ = [
    "active",
    "available",
    "blas_threads",
    "compiled",
    "describe",
    "fold_pays",
    "gemm_update",
    "numpy_only",
    "threads",
    "views",
]

#: The packages of the ``fast`` extra.
PACKAGES = ("numba", "scipy", "threadpoolctl")
_INSTALL = 'pip install "chainrule[fast]"'
_state = threading.local()  # numpy_only() blocks open in this thread


@functools.cache
def _modules() -> tuple[ModuleType, ModuleType] | None:
    """The compiled loops and SciPy's BLAS, imported on first use (numba takes a while to
    import), or None if a package of the extra is missing or fails to import."""
    if any(importlib.util.find_spec(name) is None for name in PACKAGES):
        return None
    try:
        return importlib.import_module("._compiled", __package__), importlib.import_module(
            "scipy.linalg.blas"
        )
    except ImportError:  # e.g. a numba release that does not support the installed NumPy
        return None


def available() -> bool:
    """Whether the ``fast`` extra is installed and imports."""
    return _modules() is not None


def active() -> bool:
    """Whether training takes the fast path here and now: :func:`available`, and no
    :func:`numpy_only` block is open in this thread."""
    return not getattr(_state, "numpy_only", 0) and available()


@contextlib.contextmanager
def numpy_only() -> Iterator[None]:
    """Run the block on the NumPy reference path even where the fast one is installed.

    Examples
    --------
    >>> with numpy_only():
    ...     active()
    False
    """
    _state.numpy_only = getattr(_state, "numpy_only", 0) + 1
    try:
        yield
    finally:
        _state.numpy_only -= 1


def describe() -> str:
    """One line saying which path training takes, for the CLI's header."""
    if active():
        return "fast path (compiled kernels)"
    if available():
        return "NumPy path (the fast path is switched off)"
    return f"NumPy path ({_INSTALL} for compiled kernels)"


def compiled() -> ModuleType:
    """The module of compiled loops (:mod:`chainrule._compiled`); only when :func:`active`."""
    modules = _modules()
    assert modules is not None
    return modules[0]


def views(*arrays: np.ndarray) -> list[np.ndarray] | None:
    """Flat views of arrays that a compiled loop can update in place: of one float32 or float64
    dtype and C-contiguous (a flat view of anything else would be a copy); None otherwise."""
    dtype = arrays[0].dtype
    if dtype not in (np.float32, np.float64):
        return None
    if not all(a.dtype == dtype and a.flags.c_contiguous for a in arrays):
        return None
    return [a.reshape(-1) for a in arrays]


def gemm_update(x: np.ndarray, dy: np.ndarray, w: np.ndarray, alpha: float, beta: float) -> bool:
    """``w = beta * w + alpha * (x.T @ dy)`` in place, in one BLAS call, when the fast path is
    active and the arrays allow it (one float32 or float64 dtype, C-contiguous); returns whether
    it did (if not, ``w`` is untouched).

    BLAS is column-major: the transposes of C-ordered arrays are its matrices, so the update is
    ``w.T = beta * w.T + alpha * dy.T @ x`` on those views, without a copy.

    Shape
    -----
    x : (N, I), dy : (N, O), w : (I, O)
    """
    if not active() or views(x, dy, w) is None:
        return False
    blas = _modules()[1]  # type: ignore[index]
    gemm = blas.sgemm if w.dtype == np.float32 else blas.dgemm
    c = w.T
    out = gemm(alpha, dy.T, x.T, beta=beta, c=c, trans_b=True, overwrite_c=True)
    if out is not c:  # never expected: SciPy had to copy after all
        w[...] = out.T
    return True


def blas_threads() -> int:
    """The threads BLAS uses now: the most of any BLAS library loaded (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    counts = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    return max(counts, default=1)


def fold_pays() -> bool:
    """Whether plain SGD inside SciPy's BLAS pays here and now: on the fast path with one BLAS
    thread. Installed from wheels, NumPy and SciPy each bring their own OpenBLAS, each with its
    own thread pool; with two threads, the pools take turns every step and one's threads spin
    while the other's work (measured: an epoch 1.6x slower than without the fold), whereas on
    one thread the fold saves the separate update pass (an epoch of 784-1000-10 11 % faster)."""
    return active() and blas_threads() == 1


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Use at most ``n`` threads in BLAS (NumPy's, and SciPy's on the fast path) for the
    duration of the block (threadpoolctl; the compiled kernels are single-threaded).

    One thread is often the fastest on a machine whose cores are busy with other work: a
    product split over two cores waits for the slower one. Results depend on the thread count
    in their last bits (sums are split differently).

    Examples
    --------
    >>> import chainrule as cr
    >>> with cr.threads(1):  # doctest: +SKIP
    ...     cr.fit(model, x, y, loss="softmax_cross_entropy", optimizer="sgd", epochs=1)
    """
    n = check_int(n, "threads")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise ImportError(f"thread control needs threadpoolctl: {_INSTALL}") from None
    available()  # SciPy's BLAS loaded first, so that the limit reaches it too
    with threadpool_limits(limits=n, user_api="blas"):
        yield
