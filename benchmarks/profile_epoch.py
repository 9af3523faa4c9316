"""Where one chainrule training epoch spends its time, and what the alternatives would save.

For one workload (default: 784-1000-10, SGD lr 0.1, batch 100, the benchmark's workload B):

1. the epoch time of ``cr.fit`` against the GEMM-only limit (from ``bench.py``);
2. inclusive time per component, measured inside a real ``cr.fit`` epoch by timing wrappers
   installed on the layer, loss and optimizer *instances* and on ``chainrule.train``'s module
   globals (``Batches``, ``as_labels``, ``snapshot``), in this process only;
3. a ledger of the individual NumPy operations of one training step, each timed alone at the
   epoch's shapes and multiplied by its number of calls per epoch, grouped into GEMM,
   element-wise, gather/convert and per-batch checks, next to cheaper equivalents;
4. the top of a cProfile of one epoch.

Usage: ``python benchmarks/profile_epoch.py [--hidden 1000] [--batch 100] [--optimizer sgd]``.
Nothing in ``src/`` is modified; the wrappers live only in this process.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import math
import pstats
import resource
import statistics
import sys
import time
import timeit
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import chainrule as cr
import chainrule.train as cr_train

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # the sibling benchmark: data loading, the GEMM-only limit, the CPU meter


# -- 2. timing wrappers ----------------------------------------------------------------------------
class Stopwatch:
    """Accumulates wall time per name over calls of wrapped functions."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1

        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def instrument(
    model: cr.Sequential, loss: cr.Loss, optimizer: cr.Optimizer, sw: Stopwatch
) -> Callable[[], None]:
    """Install timing wrappers; returns a function that removes them."""
    saved: list[tuple[object, str, Any, bool]] = []

    def patch(obj: object, attr: str, name: str) -> None:
        own = attr in vars(obj)
        saved.append((obj, attr, vars(obj).get(attr), own))
        setattr(obj, attr, sw.wrap(name, getattr(obj, attr)))

    for i, layer in enumerate(model.layers):
        label = f"{i}:{type(layer).__name__}"
        patch(layer, "_call", f"forward  {label} (with input check)")
        patch(layer, "_forward", f"forward  {label} compute")
        patch(layer, "_backward", f"backward {label}")
    patch(model, "backward", "backward (whole model)")
    patch(model, "_forward_trusted", "forward (whole model)")
    patch(model, "classes", "model.classes (argmax) per batch")
    patch(loss, "_forward_trusted", "loss.forward (log_softmax)")
    patch(loss, "backward", "loss.backward (softmax - onehot)")
    patch(optimizer, "_step_trusted", "optimizer.step")
    patch(cr_train, "as_labels", "as_labels per batch")
    patch(cr_train, "snapshot", "snapshot (per epoch)")

    original_batches = cr_train.Batches

    class TimedBatches(original_batches):  # type: ignore[misc, valid-type]
        def epoch(self, rng: np.random.Generator | None) -> Iterator[tuple[np.ndarray, ...]]:
            it = super().epoch(rng)
            while True:
                start = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    sw.seconds["Batches: gather + scale uint8"] += time.perf_counter() - start
                yield item

    cr_train.Batches = TimedBatches  # type: ignore[misc]

    def undo() -> None:
        cr_train.Batches = original_batches  # type: ignore[misc]
        for obj, attr, value, own in reversed(saved):
            if own:
                setattr(obj, attr, value)
            else:
                delattr(obj, attr)

    return undo


