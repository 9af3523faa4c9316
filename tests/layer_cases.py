"""The layer registry of the tests (as PyTorch's OpInfo): one database of layer cases.

Every class in ``cr.layers.LAYERS`` has at least one :class:`LayerCase` here, and
``test_layer_contract.py`` runs all of them through the same checks: the float64 gradient check in
both modes, the input guards, the save/load round trip and the dtype rules. Adding a layer means
adding one entry to :data:`CASES`; a layer without one fails ``test_every_layer_has_a_case``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import chainrule as cr

Shape = tuple[int, ...]
Builder = Callable[[type[np.floating]], cr.Layer]


def normal(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    return rng.normal(size=shape)


@dataclass(frozen=True)
class LayerCase:
    """One configuration of one layer, and the inputs it must take and refuse.

    Attributes
    ----------
    name : str
        The test id.
    build : callable
        ``build(dtype) -> Layer``: a new layer, in ``dtype`` if it has parameters; seeded, so two
        builds are identical.
    sample : tuple of int
        The shape of one input sample the layer takes.
    bad_shapes : tuple of shapes
        Whole batch shapes it must refuse with a ``ValueError`` naming the layer and the shape.
    batch : int
        The batch size of the checks (at least 2, so per-sample mistakes show).
    inputs : callable
        ``inputs(rng, shape) -> float64 array``: values the gradient check can use (away from
        kinks and ties, where the numerical gradient is undefined).
    draws : bool
        Whether training draws random numbers (Dropout): trained data-parallel, its processes
        must draw differently, so their slices of a batch cannot give one process's output.
    """

    name: str
    build: Builder
    sample: Shape
    bad_shapes: tuple[Shape, ...] = ()
    batch: int = 5
    inputs: Callable[[np.random.Generator, Shape], np.ndarray] = normal
    draws: bool = False

    @property
    def layer_class(self) -> type[cr.Layer]:
        return type(self.build(np.float64))

    def x(self, seed: int = 0, batch: int | None = None) -> np.ndarray:
        shape = (self.batch if batch is None else batch, *self.sample)
        return self.inputs(np.random.default_rng(seed), shape)

    def __repr__(self) -> str:  # the id pytest shows
        return self.name


def _away_from_zero(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    # |x| >= 0.1: a central difference with h = 1e-5 never straddles ReLU's kink.
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 2.0, size=shape)


def _distinct(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    # Every value different, at least 4 / size apart: a central difference with h = 1e-5 never
    # changes which input of a pooling window is the largest (and no window holds a tie).
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) / size * 2.0 - 1.0) * 2.0


CASES: list[LayerCase] = [
    LayerCase("Rescaling", lambda dt: cr.Rescaling(1 / 255, offset=-0.5), (6,)),
    LayerCase("Rescaling-images", lambda dt: cr.Rescaling(0.5), (2, 3, 3)),
    LayerCase(
        "Dense",
        lambda dt: cr.Dense(6, 4, init="xavier", rng=3, dtype=dt),
        (6,),
        bad_shapes=((5, 7), (5,), (5, 6, 1)),
    ),
    LayerCase("Dense-he-batch1", lambda dt: cr.Dense(3, 5, rng=1, dtype=dt), (3,), batch=2),
    LayerCase("ReLU", lambda dt: cr.ReLU(), (6,), inputs=_away_from_zero),
    LayerCase("LeakyReLU", lambda dt: cr.LeakyReLU(alpha=0.1), (6,), inputs=_away_from_zero),
    LayerCase("Sigmoid", lambda dt: cr.Sigmoid(), (6,)),
    LayerCase("Tanh", lambda dt: cr.Tanh(), (2, 3)),
    LayerCase("Softmax", lambda dt: cr.Softmax(), (6,), bad_shapes=((5,), (5, 2, 3))),
    LayerCase("Dropout", lambda dt: cr.Dropout(0.5, rng=4), (6,), draws=True),
    LayerCase("Flatten", lambda dt: cr.Flatten(), (2, 3, 4), bad_shapes=((5,),)),
    LayerCase(
        "RandomShift",
        lambda dt: cr.RandomShift(2, rng=5),
        (2, 5, 6),  # odd and unequal sides
        bad_shapes=((5, 30), (5, 2, 5)),
        batch=7,
        draws=True,
    ),
    LayerCase("RandomShift-0", lambda dt: cr.RandomShift(0, rng=0), (1, 3, 3)),
    LayerCase(
        "BatchNorm",
        lambda dt: cr.BatchNorm(6, momentum=0.8, dtype=dt),
        (6,),
        bad_shapes=((5, 7), (5,)),
    ),
    # Convolution: odd and unequal sides, a kernel that does not tile the input, stride 2 with
    # the floor rule, padding (rectangular too); batches > 1.
    LayerCase(
        "Conv2D",
        lambda dt: cr.Conv2D(2, 3, 3, rng=0, dtype=dt),
        (2, 5, 6),
        bad_shapes=((5, 30), (5, 3, 5, 6), (5, 2, 2, 6), (5, 2, 5)),
    ),
    LayerCase(
        "Conv2D-stride2-padding",
        lambda dt: cr.Conv2D(
            3, 4, (3, 2), stride=2, padding=(1, 2), init="xavier", rng=1, dtype=dt
        ),
        (3, 7, 6),
        bad_shapes=((3, 2, 7, 6),),
        batch=3,
    ),
    LayerCase(
        "Conv2D-rect-stride",
        lambda dt: cr.Conv2D(1, 2, (2, 3), stride=(1, 2), rng=2, dtype=dt),
        (1, 4, 8),
        bad_shapes=((4, 1, 1, 8), (4, 1, 4, 2)),
    ),
    LayerCase(
        "Conv2D-padding-only-window",
        lambda dt: cr.Conv2D(2, 2, 5, padding=2, rng=3, dtype=dt),
        (2, 1, 3),  # smaller than the kernel: padding leaves windows
    ),
    # Pooling: odd sides (floor rule), overlapping windows (stride < size), rectangular windows.
    LayerCase(
        "MaxPool2D",
        lambda dt: cr.MaxPool2D(2),
        (2, 5, 7),
        bad_shapes=((5, 70), (5, 2, 1, 7), (5, 2, 5)),
        inputs=_distinct,
    ),
    LayerCase(
        "MaxPool2D-overlapping",
        lambda dt: cr.MaxPool2D(3, stride=2),
        (2, 7, 6),
        inputs=_distinct,
        batch=3,
    ),
    LayerCase(
        "MaxPool2D-rect",
        lambda dt: cr.MaxPool2D((2, 3), stride=(1, 2)),
        (1, 4, 7),
        bad_shapes=((5, 1, 4, 2),),
        inputs=_distinct,
    ),
    LayerCase(
        "AvgPool2D",
        lambda dt: cr.AvgPool2D(2),
        (3, 5, 5),
        bad_shapes=((5, 3, 1, 5),),
    ),
    LayerCase("AvgPool2D-overlapping", lambda dt: cr.AvgPool2D((3, 2), stride=1), (2, 6, 5)),
]
