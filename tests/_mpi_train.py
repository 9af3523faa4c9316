"""``chainrule train --distributed`` for several runs in one MPI job, so that its processes start
once for all of them (tests/test_distributed.py starts it through ``mpirun``):

    python -m mpi4py tests/_mpi_train.py OUT SPEC_JSON

``SPEC_JSON`` holds ``runs``, a run's name to the ``chainrule train`` options of each of its
phases (each phase trains into ``OUT/NAME``, its model then copied to ``epochN.npz``), and, to
break things on purpose, ``fail_on`` (that rank raises in its third training step) and
``local_statistics`` (BatchNorm normalises by each process's slice alone). After every ``fit``,
rank 0 writes the hash of each process's parameters and buffers to ``NAME/ranks-EPOCHS.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from mpi4py import MPI

import chainrule as cr
from chainrule import cli

comm = MPI.COMM_WORLD
out_root, spec = Path(sys.argv[1]), json.loads(sys.argv[2])
run_dir = out_root


def fit(model: cr.Sequential, *args: Any, **kwargs: Any) -> cr.History:
    history = cr.fit(model, *args, **kwargs)
    digest = hashlib.sha256()
    for value in {**model.params, **model.buffers}.values():
        digest.update(value.tobytes())
    everyone = comm.gather(digest.hexdigest(), root=0)
    if comm.rank == 0:
        (run_dir / f"ranks-{kwargs['epochs']}.json").write_text(json.dumps(everyone))
    return history


def failing(loss: cr.Loss, calls: list[int] = [], backward: Any = cr.Loss.backward) -> Any:  # noqa: B006
    calls.append(1)
    if len(calls) == 3:
        raise RuntimeError(f"injected failure on rank {comm.rank}")
    return backward(loss)


cli.train.fit = fit  # type: ignore[assignment]
if spec.get("fail_on") == comm.rank:
    cr.SoftmaxCrossEntropy.backward = failing  # type: ignore[method-assign]
if spec.get("local_statistics"):
    cr.BatchNorm.distribute = cr.Layer.distribute  # type: ignore[method-assign]
for name, phases in spec["runs"].items():
    run_dir = out_root / name
    for epochs, options in enumerate(phases, 1):
        code = cli.main(["train", "--distributed", *options, "--out", str(run_dir)])
        if code:
            sys.exit(code)
        if comm.rank == 0:
            shutil.copy(run_dir / "model.npz", run_dir / f"epoch{epochs}.npz")
        comm.Barrier()  # the copy is made before the next phase replaces the model
