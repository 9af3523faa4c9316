"""``chainrule export MODEL --onnx OUT``: a saved model as an ONNX graph."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import Help, UsageError, load_model, user_input


def add_parser(sub: Any) -> None:
    ex = sub.add_parser(
        "export",
        help="write a saved model as an ONNX file, for onnxruntime and other runtimes",
        description="Write a saved model as an ONNX graph (opset 17). Its input x takes what "
        "the model takes (raw pixels, as float32; the model's scaling is in the graph); its "
        "first output is the class probabilities, its second (for a model ending in logits) "
        'the logits. Needs the onnx extra: pip install "chainrule[onnx]".',
        formatter_class=Help,
    )
    ex.add_argument("model", type=Path, help="a model.npz written by chainrule")
    ex.add_argument(
        "--onnx", type=Path, required=True, metavar="OUT", help="the .onnx file to write"
    )
    ex.set_defaults(run=command)


def command(args: argparse.Namespace) -> int:
    """Write the model as ONNX; a layer that cannot be exported is named, and nothing written."""
    from ..export import OPSET, export_onnx

    model = load_model(args.model).model
    if args.onnx.is_dir():
        raise UsageError(f"--onnx {args.onnx} is a directory; --onnx names the file to write")
    try:
        with user_input():
            export_onnx(model, args.onnx)
    except NotImplementedError as exc:  # a layer without an ONNX form
        raise UsageError(f"{args.model}: {exc}") from exc
    sample = ", ".join("?" if d is None else str(d) for d in model.input_shape or ())
    print(
        f"wrote {args.onnx} (ONNX opset {OPSET}): input x, float32 (batch, {sample}); "
        "first output: probabilities"
    )
    return 0
