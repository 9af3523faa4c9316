"""The ``chainrule`` command: train on MNIST, evaluate, predict images, check gradients.

This is the only module that prints. Every failure a user can cause (a missing file, a bad
option, an unwritable output directory, training that diverges) ends in one line on stderr and a
non-zero exit code: 2 for bad input, 1 for a run that failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import numpy as np

from ._version import __version__
from .data import train_validation_split
from .io import atomic_write, load_checkpoint, save
from .losses import LOSSES, SoftmaxCrossEntropy
from .metrics import confusion_matrix, per_class_accuracy
from .network import MLP, Sequential
from .optim import OPTIMIZERS
from .schedules import SCHEDULES, CosineLR, StepLR
from .train import (
    Callback,
    DivergenceError,
    History,
    LearningRateScheduler,
    TrainingRun,
    evaluate,
    fit,
)

__all__ = ["main"]

#: Defaults of ``chainrule train``: >= 98% MNIST test accuracy within a minute on 2 cores
#: (README, "Results").
DEFAULTS: dict[str, Any] = {
    "hidden": "512,256",
    "activation": "relu",
    "optimizer": "adam",
    "lr": 1e-3,
    "epochs": 12,
    "batch_size": 128,
    "dropout": 0.2,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "validation_split": 0.1,
    "seed": 0,
    "out": "runs/mnist",
}


class UsageError(Exception):
    """A bad command line; reported in one line with exit code 2."""


# -- argument types --------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _widths(text: str) -> list[int]:
    if text.strip().lower() == "none":
        return []  # no hidden layer: softmax regression
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:  # also an empty width: "", "256,,128"
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths such as 256,128 (or none), got {text!r}"
        ) from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"layer widths must be >= 1, got {text!r}")
    return widths


class _Given(argparse.Action):
    """Store the value and note that the option was given: ``--resume`` refuses to change what
    the saved run fixed."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = [*getattr(namespace, "given", []), option]


