"""Lesson ``learning-rate`` (note 003).

Note 003 runs 100 steps of gradient descent on ``f(x) = x0**2 + x1**2`` from ``(-3, 4)`` with
the numerical gradient, at learning rates 0.1, 10 and 1e-10: the first reaches the minimum, the
second blows up, the third does not move. Every step multiplies ``x`` by ``1 - 2 * lr``
(0.8, -19 and almost 1), which this lesson prints next to the measured end points.

At learning rate 10 the note's numerical gradient itself gives out: once ``|x|`` is near 1e13,
``x + h`` rounds to ``x`` (float64 numbers there are 0.004 apart, ``h`` is 1e-4), ``f(x + h)``
and ``f(x - h)`` are the same number, the difference quotient is 0, and ``x`` freezes there.
That is why the note's result is about 2.6e13 and not the 1e128 that the exact gradient ``2x``
reaches. :func:`chainrule.numerical_gradient` divides by the step actually stored and, where
``h`` cannot move ``x`` at all, steps to the next representable number: it keeps diverging like
the exact gradient. The lesson runs the note's formula to reproduce its figures, and both.
"""

from __future__ import annotations

import numpy as np

from ..numerical import gradient_descent
from ._base import DataDir, Lesson, LessonResult
from ._common import check_seed, figure_png, format_table, new_figure

__all__ = ["LESSON", "run"]

START = (-3.0, 4.0)
RATES = (0.1, 10.0, 1e-10)
STEPS = 100


def f(x: np.ndarray) -> float:
    """The note's ``function_2``: ``x0**2 + x1**2``."""
    return float(x[0] ** 2 + x[1] ** 2)


def _exact_gradient(x: np.ndarray) -> np.ndarray:
    return 2.0 * x


