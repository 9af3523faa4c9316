"""Input guards: dtypes, shapes, labels and empty arrays at the public functions, and the CLI's
answers to bad input (one line, exit code 2, existing outputs untouched).

tests/test_errors.py and tests/test_cli.py cover the first cases of each; this file adds the
systematic ones.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
from chainrule.cli import main

# -- dtypes: uint8 images ------------------------------------------------------------------------
IMAGES = np.random.default_rng(0).integers(0, 256, (12, 6), dtype=np.uint8)
IMAGES[0] = 255  # the extremes, where uint8 arithmetic would wrap
IMAGES[1] = 0
SCALED = IMAGES.astype(np.float32) * np.float32(1 / 255)


def test_every_integer_dtype_means_the_same_and_rescaling_is_the_models():
    # No dtype is scaled implicitly: the same pixels give the same output in any dtype, and a
    # model given raw pixels holds its own Rescaling, which equals scaling the data beforehand.
    raw = cr.MLP(6, [5], 3, activation="sigmoid", rng=0)
    for dtype in (np.int64, np.uint16, np.int8, np.float32):
        same = IMAGES.astype(dtype) if dtype != np.int8 else (IMAGES // 2).astype(dtype)
        pixels = IMAGES if dtype != np.int8 else IMAGES // 2
        np.testing.assert_array_equal(raw.forward(same), raw.forward(pixels), err_msg=str(dtype))
    scaling = cr.MLP(6, [5], 3, activation="sigmoid", rescale=1 / 255, rng=0)
    np.testing.assert_array_equal(scaling.forward(IMAGES), raw.forward(SCALED))
    np.testing.assert_array_equal(scaling.predict_proba(IMAGES), raw.predict_proba(SCALED))
    np.testing.assert_array_equal(scaling.predict(IMAGES.astype(np.int64)), raw.predict(SCALED))
    y = np.arange(12) % 3
    loss = cr.SoftmaxCrossEntropy()
    assert cr.evaluate(scaling, IMAGES, y, loss) == cr.evaluate(raw, SCALED, y, loss)


def test_training_on_uint8_images_equals_training_on_float_images():
    y = np.arange(12) % 3
    runs = []
    for x in (IMAGES, IMAGES.astype(np.float32)):  # uint8 stays bytes in memory: same result
        net = cr.MLP(6, [5], 3, dropout=0.2, rescale=1 / 255, rng=0)
        history = cr.fit(
            net,
            x,
            y,
            loss=cr.SoftmaxCrossEntropy(),
            optimizer=cr.Adam(0.01),
            epochs=3,
            batch_size=5,
            validation_split=0.25,
            seed=1,
        )
        runs.append((net.params, history.loss, history.val_loss))
    (p1, l1, v1), (p2, l2, v2) = runs
    assert l1 == l2
    assert v1 == v2
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])


def test_uint8_images_never_overflow_in_losses_metrics_or_gradient_check():
    # Predictions and targets given as uint8 are converted to floats, not computed in uint8.
    t = IMAGES[:, ::-1].copy()
    mse = cr.MeanSquaredError()
    value = mse.forward(IMAGES, t)
    expected = np.mean((IMAGES.astype(np.float64) - t) ** 2)
    assert value == pytest.approx(expected)
    np.testing.assert_allclose(mse.backward(), 2 * (IMAGES.astype(np.float64) - t) / IMAGES.size)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        cr.CrossEntropy().forward(IMAGES, np.zeros(12, int))
    labels = (IMAGES[:, 0] % 3).astype(np.uint8)
    matrix = cr.metrics.confusion_matrix(labels, labels)
    assert matrix.sum() == 12
    assert matrix.trace() == 12
    # gradient_check sees uint8 images as the network does (converted, then its Rescaling).
    net = cr.MLP(6, [4], 3, activation="tanh", rescale=1 / 255, rng=0)  # no kink at zero
    report = cr.gradient_check(net, cr.SoftmaxCrossEntropy(), IMAGES[:3], labels[:3])
    assert report.passed, str(report)
    scaled = IMAGES[:3].astype(np.float64)
    same = cr.gradient_check(net, cr.SoftmaxCrossEntropy(), scaled, labels[:3])
    assert [(c.name, c.analytic, c.numerical) for c in report.checks] == [
        (c.name, c.analytic, c.numerical) for c in same.checks
    ]


# -- shapes: every loss x every mismatching pair -------------------------------------------------
N, C, M = 3, 4, 5
SHAPES = {"(N,)": (N,), "(N,1)": (N, 1), "(1,N)": (1, N), "(N,C)": (N, C), "(M,C)": (M, C)}
LOSSES = {
    "SoftmaxCrossEntropy": cr.SoftmaxCrossEntropy,
    "CrossEntropy": cr.CrossEntropy,
    "BinaryCrossEntropy": cr.BinaryCrossEntropy,
    "BinaryCrossEntropy/from_logits": lambda: cr.BinaryCrossEntropy(from_logits=True),
    "BinaryCrossEntropy/batchmean": lambda: cr.BinaryCrossEntropy(reduction="batchmean"),
    "MeanSquaredError": cr.MeanSquaredError,
    "MeanSquaredError/half": lambda: cr.MeanSquaredError(half=True),
}
CLASS_LOSSES = ("SoftmaxCrossEntropy", "CrossEntropy")


def _target(loss_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A target of ``shape`` that is valid in every other respect: integer labels (1-D) or one-hot
    rows for the class losses, values in [0, 1] for everything."""
    if loss_name in CLASS_LOSSES:
        return np.zeros(shape, np.int64 if len(shape) == 1 else np.float64)
    return np.full(shape, 0.5)


