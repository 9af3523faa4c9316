"""Reading a digit from an image file: every common way of storing one gives the same input."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from PIL import Image

import chainrule as cr
from chainrule.images import load_digit

_, (X_TEST, _) = cr.datasets.load_mnist(normalize=False)
INK = np.kron(X_TEST[0].reshape(28, 28), np.ones((4, 4), np.uint8))  # a 7, white on black, 112 px


def save(tmp_path, image, name="digit.png", **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


@pytest.fixture
def expected(tmp_path):
    return load_digit(save(tmp_path, Image.fromarray(INK), "reference.png"))


def test_either_polarity_gives_the_same_digit(tmp_path, expected):
    assert_allclose(load_digit(save(tmp_path, Image.fromarray(255 - INK))), expected, atol=1e-6)


@pytest.mark.parametrize("ink", [0, 255], ids=["black-ink", "white-ink"])
def test_ink_on_a_transparent_background(tmp_path, expected, ink):
    rgba = np.zeros((*INK.shape, 4), np.uint8)
    rgba[..., :3] = ink
    rgba[..., 3] = INK  # the stroke is where the alpha is
    got = load_digit(save(tmp_path, Image.fromarray(rgba, "RGBA")))
    assert_allclose(got, expected, atol=1e-6)


def test_a_palette_image_with_a_transparent_colour(tmp_path, expected):
    image = Image.fromarray(np.where(INK > 127, 255, 0).astype(np.uint8)).convert("P")
    path = save(tmp_path, image, transparency=0)  # the black background is transparent
    got = load_digit(path)
    binary = load_digit(
        save(tmp_path, Image.fromarray(np.where(INK > 127, 255, 0).astype(np.uint8)), "b.png")
    )
    assert_allclose(got, binary, atol=1e-6)
    assert np.corrcoef(got, expected)[0, 1] > 0.95


def test_a_photo_is_turned_upright_by_its_exif_orientation(tmp_path, expected):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored = Image.fromarray(INK).transpose(Image.Transpose.ROTATE_90)  # as a sideways camera
    assert_allclose(load_digit(save(tmp_path, stored, exif=exif)), expected, atol=1e-6)


@pytest.mark.parametrize("scale", [257, 16], ids=["16-bit", "12-bit-in-16"])
@pytest.mark.parametrize("dark_on_light", [False, True], ids=["light-ink", "dark-ink"])
def test_deep_greyscale_keeps_its_levels(tmp_path, expected, scale, dark_on_light):
    levels = (255 - INK if dark_on_light else INK).astype(np.uint16) * scale
    assert_allclose(load_digit(save(tmp_path, Image.fromarray(levels))), expected, atol=1e-6)


@pytest.mark.parametrize("limit", [10_000, 5_000], ids=["warning", "error"])
def test_an_image_too_large_to_open_safely_is_refused(tmp_path, monkeypatch, limit):
    path = save(tmp_path, Image.fromarray(INK))  # 12,544 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ValueError, match=r"digit\.png is too large to read safely"):
        load_digit(path)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a picture")
    with pytest.raises(ValueError, match=r"notes\.txt is not a readable image"):
        load_digit(path)
    with pytest.raises(FileNotFoundError, match="image not found"):
        load_digit(tmp_path / "absent.png")
