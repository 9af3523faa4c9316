"""fit / evaluate / predict on small synthetic problems: learning, determinism, errors."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import chainrule as cr
from chainrule.data import Batches, train_validation_split


def xor(n, seed):
    """Two classes by the sign of x0 * x1, away from the axes: needs a hidden layer."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2))
    x += 0.1 * np.sign(x)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    return x, y


def blobs(n, seed):
    """Three Gaussian blobs in 2-D around well separated centres."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 3.0], [-3.0, -2.0], [3.0, -2.0]])
    y = rng.integers(0, 3, size=n)
    x = centres[y] + rng.normal(scale=0.7, size=(n, 2))
    return x, y


def train(x, y, *, seed=0, epochs=5, model=None, optimizer=None, **kwargs):
    model = model if model is not None else cr.MLP(2, [16], 3, rng=seed)
    optimizer = optimizer if optimizer is not None else cr.Adam(lr=0.02)
    history = cr.fit(
        model,
        x,
        y,
        loss=kwargs.pop("loss", cr.SoftmaxCrossEntropy()),
        optimizer=optimizer,
        epochs=epochs,
        batch_size=kwargs.pop("batch_size", 32),
        seed=seed,
        **kwargs,
    )
    return model, history


def weights(model):
    return {k: v.copy() for k, v in {**model.params, **model.buffers}.items()}


def assert_same_weights(a, b):
    """Equal arrays in the same order (a leading Rescaling moves the names, not the values)."""
    assert len(a) == len(b)
    for (key, x), y in zip(a.items(), b.values(), strict=True):
        assert x.dtype == y.dtype
        assert x.tobytes() == y.tobytes(), key


def digest(model):
    h = hashlib.sha256()
    for key, value in sorted({**model.params, **model.buffers}.items()):
        h.update(key.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def finite(model):
    return all(np.isfinite(v).all() for v in {**model.params, **model.buffers}.values())


class Snapshots(cr.Callback):
    """Keeps a copy of the parameters and buffers at the end of every epoch."""

    def __init__(self):
        self.at = {}

    def on_epoch_end(self, run, epoch, logs):
        self.at[epoch] = weights(run.model)


# -- learning ----------------------------------------------------------------------------------
def test_fit_learns_xor():
    x, y = xor(400, seed=0)
    model = cr.MLP(2, [16], 2, rng=0)
    _, history = train(x, y, model=model, optimizer=cr.Adam(lr=0.05), epochs=30)
    x_test, y_test = xor(400, seed=1)
    result = cr.evaluate(model, x_test, y_test, cr.SoftmaxCrossEntropy())
    assert result["accuracy"] > 0.9  # chance is 0.5; a linear model stays near it
    assert history.accuracy[-1] > 0.9
    assert history.loss[-1] < 0.5 * history.loss[0]


def test_fit_learns_three_blobs():
    x, y = blobs(300, seed=0)
    model, _ = train(x, y, epochs=10)
    x_test, y_test = blobs(300, seed=1)
    assert cr.evaluate(model, x_test, y_test)["accuracy"] > 0.95  # chance is 1/3
    assert np.mean(model.predict(x_test) == y_test) > 0.95


def test_fit_with_one_hot_targets_and_softmax_output():
    x, y = blobs(300, seed=0)
    onehot = np.eye(3)[y]
    model = cr.MLP(2, [16], 3, output_activation="softmax", rng=0)
    train(x, onehot, model=model, loss=cr.CrossEntropy(), epochs=10)
    x_test, y_test = blobs(300, seed=1)
    assert cr.evaluate(model, x_test, np.eye(3)[y_test])["accuracy"] > 0.95
    assert_allclose(model.predict_proba(x_test), model.forward(x_test), rtol=0, atol=0)


def test_binary_single_output_model():
    x, y = xor(400, seed=0)
    t = y[:, None].astype(np.float64)
    model = cr.MLP(2, [16], 1, rng=0)
    loss = cr.BinaryCrossEntropy(from_logits=True)
    _, history = train(x, t, model=model, loss=loss, optimizer=cr.Adam(lr=0.05), epochs=30)
    assert history.accuracy[-1] > 0.9
    x_test, y_test = xor(300, seed=1)
    pred = model.predict(x_test)
    assert pred.shape == (300,)
    assert np.issubdtype(pred.dtype, np.integer)
    assert set(np.unique(pred)) <= {0, 1}
    assert np.mean(pred == y_test) > 0.9
    proba = model.predict_proba(x_test)
    assert proba.shape == (300, 1)
    assert np.all((proba >= 0) & (proba <= 1))
    assert_array_equal(pred, (proba[:, 0] > 0.5).astype(int))
    result = cr.evaluate(model, x_test, y_test[:, None].astype(float), loss)
    assert result["accuracy"] == pytest.approx(np.mean(pred == y_test))


# -- history and validation -------------------------------------------------------------------
def test_history_has_one_entry_per_epoch():
    x, y = blobs(100, seed=0)
    _, history = train(x, y, epochs=4)
    assert len(history) == 4
    assert history.epoch == [0, 1, 2, 3]
    for key in ("loss", "accuracy", "lr", "seconds"):
        assert len(getattr(history, key)) == 4, key
    assert history.val_loss == []
    assert history.val_accuracy == []
    assert history.lr == [0.02] * 4
    assert all(s >= 0 for s in history.seconds)
    assert all(0 <= a <= 1 for a in history.accuracy)
    # accuracy counts whole samples of the 100
    assert all(abs(a * 100 - round(a * 100)) < 1e-9 for a in history.accuracy)
    assert set(history.to_dict()) == {
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "seconds",
    }
    assert cr.History.from_dict(history.to_dict()) == history


def test_validation_data_populates_val_fields():
    x, y = blobs(200, seed=0)
    x_val, y_val = blobs(50, seed=1)
    model, history = train(x, y, epochs=3, validation_data=(x_val, y_val))
    assert len(history.val_loss) == len(history.val_accuracy) == 3
    final = cr.evaluate(model, x_val, y_val, cr.SoftmaxCrossEntropy())
    assert history.val_loss[-1] == final["loss"]
    assert history.val_accuracy[-1] == final["accuracy"]
    assert all(abs(a * 50 - round(a * 50)) < 1e-9 for a in history.val_accuracy)


def test_validation_split_populates_val_fields():
    x, y = blobs(100, seed=0)
    _, history = train(x, y, epochs=3, validation_split=0.2)
    assert len(history.val_loss) == len(history.val_accuracy) == 3
    # 80 samples trained, 20 held out
    assert all(abs(a * 80 - round(a * 80)) < 1e-9 for a in history.accuracy)
    assert all(abs(a * 20 - round(a * 20)) < 1e-9 for a in history.val_accuracy)
    # same seed, same split, same run
    _, again = train(x, y, epochs=3, validation_split=0.2)
    assert again.val_loss == history.val_loss


def test_validation_data_and_split_together_are_refused():
    x, y = blobs(100, seed=0)
    with pytest.raises(ValueError, match="not both"):
        train(x, y, epochs=1, validation_data=(x, y), validation_split=0.2)


def test_train_validation_split_partitions():
    x = np.arange(20.0)[:, None]
    y = np.arange(20)
    (x_tr, y_tr), (x_val, y_val) = train_validation_split(x, y, 0.25, rng=0)
    assert len(x_val) == 5
    assert len(x_tr) == 15
    assert sorted(np.concatenate([y_tr, y_val]).tolist()) == list(range(20))
    assert_array_equal(x_tr[:, 0], y_tr)
    for bad in (0, 1, 1.5, -0.1, 0.01, float("nan")):
        with pytest.raises(ValueError, match="validation_split"):
            train_validation_split(x, y, bad, rng=0)
    with pytest.raises(TypeError, match="validation_split must be a real number, got str"):
        train_validation_split(x, y, "0.25", rng=0)
    (_, same), _ = train_validation_split(x, y, np.float32(0.25), rng=0)  # any real type
    assert_array_equal(same, y_tr)


# -- shuffling -------------------------------------------------------------------------------
def test_batches_are_a_fresh_permutation_each_epoch():
    n = 103
    x = np.arange(n, dtype=np.float64)[:, None]
    y = np.arange(n)
    batches = Batches(x, y, batch_size=10, dtype=np.float64)
    assert len(batches) == 11
    rng = np.random.default_rng(0)
    orders = []
    for _ in range(3):
        seen, sizes = [], []
        for xb, yb in batches.epoch(rng):
            assert_array_equal(xb[:, 0], yb)
            seen.extend(yb.tolist())
            sizes.append(len(yb))
        assert sizes == [10] * 10 + [3]
        assert sorted(seen) == list(range(n))  # every sample once: no repeats, none left out
        orders.append(seen)
    assert orders[0] != orders[1]
    assert orders[1] != orders[2]
    assert orders[0] != list(range(n))
    in_order = [int(v) for _, yb in batches.epoch(None) for v in yb]
    assert in_order == list(range(n))


def test_a_remainder_smaller_than_the_models_minimum_joins_the_batch_before():
    x, y = np.arange(17.0)[:, None], np.arange(17)
    assert [len(b) for _, b in Batches(x, y, 8, np.float64).epoch(None)] == [8, 8, 1]
    merged = Batches(x, y, 8, np.float64, min_batch=2)
    assert len(merged) == 2
    batches = [b.copy() for _, b in merged.epoch(np.random.default_rng(0))]
    assert [len(b) for b in batches] == [8, 9]
    assert sorted(np.concatenate(batches)) == list(range(17))


@pytest.mark.parametrize("size", [2, 3, 4])
def test_the_parts_of_each_batch_make_up_the_batch_of_one_process(size):
    """Data-parallel: every process shuffles alike and takes a contiguous slice of each batch."""
    x, y = np.arange(104.0)[:, None], np.arange(104)  # a last batch of 4: a slice for each
    whole = [b.copy() for _, b in Batches(x, y, 10, np.float64).epoch(np.random.default_rng(5))]
    parts = [Batches(x, y, 10, np.float64, part=(r, size)) for r in range(size)]
    assert {len(p) for p in parts} == {len(whole)}  # the same steps everywhere
    sliced = [[b.copy() for _, b in p.epoch(np.random.default_rng(5))] for p in parts]
    for step, batch in enumerate(whole):
        slices = [sliced[r][step] for r in range(size)]
        assert_array_equal(np.concatenate(slices), batch)
        assert max(map(len, slices)) - min(map(len, slices)) <= 1  # 10 = 4 + 3 + 3 at 3


def test_a_remainder_smaller_than_the_number_of_processes_joins_the_batch_before():
    x, y = np.arange(22.0)[:, None], np.arange(22)
    sizes = [
        [len(b) for _, b in Batches(x, y, 10, np.float64, part=(r, 3)).epoch(None)]
        for r in range(3)
    ]
    assert sizes == [[3, 4], [3, 4], [4, 4]]  # the 2 left over join the second batch of 10
    with pytest.raises(ValueError, match="batch_size 2 is smaller than the 3 processes"):
        Batches(x, y, 2, np.float64, part=(0, 3))
    with pytest.raises(ValueError, match=r"rank must be below size 3, got 3"):
        Batches(x, y, 10, np.float64, part=(3, 3))


def test_batchnorm_trains_when_the_last_batch_would_hold_one_sample():
    x, y = blobs(17, seed=0)
    model = cr.MLP(2, [6], 3, batchnorm=True, rng=0)
    _, history = train(x, y, model=model, epochs=2, batch_size=8)
    assert len(history) == 2
    _, history = train(x, y, model=model, epochs=2, batch_size=8, validation_split=0.2)
    assert len(history) == 2


def test_batches_convert_to_the_model_dtype():
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    batches = Batches(x, np.zeros(6, int), batch_size=4, dtype=np.float32)
    got = [xb.copy() for xb, _ in batches.epoch(None)]
    assert all(b.dtype == np.float32 for b in got)
    assert_array_equal(np.concatenate(got), x.astype(np.float32))
    with pytest.raises(TypeError, match="floating"):
        Batches(x, np.zeros(6, int), batch_size=4, dtype=np.int32)
    assert Batches(x, np.zeros(6, int), batch_size=100, dtype=np.float64).batch_size == 6


class Recorder(cr.Layer):
    """Identity layer that records the first input column of every training batch."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def _forward(self, x, training):
        if training:
            self.batches.append(x[:, 0].astype(int).tolist())
        return x

    def _backward(self, dy, need_dx):
        return dy


