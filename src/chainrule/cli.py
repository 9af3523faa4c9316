"""The ``chainrule`` command: train on MNIST, evaluate, predict images, export, check gradients.

This is the only module that prints. Every failure a user can cause (a missing file, a bad
option, an unwritable output directory, training that diverges) ends in one line on stderr and a
non-zero exit code: 2 for bad input, 1 for a run that failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import numpy as np

from . import kernels
from ._version import __version__
from .distributed import world
from .io import Checkpoint, atomic_write, load_checkpoint, save
from .losses import LOSSES, SoftmaxCrossEntropy
from .metrics import confusion_matrix, per_class_accuracy
from .network import CNN, MLP, Sequential
from .optim import OPTIMIZERS, Optimizer
from .progress import ProgressBar
from .schedules import SCHEDULES, CosineLR, Schedule, StepLR
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

#: Defaults of ``chainrule train``: >= 98.5% MNIST test accuracy within a minute on 2 cores
#: (README, "Results").
DEFAULTS: dict[str, Any] = {
    "preset": "default",
    "model": "mlp",
    "channels": "16,32",
    "hidden": "512,256",
    "batch_norm": False,
    "augment": 1,
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
    "threads": 1,
    "out": "runs/mnist",
}

#: ``chainrule train --preset NAME``: option values over DEFAULTS, as the options parse them; an
#: option given on the command line beats its preset's value (README, "Results").
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "best": {
        "hidden": [1024, 1024],
        "batch_norm": True,
        "dropout": 0.3,
        "augment": 2,
        "epochs": 30,
    },
}


#: ``chainrule train --model NAME``: the values a model takes over DEFAULTS, below a preset's and
#: the command line's. ``cnn``: >= 99.4% MNIST test accuracy within 10 minutes on 2 cores
#: (README, "Results").
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {},
    "cnn": {
        "hidden": [128],
        "augment": 2,
        "dropout": 0.25,
        "epochs": 12,
    },
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


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
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


class _GivenFlag(argparse.BooleanOptionalAction):
    """``--flag`` / ``--no-flag``, noted as given (as ``--flag``) like :class:`_Given`."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        super().__call__(parser, namespace, values, option)
        namespace.given = [*getattr(namespace, "given", []), self.option_strings[0]]


def _given(args: argparse.Namespace) -> set[str]:
    """The names of the options given on the command line, as argparse stores them."""
    return {flag[2:].replace("-", "_") for flag in getattr(args, "given", [])}


# -- parser ----------------------------------------------------------------------------------------
class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.help is None:
            return action.help or ""
        return super()._get_help_string(action) or ""


