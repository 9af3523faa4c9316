"""``chainrule gradcheck``: back-propagation against central differences on the notes' DNN."""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from ..losses import LOSSES
from ._common import ACTIVATIONS, Help, positive_int


def add_parser(sub: Any) -> None:
    gc = sub.add_parser(
        "gradcheck",
        help="compare back-propagation with the numerical gradient on the notes' DNN",
        description="Compute the gradient of the notes' DNN by back-propagation and by central "
        "differences, compare them (max relative error) and time both.",
        formatter_class=Help,
    )
    gc.add_argument("--depth", type=positive_int, default=5, help="hidden layers (hidden_depth)")
    gc.add_argument("--width", type=positive_int, default=32, help="units per hidden layer")
    gc.add_argument(
        "--activation",
        default="sigmoid",
        choices=ACTIVATIONS,
        help="activation of the hidden layers",
    )
    gc.add_argument("--loss", default="mse", choices=sorted(LOSSES), help="loss function")
    gc.add_argument("--batch", type=positive_int, default=4, help="samples in the batch")
    gc.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    gc.set_defaults(run=command)


def command(args: argparse.Namespace) -> int:
    from ..gradcheck import gradient_check
    from ..network import DNN

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