def test_fit_reshuffles_every_epoch_without_repeats():
    n = 50
    x = np.zeros((n, 2))
    x[:, 0] = np.arange(n)  # the sample's id rides along as a feature
    y = np.arange(n) % 2
    recorder = Recorder()
    model = cr.Sequential(recorder, cr.Dense(2, 2, rng=0))
    cr.fit(
        model,
        x,
        y,
        loss=cr.SoftmaxCrossEntropy(),
        optimizer=cr.SGD(lr=1e-4),
        epochs=3,
        batch_size=16,
        seed=0,
    )
    assert [len(b) for b in recorder.batches] == [16, 16, 16, 2] * 3
    epochs = [[i for batch in recorder.batches[e : e + 4] for i in batch] for e in (0, 4, 8)]
    for order in epochs:
        assert sorted(order) == list(range(n))
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs[0] != list(range(n))


# -- determinism ---------------------------------------------------------------------------------
def _dropout_run(seed):
    x, y = blobs(120, seed=0)
    model = cr.MLP(2, [16, 8], 3, dropout=0.2, batchnorm=True, rng=seed)
    return train(x, y, seed=seed, model=model, epochs=3, validation_split=0.25)


def test_same_seed_same_history_and_weights():
    model_a, history_a = _dropout_run(seed=5)
    model_b, history_b = _dropout_run(seed=5)
    for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert getattr(history_a, key) == getattr(history_b, key), key
    assert_same_weights(weights(model_a), weights(model_b))


