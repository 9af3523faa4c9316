"""Data-parallel training on MPI: N processes train the model that one process trains.

The runs are real MPI jobs: ``mpirun`` started as a subprocess with a timeout (these tests fail,
never skip, where Open MPI or mpi4py is missing: ``.ci/run`` installs them). Each job trains small
models on 1,000 MNIST images, 900 after the validation split, with a global batch of 64 (14 whole
batches and a ragged one of 4: at 3 processes, slices of 21/21/22 and 1/1/2), one epoch and then
``--resume`` for a second, and they are compared with one process trained alike:

* SGD: every weight to rtol 1e-5 (and atol 1e-8: a weight within 1e-3 of zero is a sum that
  nearly cancels, off by its float32 rounding, measured 2e-9);
* Adam: each tensor's relative L2 error at most 1e-5 (Adam's step ``m / sqrt(v)`` turns
  rounding-level differences of a tiny gradient into visible steps on a few elements);
* Adam with BatchNorm: the same predictions (at most 10 of the 10,000 test images classified
  differently, probabilities within 1e-2), since the bias before a BatchNorm has no true gradient
  and Adam random-walks it; with each process's own statistics instead, hundreds differ;
* every process ends with the same parameters, and history.json holds the loss and accuracy over
  all processes' samples.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mpi4py
import numpy as np
import pytest

import chainrule as cr
from chainrule import cli
from chainrule.datasets import IDX_FILES, load_mnist, write_idx

# fit takes MPI's constants from mpi4py: importable here without starting MPI in this process.
mpi4py.rc.initialize = False

HERE = Path(__file__).resolve().parent
#: Root may start MPI jobs only when told so; more processes than cores need oversubscription.
ENV = {
    **os.environ,
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OPENBLAS_NUM_THREADS": "1",  # N processes on 2 cores: one BLAS thread each
    "OMP_NUM_THREADS": "1",
}
TIMEOUT = 120  # seconds for one MPI job; a hang fails the test instead of stalling the suite
#: The options of every run (``--resume`` keeps them), then each run's model and optimizer.
DATA = ["--subset", "1000", "--batch-size", "64", "--schedule", "constant", "--seed", "3"]
DATA += ["--no-plots", "--quiet"]
MODEL = ["--hidden", "64", "--dropout", "0", "--augment", "0"]  # nothing drawn per process
RUNS = {
    "sgd": [*MODEL, "--optimizer", "sgd", "--lr", "0.1"],
    "adam": [*MODEL, "--optimizer", "adam", "--lr", "0.005"],
    "adam-bn": [*MODEL, "--optimizer", "adam", "--lr", "0.005", "--batch-norm"],
}


def phases(name: str, data_dir: Path) -> list[list[str]]:
    """The options of a run's first epoch, and of its resumed second."""
    data = [*DATA, "--data-dir", str(data_dir)]
    return [[*data, *RUNS[name], "--epochs", "1"], [*data, "--resume", "--epochs", "2"]]


