"""RandomShift: what it draws, what it leaves alone, and that a run replays it."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr


def _dots(n: int, size: int = 9) -> np.ndarray:
    """``n`` images with one lit pixel in the middle: its position after a shift is the shift."""
    x = np.zeros((n, 1, size, size), np.float32)
    x[:, 0, size // 2, size // 2] = 1.0
    return x


def _shifts(y: np.ndarray) -> np.ndarray:
    size = y.shape[-1]
    flat = y.reshape(len(y), -1).argmax(axis=1)
    return np.stack([flat // size, flat % size], axis=1) - size // 2


def test_each_sample_moves_by_its_own_shift_within_the_bound():
    x = _dots(2000)
    y = cr.RandomShift(2, rng=0).forward(x, training=True)
    moved = _shifts(y)
    assert y.sum() == len(x)  # every dot stays inside: nothing is lost or duplicated
    assert (moved.min(), moved.max()) == (-2, 2)
    pairs, counts = np.unique(moved, axis=0, return_counts=True)
    assert len(pairs) == 25  # every (dy, dx) in -2..2 x -2..2 occurs
    assert counts.min() > 2000 / 25 / 2  # roughly uniformly


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The reference: ``image`` (C, H, W) moved down by ``dy`` and right by ``dx``, zero-filled."""
    out = np.zeros_like(image)
    h, w = image.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        :, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def test_each_output_is_its_image_shifted_with_zeros_filled_in():
    x = np.random.default_rng(1).uniform(1, 2, size=(50, 3, 7, 8)).astype(np.float32)
    y = cr.RandomShift(3, rng=2).forward(x, training=True)
    shifts = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)]
    for k in range(len(x)):
        matches = [s for s in shifts if np.array_equal(y[k], _shift(x[k], *s))]
        assert len(matches) == 1, f"sample {k} is not one shift of its image"


def test_inference_and_zero_shift_are_the_identity():
    x = _dots(4)
    assert cr.RandomShift(2, rng=0).forward(x) is x
    np.testing.assert_array_equal(cr.RandomShift(0, rng=0).forward(x, training=True), x)


def test_same_seed_same_shifts_and_a_saved_model_continues_the_sequence(tmp_path):
    model = cr.Sequential(cr.RandomShift(2, rng=3), cr.Flatten(), cr.Dense(81, 2, rng=0))
    x = _dots(64)
    model.forward(x, training=True)
    cr.save(model, tmp_path / "m.npz")
    loaded = cr.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(
        loaded.layers[0].forward(x, training=True), model.layers[0].forward(x, training=True)
    )


def test_refuses_what_is_not_an_image_batch():
    with pytest.raises(ValueError, match=r"RandomShift\(max_shift=2\) expected input of shape"):
        cr.RandomShift(2).forward(np.zeros((4, 784)), training=True)
    with pytest.raises(ValueError, match="Invalid max_shift: -1"):
        cr.RandomShift(-1)