def test_different_seeds_differ():
    model_a, history_a = _dropout_run(seed=5)
    model_b, history_b = _dropout_run(seed=6)
    assert history_a.loss != history_b.loss
    assert digest(model_a) != digest(model_b)


def test_fit_seed_alone_changes_the_shuffle():
    x, y = blobs(120, seed=0)
    model_a, _ = train(x, y, model=cr.MLP(2, [8], 3, rng=0), seed=1, epochs=2)
    model_b, _ = train(x, y, model=cr.MLP(2, [8], 3, rng=0), seed=2, epochs=2)
    assert digest(model_a) != digest(model_b)


SCRIPT = """
import hashlib, numpy as np, chainrule as cr
rng = np.random.default_rng(0)
centres = np.array([[0.0, 3.0], [-3.0, -2.0], [3.0, -2.0]])
y = rng.integers(0, 3, size=120)
x = centres[y] + rng.normal(scale=0.7, size=(120, 2))
model = cr.MLP(2, [16, 8], 3, dropout=0.2, batchnorm=True, rng=5)
cr.fit(model, x, y, loss=cr.SoftmaxCrossEntropy(), optimizer=cr.Adam(lr=0.02), epochs=3,
       batch_size=32, seed=5, validation_split=0.25)
h = hashlib.sha256()
for key, value in sorted({**model.params, **model.buffers}.items()):
    h.update(key.encode())
    h.update(np.ascontiguousarray(value).tobytes())
print(h.hexdigest())
"""