# -- parser ----------------------------------------------------------------------------------------
class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.help is None:
            return action.help or ""
        return super()._get_help_string(action) or ""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse prints its usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="chainrule",
        description="Train deep feed-forward networks by back-propagation, on NumPy.",
    )
    parser.add_argument("--version", action="version", version=f"chainrule {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    formatter = _Help

    train = sub.add_parser(
        "train",
        help="train a network on MNIST (or any IDX data set) and report how well it does",
        description="Train an MLP on MNIST by back-propagation; write the model, its history, "
        "plots and a summary into --out.",
        formatter_class=formatter,
    )
    d = DEFAULTS
    # The options that fix the model and the optimizer (a resumed run keeps the saved ones).
    fixed = train.add_argument_group("model and optimizer (fixed by the saved run on --resume)")
    activations = ["relu", "leaky_relu", "sigmoid", "tanh"]
    options: dict[str, dict[str, Any]] = {
        "--hidden": {"type": _widths, "help": "hidden layer widths, or none"},
        "--activation": {"choices": activations, "help": "activation of the hidden layers"},
        "--optimizer": {"choices": sorted(OPTIMIZERS), "help": "update rule"},
        "--lr": {"type": _non_negative_float, "help": "learning rate"},
        "--dropout": {"type": _non_negative_float, "help": "dropout probability"},
        "--weight-decay": {"type": _non_negative_float, "help": "L2 penalty"},
    }
    for flag, kwargs in options.items():
        fixed.add_argument(flag, default=d[flag[2:].replace("-", "_")], action=_Given, **kwargs)
    train.add_argument(
        "--epochs", type=_positive_int, default=d["epochs"], help="passes over the training set"
    )
    train.add_argument(
        "--batch-size", type=_positive_int, default=d["batch_size"], help="images per step"
    )
    train.add_argument(
        "--schedule",
        default=d["schedule"],
        choices=sorted(SCHEDULES),
        help="learning rate over the epochs",
    )
    train.add_argument(
        "--validation-split",
        type=_non_negative_float,
        default=d["validation_split"],
        help="fraction of the training set held out for validation (0 for none)",
    )
    train.add_argument("--seed", type=int, default=d["seed"], help="seed of weights and shuffles")
    train.add_argument(
        "--data-dir",
        type=Path,
        help="directory of the four IDX files (default: the MNIST copy shipped with chainrule)",
    )
    train.add_argument("--out", type=Path, default=Path(d["out"]), help="output directory")
    train.add_argument(
        "--subset", type=_positive_int, help="train on the first N training images only"
    )
    train.add_argument(
        "--resume", action="store_true", help="continue the run saved in --out up to --epochs"
    )
    train.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    train.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    train.set_defaults(run=cmd_train)

    ev = sub.add_parser(
        "evaluate", help="accuracy of a saved model on the test set", formatter_class=formatter
    )
    ev.add_argument("model", type=Path, help="a model.npz written by chainrule")
    ev.add_argument("--data-dir", type=Path, help="directory of the four IDX files")
    ev.set_defaults(run=cmd_evaluate)

    pr = sub.add_parser(
        "predict",
        help="classify images of digits (PNG, JPEG, any size, either polarity)",
        formatter_class=formatter,
    )
    pr.add_argument("model", type=Path, help="a model.npz written by chainrule")
    pr.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    pr.set_defaults(run=cmd_predict)

    gc = sub.add_parser(
        "gradcheck",
        help="compare back-propagation with the numerical gradient on the notes' DNN",
        formatter_class=formatter,
    )
    gc.add_argument("--depth", type=_positive_int, default=5, help="hidden_depth")
    gc.add_argument("--width", type=_positive_int, default=32, help="num_neuron")
    gc.add_argument(
        "--activation",
        default="sigmoid",
        choices=["relu", "leaky_relu", "sigmoid", "tanh"],
        help="activation of the hidden layers",
    )
    gc.add_argument("--loss", default="mse", choices=sorted(LOSSES), help="loss function")
    gc.add_argument("--batch", type=_positive_int, default=4, help="samples in the batch")
    gc.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    gc.set_defaults(run=cmd_gradcheck)

    from .lessons import LESSONS

    le = sub.add_parser(
        "lesson",
        help="run one of the lecture notes' experiments: prints a table, writes a plot",
        description="Lessons: " + "; ".join(f"{k}: {v.title}" for k, v in LESSONS.items()),
        formatter_class=formatter,
    )
    le.add_argument("name", choices=list(LESSONS), help="which lesson")
    le.add_argument("--quick", action="store_true", help="a seconds-long version")
    le.add_argument("--seed", type=int, default=0, help="seed of everything random")
    le.add_argument("--data-dir", type=Path, help="directory of the four IDX files")
    le.add_argument("--out", type=Path, default=Path("runs/lessons"), help="where the PNG goes")
    le.set_defaults(run=cmd_lesson)
    return parser


# -- helpers ---------------------------------------------------------------------------------------
class _TestSet(NamedTuple):
    x: np.ndarray  # (N, rows * cols) uint8
    y: np.ndarray
    image_shape: tuple[int, int]  # (rows, cols), for pictures of the images
    num_classes: int  # from the labels of both splits


def _load_data(data_dir: Path | None) -> tuple[tuple[np.ndarray, np.ndarray], _TestSet]:
    """The training pair, and the test set with what the reports need to know of the data.

    The training arrays are returned apart, so that once split they can be freed.
    """
    from .datasets import load_mnist

    # uint8 images: a quarter of the float32 memory; batches are scaled to [0, 1] as they are used.
    (x_train, y_train), (x_test, y_test) = load_mnist(path=data_dir, normalize=False, flatten=False)
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    test = _TestSet(
        x_test.reshape(len(x_test), -1),  # a view: no copy
        y_test,
        (int(x_test.shape[2]), int(x_test.shape[3])),
        num_classes,
    )
    return (x_train.reshape(len(x_train), -1), y_train), test


def _prepare_out(out: Path) -> None:
    """Create ``out`` and make sure it is writable before hours of training, not after."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".chainrule-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to --out {out}: {exc.strerror or exc}") from exc


class ProgressBar(Callback):
    """A tqdm bar per epoch and one line when it ends; :meth:`close` it if training fails, so the
    error starts a line of its own."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None

    def on_epoch_begin(self, run: TrainingRun, epoch: int) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=run.batches_per_epoch,
            desc=f"epoch {epoch + 1}/{run.epochs}",
            unit="batch",
            leave=False,
            file=sys.stderr,
            disable=None,  # no bar when stderr is not a terminal (a log file, a pipe)
            mininterval=0.2,
        )

    def on_batch_end(self, run: TrainingRun, batch: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if batch % 50 == 0:
                self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_epoch_end(self, run: TrainingRun, epoch: int, logs: dict[str, float]) -> None:
        self.close()
        if self.quiet:
            return
        line = f"epoch {epoch + 1:>3}/{run.epochs}  loss {logs['loss']:.4f}"
        line += f"  acc {logs['accuracy']:.4f}"
        if "val_loss" in logs:
            line += f"  val_loss {logs['val_loss']:.4f}  val_acc {logs['val_accuracy']:.4f}"
        line += f"  lr {run.optimizer.lr:.2e}  {run.history.seconds[-1]:.1f}s"
        print(line, flush=True)


def _report(model: Sequential, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """Test accuracy, per-class accuracy, and the recognised / not recognised split."""
    num_classes = model.forward(x_test[:1]).shape[1]
    if y_test.max(initial=0) >= num_classes:
        raise ValueError(
            f"the model has {num_classes} outputs, but the test labels go up to {y_test.max()}"
        )
    predicted = model.predict(x_test)
    matrix = confusion_matrix(y_test, predicted, num_classes=max(num_classes, 2))
    wrong = np.flatnonzero(predicted != y_test)
    return {
        "test_accuracy": float(np.mean(predicted == y_test)),
        "matched": int(len(y_test) - len(wrong)),
        "not_matched": len(wrong),
        "per_class_accuracy": {
            str(k): round(float(a), 4) for k, a in enumerate(per_class_accuracy(matrix))
        },
        "confusion_matrix": matrix.tolist(),
        "not_matched_indices": wrong.tolist(),
        "_predicted": predicted,
    }


def _summary_text(summary: dict[str, Any]) -> str:
    lines = [
        f"test accuracy   {summary['test_accuracy']:.2%}  "
        f"({summary['matched']} matched, {summary['not_matched']} not matched)",
        "per class       "
        + "  ".join(f"{k}:{v:.1%}" for k, v in summary["per_class_accuracy"].items()),
    ]
    if "train_seconds" in summary:
        lines.append(
            f"training        {summary['train_seconds']:.1f} s for {summary['epochs']} epoch(s)"
        )
    return "\n".join(lines)


# -- commands --------------------------------------------------------------------------------------
#: What ``chainrule train`` writes into ``--out`` (the PNGs unless ``--no-plots``).
OUTPUTS = ("model.npz", "history.json", "summary.json", "summary.txt")
PLOTS = ("curves.png", "confusion.png", "misclassified.png")


def cmd_train(args: argparse.Namespace) -> int:
    if args.dropout >= 1:
        raise UsageError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.validation_split >= 1:
        raise UsageError(f"--validation-split must be in [0, 1), got {args.validation_split}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir} is not a directory")
    model_path = args.out / "model.npz"
    if args.resume:
        given = getattr(args, "given", [])
        if given:
            raise UsageError(
                f"--resume continues the saved model and optimizer: {', '.join(given)} cannot "
                "change them (train a new run into another --out)"
            )
        if not model_path.is_file():
            raise UsageError(f"--resume: no saved run in {args.out} (missing {model_path.name})")
    _prepare_out(args.out)
    for name in OUTPUTS + PLOTS:  # a file can replace a file, not a directory
        if (args.out / name).exists() and not (args.out / name).is_file():
            raise UsageError(f"cannot write {args.out / name}: it exists and is not a file")
    if not args.no_plots and importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            'the plots need matplotlib: pip install "chainrule[cli]", or pass --no-plots'
        )

    (x_train, y_train), test = _load_data(args.data_dir)
    if args.subset:
        x_train, y_train = x_train[: args.subset], y_train[: args.subset]
    validation = None
    if args.validation_split > 0:
        (x_train, y_train), validation = train_validation_split(
            x_train, y_train, args.validation_split, rng=args.seed
        )

    loss = SoftmaxCrossEntropy()
    history_before: History | None = None
    if args.resume:
        ckpt = load_checkpoint(model_path)
        if ckpt.optimizer is None or ckpt.history is None:
            raise UsageError(f"--resume: {model_path} holds no optimizer state or history")
        model, optimizer, history_before = ckpt.model, ckpt.optimizer, ckpt.history
        initial_epoch = ckpt.next_epoch
    else:
        model = MLP(
            x_train.shape[1],
            args.hidden,
            test.num_classes,
            activation=args.activation,
            dropout=args.dropout,
            rescale=1 / 255,  # the model holds its preprocessing: it is given raw pixels
            rng=args.seed,
        )
        optimizer = OPTIMIZERS[args.optimizer](lr=args.lr, weight_decay=args.weight_decay)
        initial_epoch = 0
    if initial_epoch >= args.epochs:
        raise UsageError(
            f"--resume: the run already has {initial_epoch} epochs (--epochs {args.epochs})"
        )

    schedule = {
        "constant": SCHEDULES["constant"](),
        "cosine": CosineLR(args.epochs),
        "step": StepLR(step_size=max(1, args.epochs // 3), gamma=0.1),
    }[args.schedule]
    if not args.quiet:
        print(
            f"training {model!r}\n{model.num_params:,} parameters, {len(x_train):,} training "
            f"images, {optimizer!r}",
            flush=True,
        )
    progress = ProgressBar(args.quiet)
    start = time.perf_counter()
    try:
        history = fit(
            model,
            x_train,
            y_train,
            loss=loss,
            optimizer=optimizer,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_data=validation,
            seed=args.seed,
            callbacks=[LearningRateScheduler(schedule), progress],
            initial_epoch=initial_epoch,
        )
    finally:
        progress.close()
    train_seconds = time.perf_counter() - start
    if history_before is not None:
        train_seconds += sum(history_before.seconds)
        history = History.from_dict(
            {k: v + getattr(history, k) for k, v in history_before.to_dict().items()}
        )

    summary = _report(model, test.x, test.y)
    predicted = summary.pop("_predicted")
    summary.update(
        train_seconds=round(train_seconds, 2),
        epochs=len(history),
        command=" ".join(["chainrule", *sys.argv[1:]]) if sys.argv else "chainrule",
    )
    text = _summary_text(summary)
    with _staging(args.out) as staged:
        save(
            model,
            staged / "model.npz",
            optimizer=optimizer,
            history=history,
            metadata={"loss": type(loss).__name__},
        )
        atomic_write(staged / "history.json", json.dumps(history.to_dict(), indent=1).encode())
        atomic_write(staged / "summary.json", json.dumps(summary, indent=1).encode())
        atomic_write(staged / "summary.txt", (text + "\n").encode())
        plot_error = None
        if not args.no_plots:
            try:
                _write_plots(staged, history, summary, test, predicted)
            except Exception as exc:  # the trained model is worth keeping without its plots
                plot_error = exc
        written = OUTPUTS if args.no_plots or plot_error else OUTPUTS + PLOTS
        # Only now, with every output made, do they replace the previous run's; plots of that
        # run are removed rather than left beside a model they do not describe.
        _publish(staged, args.out, written, PLOTS)
    print(text)
    print(f"wrote {args.out}/: " + " ".join(written))
    if plot_error is not None:
        print(f"chainrule: error: the plots could not be drawn: {plot_error}", file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A fresh directory inside ``out`` (the same file system, so a rename moves a file into
    place), removed with whatever is left in it."""
    staged = Path(tempfile.mkdtemp(prefix=".chainrule-", dir=out))
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _publish(staged: Path, out: Path, names: Sequence[str], stale: Sequence[str]) -> None:
    """Move ``names`` from ``staged`` into ``out``; delete the files of ``stale`` not among them."""
    for name in names:
        os.replace(staged / name, out / name)
    for name in set(stale) - set(names):
        (out / name).unlink(missing_ok=True)


def _write_plots(
    out: Path, history: History, summary: dict[str, Any], test: _TestSet, predicted: np.ndarray
) -> None:
    from .plots import confusion_png, digits_png, history_png

    atomic_write(out / "curves.png", history_png(history, "chainrule train"))
    matrix = np.array(summary["confusion_matrix"])
    title = f"Test accuracy {summary['test_accuracy']:.2%}"
    atomic_write(out / "confusion.png", confusion_png(matrix, title))
    wrong = np.array(summary["not_matched_indices"][:100], dtype=np.int64)
    captions = [f"#{i}: {test.y[i]}→{predicted[i]}" for i in wrong]
    images = test.x[wrong].reshape(len(wrong), *test.image_shape)
    title = (
        f"Not matched: {summary['not_matched']} of {len(test.y)} "
        f"(first {len(wrong)}; true→predicted)"
    )
    atomic_write(out / "misclassified.png", digits_png(images, captions, title))


def cmd_evaluate(args: argparse.Namespace) -> int:
    model = load_checkpoint(args.model).model
    _, test = _load_data(args.data_dir)
    x_test, y_test = test.x, test.y
    _check_samples(model, x_test.shape[1:], args.model, "the data")
    summary = _report(model, x_test, y_test)
    summary.pop("_predicted")
    loss = evaluate(model, x_test, y_test, SoftmaxCrossEntropy())["loss"]
    print(_summary_text(summary))
    print(f"test loss       {loss:.4f}")
    return 0


def _check_samples(model: Sequential, shape: tuple[int, ...], name: str, what: str) -> None:
    want = model.input_shape
    if want is not None and (
        len(want) != len(shape)
        or any(w not in (None, s) for w, s in zip(want, shape, strict=False))
    ):
        raise UsageError(f"{name} expects samples of shape {want}; {what} has {shape}")


def cmd_predict(args: argparse.Namespace) -> int:
    from .images import load_digit

    model: Sequential = load_checkpoint(args.model).model
    for path in args.images:
        # Pixel levels 0-255 as MNIST stores them: a model scales them with its own Rescaling.
        x = load_digit(path)[None, :] * np.float32(255)
        _check_samples(model, x.shape[1:], args.model, "a 28x28 image")
        p = model.predict_proba(x)[0]
        best = int(p.argmax())
        probs = " ".join(f"{k}:{v:.3f}" for k, v in enumerate(p))
        print(f"{path}: {best} ({p[best]:.1%})  {probs}")
    return 0


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from .gradcheck import gradient_check
    from .network import DNN

    rng = np.random.default_rng(args.seed)
    loss = LOSSES[args.loss]()
    num_output = 2
    # The probability losses need probabilities: a softmax or sigmoid output layer.
    output = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}.get(args.loss)
    net = DNN(
        args.depth,
        args.width,
        num_input=10,
        num_output=num_output,
        activation=args.activation,
        rng=rng,
        dtype=np.float64,
        output_activation=output,
    )
    x = rng.normal(size=(args.batch, 10))
    if args.loss in ("softmax_cross_entropy", "cross_entropy"):
        t = rng.integers(0, num_output, size=args.batch)
    elif args.loss == "binary_cross_entropy":
        t = rng.integers(0, 2, size=(args.batch, num_output)).astype(np.float64)
    else:
        t = rng.random((args.batch, num_output))
    start = time.perf_counter()
    report = gradient_check(net, loss, x, t)
    check_seconds = time.perf_counter() - start
    start = time.perf_counter()
    loss.forward(net.forward(x, training=True), t)
    net.backward(loss.backward())
    backprop_seconds = time.perf_counter() - start
    passes = 2 * (net.num_params + x.size)  # every parameter and every input, twice each
    print(f"{net!r}\n{net.num_params:,} parameters, {loss!r}, batch {args.batch}\n")
    print(report)
    print(
        f"\nback-propagation (1 forward + 1 backward pass): {backprop_seconds * 1e3:.2f} ms\n"
        f"gradient check ({passes:,} forward passes for the numerical gradient): "
        f"{check_seconds:.2f} s, {check_seconds / backprop_seconds:,.0f} times as long"
    )
    return 0 if report.passed else 1


def cmd_lesson(args: argparse.Namespace) -> int:
    from .lessons import LESSONS

    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    _prepare_out(args.out)
    lesson = LESSONS[args.name]
    print(f"lesson {args.name}: {lesson.title}{' (quick)' if args.quick else ''}", flush=True)
    result = lesson.run(quick=args.quick, seed=args.seed, data_dir=args.data_dir)
    print(result.text)
    png = args.out / f"{args.name}.png"
    atomic_write(png, result.png)
    print(f"wrote {png}")
    return 0


# -- entry point -----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)  # inside: Ctrl-C while importing is handled too
        return int(args.run(args))
    except UsageError as exc:
        print(f"chainrule: error: {exc}", file=sys.stderr)
        return 2
    except DivergenceError as exc:
        print(f"chainrule: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError, ImportError) as exc:
        print(f"chainrule: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chainrule: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
