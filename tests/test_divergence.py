"""Divergence: training that produces NaN or infinity stops with cr.DivergenceError, and a
non-finite model never replaces a good one on disk (neither through cr.save nor the CLI)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr

pytestmark = pytest.mark.slow


def blobs(directory: Path) -> dict[str, str]:
    """sha256 of every file in ``directory`` (hidden ones included)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def data(n: int = 64, features: int = 5, classes: int = 3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, features)), rng.integers(0, classes, n)


@pytest.mark.parametrize("optimizer", [cr.SGD, cr.Momentum, cr.Nesterov])
@pytest.mark.parametrize("lr", [1e3, 1e6])
def test_a_huge_learning_rate_raises_divergence_error(optimizer, lr):
    x, y = data()
    model = cr.MLP(5, [8], 3, activation="leaky_relu", rng=0)
    epoch_starts: list[dict[str, np.ndarray]] = []

    class Snapshot(cr.Callback):
        def on_epoch_begin(self, run, epoch):
            epoch_starts.append({k: v.copy() for k, v in run.model.params.items()})

    # No FP warning may escape (pytest turns warnings into errors): divergence is reported once,
    # as a DivergenceError.
    with pytest.raises(cr.DivergenceError) as info:
        cr.fit(
            model,
            x,
            y,
            loss=cr.SoftmaxCrossEntropy(),
            optimizer=optimizer(lr=lr),
            epochs=50,
            batch_size=16,
            seed=0,
            callbacks=[Snapshot()],
        )
    error = info.value
    assert isinstance(error, FloatingPointError)
    message = str(error)
    assert re.search(r"diverged at epoch \d+, batch \d+", message), message
    assert f"epoch {error.epoch + 1}, batch {error.batch + 1}" in message
    assert error.epoch == len(epoch_starts) - 1
    assert 0 <= error.batch < 4
    # The model is put back to the start of the diverged epoch: finite, and exactly as it was.
    for k, v in model.params.items():
        assert np.isfinite(v).all()
        np.testing.assert_array_equal(v, epoch_starts[-1][k])


def test_divergence_in_the_last_step_of_the_last_epoch_is_caught():
    """No forward pass follows the last optimizer step: fit must still notice the NaN."""
    x, y = np.full((4, 2), 1e3), np.zeros((4, 1))
    model = cr.MLP(2, [3], 1, rng=0)
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(cr.DivergenceError, match=r"epoch 1, batch 1"):
        cr.fit(
            model,
            x,
            y,
            loss=cr.MeanSquaredError(),
            optimizer=cr.SGD(lr=1e36),
            epochs=1,
            batch_size=4,
            seed=0,
        )
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])


def test_an_overflowing_optimizer_state_is_not_silent(tmp_path):
    x, y = np.full((4, 2), 1e17), np.zeros((4, 1))
    model = cr.Sequential(cr.Dense(2, 1, rng=0))
    optimizer = cr.Adam(1e-3)
    try:
        cr.fit(
            model,
            x,
            y,
            loss=cr.MeanSquaredError(),
            optimizer=optimizer,
            epochs=1,
            batch_size=4,
            seed=0,
        )
    except cr.DivergenceError:
        return
    cr.save(model, tmp_path / "model.npz", optimizer=optimizer)  # refused: v is infinite


# -- cr.save never writes a non-finite model ---------------------------------------------------
@pytest.fixture
def saved(tmp_path) -> tuple[cr.Sequential, Path]:
    model = cr.MLP(4, [6], 3, batchnorm=True, rng=0)
    path = cr.save(model, tmp_path / "model.npz")
    return model, path


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["params", "buffers", "optimizer"])
def test_save_refuses_non_finite_values_and_keeps_the_old_file(saved, bad, where):
    good, path = saved
    before = blobs(path.parent)
    model = good.copy()
    optimizer = cr.Adam(0.01)
    optimizer.step(model.params, {k: np.ones_like(v) for k, v in model.params.items()})
    target = {
        "params": model.params["0.W"],
        "buffers": model.buffers["1.running_var"],
        "optimizer": optimizer.state["0.W"]["v"],
    }[where]
    target.flat[3] = bad
    kind = "NaN" if np.isnan(bad) else "infinity"
    with pytest.raises(ValueError, match=rf"contains {kind} \(1 non-finite value\(s\)"):
        cr.save(model, path, optimizer=optimizer)
    assert blobs(path.parent) == before  # byte-identical, and no temporary file left behind
    np.testing.assert_array_equal(cr.load(path).params["0.W"], good.params["0.W"])


def test_save_refuses_a_non_finite_history_and_keeps_the_old_file(saved):
    model, path = saved
    before = blobs(path.parent)
    history = cr.History(epoch=[0], loss=[float("nan")], accuracy=[0.5], lr=[0.1], seconds=[1.0])
    with pytest.raises(ValueError, match="JSON-serialisable and finite"):
        cr.save(model, path, history=history)
    assert blobs(path.parent) == before


# -- the CLI -------------------------------------------------------------------------------------
def chainrule(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chainrule", *args], capture_output=True, text=True, check=False
    )


SMALL = [
    "--subset",
    "500",
    "--epochs",
    "2",
    "--batch-size",
    "32",
    "--hidden",
    "16",
    "--quiet",
    "--no-plots",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    result = chainrule("train", *SMALL, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_cli_divergence_exits_non_zero_and_keeps_the_model(trained_run):
    before = blobs(trained_run)
    result = chainrule(
        "train",
        *SMALL,
        "--lr",
        "1e6",
        "--optimizer",
        "sgd",
        "--activation",
        "leaky_relu",
        "--out",
        str(trained_run),
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    # The error and what was kept: no FP warnings, no traceback.
    assert len(lines) == 2, result.stderr
    assert re.fullmatch(
        r"chainrule: error: training diverged at epoch \d+, batch \d+: .*", lines[0]
    )
    assert (
        lines[1]
        == f"chainrule: no epoch was complete, so nothing was kept; {trained_run} is as it was"
    )
    assert blobs(trained_run) == before  # model.npz and every other output byte-identical
    assert cr.load(trained_run / "model.npz").num_params > 0


def test_cli_default_optimizer_with_lr_1e6_keeps_the_model(trained_run):
    before = blobs(trained_run)
    result = chainrule("train", *SMALL, "--lr", "1e6", "--out", str(trained_run))
    assert result.returncode != 0
    assert blobs(trained_run) == before