def _legitimate(loss_name: str, y: tuple[int, ...], t: tuple[int, ...]) -> bool:
    """Class losses take labels (N,) for scores (N, K), K = 1 included."""
    return loss_name in CLASS_LOSSES and len(y) == 2 and len(t) == 1 and y[0] == t[0]


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize(("y_name", "t_name"), list(itertools.permutations(SHAPES, 2)))
def test_every_loss_refuses_every_mismatching_pair_of_shapes(loss_name, y_name, t_name):
    y_shape, t_shape = SHAPES[y_name], SHAPES[t_name]
    y = np.full(y_shape, 0.25)  # valid probabilities, so only the shapes can be wrong
    t = _target(loss_name, t_shape)
    loss = LOSSES[loss_name]()
    if _legitimate(loss_name, y_shape, t_shape):
        assert np.isfinite(loss.forward(y, t))
        return
    with pytest.raises(ValueError, match="shape") as info:
        loss.forward(y, t)
    assert str(y_shape) in str(info.value) or str(t_shape) in str(info.value), info.value


@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_every_loss_refuses_empty_batches(loss_name):
    loss = LOSSES[loss_name]()
    for y_shape in [(0, C), (0,), ()]:
        with pytest.raises(ValueError, match=r"non-empty batch|shape"):
            loss.forward(np.zeros(y_shape), _target(loss_name, (0, C)))
    with pytest.raises(ValueError, match=r"batch sizes differ|shape"):
        loss.forward(np.full((N, C), 0.25), np.zeros((0, C)))


def test_other_public_functions_refuse_empty_arrays():
    net = cr.MLP(C, [3], 2, rng=0)
    empty_x, empty_y = np.zeros((0, C)), np.zeros(0, int)
    opt = cr.SGD(0.1)
    with pytest.raises(ValueError, match=r"x is empty \(shape \(0, 4\)\)"):
        cr.fit(net, empty_x, empty_y, loss=cr.SoftmaxCrossEntropy(), optimizer=opt, epochs=1)
    with pytest.raises(ValueError, match="x is empty"):
        cr.evaluate(net, empty_x, empty_y)
    with pytest.raises(ValueError, match="non-empty batch"):
        net.predict(empty_x)
    with pytest.raises(ValueError, match="non-empty batch"):
        net.predict_proba(empty_x)
    with pytest.raises(ValueError, match="empty"):
        cr.metrics.accuracy(empty_y, empty_y)
    with pytest.raises(ValueError, match="empty train or validation set"):
        cr.train_validation_split(empty_x, empty_y, 0.5)
    with pytest.raises(ValueError, match="non-empty batch"):
        cr.gradient_check(net, cr.SoftmaxCrossEntropy(), empty_x, empty_y)