class _ListHelp(_Help, argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of a description that lists things, one a line."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse prints its usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"chainrule: error: {message} (see '{self.prog} --help')\n")


ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh"]
#: The options that fix the model and the optimizer: a resumed run keeps the saved ones.
FIXED_OPTIONS: dict[str, dict[str, Any]] = {
    "--model": {
        "choices": list(MODEL_DEFAULTS),
        "help": "mlp: Dense layers on the pixels; cnn: convolutions (5x5, the first padded by 2, "
        "each followed by 2x2 max pooling), then --hidden Dense layers",
    },
    "--channels": {"type": _widths, "help": "output channels of each convolution (--model cnn)"},
    "--hidden": {"type": _widths, "help": "hidden layer widths, or none"},
    "--batch-norm": {"action": _GivenFlag, "help": "BatchNorm after each hidden Dense layer"},
    "--activation": {"choices": ACTIVATIONS, "help": "activation of the hidden layers"},
    "--optimizer": {"choices": sorted(OPTIMIZERS), "help": "update rule"},
    "--lr": {"type": _non_negative_float, "help": "learning rate"},
    "--dropout": {"type": _non_negative_float, "help": "dropout probability"},
    "--weight-decay": {"type": _non_negative_float, "help": "L2 penalty"},
    "--augment": {
        "type": _non_negative_int,
        "metavar": "PIXELS",
        "help": "shift each training image by up to this many pixels (0: no shifts)",
    },
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="chainrule",
        description="Train deep feed-forward networks by back-propagation, on NumPy.",
    )
    parser.add_argument("--version", action="version", version=f"chainrule {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_gradcheck(sub)
    _add_lesson(sub)
    return parser


def _add_train(sub: Any) -> None:
    width = max(len(name) for name in PRESETS)
    presets = "\n".join(
        f"  {name:<{width}}  {_as_flags(options) or '(the defaults above)'}"
        for name, options in PRESETS.items()
    )
    train = sub.add_parser(
        "train",
        help="train a network on MNIST (or any IDX data set) and report how well it does",
        description="Train an MLP or a CNN on MNIST by back-propagation; write the model, its\n"
        "history, plots and a summary into --out. A checkpoint is saved there after every\n"
        "epoch; --resume continues an interrupted or finished run.",
        epilog=f"presets (an option given on the command line beats the preset):\n{presets}",
        formatter_class=_ListHelp,
    )
    d = DEFAULTS
    train.add_argument(
        "--preset",
        default=d["preset"],
        choices=list(PRESETS),
        action=_Given,
        help="option values for a purpose (listed below; kept from the saved run on --resume)",
    )
    fixed = train.add_argument_group("model and optimizer (fixed by the saved run on --resume)")
    for flag, kwargs in FIXED_OPTIONS.items():
        fixed.add_argument(
            flag, default=d[flag[2:].replace("-", "_")], **{"action": _Given, **kwargs}
        )
    kept = train.add_argument_group("data and batches (kept from the saved run on --resume)")
    kept.add_argument(
        "--batch-size",
        type=_positive_int,
        default=d["batch_size"],
        action=_Given,
        help="images per step",
    )
    kept.add_argument(
        "--schedule",
        default=d["schedule"],
        choices=sorted(SCHEDULES),
        action=_Given,
        help="learning rate over the epochs",
    )
    kept.add_argument(
        "--validation-split",
        type=_non_negative_float,
        default=d["validation_split"],
        action=_Given,
        help="fraction of the training set held out for validation (0 for none)",
    )
    kept.add_argument(
        "--seed", type=int, default=d["seed"], action=_Given, help="seed of weights and shuffles"
    )
    kept.add_argument(
        "--data-dir",
        type=Path,
        action=_Given,
        help="directory of the four IDX files (default: the MNIST copy shipped with chainrule)",
    )
    kept.add_argument(
        "--subset",
        type=_positive_int,
        action=_Given,
        help="train on the first N training images only",
    )
    train.add_argument(
        "--epochs",
        type=_positive_int,
        default=d["epochs"],
        action=_Given,
        help="passes over the training set",
    )
    train.add_argument("--out", type=Path, default=Path(d["out"]), help="output directory")
    train.add_argument(
        "--threads",
        type=_positive_int,
        default=d["threads"],
        help="threads for BLAS and the compiled kernels; results are bit for bit the same only "
        "with the same count on the same kind of CPU (README, Performance)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --out (its checkpoint, else its model.npz) up to --epochs",
    )
    train.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    train.add_argument(
        "--distributed",
        action="store_true",
        help="train data-parallel on the processes mpirun started: 'mpirun -n N python -m "
        "mpi4py -m chainrule train --distributed ...' trains the model one process would with "
        "the same --batch-size (needs chainrule[mpi]); only rank 0 prints and writes files",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    train.set_defaults(run=cmd_train)


def _add_evaluate(sub: Any) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="accuracy of a saved model on the test set",
        description="Test accuracy, per-class accuracy and loss of a saved model.",
        formatter_class=_Help,
    )
    ev.add_argument("model", type=Path, help="a model.npz written by chainrule")
    ev.add_argument("--data-dir", type=Path, help="directory of the four IDX files")
    ev.set_defaults(run=cmd_evaluate)


def _add_predict(sub: Any) -> None:
    pr = sub.add_parser(
        "predict",
        help="classify images of digits (PNG, JPEG, any size, either polarity)",
        description="Classify each image: one line per image with its three most probable "
        "classes. An image that cannot be read or holds no digit is named on stderr with the "
        "reason, and the exit code is then 2.",
        formatter_class=_Help,
    )
    pr.add_argument("model", type=Path, help="a model.npz written by chainrule")
    pr.add_argument(
        "images",
        type=Path,
        nargs="+",
        metavar="IMAGE",
        help="image files of one digit each, dark on light or light on dark",
    )
    pr.set_defaults(run=cmd_predict)


def _add_export(sub: Any) -> None:
    ex = sub.add_parser(
        "export",
        help="write a saved model as an ONNX file, for onnxruntime and other runtimes",
        description="Write a saved model as an ONNX graph (opset 17). Its input x takes what "
        "the model takes (raw pixels, as float32; the model's scaling is in the graph); its "
        "first output is the class probabilities, its second (for a model ending in logits) "
        'the logits. Needs the onnx extra: pip install "chainrule[onnx]".',
        formatter_class=_Help,
    )
    ex.add_argument("model", type=Path, help="a model.npz written by chainrule")
    ex.add_argument(
        "--onnx", type=Path, required=True, metavar="OUT", help="the .onnx file to write"
    )
    ex.set_defaults(run=cmd_export)


def _add_gradcheck(sub: Any) -> None:
    gc = sub.add_parser(
        "gradcheck",
        help="compare back-propagation with the numerical gradient on the notes' DNN",
        description="Compute the gradient of the notes' DNN by back-propagation and by central "
        "differences, compare them (max relative error) and time both.",
        formatter_class=_Help,
    )
    gc.add_argument("--depth", type=_positive_int, default=5, help="hidden layers (hidden_depth)")
    gc.add_argument("--width", type=_positive_int, default=32, help="units per hidden layer")
    gc.add_argument(
        "--activation",
        default="sigmoid",
        choices=ACTIVATIONS,
        help="activation of the hidden layers",
    )
    gc.add_argument("--loss", default="mse", choices=sorted(LOSSES), help="loss function")
    gc.add_argument("--batch", type=_positive_int, default=4, help="samples in the batch")
    gc.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    gc.set_defaults(run=cmd_gradcheck)


def _add_lesson(sub: Any) -> None:
    from .lessons import LESSONS

    width = max(len(name) for name in LESSONS)
    listing = "\n".join(f"  {name:<{width}}  {lesson.title}" for name, lesson in LESSONS.items())
    le = sub.add_parser(
        "lesson",
        help="run one of the lecture notes' experiments: prints a table, writes a plot",
        description=f"Run one of the lecture notes' experiments.\n\nlessons:\n{listing}",
        formatter_class=_ListHelp,
    )
    le.add_argument("name", choices=list(LESSONS), metavar="NAME", help="which lesson (see above)")
    le.add_argument("--quick", action="store_true", help="a seconds-long version")
    le.add_argument("--seed", type=int, default=0, help="seed of everything random")
    le.add_argument("--data-dir", type=Path, help="directory of the four IDX files")
    le.add_argument("--out", type=Path, default=Path("runs/lessons"), help="where the PNG goes")
    le.set_defaults(run=cmd_lesson)


# -- helpers ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _user_input(what: str = "") -> Iterator[None]:
    """Report a file or data set the user named that cannot be used as bad input (one line, exit
    2); an error anywhere else is not the user's, and keeps its traceback."""
    try:
        yield
    except (ValueError, OSError) as exc:
        text = str(exc) if not isinstance(exc, OSError) or not exc.filename else _os_error(exc)
        raise UsageError(f"{what}{text}") from exc


def _os_error(exc: OSError) -> str:
    return f"{exc.filename}: {exc.strerror or exc}"


def _model_file(path: Path) -> Path:
    """``path`` if it is a file; for a run directory, the error offers the model inside it."""
    if path.is_dir():
        inside = [path / name for name in ("model.npz", CHECKPOINT) if (path / name).is_file()]
        hint = f"; did you mean {inside[0]}?" if inside else " (expected a model.npz file)"
        raise UsageError(f"{path} is a directory{hint}")
    if not path.is_file():
        raise UsageError(f"model file not found: {path}")
    return path


def _load_model(path: Path) -> Checkpoint:
    with _user_input():
        return load_checkpoint(_model_file(path))


class _TestSet(NamedTuple):
    x: np.ndarray  # (N, 1, rows, cols) uint8 images; _as_samples gives them the model's shape
    y: np.ndarray
    image_shape: tuple[int, int]  # (rows, cols), for pictures of the images
    num_classes: int  # from the labels of both splits


def _load_data(data_dir: Path | None) -> tuple[tuple[np.ndarray, np.ndarray], _TestSet]:
    """The training pair, and the test set with what the reports need to know of the data.

    The training arrays are returned apart, so that once split they can be freed.
    """
    from .datasets import load_mnist

    # uint8 images: a quarter of the float32 memory; batches are scaled to [0, 1] as they are used.
    with _user_input():
        (x_train, y_train), (x_test, y_test) = load_mnist(
            path=data_dir, normalize=False, flatten=False
        )
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    test = _TestSet(x_test, y_test, (int(x_test.shape[2]), int(x_test.shape[3])), num_classes)
    return (x_train, y_train), test


def _as_samples(model: Sequential, images: np.ndarray, name: object, what: str) -> np.ndarray:
    """``images`` ``(N, 1, rows, cols)`` in the shape ``model`` takes: flat vectors for a model
    that starts on vectors (an MLP), the images as they are otherwise (a CNN). A model that
    takes neither is the user's mistake."""
    want = model.input_shape
    x = images.reshape(len(images), -1) if want is not None and len(want) == 1 else images
    _check_samples(model, x.shape[1:], name, what)
    return x


def _check_model_fits(model: Sequential, test: _TestSet, source: Path) -> None:
    """A saved model and a data set that do not belong together are the user's mistake."""
    outputs = model.forward(_as_samples(model, test.x[:1], source, "the data")).shape[1]
    if test.num_classes > max(outputs, 2):
        raise UsageError(
            f"{source} has {outputs} outputs, but the labels go up to {test.num_classes - 1}"
        )


def _prepare_out(out: Path) -> None:
    """Create ``out`` and make sure it is writable before hours of training, not after."""
    if out.exists() and not out.is_dir():
        raise UsageError(
            f"--out {out} is a file; --out names a directory, which the outputs go into"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".chainrule-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to --out {out}: {exc.strerror or exc}") from exc


def _report(model: Sequential, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """Test accuracy, per-class accuracy, and the recognised / not recognised split."""
    num_classes = model.forward(x_test[:1]).shape[1]
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
    if "options" in summary:
        lines.append(f"options         {_changed_options(summary) or '(the defaults)'}")
    return "\n".join(lines)


def _changed_options(summary: dict[str, Any]) -> str:
    """The run's options that differ from the defaults, as flags (summary.json has them all)."""
    used = {"preset": None, **summary["options"], "epochs": summary["epochs"]}  # preset first
    return _as_flags(
        {k: v for k, v in used.items() if _as_flags({k: v}) != _as_flags({k: DEFAULTS.get(k)})}
    )


def _describe_optimizer(optimizer: Optimizer) -> str:
    """``Adam(lr=0.001, ...)``: the base learning rate the schedule scales, figures rounded."""
    config = {**optimizer.config(), "lr": optimizer.initial_lr}
    args = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in config.items()
    )
    return f"{type(optimizer).__name__}({args})"


def _history_dict(history: History) -> dict[str, list[float]]:
    """The history as ``history.json`` holds it: epochs counted from 1, as the log and plots do."""
    data = history.to_dict()
    data["epoch"] = [e + 1 for e in history.epoch]
    return data


# -- train -----------------------------------------------------------------------------------------
#: What ``chainrule train`` writes into ``--out`` (the PNGs unless ``--no-plots``).
OUTPUTS = ("model.npz", "history.json", "summary.json", "summary.txt")
PLOTS = ("curves.png", "confusion.png", "misclassified.png", "filters.png")  # filters: a CNN's
#: Written at the end of every epoch, removed once the run's outputs are in place.
CHECKPOINT = "checkpoint.npz"
#: The options a resumed run keeps from the run it continues (saved with each checkpoint); a
#: different value given with ``--resume`` is refused. ``--epochs`` may grow.
KEPT_OPTIONS = (
    "preset",
    "subset",
    "data_dir",
    "validation_split",
    "seed",
    "batch_size",
    "schedule",
)


def cmd_train(args: argparse.Namespace) -> int:
    if not args.distributed:
        return _train_command(args, None)
    job = _Job.start()
    try:
        return _train_command(args, job)
    except BaseException as exc:  # main reports it as this process's and ends the job
        exc.job = job  # type: ignore[attr-defined]
        raise


def _train_command(args: argparse.Namespace, job: _Job | None) -> int:
    leader = job is None or job.rank == 0  # prints and writes files
    args.quiet = args.quiet or not leader
    with _together(job):
        _check_train_options(args)
        saved = _resume_from(args) if args.resume else None  # with the saved run's options
        if saved is None:
            _apply_preset(args)
            _check_model_options(args)
        if leader:
            _prepare_out(args.out)
            _check_outputs_writable(args)
        (x_train, y_train), test = _load_data(args.data_dir)
        x_train, y_train = x_train[: args.subset], y_train[: args.subset]  # [:None] keeps all
        n_train = _training_count(len(x_train), args.validation_split)
        run = _build(args, saved, int(np.prod(x_train.shape[1:])), test)
        x_train = _as_samples(run.model, x_train, args.out, "the data")
    if not args.quiet:
        processes = "" if job is None else f", {job.size} processes"
        print(
            f"training {run.model!r}\n{run.model.num_params:,} parameters, {n_train:,} training "
            f"images, {_describe_optimizer(run.optimizer)}{processes}; {kernels.describe()}, "
            f"{args.threads} thread{'s' if args.threads > 1 else ''}",
            flush=True,
        )
    try:
        _train(args, run, x_train, y_train, job)
        del x_train, y_train
        return _finish(args, run, test) if leader else 0
    except BaseException as exc:  # Ctrl-C, divergence, a crash: main says what is kept
        if leader and not run.published:
            exc.kept = _kept(args, run)  # type: ignore[attr-defined]
        raise


@dataclasses.dataclass
class _Job:
    """The processes of a ``--distributed`` run, as the command line starts and reports them."""

    comm: Any
    rank: int
    size: int

    @classmethod
    def start(cls) -> _Job:
        try:
            comm = world()
        except (ImportError, RuntimeError) as exc:
            raise UsageError(f"--distributed: {exc}") from exc
        return cls(comm, comm.Get_rank(), comm.Get_size())

    @staticmethod
    def shared(exc: BaseException) -> bool:
        """Whether every process fails alike, at the same point (the set-up, or the divergence
        that the summed loss shows all of them): rank 0 reports it, all exit with its code.
        Any other failure is this process's own: it ends the job."""
        return isinstance(exc, _SharedFailure | DivergenceError)


class _SharedFailure(UsageError):
    """The set-up failed on one process or more; raised on every process."""


@contextlib.contextmanager
def _together(job: _Job | None) -> Iterator[None]:
    """Run the set-up on every process, and fail on all of them if it fails on one: a process
    must not start training alone (it would wait for the others forever)."""
    if job is None:
        yield
        return
    failure = None
    try:
        yield
    except UsageError as exc:
        failure = str(exc)
    failures = job.comm.allgather(failure)
    failed = {rank: text for rank, text in enumerate(failures) if text is not None}
    if len(failed) == job.size and len(set(failed.values())) == 1:
        raise _SharedFailure(failed[0])
    if failed:
        raise _SharedFailure("; ".join(f"rank {r}: {text}" for r, text in failed.items()))


def _check_train_options(args: argparse.Namespace) -> None:
    if args.dropout >= 1:
        raise UsageError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.validation_split >= 1:
        raise UsageError(f"--validation-split must be in [0, 1), got {args.validation_split}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir} is not a directory")


def _check_model_options(args: argparse.Namespace) -> None:
    """Options of one kind of model refused for the other (a preset's included)."""
    if args.model == "cnn" and args.batch_norm:
        raise UsageError("--batch-norm applies to --model mlp only (a preset may set it)")
    if args.model == "cnn" and not args.channels:
        raise UsageError("--channels: a CNN needs at least one convolution")
    if args.model == "mlp" and "channels" in _given(args):
        raise UsageError("--channels applies to --model cnn only")


def _check_outputs_writable(args: argparse.Namespace) -> None:
    for name in (*OUTPUTS, *PLOTS, CHECKPOINT):  # a file can replace a file, not a directory
        if (args.out / name).exists() and not (args.out / name).is_file():
            raise UsageError(f"cannot write {args.out / name}: it exists and is not a file")
    if not args.no_plots and importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            'the plots need matplotlib: pip install "chainrule[cli]", or pass --no-plots'
        )


def _resume_from(args: argparse.Namespace) -> Checkpoint:
    """The run to continue: the checkpoint of an unfinished run, else the last complete one."""
    given = [flag for flag in getattr(args, "given", []) if flag in FIXED_OPTIONS]
    if given:
        raise UsageError(
            f"--resume continues the saved model and optimizer: {', '.join(given)} cannot "
            "change them (train a new run into another --out)"
        )
    for name in (CHECKPOINT, "model.npz"):
        if (args.out / name).is_file():
            saved = _load_model(args.out / name)
            if saved.optimizer is None or saved.history is None:
                raise UsageError(f"--resume: {args.out / name} holds no optimizer state or history")
            _keep_saved_options(args, saved)  # the saved preset may set --epochs
            if name == "model.npz" and saved.next_epoch >= args.epochs:
                raise UsageError(
                    f"--resume: the run already has {saved.next_epoch} epochs "
                    f"(--epochs {args.epochs})"
                )
            return saved
    raise UsageError(f"--resume: no saved run in {args.out} (missing model.npz)")


def _keep_saved_options(args: argparse.Namespace, saved: Checkpoint) -> None:
    """Take the saved run's options: its preset and data options (refused if given with another
    value), then its model and optimizer options (which ``--resume`` refuses to be given)."""
    options = saved.metadata.get("options")
    if not isinstance(options, dict):  # a model saved before the options were: as given
        return
    given = _given(args)
    for name in KEPT_OPTIONS:
        value = options.get(name, DEFAULTS.get(name))  # runs saved before it: its default
        if name == "data_dir" and value is not None:
            value = Path(value)
        current = getattr(args, name)
        if name in given and current != value:
            flag = "--" + name.replace("_", "-")
            raise UsageError(
                f"--resume keeps the saved run's preset, data and batches: it was trained with "
                f"{flag} {_option_text(value)}, not {_option_text(current)} (train a new run "
                "into another --out)"
            )
        setattr(args, name, value)
    if "model" in options:  # the model's own values come before the preset's
        args.model = options["model"]
    _apply_preset(args)  # for what the saved run does not record: the epochs to go to
    for name in _FIXED_NAMES:
        if name in options:  # runs saved before they were recorded keep the defaults
            setattr(args, name, options[name])


def _apply_preset(args: argparse.Namespace) -> None:
    """Give each option that ``--preset`` (or else ``--model``) sets and the command line does not
    the preset's (or the model's) value."""
    if args.preset not in PRESETS:  # only a saved run's can be unknown
        raise UsageError(
            f"--resume: the saved run's preset {args.preset!r} is not one of {list(PRESETS)}"
        )
    given = _given(args)
    for name, value in {**MODEL_DEFAULTS[args.model], **PRESETS[args.preset]}.items():
        if name not in given:
            setattr(args, name, value)


def _as_flags(options: dict[str, Any]) -> str:
    """``--hidden 1024,1024 --batch-norm``: option values as the command line gives them."""
    words = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, list):
            words += [flag, ",".join(map(str, value)) or "none"]
        else:
            words += [flag, str(value)]
    return " ".join(words)


