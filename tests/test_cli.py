"""The command line end to end: train on a slice of MNIST, evaluate, predict, and its errors."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest

import chainrule as cr
from chainrule import cli
from chainrule.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small real training run shared by the tests below (3,000 images, 2 epochs, a model
    of flat vectors: no shifts)."""
    out = tmp_path_factory.mktemp("run")
    args = ["--subset", "3000", "--epochs", "2", "--batch-size", "32", "--hidden", "64", "--quiet"]
    args += ["--augment", "0"]
    code = main(["train", *args, "--out", str(out)])
    assert code == 0
    return out


def test_train_writes_every_output(trained):
    for name in ("curves.png", "confusion.png", "misclassified.png"):
        assert (trained / name).read_bytes().startswith(PNG), name
    history = json.loads((trained / "history.json").read_text())
    assert history["epoch"] == [1, 2]  # counted from 1, as the log and the plots count
    assert len(history["val_accuracy"]) == 2
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["matched"] + summary["not_matched"] == 10_000
    assert len(summary["not_matched_indices"]) == summary["not_matched"]
    # 3,000 images and 2 epochs: a working trainer gets ~90%; a broken gradient gets ~10%.
    assert summary["test_accuracy"] > 0.85
    assert set(summary["per_class_accuracy"]) == {str(k) for k in range(10)}
    assert "test accuracy" in (trained / "summary.txt").read_text()


def test_saved_model_predicts_like_the_summary(trained):
    model = cr.load(trained / "model.npz")
    _, (x_test, y_test) = cr.datasets.load_mnist(normalize=False)  # the model scales pixels
    accuracy = float(np.mean(model.predict(x_test) == y_test))
    summary = json.loads((trained / "summary.json").read_text())
    assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-12)


def test_evaluate_command(trained, capsys):
    assert main(["evaluate", str(trained / "model.npz")]) == 0
    out = capsys.readouterr().out
    summary = json.loads((trained / "summary.json").read_text())
    assert f"{summary['test_accuracy']:.2%}" in out


def test_resume_continues_the_saved_run(trained, tmp_path):
    run = tmp_path / "resumed"
    run.mkdir()
    (run / "model.npz").write_bytes((trained / "model.npz").read_bytes())
    args = ["train", "--subset", "3000", "--batch-size", "32", "--quiet", "--no-plots"]
    assert main([*args, "--epochs", "3", "--resume", "--out", str(run)]) == 0
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3]
    summary = json.loads((run / "summary.json").read_text())
    # All three epochs, not only the resumed one (train_seconds is rounded to 0.01 s).
    assert summary["train_seconds"] >= sum(history["seconds"]) - 0.006


def test_resume_refuses_options_that_would_change_the_saved_run(trained, tmp_path, capsys):
    before = (trained / "model.npz").read_bytes()
    argv = ["train", "--epochs", "3", "--resume", "--out", str(trained), "--hidden", "10"]
    assert main([*argv, "--lr", "5", "--batch-norm"]) == 2
    err = capsys.readouterr().err
    want = "--resume continues the saved model and optimizer: --hidden, --lr, --batch-norm cannot"
    assert want in err
    assert (trained / "model.npz").read_bytes() == before
    # Nothing to resume: no directory is created for it.
    assert main(["train", "--resume", "--out", str(tmp_path / "absent")]) == 2
    assert "no saved run" in capsys.readouterr().err
    assert not (tmp_path / "absent").exists()