# -- labels: range and type -----------------------------------------------------------------------
@pytest.mark.parametrize("loss_cls", [cr.SoftmaxCrossEntropy, cr.CrossEntropy])
@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (np.array([0, 1, 2**40]), ValueError, r"\[0, 2\].*from 0 to 1099511627776"),
        (np.array([0, -1, 1], np.int8), ValueError, "from -1 to 1"),
        (np.array([0, 1, 3], np.uint8), ValueError, "from 0 to 3"),
        (np.array([0.0, 1.0, 2.0]), TypeError, r"integers.*astype\(int\)"),
        (np.array([0.0, 1.5, 2.0]), TypeError, r"integers, got dtype float64$"),
        (np.array([0.0, np.nan, 1.0]), ValueError, "labels contains NaN"),
        (np.array([True, False, True]), TypeError, "numbers, got dtype bool"),
        (np.array(["0", "1", "2"]), TypeError, "numbers, got dtype <U1"),
        (np.array([0, 1, 1 + 0j]), TypeError, "must be real"),
        (np.array([0, 1, None], dtype=object), TypeError, "numbers, got dtype object"),
        (np.eye(3) * 2, ValueError, r"one-hot target values must lie in \[0, 1\]"),
        (-np.eye(3), ValueError, r"one-hot target values must lie in \[0, 1\]"),
    ],
)
def test_class_losses_check_label_range_and_type(loss_cls, labels, error, match):
    with pytest.raises(error, match=match):
        loss_cls().forward(np.full((3, 3), 1 / 3), labels)


def test_metrics_check_labels():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\] for num_classes=2"):
        cr.metrics.confusion_matrix(np.array([0, -1]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"num_classes=2"):
        cr.metrics.confusion_matrix(np.array([0, 2]), np.array([0, 1]), num_classes=2)
    with pytest.raises(TypeError, match="y_true labels must be integers, got dtype float64"):
        cr.metrics.accuracy(np.array([0.0, 1.5]), np.array([0, 1]))
    with pytest.raises(ValueError, match="different numbers of samples"):
        cr.metrics.accuracy(np.array([0, 1, 1]), np.array([0, 1]))
    for bad, error in (("3", TypeError), (3.0, TypeError), (0, ValueError)):
        with pytest.raises(error, match="num_classes"):
            cr.metrics.confusion_matrix(np.array([0, 1]), np.array([0, 1]), num_classes=bad)
    with pytest.raises(ValueError, match="matrix contains NaN"):
        cr.metrics.per_class_accuracy(np.array([[1.0, np.nan], [0.0, 1.0]]))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint32, np.int64, np.uint64])
def test_confusion_matrix_takes_every_integer_label_type(dtype):
    t, p = np.array([0, 1, 2, 2], dtype), np.array([0, 2, 2, 1], dtype)
    expected = [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    np.testing.assert_array_equal(cr.metrics.confusion_matrix(t, p), expected)


def test_evaluate_checks_the_targets_against_the_model_output():
    model, x = cr.MLP(3, [4], 2, rng=0), np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"y labels must lie in \[0, 1\] for 2 classes"):
        cr.evaluate(model, x, np.array([0, 1, 2, 1]), loss=None)
    with pytest.raises(ValueError, match="y has rows of 3 values, but the model outputs 2"):
        cr.evaluate(model, x, np.eye(3)[[0, 1, 2, 1]], loss=None)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\] for 2 classes"):
        cr.evaluate(model, x, np.array([0, 1, 2, 1]))  # the default loss checks them too
    with pytest.raises(TypeError, match="model must be a chainrule Sequential, got str"):
        cr.evaluate("model", x, np.array([0, 1, 1, 1]))


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: cr.MLP(3, 4, 2), TypeError, r"hidden must be a sequence .* got 4"),
        (lambda: cr.MLP(3, "64", 2), TypeError, r"hidden must be a sequence .* got '64'"),
        (lambda: cr.BatchNorm(3, dtype=np.int32), TypeError, "dtype must be a floating type"),
        (lambda: cr.Dense(3, 2, dtype="float"), None, None),  # NumPy's name for float64
        (lambda: cr.Dense(3, 2, dtype="nonsense"), TypeError, "got 'nonsense'"),
        (lambda: cr.Dense(3, 2).astype(np.int16), TypeError, "dtype must be a floating type"),
    ],
    ids=[
        "MLP-int-hidden",
        "MLP-str-hidden",
        "BatchNorm-int",
        "Dense-float",
        "Dense-junk",
        "astype",
    ],
)
def test_constructors_check_types(build, error, match):
    if error is None:
        build()
        return
    with pytest.raises(error, match=match):
        build()


def test_fit_refuses_out_of_range_labels_before_changing_the_model():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    y[-1] = 5  # in the last batch of the first epoch (no shuffle can put every batch after it)
    model = cr.MLP(3, [4], 2, rng=0)
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError, match=r"\[0, 1\] for 2 classes"):
        cr.fit(
            model,
            x,
            y,
            loss=cr.SoftmaxCrossEntropy(),
            optimizer=cr.SGD(0.1),
            epochs=1,
            batch_size=4,
            seed=0,
        )
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])


