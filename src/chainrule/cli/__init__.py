"""The ``chainrule`` command: train on MNIST, evaluate, predict images, export, serve the page,
check gradients, run the notes' lessons. One module per command; each adds its parser and runs
its command.

This is the only package that prints. Every failure a user can cause (a missing file, a bad
option, an unwritable output directory, training that diverges) ends in one line on stderr and a
non-zero exit code: 2 for bad input, 1 for a run that failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from .._version import __version__
from ..train import DivergenceError
from . import evaluate, export, gradcheck, lesson, predict, serve, train
from ._common import Parser, UsageError
from ._job import Job
from .train import DEFAULTS, OUTPUTS, PRESETS

__all__ = ["DEFAULTS", "OUTPUTS", "PRESETS", "build_parser", "main"]

#: The commands, in the order ``chainrule --help`` lists them.
COMMANDS = (train, evaluate, predict, export, serve, gradcheck, lesson)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="chainrule",
        description="Train deep feed-forward networks by back-propagation, on NumPy.",
    )
    parser.add_argument("--version", action="version", version=f"chainrule {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


#: Exit code of an unexpected exception: a bug in chainrule (BSD's EX_SOFTWARE).
BUG_EXIT = 70


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    A mistake of the user's (a bad option, a file that is missing or not a model, an image with
    no digit) is one line on stderr and exit code 2; a run that fails (diverges, a plot that
    cannot be drawn) exits with 1; Ctrl-C with 130; a closed pipe (``| head``) with 141, quietly.
    Any other exception is a bug in chainrule: its traceback is printed, with a line saying so,
    and the exit code is 70.
    """
    try:
        args = build_parser().parse_args(argv)  # inside: Ctrl-C while importing is handled too
        return int(args.run(args))
    except (Exception, KeyboardInterrupt) as exc:
        job: Job | None = getattr(exc, "job", None)
        if isinstance(exc, BrokenPipeError) and job is None:
            return _reader_gone(exc)
        if job is None:
            return _report_failure(exc)
        if not job.shared(exc):  # this process's own failure: it ends every process
            code = _report_failure(exc, f"rank {job.rank} of {job.size}: " if job.rank else "")
            sys.stderr.flush()
            job.comm.Abort(code)
        return _report_failure(exc) if job.rank == 0 else _exit_code(exc)


def _reader_gone(exc: BrokenPipeError) -> int:
    """The program reading the output went away (``chainrule evaluate M | head -1``): end
    quietly, as command-line tools do, saying on stderr only what a run kept."""
    try:  # the interpreter's last flush of stdout would fail again: it goes nowhere now
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (a test's), or it cannot be replaced
        pass
    if getattr(exc, "kept", None):
        print(f"chainrule: {exc.kept}", file=sys.stderr)  # type: ignore[attr-defined]
    return 128 + 13  # killed by SIGPIPE, as the shell reports it


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, DivergenceError):
        return 1
    if isinstance(exc, UsageError | OSError | ImportError):  # OSError, ImportError: the machine's
        return 2
    return 130 if isinstance(exc, KeyboardInterrupt) else BUG_EXIT


def _report_failure(exc: BaseException, where: str = "") -> int:
    """Say what went wrong in one line (and what was kept); returns the exit code."""
    code, kept = _exit_code(exc), getattr(exc, "kept", None)
    if isinstance(exc, KeyboardInterrupt):
        print(f"chainrule: {where}interrupted", file=sys.stderr)
        if kept:
            print(f"chainrule: {kept}", file=sys.stderr)
    elif code == BUG_EXIT:
        traceback.print_exception(exc)
        _error(
            f"{where}this is a bug in chainrule, not a mistake in what you gave it "
            f"({type(exc).__name__}); please report it with the traceback above",
            kept,
        )
    else:
        _error(f"{where}{exc}", kept)
    return code


def _error(message: str, kept: str | None = None) -> None:
    print(f"chainrule: error: {message}", file=sys.stderr)
    if kept:
        print(f"chainrule: {kept}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