def test_same_seed_same_weights_across_processes():
    digests = [
        subprocess.run(
            [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120
        ).stdout.strip()
        for _ in range(2)
    ]
    assert len(digests[0]) == 64
    assert digests[0] == digests[1]
    model, _ = _dropout_run(seed=5)  # the script is this run, written out
    assert digest(model) == digests[0]


# -- uint8 input -------------------------------------------------------------------------------
def test_uint8_input_is_scaled_by_the_models_rescaling_like_predict():
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, size=(90, 6), dtype=np.uint8)
    y = (x8[:, 0].astype(int) + x8[:, 1] > 255).astype(np.int64)
    scaled = x8.astype(np.float32) * np.float32(1 / 255)  # what Rescaling(1/255) does
    kept = x8.copy()
    raw = cr.MLP(6, [8], 2, rescale=1 / 255, rng=0)
    model_a, history_a = train(x8, y, model=raw, epochs=3, batch_size=16)
    model_b, history_b = train(scaled, y, model=cr.MLP(6, [8], 2, rng=0), epochs=3, batch_size=16)
    assert_same_weights(weights(model_a), weights(model_b))
    assert history_a.loss == history_b.loss
    assert_array_equal(x8, kept)  # the caller's data are not touched
    assert_array_equal(model_a.predict_proba(x8), model_b.predict_proba(scaled))
    assert_array_equal(model_a.forward(x8), model_b.forward(scaled))


def test_uint8_input_in_a_float64_model():
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, size=(40, 3), dtype=np.uint8)
    y = (x8[:, 0] > 127).astype(np.int64)
    scaled = x8.astype(np.float64) * (1 / 255)
    make = lambda **kw: cr.MLP(3, [4], 2, rng=0, dtype=np.float64, **kw)  # noqa: E731
    model_a, _ = train(x8, y, model=make(rescale=1 / 255), epochs=2, batch_size=8)
    model_b, _ = train(scaled, y, model=make(), epochs=2, batch_size=8)
    assert_same_weights(weights(model_a), weights(model_b))


