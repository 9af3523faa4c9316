"""The fast path against the NumPy reference: compiled optimizer steps on every optimizer, plain
SGD inside the weight-gradient GEMM, thread control, and what runs when the extra is missing.

The NumPy code of each optimizer is the reference; ``kernels.numpy_only()`` runs it even where
the ``fast`` extra is installed (the test extra installs it), so every test here runs both paths.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_info

import chainrule as cr
from chainrule import kernels
from chainrule.cli import main
from chainrule.optim import OPTIMIZERS
from chainrule.train import _backward_and_update

NAMES = sorted(OPTIMIZERS)
#: "Equal to float32 rounding" (float64: to its own rounding), relative to the values compared.
RTOL = {np.float32: 1e-6, np.float64: 1e-14}


def test_the_fast_path_is_installed_for_the_tests():
    assert kernels.available(), "the test extra must install chainrule[fast]"
    assert kernels.active()
    with kernels.numpy_only():
        assert not kernels.active()
    assert kernels.active()


def _random_steps(name, dtype, weight_decay, steps=4):
    """Parameters of two shapes after ``steps`` steps of random gradients, and the state."""
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(7, 5)).astype(dtype), "b": rng.normal(size=5).astype(dtype)}
    optimizer = OPTIMIZERS[name](lr=0.05, weight_decay=weight_decay)
    for _ in range(steps):
        grads = {k: rng.normal(size=p.shape).astype(dtype) for k, p in params.items()}
        optimizer.step(params, grads)
    return params, optimizer.state


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_every_optimizers_compiled_step_equals_its_numpy_step(name, dtype, weight_decay):
    assert OPTIMIZERS[name]._has_kernel
    fast, fast_state = _random_steps(name, dtype, weight_decay)
    with kernels.numpy_only():
        ref, ref_state = _random_steps(name, dtype, weight_decay)
    for key in ref:
        assert fast[key].dtype == dtype
        assert_allclose(fast[key], ref[key], rtol=RTOL[dtype], atol=0)
        for slot in ref_state[key]:
            assert_allclose(fast_state[key][slot], ref_state[key][slot], rtol=RTOL[dtype], atol=0)


def test_a_compiled_step_of_a_non_contiguous_parameter_falls_back_to_numpy():
    base = np.arange(20.0).reshape(4, 5)
    fast = {"p": base.copy()[:, ::2]}  # a view with steps: no flat view without a copy
    ref = {"p": base.copy()[:, ::2]}
    g = {"p": np.ones((4, 3))}
    cr.Adam(0.1).step(fast, g)
    with kernels.numpy_only():
        cr.Adam(0.1).step(ref, g)
    assert_array_equal(fast["p"], ref["p"])
    assert not np.array_equal(fast["p"], base[:, ::2])  # and it was updated


def test_a_users_own_rule_runs_its_own_numpy_update():
    class HalfAdam(cr.Adam):  # a different rule: an inherited kernel would compute Adam's
        def _update(self, p, g, state, tmp):
            super()._update(p, g / 2, state, tmp)

    assert not HalfAdam._has_kernel
    assert HalfAdam(0.1).gemm_coefficients() is None
    params, ref = {"p": np.ones(3)}, {"p": np.ones(3)}
    HalfAdam(0.1).step(params, {"p": np.full(3, 2.0)})
    with kernels.numpy_only():
        HalfAdam(0.1).step(ref, {"p": np.full(3, 2.0)})
    assert_array_equal(params["p"], ref["p"])


# -- plain SGD inside the weight-gradient GEMM --------------------------------------------------
def _model(dtype):
    return cr.MLP(12, [16, 8], 3, rescale=0.5, rng=0, dtype=dtype)


def _batch(dtype, n=10):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 12)).astype(dtype), rng.integers(0, 3, n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_sgd_inside_the_gemm_equals_the_reference_step(dtype, weight_decay):
    """One step: the fused path updates W in the product and leaves grads["W"] unwritten; the
    parameters equal the reference step's to rounding."""
    x, t = _batch(dtype)
    results = []
    for fuse in (True, False):
        model, loss = _model(dtype), cr.SoftmaxCrossEntropy()
        optimizer = cr.SGD(0.1, weight_decay=weight_decay)
        for g in model.grads.values():
            g.fill(np.nan)  # a gradient written by the step is no longer NaN
        loss.forward(model.forward(x, training=True), t)
        with kernels.numpy_only() if not fuse else cr.threads(1):
            _backward_and_update(model, optimizer, model.params, model.grads, loss.backward(), fuse)
        results.append(model)
    fused, ref = results
    for name, p in ref.params.items():
        tol = RTOL[dtype] * 10 * (1 + np.abs(p).max())  # W + lr * x.T @ dy, rounded once or twice
        assert_allclose(fused.params[name], p, rtol=0, atol=tol)
        assert not np.array_equal(p, _model(dtype).params[name])  # the step moved it
        written = not np.isnan(fused.grads[name]).any()
        assert written == name.endswith(".b"), name  # W updated in the GEMM, b by the optimizer