def test_predict_an_image_file(trained, tmp_path, capsys):
    from PIL import Image

    _, (x_test, y_test) = cr.datasets.load_mnist(normalize=False)
    model = cr.load(trained / "model.npz")
    # Pick a test digit the model gets right, draw it dark on light at 4x size, and ask again.
    index = int(np.flatnonzero(model.predict(x_test[:50]) == y_test[:50])[0])
    digit = 255 - x_test[index].reshape(28, 28)
    path = tmp_path / "digit.png"
    Image.fromarray(digit).resize((112, 112)).save(path)
    assert main(["predict", str(trained / "model.npz"), str(path)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path}: {y_test[index]} ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "-1"], "positive integer"),
        (["train", "--lr", "abc"], "expected a number"),
        (["train", "--hidden", "10,x"], "layer widths"),
        (["train", "--hidden", "256,,128"], "layer widths"),
        (["train", "--hidden", ""], "layer widths"),
        (["evaluate", "no-such-model.npz"], "not found"),
        (["predict", "no-such-model.npz", "x.png"], "not found"),
        (["train", "--data-dir", "no-such-dir"], "not a directory"),
        (["train", "--dropout", "1.5"], "--dropout"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit directly, also with 2
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("chainrule")  # usage line(s), then one error line


def test_unwritable_out_leaves_existing_outputs(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    code = main(["train", "--epochs", "1", "--subset", "100", "--out", str(blocker / "sub")])
    assert code == 2
    assert "cannot write to --out" in capsys.readouterr().err
    assert blocker.read_text() == "keep me"


def test_module_entry_point_and_help():
    result = subprocess.run(
        [sys.executable, "-m", "chainrule", "train", "--help"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0
    assert "--hidden" in result.stdout
    assert "--data-dir" in result.stdout


def test_gradcheck_command(capsys):
    assert main(["gradcheck", "--depth", "2", "--width", "8"]) == 0
    assert "passed" in capsys.readouterr().out


# -- what a run leaves in --out -----------------------------------------------------------------
def copy_run(trained, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for path in trained.iterdir():
        (run / path.name).write_bytes(path.read_bytes())
    return run, {p.name: p.read_bytes() for p in run.iterdir()}


def contents(run):
    return {p.name: p.read_bytes() if p.is_file() else "a directory" for p in run.iterdir()}


SMALL = ["--subset", "300", "--epochs", "1", "--hidden", "16", "--quiet"]


def test_an_interrupted_run_leaves_the_previous_outputs(trained, tmp_path, monkeypatch):
    run, before = copy_run(trained, tmp_path)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("chainrule.plots.digits_png", interrupt)  # the last output made
    assert main(["train", *SMALL, "--out", str(run)]) == 130
    after = contents(run)
    assert after.pop("checkpoint.npz")  # the trained epoch, kept beside them
    assert after == before  # byte for byte, and no staging directory left behind
    # --resume finds every epoch done and only writes the outputs.
    monkeypatch.undo()
    assert main(["train", "--resume", "--epochs", "1", "--quiet", "--out", str(run)]) == 0
    assert sorted(contents(run)) == sorted(before)


def test_a_plot_that_fails_still_leaves_the_trained_model(trained, tmp_path, monkeypatch, capsys):
    run, before = copy_run(trained, tmp_path)

    def fail(*args, **kwargs):
        raise ValueError("no room for the gallery")

    monkeypatch.setattr("chainrule.plots.digits_png", fail)
    assert main(["train", *SMALL, "--out", str(run)]) == 1
    assert "the plots could not be drawn: no room for the gallery" in capsys.readouterr().err
    after = contents(run)
    assert sorted(after) == sorted(cli.OUTPUTS)  # no plot of the previous run is left beside it
    assert all(after[name] != before[name] for name in ("model.npz", "summary.json"))


def test_an_output_name_taken_by_a_directory_is_refused_before_training(trained, tmp_path, capsys):
    run, before = copy_run(trained, tmp_path)
    (run / "curves.png").unlink()
    (run / "curves.png").mkdir()
    before["curves.png"] = "a directory"
    assert main(["train", *SMALL, "--no-plots", "--out", str(run)]) == 2
    assert "curves.png: it exists and is not a file" in capsys.readouterr().err
    assert contents(run) == before


def test_no_plots_removes_the_previous_runs_plots(trained, tmp_path):
    run, _ = copy_run(trained, tmp_path)
    assert main(["train", *SMALL, "--no-plots", "--out", str(run)]) == 0
    assert sorted(p.name for p in run.iterdir()) == sorted(cli.OUTPUTS)


def test_the_class_count_comes_from_all_the_labels(tmp_path):
    # The first 4 training images hold the labels 5, 0, 4, 1: the model still gets 10 outputs.
    argv = ["train", "--subset", "4", "--epochs", "1", "--validation-split", "0", "--quiet"]
    assert main([*argv, "--hidden", "none", "--augment", "0", "--out", str(tmp_path)]) == 0
    model = cr.load(tmp_path / "model.npz")
    assert repr(model) == "MLP(Rescaling(scale=0.00392157), Dense(784 -> 10))"  # softmax regression
    assert main(["evaluate", str(tmp_path / "model.npz")]) == 0


def test_images_that_are_not_square(tmp_path):
    (x_train, y_train), (x_test, y_test) = cr.datasets.load_mnist(normalize=False, flatten=False)
    data = tmp_path / "data"
    data.mkdir()
    arrays = (x_train[:300, 0, :, 7:21], y_train[:300], x_test[:100, 0, :, 7:21], y_test[:100])
    for name, array in zip(cr.datasets.IDX_FILES, arrays, strict=True):
        cr.datasets.write_idx(data / name, np.ascontiguousarray(array).astype(np.uint8))
    out = tmp_path / "out"
    argv = ["train", *SMALL, "--data-dir", str(data), "--out", str(out)]
    assert main(argv) == 0
    assert (out / "misclassified.png").read_bytes().startswith(PNG)
    assert cr.load(out / "model.npz").input_shape == (None, None, None)  # images, shifted
    assert main([*argv, "--augment", "0"]) == 0
    assert cr.load(out / "model.npz").input_shape == (28 * 14,)


def test_an_error_during_training_starts_a_line_of_its_own(tmp_path, monkeypatch, capsys):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    argv = ["train", "--subset", "3000", "--epochs", "2", "--lr", "50", "--optimizer", "sgd"]
    assert main([*argv, "--validation-split", "0", "--out", str(tmp_path)]) == 1
    err = terminal.getvalue()
    assert "batch/s" in err  # the bar was drawn ...
    assert re.search(
        r"\r\s*\rchainrule: error: training diverged at epoch 1", err
    )  # ... and cleared


@pytest.mark.parametrize("loss", sorted(cr.losses.LOSSES))
def test_gradcheck_command_for_every_loss(loss, capsys):
    assert main(["gradcheck", "--depth", "2", "--width", "6", "--loss", loss]) == 0
    out = capsys.readouterr().out
    assert "passed" in out
    assert "times as long" in out


def test_the_misclassified_gallery_has_its_title_just_above_the_first_row():
    from chainrule.plots import digits_figure

    images = np.random.default_rng(0).integers(0, 255, size=(100, 28, 28))
    fig = digits_figure(images, [f"#{i}: 4→9" for i in range(100)], "Not matched: 100 of 10000")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)  # constrained layout places everything on draw
    title_bottom = fig._suptitle.get_window_extent(renderer).y0
    first_row_top = max(ax.title.get_window_extent(renderer).y1 for ax in fig.axes[:10])
    assert 0 <= title_bottom - first_row_top < 0.25 * fig.dpi  # under a quarter inch


def test_the_curves_of_a_short_run_tick_whole_epochs_only():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from chainrule.history import History
    from chainrule.plots import history_figure

    history = History()
    for epoch, (loss, acc) in enumerate([(1.6, 0.50), (0.9, 0.72)]):
        history.append(epoch=epoch, loss=loss, accuracy=acc, val_loss=loss / 2, val_accuracy=acc)
    fig = history_figure(history, "chainrule train")
    fig.draw(FigureCanvasAgg(fig).get_renderer())
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        assert labels, ax.get_ylabel()
        assert all(label.lstrip("−-").isdigit() for label in labels), labels  # no "1.2", "1.4"


def test_a_reader_that_goes_away_ends_the_command_quietly(monkeypatch, capsys):
    """``chainrule gradcheck | head -1``: the pipe closes under the command, which then stops
    with the shell's SIGPIPE code and no error message."""

    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["gradcheck", "--depth", "1", "--width", "3"]) == 141
    assert capsys.readouterr().err == ""
