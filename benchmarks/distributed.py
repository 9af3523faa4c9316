"""Data-parallel training on MPI, 1 process against 2, on this machine.

    python benchmarks/distributed.py                 # workloads A and B, 2 rounds
    python benchmarks/distributed.py --json distributed.json

For workloads A (784-100-10) and B (784-1000-10) of bench.py (MNIST, 60,000 images, SGD lr 0.1,
batch 100), it trains ``--epochs`` epochs with ``cr.fit`` in each configuration, interleaved round
by round (A B A B), and reports the medians:

``1 process``
    ``cr.fit`` alone, with one BLAS thread and with two (this machine's cores);
``2 processes``
    ``mpirun -n 2``, one BLAS thread each, ``cr.fit(comm=MPI.COMM_WORLD)`` on half of each batch.

and, per step of the 2-process run: the time spent in the gradient sum during training (it
includes waiting for the slower process), the time of that ``Allreduce`` alone (timed in a loop
after training, the processes in step), and the bytes each process sends: the gradient buffer
(every parameter's gradient, plus the batch's loss and sample count), which at 2 processes each
one sends once whatever the algorithm (recursive doubling exchanges it whole; a ring sends it as
two halves).

The first epoch of each run is a warm-up and is not counted. An mpirun launch costs a second or
two before training starts: it is outside the figures, which time the epochs.

It then prints a model on paper of a cluster of such machines on a 10 Gbit/s network: per step,
each of p nodes computes 1/p of the batch (the measured time of one process, divided by p:
optimistic, since small matrix products run below the BLAS's peak) and then sums the gradient
buffer with the bandwidth-optimal Allreduce (a reduce-scatter and an all-gather, as MPI libraries
use for large buffers): ``2 log2(p)`` messages of ``LATENCY`` each, and ``2 (p - 1) / p`` times the
buffer through each node's link. Nothing overlaps: chainrule sums after the whole backward pass.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import chainrule as cr

WORKLOADS = {"A": [100], "B": [1000]}  # hidden widths, as in bench.py
BATCH, LR = 100, 0.1
CONFIGS = ("1 process, 1 thread", "1 process, 2 threads", "2 processes, 1 thread each")
#: The model on paper: a 10 Gbit/s link (bytes per second) and a message's latency over it (an
#: assumption: TCP over 10 Gbit Ethernet takes some tens of microseconds).
BANDWIDTH, LATENCY = 10e9 / 8, 50e-6
NODES = (2, 8, 32)


def on_paper(compute: float, nbytes: int, nodes: int) -> tuple[float, float]:
    """Seconds of communication per step, and the speed-up over one node, of ``nodes`` nodes
    whose one-node step computes for ``compute`` seconds and sums ``nbytes`` of gradients."""
    communication = 2 * math.log2(nodes) * LATENCY + 2 * (nodes - 1) / nodes * nbytes / BANDWIDTH
    return communication, compute / (compute / nodes + communication)


class TimedComm:
    """An mpi4py communicator whose ``Allreduce`` calls are timed (the rest passes through)."""

    def __init__(self, comm: Any) -> None:
        self.comm, self.seconds, self.calls, self.nbytes = comm, 0.0, 0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.comm, name)

    def Allreduce(self, sendbuf: Any, recvbuf: Any, op: Any) -> None:
        start = time.perf_counter()
        self.comm.Allreduce(sendbuf, recvbuf, op=op)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.nbytes = max(self.nbytes, recvbuf.nbytes)  # the gradient buffer, the largest sum


def worker(workload: str, epochs: int, distributed: bool) -> dict[str, Any]:
    """Train and measure in this process (one of the job's, when distributed)."""
    (x, y), _ = cr.datasets.load_mnist(normalize=False)
    model = cr.MLP(784, WORKLOADS[workload], 10, rescale=1 / 255, rng=0)
    comm = None
    if distributed:
        from mpi4py import MPI

        comm = TimedComm(MPI.COMM_WORLD)
    history = cr.fit(
        model,
        x,
        y,
        loss="softmax_cross_entropy",
        optimizer=cr.SGD(LR),
        epochs=epochs,
        batch_size=BATCH,
        seed=0,
        comm=comm,
    )
    steps = epochs * -(-len(x) // BATCH)
    result: dict[str, Any] = {"epoch_seconds": history.seconds[1:]}
    if comm is not None:
        result.update(
            allreduce_in_training=comm.seconds / steps,
            bytes_per_step=comm.nbytes,
            allreduce_alone=_allreduce_alone(comm.comm, comm.nbytes),
        )
        if comm.comm.Get_rank() != 0:
            return {}
    return result


def _allreduce_alone(comm: Any, nbytes: int, repeats: int = 200) -> float:
    """Median seconds of one in-place Allreduce of ``nbytes`` of float32, the processes in step."""
    from mpi4py import MPI

    buffer = np.ones(nbytes // 4, np.float32)
    times = []
    for _ in range(repeats):
        comm.Barrier()
        start = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def launch(config: str, workload: str, epochs: int) -> dict[str, Any]:
    """One run in a fresh process (or MPI job); its measurements."""
    threads = "2" if "2 threads" in config else "1"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
    command = [sys.executable, __file__, "--worker", workload, "--epochs", str(epochs)]
    if config.startswith("2 processes"):
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        mpirun = shutil.which("mpirun")
        if mpirun is None:
            sys.exit("mpirun not found: install Open MPI (Debian: openmpi-bin libopenmpi-dev)")
        command = [mpirun, "-n", "2", sys.executable, "-m", "mpi4py", *command[1:]]
        command.append("--distributed")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="AB", help="of A (784-100-10), B (784-1000-10)")
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker, args.epochs, args.distributed)
        if result:
            print(json.dumps(result))
        return

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        w: {c: [] for c in CONFIGS} for w in args.workloads
    }
    for _ in range(args.rounds):
        for workload in args.workloads:
            for config in CONFIGS:
                runs[workload][config].append(launch(config, workload, args.epochs))
    report(runs, args)


