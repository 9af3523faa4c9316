"""Benchmark chainrule's MNIST training and inference against its peers and against a floor.

Run ``python benchmarks/bench.py --help`` for the options; ``benchmarks/README.md`` explains the
contenders and how to read the table. Every contender runs in this one process, interleaved round
by round (the order reversed every other round) after one untimed warm-up round, and the report
gives the median of the timed rounds.

The contenders, per workload:

``limit``
    The GEMM-only limit: only the matrix products an epoch needs (forward ``x @ W`` per layer,
    ``dW = a.T @ dz`` per layer, ``dX = dz @ W.T`` for all but the first layer), at the same batch
    sizes, written into preallocated float32 arrays with ``np.matmul(out=)``. No training loop
    built on the same BLAS can be faster than this, so ``limit / chainrule`` is the share of
    chainrule's time that is unavoidable work.
``numpy``
    A straightforward hand-written NumPy loop, as a textbook would write it.
``chainrule``
    ``cr.fit`` for one epoch on the uint8 images; ``model.predict`` for inference.
``torch``
    PyTorch on the CPU with two threads, data converted to float32 tensors once, up front.
``sklearn``
    scikit-learn's ``MLPClassifier`` for one epoch (``max_iter=1``).

Workload F is a CNN (``chainrule train --model cnn``'s layers); its limit is the loop of the
matrix products the im2col formulation needs (the two convolutions' forward products, their
weight gradients, the second's input gradient ``dcol = dy @ W``, and the Dense layers'), and its
contenders are the limit, chainrule and PyTorch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import gzip
import importlib.util
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import chainrule as cr
from chainrule import cli

SCHEMA = 1
MNIST_DIR = Path(cr.__file__).parent / "datasets" / "data" / "mnist"
CONTENDER_ORDER = ("limit", "numpy", "chainrule", "torch", "sklearn")
SWEEP_WIDTHS = (64, 128, 256, 512, 1024, 2048)
SWEEP_BATCHES = (1, 10, 100, 1000)
#: Batch sizes below this are timed on the first ``SWEEP_PARTIAL_SAMPLES`` images and scaled up.
SWEEP_PARTIAL_BELOW = 100
SWEEP_PARTIAL_SAMPLES = 6000
#: Share of the CPUs used by other processes during a timed run above which results are flagged.
NOISY = 0.10
#: PyTorch's intra-op threads (``--torch-threads``); the other contenders' BLAS: ``--threads``.
TORCH_THREADS = 2
#: The targets of the issue this benchmark answers: (workload, figure, comparison, bound).
TARGETS = (
    ("A", "chainrule_over_numpy", "<=", 1.0),
    ("A", "chainrule_over_torch", "<=", 0.85),
    ("A", "pct_of_limit", ">=", 55),
    ("B", "chainrule_over_torch", "<=", 0.85),
    ("B", "pct_of_limit", ">=", 85),
    ("C", "chainrule_over_torch", "<=", 0.75),
    ("D", "torch_over_chainrule", ">=", 1.2),
    ("D", "pct_of_limit", ">=", 90),
    ("E", "time_saved_pct", ">=", 25),
    ("F", "chainrule_over_torch", "<=", 1.5),
    ("F", "pct_of_limit", ">=", 50),
)
#: The contenders of a convolutional workload.
CONV_CONTENDERS = ("limit", "chainrule", "torch")


# -- data ------------------------------------------------------------------------------------------
@dataclass
class Data:
    """MNIST as the contenders need it: uint8 images (N, 784) and int64 labels.

    The float32 copies (``x / 255``) are made once, on first use, outside any timed region: they
    are the "data pre-converted once" of the PyTorch and scikit-learn contenders.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    _float: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def float32(self, which: str) -> np.ndarray:
        """``x_train`` or ``x_test`` as float32 in [0, 1], cached."""
        if which not in self._float:
            self._float[which] = getattr(self, which).astype(np.float32) / np.float32(255)
        return self._float[which]

    def head(self, n: int) -> Data:
        """The first ``n`` training images (the test set unchanged)."""
        return Data(self.x_train[:n], self.y_train[:n], self.x_test, self.y_test)


