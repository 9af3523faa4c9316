"""The lecture notes' experiments, each runnable as ``chainrule lesson NAME``.

Every lesson is a :class:`Lesson` whose ``run(quick=False, seed=0, data_dir=None)`` returns a
:class:`LessonResult`: a text table, a PNG figure and the key numbers in ``figures``. Nothing is
printed here; the command line prints the text and writes the PNG.

>>> from chainrule.lessons import LESSONS
>>> result = LESSONS["learning-rate"].run(quick=True)
>>> result.figures["lr_0.1_distance"] < 1e-8
True
"""

from __future__ import annotations

from ._base import DataDir, Lesson, LessonResult, LessonRun
from .batch_size import LESSON as _BATCH_SIZE
from .convolution import LESSON as _CONVOLUTION
from .depth import LESSON as _DEPTH
from .learning_rate import LESSON as _LEARNING_RATE
from .note_002 import LESSON as _NOTE_002
from .numerical_vs_backprop import LESSON as _NUMERICAL_VS_BACKPROP
from .overfitting import LESSON as _OVERFITTING

__all__ = ["LESSONS", "DataDir", "Lesson", "LessonResult", "LessonRun"]

#: Every lesson by name, in the order of the course.
LESSONS: dict[str, Lesson] = {
    lesson.name: lesson
    for lesson in (
        _NUMERICAL_VS_BACKPROP,
        _LEARNING_RATE,
        _DEPTH,
        _OVERFITTING,
        _NOTE_002,
        _BATCH_SIZE,
        _CONVOLUTION,
    )
}
