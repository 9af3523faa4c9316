"""What the page shows, computed from a model: predictions, explanations and pictures.

Everything here talks to the model through the generic :class:`~chainrule.Layer` interface
(``params``, ``grads``, ``forward``, ``backward``, ``input_shape``), never a concrete layer class,
so a model of any layers the package offers is drawn the same way. Pictures travel as bytes in
base64 (one byte a pixel), not as lists of floats: a tile of 784 weights is 1 KiB of text
instead of about 7.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from ..images import prepare_digit
from ..network import Sequential

__all__ = [
    "IMAGE_SIDE",
    "NUM_CLASSES",
    "explain",
    "gallery",
    "input_shape",
    "predict",
    "quantize",
    "top3",
    "weight_tiles",
]

#: The page draws 28 x 28 digits and trains on MNIST's ten classes.
IMAGE_SIDE = 28
NUM_CLASSES = 10
#: The most values of one layer sent to the page (a strip of cells); the rest are summarised.
MAX_VALUES = 256
#: The most first-layer units drawn as tiles.
MAX_TILES = 64


def input_shape(model: Sequential) -> tuple[int, ...]:
    """The shape of one sample ``model`` takes for a 28 x 28 digit: ``(784,)`` for a model that
    starts on vectors (an MLP), ``(1, 28, 28)`` for one that starts on images.

    Raises ``ValueError`` naming the model's input shape if it takes neither, or if it does not
    answer with one score per MNIST class.
    """
    want = model.input_shape
    side = IMAGE_SIDE
    for shape in ((side * side,), (1, side, side)):
        if want is None or (
            len(want) == len(shape)
            and all(w in (None, s) for w, s in zip(want, shape, strict=True))
        ):
            break
    else:
        raise ValueError(
            f"the model takes samples of shape {want}; the page draws {side}x{side} digits, "
            f"given as ({side * side},) or (1, {side}, {side})"
        )
    out = model.forward(np.zeros((1, *shape), np.float32))
    if out.shape != (1, NUM_CLASSES):
        raise ValueError(
            f"the model answers with {out.shape[1:]} values per sample; the page needs one "
            f"score for each of the {NUM_CLASSES} digits"
        )
    return shape


def predict(model: Sequential, ink: np.ndarray, shape: tuple[int, ...]) -> dict[str, Any]:
    """The answer of ``POST /api/predict`` for a drawing.

    Args:
        model: the network (its input: raw pixel levels 0-255, as ``chainrule train`` and
            ``chainrule predict`` give it).
        ink: ``(H, W)`` ink intensities 0-255 (0: paper).
        shape: the model's sample shape (:func:`input_shape`).

    Returns:
        ``{"digit", "probabilities", "seen"}``: the class (``None`` when no digit is drawn), the
        ten class probabilities, and the 28 x 28 image in [0, 1] the network was given (zeros
        for a blank drawing; the probabilities are then the network's answer to that empty
        image).

    Example:
        >>> predict(model, np.zeros((280, 280)), (784,))["digit"] is None  # doctest: +SKIP
        True
    """
    seen = _seen(ink)
    x = (seen * np.float32(255)).reshape(1, *shape)
    probabilities = model.predict_proba(x)[0].astype(np.float64)
    digit = None if not seen.any() else int(np.argmax(probabilities))
    return {
        "digit": digit,
        "probabilities": probabilities.tolist(),
        "seen": seen.astype(np.float64).tolist(),
    }


def _seen(ink: np.ndarray) -> np.ndarray:
    """The drawing prepared as MNIST is (:func:`chainrule.images.prepare_digit`, shared with
    ``chainrule predict``): ``(784,)`` float32 in [0, 1], all zeros when nothing is drawn."""
    grey = np.asarray(ink, np.float32) / np.float32(255)
    if not grey.any():
        return np.zeros(IMAGE_SIDE * IMAGE_SIDE, np.float32)
    try:
        return prepare_digit(grey).astype(np.float32)
    except ValueError:  # no digit found in the drawing (a speck fainter than ink): blank
        return np.zeros(IMAGE_SIDE * IMAGE_SIDE, np.float32)


def explain(model: Sequential, ink: np.ndarray, shape: tuple[int, ...]) -> dict[str, Any]:
    """Why the network chose its class: its hidden activations for the drawing and the input
    gradient ``d(output of the class)/dx`` as a 28 x 28 map.

    The hidden activations are the inputs of every layer with parameters after the first
    (``a^(l-1)`` of the notes, the values a weight matrix multiplies). The gradient comes from one
    backward pass of the one-hot vector of the chosen class: back-propagation, with the input as
    the last "layer". ``model`` is used for its caches: give it a copy no other thread uses.
    """
    answer = predict(model, ink, shape)
    seen = np.asarray(answer["seen"], np.float32)
    x = (seen * np.float32(255)).reshape(1, *shape)
    outputs = []
    h = x
    for layer in model.layers:
        outputs.append(h)  # the input of this layer
        h = layer.forward(h)
    trained = [i for i, layer in enumerate(model.layers) if layer.params]
    hidden = [
        {
            "layer": i,
            "name": repr(model.layers[i]),
            "shape": list(outputs[i].shape[1:]),
            **_values(outputs[i][0]),
        }
        for i in trained[1:]
    ]
    chosen = answer["digit"] if answer["digit"] is not None else int(np.argmax(h[0]))
    onehot = np.zeros_like(h)
    onehot[0, chosen] = 1
    gradient: list[float] | None
    try:
        dx = model.backward(onehot)
        assert dx is not None
        gradient = np.asarray(dx, np.float64).reshape(-1).tolist()
    except (RuntimeError, ValueError, NotImplementedError):
        gradient = None  # a layer that cannot back-propagate from inference mode
    return {**answer, "class": chosen, "hidden": hidden, "gradient": gradient}


def _values(a: np.ndarray) -> dict[str, Any]:
    """One sample's values: summary figures and the first :data:`MAX_VALUES` of them."""
    flat = np.asarray(a, np.float64).reshape(-1)
    finite = flat[np.isfinite(flat)]
    return {
        "count": int(flat.size),
        "values": flat[:MAX_VALUES].tolist() if np.isfinite(flat[:MAX_VALUES]).all() else None,
        "mean": float(finite.mean()) if finite.size else None,
        "std": float(finite.std()) if finite.size else None,
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "zeros": float(np.mean(flat == 0)),
    }


