"""``chainrule train --preset``: the table of presets, which value wins, and what a run records
and a resumed run keeps. Tiny runs (300 images, 16 hidden units); the presets' accuracy and time
are measured by full runs (README, "Results"), not here."""

from __future__ import annotations

import json

import pytest

import chainrule as cr
from chainrule import cli
from chainrule.cli import PRESETS, main

SMALL = ["--subset", "300", "--hidden", "16", "--batch-size", "32", "--no-plots", "--quiet"]


def layer_names(path) -> list[str]:
    return [type(layer).__name__ for layer in cr.load(path).layers]


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_sets_options_of_train_as_its_flags_parse(name):
    """The flags ``--help`` lists for a preset give back the preset's values."""
    flags = cli.train.as_flags(PRESETS[name]).split()
    args = cli.build_parser().parse_args(["train", *flags])
    assert {key: getattr(args, key) for key in PRESETS[name]} == PRESETS[name]


def test_the_default_preset_is_the_defaults_and_best_uses_what_the_readme_says():
    assert PRESETS["default"] == {}
    best = PRESETS["best"]
    assert best["batch_norm"] is True
    assert best["augment"] > 0
    assert best["dropout"] > 0


def test_help_lists_every_preset_with_what_it_sets(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    lines = capsys.readouterr().out.splitlines()
    for name, options in PRESETS.items():
        expected = cli.train.as_flags(options).split() or ["(the", "defaults", "above)"]
        assert any(line.split() == [name, *expected] for line in lines), name


def test_an_option_given_beats_the_preset_and_the_summary_records_both(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--preset", "best", *SMALL, "--dropout", "0.1", "--epochs", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    # Given: --hidden 16, --dropout 0.1, --epochs 1; from the preset: BatchNorm and the shifts.
    assert layer_names(out / "model.npz") == [
        "Rescaling",
        "RandomShift",
        "Flatten",
        "Dense",
        "BatchNorm",
        "ReLU",
        "Dropout",
        "Dense",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1
    options = summary["options"]
    assert options["preset"] == "best"
    assert (options["hidden"], options["dropout"]) == ([16], 0.1)
    assert (options["batch_norm"], options["augment"]) == (True, PRESETS["best"]["augment"])
    assert cr.load_checkpoint(out / "model.npz").metadata["options"] == options
    text = (out / "summary.txt").read_text()
    assert "options         --preset best --hidden 16 --batch-norm --dropout 0.1" in text


def test_no_batch_norm_turns_off_the_presets_batch_norm(tmp_path):
    argv = ["train", "--preset", "best", *SMALL, "--no-batch-norm", "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert "BatchNorm" not in layer_names(tmp_path / "model.npz")
    assert json.loads((tmp_path / "summary.json").read_text())["options"]["batch_norm"] is False


def test_the_default_run_says_it_used_the_defaults(tmp_path):
    argv = ["train", "--subset", "300", "--no-plots", "--quiet", "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert "options         --subset 300 --epochs 1\n" in (tmp_path / "summary.txt").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["options"]["preset"] == "default"


def test_resume_keeps_the_saved_preset_and_goes_to_its_epochs(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(PRESETS, "best", {**PRESETS["best"], "epochs": 3})
    argv = ["train", "--preset", "best", *SMALL, "--epochs", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    # Neither --preset nor --epochs given: the saved run's preset, and its 3 epochs.
    assert main(["train", "--resume", "--no-plots", "--quiet", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["options"]["preset"], summary["epochs"]) == ("best", 3)
    assert summary["options"]["hidden"] == [16]  # the saved model's, not the preset's
    assert "BatchNorm" in layer_names(tmp_path / "model.npz")
    capsys.readouterr()
    assert main(["train", "--resume", "--preset", "default", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "chainrule: error: --resume keeps the saved run's preset, data and batches: it was "
        "trained with --preset best, not default (train a new run into another --out)\n"
    )


def test_resume_refuses_batch_norm_like_the_other_model_options(tmp_path, capsys):
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(tmp_path)]) == 0
    argv = ["train", "--resume", "--epochs", "2", "--no-batch-norm", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--batch-norm cannot change them" in capsys.readouterr().err


def test_a_run_saved_before_presets_resumes_with_the_default_preset(tmp_path):
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(tmp_path)]) == 0
    saved = cr.load_checkpoint(tmp_path / "model.npz")
    options = {k: v for k, v in saved.metadata["options"].items() if k != "preset"}
    cr.save(
        saved.model,
        tmp_path / "model.npz",
        optimizer=saved.optimizer,
        history=saved.history,
        metadata={**saved.metadata, "options": options},
    )
    assert main(["train", "--resume", "--epochs", "2", "--quiet", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["options"]["preset"] == "default"


@pytest.mark.parametrize("name", ["nope", "Best", ""])
def test_an_unknown_preset_is_one_line_and_exit_2(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--preset", name])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"chainrule: error: argument --preset: invalid choice: '{name}'")
    assert str(list(PRESETS))[1:-1] in err  # the choices
    assert len(err.splitlines()) == 1


def test_a_saved_run_with_an_unknown_preset_is_refused_in_one_line(tmp_path, capsys):
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(tmp_path)]) == 0
    saved = cr.load_checkpoint(tmp_path / "model.npz")
    options = {**saved.metadata["options"], "preset": "retired"}
    cr.save(
        saved.model,
        tmp_path / "model.npz",
        optimizer=saved.optimizer,
        history=saved.history,
        metadata={**saved.metadata, "options": options},
    )
    assert main(["train", "--resume", "--epochs", "2", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"chainrule: error: --resume: the saved run's preset 'retired' is not one of "
        f"{list(PRESETS)}\n"
    )
