"""``chainrule train``: train on MNIST (or any IDX data set), checkpoint every epoch, and publish
the model, its history, plots and a summary all at once when the run is complete."""

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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import kernels
from ..io import Checkpoint, atomic_write, save
from ..losses import SoftmaxCrossEntropy
from ..network import CNN, MLP, Sequential
from ..optim import OPTIMIZERS, Optimizer
from ..progress import ProgressBar
from ..schedules import SCHEDULES, CosineLR, Schedule, StepLR
from ..train import Callback, History, LearningRateScheduler, TrainingRun, fit
from ._common import (
    ACTIVATIONS,
    CHECKPOINT,
    ListHelp,
    TestSet,
    UsageError,
    as_samples,
    check_model_fits,
    load_data,
    load_model,
    non_negative_float,
    non_negative_int,
    positive_int,
    prepare_out,
    report,
    summary_text,
)
from ._job import Job, together

#: Defaults of ``chainrule train``: >= 98.5% MNIST test accuracy within a minute on 2 cores
#: (README, "Results").
DEFAULTS: dict[str, Any] = {
    "preset": "default",
    "model": "mlp",
    "channels": "32,32",
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
    "threads": None,  # BLAS's own count: one per core, unless OPENBLAS_NUM_THREADS says otherwise
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
#: the command line's (README, "Results").
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {},
    "cnn": {
        "hidden": [128],
        "augment": 2,
        "dropout": 0.25,
        "epochs": 12,
    },
}

#: What ``chainrule train`` writes into ``--out`` (the PNGs unless ``--no-plots``).
OUTPUTS = ("model.npz", "history.json", "summary.json", "summary.txt")
PLOTS = ("curves.png", "confusion.png", "misclassified.png", "filters.png")  # filters: a CNN's
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


# -- options ---------------------------------------------------------------------------------------
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
    "--lr": {"type": non_negative_float, "help": "learning rate"},
    "--dropout": {"type": non_negative_float, "help": "dropout probability"},
    "--weight-decay": {"type": non_negative_float, "help": "L2 penalty"},
    "--augment": {
        "type": non_negative_int,
        "metavar": "PIXELS",
        "help": "shift each training image by up to this many pixels (0: no shifts)",
    },
}
#: The option names of FIXED_OPTIONS, as argparse stores them.
_FIXED_NAMES = tuple(flag[2:].replace("-", "_") for flag in FIXED_OPTIONS)