def quantize(a: np.ndarray) -> tuple[str, float]:
    """A signed array as base64 bytes, ``128 + 127 * a / max|a|`` rounded, and its scale
    ``max|a|`` (0 for an all-zero array)."""
    a = np.asarray(a, np.float64)
    scale = float(np.abs(a).max()) if a.size and np.isfinite(a).all() else 0.0
    q = np.full(a.shape, 128, np.uint8)
    if scale > 0:
        q = np.rint(128 + 127 * a / scale).astype(np.uint8)
    return base64.b64encode(q.tobytes()).decode("ascii"), scale


def weight_tiles(model: Sequential, which: str = "params") -> dict[str, Any] | None:
    """The first layer's weights (``which="params"``) or their gradients (``"grads"``) as tiles.

    The first parameter with two or more axes is drawn: a matrix whose rows are the 784 inputs
    gives one 28 x 28 tile per unit (its column); a stack of kernels ``(out, in, kh, kw)`` gives
    one tile per kernel. Each tile is scaled by its own largest magnitude (mid-grey is 0).
    """
    for i, layer in enumerate(model.layers):
        for name, w in layer.params.items():
            if w.ndim < 2:
                continue
            a = getattr(layer, which).get(name)
            if a is None or a.shape != w.shape:
                return None
            side = IMAGE_SIDE
            if a.ndim == 2 and a.shape[0] == side * side:
                tiles = a.T[:MAX_TILES].reshape(-1, side, side)
            elif a.ndim == 4:
                tiles = a.reshape(-1, a.shape[-2], a.shape[-1])[:MAX_TILES]
            else:
                return None
            encoded = [quantize(t) for t in tiles]
            return {
                "layer": i,
                "param": f"{i}.{name}",
                "height": int(tiles.shape[1]),
                "width": int(tiles.shape[2]),
                "tiles": [data for data, _ in encoded],
                "scales": [scale for _, scale in encoded],
                "total": int(a.shape[1] if a.ndim == 2 else a.shape[0] * a.shape[1]),
            }
        if layer.params:
            return None
    return None


def top3(p: np.ndarray) -> list[list[float]]:
    """The three most probable classes and their probabilities, ``[[class, p], ...]``."""
    order = np.argsort(-p, kind="stable")[:3]
    return [[int(c), float(p[c])] for c in order]


def gallery(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """The notes' matched / not-matched lists: the first few recognised and not-recognised
    images with their top-3 classes, and the confusion matrix of them all."""
    predicted = probabilities.argmax(axis=1)
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(matrix, (labels, predicted), 1)

    def items(mask: np.ndarray) -> list[dict[str, Any]]:
        picked = np.flatnonzero(mask)[:8]
        return [
            {
                "image": base64.b64encode(
                    np.ascontiguousarray(images[i].reshape(-1), np.uint8).tobytes()
                ).decode("ascii"),
                "label": int(labels[i]),
                "top3": top3(probabilities[i]),
            }
            for i in picked
        ]

    right = predicted == labels
    return {
        "recognised": items(right),
        "not_recognised": items(~right),
        "recognised_count": int(right.sum()),
        "not_recognised_count": int((~right).sum()),
        "confusion": matrix.tolist(),
    }
