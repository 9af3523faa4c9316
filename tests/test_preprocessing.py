"""MNIST-style preprocessing (``prepare_digit``): real MNIST digits pass nearly unchanged, drawings
anywhere and at any size give the class they give centred, and photo-like pictures (uneven
light, a shadow, grain, a tilt, JPEG, either polarity) give the class of the clean drawing."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.images import find_digit, label_components, prepare_digit
from photo_like import photograph, render

(X_TRAIN, Y_TRAIN), (X_TEST, _) = cr.datasets.load_mnist(normalize=False)
DIGITS = X_TEST.reshape(-1, 28, 28)


@pytest.fixture(scope="module")
def model():
    """A small MLP trained in seconds (3,000 images, seeded): about 87 % on the test set."""
    net = cr.MLP(784, [64], 10, rescale=1 / 255, rng=0)
    cr.fit(
        net,
        X_TRAIN[:3000],
        Y_TRAIN[:3000],
        loss=cr.SoftmaxCrossEntropy(),
        optimizer=cr.Adam(3e-3),
        epochs=5,
        batch_size=50,
        seed=0,
    )
    return net


def classify(model, images):
    """The images as the network sees them, and its probabilities."""
    seen = np.stack([prepare_digit(g) for g in images])
    return seen, model.predict_proba(seen * 255)


def test_real_mnist_digits_come_through_nearly_unchanged():
    worst = []
    for digit in DIGITS[:200] / 255:
        seen = prepare_digit(digit).reshape(28, 28)
        # Recentring moves a digit by at most a pixel or two (rounding of the centre of mass).
        worst.append(
            min(
                np.abs(np.roll(digit, (dy, dx), (0, 1)) - seen).max()
                for dy in range(-2, 3)
                for dx in range(-2, 3)
            )
        )
    worst = np.array(worst)
    assert worst.max() < 0.1  # every pixel of every digit within 10 % of its level
    assert np.mean(worst < 0.02) >= 0.95


@pytest.mark.parametrize("size", [16, 45, 120], ids=["small", "large", "huge"])
def test_a_drawing_off_centre_and_at_another_size_gives_the_centred_class(model, size):
    canvas = (160, 220)
    centred, moved = [], []
    for digit in DIGITS[:30]:
        centred.append(1 - render(digit, 56, 0, canvas, (52, 82)))  # dark ink on white
        moved.append(1 - render(digit, size, 0, canvas, (canvas[0] - size - 3, 5)))
    (seen_c, p_centred), (seen_m, p_moved) = classify(model, centred), classify(model, moved)
    # As below: a digit the small model finds ambiguous may flip on a pixel; no other may.
    same = p_moved.argmax(1) == p_centred.argmax(1)
    assert same[p_centred.max(1) >= 0.9].all()
    assert same.mean() >= 0.9
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(seen_c, seen_m, strict=True)]
    # Thin strokes a pixel apart lower a correlation a lot: the typical digit must match closely.
    assert min(corr) > 0.7
    # A 16 px drawing (its digit about 11 px) is enlarged to 20 px: blurred, so less alike.
    assert np.median(corr) > (0.85 if size < 20 else 0.95)


def _photos(n, seed=1):
    """``n`` test digits, each as a clean drawing and as a photo-like picture of it (every third
    light ink on a dark board), with the box the ink occupies."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        size = int(rng.integers(160, 300))
        angle = rng.uniform(-10, 10)
        frame = (400, 560)
        corner = (int(rng.integers(0, 400 - size - 40)), int(rng.integers(0, 560 - size - 40)))
        ink = render(DIGITS[i], size, angle, frame, corner)
        photo = photograph(ink, rng, dark_ink=i % 3 != 2)
        rows, cols = np.nonzero(ink > 0.5)
        yield 1 - ink, photo, (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)


def test_photo_like_pictures_classify_as_the_clean_drawings(model):
    clean, photos, boxes = zip(*_photos(30), strict=True)
    (_, p_clean), (_, p_photo) = classify(model, clean), classify(model, photos)
    # A digit the small model finds ambiguous (top class under 90 %) can flip on a one-pixel
    # change; every other one must keep its class.
    sure = p_clean.max(1) >= 0.9
    assert sure.sum() >= 15  # 17 of these 30
    assert (p_photo.argmax(1) == p_clean.argmax(1))[sure].all()
    assert (p_photo.argmax(1) == p_clean.argmax(1)).mean() >= 0.9
    for photo, (top, left, bottom, right) in zip(photos, boxes, strict=True):
        got = np.array(find_digit(photo)[1])
        # The crop lands on the digit: it holds the ink's core (the pixels over half covered,
        # within 2 px) and adds at most its soft edge, 10 px (the digits are 160 px or more).
        core = np.array((top, left, bottom, right))
        outward = np.array([-1, -1, 1, 1]) * (got - core)
        assert outward.min() >= -2, (got, core)
        assert outward.max() <= 10, (got, core)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: np.zeros((28, 28)),
        lambda rng: np.ones((50, 60)),
        lambda rng: np.full((40, 30), 0.5),
        lambda rng: np.clip(
            0.4 + 0.4 * np.mgrid[0:300, 0:400][1] / 400 + rng.normal(0, 0.03, (300, 400)), 0, 1
        ),
        lambda rng: np.clip(
            0.2 + 0.3 * np.mgrid[0:300, 0:400][0] / 300 + rng.normal(0, 0.05, (300, 400)), 0, 1
        ),
    ],
    ids=["black", "white", "grey", "lit-from-the-side-with-grain", "dark-with-grain"],
)
def test_a_blank_image_is_refused(make):
    with pytest.raises(ValueError, match="the image is blank: no digit found"):
        prepare_digit(make(np.random.default_rng(0)))


def test_bad_arrays_are_refused():
    with pytest.raises(ValueError, match=r"2-D greyscale image of numbers, got shape \(3, 4, 5\)"):
        prepare_digit(np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        prepare_digit(np.full((8, 8), np.nan))


def _flood_labels(mask):
    """Reference 8-connected labelling by breadth-first flood fill."""
    labels = np.zeros(mask.shape, np.int64)
    n = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        n += 1
        labels[start] = n
        queue = [start]
        while queue:
            y, x = queue.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    q = (y + dy, x + dx)
                    if (
                        0 <= q[0] < mask.shape[0]
                        and 0 <= q[1] < mask.shape[1]
                        and mask[q]
                        and not labels[q]
                    ):
                        labels[q] = n
                        queue.append(q)
    return labels


def test_label_components_matches_a_flood_fill():
    rng = np.random.default_rng(0)
    for _ in range(40):
        shape = tuple(rng.integers(1, 30, 2))
        mask = rng.random(shape) < rng.uniform(0.05, 0.7)
        labels, sizes = label_components(mask)
        want = _flood_labels(mask)
        assert np.array_equal(labels, want)
        assert np.array_equal(sizes, np.bincount(want.ravel(), minlength=1)[1:])
    spiral = np.zeros((61, 61), bool)  # one long winding component
    for k in range(0, 30, 4):
        spiral[k, k : 61 - k] = spiral[k : 61 - k, 60 - k] = True
        spiral[60 - k, k + 2 : 61 - k] = spiral[k + 2 : 61 - k, k + 2] = True
    labels, sizes = label_components(spiral)
    assert np.array_equal(labels, _flood_labels(spiral))
    assert label_components(np.zeros((3, 3), bool))[1].size == 0