# -- early stopping ----------------------------------------------------------------------------
def test_early_stopping_stops_on_a_plateau():
    # The learning rate drops to 0 from epoch 2: validation loss cannot improve after epoch 1.
    x, y = blobs(100, seed=0)
    x_val, y_val = blobs(40, seed=1)
    stopper = cr.EarlyStopping(monitor="val_loss", patience=2)
    freeze = cr.LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else 0.0)
    _, history = train(x, y, epochs=50, validation_data=(x_val, y_val), callbacks=[freeze, stopper])
    assert len(history) < 50
    assert stopper.best_epoch == 1
    assert history.val_loss[1] < history.val_loss[0]
    assert history.val_loss[2:] == [history.val_loss[1]] * (len(history) - 2)
    assert len(history) == stopper.best_epoch + stopper.patience + 2


class Scripted(cr.Callback):
    """Replaces the monitored figure by a scripted sequence, so the best epoch is known."""

    def __init__(self, key, values):
        self.key, self.values = key, values

    def on_epoch_end(self, run, epoch, logs):
        logs[self.key] = self.values[epoch]


@pytest.mark.parametrize(
    ("monitor", "values"),
    [("val_loss", [1.0, 0.5, 0.7, 0.6, 0.9, 0.9]), ("val_accuracy", [0.5, 0.8, 0.7, 0.8, 0.6, 1])],
)
def test_early_stopping_restores_the_best_weights(monitor, values):
    x, y = blobs(100, seed=0)
    x_val, y_val = blobs(40, seed=1)
    snapshots = Snapshots()
    stopper = cr.EarlyStopping(monitor=monitor, patience=2)
    model = cr.MLP(2, [8], 3, batchnorm=True, rng=0)
    _, history = train(
        x,
        y,
        model=model,
        epochs=6,
        validation_data=(x_val, y_val),
        callbacks=[Scripted(monitor, values), stopper, snapshots],
    )
    assert stopper.best_epoch == 1
    assert len(history) == 5  # no improvement in epochs 2, 3 (patience 2) and 4: stop
    assert_same_weights(weights(model), snapshots.at[1])
    for later in (2, 3, 4):
        assert digest_of(snapshots.at[later]) != digest_of(snapshots.at[1])


def digest_of(state):
    return hashlib.sha256(b"".join(state[k].tobytes() for k in sorted(state))).hexdigest()


def test_early_stopping_without_restore_keeps_the_last_weights():
    x, y = blobs(100, seed=0)
    snapshots = Snapshots()
    stopper = cr.EarlyStopping(monitor="loss", patience=0, restore_best_weights=False)
    model, history = train(
        x,
        y,
        epochs=6,
        callbacks=[Scripted("loss", [1.0, 2.0, 0.5, 0.1, 0.1, 0.1]), stopper, snapshots],
    )
    assert len(history) == 2
    assert_same_weights(weights(model), snapshots.at[1])


def test_an_early_stopping_callback_reused_for_another_run_starts_afresh():
    x, y = blobs(100, seed=0)
    stopper = cr.EarlyStopping(monitor="loss", patience=1)
    first, _ = train(x, y, epochs=4, callbacks=[Scripted("loss", [0.1, 0.2, 0.3, 0.4]), stopper])
    assert stopper.best_epoch == 0
    # Worse scores than the first run's best: they must count as improvements here, and the
    # first model's weights must never be restored into the second.
    second = cr.MLP(2, [16], 3, rng=1)
    _, history = train(
        x, y, model=second, epochs=3, callbacks=[Scripted("loss", [0.9, 0.8, 0.7]), stopper]
    )
    assert len(history) == 3
    assert stopper.best_epoch == 2
    assert digest_of(weights(second)) != digest_of(weights(first))


def test_early_stopping_on_val_loss_without_validation_data():
    x, y = blobs(60, seed=0)
    with pytest.raises(ValueError, match=r"val_loss.*no validation data.*monitor 'loss'"):
        train(x, y, epochs=3, callbacks=[cr.EarlyStopping(monitor="val_loss")])


def test_early_stopping_validation():
    with pytest.raises(ValueError, match="Invalid monitor: 'lr'"):
        cr.EarlyStopping(monitor="lr")
    with pytest.raises(ValueError, match="Invalid monitor: 'val_acc'"):
        cr.EarlyStopping(monitor="val_acc")
    with pytest.raises(ValueError, match="Invalid patience: -1"):
        cr.EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="Invalid min_delta: nan"):
        cr.EarlyStopping(min_delta=float("nan"))
    with pytest.raises(TypeError, match="min_delta must be a real number, got str"):
        cr.EarlyStopping(min_delta="x")


