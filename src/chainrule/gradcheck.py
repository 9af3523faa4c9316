"""The check that back-propagation agrees with the numerical gradient.

The numerical gradient is the slow reference: each of the P parameters needs two evaluations of the
loss (central difference), so one gradient costs 2P forward passes, against one forward and one
backward pass for back-propagation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._checks import check_array, check_positive
from .layers import Layer
from .losses import Loss
from .network import Sequential, as_input
from .numerical import numerical_gradient

__all__ = ["GradientCheckError", "GradientCheckReport", "gradient_check"]


@dataclass(frozen=True)
class ParamCheck:
    """The comparison for one array (a parameter, or the network's input ``"x"``).

    ``rel_error`` is the norm-wise relative error ``max|a - n| / max(max|a|, max|n|)`` of the
    analytic gradient ``a`` against the numerical ``n``: scale-aware, so tiny entries of a
    correct gradient do not fail on round-off, while a wrong factor, sign or transpose gives an
    error of order 1.
    """

    name: str
    shape: tuple[int, ...]
    abs_error: float
    rel_error: float
    worst_index: tuple[int, ...]
    analytic: float
    numerical: float


class GradientCheckError(AssertionError):
    """Raised by :func:`gradient_check` with ``raise_on_failure=True`` when a check fails."""


@dataclass(frozen=True)
class GradientCheckReport:
    """Per-array results of :func:`gradient_check`; ``passed`` when all are within ``rtol``."""

    checks: list[ParamCheck] = field(default_factory=list)
    rtol: float = 1e-6
    atol: float = 1e-9

    def ok(self, check: ParamCheck) -> bool:
        """Relative error within ``rtol``, or a gradient that is zero up to ``atol`` (e.g. the
        bias of a Dense layer feeding BatchNorm, whose gradient is exactly 0: a relative error
        of finite-difference noise against 0 means nothing)."""
        return check.rel_error <= self.rtol or check.abs_error <= self.atol

    @property
    def passed(self) -> bool:
        return all(self.ok(c) for c in self.checks)

    @property
    def max_rel_error(self) -> float:
        return max((c.rel_error for c in self.checks), default=0.0)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        rows = [f"{'array':<10}{'shape':<14}{'max abs err':>13}{'rel err':>11}  worst index"]
        for c in self.checks:
            mark = "" if self.ok(c) else "  FAIL"
            rows.append(
                f"{c.name:<10}{c.shape!s:<14}{c.abs_error:>13.3e}{c.rel_error:>11.3e}"
                f"  {c.worst_index} (backprop {c.analytic:.6g}, numerical {c.numerical:.6g}){mark}"
            )
        verdict = "passed" if self.passed else "FAILED"
        rows.append(
            f"{verdict}: max relative error {self.max_rel_error:.3e} "
            f"(rtol {self.rtol:g}, atol {self.atol:g})"
        )
        return "\n".join(rows)


def _compare(name: str, analytic: np.ndarray, numerical: np.ndarray) -> ParamCheck:
    diff = np.abs(analytic - numerical)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
    scale = max(float(np.abs(analytic).max(initial=0)), float(np.abs(numerical).max(initial=0)))
    abs_err = float(diff.max(initial=0))
    rel = 0.0 if abs_err == 0 else abs_err / scale
    return ParamCheck(
        name,
        analytic.shape,
        abs_err,
        rel,
        tuple(int(i) for i in worst),
        float(analytic[worst]) if diff.size else 0.0,
        float(numerical[worst]) if diff.size else 0.0,
    )


def gradient_check(
    net: Sequential | Layer,
    loss: Loss,
    x: np.ndarray,
    t: np.ndarray,
    *,
    h: float = 1e-5,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    training: bool = True,
    check_input: bool = True,
    raise_on_failure: bool = False,
) -> GradientCheckReport:
    """Compare back-propagated gradients with central differences, in float64.

    The network is copied and converted to float64 (the original is not touched), so a float32
    model is checked at full precision instead of passing or failing on round-off. Random layers
    (Dropout) replay the same mask for every evaluation.

    Parameters
    ----------
    net : Sequential or Layer
        The model (a single layer is wrapped in a Sequential).
    loss : Loss
    x, t : ndarray
        A batch of inputs and targets.
    h : float
        Central-difference step.
    rtol : float
        Largest relative error (see :class:`ParamCheck`) that passes.
    atol : float
        An array whose largest absolute error is within ``atol`` passes too (a zero gradient
        against finite-difference noise).
    training : bool
        Check the training-mode gradient (Dropout masks, BatchNorm batch statistics).
    check_input : bool
        Also check ``dL/dx``.
    raise_on_failure : bool
        Raise :class:`GradientCheckError` with the report if any array fails.

    Returns
    -------
    GradientCheckReport
        One :class:`ParamCheck` per parameter (by its network name) and ``"x"``.

    Examples
    --------
    >>> import chainrule as cr
    >>> net = cr.Sequential(cr.Dense(3, 4, rng=0), cr.Tanh(), cr.Dense(4, 2, rng=1))
    >>> x, t = np.random.default_rng(0).normal(size=(5, 3)), np.array([0, 1, 1, 0, 1])
    >>> cr.gradient_check(net, cr.SoftmaxCrossEntropy(), x, t).passed
    True
    """
    if isinstance(net, Layer):
        net = Sequential(net)
    if not isinstance(net, Sequential):
        raise TypeError(f"net must be a Sequential or a Layer, got {type(net).__name__}")
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a Loss, got {type(loss).__name__}")
    rtol = check_positive(rtol, "rtol")
    atol = check_positive(atol, "atol", allow_zero=True)
    net64 = net.copy().astype(np.float64)
    # As net.forward sees it (converted to the dtype, NaN refused), in a copy of our own:
    # the numerical gradient perturbs it in place.
    x64 = np.array(as_input(x, np.dtype(np.float64), "x"))
    t = check_array(t, "t")
    if np.issubdtype(t.dtype, np.floating):
        t = t.astype(np.float64)
    states = [layer.get_extra_state() for layer in net64]

    def evaluate(_: np.ndarray | None = None) -> float:
        for layer, state in zip(net64, states, strict=True):
            layer.set_extra_state(state)  # the same dropout mask at every evaluation
        # Past the dtype conversion: a network without parameters would compute in float32.
        return loss.forward(net64._forward_trusted(x64, training), t)

    evaluate()
    dx = net64.backward(loss.backward(), input_grad=check_input)
    analytic = {name: g.copy() for name, g in net64.grads.items()}

    checks = [
        _compare(name, analytic[name], numerical_gradient(evaluate, p, h=h))
        for name, p in net64.params.items()
    ]
    if check_input:
        assert dx is not None
        checks.append(_compare("x", dx, numerical_gradient(evaluate, x64, h=h)))
    report = GradientCheckReport(checks, rtol, atol)
    if raise_on_failure and not report.passed:
        raise GradientCheckError(f"gradient check failed\n{report}")
    return report