def _option_text(value: Any) -> str:
    return "(none)" if value is None else str(value)


#: The option names of FIXED_OPTIONS, as argparse stores them.
_FIXED_NAMES = tuple(flag[2:].replace("-", "_") for flag in FIXED_OPTIONS)


def _saved_options(args: argparse.Namespace) -> dict[str, Any]:
    """Every option that shapes the run: saved with each checkpoint and in the summary."""
    options = {name: getattr(args, name) for name in (*_FIXED_NAMES, *KEPT_OPTIONS)}
    if options["data_dir"] is not None:
        options["data_dir"] = str(options["data_dir"].resolve())
    return options


def _training_count(n: int, validation_split: float) -> int:
    """Images left to train on once ``fit`` holds out its validation share (its own rule)."""
    held_out = round(n * validation_split)
    if validation_split > 0 and not 0 < held_out < n:
        raise UsageError(
            f"--validation-split {validation_split} of {n} images leaves an empty training or "
            "validation set"
        )
    return n - held_out


@dataclasses.dataclass
class _Run:
    model: Sequential
    optimizer: Optimizer
    history: History  # the epochs trained (empty for a new run), extended by the checkpoints
    seconds: list[float]  # training time, one entry per fit call
    published: bool = False  # the outputs are in --out


def _build(
    args: argparse.Namespace, saved: Checkpoint | None, num_inputs: int, test: _TestSet
) -> _Run:
    """The saved run to continue, or a new model and optimizer from the options."""
    if saved is not None:
        assert saved.optimizer is not None
        assert saved.history is not None
        _check_model_fits(saved.model, test, args.out)
        return _Run(saved.model, saved.optimizer, saved.history, [sum(saved.history.seconds)])
    if args.model == "cnn":
        channels = args.channels
        model: Sequential = CNN(
            (1, *test.image_shape),
            channels,
            test.num_classes,
            kernel_size=5,
            padding=[2] + [0] * (len(channels) - 1),  # 28 -> 28 -> 14 -> 10 -> 5
            pool=2,
            hidden=args.hidden,
            activation=args.activation,
            dropout=args.dropout,
            rescale=1 / 255,
            augment=args.augment,
            rng=args.seed,
        )
        optimizer = OPTIMIZERS[args.optimizer](lr=args.lr, weight_decay=args.weight_decay)
        return _Run(model, optimizer, History(), [])
    model = MLP(
        num_inputs,
        args.hidden,
        test.num_classes,
        activation=args.activation,
        dropout=args.dropout,
        batchnorm=args.batch_norm,
        rescale=1 / 255,  # the model holds its preprocessing: it is given raw pixels
        augment=args.augment,
        rng=args.seed,
    )
    optimizer = OPTIMIZERS[args.optimizer](lr=args.lr, weight_decay=args.weight_decay)
    return _Run(model, optimizer, History(), [])