def mpirun(ranks: int, *command: str) -> subprocess.CompletedProcess[str]:
    """``mpirun -n RANKS python COMMAND``, which must end within :data:`TIMEOUT`."""
    launcher = shutil.which("mpirun")
    assert launcher, "mpirun not found: install Open MPI (Debian: openmpi-bin libopenmpi-dev)"
    return subprocess.run(
        [launcher, "-n", str(ranks), "--oversubscribe", sys.executable, *command],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def driver(out: Path, ranks: int, runs: dict, *, mpi4py: bool = True, **spec: object):
    """The runs trained by ``ranks`` processes in one job (see _mpi_train.py)."""
    launch = ["-m", "mpi4py"] if mpi4py else []
    script = str(HERE / "_mpi_train.py")
    return mpirun(ranks, *launch, script, str(out), json.dumps({"runs": runs, **spec}))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The first 1,000 training images and 100 test images (the CLI's own report), uncompressed:
    each of the job's processes reads them in milliseconds."""
    (x, y), (x_test, y_test) = load_mnist(normalize=False, flatten=False)
    directory = tmp_path_factory.mktemp("mnist-1000")
    arrays = (x[:1000, 0], y[:1000], x_test[:100, 0], y_test[:100])
    for name, array in zip(IDX_FILES, arrays, strict=True):
        write_idx(directory / name, array.astype(np.uint8))
    return directory


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, data_dir) -> Path:
    """Every run trained by one process (in this one): epoch1.npz, epoch2.npz, history.json."""
    root = tmp_path_factory.mktemp("one-process")
    for name in RUNS:
        out = root / name
        for epochs, options in enumerate(phases(name, data_dir), 1):
            assert cli.main(["train", *options, "--out", str(out)]) == 0
            shutil.copy(out / "model.npz", out / f"epoch{epochs}.npz")
    return root


@pytest.fixture(scope="module")
def test_images() -> tuple[np.ndarray, np.ndarray]:
    _, (x_test, y_test) = load_mnist(normalize=False)
    return x_test, y_test


def tensors(path: Path) -> dict[str, np.ndarray]:
    model = cr.load(path)
    return {**model.params, **model.buffers}


def assert_same_model(name: str, got: Path, want: Path, x_test: np.ndarray) -> None:
    a, b = tensors(got), tensors(want)
    assert a.keys() == b.keys()
    if name == "sgd":
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-8, err_msg=key)
    elif name == "adam":
        for key in a:
            error = np.linalg.norm(a[key] - b[key]) / np.linalg.norm(b[key])
            assert error <= 1e-5, f"{key}: relative L2 error {error:.2e}"
    else:
        p, q = cr.load(got).predict_proba(x_test), cr.load(want).predict_proba(x_test)
        differ = int(np.count_nonzero(p.argmax(axis=1) != q.argmax(axis=1)))
        assert differ <= 10, f"{differ} of {len(x_test)} test images classified differently"
        assert np.abs(p - q).max() <= 1e-2


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_n_processes_train_the_model_of_one(ranks, tmp_path, data_dir, one_process, test_images):
    job = driver(tmp_path, ranks, {name: phases(name, data_dir) for name in RUNS})
    assert job.returncode == 0, job.stdout + job.stderr
    # Rank 0 alone prints (with --quiet, its summary) and writes the outputs.
    assert job.stdout.count("\nwrote ") == 2 * len(RUNS), job.stdout
    for name in RUNS:
        for epochs in (1, 2):
            got, want = (
                tmp_path / name / f"epoch{epochs}.npz",
                one_process / name / f"epoch{epochs}.npz",
            )
            assert_same_model(name, got, want, test_images[0])
            hashes = json.loads((tmp_path / name / f"ranks-{epochs}.json").read_text())
            assert len(hashes) == ranks
            assert len(set(hashes)) == 1, f"{name}: the processes ended with different parameters"
        history = json.loads((tmp_path / name / "history.json").read_text())
        expected = json.loads((one_process / name / "history.json").read_text())
        assert history["epoch"] == [1, 2]
        # The SGD and Adam runs show the figures are over every process's samples: a process's
        # own differ by 1e-4 to 1e-2 (measured). With BatchNorm, Adam's random walk reaches the
        # losses (the validation loss through running means that the walked bias shifts):
        # measured up to 2e-5 and 5e-4.
        bn = "--batch-norm" in RUNS[name]
        for key, rtol in (("loss", 1e-4 if bn else 1e-5), ("val_loss", 2e-3 if bn else 1e-5)):
            np.testing.assert_allclose(history[key], expected[key], rtol=rtol, err_msg=name + key)
        for key in ("accuracy", "val_accuracy"):  # counts: one image at most, from rounding
            np.testing.assert_allclose(history[key], expected[key], atol=1.1 / 900, err_msg=key)