def _read_idx_gz(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def load_data() -> Data:
    """MNIST from chainrule's loader if it exists, else straight from the shipped IDX files."""
    try:
        from chainrule.datasets import load_mnist
    except ImportError:
        load_mnist = None
    if load_mnist is not None:
        (x, y), (xt, yt) = load_mnist(normalize=False)
        return Data(x.reshape(len(x), -1), y.astype(np.int64), xt.reshape(len(xt), -1), yt)
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx_gz(MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz", 16)
        labels = _read_idx_gz(MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz", 8)
        arrays[split] = (images.reshape(len(labels), 784), labels.astype(np.int64))
    return Data(*arrays["train"], *arrays["test"])


# -- workloads and trials --------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """One timed task: an epoch of training, or inference over the test set.

    ``samples`` limits training to the first images (the sweep's small batches); the reported
    seconds per epoch are then scaled up by ``full_samples / samples``.
    """

    key: str
    hidden: tuple[int, ...]
    optimizer: str = "sgd"  # "sgd" or "adam"
    lr: float = 0.1
    batch_size: int = 100
    inference: bool = False
    samples: int | None = None
    #: Output channels of the convolutions (5x5, the first padded by 2, each followed by ReLU
    #: and 2x2 max pooling, as ``chainrule train --model cnn`` builds them); () for an MLP.
    channels: tuple[int, ...] = ()

    @property
    def sizes(self) -> tuple[int, ...]:
        if self.channels:  # the Dense layers after the convolutions
            return (self.channels[-1] * 5 * 5, *self.hidden, 10)
        return (784, *self.hidden, 10)

    @property
    def arch(self) -> str:
        if self.channels:
            convs = "-".join(f"conv{c}" for c in self.channels)
            return f"CNN {convs}-{'-'.join(map(str, self.hidden))}-10"
        return "-".join(map(str, self.sizes))

    def describe(self, n_train: int, n_test: int) -> str:
        if self.inference:
            return f"{self.arch} inference, {n_test:,} images in batches of {self.batch_size}"
        opt = f"SGD lr {self.lr:g}" if self.optimizer == "sgd" else f"Adam lr {self.lr:g}"
        n = self.samples or n_train
        scaled = f" (timed on {n:,} images, scaled to {n_train:,})" if n < n_train else ""
        return f"{self.arch} ReLU, {opt}, batch {self.batch_size}, 1 epoch{scaled}"


WORKLOADS: dict[str, Workload] = {
    "A": Workload("A", (100,)),
    "B": Workload("B", (1000,)),
    "C": Workload("C", (512, 512), optimizer="adam", lr=0.001, batch_size=128),
    "D": Workload("D", (1000,), batch_size=1000, inference=True),
    "F": Workload("F", (128,), optimizer="adam", lr=0.001, batch_size=128, channels=(32, 32)),
}


def cnn_conv_shapes(w: Workload) -> list[tuple[int, int, int, int]]:
    """(output pixels per image, kH * kW * C_in, C_out, C_in) of each convolution of ``w``."""
    shapes, c_in, side = [], 1, 28
    for i, c_out in enumerate(w.channels):
        side = side + (4 if i == 0 else 0) - 4  # 5x5, the first padded by 2
        shapes.append((side * side, 25 * c_in, c_out, c_in))
        side //= 2
        c_in = c_out
    return shapes


@dataclass
class Trial:
    """A prepared contender: ``run`` is timed; ``score`` (test accuracy) is called afterwards."""

    run: Callable[[], object]
    score: Callable[[], float] | None = None


@dataclass(frozen=True)
class Contender:
    """A way of doing a workload; ``prepare`` builds a fresh model, untimed."""

    key: str
    label: str
    prepare: Callable[[Workload, Data, int], Trial]
    module: str | None = None  # an optional dependency

    def available(self) -> bool:
        return self.module is None or importlib.util.find_spec(self.module) is not None


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """The sizes of an epoch's batches: full ones, then the remainder (as every contender does)."""
    sizes = [batch_size] * (n // batch_size)
    return [*sizes, n % batch_size] if n % batch_size else sizes


def _glorot(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    scale = math.sqrt(2.0 / fan_in)  # He: the hidden layers are ReLU
    return (rng.standard_normal((fan_in, fan_out)) * scale).astype(np.float32)


def prepare_limit(w: Workload, data: Data, seed: int) -> Trial:
    """Only the epoch's matrix products, into preallocated float32 arrays."""
    if w.channels:
        return prepare_conv_limit(w, data, seed)
    rng = np.random.default_rng(seed)
    sizes, b = w.sizes, w.batch_size
    weights = [_glorot(rng, i, o) for i, o in itertools.pairwise(sizes)]
    acts = [rng.standard_normal((b, s), dtype=np.float32) for s in sizes]  # a_0 .. a_L
    dz = [rng.standard_normal((b, s), dtype=np.float32) for s in sizes[1:]]  # dL/dz_1 .. dL/dz_L
    dws = [np.empty_like(W) for W in weights]
    last = len(weights) - 1
    n = len(data.x_test) if w.inference else w.samples or len(data.x_train)
    epoch = batch_sizes(n, b)

    def run() -> None:
        matmul = np.matmul
        for m in epoch:
            for i, W in enumerate(weights):
                matmul(acts[i][:m], W, out=acts[i + 1][:m])
            if w.inference:
                continue
            for i in range(last, -1, -1):
                matmul(acts[i][:m].T, dz[i][:m], out=dws[i])
                if i > 0:
                    matmul(dz[i][:m], weights[i].T, out=dz[i - 1][:m])

    return Trial(run)


def prepare_conv_limit(w: Workload, data: Data, seed: int) -> Trial:
    """The im2col formulation's matrix products of a CNN epoch, into preallocated arrays: per
    convolution ``col @ W.T`` forward, ``dy.T @ col`` for its weights (and bias, as a column of
    ones in ``col``) and, but for the first, ``dy @ W`` for its input; then the Dense layers'."""
    rng = np.random.default_rng(seed)
    b = w.batch_size
    n = w.samples or len(data.x_train)
    convs = []
    for pixels, k, c_out, _ in cnn_conv_shapes(w):
        m = b * pixels
        convs.append(
            (
                rng.standard_normal((m, k + 1), dtype=np.float32),  # col
                rng.standard_normal((c_out, k + 1), dtype=np.float32),  # [W | b]
                rng.standard_normal((m, c_out), dtype=np.float32),  # y, then dy
                np.empty((c_out, k + 1), np.float32),  # [dW | db]
                np.empty((m, k), np.float32),  # dcol
            )
        )
    sizes = w.sizes
    weights = [_glorot(rng, i, o) for i, o in itertools.pairwise(sizes)]
    acts = [rng.standard_normal((b, s), dtype=np.float32) for s in sizes]
    dz = [rng.standard_normal((b, s), dtype=np.float32) for s in sizes[1:]]
    dws = [np.empty_like(W) for W in weights]
    epoch = batch_sizes(n, b)

    def run() -> None:
        matmul = np.matmul
        for m in epoch:
            for (pixels, *_), (col, wb, y, _, _) in zip(cnn_conv_shapes(w), convs, strict=True):
                rows = m * pixels
                matmul(col[:rows], wb.T, out=y[:rows])
            for i, W in enumerate(weights):
                matmul(acts[i][:m], W, out=acts[i + 1][:m])
            for i in range(len(weights) - 1, -1, -1):
                matmul(acts[i][:m].T, dz[i][:m], out=dws[i])
                matmul(dz[i][:m], weights[i].T, out=dz[i - 1][:m] if i else acts[0][:m])
            for j, ((pixels, k, *_), (col, wb, y, dwb, dcol)) in enumerate(
                zip(cnn_conv_shapes(w), convs, strict=True)
            ):
                rows = m * pixels
                matmul(y[:rows].T, col[:rows], out=dwb)
                if j > 0:
                    matmul(y[:rows], wb[:, :k], out=dcol[:rows])

    return Trial(run)


def _relu_forward(params: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> list[np.ndarray]:
    """Activations ``[x, h_1, ..., logits]`` of a ReLU MLP."""
    acts = [x]
    for i, (W, b) in enumerate(params):
        z = acts[-1] @ W + b
        acts.append(np.maximum(z, 0) if i < len(params) - 1 else z)
    return acts


def prepare_numpy(w: Workload, data: Data, seed: int) -> Trial:
    """A textbook NumPy loop: gather, scale, forward, softmax-CE gradient, backward, update."""
    rng = np.random.default_rng(seed)
    sizes = w.sizes
    params = [(_glorot(rng, i, o), np.zeros(o, np.float32)) for i, o in itertools.pairwise(sizes)]
    adam = [
        (np.zeros_like(W), np.zeros_like(W), np.zeros_like(b), np.zeros_like(b)) for W, b in params
    ]
    b1, b2, eps = 0.9, 0.999, 1e-8
    x, y = data.x_train, data.y_train
    if w.samples:
        x, y = x[: w.samples], y[: w.samples]
    step = 0

    def predict(images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), 1000):
            xb = images[i : i + 1000].astype(np.float32) / 255
            out.append(_relu_forward(params, xb)[-1].argmax(axis=1))
        return np.concatenate(out)

    def train_epoch() -> None:
        nonlocal step
        order = rng.permutation(len(x))
        for start in range(0, len(x), w.batch_size):
            idx = order[start : start + w.batch_size]
            xb, yb = x[idx].astype(np.float32) / 255, y[idx]
            acts = _relu_forward(params, xb)
            logits = acts[-1]
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1
            dz = p / len(yb)
            grads = []
            for i in range(len(params) - 1, -1, -1):
                W = params[i][0]
                grads.append((acts[i].T @ dz, dz.sum(axis=0)))
                if i > 0:
                    dz = (dz @ W.T) * (acts[i] > 0)
            grads.reverse()
            step += 1
            for i, ((W, b), (dW, db)) in enumerate(zip(params, grads, strict=True)):
                if w.optimizer == "sgd":
                    W -= w.lr * dW
                    b -= w.lr * db
                    continue
                mW, vW, mb, vb = adam[i]
                for p_, g, m, v in ((W, dW, mW, vW), (b, db, mb, vb)):
                    m[...] = b1 * m + (1 - b1) * g
                    v[...] = b2 * v + (1 - b2) * g * g
                    m_hat = m / (1 - b1**step)
                    v_hat = v / (1 - b2**step)
                    p_ -= w.lr * m_hat / (np.sqrt(v_hat) + eps)

    def accuracy() -> float:
        return float(np.mean(predict(data.x_test) == data.y_test))

    if w.inference:
        return Trial(lambda: predict(data.x_test))
    return Trial(train_epoch, accuracy)


def prepare_chainrule(w: Workload, data: Data, seed: int) -> Trial:
    """``cr.fit`` for one epoch on the uint8 images, or ``model.predict`` for inference."""
    model: cr.Sequential
    x, y = data.x_train, data.y_train
    if w.channels:  # the preset's layers, without its shifts (no peer has them)
        model = cr.CNN(
            (1, 28, 28),
            list(w.channels),
            10,
            padding=[2] + [0] * (len(w.channels) - 1),
            hidden=list(w.hidden),
            dropout=cli.train.MODEL_DEFAULTS["cnn"]["dropout"],
            rescale=1 / 255,
            rng=seed,
        )
        x = x.reshape(len(x), 1, 28, 28)
    else:
        model = cr.MLP(784, list(w.hidden), 10, rescale=1 / 255, rng=seed)
    x_test = data.x_test.reshape(len(data.x_test), *x.shape[1:])
    if w.samples:
        x, y = x[: w.samples], y[: w.samples]

    def accuracy() -> float:
        return float(np.mean(model.predict(x_test) == data.y_test))

    if w.inference:
        return Trial(lambda: model.predict(x_test, batch_size=w.batch_size))
    optimizer = cr.SGD(lr=w.lr) if w.optimizer == "sgd" else cr.Adam(lr=w.lr)
    loss = cr.SoftmaxCrossEntropy()

    def run() -> None:
        cr.fit(
            model,
            x,
            y,
            loss=loss,
            optimizer=optimizer,
            epochs=1,
            batch_size=w.batch_size,
            seed=seed,
        )

    return Trial(run, accuracy)


def prepare_torch(w: Workload, data: Data, seed: int) -> Trial:
    """PyTorch CPU: nn.Sequential, CrossEntropyLoss, torch.optim, index_select batches."""
    import torch
    from torch import nn

    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    shape: tuple[int, ...] = (784,)
    if w.channels:
        shape = (1, 28, 28)
        c_in = 1
        for i, c_out in enumerate(w.channels):
            layers += [nn.Conv2d(c_in, c_out, 5, padding=2 if i == 0 else 0), nn.ReLU()]
            layers.append(nn.MaxPool2d(2))
            c_in = c_out
        layers.append(nn.Flatten())
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(w.sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(w.sizes) - 2:
            layers.append(nn.ReLU())
            if w.channels:
                layers.append(nn.Dropout(cli.train.MODEL_DEFAULTS["cnn"]["dropout"]))
    model = nn.Sequential(*layers)
    x_test = torch.from_numpy(data.float32("x_test").reshape(-1, *shape))

    def predict() -> torch.Tensor:
        model.eval()
        with torch.inference_mode():
            return torch.cat(
                [
                    model(x_test[i : i + w.batch_size]).argmax(1)
                    for i in range(0, len(x_test), w.batch_size)
                ]
            )

    if w.inference:
        return Trial(predict)
    n = w.samples or len(data.x_train)
    x = torch.from_numpy(data.float32("x_train")[:n].reshape(-1, *shape))
    y = torch.from_numpy(data.y_train[:n])
    opt: torch.optim.Optimizer
    if w.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=w.lr)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=w.lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)

    def train_epoch() -> None:
        model.train()
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, w.batch_size):
            idx = perm[start : start + w.batch_size]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()

    def accuracy() -> float:
        return float((predict().numpy() == data.y_test).mean())

    return Trial(train_epoch, accuracy)


def prepare_sklearn(w: Workload, data: Data, seed: int) -> Trial:
    """scikit-learn MLPClassifier, one epoch via ``max_iter=1``; ConvergenceWarning ignored."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    sgd = w.optimizer == "sgd"
    clf = MLPClassifier(
        hidden_layer_sizes=w.hidden,
        activation="relu",
        solver="sgd" if sgd else "adam",
        alpha=0.0,
        batch_size=100 if w.inference else w.batch_size,
        learning_rate="constant",
        learning_rate_init=w.lr,
        max_iter=1,
        shuffle=True,
        random_state=seed,
        momentum=0.0,
        nesterovs_momentum=False,
        early_stopping=False,
    )
    x_test = data.float32("x_test")

    def predict() -> np.ndarray:
        return np.concatenate(
            [clf.predict(x_test[i : i + w.batch_size]) for i in range(0, len(x_test), w.batch_size)]
        )

    if w.inference:  # needs fitted weights: one short partial_fit, untimed
        clf.partial_fit(data.float32("x_train")[:1000], data.y_train[:1000], classes=np.arange(10))
        return Trial(predict)
    n = w.samples or len(data.x_train)
    x, y = data.float32("x_train")[:n], data.y_train[:n]

    def run() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)

    return Trial(run, lambda: float(np.mean(predict() == data.y_test)))


CONTENDERS: dict[str, Contender] = {
    "limit": Contender("limit", "GEMM-only limit", prepare_limit),
    "numpy": Contender("numpy", "NumPy loop", prepare_numpy),
    "chainrule": Contender("chainrule", "chainrule", prepare_chainrule),
    "torch": Contender("torch", "PyTorch", prepare_torch, module="torch"),
    "sklearn": Contender("sklearn", "scikit-learn", prepare_sklearn, module="sklearn"),
}


# -- measuring -------------------------------------------------------------------------------------
class CpuMeter:
    """How much of the machine's CPU *other* processes used between two readings (Linux /proc).

    On a shared machine another process's load slows a 2-thread BLAS far more than its share of
    the CPU suggests (one descheduled thread stalls the other), so every timed run records it.
    """

    def __init__(self) -> None:
        self.available = Path("/proc/stat").exists() and Path("/proc/self/stat").exists()
        self._tick = os.sysconf("SC_CLK_TCK") if self.available else 100
        self._last = self._read()

    def _read(self) -> tuple[int, int, int] | None:
        """(busy jiffies of all CPUs, all jiffies, jiffies of this process and its threads)."""
        if not self.available:
            return None
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        busy = user + nice + system + irq + softirq + steal
        stat = Path("/proc/self/stat").read_text()
        own = stat[stat.rindex(")") + 2 :].split()  # field 3 onwards; comm may hold spaces
        return busy, busy + idle + iowait, int(own[11]) + int(own[12])  # utime + stime

    def others(self) -> float | None:
        """Fraction of all CPUs (0..1) used by other processes since the last call."""
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[1] == last[1]:
            return None
        busy, total, own = (a - b for a, b in zip(now, last, strict=True))
        return max(0.0, min(1.0, (busy - own) / total))

    def wait_idle(self, limit: float, timeout: float) -> float | None:
        """Sample one second at a time until others use less than ``limit`` of the CPUs, for at
        most ``timeout`` seconds; returns the last sample."""
        deadline = time.monotonic() + timeout
        self.others()
        while True:
            time.sleep(1.0)
            load = self.others()
            if load is None or load < limit or time.monotonic() > deadline:
                return load


@dataclass
class Result:
    """Seconds per epoch of one contender on one workload, over the timed rounds."""

    times: list[float]
    scale: float = 1.0  # multiplies raw times when only part of an epoch was timed
    accuracy: float | None = None
    others_cpu: list[float | None] = field(default_factory=list)  # per timed run, 0..1

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def max_others(self) -> float | None:
        seen = [v for v in self.others_cpu if v is not None]
        return max(seen) if seen else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": min(self.times),
            "max": max(self.times),
            "times": self.times,
            "scale": self.scale,
            "accuracy": self.accuracy,
            "others_cpu": self.others_cpu,
        }


@dataclass
class Settings:
    """How to measure: timed rounds, and whether to wait for a quiet machine before each round."""

    rounds: int = 3
    wait_idle: float = 0.0  # seconds to wait at most for others' CPU use < idle_limit (0: never)
    idle_limit: float = 0.05
    attempts: int = 3  # with wait_idle: times a run is repeated while others' load spoils it
    wait_budget: float = 1800.0  # total seconds of waiting, after which runs go ahead regardless
    waited: float = 0.0

    @property
    def waiting(self) -> bool:
        return self.wait_idle > 0 and self.waited < self.wait_budget

    verbose: bool = True
    meter: CpuMeter = field(default_factory=CpuMeter)


def measure(
    w: Workload, contenders: Sequence[Contender], data: Data, settings: Settings
) -> dict[str, Result]:
    """Time every contender on ``w``: one untimed warm-up round, then ``settings.rounds`` timed
    rounds, the contenders' order reversed every other round. Test accuracy is taken in the last
    round, after the clock stops. With ``settings.wait_idle``, each run starts on a quiet machine
    and is repeated if other processes' load spoiled it (the last attempt is kept regardless)."""
    n = w.samples or len(data.x_train)
    scale = 1.0 if w.inference else len(data.x_train) / n
    meter, rounds = settings.meter, settings.rounds
    results = {c.key: Result([], scale) for c in contenders}
    for r in range(-1, rounds):
        order = list(contenders) if r % 2 else list(reversed(contenders))
        for c in order:
            for attempt in range(1, settings.attempts + 1):
                if settings.waiting:
                    t0 = time.monotonic()
                    meter.wait_idle(settings.idle_limit, settings.wait_idle)
                    settings.waited += time.monotonic() - t0
                trial = c.prepare(w, data, max(r, 0))
                gc.collect()
                meter.others()
                start = time.perf_counter()
                trial.run()
                elapsed = time.perf_counter() - start
                others = meter.others()
                noisy = others is not None and others > NOISY
                if not noisy or not settings.waiting or r < 0:
                    break
                if settings.verbose and attempt < settings.attempts:
                    print(
                        f"  [{w.key} {c.key}: others used {100 * others:.0f}% of the CPUs, "
                        "timing again]",
                        file=sys.stderr,
                        flush=True,
                    )
            if r >= 0:
                results[c.key].times.append(elapsed * scale)
                results[c.key].others_cpu.append(others)
            if r == rounds - 1 and trial.score is not None:
                results[c.key].accuracy = trial.score()
        if settings.verbose:
            label = "warm-up" if r < 0 else f"round {r + 1}/{rounds}"
            print(f"  [{w.key} {label} done]", file=sys.stderr, flush=True)
    return results


# -- reporting -------------------------------------------------------------------------------------
def summary(w: Workload, results: dict[str, Result], n_test: int) -> dict[str, float | None]:
    """The headline figures: ratios of chainrule to its peers, and % of the GEMM-only limit."""
    med = {k: r.median for k, r in results.items()}
    cr_t = med.get("chainrule")
    out: dict[str, float | None] = {
        "chainrule_over_torch": cr_t / med["torch"] if cr_t and "torch" in med else None,
        "torch_over_chainrule": med["torch"] / cr_t if cr_t and "torch" in med else None,
        "chainrule_over_numpy": cr_t / med["numpy"] if cr_t and "numpy" in med else None,
        "chainrule_over_sklearn": cr_t / med["sklearn"] if cr_t and "sklearn" in med else None,
        "pct_of_limit": 100 * med["limit"] / cr_t if cr_t and "limit" in med else None,
    }
    if w.inference and cr_t:
        out["chainrule_images_per_s"] = n_test / cr_t
    return out


def format_workload(w: Workload, results: dict[str, Result], data: Data, rounds: int) -> str:
    """A table of one workload's contenders and its headline line."""
    n_test = len(data.x_test)
    lines = [f"({w.key}) {w.describe(len(data.x_train), n_test)}; median of {rounds} round(s)"]
    head = f"  {'contender':<17}{'median s':>10}{'min s':>9}{'max s':>9}{'x chainrule':>13}"
    head += f"{'% of limit':>12}" + (f"{'images/s':>11}" if w.inference else f"{'test acc':>10}")
    head += f"{'others CPU':>12}"
    lines.append(head)
    med = {k: r.median for k, r in results.items()}
    for key in CONTENDER_ORDER:
        if key not in results:
            continue
        r = results[key]
        rel = f"{r.median / med['chainrule']:.2f}" if "chainrule" in med else "-"
        pct = f"{100 * med['limit'] / r.median:.0f}%" if "limit" in med else "-"
        row = f"  {CONTENDERS[key].label:<17}{r.median:>10.3f}{min(r.times):>9.3f}"
        row += f"{max(r.times):>9.3f}{rel:>13}{pct:>12}"
        if w.inference:
            row += f"{n_test / r.median:>11,.0f}"
        else:
            row += f"{r.accuracy:>10.4f}" if r.accuracy is not None else f"{'-':>10}"
        busy = r.max_others
        row += f"{100 * busy:>11.0f}%" if busy is not None else f"{'-':>12}"
        lines.append(row)
    s = summary(w, results, n_test)
    parts = []
    if s["chainrule_over_torch"] is not None:
        parts.append(f"chainrule/PyTorch {s['chainrule_over_torch']:.2f}x")
    if s["chainrule_over_numpy"] is not None:
        parts.append(f"chainrule/NumPy-loop {s['chainrule_over_numpy']:.2f}x")
    if s["chainrule_over_sklearn"] is not None:
        parts.append(f"chainrule/sklearn {s['chainrule_over_sklearn']:.2f}x")
    if s["pct_of_limit"] is not None:
        parts.append(f"chainrule at {s['pct_of_limit']:.0f}% of the GEMM-only limit")
    if s.get("chainrule_images_per_s"):
        parts.append(f"{s['chainrule_images_per_s']:,.0f} images/s")
    if parts:
        lines.append("  => " + "; ".join(parts))
    busiest = max((r.max_others or 0.0 for r in results.values()), default=0.0)
    if busiest > NOISY:
        lines.append(
            f"  !! other processes used up to {100 * busiest:.0f}% of the CPUs during a "
            "timed run: these figures are unreliable (try --wait-idle 300)"
        )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """What a later run needs to know to compare: versions, BLAS, CPU, commit."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "chainrule": cr.__version__,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        config = np.show_config(mode="dicts")  # type: ignore[func-returns-value]
        blas = config["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older NumPy: not worth failing a benchmark over
        info["numpy_blas"] = None
    for module in ("torch", "sklearn"):
        if importlib.util.find_spec(module) is not None:
            info[module] = __import__(module).__version__
    if "torch" in info:
        import torch

        info["torch_threads"] = TORCH_THREADS
        info["torch_mkl"] = bool(torch.backends.mkl.is_available())
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        info["git"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        info["git"] = None
    return info


def format_compare(new: dict[str, Any], old: dict[str, Any]) -> str:
    """Median seconds of this run against an earlier JSON report, workload by contender."""
    lines = [f"Compared with {old.get('date', '?')} ({old.get('machine', {}).get('git', '?')}):"]
    if old.get("settings", {}).get("n_train") != new["settings"]["n_train"]:
        lines.append("  WARNING: the runs trained on different numbers of images")
    for key in ("cpu", "cpu_count", "numpy", "numpy_blas", "torch"):
        a, b = old.get("machine", {}).get(key), new["machine"].get(key)
        if a != b:
            lines.append(f"  note: {key} differs: {a} -> {b}")
    lines.append(f"  {'workload':<9}{'contender':<17}{'old s':>9}{'new s':>9}{'new/old':>9}")
    for wk, wres in new["workloads"].items():
        owres = old.get("workloads", {}).get(wk)
        if not owres:
            continue
        for ck, r in wres["contenders"].items():
            o = owres["contenders"].get(ck)
            if o:
                lines.append(
                    f"  {wk:<9}{CONTENDERS[ck].label:<17}{o['median']:>9.3f}"
                    f"{r['median']:>9.3f}{r['median'] / o['median']:>9.2f}"
                )
        a, b = owres["summary"].get("pct_of_limit"), wres["summary"].get("pct_of_limit")
        if a and b:
            lines.append(f"  {wk:<9}chainrule % of GEMM-only limit: {a:.0f}% -> {b:.0f}%")
    return "\n".join(lines)


# -- chainrule train against a release ---------------------------------------------------------
def _train_once(tree: Path, threads: int | None) -> dict[str, Any]:
    """``chainrule train`` with its defaults, run from the source tree ``tree`` in a child
    process (this Python and its packages); its ``summary.json`` (test accuracy, seconds)."""
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "chainrule", "train", "--quiet", "--no-plots", "--out", out]
        if threads is not None:
            argv += ["--threads", str(threads)]
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads((Path(out) / "summary.json").read_text())


def run_release(baseline: Path, settings: Settings) -> dict[str, Any]:
    """``chainrule train`` with its defaults: this tree against ``baseline`` (a checkout of the
    release, e.g. ``git worktree add ../release <tag>``), alternating, ``settings.rounds``
    each; the release runs as it did (it has no ``--threads``: its BLAS default)."""
    trees = {"this tree": Path(__file__).resolve().parent.parent, "release": baseline.resolve()}
    for tree in trees.values():  # untimed: compiled kernels cached, files in the page cache
        _train_once_short(tree)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    meter = settings.meter
    for r in range(settings.rounds):
        for name in list(trees) if r % 2 else list(reversed(trees)):
            meter.others()
            summary_ = _train_once(trees[name], None)
            summary_["others_cpu"] = meter.others()
            runs[name].append(summary_)
            if settings.verbose:
                print(f"  [E {name} round {r + 1}: {summary_['train_seconds']:.1f} s]",
                      file=sys.stderr, flush=True)  # fmt: skip
    return {name: _release_row(rows) for name, rows in runs.items()} | {
        "baseline": str(baseline),
        "baseline_git": _git(baseline, "rev-parse", "--short", "HEAD"),
    }


def _train_once_short(tree: Path) -> None:
    argv = [sys.executable, "-m", "chainrule", "train", "--quiet", "--no-plots", "--epochs", "1"]
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        argv += ["--subset", "2000", "--out", out]
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)


def _release_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [r["train_seconds"] for r in rows]
    return {
        "train_seconds": seconds,
        "median": statistics.median(seconds),
        "test_accuracy": [r["test_accuracy"] for r in rows],
        "threads": rows[0].get("threads"),
        "fast_path": rows[0].get("fast_path"),
        "others_cpu": [r["others_cpu"] for r in rows],
    }


def format_release(result: dict[str, Any]) -> str:
    new, old = result["this tree"], result["release"]
    saved = 100 * (1 - new["median"] / old["median"])
    lines = [
        f"(E) chainrule train with its defaults (12 epochs of 784-512-256-10, Adam), this tree "
        f"against the release in {result['baseline']} (git {result['baseline_git']}); median of "
        f"{len(new['train_seconds'])} alternating runs each",
        f"  {'version':<11}{'train s':>9}{'min s':>9}{'max s':>9}{'test acc':>10}  threads",
    ]
    for name, row in (("this tree", new), ("release", old)):
        acc = statistics.median(row["test_accuracy"])
        threads = row["threads"] if row["threads"] is not None else "BLAS default"
        lines.append(
            f"  {name:<11}{row['median']:>9.1f}{min(row['train_seconds']):>9.1f}"
            f"{max(row['train_seconds']):>9.1f}{acc:>10.4f}  {threads}"
        )
    lines.append(f"  => training time {saved:.0f}% lower than the release's")
    busiest = max((v or 0.0 for row in (new, old) for v in row["others_cpu"]), default=0.0)
    if busiest > NOISY:
        lines.append(f"  !! other processes used up to {100 * busiest:.0f}% of the CPUs meanwhile")
    result["summary"] = {"time_saved_pct": saved}
    return "\n".join(lines)


def format_targets(report: dict[str, Any]) -> str:
    """Each target of the issue, met or not, from this run's figures."""
    lines = ["Targets (this run):"]
    for key, figure, op, bound in TARGETS:
        value = report["workloads"].get(key, {}).get("summary", {}).get(figure)
        if value is None:
            lines.append(f"  {key} {figure} {op} {bound:g}: not measured in this run")
            continue
        met = value <= bound if op == "<=" else value >= bound
        lines.append(f"  {key} {figure} {op} {bound:g}: {value:.2f} {'met' if met else 'NOT MET'}")
    return "\n".join(lines)


def _git(tree: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=tree, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


# -- sweep -----------------------------------------------------------------------------------------
def run_sweep(data: Data, settings: Settings) -> list[dict[str, Any]]:
    """chainrule against the GEMM-only limit over hidden widths and batch sizes (784-W-10, SGD)."""
    pair = [CONTENDERS["limit"], CONTENDERS["chainrule"]]
    points: list[tuple[str, Workload]] = [("width", Workload(f"W={w}", (w,))) for w in SWEEP_WIDTHS]
    for b in SWEEP_BATCHES:
        partial = SWEEP_PARTIAL_SAMPLES if b < SWEEP_PARTIAL_BELOW else None
        if partial is not None and partial >= len(data.x_train):
            partial = None
        points.append(("batch", Workload(f"b={b}", (1000,), batch_size=b, samples=partial)))
    rows = []
    for axis, w in points:
        res = measure(w, pair, data, settings)
        t_cr, t_lim = res["chainrule"].median, res["limit"].median
        rows.append(
            {
                "axis": axis,
                "width": w.hidden[0],
                "batch_size": w.batch_size,
                "samples_timed": w.samples or len(data.x_train),
                "chainrule_s": t_cr,
                "limit_s": t_lim,
                "pct_of_limit": 100 * t_lim / t_cr,
                "others_cpu_max": max(
                    res["chainrule"].max_others or 0, res["limit"].max_others or 0
                ),
            }
        )
    return rows


def format_sweep(rows: list[dict[str, Any]], n_train: int) -> str:
    lines = [
        "Sweep: 784-W-10 ReLU, SGD lr 0.1, chainrule vs the GEMM-only limit, s per epoch",
        f"  {'axis':<7}{'width':>7}{'batch':>7}{'chainrule s':>13}{'limit s':>10}"
        f"{'% of limit':>12}",
    ]
    for r in rows:
        note = ""
        if r["samples_timed"] < n_train:
            k = r["samples_timed"]
            note = f"  (timed on the first {k:,} images, times x{n_train / k:g})"
        lines.append(
            f"  {r['axis']:<7}{r['width']:>7}{r['batch_size']:>7}{r['chainrule_s']:>13.3f}"
            f"{r['limit_s']:>10.3f}{r['pct_of_limit']:>11.0f}%{note}"
        )
    return "\n".join(lines)


def plot_sweep(rows: list[dict[str, Any]], path: Path) -> None:
    """Two panels: % of the GEMM-only limit against hidden width and against batch size."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, axis, xkey, title in (
        (fig.add_subplot(1, 2, 1), "width", "width", "784-W-10, batch 100"),
        (fig.add_subplot(1, 2, 2), "batch", "batch_size", "784-1000-10"),
    ):
        sel = [r for r in rows if r["axis"] == axis]
        xs, ys = [r[xkey] for r in sel], [r["pct_of_limit"] for r in sel]
        ax.plot(xs, ys, "o-")
        for r, xv, yv in zip(sel, xs, ys, strict=True):
            ax.annotate(
                f"{r['chainrule_s']:.2g}s",
                (xv, yv),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=8,
            )
        ax.set_xscale("log", base=2 if axis == "width" else 10)
        ax.set_xticks(xs, [str(v) for v in xs])
        ax.set_ylim(0, 105)
        ax.set_xlabel("hidden width" if axis == "width" else "batch size")
        ax.set_ylabel("% of GEMM-only limit (higher is better)")
        ax.set_title(f"chainrule, SGD, {title}")
        ax.grid(alpha=0.3)
    fig.suptitle(
        "chainrule epoch time relative to its matrix products alone (labels: chainrule s/epoch)",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (median reported)")
    p.add_argument(
        "--quick", action="store_true", help="smoke test: 1 round, first 10,000 training images"
    )
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--compare", type=Path, help="an earlier --json file to compare against")
    p.add_argument("--sweep", action="store_true", help="also sweep width and batch size")
    p.add_argument("--plot", type=Path, help="PNG of the sweep (with --sweep)")
    p.add_argument("--workloads", default="ABCDF", help="which of A B C D F to run (default ABCDF)")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="shared machines: before each timed run wait up to SECONDS for other "
        "processes to use < 5%% of the CPUs, and time a run again (up to 3 times) if they "
        "used > 10%% meanwhile",
    )
    p.add_argument(
        "--wait-budget",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="with --wait-idle: stop waiting and retrying after this much waiting in all",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="BLAS threads of the GEMM-only limit, the NumPy loop, chainrule and scikit-learn "
        "(default: one per core, as chainrule train's)",
    )
    p.add_argument(
        "--torch-threads", type=int, default=TORCH_THREADS, help="PyTorch's intra-op threads"
    )
    p.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of the release to time chainrule train against (workload E), e.g. "
        "made by: git worktree add ../chainrule-release <release commit>",
    )
    p.add_argument(
        "--contenders",
        default=",".join(CONTENDER_ORDER),
        help=f"comma-separated subset of {','.join(CONTENDER_ORDER)}",
    )
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.quick:
        args.rounds = 1
    unknown = set(args.workloads.upper()) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workload(s) {sorted(unknown)}")
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    bad = set(args.contenders) - set(CONTENDERS)
    if bad:
        p.error(f"unknown contender(s) {sorted(bad)}")
    if args.plot and not args.sweep:
        p.error("--plot draws the sweep: add --sweep")
    if args.threads < 1 or args.torch_threads < 1:
        p.error("--threads and --torch-threads must be >= 1")
    if args.baseline is not None and not (args.baseline / "src" / "chainrule").is_dir():
        p.error(f"--baseline {args.baseline}: no src/chainrule there")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    global TORCH_THREADS
    TORCH_THREADS = args.torch_threads
    with cr.threads(args.threads):  # every BLAS, SciPy's too (chainrule loads it first)
        return run(args, argv)


def run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Every workload asked for, the release comparison and the targets; returns 0."""
    contenders = []
    for key in CONTENDER_ORDER:
        if key not in args.contenders:
            continue
        c = CONTENDERS[key]
        if c.available():
            contenders.append(c)
        else:
            print(
                f"note: {c.module} is not installed: skipping the {c.label} column "
                f"(pip install -e '.[bench]')",
                file=sys.stderr,
            )
    settings = Settings(rounds=args.rounds, wait_idle=args.wait_idle, wait_budget=args.wait_budget)
    data = load_data()
    if args.quick:
        data = data.head(10_000)
    machine = machine_info()
    started = dt.datetime.now().astimezone()
    print(
        f"chainrule benchmark, {started:%Y-%m-%d %H:%M %Z}; {machine.get('cpu')}, "
        f"{machine['cpu_count']} CPUs; numpy {machine['numpy']} ({machine['numpy_blas']}), "
        f"torch {machine.get('torch', '-')}, scikit-learn {machine.get('sklearn', '-')}; "
        f"{len(data.x_train):,} training images; git {machine['git']}; chainrule: "
        f"{cr.kernels.describe()}; BLAS threads {args.threads}, PyTorch threads "
        f"{args.torch_threads}\n",
        flush=True,
    )
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/bench.py", *(argv or sys.argv[1:])]),
        "machine": machine,
        "settings": {
            "rounds": args.rounds,
            "quick": args.quick,
            "n_train": len(data.x_train),
            "n_test": len(data.x_test),
            "warmup_rounds": 1,
            "wait_idle": args.wait_idle,
            "threads": args.threads,
            "torch_threads": args.torch_threads,
            "fast_path": cr.kernels.active(),
        },
        "workloads": {},
    }
    for key in args.workloads.upper():
        w = WORKLOADS[key]
        usable = [c for c in contenders if not w.channels or c.key in CONV_CONTENDERS]
        results = measure(w, usable, data, settings)
        print(format_workload(w, results, data, args.rounds) + "\n", flush=True)
        report["workloads"][key] = {
            "description": w.describe(len(data.x_train), len(data.x_test)),
            "contenders": {k: r.to_dict() for k, r in results.items()},
            "summary": summary(w, results, len(data.x_test)),
        }
    if args.baseline is not None:
        release = run_release(args.baseline, settings)
        print(format_release(release) + "\n", flush=True)
        report["workloads"]["E"] = release
    print(format_targets(report) + "\n", flush=True)
    if args.sweep:
        rows = run_sweep(data, settings)
        report["sweep"] = rows
        print(format_sweep(rows, len(data.x_train)) + "\n", flush=True)
        if args.plot:
            plot_sweep(rows, args.plot)
            print(f"wrote {args.plot}")
    report["settings"]["seconds_waited"] = round(settings.waited, 1)
    report["seconds_total"] = round((dt.datetime.now().astimezone() - started).total_seconds(), 1)
    print(f"total {report['seconds_total']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.compare:
        print("\n" + format_compare(report, json.loads(args.compare.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
