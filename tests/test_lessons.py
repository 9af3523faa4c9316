"""The lessons (``chainrule lesson NAME``): each one's quick form reaches the note's conclusion."""

from __future__ import annotations

import importlib
import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from chainrule.cli import main
from chainrule.lessons import LESSONS, Lesson, LessonResult
from chainrule.plots import figure_png

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def quick(name: str, capsys: pytest.CaptureFixture[str]) -> dict[str, float]:
    """Run a lesson's quick form, check what every lesson returns and how its plot is laid out,
    give back its figures."""
    module = importlib.import_module(LESSONS[name].run.__module__)
    drawn: list[Figure] = []

    def keep(fig: Figure, *args: Any, **kwargs: Any) -> bytes:
        drawn.append(fig)
        return figure_png(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "figure_png", keep)
        result = LESSONS[name].run(quick=True, seed=0)
    assert isinstance(result, LessonResult)
    assert result.png.startswith(PNG_SIGNATURE)
    assert result.text.strip()
    assert capsys.readouterr().out == ""  # the library never prints
    assert len(drawn) == 1
    check_layout(drawn[0])
    return result.figures


def check_layout(fig: Figure) -> None:
    """What a reader trips over: repeated legend entries, x tick labels running into each other,
    a legend drawn over a curve or its points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    boxes = [legend.get_window_extent(renderer) for legend in legends]
    for legend in legends:
        labels = [t.get_text() for t in legend.get_texts()]
        assert len(labels) == len(set(labels)), labels
    for ax in fig.axes:
        ticks = sorted(
            (t.get_window_extent(renderer) for t in ax.get_xticklabels(which="both")
             if t.get_visible() and t.get_text()),
            key=lambda box: box.x0,
        )  # fmt: skip
        for left, right in itertools.pairwise(ticks):
            assert left.x1 <= right.x0, f"x tick labels overlap on {ax.get_title()!r}"
        for line in ax.get_lines():
            points = line.get_transform().transform(line.get_xydata())
            points = points[np.isfinite(points).all(axis=1)]
            if line.get_linestyle() not in ("None", "", " ") and len(points) > 1:
                # the segments too, 20 points each: a line can cross a legend between its vertices
                steps = np.linspace(0, 1, 20)[:, None, None]
                points = (points[:-1] + steps * (points[1:] - points[:-1])).reshape(-1, 2)
            for box in boxes:
                inside = (
                    (points[:, 0] > box.x0) & (points[:, 0] < box.x1)
                    & (points[:, 1] > box.y0) & (points[:, 1] < box.y1)
                )  # fmt: skip
                assert not inside.any(), (
                    f"the legend covers {line.get_label()!r} on {ax.get_title()!r}"
                )


def test_lessons_are_listed_in_course_order():
    assert list(LESSONS) == [
        "numerical-vs-backprop",
        "learning-rate",
        "depth",
        "overfitting",
        "note-002",
        "batch-size",
        "convolution",
    ]
    for name, lesson in LESSONS.items():
        assert isinstance(lesson, Lesson)
        assert lesson.name == name
        assert lesson.title
        assert lesson.notes


def test_numerical_vs_backprop(capsys):
    fig = quick("numerical-vs-backprop", capsys)
    assert fig["notes_params"] == 4642  # DNN(5, 32, 10, 2)
    assert fig["max_rel_error"] < 1e-6  # the same gradient ...
    assert fig["notes_speedup"] > 100  # ... far faster
    assert fig["loss_curve_max_rel_gap"] < 1e-6  # the same training run
    assert fig["loss_last_backprop"] < fig["loss_first"]


def test_learning_rate(capsys):
    fig = quick("learning-rate", capsys)
    assert fig["lr_0.1_distance"] < 1e-8  # converges
    assert fig["lr_10_distance"] > 1e6 * fig["start_distance"]  # diverges
    assert fig["lr_10_exact_distance"] > 1e100
    # chainrule's numerical gradient does not freeze where x + h rounds to x: it diverges as the
    # exact gradient does (within the coarse step of one float spacing at 1e13 and beyond).
    assert fig["lr_10_chainrule_distance"] == pytest.approx(fig["lr_10_exact_distance"], rel=0.5)
    assert fig["lr_1e-10_distance"] == pytest.approx(fig["start_distance"], abs=1e-6)  # stuck
    # The note's printed end points are reproduced to the digits shown.
    assert fig["lr_10_distance"] == pytest.approx(2.59307440e13, rel=1e-8)


def test_depth(capsys):
    fig = quick("depth", capsys)
    assert fig["relu_depth8_accuracy"] > fig["sigmoid_depth8_accuracy"] + 0.2
    # The vanishing gradient: deeper sigmoid networks pass less gradient to layer 1.
    sigmoid = [fig[f"sigmoid_depth{d}_first_grad"] for d in (1, 4, 8)]
    assert sigmoid == sorted(sigmoid, reverse=True)
    assert fig["sigmoid_depth8_first_grad"] < fig["relu_depth8_first_grad"] / 100


def test_overfitting(capsys):
    fig = quick("overfitting", capsys)
    assert fig["none_train_accuracy"] > fig["none_test_accuracy"] + 0.05
    assert fig["both_accuracy_gap"] < fig["none_accuracy_gap"]
    for setting in ("weight_decay", "dropout", "both"):
        assert fig[f"{setting}_loss_gap"] < fig["none_loss_gap"]


def test_note_002(capsys):
    fig = quick("note-002", capsys)
    assert fig["corrected_accuracy"] >= fig["w3_first_accuracy"]
    assert fig["corrected_accuracy"] > 0.7
    for key in ("corrected", "w3_first", "as_written", "note_delta"):
        assert fig[f"{key}_matched"] + fig[f"{key}_not_matched"] == fig["test_images"]
    assert fig["w3_first_saturated"] > fig["corrected_saturated"]


def test_batch_size(capsys):
    fig = quick("batch-size", capsys)
    per_epoch = {b: fig[f"batch{b}_seconds_per_epoch"] for b in (1, 10, 100, 1000)}
    # Generous margins: the middle sizes' times depend on how BLAS threads share the machine.
    assert per_epoch[10] < per_epoch[1] / 2
    assert per_epoch[1000] < per_epoch[1] / 5
    assert per_epoch[1000] < max(per_epoch[10], per_epoch[100])
    assert fig["cross_entropy_accuracy"] > fig["mse_accuracy"]


def test_convolution(capsys):
    fig = quick("convolution", capsys)
    assert fig["mlp_params"] > 10 * fig["cnn_params"]  # ten times the weights ...
    for model in ("mlp", "cnn"):
        accuracy = [fig[f"{model}_shift{k}_accuracy"] for k in range(5)]
        assert accuracy[0] > 0.8
        assert accuracy == sorted(accuracy, reverse=True)  # every pixel of shift costs
    # ... and less robust: 3 pixels cost the MLP more of what it knew than the CNN.
    kept = {m: fig[f"{m}_shift3_accuracy"] / fig[f"{m}_shift0_accuracy"] for m in ("mlp", "cnn")}
    assert kept["cnn"] > kept["mlp"] + 0.05
    assert fig["cnn_shift3_accuracy"] > fig["mlp_shift3_accuracy"] + 0.05
    assert fig["conv1_change"] > 0.01  # the first-layer filters learned something
    # Conv2D's backward pass is the Affine layer's on im2col's matrix, to float64 rounding.
    for layer in ("conv1", "conv2"):
        for grad in ("dW", "db", "dx"):
            assert fig[f"{layer}_{grad}_rel_error"] < 1e-13


def test_im2col_is_the_convolution_and_col2im_its_transpose():
    from chainrule.conv import Conv2D
    from chainrule.lessons.convolution import col2im, im2col

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 7, 6))
    conv = Conv2D(3, 4, 3, stride=2, padding=1, rng=1, dtype=np.float64)
    conv.params["b"][...] = rng.normal(size=4)
    y = conv.forward(x)
    cols, (oh, ow) = im2col(x, 3, stride=2, padding=1)
    w = conv.params["W"].reshape(4, -1)
    expected = (cols @ w.T + conv.params["b"]).reshape(2, oh, ow, 4).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    # <im2col(x), c> == <x, col2im(c)> for any c: col2im is the transpose (adjoint) of im2col.
    c = rng.normal(size=cols.shape)
    back = col2im(c, x.shape, 3, stride=2, padding=1)
    assert back.shape == x.shape
    assert np.sum(cols * c) == pytest.approx(np.sum(x * back), rel=1e-12)


def test_cli_lesson_writes_png(tmp_path, capsys):
    assert main(["lesson", "learning-rate", "--quick", "--out", str(tmp_path)]) == 0
    png = tmp_path / "learning-rate.png"
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    out = capsys.readouterr().out
    assert "lesson learning-rate" in out
    assert "learning rate" in out
    assert str(png) in out


def test_bad_seed_is_refused():
    with pytest.raises(ValueError, match="seed"):
        LESSONS["learning-rate"].run(seed=-1)


def test_numerical_vs_backprop_figure_has_distinct_legends_and_readable_ticks():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from chainrule.lessons import numerical_vs_backprop as lesson

    timings = [
        lesson._Timing(width=w, params=p, weights=p // 2, numerical_s=p * 1e-4, backprop_s=1e-4,
                       rel_error=1e-9)
        for w, p in [(8, 394), (16, 1298), (32, 4642)]
    ]  # fmt: skip
    fig = lesson._figure(timings, [0.35, 0.32], [0.35, 0.32])
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(labels) == len(set(labels)), labels
        ticks = sorted(
            (t.get_window_extent(renderer) for t in ax.get_xticklabels(which="both")
             if t.get_visible() and t.get_text()),
            key=lambda box: box.x0,
        )  # fmt: skip
        assert ticks, "no x tick labels"
        for left, right in itertools.pairwise(ticks):
            assert left.x1 <= right.x0, f"x tick labels overlap on {ax.get_title()!r}"


def test_korean_pages_say_gyuje_for_regularisation():
    """'정규화' is normalisation (배치 정규화); regularisation is '규제', on every page alike."""
    pages = sorted((Path(__file__).resolve().parents[1] / "docs" / "lessons").glob("*.ko.md"))
    assert pages
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert text.count("정규화") == text.count("배치 정규화"), page.name