def test_callback_hooks_and_stop_flag():
    x, y = blobs(70, seed=0)
    calls = []

    class Spy(cr.Callback):
        def on_train_begin(self, run):
            calls.append(("begin", run.epochs, run.batches_per_epoch))

        def on_epoch_begin(self, run, epoch):
            calls.append(("epoch", epoch))

        def on_batch_end(self, run, batch, loss):
            assert np.isfinite(loss)
            calls.append(("batch", batch))

        def on_epoch_end(self, run, epoch, logs):
            assert set(logs) == {"loss", "accuracy"}
            run.stop = epoch == 1

        def on_train_end(self, run):
            calls.append(("end", len(run.history)))

    _, history = train(x, y, epochs=5, batch_size=32, callbacks=[Spy()])
    assert len(history) == 2
    batches = [("batch", 0), ("batch", 1), ("batch", 2)]
    assert calls == [
        ("begin", 5, 3),
        ("epoch", 0),
        *batches,
        ("epoch", 1),
        *batches,
        ("end", 2),
    ]


# -- divergence --------------------------------------------------------------------------------
def regression(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return x, np.c_[x @ np.array([1.0, -2.0, 3.0])]


def test_divergence_raises_and_restores_the_epoch_start():
    x, t = regression()
    model = cr.MLP(3, [8], 1, rng=0)
    start = weights(model)
    with pytest.raises(cr.DivergenceError, match=r"diverged at epoch 1, batch \d+") as info:
        cr.fit(
            model,
            x,
            t,
            loss=cr.MeanSquaredError(),
            optimizer=cr.SGD(lr=1e3),
            epochs=5,
            batch_size=8,
            seed=0,
        )
    assert info.value.epoch == 0
    assert info.value.batch >= 1
    assert f"batch {info.value.batch + 1}:" in str(info.value)
    assert isinstance(info.value, FloatingPointError)
    assert finite(model)
    assert_same_weights(weights(model), start)


def test_divergence_in_a_later_epoch_restores_the_previous_epoch_end():
    x, t = regression()
    model = cr.MLP(3, [8], 1, rng=0)
    snapshots = Snapshots()
    boom = cr.LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else 1e3)
    with pytest.raises(cr.DivergenceError, match=r"epoch 3, batch \d+") as info:
        cr.fit(
            model,
            x,
            t,
            loss=cr.MeanSquaredError(),
            optimizer=cr.SGD(lr=0.01),
            epochs=5,
            batch_size=8,
            seed=0,
            callbacks=[boom, snapshots],
        )
    assert info.value.epoch == 2
    assert sorted(snapshots.at) == [0, 1]
    assert_same_weights(weights(model), snapshots.at[1])


def test_divergence_leaves_finite_weights_when_the_last_step_of_an_epoch_overflows():
    # One batch per epoch and a step so large that the update itself overflows float32.
    rng = np.random.default_rng(0)
    x = 10 * rng.normal(size=(16, 2))
    y = (x[:, 0] > 0).astype(np.int64)
    model = cr.MLP(2, [4], 2, rng=0)
    start = weights(model)
    with pytest.raises(cr.DivergenceError, match="epoch 1, batch 1"):
        train(x, y, model=model, optimizer=cr.SGD(lr=3e38), epochs=5, batch_size=16)
    assert finite(model)
    assert_same_weights(weights(model), start)


# -- evaluate / predict --------------------------------------------------------------------------
def test_evaluate_returns_accuracy_and_loss():
    x, y = blobs(150, seed=0)
    model, _ = train(x, y, epochs=2)
    loss = cr.SoftmaxCrossEntropy()
    result = cr.evaluate(model, x, y, loss, batch_size=7)
    assert set(result) == {"accuracy", "loss"}
    assert result["accuracy"] == np.mean(model.predict(x) == y)
    assert result["loss"] == pytest.approx(loss.forward(model.forward(x), y), rel=1e-5)
    assert cr.evaluate(model, x, y) == cr.evaluate(model, x, y, "softmax_cross_entropy")
    assert cr.evaluate(model, x, y)["loss"] == pytest.approx(result["loss"])  # the default
    assert set(cr.evaluate(model, x, y, loss=None)) == {"accuracy"}
    assert cr.evaluate(model, x, y, loss=None)["accuracy"] == result["accuracy"]
    with pytest.raises(ValueError, match="same number of samples"):
        cr.evaluate(model, x, y[:-1])