def test_the_command_line_as_the_docs_give_it(tmp_path, data_dir, one_process, test_images):
    """``mpirun -n N python -m mpi4py -m chainrule train --distributed``, with BatchNorm."""
    options = [o for o in phases("adam-bn", data_dir)[0] if o != "--quiet"]
    job = mpirun(3, "-m", "mpi4py", "-m", "chainrule", "train", "--distributed", *options,
                 "--out", str(tmp_path))  # fmt: skip
    assert job.returncode == 0, job.stdout + job.stderr
    lines = job.stdout.splitlines()  # rank 0's alone: the other processes print nothing
    assert lines[0].startswith("training MLP(Rescaling(scale=0.00392157), Dense(784 -> 64), ")
    assert "BatchNorm(64)" in lines[0]
    assert ", 3 processes; " in lines[1]
    assert sum(line.startswith("epoch   1/1") for line in lines) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cli.OUTPUTS)
    want = one_process / "adam-bn/epoch1.npz"
    assert_same_model("adam-bn", tmp_path / "model.npz", want, test_images[0])


def test_without_shared_statistics_batchnorm_models_differ(tmp_path, data_dir, one_process,
                                                           test_images):  # fmt: skip
    """The check of the BatchNorm runs can fail: normalising by each process's slice alone (2
    processes, so no slice holds one sample) classifies hundreds of test images differently."""
    job = driver(tmp_path, 2, {"adam-bn": phases("adam-bn", data_dir)[:1]}, local_statistics=True)
    assert job.returncode == 0, job.stdout + job.stderr
    got, want = tmp_path / "adam-bn/epoch1.npz", one_process / "adam-bn/epoch1.npz"
    with pytest.raises(AssertionError, match=r"\d{3} of 10000 test images classified differently"):
        assert_same_model("adam-bn", got, want, test_images[0])


@pytest.mark.parametrize(("rank", "mpi4py"), [(1, True), (0, False)])
def test_a_failing_process_ends_the_job_with_its_error(tmp_path, data_dir, rank, mpi4py):
    """One process raises in its third step while the other waits in a collective call: the
    job ends at once, with the error (under ``python -m mpi4py``, and without it: chainrule
    aborts the job itself)."""
    start = time.monotonic()
    job = driver(tmp_path, 2, {"sgd": phases("sgd", data_dir)}, mpi4py=mpi4py, fail_on=rank)
    assert time.monotonic() - start < 30
    assert job.returncode == cli.BUG_EXIT, job.stdout + job.stderr
    where = f"rank {rank} of 2: " if rank else ""
    assert f"chainrule: error: {where}this is a bug in chainrule" in job.stderr
    assert f"RuntimeError: injected failure on rank {rank}" in job.stderr
    assert not (tmp_path / "sgd" / "model.npz").exists()


