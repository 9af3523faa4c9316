"""The command line as a user meets it: checkpoints and resuming, the data a resumed run keeps,
one line per image, messages for path mistakes, and bugs told apart from bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import chainrule as cr
from chainrule import cli
from chainrule.cli import main

SMALL = ["--subset", "300", "--hidden", "16", "--batch-size", "32", "--no-plots"]


def run_train(*argv: str) -> int:
    return main(["train", *SMALL, *argv])


@pytest.fixture
def interrupt_in_epoch(monkeypatch):
    """Ctrl-C during the validation of epoch ``n`` (1-based), after the earlier epochs ended."""

    def arm(n: int) -> None:
        real, calls = cr.train.evaluate, []

        def evaluate(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr("chainrule.train.evaluate", evaluate)

    return arm


def params(path):
    model = cr.load(path)
    return {k: v.copy() for k, v in model.params.items()}


# -- checkpoints -------------------------------------------------------------------------------
def test_an_interrupted_run_keeps_its_finished_epochs_and_resumes_from_them(
    tmp_path, interrupt_in_epoch, capsys, monkeypatch
):
    whole = tmp_path / "whole"
    assert run_train("--epochs", "3", "--quiet", "--out", str(whole)) == 0
    capsys.readouterr()

    out = tmp_path / "broken"
    interrupt_in_epoch(3)
    assert run_train("--epochs", "3", "--quiet", "--out", str(out)) == 130
    err = capsys.readouterr().err
    assert "chainrule: interrupted" in err
    assert f"kept {out / 'checkpoint.npz'} (epochs 1-2 of 3)" in err
    assert f"'chainrule train --resume --out {out} --epochs 3' continues it" in err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz"]
    assert cr.load_checkpoint(out / "checkpoint.npz").next_epoch == 2

    monkeypatch.undo()
    argv = ["train", "--resume", "--epochs", "3", "--quiet", "--no-plots", "--out", str(out)]
    assert main(argv) == 0
    assert not (out / "checkpoint.npz").exists()  # the run is complete: its outputs replace it
    assert sorted(p.name for p in out.iterdir()) == sorted(cli.OUTPUTS)
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3]
    # Interrupted and resumed, the run ends exactly where the uninterrupted one did.
    expected, got = params(whole / "model.npz"), params(out / "model.npz")
    assert all(np.array_equal(expected[k], got[k]) for k in expected)


def test_batch_norm_puts_a_batchnorm_after_each_hidden_dense(tmp_path):
    assert (
        run_train("--hidden", "16,8", "--batch-norm", "--epochs", "1", "--out", str(tmp_path)) == 0
    )
    kinds = [type(layer).__name__ for layer in cr.load(tmp_path / "model.npz")]
    hidden = ["Dense", "BatchNorm", "ReLU", "Dropout"]
    assert kinds == ["Rescaling", "RandomShift", "Flatten", *hidden, *hidden, "Dense"]


def test_ctrl_c_before_an_epoch_ends_says_nothing_was_kept(tmp_path, interrupt_in_epoch, capsys):
    interrupt_in_epoch(1)
    assert run_train("--epochs", "2", "--quiet", "--out", str(tmp_path)) == 130
    assert "no epoch was complete, so nothing was kept" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_never_replaces_the_last_complete_runs_outputs(
    tmp_path, interrupt_in_epoch, capsys
):
    assert run_train("--epochs", "1", "--quiet", "--out", str(tmp_path)) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    interrupt_in_epoch(2)
    assert run_train("--epochs", "3", "--seed", "1", "--quiet", "--out", str(tmp_path)) == 130
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after.pop("checkpoint.npz")
    assert after == before
    assert "outputs of the last complete run" in capsys.readouterr().err


# -- what --resume keeps -----------------------------------------------------------------------
def test_resume_keeps_the_data_options_of_the_saved_run(tmp_path, capsys):
    assert run_train("--epochs", "1", "--validation-split", "0.2", "--out", str(tmp_path)) == 0
    capsys.readouterr()
    # Resumed without --subset, --validation-split or --batch-size: the saved ones hold.
    assert main(["train", "--resume", "--epochs", "2", "--no-plots", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "240 training images" in out  # 300, 20 % held out; not 48,000
    assert "Adam(lr=0.001, weight_decay=0," in out  # the base rate, rounded
    assert "9.83e-04" not in out.splitlines()[1]
    options = cr.load_checkpoint(tmp_path / "model.npz").metadata["options"]
    assert options["subset"] == 300
    assert options["validation_split"] == 0.2
    assert options["batch_size"] == 32


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--subset", "500"], "it was trained with --subset 300, not 500"),
        (["--validation-split", "0.3"], "--validation-split 0.1, not 0.3"),
        (["--seed", "3"], "--seed 0, not 3"),
        (["--data-dir", "."], "--data-dir (none), not ."),
    ],
)
def test_resume_refuses_a_conflicting_data_option(tmp_path, capsys, option, message):
    assert run_train("--epochs", "1", "--quiet", "--out", str(tmp_path)) == 0
    before = (tmp_path / "model.npz").read_bytes()
    argv = ["train", "--resume", "--epochs", "2", *option, "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("chainrule: error: --resume keeps the saved run's preset, data")
    assert (tmp_path / "model.npz").read_bytes() == before


def test_resume_accepts_the_same_data_option_again(tmp_path):
    assert run_train("--epochs", "1", "--quiet", "--out", str(tmp_path)) == 0
    again = ["--subset", "300", "--batch-size", "32", "--validation-split", "0.1", "--seed", "0"]
    argv = ["train", *again, "--epochs", "2", "--quiet", "--resume", "--out", str(tmp_path)]
    assert main(argv) == 0


# -- the same held-out images as cr.fit --------------------------------------------------------
def test_train_holds_out_the_images_fit_holds_out(tmp_path):
    argv = ["--subset", "500", "--hidden", "16", "--epochs", "1", "--quiet", "--no-plots"]
    assert main(["train", *argv, "--augment", "0", "--out", str(tmp_path)]) == 0
    history = json.loads((tmp_path / "history.json").read_text())

    (x, y), _ = cr.datasets.load_mnist(normalize=False)
    model = cr.MLP(784, [16], 10, dropout=0.2, rescale=1 / 255, rng=0)
    expected = cr.fit(
        model, x[:500], y[:500], loss=cr.SoftmaxCrossEntropy(), optimizer=cr.Adam(1e-3),
        epochs=1, batch_size=128, validation_split=0.1, seed=0,
    )  # fmt: skip
    assert history["val_loss"] == expected.val_loss
    assert history["val_accuracy"] == expected.val_accuracy
    assert history["loss"] == expected.loss


# -- predict -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    assert main(["train", "--subset", "2000", "--epochs", "2", "--quiet", "--no-plots",
                 "--hidden", "64", "--out", str(out)]) == 0  # fmt: skip
    return out / "model.npz"


def test_predict_gives_every_image_its_line_and_names_the_bad_ones(model_file, tmp_path, capsys):
    from PIL import Image

    _, (x_test, _) = cr.datasets.load_mnist(normalize=False)
    good = tmp_path / "seven.png"
    Image.fromarray(x_test[0].reshape(28, 28)).save(good)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(blank)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    missing = tmp_path / "missing.png"
    argv = ["predict", str(model_file), str(blank), str(good), str(missing), str(text), str(good)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2  # both good images, although bad ones came first
    for line in lines:
        assert line.startswith(f"{good}: ")
        top = line.split("(")[1].rstrip(")").split(", ")
        assert len(top) == 3  # the three most probable classes, most probable first
        shares = [float(t.split(": ")[1].rstrip("%")) for t in top]
        assert shares == sorted(shares, reverse=True)
        assert line.split(": ")[1].split()[0] == top[0].split(":")[0]
    err = captured.err.splitlines()
    assert err[0].startswith(f"chainrule: error: {blank}: ")
    assert "blank" in err[0]
    assert err[1] == f"chainrule: error: {missing}: no such file"
    assert err[2].startswith(f"chainrule: error: {text}: ")
    assert err[3] == "chainrule: error: 3 of 5 images not classified"


def test_predict_exits_0_when_every_image_is_classified(model_file, tmp_path, capsys):
    from PIL import Image

    _, (x_test, _) = cr.datasets.load_mnist(normalize=False)
    path = tmp_path / "digit.png"
    Image.fromarray(x_test[1].reshape(28, 28)).save(path)
    assert main(["predict", str(model_file), str(path)]) == 0
    assert capsys.readouterr().err == ""


# -- path mistakes -----------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_run_directory_offers_the_model_inside_it(model_file, command, capsys):
    argv = [command, str(model_file.parent)] + (["x.png"] if command == "predict" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err == f"chainrule: error: {model_file.parent} is a directory; did you mean {model_file}?\n"
    )


def test_out_naming_an_existing_file_says_so(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert run_train("--epochs", "1", "--out", str(notes)) == 2
    err = capsys.readouterr().err
    assert "--out" in err
    assert "is a file; --out names a directory" in err
    assert "File exists" not in err
    assert notes.read_text() == "mine"


def test_a_model_file_that_is_not_one_is_bad_input(tmp_path, capsys):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"not a zip")
    assert main(["evaluate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"chainrule: error: {bad} is not a readable chainrule model file")
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1


# -- bugs are not the user's mistakes ----------------------------------------------------------
@pytest.mark.parametrize("error", [ValueError, TypeError, KeyError, ZeroDivisionError])
def test_a_bug_in_chainrule_keeps_its_traceback_and_says_it_is_a_bug(
    model_file, monkeypatch, capsys, error
):
    def broken(*args, **kwargs):
        raise error("an injected bug")

    monkeypatch.setattr(cli, "_report", broken)
    assert main(["evaluate", str(model_file)]) == cli.BUG_EXIT
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "in broken" in err  # where it happened
    assert "an injected bug" in err
    assert err.splitlines()[-1].startswith("chainrule: error: this is a bug in chainrule")


def test_a_bug_during_training_still_says_what_was_kept(tmp_path, monkeypatch, capsys):
    real, calls = cr.train.evaluate, []

    def evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise IndexError("an injected bug")
        return real(*args, **kwargs)

    monkeypatch.setattr("chainrule.train.evaluate", evaluate)
    assert run_train("--epochs", "2", "--quiet", "--out", str(tmp_path)) == cli.BUG_EXIT
    err = capsys.readouterr().err
    assert "this is a bug in chainrule" in err
    assert err.splitlines()[-1].startswith(f"chainrule: kept {tmp_path / 'checkpoint.npz'}")


# -- help and messages -------------------------------------------------------------------------
def help_text(*argv: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_every_argument_has_help(capsys):
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, (name, action.dest)
    assert "image files of one digit each" in help_text("predict", capsys=capsys)
    assert "by central differences" in " ".join(help_text("gradcheck", capsys=capsys).split())


def test_lesson_help_lists_one_lesson_a_line(capsys):
    from chainrule.lessons import LESSONS

    text = help_text("lesson", capsys=capsys)
    lines = text.splitlines()
    for name, lesson in LESSONS.items():
        assert any(line.split() == [name, *lesson.title.split()] for line in lines), name


@pytest.mark.parametrize(
    "argv",
    [["train", "--epochs", "0"], ["lesson", "no-such"], ["train", "--bogus"], ["frobnicate"]],
)
def test_every_error_has_the_same_prefix(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("chainrule: error: ")
    assert len(err.splitlines()) == 1


def test_missing_idx_files_are_named_once(tmp_path, capsys):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert main(["evaluate", "--data-dir", str(tmp_path), "x.npz"]) == 2  # the model first
    capsys.readouterr()
    assert main(["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    for name in cr.datasets.IDX_FILES[1:]:
        assert err.count(name) == 1, name
    assert "train-images-idx3-ubyte" not in err  # it is there


# -- models that take images ---------------------------------------------------------------------
def test_a_model_that_takes_images_is_evaluated_and_predicts_from_the_cli(tmp_path, capsys):
    from PIL import Image

    (x, y), (x_test, y_test) = cr.datasets.load_mnist(normalize=False, flatten=False)
    model = cr.Sequential(
        cr.Rescaling(1 / 255), cr.RandomShift(1, rng=0), cr.Flatten(), cr.Dense(784, 10, rng=0)
    )
    cr.fit(
        model, x[:2000], y[:2000], loss="softmax_cross_entropy", optimizer="adam", epochs=2, seed=0
    )
    path = tmp_path / "images.npz"
    cr.save(model, path)
    assert main(["evaluate", str(path)]) == 0
    accuracy = float(capsys.readouterr().out.split()[2].rstrip("%")) / 100
    assert accuracy == pytest.approx(cr.evaluate(model, x_test, y_test)["accuracy"], abs=1e-4)
    index = int(np.flatnonzero(model.predict(x_test[:50]) == y_test[:50])[0])
    image = tmp_path / "digit.png"
    Image.fromarray(255 - x_test[index, 0]).resize((84, 84)).save(image)
    assert main(["predict", str(path), str(image)]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: {y_test[index]} ")


def test_augment_trains_on_shifted_images_and_the_summary_and_a_resumed_run_keep_it(tmp_path):
    out = tmp_path / "run"
    assert run_train("--augment", "2", "--epochs", "1", "--quiet", "--out", str(out)) == 0
    model = cr.load(out / "model.npz")
    assert [type(layer).__name__ for layer in model.layers[:3]] == [
        "Rescaling",
        "RandomShift",
        "Flatten",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["options"]["augment"] == 2
    assert summary["options"]["hidden"] == [16]
    assert "RandomShift(max_shift=2)" in summary["model"]
    resume = ["train", "--epochs", "2", "--resume", "--quiet", "--no-plots", "--out", str(out)]
    assert main(resume) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["options"]["augment"] == 2  # the saved run's, not the default
    assert summary["epochs"] == 2


def test_model_cnn_trains_a_cnn_draws_its_filters_and_a_resumed_run_keeps_it(tmp_path, capsys):
    out = tmp_path / "cnn"
    tiny = ["--subset", "300", "--channels", "2,3", "--hidden", "8", "--batch-size", "50"]
    argv = ["train", "--model", "cnn", *tiny, "--epochs", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    written = capsys.readouterr().out
    assert "filters.png" in written.splitlines()[-1]
    assert {p.name for p in out.iterdir()} == {*cli.OUTPUTS, *cli.PLOTS}
    model = cr.load(out / "model.npz")
    assert type(model) is cr.CNN
    assert [repr(layer) for layer in model.layers[2:8]] == [
        "Conv2D(1 -> 2, 5x5, padding=2x2)", "ReLU()", "MaxPool2D(2x2)",
        "Conv2D(2 -> 3, 5x5)", "ReLU()", "MaxPool2D(2x2)",
    ]  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["options"]["model"], summary["options"]["channels"]) == ("cnn", [2, 3])
    assert summary["options"]["augment"] == cli.MODEL_DEFAULTS["cnn"]["augment"]
    resume = ["train", "--epochs", "2", "--resume", "--quiet", "--no-plots", "--out", str(out)]
    assert main(resume) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["options"]["model"], summary["epochs"]) == ("cnn", 2)
    model = cr.load(out / "model.npz")
    assert type(model) is cr.CNN
    _, (x_test, y_test) = cr.datasets.load_mnist(normalize=False, flatten=False)
    assert x_test.shape[1:] == (1, 28, 28)
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.npz")]) == 0
    accuracy = float(capsys.readouterr().out.split()[2].rstrip("%")) / 100
    assert accuracy == pytest.approx(cr.evaluate(model, x_test, y_test)["accuracy"], abs=1e-4)
    from PIL import Image

    image = tmp_path / "digit.png"
    Image.fromarray(255 - x_test[0, 0]).save(image)
    assert main(["predict", str(out / "model.npz"), str(image)]) == 0
    predicted = model.predict_proba(x_test[:1])[0]
    assert capsys.readouterr().out.startswith(f"{image}: {int(predicted.argmax())} ")
    assert main(["train", "--resume", "--model", "mlp", "--epochs", "3", "--out", str(out)]) == 2
    assert "--model cannot change them" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "cnn", "--batch-norm"], "--batch-norm applies to --model mlp only"),
        (["--model", "cnn", "--preset", "best"], "--batch-norm applies to --model mlp only"),
        (["--channels", "4"], "--channels applies to --model cnn only"),
        (["--model", "cnn", "--channels", "none"], "a CNN needs at least one convolution"),
    ],
)
def test_options_of_the_other_kind_of_model_are_refused(argv, message, tmp_path, capsys):
    assert main(["train", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
