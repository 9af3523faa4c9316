"""Saving and loading: exact round trips, exact resume, atomic writes and hostile files."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import chainrule as cr
from chainrule.io import FORMAT_VERSION
from chainrule.optim import OPTIMIZERS


def every_layer_model(dtype, seed=0):
    return cr.Sequential(
        cr.Dense(6, 8, rng=seed, dtype=dtype),
        cr.BatchNorm(8, momentum=0.8, eps=1e-4, dtype=dtype),
        cr.ReLU(),
        cr.Dropout(0.25, rng=seed + 1),
        cr.Dense(8, 8, init="xavier", rng=seed + 2, dtype=dtype),
        cr.Sigmoid(),
        cr.Dense(8, 8, init="normal", rng=seed + 3, dtype=dtype),
        cr.Tanh(),
        cr.Dense(8, 8, rng=seed + 4, dtype=dtype),
        cr.LeakyReLU(alpha=0.2),
        cr.Dense(8, 3, rng=seed + 5, dtype=dtype),
        cr.Softmax(),
    )


def data(n=96, features=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    return x, y


def state(model):
    return {k: v.copy() for k, v in {**model.params, **model.buffers}.items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), key


def names_the_file(path):
    return re.escape(str(path))


def members(path):
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def write_zip(path, contents, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compress) as zf:
        for name, value in contents.items():
            zf.writestr(name, value)
    return path


def npy_bytes(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@pytest.fixture
def saved(tmp_path):
    """A small trained model saved with an Adam optimizer and its history."""
    x, y = data()
    model = cr.MLP(6, [8], 3, dropout=0.2, batchnorm=True, rng=0)
    optimizer = cr.Adam(lr=0.01)
    history = cr.fit(
        model, x, y, loss=cr.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=2, seed=0
    )
    path = cr.save(model, tmp_path / "model.npz", optimizer=optimizer, history=history)
    return path, model


def tampered(tmp_path, source, change):
    """A copy of ``source`` with ``change(meta, contents)`` applied to its parsed metadata."""
    contents = members(source)
    meta = json.loads(contents["metadata.json"])
    change(meta, contents)
    contents["metadata.json"] = json.dumps(meta).encode()
    return write_zip(tmp_path / "tampered.npz", contents)


# -- round trips ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_every_layer_type(tmp_path, dtype):
    x, y = data()
    model = every_layer_model(dtype)
    cr.fit(
        model,
        x,
        y,
        loss=cr.CrossEntropy(),
        optimizer=cr.SGD(lr=0.05),
        epochs=2,
        batch_size=16,
        seed=0,
    )
    bn = model.layers[1]
    assert not np.all(bn.buffers["running_mean"] == 0)  # training moved the running statistics
    assert not np.all(bn.buffers["running_var"] == 1)

    path = cr.save(model, tmp_path / "every.npz")
    assert path == tmp_path / "every.npz"
    loaded = cr.load(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert loaded.config() == model.config()
    assert loaded.dtype == np.dtype(dtype)
    assert_same_state(state(loaded), state(model))
    assert loaded.layers[3].p == 0.25
    assert loaded.layers[9].alpha == 0.2
    assert (loaded.layers[1].momentum, loaded.layers[1].eps) == (0.8, 1e-4)

    x_test = np.random.default_rng(1).normal(size=(50, 6)).astype(dtype)
    want = model.predict_proba(x_test)
    got = loaded.predict_proba(x_test)
    assert got.dtype == np.dtype(dtype)
    assert got.tobytes() == want.tobytes()
    assert_array_equal(loaded.predict(x_test), model.predict(x_test))


def test_load_accepts_str_paths_and_keeps_user_metadata(tmp_path):
    model = cr.MLP(3, [4], 2, rng=0)
    path = str(tmp_path / "m.npz")
    cr.save(model, path, metadata={"note": "hello", "n": [1, 2]})
    ckpt = cr.load_checkpoint(path)
    assert ckpt.metadata == {"note": "hello", "n": [1, 2]}
    assert ckpt.optimizer is None
    assert ckpt.history is None
    assert ckpt.next_epoch == 0
    assert_same_state(state(ckpt.model), state(model))


def test_save_refuses_metadata_it_cannot_write(tmp_path):
    model = cr.MLP(3, [4], 2, rng=0)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        cr.save(model, tmp_path / "m.npz", metadata={"f": object()})
    with pytest.raises(ValueError, match="JSON-serialisable and finite"):
        cr.save(model, tmp_path / "m.npz", metadata={"x": float("nan")})
    with pytest.raises(TypeError, match="model must be a chainrule Sequential"):
        cr.save({"W": np.zeros(2)}, tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_loaded_model_predicts_mnist_shaped_input(tmp_path):
    model = cr.MLP(784, [32], 10, rng=0)
    loaded = cr.load(cr.save(model, tmp_path / "mnist.npz"))
    x = np.random.default_rng(0).random((64, 784), dtype=np.float32)
    pred = loaded.predict(x)
    assert pred.shape == (64,)
    assert np.issubdtype(pred.dtype, np.integer)
    assert pred.min() >= 0
    assert pred.max() <= 9
    assert_array_equal(pred, model.predict(x))
    proba = loaded.predict_proba(x)
    assert proba.shape == (64, 10)
    assert proba.dtype == np.float32
    assert proba.tobytes() == model.predict_proba(x).tobytes()
    x8 = (x * 255).astype(np.uint8)
    assert_array_equal(loaded.predict(x8), model.predict(x8))


# -- checkpoints ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_checkpoint_restores_optimizer_and_history(tmp_path, name):
    x, y = data()
    model = cr.MLP(6, [8], 3, rng=0)
    optimizer = OPTIMIZERS[name](lr=0.01, weight_decay=0.001)
    history = cr.fit(
        model, x, y, loss=cr.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=2, seed=0
    )
    path = cr.save(model, tmp_path / "ckpt.npz", optimizer=optimizer, history=history)
    ckpt = cr.load_checkpoint(path)

    assert type(ckpt.optimizer) is type(optimizer)
    assert ckpt.optimizer.config() == optimizer.config()
    assert ckpt.optimizer.iterations == optimizer.iterations == 2 * 3
    assert ckpt.optimizer.state.keys() == optimizer.state.keys()
    for param, slots in optimizer.state.items():
        assert sorted(ckpt.optimizer.state[param]) == sorted(slots) == sorted(optimizer.slots)
        for slot, value in slots.items():
            got = ckpt.optimizer.state[param][slot]
            assert got.dtype == value.dtype
            assert got.tobytes() == value.tobytes()
    assert ckpt.history == history
    assert ckpt.next_epoch == 2


def test_optimizer_learning_rate_is_saved(tmp_path):
    optimizer = cr.Momentum(lr=0.125, momentum=0.5)
    path = cr.save(cr.MLP(2, [3], 2, rng=0), tmp_path / "m.npz", optimizer=optimizer)
    loaded = cr.load_checkpoint(path).optimizer
    assert repr(loaded) == "Momentum(lr=0.125, weight_decay=0.0, momentum=0.5)"
    assert loaded.iterations == 0
    assert loaded.state == {}


def _resume_setup(name):
    x, y = data(120)
    model = cr.MLP(6, [16, 8], 3, dropout=0.3, batchnorm=True, rng=3)
    kwargs = {"loss": cr.SoftmaxCrossEntropy(), "batch_size": 16, "seed": 11}
    kwargs["validation_split"] = 0.25
    return x, y, model, OPTIMIZERS[name](lr=0.01), kwargs


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_exact_resume(tmp_path, name):
    x, y, straight, optimizer, kwargs = _resume_setup(name)
    full = cr.fit(straight, x, y, optimizer=optimizer, epochs=4, **kwargs)

    x, y, first, optimizer, kwargs = _resume_setup(name)
    head = cr.fit(first, x, y, optimizer=optimizer, epochs=2, **kwargs)
    path = cr.save(first, tmp_path / "half.npz", optimizer=optimizer, history=head)
    del first, optimizer
    ckpt = cr.load_checkpoint(path)
    assert ckpt.next_epoch == 2
    tail = cr.fit(
        ckpt.model,
        x,
        y,
        optimizer=ckpt.optimizer,
        epochs=4,
        initial_epoch=ckpt.next_epoch,
        **kwargs,
    )

    assert_same_state(state(ckpt.model), state(straight))
    assert tail.epoch == [2, 3]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert getattr(head, key) + getattr(tail, key) == getattr(full, key), key


def test_exact_resume_with_a_learning_rate_schedule(tmp_path):
    # The saved optimizer holds the last scheduled rate and its initial rate; the schedule
    # scales the initial one, so the resumed run continues the same schedule.
    x, y = data(80)
    kwargs = {"loss": cr.SoftmaxCrossEntropy(), "batch_size": 16, "seed": 4}

    def scheduler():
        return cr.LearningRateScheduler(cr.StepLR(step_size=1, gamma=0.5))

    straight = cr.MLP(6, [8], 3, rng=0)
    full = cr.fit(
        straight, x, y, optimizer=cr.Momentum(lr=0.1), epochs=4, callbacks=[scheduler()], **kwargs
    )
    assert full.lr == [0.1, 0.05, 0.025, 0.0125]

    first, optimizer = cr.MLP(6, [8], 3, rng=0), cr.Momentum(lr=0.1)
    head = cr.fit(first, x, y, optimizer=optimizer, epochs=2, callbacks=[scheduler()], **kwargs)
    path = cr.save(first, tmp_path / "m.npz", optimizer=optimizer, history=head)
    ckpt = cr.load_checkpoint(path)
    assert ckpt.optimizer.lr == 0.05
    assert ckpt.optimizer.initial_lr == 0.1
    resumed = scheduler()
    tail = cr.fit(
        ckpt.model,
        x,
        y,
        optimizer=ckpt.optimizer,
        epochs=4,
        initial_epoch=ckpt.next_epoch,
        callbacks=[resumed],
        **kwargs,
    )
    assert tail.lr == [0.025, 0.0125]
    assert head.loss + tail.loss == full.loss
    assert_same_state(state(ckpt.model), state(straight))


def test_resume_depends_on_the_saved_optimizer_and_dropout_state(tmp_path):
    # Without the optimizer state, or with a fresh dropout generator, the run is not the same.
    x, y, straight, optimizer, kwargs = _resume_setup("adam")
    cr.fit(straight, x, y, optimizer=optimizer, epochs=4, **kwargs)
    x, y, first, optimizer, kwargs = _resume_setup("adam")
    cr.fit(first, x, y, optimizer=optimizer, epochs=2, **kwargs)
    path = cr.save(first, tmp_path / "half.npz", optimizer=optimizer)

    fresh_optimizer = cr.load(path)
    cr.fit(fresh_optimizer, x, y, optimizer=cr.Adam(lr=0.01), epochs=4, initial_epoch=2, **kwargs)
    assert state(fresh_optimizer)["0.W"].tobytes() != state(straight)["0.W"].tobytes()

    ckpt = cr.load_checkpoint(path)
    dropout = ckpt.model.layers[3]
    assert isinstance(dropout, cr.Dropout)
    assert dropout.rng.bit_generator.state == first.layers[3].rng.bit_generator.state
    dropout.rng = np.random.default_rng(12345)
    cr.fit(ckpt.model, x, y, optimizer=ckpt.optimizer, epochs=4, initial_epoch=2, **kwargs)
    assert state(ckpt.model)["0.W"].tobytes() != state(straight)["0.W"].tobytes()


def test_each_dropout_layer_saves_and_restores_its_own_generator(tmp_path):
    # MLP spawns a generator per Dropout layer: each layer's state is its own to save.
    model = cr.MLP(4, [8, 8, 8], 2, dropout=0.5, rng=0)
    dropouts = [i for i, layer in enumerate(model.layers) if isinstance(layer, cr.Dropout)]
    assert len(dropouts) == 3
    assert len({id(model.layers[i].rng) for i in dropouts}) == 3
    x = np.random.default_rng(0).normal(size=(5, 4))
    model.forward(x, training=True)  # move the generators on before saving
    loaded = cr.load(cr.save(model, tmp_path / "m.npz"))
    for i in dropouts:
        assert loaded.layers[i].get_extra_state() == model.layers[i].get_extra_state()
    assert_array_equal(loaded.forward(x, training=True), model.forward(x, training=True))
    assert_array_equal(loaded.forward(x, training=True), model.forward(x, training=True))


# -- refusing to save a broken model -------------------------------------------------------------
@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("0.W", "parameter 0.W contains NaN"),
        ("1.running_var", "buffer 1.running_var contains infinity"),
    ],
)
def test_save_refuses_non_finite_and_keeps_the_old_file(tmp_path, where, message):
    model = cr.MLP(3, [4], 2, batchnorm=True, rng=0)
    path = cr.save(model, tmp_path / "model.npz")
    before = path.read_bytes()
    store = model.params if where in model.params else model.buffers
    store[where].flat[1] = np.nan if "NaN" in message else np.inf
    with pytest.raises(ValueError, match=message):
        cr.save(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    with pytest.raises(ValueError, match=message):
        cr.save(model, tmp_path / "new.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_save_refuses_an_optimizer_of_another_model(tmp_path):
    # load would refuse such a file: save must not replace a good one with it.
    model, other = cr.MLP(3, [4], 2, rng=0), cr.MLP(3, [5], 2, rng=0)
    optimizer = cr.Adam()
    optimizer.step(other.params, {k: np.ones_like(v) for k, v in other.params.items()})
    path = cr.save(model, tmp_path / "model.npz")
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"Adam holds state 0\.W/m of shape \(3, 5\) float32"):
        cr.save(model, path, optimizer=optimizer)
    assert path.read_bytes() == before


def test_a_network_of_mixed_dtypes_is_refused_until_converted(tmp_path):
    model = cr.Sequential(cr.Dense(4, 5, dtype=np.float64), cr.BatchNorm(5), cr.Dense(5, 2))
    message = r"different dtypes \(0: Dense\(4 -> 5\) float64, 1: BatchNorm\(5\) float32, "
    with pytest.raises(ValueError, match=message):
        model.forward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="different dtypes"):
        cr.save(model, tmp_path / "model.npz")
    assert list(tmp_path.iterdir()) == []
    model.astype(np.float32)  # what the message advises
    assert model.forward(np.zeros((2, 4))).dtype == np.float32
    assert cr.load(cr.save(model, tmp_path / "model.npz")).dtype == np.float32


def test_save_refuses_non_finite_optimizer_state(tmp_path):
    # load would refuse such a file: save must not replace a good one with it.
    model = cr.MLP(3, [4], 2, rng=0)
    optimizer = cr.AdaGrad(lr=0.1)
    optimizer.step(model.params, {k: np.ones_like(v) for k, v in model.params.items()})
    path = cr.save(model, tmp_path / "model.npz", optimizer=optimizer)
    before = path.read_bytes()
    optimizer.state["0.W"]["h"][0, 0] = np.inf
    with pytest.raises(ValueError, match=r"optimizer state 0\.W/h contains infinity"):
        cr.save(model, path, optimizer=optimizer)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_no_temporary_files_are_left(tmp_path, monkeypatch):
    model = cr.MLP(3, [4], 2, rng=0)
    path = tmp_path / "model.npz"
    cr.save(model, path)
    cr.save(model, path)  # replacing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(OSError, match="disk full"):
        cr.save(model, path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    assert path.read_bytes() == before
    assert_same_state(state(cr.load(path)), state(model))


def test_saved_file_layout(saved):
    path, model = saved
    with zipfile.ZipFile(path) as zf:
        infos = {info.filename: info for info in zf.infolist()}
        meta = json.loads(zf.read("metadata.json"))
    assert all(info.compress_type == zipfile.ZIP_STORED for info in infos.values())
    assert {f"params/{k}.npy" for k in model.params} <= set(infos)
    assert {f"buffers/{k}.npy" for k in model.buffers} <= set(infos)
    assert {f"optimizer/0.W/{slot}.npy" for slot in ("m", "v")} <= set(infos)
    assert meta["format"] == "chainrule-model"
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["dtype"] == "float32"
    assert meta["optimizer"]["type"] == "Adam"
    assert list(meta["extra_state"]) == ["3"]  # the Dropout layer's generator
    assert meta["model"] == {"type": "MLP", "arguments": model.arguments()}


# -- hostile or broken files -----------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        cr.load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError):
        cr.load_checkpoint(tmp_path)  # a directory is not a model file


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 0.5, 0.9, 0.99])
def test_truncated_file(saved, tmp_path, fraction):
    path, _ = saved
    whole = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole[: int(len(whole) * fraction)])
    with pytest.raises(ValueError, match=names_the_file(cut)):
        cr.load(cut)


@pytest.mark.parametrize("drop", [1, 22, 100])
def test_file_missing_its_last_bytes(saved, tmp_path, drop):
    path, _ = saved
    cut = tmp_path / "cut.npz"
    cut.write_bytes(path.read_bytes()[:-drop])
    with pytest.raises(ValueError, match=names_the_file(cut)):
        cr.load(cut)


def test_flipped_bytes_never_raise_anything_but_value_error(saved, tmp_path):
    path, model = saved
    whole = bytearray(path.read_bytes())
    bad = tmp_path / "flipped.npz"
    refused = 0
    for position in np.linspace(0, len(whole) - 1, 80).astype(int):
        copy = bytearray(whole)
        copy[position] ^= 0xFF
        bad.write_bytes(bytes(copy))
        problem = ""
        try:
            loaded = cr.load(bad)
        except ValueError as exc:
            problem = str(exc)
        if problem:
            assert str(bad) in problem
            refused += 1
        else:  # a byte no check covers (a timestamp, say): the model must still be the same
            assert_same_state(state(loaded), state(model))
    assert refused > 40


def test_random_bytes(tmp_path):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ValueError, match=names_the_file(path)):
        cr.load(path)


class Boom:
    """Unpickling this would create a marker file: loading must never unpickle."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_plain_pickle_file(tmp_path):
    Boom.marker = tmp_path / "unpickled"
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps({"model": Boom(), "W": np.zeros((2, 2))}))
    with pytest.raises(ValueError, match=names_the_file(path)):
        cr.load(path)
    assert not Boom.marker.exists()