def test_distributed_outside_mpirun_is_one_line(tmp_path):
    command = [sys.executable, "-m", "chainrule", "train", "--distributed", "--out", str(tmp_path)]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "chainrule: error: --distributed: this is a single process: start two or more with "
        "mpirun, as in 'mpirun -n 2 python -m mpi4py -m chainrule train --distributed'"
    )
    assert result.stderr.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_distributed_without_mpi4py_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py then raises ImportError
    assert cli.main(["train", "--distributed", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "chainrule: error: --distributed: data-parallel training needs mpi4py: pip install "
        '"chainrule[mpi]", with an MPI library such as Debian\'s openmpi-bin'
    )
    assert err.count("\n") == 1


# -- fit's side of it, in this process: threads as the processes -----------------------------------
class Hub:
    """What the threads of :class:`ThreadComm` exchange, rank by rank."""

    def __init__(self, size: int) -> None:
        self.size, self.parts = size, [None] * size
        self.barrier = threading.Barrier(size, timeout=30)  # a missed call fails, never hangs

    def exchange(self, rank: int, obj: Any) -> list[Any]:
        self.parts[rank] = obj
        self.barrier.wait()
        everyone = list(self.parts)
        self.barrier.wait()
        return everyone


class ThreadComm:
    """The mpi4py calls that fit makes, between threads."""

    def __init__(self, hub: Hub, rank: int) -> None:
        self.hub, self.rank = hub, rank

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return self.hub.size

    def allgather(self, obj: Any) -> list[Any]:
        return self.hub.exchange(self.rank, obj)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return self.hub.exchange(self.rank, obj)[root]

    def Bcast(self, buffer: np.ndarray, root: int = 0) -> None:
        buffer[...] = self.hub.exchange(self.rank, buffer.copy())[root]

    def Allreduce(self, sendbuf: Any, recvbuf: np.ndarray, op: Any) -> None:
        recvbuf[...] = np.sum(self.hub.exchange(self.rank, recvbuf.copy()), axis=0)


def on_threads(size: int, work: Callable[[ThreadComm], Any]) -> list[Any]:
    hub = Hub(size)
    with ThreadPoolExecutor(size) as pool:
        futures = [pool.submit(work, ThreadComm(hub, rank)) for rank in range(size)]
        return [f.result(timeout=60) for f in futures]


def blobs(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=n)
    return np.array([[0.0, 3.0], [-3.0, -2.0], [3.0, -2.0]])[y] + rng.normal(size=(n, 2)), y


def train(comm: Any = None, n: int = 205, **kwargs: Any) -> tuple[cr.Sequential, cr.History]:
    x, y = blobs(n)
    model = cr.MLP(2, [8, 8], 3, batchnorm=True, rng=1, dtype=np.float64)
    options = {"epochs": 3, "batch_size": 20, "validation_split": 0.2, "seed": 4, **kwargs}
    history = cr.fit(
        model, x, y, loss="softmax_cross_entropy", optimizer=cr.Adam(0.01), comm=comm, **options
    )
    return model, history


def test_fit_on_three_threads_is_fit_in_one(monkeypatch):
    """Float64, BatchNorm, Adam, 164 samples in batches of 20 (slices of 6, 7 and 7, then a last
    batch of 4 in slices of 1, 1 and 2): the model and history of one process, to rounding."""
    model, history = train()
    for got, logs in on_threads(3, train):
        for key, value in model.params.items():
            # atol: the bias before each BatchNorm has no gradient, only rounding (1e-11 here)
            np.testing.assert_allclose(got.params[key], value, rtol=1e-9, atol=1e-9, err_msg=key)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(getattr(logs, key), getattr(history, key), rtol=1e-9)


def test_processes_given_different_runs_fail_together():
    """A process given other data (or another seed) would make other collective calls than the
    rest, and the job would hang: every process raises instead, with the same message."""

    def work(comm: ThreadComm, **kwargs: Any) -> str:
        with pytest.raises(ValueError, match="every process") as info:
            train(comm, **kwargs)
        return str(info.value)

    samples = on_threads(2, lambda comm: work(comm, n=205 if comm.rank != 1 else 150))
    assert (
        samples
        == [
            "every process must call fit alike, but rank 1 has samples (120, 2) and rank 0 has "
            "(164, 2)"
        ]
        * 2
    )
    seeds = on_threads(2, lambda comm: work(comm, seed=comm.rank))
    assert seeds == ["every process must be given the same seed (or none), got [0, 1] by rank"] * 2


def test_comm_must_be_a_communicator():
    with pytest.raises(
        TypeError, match=r"comm must be an mpi4py communicator such as MPI.COMM_WORLD, got str"
    ):
        train("world")


def test_a_failed_set_up_is_reported_once_by_rank_0(tmp_path, monkeypatch, capsys):
    """Every process meets a bad option alike; a missing file may be missing on one process
    only. Either way no process starts training alone, and rank 0 alone says why."""
    comms: dict[int, ThreadComm] = {}
    monkeypatch.setattr(cli._job, "world", lambda: comms[threading.get_ident()])

    def run(comm: ThreadComm, *options: str) -> int:
        comms[threading.get_ident()] = comm
        return cli.main(["train", "--distributed", *options, "--out", str(tmp_path)])

    assert on_threads(2, lambda comm: run(comm, "--dropout", "2")) == [2, 2]
    assert capsys.readouterr().err == "chainrule: error: --dropout must be in [0, 1), got 2.0\n"

    def missing_on_rank_1(comm: ThreadComm) -> int:
        return run(comm, *(["--data-dir", str(tmp_path / "absent")] if comm.rank else []))

    assert on_threads(2, missing_on_rank_1) == [2, 2]
    absent = tmp_path / "absent"
    assert (
        capsys.readouterr().err
        == f"chainrule: error: rank 1: --data-dir {absent} is not a directory\n"
    )
    assert list(tmp_path.iterdir()) == []  # no process trained, nothing was written