def report(runs: dict[str, dict[str, list[dict[str, Any]]]], args: argparse.Namespace) -> None:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    print(f"{cpu}, {os.cpu_count()} CPUs; MNIST 60,000 images, SGD lr {LR}, batch {BATCH}")
    print(f"medians of {args.rounds} rounds x {args.epochs - 1} timed epochs\n")
    figures: dict[str, Any] = {"cpu": cpu, "batch": BATCH, "workloads": {}}
    for workload, configs in runs.items():
        width = WORKLOADS[workload][0]
        params = 784 * width + width + width * 10 + 10
        print(f"{workload}: 784-{width}-10 ({params:,} parameters)")
        row: dict[str, Any] = {"parameters": params}
        for config, results in configs.items():
            epoch = statistics.median(s for r in results for s in r["epoch_seconds"])
            row[config] = {"epoch_seconds": epoch}
            print(f"  {config:<28} {epoch:6.2f} s per epoch")
        distributed = configs[CONFIGS[2]]
        step = statistics.median(r["allreduce_in_training"] for r in distributed)
        alone = statistics.median(r["allreduce_alone"] for r in distributed)
        nbytes = distributed[0]["bytes_per_step"]
        single = row[CONFIGS[0]]["epoch_seconds"] / (60_000 / BATCH)
        row.update(
            allreduce_in_training=step,
            allreduce_alone=alone,
            bytes_per_step=nbytes,
            compute_per_step_1_thread=single,
        )
        best = min(row[CONFIGS[0]]["epoch_seconds"], row[CONFIGS[1]]["epoch_seconds"])
        print(
            f"  2 processes: {best / row[CONFIGS[2]]['epoch_seconds']:.2f}x the faster single "
            f"process\n  per step: sum of gradients {step * 1e3:.3f} ms in training "
            f"(waiting for the slower process included), {alone * 1e3:.3f} ms alone; "
            f"{nbytes:,} bytes sent by each process\n"
            f"  one process, one thread: {single * 1e3:.2f} ms per step of {BATCH} images"
        )
        compute = min(single, row[CONFIGS[1]]["epoch_seconds"] / (60_000 / BATCH))
        print(f"  on paper, {BANDWIDTH * 8 / 1e9:g} Gbit/s, {LATENCY * 1e6:g} us a message:")
        for nodes in NODES:
            communication, speedup = on_paper(compute, nbytes, nodes)
            print(
                f"    {nodes:>2} nodes: compute {compute / nodes * 1e3:6.3f} ms + communication "
                f"{communication * 1e3:6.3f} ms per step: {speedup:5.2f}x one node"
            )
            row[f"on_paper_{nodes}"] = {"communication": communication, "speedup": speedup}
        print()
        figures["workloads"][workload] = row
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