def test_the_input_gradient_uses_the_weights_before_their_step():
    """The lecture notes' bug, ruled out: dx must be dy @ W.T with W as it was."""
    layer = cr.Dense(6, 4, rng=0)
    x = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    dy = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    layer.forward(x)
    expected = dy @ layer.params["W"].T
    with cr.threads(1):
        dx, updated = layer._backward_update(dy, True, -0.5, 1.0)
    assert updated == ("W",)
    assert_array_equal(dx, expected)
    assert not np.allclose(dy @ layer.params["W"].T, expected)  # W did change


@pytest.mark.parametrize("name", NAMES)
def test_training_on_the_fast_path_follows_the_reference(name):
    """A few epochs of fit on each path, one BLAS thread (so SGD runs inside the GEMM): the same
    model to float32 rounding, amplified a little by the steps that follow."""
    x, t = _batch(np.float32, n=60)
    models = []
    for numpy_only in (False, True):
        model = _model(np.float32)
        with kernels.numpy_only() if numpy_only else cr.threads(1):
            cr.fit(model, x, t, loss="softmax_cross_entropy", optimizer=OPTIMIZERS[name](lr=0.01),
                   epochs=3, batch_size=16, seed=0)  # fmt: skip
        models.append(model)
    for key, p in models[1].params.items():
        assert_allclose(models[0].params[key], p, rtol=1e-5, atol=1e-6)


def test_the_fold_runs_only_with_one_blas_thread():
    assert kernels.active()
    with cr.threads(1):
        assert kernels.fold_pays()
    with kernels.numpy_only(), cr.threads(1):
        assert not kernels.fold_pays()
    if max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas") > 1:
        assert not kernels.fold_pays()


# -- the training loop's trusted paths ----------------------------------------------------------
TARGETS = {
    "softmax_cross_entropy": lambda rng: rng.integers(0, 3, 6),
    "cross_entropy": lambda rng: np.eye(3)[rng.integers(0, 3, 6)],
    "binary_cross_entropy": lambda rng: rng.random((6, 3)),
    "mse": lambda rng: rng.normal(size=(6, 3)),
}


@pytest.mark.parametrize("name", sorted(cr.losses.LOSSES))
def test_a_losss_trusted_path_equals_its_checked_one(name):
    rng = np.random.default_rng(0)
    y, t = rng.random((6, 3)).astype(np.float32), TARGETS[name](rng)
    loss = cr.losses.LOSSES[name]()
    value, grad = loss.forward(y, t), loss.backward()
    assert loss._forward_trusted(y, t) == value
    assert_array_equal(loss.backward(), grad)


def test_the_trusted_backward_fills_the_gradients_backward_does():
    x, t = _batch(np.float64)
    model, loss = _model(np.float64), cr.SoftmaxCrossEntropy()
    loss.forward(model.forward(x, training=True), t)
    dy = loss.backward()
    model.backward(dy, input_grad=False)
    expected = {k: g.copy() for k, g in model.grads.items()}
    for g in model.grads.values():
        g.fill(np.nan)
    model._backward_trusted(dy)
    for key, g in model.grads.items():
        assert_array_equal(g, expected[key])