def _note_numerical_gradient(x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Note 003's ``numerical_gradient`` as written: ``(f(x + h) - f(x - h)) / 2h`` per element,
    dividing by ``2h`` even where ``x + h`` rounds to ``x``."""
    grad = np.zeros_like(x)
    for i in range(x.size):
        original = x[i]
        x[i] = original + h
        plus = f(x)
        x[i] = original - h
        grad[i] = (plus - f(x)) / (2 * h)
        x[i] = original
    return grad


def _frozen_at(path: np.ndarray) -> int:
    """First step after which ``x`` no longer changes by more than 1e-6 of itself (or -1)."""
    norms = np.linalg.norm(path, axis=1)
    moves = np.linalg.norm(np.diff(path, axis=0), axis=1)
    frozen = np.flatnonzero(moves <= 1e-6 * norms[:-1])
    return int(frozen[0]) if frozen.size else -1


def run(*, quick: bool = False, seed: int = 0, data_dir: DataDir = None) -> LessonResult:
    """Run the note's three learning rates (and lr 10 with chainrule's numerical gradient and
    with the exact gradient).

    Parameters
    ----------
    quick : bool
        No effect: the full lesson takes a fraction of a second.
    seed : int
        No effect (nothing is random); checked for consistency with the other lessons.
    data_dir : ignored
    """
    check_seed(seed)
    start = np.array(START)
    paths = {
        lr: gradient_descent(f, start, lr=lr, step_num=STEPS, grad=_note_numerical_gradient)[1]
        for lr in RATES
    }
    careful = gradient_descent(f, start, lr=10.0, step_num=STEPS)[1]  # cr.numerical_gradient
    exact = gradient_descent(f, start, lr=10.0, step_num=STEPS, grad=_exact_gradient)[1]

    figures: dict[str, float] = {"start_distance": float(np.linalg.norm(start))}
    rows = []
    for lr, path in paths.items():
        end = path[-1]
        distance = float(np.linalg.norm(end))
        figures[f"lr_{lr:g}_distance"] = distance
        figures[f"lr_{lr:g}_f"] = f(end)
        rows.append(
            [
                f"{lr:g}",
                f"{1 - 2 * lr:.10g}",
                f"[{end[0]:.8e}, {end[1]:.8e}]",
                f"{distance:.3e}",
                f"{f(end):.3e}",
            ]
        )
    figures["lr_1e-10_moved"] = float(np.linalg.norm(paths[1e-10][-1] - start))
    figures["lr_10_frozen_at_step"] = float(_frozen_at(paths[10.0]))
    for label, key, path in [
        ("10 (chainrule's)", "lr_10_chainrule_distance", careful),
        ("10 (exact 2x)", "lr_10_exact_distance", exact),
    ]:
        end = path[-1]
        figures[key] = float(np.linalg.norm(end))
        rows.append(
            [label, "-19", f"[{end[0]:.8e}, {end[1]:.8e}]", f"{figures[key]:.3e}", f"{f(end):.3e}"]
        )
    table = format_table(
        ["learning rate", "factor/step", f"x after {STEPS} steps", "|x|", "f(x)"], rows
    )
    text = "\n".join(
        [
            f"Gradient descent on f(x) = x0^2 + x1^2 from {START}, {STEPS} steps, numerical "
            "gradient (central difference, h = 1e-4) as in note 003; then lr 10 with "
            "chainrule.numerical_gradient and with the exact gradient",
            "",
            table,
            "",
            f"lr 0.1 shrinks x by 0.8 per step: 5 * 0.8^{STEPS} = {5 * 0.8**STEPS:.2e}.",
            "lr 10 multiplies x by -19 per step; with the note's numerical gradient it freezes "
            f"after step {figures['lr_10_frozen_at_step']:.0f}, at |x| = "
            f"{figures['lr_10_distance']:.2e}, where x + h rounds to x;",
            "chainrule.numerical_gradient (the step actually stored, at least one float "
            f"spacing) reaches {figures['lr_10_chainrule_distance']:.2e}, the exact gradient "
            f"5 * 19^{STEPS} = {5 * 19.0**STEPS:.2e}.",
            f"lr 1e-10 moves x by {figures['lr_1e-10_moved']:.1e} in {STEPS} steps (out of a "
            "distance of 5): training that never gets anywhere.",
        ]
    )
    return LessonResult(text, _plot(paths, exact), figures)


def _plot(paths: dict[float, np.ndarray], exact: np.ndarray) -> bytes:
    fig = new_figure(11, 4.6)
    ax_path, ax_norm = fig.subplots(1, 2)
    grid = np.linspace(-5, 5, 201)
    x0, x1 = np.meshgrid(grid, grid)
    ax_path.contour(x0, x1, x0**2 + x1**2, levels=[r * r for r in range(1, 8)], cmap="Greys")
    ax_path.plot(*paths[0.1].T, "o-", ms=3, color="C0", label="lr 0.1")
    ax_path.plot(*paths[1e-10][[0, -1]].T, "s", ms=8, color="C2", label="lr 1e-10 (does not move)")
    first = paths[10.0][1]
    ax_path.annotate(
        f"lr 10: step 1 lands at ({first[0]:.0f}, {first[1]:.0f})",
        xy=(3.0, -4.0),
        xytext=(-4.6, -2.6),
        color="C3",
        arrowprops={"arrowstyle": "->", "color": "C3"},
    )
    ax_path.plot([-3, 57], [4, -76], "--", color="C3", lw=1)
    ax_path.set_xlim(-5, 5)
    ax_path.set_ylim(-5, 5)
    ax_path.set_aspect("equal")
    ax_path.plot(0, 0, "k+", ms=10)
    ax_path.set_xlabel("x0")
    ax_path.set_ylabel("x1")
    ax_path.set_title("Paths on the contours of x0² + x1²")
    ax_path.legend(loc="upper right", fontsize=8)

    steps = np.arange(len(exact))
    styles = {0.1: ("C0", "lr 0.1"), 10.0: ("C3", "lr 10, numerical"), 1e-10: ("C2", "lr 1e-10")}
    for lr, path in paths.items():
        color, label = styles[lr]
        ax_norm.semilogy(steps, np.linalg.norm(path, axis=1), "-", color=color, label=label)
    ax_norm.semilogy(
        steps, np.linalg.norm(exact, axis=1), "--", color="C3", alpha=0.6, label="lr 10, exact 2x"
    )
    ax_norm.set_xlabel("step")
    ax_norm.set_ylabel("|x| (distance to the minimum)")
    ax_norm.set_title("Distance to the minimum")
    ax_norm.grid(alpha=0.3, which="both")
    ax_norm.legend(fontsize=8)
    return figure_png(fig)


LESSON = Lesson(
    name="learning-rate",
    title="gradient descent on x0^2 + x1^2 at learning rates 0.1, 10 and 1e-10",
    notes=("003",),
    run=run,
)