def test_predict_and_predict_proba_agree():
    x, y = blobs(150, seed=0)
    model, _ = train(x, y, epochs=2)
    proba = model.predict_proba(x, batch_size=40)
    pred = model.predict(x, batch_size=33)
    assert proba.shape == (150, 3)
    assert proba.dtype == np.float32
    assert pred.shape == (150,)
    assert np.issubdtype(pred.dtype, np.integer)
    assert_array_equal(pred, proba.argmax(axis=1))
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(proba >= 0)
    assert_array_equal(model.predict_proba(x), proba)


def test_predict_proba_passes_softmax_output_through():
    x, _ = blobs(20, seed=0)
    model = cr.MLP(2, [4], 3, output_activation="softmax", rng=0)
    assert_array_equal(model.predict_proba(x), model.forward(x))
    assert_allclose(model.predict_proba(x).sum(axis=1), 1.0, rtol=1e-6)


# -- bad arguments -------------------------------------------------------------------------------
def _fit_kwargs():
    return {"loss": cr.SoftmaxCrossEntropy(), "optimizer": cr.SGD(lr=0.1), "epochs": 1}


def _used_optimizer() -> cr.Optimizer:
    """An Adam that has trained a model of another shape than the one fit is given."""
    model, optimizer = cr.MLP(3, [4], 2, rng=0, dtype=np.float64), cr.Adam()
    cr.fit(model, np.zeros((4, 3)), np.zeros(4, int), **{**_fit_kwargs(), "optimizer": optimizer})
    return optimizer


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"y": np.zeros(9, int)}, ValueError, "x and y must hold the same number of samples"),
        ({"epochs": -1}, ValueError, "Invalid epochs: -1"),
        ({"epochs": 2.0}, TypeError, "epochs must be an integer"),
        ({"batch_size": 0}, ValueError, "Invalid batch_size: 0"),
        ({"seed": -1}, ValueError, "Invalid seed: -1"),
        ({"initial_epoch": -2}, ValueError, "Invalid initial_epoch: -2"),
        ({"model": "mlp"}, TypeError, "model must be a chainrule Sequential, got str"),
        ({"loss": "hinge"}, ValueError, "Unknown loss 'hinge'; choose one of"),
        ({"loss": 3}, TypeError, "loss must be a chainrule Loss or its name, got int"),
        ({"optimizer": "lbfgs"}, ValueError, "Unknown optimizer 'lbfgs'; choose one of"),
        ({"optimizer": cr.Adam}, TypeError, "optimizer must be a chainrule Optimizer"),
        ({"x": np.zeros(10)}, ValueError, r"x must be a batch of samples \(N, ...\), got shape"),
        ({"x": np.zeros((10, 2), dtype=object)}, TypeError, "x must be an array of numbers"),
        ({"y": np.full(10, 0.0)}, TypeError, "labels must be integers"),
        ({"validation_split": 1.5}, ValueError, "Invalid validation_split: 1.5"),
        ({"validation_data": np.zeros((3, 2))}, TypeError, "validation_data must be a pair"),
        ({"validation_data": (np.zeros((3, 2)), np.zeros(2, int))}, ValueError, "x_val and y_val"),
        (
            {"validation_data": (np.zeros((3, 3)), np.zeros(3, int))},
            ValueError,
            r"x_val holds samples of shape \(3,\), x holds \(2,\)",
        ),
        (
            {"optimizer": _used_optimizer()},
            ValueError,
            r"Adam holds state 0.W/m of shape \(3, 4\) float64, but the model has \(2, 4\)",
        ),
    ],
)
def test_fit_refuses_bad_arguments(change, error, message):
    args = {"model": cr.MLP(2, [4], 2, rng=0), "x": np.zeros((10, 2)), "y": np.zeros(10, int)}
    args |= _fit_kwargs()
    args |= change
    model, x, y = args.pop("model"), args.pop("x"), args.pop("y")
    with pytest.raises(error, match=message):
        cr.fit(model, x, y, **args)