def _schedule(args: argparse.Namespace) -> Schedule:
    return {
        "constant": SCHEDULES["constant"](),
        "cosine": CosineLR(args.epochs),
        "step": StepLR(step_size=max(1, args.epochs // 3), gamma=0.1),
    }[args.schedule]


def _train(
    args: argparse.Namespace, run: _Run, x: np.ndarray, y: np.ndarray, job: _Job | None
) -> None:
    """Train the epochs still to do, saving a checkpoint at the end of each (rank 0 alone, in a
    distributed run).

    ``fit`` holds out the validation images itself (from ``seed``), so ``chainrule train`` and
    ``cr.fit(validation_split=..., seed=...)`` hold out the same ones.
    """
    initial_epoch = run.history.epoch[-1] + 1 if run.history else 0
    if initial_epoch >= args.epochs:  # a checkpoint of a finished run: only outputs left to write
        return
    callbacks: list[Callback] = [LearningRateScheduler(_schedule(args))]
    if job is None or job.rank == 0:
        callbacks.append(_Checkpointer(args, run))
    progress = None if args.quiet else ProgressBar()
    if progress is not None:
        callbacks.append(progress)
    start = time.perf_counter()
    try:
        fit(
            run.model,
            x,
            y,
            loss=SoftmaxCrossEntropy(),
            optimizer=run.optimizer,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_split=args.validation_split,
            seed=args.seed,
            callbacks=callbacks,
            initial_epoch=initial_epoch,
            threads=args.threads,
            comm=None if job is None else job.comm,
        )
    finally:
        if progress is not None:
            progress.close()  # an error message then starts a line of its own
    run.seconds.append(time.perf_counter() - start)


class _Checkpointer(Callback):
    """Saves the run at the end of every epoch into ``--out/checkpoint.npz``, atomically, beside
    (never over) the outputs of the last complete run."""

    def __init__(self, args: argparse.Namespace, run: _Run) -> None:
        self.args, self.run = args, run
        self.path = args.out / CHECKPOINT

    def on_epoch_end(self, run: TrainingRun, epoch: int, logs: dict[str, float]) -> None:
        for key, values in run.history.to_dict().items():  # this epoch's record
            if values:  # val_* stay empty without validation data
                getattr(self.run.history, key).append(values[-1])
        save(
            run.model,
            self.path,
            optimizer=run.optimizer,
            history=self.run.history,
            metadata=_metadata(self.args),
        )


def _kept(args: argparse.Namespace, run: _Run) -> str:
    """What an interrupted or failed run leaves, and how to go on from it."""
    out, checkpoint = args.out, args.out / CHECKPOINT
    if not run.history or not checkpoint.is_file():
        return f"no epoch was complete, so nothing was kept; {out} is as it was"
    return (
        f"kept {checkpoint} (epochs 1-{len(run.history)} of {args.epochs}); "
        f"'chainrule train --resume --out {out} --epochs {args.epochs}' continues it. The "
        f"outputs of the last complete run in {out} are as they were"
    )


def _metadata(args: argparse.Namespace) -> dict[str, Any]:
    return {"loss": "SoftmaxCrossEntropy", "options": _saved_options(args)}


def _finish(args: argparse.Namespace, run: _Run, test: _TestSet) -> int:
    """Evaluate the trained model and write every output; only then do they replace the last
    complete run's."""
    summary = _report(run.model, _as_samples(run.model, test.x, args.out, "the data"), test.y)
    predicted = summary.pop("_predicted")
    summary.update(
        train_seconds=round(sum(run.seconds), 2),
        epochs=len(run.history),
        threads=args.threads,
        fast_path=kernels.active(),
        model=repr(run.model),
        options=_saved_options(args),
        command=" ".join(["chainrule", *sys.argv[1:]]) if sys.argv else "chainrule",
    )
    text = _summary_text(summary)
    plot_error = None
    with _staging(args.out) as staged:
        save(
            run.model,
            staged / "model.npz",
            optimizer=run.optimizer,
            history=run.history,
            metadata=_metadata(args),
        )
        history_json = json.dumps(_history_dict(run.history), indent=1)
        atomic_write(staged / "history.json", history_json.encode())
        atomic_write(staged / "summary.json", json.dumps(summary, indent=1).encode())
        atomic_write(staged / "summary.txt", (text + "\n").encode())
        if not args.no_plots:
            try:
                plots = _write_plots(staged, run, summary, test, predicted)
            except Exception as exc:  # the trained model is worth keeping without its plots
                plot_error = exc
        written = OUTPUTS if args.no_plots or plot_error else OUTPUTS + plots
        # Plots of the previous run are removed rather than left beside a model they do not
        # describe; the checkpoint goes last, once the outputs it led to are in place.
        _publish(staged, args.out, written, PLOTS)
        run.published = True
        (args.out / CHECKPOINT).unlink(missing_ok=True)
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
    out: Path, run: _Run, summary: dict[str, Any], test: _TestSet, predicted: np.ndarray
) -> tuple[str, ...]:
    """Write the figures into ``out``; returns their names."""
    from .plots import confusion_png, digits_png, filters_png, history_png

    atomic_write(out / "curves.png", history_png(run.history, "chainrule train"))
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
    # The first layer's filters, for a model whose first weight is one (out, in, kH, kW).
    first = next((name for name, p in run.model.params.items() if p.ndim > 1), None)
    if first is None or run.model.params[first].ndim != 4:
        return PLOTS[:3]
    filters = run.model.params[first]
    title = f"First-layer filters ({first}, {filters.shape[2]}x{filters.shape[3]})"
    atomic_write(out / "filters.png", filters_png(filters, title))
    return PLOTS


def cmd_evaluate(args: argparse.Namespace) -> int:
    model = _load_model(args.model).model
    _, test = _load_data(args.data_dir)
    _check_model_fits(model, test, args.model)
    x_test = _as_samples(model, test.x, args.model, "the data")
    summary = _report(model, x_test, test.y)
    summary.pop("_predicted")
    loss = evaluate(model, x_test, test.y, SoftmaxCrossEntropy())["loss"]
    print(_summary_text(summary))
    print(f"test loss       {loss:.4f}")
    return 0


def _check_samples(model: Sequential, shape: tuple[int, ...], name: object, what: str) -> None:
    want = model.input_shape
    if want is not None and (
        len(want) != len(shape)
        or any(w not in (None, s) for w, s in zip(want, shape, strict=False))
    ):
        raise UsageError(f"{name} expects samples of shape {want}; {what} has {shape}")


def cmd_predict(args: argparse.Namespace) -> int:
    """One line per image: its class and the three most probable classes; an image that cannot
    be classified is named on stderr with the reason, and the others are still classified."""
    model = _load_model(args.model).model
    shape = (1, 1, 28, 28)
    _as_samples(model, np.zeros(shape, np.float32), args.model, "a 28x28 image")
    failed = 0
    for path in args.images:
        try:
            x = _as_samples(model, _read_image(path).reshape(shape), args.model, "an image")
        except UsageError as exc:
            print(f"chainrule: error: {path}: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        print(f"{path}: {_top_classes(model.predict_proba(x)[0])}", flush=True)
    if failed and len(args.images) > 1:
        print(
            f"chainrule: error: {failed} of {len(args.images)} images not classified",
            file=sys.stderr,
        )
    return 2 if failed else 0


def _read_image(path: Path) -> np.ndarray:
    """The image as a batch of one MNIST-like sample; what makes it unusable as a UsageError."""
    from .images import load_digit

    if path.is_dir():
        raise UsageError("is a directory")
    if not path.exists():
        raise UsageError("no such file")
    try:
        # Pixel levels 0-255 as MNIST stores them: a model scales them with its own Rescaling.
        return load_digit(path)[None, :] * np.float32(255)
    except OSError as exc:
        raise UsageError(exc.strerror or str(exc)) from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _top_classes(p: np.ndarray, k: int = 3) -> str:
    """``3  (3: 97.1%, 8: 1.9%, 5: 0.4%)``: the class, then the ``k`` most probable ones."""
    if len(p) == 1:  # one sigmoid unit: the probability of class 1
        p = np.array([1 - p[0], p[0]])
    top = np.argsort(-p, kind="stable")[:k]
    return f"{top[0]}  (" + ", ".join(f"{c}: {p[c]:.1%}" for c in top) + ")"


def cmd_export(args: argparse.Namespace) -> int:
    """Write the model as ONNX; a layer that cannot be exported is named, and nothing written."""
    from .export import OPSET, export_onnx

    model = _load_model(args.model).model
    if args.onnx.is_dir():
        raise UsageError(f"--onnx {args.onnx} is a directory; --onnx names the file to write")
    try:
        with _user_input():
            export_onnx(model, args.onnx)
    except NotImplementedError as exc:  # a layer without an ONNX form
        raise UsageError(f"{args.model}: {exc}") from exc
    sample = ", ".join("?" if d is None else str(d) for d in model.input_shape or ())
    print(
        f"wrote {args.onnx} (ONNX opset {OPSET}): input x, float32 (batch, {sample}); "
        "first output: probabilities"
    )
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
#: Exit code of an unexpected exception: a bug in chainrule (BSD's EX_SOFTWARE).
BUG_EXIT = 70


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    A mistake of the user's (a bad option, a file that is missing or not a model, an image with
    no digit) is one line on stderr and exit code 2; a run that fails (diverges, a plot that
    cannot be drawn) exits with 1; Ctrl-C with 130. Any other exception is a bug in chainrule:
    its traceback is printed, with a line saying so, and the exit code is 70.
    """
    try:
        args = build_parser().parse_args(argv)  # inside: Ctrl-C while importing is handled too
        return int(args.run(args))
    except (Exception, KeyboardInterrupt) as exc:
        job: _Job | None = getattr(exc, "job", None)
        if job is None:
            return _report_failure(exc)
        if not job.shared(exc):  # this process's own failure: it ends every process
            code = _report_failure(exc, f"rank {job.rank} of {job.size}: " if job.rank else "")
            sys.stderr.flush()
            job.comm.Abort(code)
        return _report_failure(exc) if job.rank == 0 else _exit_code(exc)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, DivergenceError):
        return 1
    if isinstance(exc, UsageError | OSError | ImportError):  # OSError, ImportError: the machine's
        return 2
    return 130 if isinstance(exc, KeyboardInterrupt) else BUG_EXIT


def _report_failure(exc: BaseException, where: str = "") -> int:
    """Say what went wrong in one line (and what was kept); returns the exit code."""
    code, kept = _exit_code(exc), getattr(exc, "kept", None)
    if isinstance(exc, KeyboardInterrupt):
        print(f"chainrule: {where}interrupted", file=sys.stderr)
        if kept:
            print(f"chainrule: {kept}", file=sys.stderr)
    elif code == BUG_EXIT:
        traceback.print_exception(exc)
        _error(
            f"{where}this is a bug in chainrule, not a mistake in what you gave it "
            f"({type(exc).__name__}); please report it with the traceback above",
            kept,
        )
    else:
        _error(f"{where}{exc}", kept)
    return code


def _error(message: str, kept: str | None = None) -> None:
    print(f"chainrule: error: {message}", file=sys.stderr)
    if kept:
        print(f"chainrule: {kept}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
