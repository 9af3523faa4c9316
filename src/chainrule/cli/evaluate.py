"""``chainrule evaluate MODEL``: test accuracy, per-class accuracy and loss of a saved model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..losses import SoftmaxCrossEntropy
from ..train import evaluate
from ._common import (
    Help,
    as_samples,
    check_model_fits,
    load_data,
    load_model,
    report,
    summary_text,
)


def add_parser(sub: Any) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="accuracy of a saved model on the test set",
        description="Test accuracy, per-class accuracy and loss of a saved model.",
        formatter_class=Help,
    )
    ev.add_argument("model", type=Path, help="a model.npz written by chainrule")
    ev.add_argument("--data-dir", type=Path, help="directory of the four IDX files")
    ev.set_defaults(run=command)


def command(args: argparse.Namespace) -> int:
    model = load_model(args.model).model
    _, test = load_data(args.data_dir)
    check_model_fits(model, test, args.model)
    x_test = as_samples(model, test.x, args.model, "the data")
    summary = report(model, x_test, test.y)
    summary.pop("_predicted")
    loss = evaluate(model, x_test, test.y, SoftmaxCrossEntropy())["loss"]
    print(summary_text(summary))
    print(f"test loss       {loss:.4f}")
    return 0