# -- threads -----------------------------------------------------------------------------------
def _blas_thread_counts():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_threads_caps_every_blas_and_restores_it():
    before = _blas_thread_counts()
    with cr.threads(1):
        assert set(_blas_thread_counts()) == {1}
        assert kernels.blas_threads() == 1
    assert _blas_thread_counts() == before


def test_fit_trains_within_its_thread_count():
    seen = []

    class Record(cr.Callback):
        def on_batch_end(self, run, batch, loss):
            seen.append(kernels.blas_threads())

    x, t = _batch(np.float32)
    cr.fit(_model(np.float32), x, t, loss="softmax_cross_entropy", optimizer="sgd", epochs=1,
           batch_size=5, seed=0, threads=1, callbacks=[Record()])  # fmt: skip
    assert seen == [1, 1]


@pytest.mark.parametrize(
    ("threads", "error"), [(0, ValueError), (1.5, TypeError), ("2", TypeError)]
)
def test_a_bad_thread_count_is_refused_before_training(threads, error):
    model, (x, t) = _model(np.float32), _batch(np.float32)
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(error, match="threads"):
        cr.fit(model, x, t, loss="softmax_cross_entropy", optimizer="sgd", epochs=1,
               threads=threads)  # fmt: skip
    for key, p in model.params.items():
        assert_array_equal(p, before[key])


# -- without the extra -------------------------------------------------------------------------
@pytest.fixture
def without_the_extra(monkeypatch):
    """chainrule as installed without ``chainrule[fast]``."""
    monkeypatch.setattr(kernels, "_modules", lambda: None)


def test_without_the_extra_training_runs_the_numpy_path(without_the_extra):
    assert not kernels.available()
    assert not kernels.active()
    assert 'pip install "chainrule[fast]"' in kernels.describe()
    x, t = _batch(np.float32, n=40)
    models = []
    for numpy_only in (False, True):
        model = _model(np.float32)
        with kernels.numpy_only() if numpy_only else cr.threads(1):
            cr.fit(model, x, t, loss="softmax_cross_entropy", optimizer=cr.SGD(0.1), epochs=2,
                   batch_size=8, seed=0)  # fmt: skip
        models.append(model)
    for key, p in models[1].params.items():
        assert_array_equal(models[0].params[key], p)  # the same code ran: bit for bit


def test_the_cli_header_says_which_path_runs_on_how_many_threads(tmp_path, capsys, monkeypatch):
    argv = ["train", "--subset", "200", "--hidden", "8", "--epochs", "1", "--no-plots"]
    assert main([*argv, "--out", str(tmp_path / "a"), "--threads", "2"]) == 0
    header = capsys.readouterr().out.splitlines()[1]
    assert header.endswith("; fast path (compiled kernels), 2 threads")
    monkeypatch.setattr(kernels, "_modules", lambda: None)
    assert main([*argv, "--out", str(tmp_path / "b"), "--threads", "1"]) == 0
    header = capsys.readouterr().out.splitlines()[1]
    assert header.endswith(
        '; NumPy path (pip install "chainrule[fast]" for compiled kernels), 1 thread'
    )


def test_the_cli_takes_blas_own_thread_count_by_default(tmp_path, capsys):
    """Without --threads, training keeps the count BLAS has (one per core unless the environment
    says otherwise), and the header and the summary say which it was."""
    argv = ["train", "--subset", "200", "--hidden", "8", "--epochs", "1", "--no-plots"]
    for count in (2, 1):
        with cr.threads(count):
            assert main([*argv, "--out", str(tmp_path / str(count))]) == 0
        header = capsys.readouterr().out.splitlines()[1]
        assert header.endswith(f", {count} thread{'s' if count > 1 else ''}")
        summary = json.loads((tmp_path / str(count) / "summary.json").read_text())
        assert summary["threads"] == count