# -- 3. the op ledger ------------------------------------------------------------------------------
def best_of(fn: Callable[[], object], repeat: int = 7) -> float:
    """Seconds per call: the best of ``repeat`` timeit runs of about 0.05 s each."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(1, number // 4)
    return min(timer.repeat(repeat, number)) / number


def ledger(
    sizes: tuple[int, ...], batch: int, n: int, lr: float, settle: Callable[[], None]
) -> list[tuple[str, str, float]]:
    """(category, operation, seconds per epoch) for one SGD step's operations at these shapes."""
    rng = np.random.default_rng(0)
    steps = math.ceil(n / batch)
    f32 = np.float32
    x_u8 = rng.integers(0, 256, (n, sizes[0]), dtype=np.uint8)
    idx = rng.permutation(n)[:batch]
    xb = rng.random((batch, sizes[0]), dtype=f32)
    rows: list[tuple[str, str, float]] = []

    def add(category: str, what: str, fn: Callable[[], object], calls: int = 1) -> None:
        settle()
        rows.append((category, what, best_of(fn) * calls * steps))

    buf_u8 = np.empty((batch, sizes[0]), np.uint8)
    buf_f = np.empty((batch, sizes[0]), f32)
    add(
        "gather",
        f"np.take(x_uint8, idx, out=) {batch}x{sizes[0]}",
        lambda: np.take(x_u8, idx, axis=0, out=buf_u8),
    )
    add(
        "gather",
        "np.multiply(uint8, 1/255, out=float32)",
        lambda: np.multiply(buf_u8, f32(1 / 255), out=buf_f),
    )
    acts = [xb]
    for k, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        W = rng.standard_normal((fan_in, fan_out), dtype=f32) * f32(0.05)
        b = np.zeros(fan_out, f32)
        a = acts[-1]
        z = a @ W
        out = np.empty_like(z)
        dz = rng.standard_normal(z.shape, dtype=f32)
        gW, gb, tmp = np.empty_like(W), np.empty_like(b), np.empty_like(W)
        hidden = k < len(sizes) - 2
        tag = f"L{k} {fan_in}x{fan_out}"
        add("GEMM", f"{tag} forward  x @ W (allocates)", lambda a=a, W=W: a @ W)
        add(
            "GEMM*",
            f"{tag} forward  matmul(x, W, out=buf)",
            lambda a=a, W=W, out=out: np.matmul(a, W, out=out),
        )
        add("elementwise", f"{tag} forward  y += b", lambda z=z, b=b: z.__iadd__(b))
        add(
            "GEMM",
            f"{tag} backward dW = x.T @ dy (out=)",
            lambda a=a, dz=dz, gW=gW: np.matmul(a.T, dz, out=gW),
        )
        add(
            "elementwise",
            f"{tag} backward db = dy.sum(0) (out=)",
            lambda dz=dz, gb=gb: np.sum(dz, axis=0, out=gb),
        )
        if k > 0:
            add("GEMM", f"{tag} backward dx = dy @ W.T (allocates)", lambda dz=dz, W=W: dz @ W.T)
        add(
            "elementwise",
            f"{tag} SGD p -= multiply(g, lr, out=tmp)",
            lambda W=W, gW=gW, tmp=tmp: W.__isub__(np.multiply(gW, lr, out=tmp)),
        )
        add(
            "elementwise*",
            f"{tag} SGD alternative: one pass p -= g (lr folded into dy)",
            lambda W=W, gW=gW: W.__isub__(gW),
        )
        add(
            "elementwise*",
            f"{tag} SGD alternative: p -= lr * g (temporary)",
            lambda W=W, gW=gW: W.__isub__(lr * gW),
        )
        if hidden:
            y = np.maximum(z, 0)
            dy = rng.standard_normal(y.shape, dtype=f32)
            add(
                "elementwise",
                f"{tag} ReLU forward np.maximum(x, 0) (allocates)",
                lambda z=z: np.maximum(z, 0.0, dtype=f32),
            )
            add(
                "elementwise*",
                f"{tag} ReLU forward alternative: np.maximum(x, 0, out=x)",
                lambda z=z: np.maximum(z, 0.0, out=z),
            )
            add(
                "elementwise",
                f"{tag} ReLU backward np.multiply(dy, y > 0, dtype=)",
                lambda dy=dy, y=y: np.multiply(dy, y > 0, dtype=f32),
            )
            add(
                "elementwise*",
                f"{tag} ReLU backward old: dy * (y > 0).astype(f32)",
                lambda dy=dy, y=y: dy * (y > 0).astype(f32),
            )
            mask = np.empty(y.shape, bool)
            add(
                "elementwise*",
                f"{tag} ReLU backward alternative: in place, reused mask",
                lambda dy=dy, y=y, mask=mask: np.multiply(dy, np.greater(y, 0, out=mask), out=dy),
            )
            acts.append(y)
        else:
            logits = z
    labels = rng.integers(0, sizes[-1], batch)
    loss = cr.SoftmaxCrossEntropy()
    add("checks", "np.isfinite(out).all() in fit", lambda: np.isfinite(logits).all())
    add(
        "loss",
        "loss.forward(out, labels) (checks + log_softmax)",
        lambda: loss.forward(logits, labels),
    )
    add("loss", "loss.backward()", loss.backward)
    add(
        "checks",
        "accuracy: argmax + as_labels + count_nonzero",
        lambda: int(np.count_nonzero(logits.argmax(axis=1) == cr_train.as_labels(labels))),
    )
    return rows


