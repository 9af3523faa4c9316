"""Optimizers: a few lines each over paired ``params`` / ``grads`` dicts.

``optimizer.step(params, grads)`` updates every array of ``params`` in place from the array of the
same name in ``grads``. Per-parameter state (velocities, moment estimates) is kept by name, so it
can be saved with the model and training resumed exactly (:meth:`Optimizer.state_dict`).

``weight_decay`` adds ``weight_decay * param`` to each gradient (L2 regularisation), except in
:class:`AdamW`, which decays the weights directly (decoupled weight decay).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from . import kernels
from ._checks import check_fraction, check_int, check_positive

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "AdaGrad",
    "Adam",
    "AdamW",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSProp",
]


#: A compiled loop and the scalars it takes after the arrays (see :meth:`Optimizer._kernel`).
Kernel = tuple[Callable[..., None], tuple[float | bool, ...]]


def _buffer(store: dict[str, np.ndarray], name: str, like: np.ndarray) -> np.ndarray:
    """The scratch array ``store[name]`` shaped like ``like``, made on first use."""
    buf = store.get(name)
    if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
        buf = store[name] = np.empty_like(like)
    return buf


class Optimizer:
    """Base class.

    Parameters
    ----------
    lr : float
        Learning rate (>= 0; 0 leaves the parameters unchanged). ``lr`` may be changed
        between steps (a schedule does).
    weight_decay : float
        L2 penalty coefficient (>= 0).
    """

    #: Names of the per-parameter state arrays, created as zeros on the first step.
    slots: ClassVar[tuple[str, ...]] = ()
    #: Whether :meth:`_kernel` is the compiled twin of this class's :meth:`_update`.
    _has_kernel: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass that changes the NumPy update without its compiled twin (a user's own rule)
        # runs the NumPy update: an inherited kernel would compute its parent's rule.
        cls._has_kernel = "_kernel" in vars(cls) or (cls._has_kernel and "_update" not in vars(cls))

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0) -> None:
        self.lr = check_positive(lr, "learning rate", allow_zero=True)
        #: The learning rate given at construction; schedules scale this one, so a resumed run
        #: (whose ``lr`` is the last scheduled value) continues the same schedule.
        self.initial_lr = self.lr
        self.weight_decay = check_positive(weight_decay, "weight_decay", allow_zero=True)
        self.iterations = 0
        self.state: dict[str, dict[str, np.ndarray]] = {}
        # Scratch arrays per parameter, reused every step so an update allocates nothing (not
        # state: never saved).
        self._scratch: dict[str, np.ndarray] = {}
        self._decayed: dict[str, np.ndarray] = {}

    def step(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        """Update every array of ``params`` in place using ``grads`` (same keys)."""
        if params.keys() != grads.keys():
            raise ValueError(
                f"params and grads must have the same names, got {sorted(params)} and "
                f"{sorted(grads)}"
            )
        for name, p in params.items():
            if grads[name].shape != p.shape:
                raise ValueError(
                    f"gradient {name} has shape {grads[name].shape}, parameter {p.shape}"
                )
        self.check_params(params)  # all checked before any parameter changes
        self._step_trusted(params, grads)

    def _step_trusted(
        self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]
    ) -> None:
        """:meth:`step` without its checks: the training loop checks the optimizer against the
        model once, before its first step. ``grads`` may hold more names than ``params``.

        Each parameter is updated by the compiled kernel of this rule when the fast path is
        active (:mod:`chainrule.kernels`), else by its NumPy code.
        """
        self.iterations += 1
        kernel = self._kernel(kernels.compiled()) if self._has_kernel and kernels.active() else None
        for name, p in params.items():
            g = grads[name]
            if name not in self.state:
                self.state[name] = {slot: np.zeros_like(p) for slot in self.slots}
            state = self.state[name]
            flat = (
                None if kernel is None else kernels.views(p, g, *map(state.__getitem__, self.slots))
            )
            if kernel is not None and flat is not None:
                loop, scalars = kernel
                real = p.dtype.type  # float32 scalars keep float32 arithmetic float32
                loop(*flat, *(a if isinstance(a, bool) else real(a) for a in scalars))
                continue
            if self.weight_decay and not self.decoupled:
                g = np.multiply(p, self.weight_decay, out=_buffer(self._decayed, name, p))
                g += grads[name]
            self._update(p, g, state, _buffer(self._scratch, name, p))

    def gemm_coefficients(self) -> tuple[float, float] | None:
        """``(alpha, beta)`` if this optimizer's step is ``p = beta * p + alpha * grad`` for every
        parameter, with no state: plain SGD (``alpha = -lr``, ``beta = 1 - lr * weight_decay``).

        A layer whose gradient is a matrix product can then apply the step inside that product
        (see :meth:`chainrule.Layer._backward_update`). None for every rule with state.
        """
        return None

    def check_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Raise ``ValueError`` unless the state held fits ``params`` (names, shapes, dtypes).

        An optimizer's state belongs to one model: reused for another, or loaded from another
        model's checkpoint, it would update the wrong arrays.
        """
        for name, slots in self.state.items():
            p = params.get(name)
            for slot, arr in slots.items():
                if p is None or arr.shape != p.shape or arr.dtype != p.dtype:
                    found = "no such parameter" if p is None else f"{p.shape} {p.dtype}"
                    raise ValueError(
                        f"{type(self).__name__} holds state {name}/{slot} of shape {arr.shape} "
                        f"{arr.dtype}, but the model has {found}: an optimizer's state belongs "
                        "to one model (use a new optimizer, or the model's own checkpoint)"
                    )

    #: AdamW applies weight decay to the weights, not through the gradient.
    decoupled: ClassVar[bool] = False

    def _update(
        self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray], tmp: np.ndarray
    ) -> None:
        """Update ``p`` in place from ``g``; ``tmp`` is scratch space of ``p``'s shape and dtype.

        Written with ``out=`` and in-place operators: no temporaries, and Python-float scalars,
        which keep float32 arrays float32. This is the reference the compiled kernel follows.
        """
        raise NotImplementedError

    def _kernel(self, compiled: ModuleType) -> Kernel:
        """The compiled twin of :meth:`_update`, weight decay included: a loop of
        :mod:`chainrule._compiled` and the scalars it takes after the arrays (the parameter, its
        gradient, its state in the order of :attr:`slots`)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Hyper-parameters that rebuild this optimizer (JSON-serialisable)."""
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: hyper-parameters, step count, state arrays.

        The arrays are copies: later steps do not change a state dict already taken.
        """
        return {
            "type": type(self).__name__,
            "config": self.config(),
            "iterations": self.iterations,
            "initial_lr": self.initial_lr,
            "state": {
                name: {slot: arr.copy() for slot, arr in slots.items()}
                for name, slots in self.state.items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned: hyper-parameters, step count and state
        arrays (copied). The state must come from the same kind of optimizer."""
        kind = state.get("type", type(self).__name__)
        if kind != type(self).__name__:
            raise ValueError(f"{type(self).__name__} cannot load the state of a {kind}")
        config = dict(state.get("config", {}))
        unknown = sorted(set(config) - set(self.config()))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no hyper-parameters {unknown}")
        for key, value in config.items():  # every hyper-parameter here is a real >= 0
            if isinstance(value, numbers.Real):
                config[key] = check_positive(value, key, allow_zero=True)
        iterations = check_int(state["iterations"], "iterations", minimum=0)
        for name, slots in state["state"].items():
            if sorted(slots) != sorted(self.slots):
                raise ValueError(
                    f"{type(self).__name__} state of {name} must have the slots "
                    f"{sorted(self.slots)}, got {sorted(slots)}"
                )
        for key, value in config.items():
            setattr(self, key, value)
        self.iterations = iterations
        if "initial_lr" in state:
            self.initial_lr = check_positive(state["initial_lr"], "initial_lr", allow_zero=True)
        self.state = {
            name: {slot: np.array(arr) for slot, arr in slots.items()}
            for name, slots in state["state"].items()
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Plain (mini-batch stochastic) gradient descent: ``p -= lr * g``.

    Examples
    --------
    >>> p, g = {"w": np.array([1.0, 2.0])}, {"w": np.array([0.5, -1.0])}
    >>> SGD(lr=0.1).step(p, g); p["w"]
    array([0.95, 2.1 ])
    """

    def _update(
        self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray], tmp: np.ndarray
    ) -> None:
        p -= np.multiply(g, self.lr, out=tmp)

    def _kernel(self, compiled: ModuleType) -> Kernel:
        return compiled.sgd, (self.lr, self.weight_decay)

    def gemm_coefficients(self) -> tuple[float, float] | None:
        if not self._has_kernel:  # a subclass with a rule of its own
            return None
        return -self.lr, 1.0 - self.lr * self.weight_decay


class Momentum(SGD):
    """SGD with momentum: ``v = momentum * v + g; p -= lr * v``.

    The velocity is kept in gradient units (as PyTorch does) rather than as a step
    (``v = momentum * v - lr * g; p += v``): the two agree for a constant rate, but in this form a
    schedule that lowers ``lr`` slows the parameters at once and ``lr = 0`` stops them.
    """

    slots = ("v",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.momentum = check_fraction(momentum, "momentum")

    def _update(
        self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray], tmp: np.ndarray
    ) -> None:
        v = state["v"]
        v *= self.momentum
        v += g
        p -= np.multiply(v, self.lr, out=tmp)

    def _kernel(self, compiled: ModuleType) -> Kernel:
        return compiled.momentum, (self.lr, self.weight_decay, self.momentum, False)

    def gemm_coefficients(self) -> tuple[float, float] | None:
        return None  # the velocity is state: the step is not a multiple of this gradient

    def config(self) -> dict[str, Any]:
        return {**super().config(), "momentum": self.momentum}


class Nesterov(Momentum):
    """Nesterov accelerated gradient, in the form that needs no look-ahead evaluation:
    ``v = momentum * v + g; p -= lr * (g + momentum * v)``."""

    def _update(
        self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray], tmp: np.ndarray
    ) -> None:
        v = state["v"]
        v *= self.momentum
        v += g
        np.multiply(v, self.momentum, out=tmp)
        tmp += g
        tmp *= self.lr
        p -= tmp

    def _kernel(self, compiled: ModuleType) -> Kernel:
        return compiled.momentum, (self.lr, self.weight_decay, self.momentum, True)


class AdaGrad(Optimizer):
    """Per-parameter rates from the sum of squared gradients:
    ``h += g**2; p -= lr * g / (sqrt(h) + eps)``."""

    slots = ("h",)

    def __init__(self, lr: float = 0.01, eps: float = 1e-7, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.eps = check_positive(eps, "eps")

    def _update(
        self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray], tmp: np.ndarray
    ) -> None:
        h = state["h"]
        h += np.multiply(g, g, out=tmp)
        self._scaled_step(p, g, h, tmp)

    def _kernel(self, compiled: ModuleType) -> Kernel:
        # h = decay * h + gain * g**2 with decay = gain = 1: the sum
        return compiled.scaled, (self.lr, self.weight_decay, self.eps, 1.0, 1.0)

    def _scaled_step(self, p: np.ndarray, g: np.ndarray, h: np.ndarray, tmp: np.ndarray) -> None:
        """``p -= lr * g / (sqrt(h) + eps)``."""
        np.sqrt(h, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)
        tmp *= self.lr
        p -= tmp

    def config(self) -> dict[str, Any]:
        return {**super().config(), "eps": self.eps}


class RMSProp(AdaGrad):
    """AdaGrad with a decaying average: ``h = rho * h + (1 - rho) * g**2``."""

    def __init__(
        self, lr: float = 0.001, rho: float = 0.9, eps: float = 1e-7, weight_decay: float = 0.0
    ) -> None:
        super().__init__(lr, eps, weight_decay)
        self.rho = check_fraction(rho, "rho")

    def _update(
        self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray], tmp: np.ndarray
    ) -> None:
        h = state["h"]
        h *= self.rho
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.rho
        h += tmp
        self._scaled_step(p, g, h, tmp)

    def _kernel(self, compiled: ModuleType) -> Kernel:
        return compiled.scaled, (self.lr, self.weight_decay, self.eps, self.rho, 1 - self.rho)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rho": self.rho}


class Adam(Optimizer):
    """Adam: bias-corrected first and second moment estimates.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g**2``,
    ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1**t)``,
    ``v_hat = v / (1 - b2**t)``.
    """

    slots = ("m", "v")

    def __init__(
        self,
        lr: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay)
        self.beta1 = check_fraction(beta1, "beta1")
        self.beta2 = check_fraction(beta2, "beta2")
        self.eps = check_positive(eps, "eps")

    def _update(
        self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray], tmp: np.ndarray
    ) -> None:
        m, v = state["m"], state["v"]
        m *= self.beta1
        m += np.multiply(g, 1 - self.beta1, out=tmp)
        v *= self.beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.beta2
        v += tmp
        eps, step = self._corrected()
        np.sqrt(v, out=tmp)
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= step
        p -= tmp

    def _corrected(self) -> tuple[float, float]:
        """``eps`` and the step size with both bias corrections folded in (Kingma & Ba,
        section 2): ``lr * m_hat / (sqrt(v_hat) + eps) = step * m / (sqrt(v) + eps')``."""
        t = self.iterations
        correction = math.sqrt(1 - self.beta2**t)
        return self.eps * correction, self.lr * correction / (1 - self.beta1**t)

    def _kernel(self, compiled: ModuleType) -> Kernel:
        return compiled.adam, self._adam_scalars(self.weight_decay, 1.0)

    def _adam_scalars(self, coupled_decay: float, shrink: float) -> tuple[float, ...]:
        """The compiled loop's scalars (AdamW: no coupled decay, ``shrink = 1 - lr * decay``)."""
        b1, b2 = self.beta1, self.beta2
        return (coupled_decay, shrink, b1, 1 - b1, b2, 1 - b2, *self._corrected())

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
        }


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p -= lr * weight_decay * p`` before the Adam step."""

    decoupled = True

    def __init__(
        self,
        lr: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay)

    def _update(
        self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray], tmp: np.ndarray
    ) -> None:
        p *= 1 - self.lr * self.weight_decay
        super()._update(p, g, state, tmp)

    def _kernel(self, compiled: ModuleType) -> Kernel:
        return compiled.adam, self._adam_scalars(0.0, 1 - self.lr * self.weight_decay)


#: Optimizers by the names the CLI and saved models use.
OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSProp,
    "adam": Adam,
    "adamw": AdamW,
}
