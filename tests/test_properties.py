"""Property-based tests (Hypothesis): gradients of random networks, optimizers at lr=0,
save -> load, and determinism across processes.

* Every optimizer, fresh, with ``lr=0`` leaves any parameters (float32 or float64, magnitudes
  1e-6 to 1e6, with or without weight decay) unchanged over 1 to 4 steps; and so must a step
  at ``lr=0`` after training steps (a schedule annealing to 0), which holds for Momentum and
  Nesterov because their velocity is kept in gradient units.
* ``save`` then ``load_checkpoint`` is the identity on random models (Dense, every activation,
  Dropout, BatchNorm; float32 or float64) with their optimizer state, history and JSON metadata:
  bit-identical arrays, generator states and predictions.
* The same seed gives bit-identical weights and histories in two processes (with different
  ``PYTHONHASHSEED``), through the API and through ``chainrule train``.

Back-propagation against central differences
============================================

Each example is a random ``Sequential`` in float64: 1 to 6 ``Dense`` layers of widths 1 to 16,
every hidden activation drawn from ReLU, LeakyReLU (alpha in [0, 0.5]), Sigmoid, Tanh and Softmax,
optional Dropout (its mask is replayed by ``gradient_check``), every loss (with the output head it
needs: Softmax before CrossEntropy, Sigmoid before BinaryCrossEntropy on probabilities), a batch
of 1 to 8, inputs of magnitude 1e-3 to 1e3, and some ReLU/LeakyReLU pre-activations moved to 0 or
to within 1e-8 .. 1e-2 of it. ``gradient_check`` must pass with ``rtol=1e-5`` for every parameter
array and for the input. Three rules make the comparison meaningful:

1. Kinks. ReLU and LeakyReLU are not differentiable at 0, and a central difference whose two
   evaluations lie on different sides of the kink measures the average of two slopes. An example
   is *rejected* (``hypothesis.assume``) when any of the evaluations made by the numerical
   gradient puts a ReLU/LeakyReLU pre-activation on the other side of 0 (``x > 0`` changes) than
   the unperturbed pass. This is exact, not a distance threshold: it is recorded by ReLU and
   LeakyReLU subclasses that watch every forward pass of the check (their backward is the
   library's). Points near the kink that no evaluation crosses are kept, and must pass: there the
   function is linear on each side and the central difference is exact.
2. Step. The step is ``h = 1e-5 / s`` with ``s = max(1, largest |input| of any Dense layer)``:
   perturbing a weight by ``h`` moves its pre-activation by at most ``1e-5 * |W|``, so the
   truncation error of the central difference stays below the tolerance for inputs of 1e3.
3. Round-off floor. A central difference cannot resolve a gradient smaller than the rounding
   noise of the loss divided by ``h``. That noise is about ``eps * (|L| + sum |y * dL/dy|)``
   (``y`` the network's output; the second term is how much the loss amplifies the rounding of
   ``y``, large for a probability near 0 or 1 under CrossEntropy or BinaryCrossEntropy), so
   ``atol = 1e-12 + 16 * eps * (|L| + sum |y * dL/dy|) / h``: an array passes if its relative error
   is within ``rtol`` or its largest absolute error within ``atol``. How many arrays pass only
   by the floor is reported as a Hypothesis event (``--hypothesis-show-statistics``).

BatchNorm is left out: it is scale-invariant, so the step would have to follow each batch's
variance; ``tests/test_gradients.py`` checks it on fixed cases.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

import chainrule as cr
from chainrule.optim import OPTIMIZERS

#: 1 with the default Hypothesis profile, 10 with HYPOTHESIS_PROFILE=long (see conftest.py).
SCALE = max(1, settings.default.max_examples // 100)
EPS = float(np.finfo(np.float64).eps)


# -- rule 1: watching the kinks -------------------------------------------------------------------
class _KinkWatch:
    """Which side of 0 each watched pre-activation was on in the first pass after ``start``, and
    whether a later pass saw any of them on the other side."""

    def __init__(self) -> None:
        self.active = False
        self.crossed = False
        self.sides: dict[int, np.ndarray] = {}

    def start(self) -> None:
        self.active, self.crossed, self.sides = True, False, {}

    def stop(self) -> bool:
        self.active = False
        return self.crossed

    def observe(self, key: int, x: np.ndarray) -> None:
        if not self.active:
            return
        side = x > 0
        first = self.sides.setdefault(key, side)
        if first is not side and not np.array_equal(first, side):
            self.crossed = True


KINKS = _KinkWatch()


class WatchedReLU(cr.ReLU):
    def __init__(self, key: int) -> None:
        super().__init__()
        self.key = key

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        KINKS.observe(self.key, x)
        return super()._forward(x, training)


class WatchedLeakyReLU(cr.LeakyReLU):
    def __init__(self, key: int, alpha: float) -> None:
        super().__init__(alpha)
        self.key = key

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        KINKS.observe(self.key, x)
        return super()._forward(x, training)


KINKED = (WatchedReLU, WatchedLeakyReLU)


# -- the random cases -----------------------------------------------------------------------------
def _labels(rng: np.random.Generator, n: int, k: int, scale: float) -> np.ndarray:
    return rng.integers(0, k, n)


def _onehot(rng: np.random.Generator, n: int, k: int, scale: float) -> np.ndarray:
    return np.eye(k)[rng.integers(0, k, n)]


def _soft(rng: np.random.Generator, n: int, k: int, scale: float) -> np.ndarray:
    return rng.uniform(0.0, 1.0, (n, k))


def _real(rng: np.random.Generator, n: int, k: int, scale: float) -> np.ndarray:
    return rng.normal(size=(n, k)) * scale


# name -> (loss, output head after the last Dense, target maker)
LOSSES: dict[str, tuple[Callable[[], cr.Loss], Callable[[], list[cr.Layer]], Callable]] = {
    "SoftmaxCrossEntropy/labels": (cr.SoftmaxCrossEntropy, list, _labels),
    "SoftmaxCrossEntropy/one-hot": (cr.SoftmaxCrossEntropy, list, _onehot),
    "SoftmaxCrossEntropy/soft": (cr.SoftmaxCrossEntropy, list, _soft),
    "CrossEntropy/labels": (cr.CrossEntropy, lambda: [cr.Softmax()], _labels),
    "CrossEntropy/one-hot": (cr.CrossEntropy, lambda: [cr.Softmax()], _onehot),
    "CrossEntropy/soft": (cr.CrossEntropy, lambda: [cr.Softmax()], _soft),
    "BinaryCrossEntropy": (cr.BinaryCrossEntropy, lambda: [cr.Sigmoid()], _soft),
    "BinaryCrossEntropy/batchmean": (
        lambda: cr.BinaryCrossEntropy(reduction="batchmean"),
        lambda: [cr.Sigmoid()],
        _soft,
    ),
    "BinaryCrossEntropy/from_logits": (
        lambda: cr.BinaryCrossEntropy(from_logits=True),
        list,
        _soft,
    ),
    "MeanSquaredError": (cr.MeanSquaredError, list, _real),
    "MeanSquaredError/half": (lambda: cr.MeanSquaredError(half=True), list, _real),
}
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "softmax")
# Distances from the kink given to chosen pre-activations (before the check's perturbations).
NEAR_KINK = (0.0, 1e-8, -1e-8, 1e-6, -1e-6, 1e-4, -1e-4, 1e-2, -1e-2)


@st.composite
def networks(draw: st.DrawFn) -> dict:
    """A random network, loss, batch and target, described by plain values (for the report)."""
    depth = draw(st.integers(1, 6), label="Dense layers")
    widths = draw(st.lists(st.integers(1, 16), min_size=depth + 1, max_size=depth + 1))
    hidden = [
        (
            draw(st.sampled_from(ACTIVATIONS)),
            draw(st.floats(0.0, 0.5)),  # LeakyReLU's alpha, when it is one
            draw(st.one_of(st.none(), st.floats(0.0, 0.7))),  # Dropout p, or no Dropout
            draw(st.lists(st.sampled_from(NEAR_KINK), max_size=3)),  # units moved near 0
        )
        for _ in range(depth - 1)
    ]
    return {
        "widths": widths,
        "hidden": hidden,
        "loss": draw(st.sampled_from(sorted(LOSSES))),
        "batch": draw(st.integers(1, 8)),
        "magnitude": draw(st.integers(-3, 3), label="log10 |x|"),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def build(case: dict) -> tuple[cr.Sequential, cr.Loss, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(case["seed"])
    widths, n = case["widths"], case["batch"]
    layers: list[cr.Layer] = []
    near_kink: dict[int, list[float]] = {}  # index of a Dense layer -> offsets for its outputs
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layers.append(
            cr.Dense(fan_in, fan_out, init="xavier", rng=rng.integers(2**32), dtype=np.float64)
        )
        if i == len(case["hidden"]):
            break
        activation, alpha, p, offsets = case["hidden"][i]
        if activation == "relu":
            near_kink[len(layers) - 1] = offsets
            layers.append(WatchedReLU(len(layers)))
        elif activation == "leaky_relu":
            near_kink[len(layers) - 1] = offsets
            layers.append(WatchedLeakyReLU(len(layers), alpha))
        else:
            layers.append(cr.layers.ACTIVATIONS[activation]())
        if p is not None:
            layers.append(cr.Dropout(p, rng=rng.integers(2**32)))
    make_loss, head, make_target = LOSSES[case["loss"]]
    net = cr.Sequential(*layers, *head())
    scale = 10.0 ** case["magnitude"]
    x = rng.normal(size=(n, widths[0])) * scale
    t = make_target(rng, n, widths[-1], scale)

    # Put chosen pre-activations of each ReLU/LeakyReLU (one sample each) at a chosen distance
    # from the kink by shifting the bias of the Dense layer before it.
    a = x
    for i, layer in enumerate(net.layers):
        for offset in near_kink.get(i, ()):
            z = layer.forward(a)
            unit, sample = rng.integers(z.shape[1]), rng.integers(n)
            layer.params["b"][unit] += offset - z[sample, unit]
        a = layer.forward(a)
    return net, make_loss(), x, t


def step_and_floor(net: cr.Sequential, loss: cr.Loss, x: np.ndarray, t: np.ndarray):
    """Rules 2 and 3 of the module docstring: the step ``h`` and the round-off floor ``atol``."""
    a, largest = x, 1.0
    for layer in net.layers:
        if isinstance(layer, cr.Dense):
            largest = max(largest, float(np.abs(a).max()))
        a = layer.forward(a, training=True)
    h = 1e-5 / largest
    value = loss.forward(a, t)
    amplification = abs(value) + float(np.abs(a * loss.backward()).sum())
    return h, 1e-12 + 16 * EPS * amplification / h


@pytest.mark.slow
@settings(max_examples=150 * SCALE)
@given(case=networks())
def test_backprop_matches_central_differences(case):
    net, loss, x, t = build(case)
    h, atol = step_and_floor(net.copy(), loss, x, t)
    KINKS.start()
    try:
        report = cr.gradient_check(net, loss, x, t, h=h, rtol=1e-5, atol=atol)
    finally:
        crossed = KINKS.stop()
    if crossed:
        event("rejected: an evaluation crossed a ReLU/LeakyReLU kink")
    assume(not crossed)
    event(f"loss: {case['loss']}")
    floor_only = sum(c.rel_error > report.rtol and report.ok(c) for c in report.checks)
    event(f"arrays passing by the round-off floor only: {'3+' if floor_only > 2 else floor_only}")
    assert report.passed, f"{net!r}\n{loss!r}, h={h:.3g}\n{report}"
    assert {c.name for c in report.checks} == {*net.params, "x"}


# -- optimizers at lr = 0 -------------------------------------------------------------------------
@st.composite
def parameters(draw: st.DrawFn) -> tuple[np.dtype, list[tuple[int, ...]], int, int]:
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    shapes = draw(
        st.lists(
            st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple), min_size=1, max_size=4
        )
    )
    return (
        dtype,
        shapes,
        draw(st.integers(-6, 6), label="log10 |value|"),
        draw(st.integers(0, 2**32 - 1)),
    )


def _arrays(rng: np.random.Generator, dtype, shapes, magnitude) -> dict[str, np.ndarray]:
    return {
        f"{i}.W": (rng.normal(size=shape) * 10.0**magnitude).astype(dtype)
        for i, shape in enumerate(shapes)
    }


HYPER = {  # optional hyper-parameters of each optimizer, besides lr and weight_decay
    "sgd": {},
    "momentum": {"momentum": st.floats(0.0, 0.99)},
    "nesterov": {"momentum": st.floats(0.0, 0.99)},
    "adagrad": {"eps": st.floats(1e-10, 1e-3)},
    "rmsprop": {"rho": st.floats(0.0, 0.99), "eps": st.floats(1e-10, 1e-3)},
    "adam": {"beta1": st.floats(0.0, 0.99), "beta2": st.floats(0.0, 0.999)},
    "adamw": {"beta1": st.floats(0.0, 0.99), "beta2": st.floats(0.0, 0.999)},
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@settings(max_examples=40 * SCALE)
@given(params=parameters(), weight_decay=st.sampled_from([0.0, 1e-4, 0.1]), data=st.data())
def test_a_fresh_optimizer_at_lr_0_changes_nothing(name, params, weight_decay, data):
    dtype, shapes, magnitude, seed = params
    rng = np.random.default_rng(seed)
    hyper = {k: data.draw(v, label=k) for k, v in HYPER[name].items()}
    optimizer = OPTIMIZERS[name](lr=0.0, weight_decay=weight_decay, **hyper)
    p = _arrays(rng, dtype, shapes, magnitude)
    before = {k: v.copy() for k, v in p.items()}
    for _ in range(data.draw(st.integers(1, 4), label="steps")):
        optimizer.step(p, _arrays(rng, dtype, shapes, magnitude))
    for k, v in p.items():
        assert v.dtype == dtype
        np.testing.assert_array_equal(v, before[k], err_msg=f"{optimizer!r} moved {k}")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@settings(max_examples=20 * SCALE)
@given(params=parameters(), data=st.data())
def test_lr_set_to_0_after_training_steps_changes_nothing(name, params, data):
    dtype, shapes, _, seed = params
    rng = np.random.default_rng(seed)
    optimizer = OPTIMIZERS[name](lr=0.1)
    p = _arrays(rng, dtype, shapes, 0)
    for _ in range(data.draw(st.integers(1, 3), label="steps at lr 0.1")):
        optimizer.step(p, _arrays(rng, dtype, shapes, 0))
    optimizer.lr = 0.0  # what a schedule does
    before = {k: v.copy() for k, v in p.items()}
    optimizer.step(p, _arrays(rng, dtype, shapes, 0))
    for k, v in p.items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{optimizer!r} moved {k}")


# -- save -> load ---------------------------------------------------------------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def checkpoints(draw: st.DrawFn) -> dict:
    widths = draw(st.lists(st.integers(1, 12), min_size=2, max_size=5))
    return {
        "widths": widths,
        "activations": [draw(st.sampled_from(ACTIVATIONS)) for _ in widths[2:]],
        "dropout": [draw(st.one_of(st.none(), st.floats(0.0, 0.9))) for _ in widths[2:]],
        "batchnorm": [draw(st.booleans()) for _ in widths[2:]],
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "optimizer": draw(st.one_of(st.none(), st.sampled_from(sorted(OPTIMIZERS)))),
        "epochs": draw(st.integers(0, 3)),
        "metadata": draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def _trained(case: dict) -> tuple[cr.Sequential, cr.Optimizer | None, cr.History | None]:
    rng = np.random.default_rng(case["seed"])
    widths, dtype = case["widths"], np.dtype(case["dtype"])
    layers: list[cr.Layer] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layers.append(cr.Dense(fan_in, fan_out, rng=rng.integers(2**32), dtype=dtype))
        if i < len(case["activations"]):
            if case["batchnorm"][i]:
                layers.append(cr.BatchNorm(fan_out, momentum=0.5, dtype=dtype))
            layers.append(cr.layers.ACTIVATIONS[case["activations"][i]]())
            if case["dropout"][i] is not None:
                layers.append(cr.Dropout(case["dropout"][i], rng=rng.integers(2**32)))
    model = cr.Sequential(*layers)
    optimizer = OPTIMIZERS[case["optimizer"]](lr=1e-3) if case["optimizer"] else None
    history = None
    if optimizer is not None and case["epochs"]:
        x = rng.normal(size=(16, widths[0]))
        y = rng.normal(size=(16, widths[-1]))
        history = cr.fit(
            model,
            x,
            y,
            loss=cr.MeanSquaredError(),
            optimizer=optimizer,
            epochs=case["epochs"],
            batch_size=8,
            seed=case["seed"],
        )
    return model, optimizer, history


@settings(max_examples=60 * SCALE)
@given(case=checkpoints())
def test_save_then_load_is_the_identity(case, tmp_path_factory):
    model, optimizer, history = _trained(case)
    path = tmp_path_factory.mktemp("ckpt") / "model.npz"
    cr.save(model, path, optimizer=optimizer, history=history, metadata=case["metadata"])
    ckpt = cr.load_checkpoint(path)
    loaded = ckpt.model

    assert loaded.config() == model.config()
    assert loaded.dtype == model.dtype
    for store in ("params", "buffers"):
        ours, theirs = getattr(model, store), getattr(loaded, store)
        assert ours.keys() == theirs.keys()
        for k, v in ours.items():
            assert theirs[k].dtype == v.dtype
            np.testing.assert_array_equal(theirs[k], v)
    for a, b in zip(model.layers, loaded.layers, strict=True):
        if isinstance(a, cr.Dropout):
            assert json.dumps(b.rng.bit_generator.state) == json.dumps(a.rng.bit_generator.state)
    x = np.random.default_rng(0).normal(size=(3, case["widths"][0]))
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))  # bit-identical

    if optimizer is None:
        assert ckpt.optimizer is None
    else:
        assert ckpt.optimizer is not None
        want, got = optimizer.state_dict(), ckpt.optimizer.state_dict()
        assert (got["type"], got["config"], got["iterations"]) == (
            want["type"],
            want["config"],
            want["iterations"],
        )
        assert got["state"].keys() == want["state"].keys()
        for name, slots in want["state"].items():
            assert got["state"][name].keys() == slots.keys()
            for slot, value in slots.items():
                np.testing.assert_array_equal(got["state"][name][slot], value)
    assert ckpt.history == history
    assert ckpt.metadata == case["metadata"]


# -- determinism across processes -----------------------------------------------------------------
TRAIN = r"""
import hashlib, json, sys
import numpy as np, chainrule as cr
seed = int(sys.argv[1])
rng = np.random.default_rng(0)
x, y = rng.normal(size=(200, 8)).astype(np.float32), rng.integers(0, 3, 200)
model = cr.MLP(8, [16, 16], 3, dropout=0.3, batchnorm=True, rng=seed)
history = cr.fit(
    model, x, y, loss=cr.SoftmaxCrossEntropy(), optimizer=cr.Adam(0.01), epochs=3, batch_size=32,
    validation_split=0.2, seed=seed, callbacks=[cr.LearningRateScheduler(cr.CosineLR(3))],
)
record = history.to_dict()
del record["seconds"]
digest = hashlib.sha256()
for name, value in sorted({**model.params, **model.buffers}.items()):
    digest.update(name.encode() + value.tobytes())