def add_parser(sub: Any) -> None:
    width = max(len(name) for name in PRESETS)
    presets = "\n".join(
        f"  {name:<{width}}  {as_flags(options) or '(the defaults above)'}"
        for name, options in PRESETS.items()
    )
    train = sub.add_parser(
        "train",
        help="train a network on MNIST (or any IDX data set) and report how well it does",
        description="Train an MLP or a CNN on MNIST by back-propagation; write the model, its\n"
        "history, plots and a summary into --out. A checkpoint is saved there after every\n"
        "epoch; --resume continues an interrupted or finished run.",
        epilog=f"presets (an option given on the command line beats the preset):\n{presets}",
        formatter_class=ListHelp,
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
        type=positive_int,
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
        type=non_negative_float,
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
        type=positive_int,
        action=_Given,
        help="train on the first N training images only",
    )
    train.add_argument(
        "--epochs",
        type=positive_int,
        default=d["epochs"],
        action=_Given,
        help="passes over the training set",
    )
    train.add_argument("--out", type=Path, default=Path(d["out"]), help="output directory")
    train.add_argument(
        "--threads",
        type=positive_int,
        default=d["threads"],
        help="threads for BLAS (default: BLAS's own count, one per core unless "
        "OPENBLAS_NUM_THREADS or OMP_NUM_THREADS say otherwise: the fastest on an idle machine; "
        "1 on a busy one); results are bit for bit the same only with the same count on the same "
        "kind of CPU (README, Performance)",
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
    train.set_defaults(run=command)


# -- the run ---------------------------------------------------------------------------------------
def command(args: argparse.Namespace) -> int:
    if not args.distributed:
        return _train_command(args, None)
    job = Job.start()
    try:
        return _train_command(args, job)
    except BaseException as exc:  # main reports it as this process's and ends the job
        exc.job = job  # type: ignore[attr-defined]
        raise


def _train_command(args: argparse.Namespace, job: Job | None) -> int:
    leader = job is None or job.rank == 0  # prints and writes files
    args.quiet = args.quiet or not leader
    with together(job):
        _check_train_options(args)
        args.threads = _thread_count(args.threads)
        saved = _resume_from(args) if args.resume else None  # with the saved run's options
        if saved is None:
            _apply_preset(args)
            _check_model_options(args)
        if leader:
            prepare_out(args.out)
            _check_outputs_writable(args)
        (x_train, y_train), test = load_data(args.data_dir)
        x_train, y_train = x_train[: args.subset], y_train[: args.subset]  # [:None] keeps all
        n_train = _training_count(len(x_train), args.validation_split)
        run = _build(args, saved, int(np.prod(x_train.shape[1:])), test)
        x_train = as_samples(run.model, x_train, args.out, "the data")
    if not args.quiet:
        processes = "" if job is None else f", {job.size} processes"
        print(
            f"training {run.model!r}\n{run.model.num_params:,} parameters, {n_train:,} training "
            f"images, {_describe_optimizer(run.optimizer)}{processes}; {kernels.describe()}, "
            f"{_threads_text(args.threads)}",
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


def _check_train_options(args: argparse.Namespace) -> None:
    if args.dropout >= 1:
        raise UsageError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.validation_split >= 1:
        raise UsageError(f"--validation-split must be in [0, 1), got {args.validation_split}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir} is not a directory")


def _thread_count(requested: int | None) -> int | None:
    """``--threads``, or else the count BLAS uses now (kept as the run's, so that the header,
    the summary and every library loaded later agree on it)."""
    if requested is not None:
        return requested
    try:
        return kernels.blas_threads()
    except ImportError:  # no threadpoolctl: BLAS keeps its own count, unknown here
        return None


def _threads_text(threads: int | None) -> str:
    if threads is None:
        return "BLAS's own thread count"
    return f"{threads} thread{'s' if threads > 1 else ''}"


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
            saved = load_model(args.out / name)
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


def as_flags(options: dict[str, Any]) -> str:
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
    args: argparse.Namespace, saved: Checkpoint | None, num_inputs: int, test: TestSet
) -> _Run:
    """The saved run to continue, or a new model and optimizer from the options."""
    if saved is not None:
        assert saved.optimizer is not None
        assert saved.history is not None
        check_model_fits(saved.model, test, args.out)
        return _Run(saved.model, saved.optimizer, saved.history, [sum(saved.history.seconds)])
    optimizer = OPTIMIZERS[args.optimizer](lr=args.lr, weight_decay=args.weight_decay)
    return _Run(_new_model(args, num_inputs, test), optimizer, History(), [])


def _new_model(args: argparse.Namespace, num_inputs: int, test: TestSet) -> Sequential:
    """The network the options describe; it holds its preprocessing (it is given raw pixels)."""
    if args.model == "cnn":
        return CNN(
            (1, *test.image_shape),
            args.channels,
            test.num_classes,
            kernel_size=5,
            padding=[2] + [0] * (len(args.channels) - 1),  # 28 -> 28 -> 14 -> 10 -> 5
            pool=2,
            hidden=args.hidden,
            activation=args.activation,
            dropout=args.dropout,
            rescale=1 / 255,
            augment=args.augment,
            rng=args.seed,
        )
    return MLP(
        num_inputs,
        args.hidden,
        test.num_classes,
        activation=args.activation,
        dropout=args.dropout,
        batchnorm=args.batch_norm,
        rescale=1 / 255,
        augment=args.augment,
        rng=args.seed,
    )


def _schedule(args: argparse.Namespace) -> Schedule:
    return {
        "constant": SCHEDULES["constant"](),
        "cosine": CosineLR(args.epochs),
        "step": StepLR(step_size=max(1, args.epochs // 3), gamma=0.1),
    }[args.schedule]


def _train(
    args: argparse.Namespace, run: _Run, x: np.ndarray, y: np.ndarray, job: Job | None
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


# -- the outputs -----------------------------------------------------------------------------------
def _finish(args: argparse.Namespace, run: _Run, test: TestSet) -> int:
    """Evaluate the trained model and write every output; only then do they replace the last
    complete run's."""
    summary = report(run.model, as_samples(run.model, test.x, args.out, "the data"), test.y)
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
    text = (
        summary_text(summary) + f"\noptions         {_changed_options(summary) or '(the defaults)'}"
    )
    plot_error = None
    plots: tuple[str, ...] = PLOTS
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


def _changed_options(summary: dict[str, Any]) -> str:
    """The run's options that differ from the defaults, as flags (summary.json has them all)."""
    used = {"preset": None, **summary["options"], "epochs": summary["epochs"]}  # preset first
    return as_flags(
        {k: v for k, v in used.items() if as_flags({k: v}) != as_flags({k: DEFAULTS.get(k)})}
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
    out: Path, run: _Run, summary: dict[str, Any], test: TestSet, predicted: np.ndarray
) -> tuple[str, ...]:
    """Write the figures into ``out``; returns their names."""
    from ..plots import confusion_png, digits_png, filters_png, history_png

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