def test_plain_numpy_archive_with_objects(tmp_path):
    Boom.marker = tmp_path / "unpickled"
    path = tmp_path / "model.npz"
    np.savez(path, W=np.zeros((2, 2)), obj=np.array([Boom()], dtype=object))
    with pytest.raises(ValueError, match=names_the_file(path) + ".*no metadata.json"):
        cr.load(path)
    assert not Boom.marker.exists()


def test_object_array_member_is_refused(saved, tmp_path):
    path, _ = saved
    Boom.marker = tmp_path / "unpickled"

    def change(meta, contents):
        contents["params/0.b.npy"] = npy_bytes(np.array([Boom()] * 8, dtype=object))

    bad = tampered(tmp_path, path, change)
    with pytest.raises(ValueError, match=names_the_file(bad) + ".*Python objects"):
        cr.load(bad)
    assert not Boom.marker.exists()


def _set(key, value):
    def change(meta, contents):
        meta[key] = value

    return change


def _layer(index, **config):
    def change(meta, contents):
        meta["layers"][index]["config"].update(config)

    return change


def _drop(member):
    def change(meta, contents):
        del contents[member]

    return change


def _member(member, array):
    def change(meta, contents):
        contents[member] = npy_bytes(array)

    return change


def _header_only(member, shape, descr="<f4"):
    def change(meta, contents):
        buffer = io.BytesIO()
        header = {"descr": descr, "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(buffer, header)
        contents[member] = buffer.getvalue()

    return change


def _unknown_layer(meta, contents):
    meta["layers"][1]["type"] = "Conv3D"


def _history_keys(meta, contents):
    meta["history"]["epochs"] = [0]


def _slots(meta, contents):
    meta["optimizer"]["slots"]["0.W"] = ["m"]
    del contents["optimizer/0.W/v.npy"]


def _optimizer_type(meta, contents):
    meta["optimizer"]["type"] = "Lion"


def _optimizer_config(meta, contents):
    meta["optimizer"]["config"]["lr"] = -1.0


def _rng_state(meta, contents):
    meta["extra_state"]["3"] = {"rng": {"bit_generator": "PCG64", "state": "garbage"}}


def _rng_layer(meta, contents):
    meta["extra_state"]["0"] = meta["extra_state"].pop("3")


def _nan_member(meta, contents):
    w = np.lib.format.read_array(io.BytesIO(contents["params/0.W.npy"]))
    w = w.copy()
    w[0, 0] = np.nan
    contents["params/0.W.npy"] = npy_bytes(w)


def _extra(meta, contents):
    contents["params/9.W.npy"] = npy_bytes(np.zeros(2, np.float32))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_layer(0, in_features=5), "has shape"),  # metadata and arrays disagree
        (_layer(0, out_features=9), "has shape"),
        (_layer(0, in_features=0), "bad architecture"),
        (_layer(0, in_features=10**7, out_features=10**7), "architecture"),
        (_layer(0, in_features="6"), "bad architecture"),
        (_layer(0, bogus=1), "bad architecture"),
        (_unknown_layer, "unknown layer type 'Conv3D'"),
        (_set("layers", 5), "bad architecture"),
        (_set("layers", [1, 2]), "unknown layer type"),
        (_set("format_version", FORMAT_VERSION + 1), "format version"),
        (_set("format_version", "1"), "format version"),
        (_set("format", "keras"), "does not describe"),
        (_set("dtype", "int32"), "dtype"),
        (_set("dtype", "object"), "dtype"),
        (_set("dtype", "float128x"), "dtype"),
        (_set("dtype", "float64"), "float64"),  # arrays are float32
        (_set("optimizer", {"type": "Adam"}), "slot list"),
        (_set("optimizer", [1]), "slot list"),
        (_set("history", [1, 2]), "history"),
        (_set("history", ["epoch"]), "history"),
        (_set("extra_state", [1]), "extra_state"),
        (_set("extra_state", {"3": [1]}), "extra state for layer 3"),
        (_set("extra_state", {"99": {}}), "extra state for layer 99"),
        (_set("extra_state", {"x": {}}), "extra state for layer x"),
        (_set("extra_state", {"0": {"rng": 1}}), "extra state for layer 0"),
        (_history_keys, "history"),
        (_slots, "slots"),
        (_optimizer_type, "optimizer"),
        (_optimizer_config, "optimizer"),
        (_rng_state, "bad random-generator state"),
        (_rng_layer, "extra state for layer 0"),
        (_drop("params/0.W.npy"), r"missing \['params/0.W.npy'\]"),
        (_drop("buffers/1.running_mean.npy"), "missing"),
        (_drop("optimizer/0.W/m.npy"), "missing"),
        (_extra, r"unexpected \['params/9.W.npy'\]"),
        (_member("params/0.W.npy", np.zeros((6, 8), np.float64)), "dtype float64"),
        (_member("params/0.W.npy", np.zeros((8, 6), np.float32)), r"shape \(8, 6\)"),
        (_member("params/0.W.npy", np.zeros(48, "<U1")), "dtype"),
        (_member("params/0.W.npy", np.zeros(6, [("a", "<f4"), ("b", "<f4")])), "records"),
        (_nan_member, "contains NaN or infinity"),
        (_header_only("params/0.W.npy", (10**12, 10**9)), "declares"),
        (_header_only("params/0.W.npy", (6, 8)), "declares"),
        (_header_only("params/0.W.npy", (0, -1)), "params/0.W.npy"),
        (_header_only("params/0.W.npy", (6, 8), descr="|O"), "Python objects"),
    ],
)
def test_tampered_archive(saved, tmp_path, change, message):
    path, _ = saved
    bad = tampered(tmp_path, path, change)
    with pytest.raises(ValueError, match=names_the_file(bad)) as info:
        cr.load_checkpoint(bad)
    assert re.search(message, str(info.value)), str(info.value)


