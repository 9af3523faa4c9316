"""What the commands share: the one-line error, argument types, the parser's look, and the
model, data and report helpers of ``train``, ``evaluate`` and ``predict``."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import numpy as np

from ..io import Checkpoint, load_checkpoint
from ..metrics import confusion_matrix, per_class_accuracy
from ..network import Sequential

#: Written by ``chainrule train`` at the end of every epoch; a model file ``evaluate`` offers too.
CHECKPOINT = "checkpoint.npz"
ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh"]


class UsageError(Exception):
    """A bad command line; reported in one line with exit code 2."""


# -- argument types --------------------------------------------------------------------------------
def _int_at_least(text: str, least: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1  # not an integer: refused below with the same message
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


# -- the parser's look -----------------------------------------------------------------------------
class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.help is None:
            return action.help or ""
        return super()._get_help_string(action) or ""


class ListHelp(Help, argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of a description that lists things, one a line."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse prints its usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"chainrule: error: {message} (see '{self.prog} --help')\n")


# -- models, data and reports ----------------------------------------------------------------------
@contextlib.contextmanager
def user_input(what: str = "") -> Iterator[None]:
    """Report a file or data set the user named that cannot be used as bad input (one line, exit
    2); an error anywhere else is not the user's, and keeps its traceback."""
    try:
        yield
    except (ValueError, OSError) as exc:
        text = str(exc) if not isinstance(exc, OSError) or not exc.filename else os_error(exc)
        raise UsageError(f"{what}{text}") from exc


def os_error(exc: OSError) -> str:
    return f"{exc.filename}: {exc.strerror or exc}"


def model_file(path: Path) -> Path:
    """``path`` if it is a file; for a run directory, the error offers the model inside it."""
    if path.is_dir():
        inside = [path / name for name in ("model.npz", CHECKPOINT) if (path / name).is_file()]
        hint = f"; did you mean {inside[0]}?" if inside else " (expected a model.npz file)"
        raise UsageError(f"{path} is a directory{hint}")
    if not path.is_file():
        raise UsageError(f"model file not found: {path}")
    return path


def load_model(path: Path) -> Checkpoint:
    with user_input():
        return load_checkpoint(model_file(path))


class TestSet(NamedTuple):
    x: np.ndarray  # (N, 1, rows, cols) uint8 images; as_samples gives them the model's shape
    y: np.ndarray
    image_shape: tuple[int, int]  # (rows, cols), for pictures of the images
    num_classes: int  # from the labels of both splits


def load_data(data_dir: Path | None) -> tuple[tuple[np.ndarray, np.ndarray], TestSet]:
    """The training pair, and the test set with what the reports need to know of the data.

    The training arrays are returned apart, so that once split they can be freed.
    """
    from ..datasets import load_mnist

    # uint8 images: a quarter of the float32 memory; batches are scaled to [0, 1] as they are used.
    with user_input():
        (x_train, y_train), (x_test, y_test) = load_mnist(
            path=data_dir, normalize=False, flatten=False
        )
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    test = TestSet(x_test, y_test, (int(x_test.shape[2]), int(x_test.shape[3])), num_classes)
    return (x_train, y_train), test


def as_samples(model: Sequential, images: np.ndarray, name: object, what: str) -> np.ndarray:
    """``images`` ``(N, 1, rows, cols)`` in the shape ``model`` takes: flat vectors for a model
    that starts on vectors (an MLP), the images as they are otherwise (a CNN). A model that
    takes neither is the user's mistake."""
    want = model.input_shape
    x = images.reshape(len(images), -1) if want is not None and len(want) == 1 else images
    check_samples(model, x.shape[1:], name, what)
    return x


def check_samples(model: Sequential, shape: tuple[int, ...], name: object, what: str) -> None:
    want = model.input_shape
    if want is not None and (
        len(want) != len(shape)
        or any(w not in (None, s) for w, s in zip(want, shape, strict=False))
    ):
        raise UsageError(f"{name} expects samples of shape {want}; {what} has {shape}")


def check_model_fits(model: Sequential, test: TestSet, source: Path) -> None:
    """A saved model and a data set that do not belong together are the user's mistake."""
    outputs = model.forward(as_samples(model, test.x[:1], source, "the data")).shape[1]
    if test.num_classes > max(outputs, 2):
        raise UsageError(
            f"{source} has {outputs} outputs, but the labels go up to {test.num_classes - 1}"
        )


def prepare_out(out: Path) -> None:
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


def report(model: Sequential, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
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


def summary_text(summary: dict[str, Any]) -> str:
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