# -- main ------------------------------------------------------------------------------------------
def minor_faults() -> int:
    """Minor page faults of this process so far (first touches of freshly mapped memory)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def epoch_once(
    model: cr.Sequential,
    x: np.ndarray,
    y: np.ndarray,
    batch: int,
    optimizer: cr.Optimizer,
    loss: cr.Loss,
    seed: int = 0,
) -> float:
    start = time.perf_counter()
    cr.fit(model, x, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=batch, seed=seed)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--hidden", default="1000", help="comma-separated hidden widths")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--top", type=int, default=18, help="cProfile rows to print")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each section wait up to SECONDS for a quiet machine",
    )
    args = p.parse_args(argv)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    lr = 0.1 if args.optimizer == "sgd" else 0.001
    w = bench.Workload("P", hidden, optimizer=args.optimizer, lr=lr, batch_size=args.batch)
    data = bench.load_data()
    x, y = data.x_train, data.y_train
    n = len(x)
    meter = bench.CpuMeter()

    def settle() -> None:
        if args.wait_idle > 0:
            meter.wait_idle(0.05, args.wait_idle)
        meter.others()

    def noise(section: str) -> None:
        busy = meter.others()
        if busy is not None and busy > bench.NOISY:
            print(f"  !! other processes used {100 * busy:.0f}% of the CPUs during {section}")

    def fresh() -> tuple[cr.Sequential, cr.Optimizer, cr.Loss]:
        opt: cr.Optimizer = cr.SGD(lr=lr) if args.optimizer == "sgd" else cr.Adam(lr=lr)
        return cr.MLP(784, list(hidden), 10, rescale=1 / 255, rng=0), opt, cr.SoftmaxCrossEntropy()

    # 1. epoch vs limit, interleaved
    settle()
    limit_t, fit_t = [], []
    for r in range(args.rounds + 1):
        trial = bench.prepare_limit(w, data, 0)
        t0 = time.perf_counter()
        trial.run()
        t_lim = time.perf_counter() - t0
        model, opt, loss = fresh()
        t_fit = epoch_once(model, x, y, args.batch, opt, loss)
        if r:
            limit_t.append(t_lim)
            fit_t.append(t_fit)
    t_fit, t_lim = statistics.median(fit_t), statistics.median(limit_t)
    print(f"Workload {w.describe(n, len(data.x_test))}; git {bench.machine_info()['git']}")
    print(
        f"  cr.fit epoch {t_fit:.3f} s (median of {args.rounds}), GEMM-only limit {t_lim:.3f} s "
        f"= {100 * t_lim / t_fit:.0f}% of the epoch; overhead beyond GEMM {t_fit - t_lim:.3f} s"
    )
    noise("these epochs")
    model, opt, loss = fresh()
    epoch_once(model, x, y, args.batch, opt, loss)
    f0 = minor_faults()
    epoch_once(model, x, y, args.batch, opt, loss, seed=3)
    f1 = minor_faults()
    limit_trial = bench.prepare_limit(w, data, 0)
    f1b = minor_faults()
    limit_trial.run()
    f2 = minor_faults() - (f1b - f1)
    print(
        f"  minor page faults in one epoch: cr.fit {f1 - f0:,}, GEMM-only limit {f2 - f1:,} "
        "(each maps and zeroes a fresh 4 KiB page: large allocations per batch)"
    )

    # 2. components inside a real epoch
    model, opt, loss = fresh()
    epoch_once(model, x, y, args.batch, opt, loss)  # warm: optimizer state, caches
    sw = Stopwatch()
    undo = instrument(model, loss, opt, sw)
    settle()
    t_inst = epoch_once(model, x, y, args.batch, opt, loss, seed=1)
    undo()
    noise("the instrumented epoch")
    print(f"\nInside one instrumented cr.fit epoch ({t_inst:.3f} s; wrappers add ~1 us per call):")
    top_level = (
        "Batches: gather + scale uint8",
        "forward (whole model)",
        "loss.forward (log_softmax)",
        "loss.backward (softmax - onehot)",
        "backward (whole model)",
        "optimizer.step",
        "model.classes (argmax) per batch",
        "as_labels per batch",
        "snapshot (per epoch)",
    )
    accounted = 0.0
    for name in top_level:
        s = sw.seconds.get(name, 0.0)
        accounted += s
        print(f"  {name:<46}{s:>8.3f} s {100 * s / t_inst:>5.1f}%")
    rest = t_inst - accounted
    print(
        f"  {'rest of the fit loop (isfinite, sums, Python)':<46}{rest:>8.3f} s "
        f"{100 * rest / t_inst:>5.1f}%"
    )
    print("  per layer:")
    for name in sorted(sw.seconds):
        if name.startswith(("forward  ", "backward ")):
            s = sw.seconds[name]
            print(f"    {name:<44}{s:>8.3f} s {100 * s / t_inst:>5.1f}%  ({sw.calls[name]} calls)")

    # 3. op ledger
    print(
        f"\nOp ledger: each operation timed alone at the epoch's shapes, times "
        f"{math.ceil(n / args.batch)} steps (s per epoch); * = an alternative, not what "
        "chainrule runs"
    )
    settle()
    rows = ledger(w.sizes, args.batch, n, lr, settle) if args.optimizer == "sgd" else []
    noise("the ledger")
    totals: dict[str, float] = defaultdict(float)
    for category, what, s in rows:
        print(f"  {category:<13}{what:<58}{s:>8.3f}")
        if not category.endswith("*"):
            totals[category] += s
    if rows:
        print(
            "  totals: "
            + ", ".join(f"{k} {v:.3f} s" for k, v in totals.items())
            + f"; sum {sum(totals.values()):.3f} s vs measured epoch {t_fit:.3f} s"
        )

    # 4. cProfile
    model, opt, loss = fresh()
    epoch_once(model, x, y, args.batch, opt, loss)
    settle()
    prof = cProfile.Profile()
    prof.enable()
    epoch_once(model, x, y, args.batch, opt, loss, seed=2)
    prof.disable()
    noise("the profiled epoch")
    print(f"\ncProfile of one epoch, top {args.top} by own time:")
    pstats.Stats(prof, stream=sys.stdout).strip_dirs().sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