# -- the CLI -------------------------------------------------------------------------------------
def blobs(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """The outputs of one small real training run, which no failing command may touch."""
    out = tmp_path_factory.mktemp("run")
    args = ["--subset", "300", "--epochs", "1", "--hidden", "8", "--quiet", "--no-plots"]
    assert main(["train", *args, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def bad_data_dir(tmp_path_factory) -> Path:
    """A data directory whose training images are a truncated IDX file."""
    directory = tmp_path_factory.mktemp("data")
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    names += ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    (directory / names[0]).write_bytes(b"\0\0\x08\x03" + struct.pack(">III", 10, 28, 28) + bytes(9))
    for name in names[1:]:
        (directory / name).write_bytes(b"\0\0\x08\x01" + struct.pack(">I", 1) + bytes(1))
    return directory


def cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return code, err.splitlines()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--epochs", "-3"], "expected a positive integer, got '-3'"),
        (["train", "--epochs", "0"], "expected a positive integer, got '0'"),
        (["train", "--lr", "-1"], "expected a finite number >= 0"),
        (["train", "--lr", "nan"], "expected a finite number >= 0"),
        (["train", "--batch-size", "0"], "expected a positive integer"),
        (["train", "--hidden", "8,-2"], "layer widths must be >= 1"),
        (["train", "--subset", "-5"], "expected a positive integer"),
        (["train", "--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
    ],
)
def test_cli_bad_options_exit_2_and_touch_nothing(run_dir, capsys, args, message):
    before = blobs(run_dir)
    code, lines = cli([*args, "--out", str(run_dir)], capsys)
    assert code == 2
    assert message in lines[-1]
    assert lines[-1].startswith("chainrule: error:")
    assert lines[-1].endswith("(see 'chainrule train --help')")
    assert blobs(run_dir) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--validation-split", "1.5"], "--validation-split must be in [0, 1)"),
        (["train", "--dropout", "1"], "--dropout must be in [0, 1)"),
        (["train", "--seed", "-1"], "--seed must be >= 0"),
        (["train", "--data-dir", "/nonexistent/mnist"], "is not a directory"),
        (["train", "--data-dir", "BAD", "--epochs", "1"], "is not a valid IDX file: truncated"),
        (["train", "--resume", "--epochs", "1"], "the run already has 1 epochs"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_touches_nothing(
    run_dir, bad_data_dir, capsys, args, message
):
    before = blobs(run_dir)
    args = [str(bad_data_dir) if a == "BAD" else a for a in args]
    code, lines = cli([*args, "--out", str(run_dir)], capsys)
    assert code == 2
    assert lines == [lines[0]], lines  # exactly one line
    assert lines[0].startswith("chainrule: error: ")
    assert message in lines[0]
    assert blobs(run_dir) == before


def test_cli_missing_or_damaged_files_are_one_line_and_exit_2(run_dir, tmp_path, capsys):
    before = blobs(run_dir)
    model = str(run_dir / "model.npz")
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes((run_dir / "model.npz").read_bytes()[:-100])
    not_an_image = tmp_path / "digit.png"
    not_an_image.write_text("not an image")
    cases = [
        (["evaluate", str(tmp_path / "absent.npz")], "model file not found"),
        (["evaluate", str(damaged)], "is not a readable chainrule model file"),
        (["predict", model, str(tmp_path / "absent.png")], "absent.png: no such file"),
        (["predict", model, str(not_an_image)], "is not a readable image"),
        (["train", "--resume", "--out", str(tmp_path)], "--resume: no saved run"),
    ]
    for argv, message in cases:
        code, lines = cli(argv, capsys)
        assert code == 2, argv
        assert len(lines) == 1, (argv, lines)
        assert message in lines[0], (argv, lines)
    assert blobs(run_dir) == before


def test_cli_unwritable_out_is_one_line_exit_2(tmp_path, capsys):
    existing = tmp_path / "model.npz"
    existing.write_bytes(b"an existing file, not a directory")
    expected = {
        existing: f"chainrule: error: --out {existing} is a file; --out names a directory",
        existing / "sub": f"chainrule: error: cannot write to --out {existing / 'sub'}",
    }
    for out, message in expected.items():
        code, lines = cli(["train", "--epochs", "1", "--out", str(out)], capsys)
        assert code == 2
        assert len(lines) == 1, lines
        assert lines[0].startswith(message)
    assert existing.read_bytes() == b"an existing file, not a directory"


def test_cli_a_negative_epoch_count_is_exactly_one_line(capsys):
    code, lines = cli(["train", "--epochs", "-1"], capsys)
    assert code == 2
    assert len(lines) == 1, lines
