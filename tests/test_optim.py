"""Optimizers and learning-rate schedules: convergence, first steps by hand, state, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import chainrule as cr
from chainrule.optim import OPTIMIZERS

NAMES = sorted(OPTIMIZERS)

# A learning rate that converges on the quadratic below, per optimizer.
QUADRATIC_LR = {
    "sgd": 0.1,
    "momentum": 0.05,
    "nesterov": 0.05,
    "adagrad": 0.5,
    "rmsprop": 0.05,
    "adam": 0.1,
    "adamw": 0.1,
}

A = np.array([1.0, 3.0, 0.5])
START = np.array([1.0, -2.0, 3.0])


def quadratic(p):
    return float(np.sum(A * p**2))


def quadratic_grad(p):
    return 2 * A * p


def run(optimizer, p, grad_fn, steps):
    params = {"p": p}
    for _ in range(steps):
        optimizer.step(params, {"p": grad_fn(params["p"])})
    return params["p"]


def one_step(optimizer, p, g):
    params = {"p": np.array(p, dtype=np.float64)}
    optimizer.step(params, {"p": np.array(g, dtype=np.float64)})
    return params["p"]


def test_every_optimizer_is_covered():
    assert set(QUADRATIC_LR) == set(OPTIMIZERS)


# -- (a) convergence --------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_decreases_a_quadratic(name):
    optimizer = OPTIMIZERS[name](lr=QUADRATIC_LR[name])
    p = run(optimizer, START.copy(), quadratic_grad, 200)
    assert np.isfinite(p).all()
    assert quadratic(p) < 1e-2 * quadratic(START)
    assert optimizer.iterations == 200


@pytest.mark.parametrize("name", NAMES)
def test_decreases_a_quadratic_in_float32(name):
    optimizer = OPTIMIZERS[name](lr=QUADRATIC_LR[name])
    p = run(optimizer, START.astype(np.float32), lambda p: (2 * A * p).astype(np.float32), 200)
    assert p.dtype == np.float32
    assert quadratic(p) < 1e-2 * quadratic(START)
    for slots in optimizer.state.values():
        for value in slots.values():
            assert value.dtype == np.float32


# -- (b) first steps, computed by hand ----------------------------------------------------------
P0 = [1.0, -2.0, 0.5]
G0 = [0.5, -1.0, 2.0]


def test_sgd_first_step():
    # p - lr * g
    assert_allclose(one_step(cr.SGD(lr=0.1), P0, G0), [0.95, -1.9, 0.3], rtol=0, atol=1e-15)


def test_sgd_docstring_example():
    p, g = {"w": np.array([1.0, 2.0])}, {"w": np.array([0.5, -1.0])}
    cr.SGD(lr=0.1).step(p, g)
    assert_allclose(p["w"], [0.95, 2.1], rtol=0, atol=1e-15)


def test_momentum_first_two_steps():
    # v = m * v + g; p -= lr * v. From v = 0: step 1 is p - lr * g, step 2 is p - lr * 1.9 g.
    opt = cr.Momentum(lr=0.1, momentum=0.9)
    params = {"p": np.array(P0)}
    opt.step(params, {"p": np.array(G0)})
    assert_allclose(params["p"], [0.95, -1.9, 0.3], rtol=0, atol=1e-15)
    assert_allclose(opt.state["p"]["v"], G0, rtol=0, atol=1e-15)
    opt.step(params, {"p": np.array(G0)})
    # v2 = 0.9 * v1 + g = 1.9 * g
    assert_allclose(opt.state["p"]["v"], [0.95, -1.9, 3.8], rtol=0, atol=1e-15)
    assert_allclose(params["p"], [0.855, -1.71, -0.08], rtol=0, atol=1e-15)


def test_nesterov_first_two_steps():
    # v = m * v + g; p -= lr * (g + m * v). Step 1: p - (1 + m) * lr * g = p - 0.19 * g.
    opt = cr.Nesterov(lr=0.1, momentum=0.9)
    params = {"p": np.array(P0)}
    opt.step(params, {"p": np.array(G0)})
    assert_allclose(params["p"], [0.905, -1.81, 0.12], rtol=0, atol=1e-15)
    assert_allclose(opt.state["p"]["v"], G0, rtol=0, atol=1e-15)
    # Step 2: v2 = 1.9 * g, p -= 0.1 * (g + 0.9 * v2) = 0.271 * g
    opt.step(params, {"p": np.array(G0)})
    assert_allclose(params["p"], [0.7695, -1.539, -0.422], rtol=0, atol=1e-14)


def test_adagrad_first_step():
    # h = g**2; p -= lr * g / (sqrt(h) + eps); eps = 0.5 makes its place visible.
    got = one_step(cr.AdaGrad(lr=0.1, eps=0.5), P0, G0)
    assert_allclose(got, [1.0 - 0.05 / 1.0, -2.0 + 0.1 / 1.5, 0.5 - 0.2 / 2.5], rtol=1e-14)
    # With the default eps = 1e-7 the step is lr * sign(g), nearly.
    got = one_step(cr.AdaGrad(lr=0.1), P0, G0)
    want = [1.0 - 0.05 / (0.5 + 1e-7), -2.0 + 0.1 / (1.0 + 1e-7), 0.5 - 0.2 / (2.0 + 1e-7)]
    assert_allclose(got, want, rtol=1e-14)


def test_adagrad_accumulates():
    # h = 2 g**2 after two equal gradients: the second step is lr * g / (sqrt(2) |g| + eps).
    opt = cr.AdaGrad(lr=0.1, eps=1e-7)
    params = {"p": np.array([0.0])}
    opt.step(params, {"p": np.array([2.0])})
    opt.step(params, {"p": np.array([2.0])})
    want = -0.2 / (2.0 + 1e-7) - 0.2 / (math.sqrt(8.0) + 1e-7)
    assert_allclose(params["p"], [want], rtol=1e-14)


def test_rmsprop_first_step():
    # h = (1 - rho) * g**2 = 0.25 * g**2; p -= lr * g / (0.5 * |g| + eps)
    got = one_step(cr.RMSProp(lr=0.1, rho=0.75, eps=0.5), P0, G0)
    want = [1.0 - 0.05 / 0.75, -2.0 + 0.1 / 1.0, 0.5 - 0.2 / 1.5]
    assert_allclose(got, want, rtol=1e-14)


def test_adam_first_step_is_lr_times_sign():
    # m_hat = g and v_hat = g**2 after one step, so p -= lr * g / (|g| + eps).
    got = one_step(cr.Adam(lr=0.1, eps=1e-8), P0, G0)
    want = [1.0 - 0.05 / (0.5 + 1e-8), -2.0 + 0.1 / (1.0 + 1e-8), 0.5 - 0.2 / (2.0 + 1e-8)]
    assert_allclose(got, want, rtol=1e-14)
    assert_allclose(got, np.array(P0) - 0.1 * np.sign(G0), rtol=1e-7)


def test_adam_eps_is_added_to_the_bias_corrected_root():
    # The textbook form: eps is added to sqrt(v_hat), not to sqrt(v). With eps = 0.5:
    got = one_step(cr.Adam(lr=0.1, beta1=0.9, beta2=0.999, eps=0.5), P0, G0)
    assert_allclose(got, [1.0 - 0.05 / 1.0, -2.0 + 0.1 / 1.5, 0.5 - 0.2 / 2.5], rtol=1e-12)


def test_adam_second_step():
    # g1 = 1, g2 = -1 with beta1 = 0.5, beta2 = 0.5:
    # m = 0.5, then 0.25 - 0.5 = -0.25; m_hat = -0.25 / 0.75 = -1/3
    # v = 0.5, then 0.25 + 0.5 = 0.75; v_hat = 0.75 / 0.75 = 1
    opt = cr.Adam(lr=0.1, beta1=0.5, beta2=0.5, eps=1e-8)
    params = {"p": np.array([0.0])}
    opt.step(params, {"p": np.array([1.0])})
    opt.step(params, {"p": np.array([-1.0])})
    want = -0.1 * 1.0 / (1.0 + 1e-8) + 0.1 * (1 / 3) / (1.0 + 1e-8)
    assert_allclose(params["p"], [want], rtol=1e-12)
    assert_allclose(opt.state["p"]["m"], [-0.25], rtol=1e-15)
    assert_allclose(opt.state["p"]["v"], [0.75], rtol=1e-15)


def test_adamw_first_step_decays_the_weights_directly():
    # p * (1 - lr * wd) - lr * g / (|g| + eps); lr * wd = 0.05
    got = one_step(cr.AdamW(lr=0.1, weight_decay=0.5, eps=1e-8), P0, G0)
    want = [
        1.0 * 0.95 - 0.05 / (0.5 + 1e-8),
        -2.0 * 0.95 + 0.1 / (1.0 + 1e-8),
        0.5 * 0.95 - 0.2 / (2.0 + 1e-8),
    ]
    assert_allclose(got, want, rtol=1e-14)


def test_adam_weight_decay_goes_through_the_gradient():
    # Coupled: g' = g + wd * p = [1.0, -2.0, 2.25], then the Adam step lr * sign(g').
    got = one_step(cr.Adam(lr=0.1, weight_decay=0.5, eps=1e-8), P0, G0)
    want = [
        1.0 - 0.1 * 1.0 / (1.0 + 1e-8),
        -2.0 + 0.1 * 2.0 / (2.0 + 1e-8),
        0.5 - 0.1 * 2.25 / (2.25 + 1e-8),
    ]
    assert_allclose(got, want, rtol=1e-12)


def test_sgd_weight_decay_first_step():
    # g' = g + wd * p = [1.0, -2.0, 2.25]; p - 0.1 * g'
    got = one_step(cr.SGD(lr=0.1, weight_decay=0.5), P0, G0)
    assert_allclose(got, [0.9, -1.8, 0.275], rtol=0, atol=1e-15)


# -- (c) lr = 0 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_zero_learning_rate_leaves_parameters_bit_identical(name):
    rng = np.random.default_rng(1)
    for dtype in (np.float64, np.float32):
        kwargs = {"weight_decay": 0.3} if name != "adamw" else {}
        optimizer = OPTIMIZERS[name](lr=0.0, **kwargs)
        params = {"W": rng.normal(size=(4, 3)).astype(dtype), "b": rng.uniform(1, 2, 3)}
        params["b"] = params["b"].astype(dtype)
        start = {k: v.copy() for k, v in params.items()}
        for _ in range(5):
            grads = {k: rng.normal(size=v.shape).astype(dtype) for k, v in params.items()}
            optimizer.step(params, grads)
        for key in params:
            assert params[key].dtype == dtype
            assert params[key].tobytes() == start[key].tobytes()


# -- (d) constructor validation -----------------------------------------------------------------
def test_negative_learning_rate_message():
    with pytest.raises(ValueError, match=r"Invalid learning rate: -0\.1"):
        cr.SGD(lr=-0.1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("lr", [-0.1, float("nan"), float("inf")])
def test_every_optimizer_refuses_a_bad_learning_rate(name, lr):
    with pytest.raises(ValueError, match="Invalid learning rate"):
        OPTIMIZERS[name](lr=lr)


@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_refuses_negative_weight_decay(name):
    with pytest.raises(ValueError, match=r"Invalid weight_decay: -0\.01"):
        OPTIMIZERS[name](lr=0.1, weight_decay=-0.01)


@pytest.mark.parametrize("lr", ["0.1", None, True, np.array([0.1])])
def test_learning_rate_must_be_a_real_number(lr):
    with pytest.raises(TypeError, match="learning rate must be a real number"):
        cr.SGD(lr=lr)


@pytest.mark.parametrize("cls", [cr.Adam, cr.AdamW])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta1": 1.0}, r"Invalid beta1: 1\.0"),
        ({"beta1": -0.1}, r"Invalid beta1: -0\.1"),
        ({"beta2": 1.5}, r"Invalid beta2: 1\.5"),
        ({"beta2": float("nan")}, r"Invalid beta2: nan"),
        ({"eps": 0.0}, r"Invalid eps: 0\.0"),
    ],
)
def test_adam_refuses_bad_hyperparameters(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(lr=0.1, **kwargs)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: cr.Momentum(momentum=1.0), r"Invalid momentum: 1\.0"),
        (lambda: cr.Nesterov(momentum=-0.5), r"Invalid momentum: -0\.5"),
        (lambda: cr.RMSProp(rho=1.0), r"Invalid rho: 1\.0"),
        (lambda: cr.AdaGrad(eps=-1e-7), r"Invalid eps: -1e-07"),
    ],
)
def test_other_hyperparameters_are_checked(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_step_checks_names_and_shapes():
    opt = cr.SGD(lr=0.1)
    with pytest.raises(ValueError, match="same names"):
        opt.step({"a": np.zeros(2)}, {"b": np.zeros(2)})
    with pytest.raises(ValueError, match=r"gradient a has shape \(3,\), parameter \(2,\)"):
        opt.step({"a": np.zeros(2)}, {"a": np.zeros(3)})


def test_config_and_repr_rebuild_the_optimizer():
    for cls in OPTIMIZERS.values():
        opt = cls(lr=0.25, weight_decay=0.125)
        again = cls(**opt.config())
        assert again.config() == opt.config()
        assert repr(opt).startswith(f"{cls.__name__}(lr=0.25")


# -- (e) state_dict round trip --------------------------------------------------------------------
def _grads(rng, params):
    return {k: rng.normal(size=v.shape) for k, v in params.items()}


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_resumes_exactly(name):
    rng = np.random.default_rng(2)
    params = {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    first = OPTIMIZERS[name](lr=0.05, weight_decay=0.01)
    for _ in range(4):
        first.step(params, _grads(rng, params))

    state = first.state_dict()
    assert state["type"] == first.__class__.__name__
    assert state["iterations"] == 4
    assert sorted(state["state"]) == ["W", "b"]
    for slots in state["state"].values():
        assert sorted(slots) == sorted(first.slots)

    second = OPTIMIZERS[name](**state["config"])
    second.load_state_dict(state)
    assert second.iterations == 4
    twin = {k: v.copy() for k, v in params.items()}
    for _ in range(3):
        grads = _grads(rng, params)
        first.step(params, grads)
        second.step(twin, {k: v.copy() for k, v in grads.items()})
    for key in params:
        assert_array_equal(twin[key], params[key])
        assert twin[key].tobytes() == params[key].tobytes()
    for key, slots in first.state.items():
        for slot, value in slots.items():
            assert_array_equal(second.state[key][slot], value)


@pytest.mark.parametrize("name", [n for n in NAMES if OPTIMIZERS[n].slots])
def test_state_dict_is_a_snapshot(name):
    # Steps taken after state_dict() must not change it, nor a loaded copy change the source.
    rng = np.random.default_rng(3)
    params = {"w": rng.normal(size=4)}
    opt = OPTIMIZERS[name](lr=0.1)
    opt.step(params, _grads(rng, params))
    state = opt.state_dict()
    frozen = {slot: value.copy() for slot, value in state["state"]["w"].items()}
    opt.step(params, _grads(rng, params))
    for slot, value in frozen.items():
        assert_array_equal(state["state"]["w"][slot], value)

    loaded = OPTIMIZERS[name](lr=0.1)
    loaded.load_state_dict(state)
    for value in state["state"]["w"].values():
        value += 1.0
    for slot, value in frozen.items():
        assert_array_equal(loaded.state["w"][slot], value)


def test_load_state_dict_refuses_negative_iterations():
    with pytest.raises(ValueError, match="Invalid iterations"):
        cr.Adam().load_state_dict({"iterations": -1, "state": {}})


def test_load_state_dict_refuses_slots_of_another_optimizer():
    state = cr.Adam().state_dict()
    state["state"] = {"w": {"v": np.zeros(2)}}  # Momentum's slot
    with pytest.raises(ValueError, match="slots"):
        cr.Adam().load_state_dict(state)


def test_load_state_dict_refuses_another_kind_of_optimizer():
    with pytest.raises(ValueError, match="Adam cannot load the state of a Momentum"):
        cr.Adam().load_state_dict(cr.Momentum().state_dict())


def test_load_state_dict_restores_the_hyper_parameters():
    source = cr.AdamW(0.01, beta1=0.8, weight_decay=0.1)
    source.lr = 0.005  # as a schedule leaves it
    target = cr.AdamW()
    target.load_state_dict(source.state_dict())
    assert target.config() == source.config()
    assert target.initial_lr == 0.01


def test_a_subclass_with_its_own_constructor_loads_its_state():
    class Plain(cr.SGD):
        def __init__(self, lr: float) -> None:
            super().__init__(lr)

    source, target = Plain(0.1), Plain(0.5)
    source.lr = 0.05
    target.load_state_dict(source.state_dict())
    assert (target.lr, target.initial_lr) == (0.05, 0.1)
    with pytest.raises(ValueError, match=r"Plain has no hyper-parameters \['beta1'\]"):
        target.load_state_dict({**source.state_dict(), "config": {"beta1": 0.9}})
    with pytest.raises(ValueError, match="Invalid lr: -1"):
        target.load_state_dict({**source.state_dict(), "config": {"lr": -1}})


@pytest.mark.parametrize("name", NAMES)
def test_state_of_another_model_is_refused_before_any_update(name):
    opt = OPTIMIZERS[name](lr=0.1)
    opt.step({"w": np.ones(3)}, {"w": np.ones(3)})
    params = {"a": np.ones(2), "w": np.ones(4)}
    before = {k: v.copy() for k, v in params.items()}
    if not opt.slots:  # SGD keeps no state, so any model fits it
        opt.step(params, {k: np.ones_like(v) for k, v in params.items()})
        return
    with pytest.raises(
        ValueError, match=r"holds state w/\w+ of shape \(3,\) float64, but the model has \(4,\)"
    ):
        opt.step(params, {k: np.ones_like(v) for k, v in params.items()})
    assert all(np.array_equal(params[k], before[k]) for k in params)


# -- (f) weight decay ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_weight_decay_shrinks_weights_without_gradient(name):
    start = np.array([1.0, -2.0, 0.5])
    zero = np.zeros(3)
    decayed = run(OPTIMIZERS[name](lr=0.01, weight_decay=0.5), start.copy(), lambda p: zero, 10)
    assert np.all(np.abs(decayed) < np.abs(start))
    assert np.all(np.sign(decayed) == np.sign(start))
    kept = run(OPTIMIZERS[name](lr=0.01, weight_decay=0.0), start.copy(), lambda p: zero, 10)
    assert_array_equal(kept, start)


def test_sgd_weight_decay_is_a_geometric_shrink():
    # g = 0: p <- p - lr * wd * p = (1 - lr * wd) p, so after n steps (1 - lr * wd)**n p.
    p = run(cr.SGD(lr=0.1, weight_decay=0.5), np.array([2.0]), lambda p: np.zeros(1), 10)
    assert_allclose(p, [2.0 * 0.95**10], rtol=1e-14)


def test_adamw_decay_is_decoupled_from_the_gradient_scale():
    # AdamW's decay is lr * wd * p whatever the gradient; Adam's coupled decay is normalised away.
    p = run(cr.AdamW(lr=0.1, weight_decay=0.05), np.array([2.0]), lambda p: np.zeros(1), 3)
    assert_allclose(p, [2.0 * 0.995**3], rtol=1e-14)
    p = run(cr.Adam(lr=0.1, weight_decay=0.05), np.array([2.0]), lambda p: np.zeros(1), 3)
    assert_allclose(p, [2.0 - 0.3], rtol=1e-3)  # about lr * sign(wd * p) per step


# -- schedules -----------------------------------------------------------------------------------
def test_step_lr_values():
    schedule = cr.StepLR(step_size=2, gamma=0.5)
    assert [schedule(e, 0.1) for e in range(6)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.025], rel=1e-15
    )
    assert cr.StepLR(step_size=1, gamma=0.1)(3, 1.0) == pytest.approx(1e-3, rel=1e-12)


def test_cosine_lr_values():
    schedule = cr.CosineLR(epochs=4, min_lr=0.1)
    got = [schedule(e, 1.1) for e in range(7)]
    half = math.sqrt(2) / 2
    want = [1.1, 0.1 + (1 + half) / 2, 0.6, 0.1 + (1 - half) / 2, 0.1, 0.1, 0.1]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert cr.CosineLR(epochs=4)(2, 1.0) == pytest.approx(0.5, rel=1e-15)


@pytest.mark.parametrize(
    ("factory", "error", "message"),
    [
        (lambda: cr.StepLR(step_size=0), ValueError, "Invalid step_size: 0"),
        (lambda: cr.StepLR(step_size=1.5), TypeError, "step_size must be an integer"),
        (lambda: cr.StepLR(step_size=2, gamma=0.0), ValueError, "Invalid gamma: 0.0"),
        (lambda: cr.StepLR(step_size=2, gamma=-1), ValueError, "Invalid gamma: -1"),
        (lambda: cr.CosineLR(epochs=0), ValueError, "Invalid epochs: 0"),
        (lambda: cr.CosineLR(epochs="10"), TypeError, "epochs must be an integer"),
        (lambda: cr.CosineLR(epochs=10, min_lr=-0.1), ValueError, "Invalid min_lr: -0.1"),
    ],
)
def test_schedule_validation(factory, error, message):
    with pytest.raises(error, match=message):
        factory()


def test_constant_schedule_and_registry():
    from chainrule.schedules import SCHEDULES, ConstantLR

    assert ConstantLR()(7, 0.3) == 0.3
    assert set(SCHEDULES) == {"constant", "step", "cosine"}
    assert repr(cr.StepLR(3, 0.5)) == "StepLR(step_size=3, gamma=0.5)"


def _toy_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    y = (x @ np.array([1.0, -2.0, 0.5]) > 0).astype(np.int64)
    return x, y


def test_learning_rate_scheduler_sets_the_rate_each_epoch():
    x, y = _toy_problem()
    model = cr.MLP(3, [8], 2, rng=0)
    optimizer = cr.SGD(lr=0.2)
    history = cr.fit(
        model,
        x,
        y,
        loss=cr.SoftmaxCrossEntropy(),
        optimizer=optimizer,
        epochs=5,
        batch_size=16,
        seed=0,
        callbacks=[cr.LearningRateScheduler(cr.StepLR(step_size=2, gamma=0.5))],
    )
    assert history.lr == pytest.approx([0.2, 0.2, 0.1, 0.1, 0.05], rel=1e-15)
    assert optimizer.lr == pytest.approx(0.05, rel=1e-15)


def test_learning_rate_scheduler_rate_is_the_one_used():
    # A schedule that turns learning off after the first epoch freezes the weights.
    x, y = _toy_problem()
    model = cr.MLP(3, [8], 2, rng=0)
    initial = {k: v.copy() for k, v in model.params.items()}
    seen = []

    class Record(cr.Callback):
        def on_epoch_end(self, run, epoch, logs):
            seen.append({k: v.copy() for k, v in run.model.params.items()})

    history = cr.fit(
        model,
        x,
        y,
        loss=cr.SoftmaxCrossEntropy(),
        optimizer=cr.SGD(lr=0.2),
        epochs=3,
        batch_size=16,
        seed=0,
        callbacks=[cr.LearningRateScheduler(lambda e, lr: lr if e == 0 else 0.0), Record()],
    )
    assert history.lr == [0.2, 0.0, 0.0]
    for key in seen[0]:
        assert not np.array_equal(seen[0][key], initial[key])
        assert_array_equal(seen[1][key], seen[0][key])
        assert_array_equal(seen[2][key], seen[0][key])


def test_learning_rate_scheduler_cosine_in_fit_and_validation():
    x, y = _toy_problem()
    history = cr.fit(
        cr.MLP(3, [4], 2, rng=0),
        x,
        y,
        loss=cr.SoftmaxCrossEntropy(),
        optimizer=cr.Adam(lr=0.01),
        epochs=4,
        batch_size=32,
        seed=0,
        callbacks=[cr.LearningRateScheduler(cr.CosineLR(epochs=4))],
    )
    assert history.lr == pytest.approx(
        [0.01 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    )
    with pytest.raises(TypeError, match="schedule must be callable"):
        cr.LearningRateScheduler(0.1)


# -- gradient_descent ----------------------------------------------------------------------------
def test_gradient_descent_follows_the_formula():
    from chainrule.numerical import gradient_descent

    x, path = gradient_descent(quadratic, START, lr=0.1, step_num=3, grad=quadratic_grad)
    want = START.copy()
    for _ in range(3):
        want = want - 0.1 * quadratic_grad(want)
    assert_allclose(x, want, rtol=1e-15)
    assert path.shape == (4, 3)
    assert_array_equal(path[0], START)
    numeric, _ = gradient_descent(quadratic, START, lr=0.1, step_num=3)
    assert_allclose(numeric, want, rtol=1e-6)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        gradient_descent(quadratic, START, lr=0.0)
