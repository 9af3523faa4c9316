"""The two records every lesson deals in: :class:`Lesson` and :class:`LessonResult`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["DataDir", "Lesson", "LessonResult", "LessonRun"]

#: Where the four MNIST IDX files are; ``None`` means the copy shipped with chainrule.
DataDir = str | os.PathLike[str] | None


@dataclass(frozen=True)
class LessonResult:
    """What a lesson hands back: nothing is printed, the caller decides where it goes.

    Attributes
    ----------
    text : str
        The table (or tables) of results, ready to print.
    png : bytes
        The lesson's figure, PNG-encoded.
    figures : dict of str to float
        The key measured numbers by name, so that a test (or a reader) can check the lesson's
        conclusion without parsing ``text``.
    """

    text: str
    png: bytes
    figures: dict[str, float] = field(default_factory=dict)


class LessonRun(Protocol):
    """The signature of a lesson's ``run`` function."""

    def __call__(
        self, *, quick: bool = False, seed: int = 0, data_dir: DataDir = None
    ) -> LessonResult: ...


@dataclass(frozen=True)
class Lesson:
    """One of the lecture notes' experiments, runnable as ``chainrule lesson NAME``.

    Attributes
    ----------
    name : str
        The command-line name, e.g. ``"learning-rate"``.
    title : str
        A one-line description.
    notes : tuple of str
        The seed notes (``"000"`` ... ``"004"``) the experiment comes from.
    run : callable
        ``run(quick=False, seed=0, data_dir=None) -> LessonResult``; ``quick`` shrinks the
        experiment to seconds, ``seed`` fixes every random draw, ``data_dir`` points at MNIST.
    """

    name: str
    title: str
    notes: tuple[str, ...]
    run: LessonRun
