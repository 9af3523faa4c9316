"""Peak and per-epoch memory (RSS) of a default-like chainrule MNIST training run.

Runs ``cr.fit`` in a child Python process with the model and training of ``chainrule train``'s
defaults: MNIST kept as uint8, ``MLP(784, [512, 256], 10)`` with dropout 0.2, Adam, batch 128, a
10 % validation split and a cosine schedule, for ``--epochs`` epochs (6 by default). The child
prints its resident set size (``/proc/self/statm``) at each stage and at the end of every epoch;
the parent reads the child's peak RSS from ``os.wait4``. If ``chainrule train --help`` works, the
default command itself (``chainrule train``: 12 epochs, plots and all) is measured too.

Memory is "flat" when the memory allocated and still held at the end of every epoch from the
third on is within ``--tolerance`` MiB of what was held at the end of epoch 2 (epoch 1 creates the
optimizer's state and the validation buffers): a training loop that leaks, or grows a cache, per
batch or per epoch fails. "Held" is measured with ``tracemalloc``, which sees Python objects and
NumPy's array buffers. The RSS is printed too; it can creep up by a fraction of a MiB per epoch
although nothing is held, because glibc's malloc raises its mmap threshold after large arrays
are freed and then serves them from a heap that fragments. Run with
``MALLOC_MMAP_THRESHOLD_=131072`` (a fixed threshold) to see the RSS flat as well.

Usage: ``python benchmarks/memory.py [--json out.json]`` (Linux only: it reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

MIB = 1024 * 1024

CHILD = textwrap.dedent(
    """
    import json, os
    PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def report(stage, **extra):
        print("RSS " + json.dumps({"stage": stage, "rss": rss(), **extra}), flush=True)

    report("python started")
    import numpy as np
    import chainrule as cr
    report("numpy and chainrule imported")
    from chainrule.datasets import load_mnist
    (x, y), (x_test, y_test) = load_mnist(normalize=False)
    report("MNIST loaded as uint8", bytes=int(x.nbytes + x_test.nbytes))
    (x, y), val = cr.train_validation_split(x, y, 0.1, rng=0)
    model = cr.MLP(784, [512, 256], 10, dropout=0.2, rescale=1 / 255, rng=0)
    import tracemalloc
    tracemalloc.start()  # from here on: what the training loop allocates and keeps
    report("model built", params=int(model.num_params))

    class EpochRSS(cr.Callback):
        def on_epoch_end(self, run, epoch, logs):
            report(f"end of epoch {epoch + 1}", epoch=epoch + 1, accuracy=logs["val_accuracy"],
                   held=tracemalloc.get_traced_memory()[0])

    epochs = int(os.environ["EPOCHS"])
    cr.fit(model, x, y, loss=cr.SoftmaxCrossEntropy(), optimizer=cr.Adam(1e-3), epochs=epochs,
           batch_size=128, validation_data=val, seed=0,
           callbacks=[cr.LearningRateScheduler(cr.CosineLR(epochs)), EpochRSS()])
    report("after fit")
    """
)


def run_child(
    cmd: list[str], env: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], int, str]:
    """Run ``cmd``; return its ``RSS {...}`` records, its peak RSS in bytes, and its output.

    ``RUSAGE_CHILDREN`` is the maximum over every child waited for so far, so the peak is read
    from ``os.wait4`` (this child alone) and checked against it.
    """
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{output}")
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    assert usage.ru_maxrss * 1024 <= children_peak
    records = [json.loads(line[4:]) for line in output.splitlines() if line.startswith("RSS {")]
    return records, usage.ru_maxrss * 1024, output


def cli_available() -> bool:
    exe = shutil.which("chainrule")
    if exe is None:
        return False
    result = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, timeout=60)
    return result.returncode == 0 and "--no-plots" in result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the cr.fit run (>= 3)")
    parser.add_argument("--tolerance", type=float, default=2.0, help="MiB of epoch-to-epoch drift")
    args = parser.parse_args(argv)
    if args.epochs < 3:
        parser.error("--epochs must be >= 3")
    if not Path("/proc/self/statm").exists():
        print("memory.py needs Linux /proc", file=sys.stderr)
        return 2

    result: dict[str, Any] = {}
    env = {**os.environ, "EPOCHS": str(args.epochs)}
    records, peak, _ = run_child([sys.executable, "-c", CHILD], env)
    print(
        f"cr.fit, MLP(784, [512, 256], 10, dropout=0.2), Adam, batch 128, {args.epochs} epochs, "
        "10% validation:"
    )
    print(f"  {'stage':<32}{'RSS':>12}{'held (tracemalloc)':>22}")
    for r in records:
        held = f"{r['held'] / MIB:>18.2f} MiB" if "held" in r else ""
        print(f"  {r['stage']:<32}{r['rss'] / MIB:>8.1f} MiB{held}")
    print(f"  {'peak RSS (ru_maxrss)':<32}{peak / MIB:>8.1f} MiB")
    epochs = [r for r in records if "epoch" in r]
    drift = max(abs(e["held"] - epochs[1]["held"]) for e in epochs[2:]) / MIB
    rss_drift = max(abs(e["rss"] - epochs[1]["rss"]) for e in epochs[2:]) / MIB
    flat = drift <= args.tolerance
    verdict = "flat" if flat else "NOT flat"
    print(
        f"  memory held at epoch ends, drift from epoch 2 on: {drift:.3f} MiB ({verdict}, "
        f"tolerance {args.tolerance:g} MiB); RSS drift {rss_drift:.2f} MiB"
    )
    result["fit"] = {
        "records": records,
        "peak_rss": peak,
        "held_drift_mib": drift,
        "rss_drift_mib": rss_drift,
        "flat": flat,
    }

    if cli_available():
        with tempfile.TemporaryDirectory() as out:
            cmd = [shutil.which("chainrule") or "chainrule", "train", "--quiet", "--out", out]
            _, cli_peak, _ = run_child(cmd)
        print(f"chainrule train (the defaults, 12 epochs): peak RSS {cli_peak / MIB:.1f} MiB")
        result["cli"] = {"command": "chainrule train --quiet", "peak_rss": cli_peak}
    else:
        print("chainrule train is not usable here (its --help failed): CLI not measured")
        result["cli"] = None
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
