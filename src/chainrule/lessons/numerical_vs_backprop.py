"""Lesson ``numerical-vs-backprop`` (notes 000, 001 and 003).

Note 000 trains its ``DNN(hidden_depth=5, num_neuron=32, input=10, output=2)`` with a numerical
gradient and remarks that a network of 100,000 parameters would need about ten billion
multiplications per gradient; note 001 trains the same network by back-propagation. This lesson
measures both on the same single random sample:

1. for networks of growing width, the time of one numerical gradient (central difference over
   every parameter) and of one back-propagated gradient, and how far apart they are;
2. 200 epochs of plain gradient descent on the notes' network with each gradient: the two loss
   curves lie on top of each other, one of them about a thousand times faster to compute.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..losses import MeanSquaredError
from ..network import DNN, Sequential
from ..numerical import numerical_gradient
from ..optim import SGD
from ._base import DataDir, Lesson, LessonResult
from ._common import check_seed, figure_png, format_table, load_update_kernels, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["LESSON", "run"]

#: Hidden widths of the size sweep (5 hidden layers each); 32 is the notes' network.
WIDTHS = (8, 16, 32, 64, 100, 150)
WIDTHS_QUICK = (8, 16, 32)
NOTES_WIDTH = 32
DEPTH, NUM_INPUT, NUM_OUTPUT = 5, 10, 2
#: The notes' finite-difference step and learning rate.
H = 1e-4
LR = 0.01
EPOCHS, EPOCHS_QUICK = 200, 2

Grads = dict[str, np.ndarray]


@dataclass(frozen=True)
class _Timing:
    width: int
    params: int
    weights: int  # multiplications of one forward pass of one sample
    numerical_s: float
    backprop_s: float
    rel_error: float

    @property
    def speedup(self) -> float:
        return self.numerical_s / self.backprop_s


def _network(width: int, rng: np.random.Generator) -> DNN:
    # float64, so that the comparison measures the methods and not float32 round-off.
    return DNN(DEPTH, width, NUM_INPUT, NUM_OUTPUT, activation="sigmoid", rng=rng, dtype=np.float64)


def _backprop(net: Sequential, loss: MeanSquaredError, x: np.ndarray, t: np.ndarray) -> Grads:
    """One forward and one backward pass; the gradient of every parameter."""
    loss.forward(net.forward(x), t)
    net.backward(loss.backward(), input_grad=False)
    return {name: g.copy() for name, g in net.grads.items()}


def _numerical(net: Sequential, loss: MeanSquaredError, x: np.ndarray, t: np.ndarray) -> Grads:
    """Central differences, two forward passes per parameter: the network as a black box."""

    def f(_: np.ndarray) -> float:  # closes over the network, whose weights are perturbed
        return loss.forward(net.forward(x), t)

    return {name: numerical_gradient(f, p, h=H) for name, p in net.params.items()}


def _rel_error(a: Grads, b: Grads) -> float:
    """Largest norm-wise relative difference ``max|a - b| / max(max|a|, max|b|)`` over arrays
    (the measure of :func:`chainrule.gradient_check`)."""
    worst = 0.0
    for name in a:
        diff = float(np.abs(a[name] - b[name]).max())
        scale = max(float(np.abs(a[name]).max()), float(np.abs(b[name]).max()))
        worst = max(worst, diff / scale if scale else diff)
    return worst


def _clock() -> float:
    """CPU seconds of this process: on a machine shared with other jobs, wall-clock time counts
    the wait for a core as well, and a single long measurement (the numerical gradient) against
    a best of several (back-propagation) then compares the load, not the methods."""
    return time.process_time()


def _best_time(fn: Callable[[], object], min_total: float = 0.2, min_repeats: int = 5) -> float:
    """Shortest of several timed calls (the least disturbed by the rest of the machine)."""
    best, total, repeats = np.inf, 0.0, 0
    while total < min_total or repeats < min_repeats:
        start = _clock()
        fn()
        elapsed = _clock() - start
        best, total, repeats = min(best, elapsed), total + elapsed, repeats + 1
    return best


def _time_sizes(
    widths: tuple[int, ...], x: np.ndarray, t: np.ndarray, rng: np.random.Generator
) -> list[_Timing]:
    loss = MeanSquaredError(half=True)
    rows = []
    for width in widths:
        net = _network(width, rng)
        start = _clock()
        numerical = _numerical(net, loss, x, t)
        numerical_s = _clock() - start
        backprop = _backprop(net, loss, x, t)
        backprop_s = _best_time(functools.partial(_backprop, net, loss, x, t))
        weights = sum(p.size for name, p in net.params.items() if name.endswith(".W"))
        rel = _rel_error(backprop, numerical)
        rows.append(_Timing(width, net.num_params, weights, numerical_s, backprop_s, rel))
    return rows


def _train(
    net: Sequential,
    x: np.ndarray,
    t: np.ndarray,
    epochs: int,
    gradient: Callable[[Sequential, MeanSquaredError, np.ndarray, np.ndarray], Grads],
) -> tuple[list[float], float]:
    """Plain gradient descent on one sample; the loss before each step, and seconds per epoch."""
    loss, optimizer = MeanSquaredError(half=True), SGD(lr=LR)
    load_update_kernels(net.params)  # or the first run's epochs pay for loading them
    losses = []
    start = _clock()
    for _ in range(epochs):
        losses.append(loss.forward(net.forward(x), t))
        optimizer.step(net.params, gradient(net, loss, x, t))
    seconds = (_clock() - start) / epochs
    return losses, seconds


def _slope(params: list[int], seconds: list[float]) -> float:
    """Exponent ``a`` of the least-squares fit ``seconds ~ params**a`` (log-log)."""
    return float(np.polyfit(np.log(params), np.log(seconds), 1)[0])


def run(*, quick: bool = False, seed: int = 0, data_dir: DataDir = None) -> LessonResult:
    """Time numerical against back-propagated gradients, then train with each.

    Parameters
    ----------
    quick : bool
        Widths 8, 16, 32 and 2 epochs instead of widths up to 150 (92,552 parameters) and 200.
    seed : int
        Seeds the sample, its target and every network's initial weights.
    data_dir : ignored
        The lesson needs no data set.
    """
    rng = np.random.default_rng(check_seed(seed))
    # The notes' single random sample: 10 inputs, 2 targets, both standard normal.
    x, t = rng.normal(size=(1, NUM_INPUT)), rng.normal(size=(1, NUM_OUTPUT))
    timings = _time_sizes(WIDTHS_QUICK if quick else WIDTHS, x, t, rng)

    epochs = EPOCHS_QUICK if quick else EPOCHS
    net_bp = _network(NOTES_WIDTH, rng)
    net_num = net_bp.copy()  # the same initial weights for both runs
    curve_bp, epoch_bp = _train(net_bp, x, t, epochs, _backprop)
    curve_num, epoch_num = _train(net_num, x, t, epochs, _numerical)
    curve_gap = max(
        abs(a - b) / max(abs(a), abs(b)) for a, b in zip(curve_bp, curve_num, strict=True)
    )
    weight_gap = max(
        float(np.abs(net_bp.params[k] - net_num.params[k]).max()) for k in net_bp.params
    )

    notes = next(r for r in timings if r.width == NOTES_WIDTH)
    largest = timings[-1]
    params = [r.params for r in timings]
    slope_num = _slope(params, [r.numerical_s for r in timings])
    slope_bp = _slope(params, [r.backprop_s for r in timings])
    figures = {
        "notes_params": float(notes.params),
        "notes_rel_error": notes.rel_error,
        "notes_speedup": notes.speedup,
        "notes_numerical_s": notes.numerical_s,
        "notes_backprop_s": notes.backprop_s,
        "max_rel_error": max(r.rel_error for r in timings),
        "largest_params": float(largest.params),
        "largest_speedup": largest.speedup,
        "largest_numerical_s": largest.numerical_s,
        "largest_numerical_mults": 2.0 * largest.params * largest.weights,
        "smallest_pass_us": timings[0].numerical_s / (2 * timings[0].params) * 1e6,
        "largest_pass_us": largest.numerical_s / (2 * largest.params) * 1e6,
        "slope_numerical": slope_num,
        "slope_backprop": slope_bp,
        "epochs": float(epochs),
        "loss_first": curve_bp[0],
        "loss_last_backprop": curve_bp[-1],
        "loss_last_numerical": curve_num[-1],
        "loss_curve_max_rel_gap": curve_gap,
        "weights_max_abs_gap": weight_gap,
        "epoch_s_backprop": epoch_bp,
        "epoch_s_numerical": epoch_num,
    }
    return LessonResult(
        _text(timings, figures, curve_bp, curve_num), _plot(timings, curve_bp, curve_num), figures
    )


def _text(
    timings: list[_Timing], fig: dict[str, float], curve_bp: list[float], curve_num: list[float]
) -> str:
    sweep = format_table(
        [
            "hidden width",
            "params",
            "numerical",
            "backprop",
            "speed-up",
            "rel. error",
            "mults numerical",
            "mults backprop",
        ],
        [
            [
                f"5 x {r.width}",
                f"{r.params:,}",
                f"{r.numerical_s:.3f} s",
                f"{r.backprop_s * 1e6:.0f} us",
                f"{r.speedup:,.0f}x",
                f"{r.rel_error:.1e}",
                f"{2.0 * r.params * r.weights:.1e}",
                f"{3.0 * r.weights:.1e}",
            ]
            for r in timings
        ],
    )
    n = len(curve_bp)
    shown = sorted({0, 1, n // 4, n // 2, n - 1})
    training = format_table(
        ["epoch", "loss (numerical)", "loss (backprop)"],
        [[str(e), f"{curve_num[e]:.6e}", f"{curve_bp[e]:.6e}"] for e in shown],
    )
    return "\n".join(
        [
            "One gradient of 1/2 * mean squared error on one random sample, sigmoid DNN with 5 "
            "hidden layers",
            f"(numerical: central differences, h = {H:g}; backprop: best of several runs; times: "
            "CPU seconds of this process; mults:",
            "multiplications per gradient, 2P forward passes of W each",
            "for the numerical gradient, one forward and one backward pass, 3W, for backprop, "
            "W = number of weights)",
            "",
            sweep,
            "",
            f"The notes' network ({fig['notes_params']:,.0f} parameters): back-propagation is "
            f"{fig['notes_speedup']:,.0f} times faster, max relative error "
            f"{fig['notes_rel_error']:.1e}.",
            "Multiplications grow as P^2 for the numerical gradient (2P forward passes of ~P "
            "each) and as P for back-propagation;",
            f"the measured time grows as P^{fig['slope_numerical']:.2f} and "
            f"P^{fig['slope_backprop']:.2f}: one loss evaluation (a forward pass) costs "
            f"{fig['smallest_pass_us']:.0f} us at P = {timings[0].params:,} and "
            f"{fig['largest_pass_us']:.0f} us at P = {timings[-1].params:,},",
            "mostly a fixed cost per call at these sizes, so the numerical gradient's time follows "
            "its 2P passes.",
            "",
            f"{n} epochs of gradient descent (lr {LR:g}) on the notes' network from the same "
            "initial weights:",
            training,
            f"largest relative gap between the curves {fig['loss_curve_max_rel_gap']:.1e}, "
            f"between the final weights {fig['weights_max_abs_gap']:.1e}",
            f"CPU seconds per epoch: numerical {fig['epoch_s_numerical']:.3f}, backprop "
            f"{fig['epoch_s_backprop']:.6f}",
        ]
    )


def _plot(timings: list[_Timing], curve_bp: list[float], curve_num: list[float]) -> bytes:
    return figure_png(_figure(timings, curve_bp, curve_num))


def _figure(timings: list[_Timing], curve_bp: list[float], curve_num: list[float]) -> Figure:
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    fig = new_figure(15, 4.2)
    ax_work, ax_time, ax_loss = fig.subplots(1, 3)
    p = np.array([r.params for r in timings], dtype=float)
    weights = np.array([r.weights for r in timings], dtype=float)
    ax_work.loglog(p, 2 * p * weights, "o-", color="C3", label="numerical: 2P passes")
    ax_work.loglog(p, 3 * weights, "s-", color="C0", label="back-propagation: 1 + 1 pass")
    ax_work.set_ylabel("multiplications per gradient")
    ax_work.set_title("Work: ∝ P² against ∝ P")

    num = np.array([r.numerical_s for r in timings])
    bp = np.array([r.backprop_s for r in timings])
    ax_time.loglog(p, num, "o-", color="C3", label="numerical gradient")
    ax_time.loglog(p, bp, "s-", color="C0", label="back-propagation")
    # Reference slopes through the largest network's point.
    ax_time.loglog(p, num[-1] * (p / p[-1]) ** 2, ":", color="C3", alpha=0.6, label="slope ∝ P²")
    ax_time.loglog(p, num[-1] * (p / p[-1]), "--", color="C3", alpha=0.4, label="slope ∝ P")
    ax_time.loglog(p, bp[-1] * (p / p[-1]), "--", color="C0", alpha=0.4)  # the same slope
    ax_time.set_ylabel("CPU seconds per gradient")
    ax_time.set_title("Measured CPU time (one sample)")
    for ax in (ax_work, ax_time):
        ax.set_xlabel("parameters P")
        # one label per measured size: log-scale minor labels ran into each other
        ax.set_xticks(p, [f"{v:,.0f}" for v in p])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        # below the panel: inside, "best" still lands on the reference slopes or the points
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)

    epochs = np.arange(len(curve_bp))
    ax_loss.semilogy(epochs, curve_num, "o", color="C3", ms=4, alpha=0.5, label="numerical")
    ax_loss.semilogy(epochs, curve_bp, "-", color="C0", label="back-propagation")
    ax_loss.set_xlabel("epoch")
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax_loss.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax_loss.set_ylabel("loss (1/2 MSE)")
    ax_loss.set_title("Gradient descent on one sample, the notes' DNN")
    ax_loss.grid(alpha=0.3, which="both")
    ax_loss.legend()
    return fig


LESSON = Lesson(
    name="numerical-vs-backprop",
    title="numerical gradient vs back-propagation: same gradient, P times less work",
    notes=("000", "001", "003"),
    run=run,
)
