"""``chainrule predict MODEL IMAGE...``: classify photos and drawings of digits, one line each."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Help, UsageError, as_samples, load_model


def add_parser(sub: Any) -> None:
    pr = sub.add_parser(
        "predict",
        help="classify images of digits (PNG, JPEG, any size, either polarity)",
        description="Classify each image: one line per image with its three most probable "
        "classes. An image that cannot be read or holds no digit is named on stderr with the "
        "reason, and the exit code is then 2.",
        formatter_class=Help,
    )
    pr.add_argument("model", type=Path, help="a model.npz written by chainrule")
    pr.add_argument(
        "images",
        type=Path,
        nargs="+",
        metavar="IMAGE",
        help="image files of one digit each, dark on light or light on dark",
    )
    pr.set_defaults(run=command)


def command(args: argparse.Namespace) -> int:
    """One line per image: its class and the three most probable classes; an image that cannot
    be classified is named on stderr with the reason, and the others are still classified."""
    model = load_model(args.model).model
    shape = (1, 1, 28, 28)
    as_samples(model, np.zeros(shape, np.float32), args.model, "a 28x28 image")
    failed = 0
    for path in args.images:
        try:
            x = as_samples(model, _read_image(path).reshape(shape), args.model, "an image")
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
    from ..images import load_digit

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
