"""The processes of ``chainrule train --distributed``: started together, failing together."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from ..distributed import world
from ..train import DivergenceError
from ._common import UsageError


@dataclasses.dataclass
class Job:
    """The processes of a ``--distributed`` run, as the command line starts and reports them."""

    comm: Any
    rank: int
    size: int

    @classmethod
    def start(cls) -> Job:
        try:
            comm = world()
        except (ImportError, RuntimeError) as exc:
            raise UsageError(f"--distributed: {exc}") from exc
        return cls(comm, comm.Get_rank(), comm.Get_size())

    @staticmethod
    def shared(exc: BaseException) -> bool:
        """Whether every process fails alike, at the same point (the set-up, or the divergence
        that the summed loss shows all of them): rank 0 reports it, all exit with its code.
        Any other failure is this process's own: it ends the job."""
        return isinstance(exc, SharedFailure | DivergenceError)


class SharedFailure(UsageError):
    """The set-up failed on one process or more; raised on every process."""


@contextlib.contextmanager
def together(job: Job | None) -> Iterator[None]:
    """Run the set-up on every process, and fail on all of them if it fails on one: a process
    must not start training alone (it would wait for the others forever)."""
    if job is None:
        yield
        return
    failure = None
    try:
        yield
    except UsageError as exc:
        failure = str(exc)
    failures = job.comm.allgather(failure)
    failed = {rank: text for rank, text in enumerate(failures) if text is not None}
    if len(failed) == job.size and len(set(failed.values())) == 1:
        raise SharedFailure(failed[0])
    if failed:
        raise SharedFailure("; ".join(f"rank {r}: {text}" for r, text in failed.items()))