@pytest.mark.parametrize("where", ["x", "y", "x_val"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_fit_refuses_non_finite_data(where, bad):
    x, y = np.zeros((10, 2)), np.zeros((10, 2))
    data = {"x": x, "y": y, "x_val": x.copy()}
    data[where][3, 1] = bad
    kind = "NaN" if np.isnan(bad) else "infinity"
    with pytest.raises(ValueError, match=rf"{where} contains {kind}.*\(3, 1\)"):
        cr.fit(
            cr.MLP(2, [4], 2, rng=0),
            data["x"],
            data["y"],
            loss=cr.MeanSquaredError(),
            optimizer=cr.SGD(lr=0.1),
            epochs=1,
            validation_data=(data["x_val"], y),
        )


def test_bad_input_leaves_the_model_untouched():
    model = cr.MLP(2, [4], 2, rng=0)
    start = weights(model)
    x = np.zeros((10, 2))
    x[-1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cr.fit(model, x, np.zeros(10, int), **_fit_kwargs())
    assert_same_weights(weights(model), start)


def test_zero_epochs_and_resuming_past_the_end_do_nothing():
    x, y = blobs(30, seed=0)
    model = cr.MLP(2, [4], 3, rng=0)
    start = weights(model)
    _, history = train(x, y, model=model, epochs=0)
    assert len(history) == 0
    _, history = train(x, y, model=model, epochs=3, initial_epoch=3)
    assert len(history) == 0
    assert_same_weights(weights(model), start)


# -- dtypes ------------------------------------------------------------------------------------
def test_float32_model_stays_float32_with_float64_data():
    x, y = blobs(100, seed=0)
    assert x.dtype == np.float64
    model = cr.MLP(2, [8], 3, batchnorm=True, dropout=0.1, rng=0)
    optimizer = cr.Adam(lr=0.01)
    _, history = train(x, y, model=model, optimizer=optimizer, epochs=2, validation_split=0.2)
    for store in (model.params, model.grads, model.buffers):
        for key, value in store.items():
            assert value.dtype == np.float32, key
    for slots in optimizer.state.values():
        for value in slots.values():
            assert value.dtype == np.float32
    assert model.forward(x).dtype == np.float32
    assert model.forward(x, training=True).dtype == np.float32
    assert model.forward(x.astype(np.float32)).dtype == np.float32
    assert model.predict_proba(x).dtype == np.float32
    assert all(type(v) is float for v in history.loss + history.val_loss)


def test_every_array_of_a_float32_training_step_is_float32(monkeypatch):
    """No silent float64 upcast anywhere in fit: each layer's input, output, incoming and outgoing
    gradient, and the loss gradient, are float32 at every step (uint8 images, int labels)."""
    seen: list[tuple[str, np.dtype]] = []
    model = cr.MLP(6, [8, 8], 3, batchnorm=True, dropout=0.1, rng=0)
    for i, layer in enumerate(model.layers):
        forward, backward = layer._forward, layer._backward

        def spy_forward(x, training, _f=forward, _i=i):
            y = _f(x, training)
            seen.extend([(f"{_i} x", x.dtype), (f"{_i} y", y.dtype)])
            return y

        def spy_backward(dy, need_dx, _b=backward, _i=i):
            dx = _b(dy, need_dx)
            seen.append((f"{_i} dy", dy.dtype))
            if dx is not None:
                seen.append((f"{_i} dx", dx.dtype))
            return dx

        monkeypatch.setattr(layer, "_forward", spy_forward)
        monkeypatch.setattr(layer, "_backward", spy_backward)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (40, 6), dtype=np.uint8), rng.integers(0, 3, 40)
    cr.fit(model, x, y, loss=cr.SoftmaxCrossEntropy(), optimizer=cr.Adam(), epochs=1,
           batch_size=8, validation_split=0.2, seed=0)  # fmt: skip
    assert {name.split()[1] for name, _ in seen} == {"x", "y", "dy", "dx"}
    assert [(name, dtype) for name, dtype in seen if dtype != np.float32] == []


def test_float64_model_stays_float64():
    x, y = blobs(60, seed=0)
    model = cr.MLP(2, [8], 3, rng=0, dtype=np.float64)
    train(x.astype(np.float32), y, model=model, epochs=1)
    for store in (model.params, model.grads):
        for value in store.values():
            assert value.dtype == np.float64
    assert model.forward(x.astype(np.float32)).dtype == np.float64


def test_a_callback_can_stop_training_mid_epoch():
    class StopAfterThreeBatches(cr.Callback):
        batches = 0

        def on_batch_end(self, run, batch, loss):
            self.batches += 1
            run.stop = self.batches == 3

    x, y = blobs(100, seed=0)
    stopper = StopAfterThreeBatches()
    _, history = train(x, y, epochs=5, batch_size=10, callbacks=[stopper])
    assert stopper.batches == 3
    assert history.epoch == [0]  # the partial epoch is recorded, over the 30 samples it saw