print(json.dumps({"history": record, "weights": digest.hexdigest()}))
"""


def _in_a_new_process(args: list[str], hash_seed: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run(args, capture_output=True, text=True, check=True, env=env)


def test_the_same_seed_gives_bit_identical_training_in_two_processes():
    runs = [
        json.loads(_in_a_new_process([sys.executable, "-c", TRAIN, seed], hash_seed).stdout)
        for seed, hash_seed in [("7", "1"), ("7", "2"), ("8", "1")]
    ]
    assert runs[0] == runs[1]  # weights (sha256 of every byte) and every history figure
    assert runs[0]["weights"] != runs[2]["weights"]  # and the seed does matter


def test_the_cli_with_the_same_seed_gives_the_same_model_in_two_processes(tmp_path):
    args = ["--subset", "300", "--epochs", "2", "--hidden", "16", "--dropout", "0.2", "--seed", "3"]
    outputs = []
    for name, hash_seed in [("a", "1"), ("b", "2")]:
        out = tmp_path / name
        command = [sys.executable, "-m", "chainrule", "train", *args, "--quiet", "--no-plots"]
        _in_a_new_process([*command, "--out", str(out)], hash_seed)
        history = json.loads((out / "history.json").read_text())
        del history["seconds"]
        ckpt = cr.load_checkpoint(out / "model.npz")
        outputs.append((history, ckpt))
    (history_a, a), (history_b, b) = outputs
    assert history_a == history_b
    for store in ("params", "buffers"):
        for k, v in getattr(a.model, store).items():
            np.testing.assert_array_equal(v, getattr(b.model, store)[k])
    assert a.optimizer is not None
    assert b.optimizer is not None
    for name, slots in a.optimizer.state.items():
        for slot, value in slots.items():
            np.testing.assert_array_equal(value, b.optimizer.state[name][slot])