@pytest.mark.parametrize(
    "text", [b"{not json", b"", b"\xff\xfe\x00", b"[1, 2]", b"null", b"[" * 100000]
)
def test_metadata_that_is_not_a_json_object(saved, tmp_path, text):
    path, _ = saved
    contents = members(path)
    contents["metadata.json"] = text
    bad = write_zip(tmp_path / "bad.npz", contents)
    with pytest.raises(ValueError, match=names_the_file(bad)):
        cr.load(bad)


def test_missing_metadata(saved, tmp_path):
    path, _ = saved
    contents = members(path)
    del contents["metadata.json"]
    bad = write_zip(tmp_path / "bad.npz", contents)
    with pytest.raises(ValueError, match=names_the_file(bad) + ".*no metadata.json"):
        cr.load(bad)


def test_compressed_members_are_refused(saved, tmp_path):
    path, _ = saved
    bad = write_zip(tmp_path / "deflated.npz", members(path), zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError, match=names_the_file(bad) + ".*compressed"):
        cr.load(bad)


def test_big_endian_arrays_load_as_native(saved, tmp_path):
    path, model = saved
    contents = members(path)
    w = model.params["0.W"]
    contents["params/0.W.npy"] = npy_bytes(w.astype(w.dtype.newbyteorder(">")))
    other = write_zip(tmp_path / "big.npz", contents)
    loaded = cr.load(other)
    assert loaded.params["0.W"].dtype == np.float32
    assert_array_equal(loaded.params["0.W"], w)


def test_zip_member_with_a_bad_crc(saved, tmp_path):
    path, _ = saved
    whole = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("params/0.W.npy")
    # local header: 30 bytes, then the name and the extra field, then the data
    name_len = int.from_bytes(whole[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(whole[info.header_offset + 28 : info.header_offset + 30], "little")
    data_start = info.header_offset + 30 + name_len + extra_len
    whole[data_start + info.file_size - 1] ^= 0x01  # last byte of the array data
    bad = tmp_path / "crc.npz"
    bad.write_bytes(bytes(whole))
    with pytest.raises(ValueError, match=names_the_file(bad)):
        cr.load(bad)


def test_load_does_not_leave_files_open(saved, tmp_path):
    path, _ = saved
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(path.read_bytes()[:-40])
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        cr.load(path)
        with pytest.raises(ValueError, match=names_the_file(broken)):
            cr.load(broken)
    assert len(os.listdir("/proc/self/fd")) <= before


def test_a_model_file_of_format_1_loads_and_predicts_as_it_did():
    # Written by the release before format 2 (MLP 784-32-16-10, BatchNorm, Dropout, Adam state),
    # with its predict_proba on the first 200 MNIST test images as uint8.
    fixtures = Path(__file__).parent / "fixtures"
    ckpt = cr.load_checkpoint(fixtures / "v1-mlp-bn-dropout.npz")
    assert isinstance(ckpt.model.layers[0], cr.Rescaling)  # its implicit uint8 scaling, explicit
    _, (x_test, _) = cr.datasets.load_mnist(normalize=False)
    expected = np.load(fixtures / "v1-mlp-bn-dropout-proba.npy")
    proba = ckpt.model.predict_proba(x_test[:200])
    # The same classes; the same probabilities up to float32 rounding (bit for bit holds only on
    # the CPU that wrote the fixture: another BLAS kernel sums in another order).
    assert_array_equal(proba.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-7)
    assert ckpt.optimizer is not None
    assert ckpt.history is not None
    assert len(ckpt.history) == 2


def test_save_into_a_missing_directory_names_the_users_path(tmp_path):
    target = tmp_path / "no" / "such" / "m.npz"
    with pytest.raises(FileNotFoundError, match="does not exist") as caught:
        cr.save(cr.MLP(4, [3], 2, rng=0), target)
    assert str(target) in str(caught.value)
    assert ".tmp" not in str(caught.value)
    assert not (tmp_path / "no").exists()
