"""Lesson ``convolution`` (after note 004: convolution, back-propagated as the Affine layer).

An MLP and a small CNN learn the same MNIST subset with the same optimizer, batches and epochs;
both are then tested on the test digits moved by 0 to 6 pixels. The MLP gives every pixel
position a weight of its own, so a digit moved by two pixels meets weights that never saw it
there; the CNN slides the same 5x5 filters over the whole image and max-pools their responses,
so a small shift moves its feature maps instead of changing them. The same two networks trained
on randomly shifted digits show what each learns from data beyond what its structure gives.

The lesson also shows the CNN's first-layer filters and what training changed in them, and
checks, on the trained CNN, that the convolution's backward pass is the Affine layer's: im2col
lays every input patch out as a row of a matrix ``cols``, so that the convolution is the matrix
product ``cols @ W``; then ``dL/dW = cols^T @ delta`` and ``dL/dx`` is ``delta @ W^T`` folded
back onto the image (col2im).
"""

from __future__ import annotations

import numpy as np

from ..augmentation import RandomShift
from ..conv import Conv2D, MaxPool2D
from ..layers import Dense, Flatten, Layer, ReLU, Rescaling
from ..losses import SoftmaxCrossEntropy
from ..network import MLP, Sequential
from ..optim import Adam
from ..train import evaluate, fit
from ._base import DataDir, Lesson, LessonResult
from ._common import check_seed, figure_png, format_table, load_mnist_bytes, new_figure, subset

__all__ = ["LESSON", "col2im", "im2col", "run"]

SIDE = 28  # MNIST images are 28 x 28
HIDDEN = 256  # the MLP: 784-256-10
CHANNELS, KERNEL, POOL = (16, 32), 5, 2  # the CNN: conv 5x5 -> pool 2 -> conv 5x5 -> pool 2
AUGMENT = 2  # the third network's random shifts in training, in pixels
LR, BATCH = 1e-3, 64
SHIFTS = tuple(range(7))
#: (training images, epochs, test images) of the full and the quick form.
FULL, QUICK = (10_000, 5, 10_000), (2_000, 2, 500)
GRAD_IMAGES = 8  # test images on which the backward pass is checked
#: The four networks: (name, label, convolutional, trained on shifted images).
MODELS = (
    ("mlp", "MLP", False, False),
    ("mlp_shifts", "MLP + shifts", False, True),
    ("cnn", "CNN", True, False),
    ("cnn_shifts", "CNN + shifts", True, True),
)


def im2col(
    x: np.ndarray, kernel: int, stride: int = 1, padding: int = 0
) -> tuple[np.ndarray, tuple[int, int]]:
    """Every ``kernel x kernel`` patch of ``x`` as one row of a matrix.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel, stride, padding : int
        As in :class:`~chainrule.Conv2D` (square kernels, the same stride and zero padding on
        both axes).

    Returns
    -------
    cols : ndarray, shape (N * OH * OW, C * kernel * kernel)
        Row ``(n, i, j)`` holds the patch under output pixel ``(i, j)`` of sample ``n``, ordered
        as a weight ``(C, kernel, kernel)`` is flattened; a convolution with weights
        ``W (F, C, kernel, kernel)`` is then ``cols @ W.reshape(F, -1).T``.
    (OH, OW) : tuple of int
        The output's height and width.

    Example
    -------
    >>> cols, out = im2col(np.arange(16.0).reshape(1, 1, 4, 4), 3)
    >>> cols.shape, out
    ((4, 9), (2, 2))
    >>> cols[0].tolist()  # the top-left 3 x 3 patch
    [0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 9.0, 10.0]
    """
    n, c = x.shape[:2]
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    patches = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))
    patches = patches[:, :, ::stride, ::stride]  # (N, C, OH, OW, k, k)
    oh, ow = patches.shape[2:4]
    cols = patches.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kernel * kernel)
    return cols, (oh, ow)


def col2im(
    dcols: np.ndarray, shape: tuple[int, ...], kernel: int, stride: int = 1, padding: int = 0
) -> np.ndarray:
    """The transpose of :func:`im2col`: add each row's patch back where it came from.

    Parameters
    ----------
    dcols : ndarray, shape (N * OH * OW, C * kernel * kernel)
        One value per entry of ``im2col``'s matrix (``dL/dcols``).
    shape : tuple (N, C, H, W)
        The shape of ``im2col``'s input.
    kernel, stride, padding : int

    Returns
    -------
    ndarray, shape (N, C, H, W)
        Each input pixel gets the sum over every patch it appeared in: ``dL/dx``. One strided
        addition per kernel offset, no loop over pixels or samples.

    Example
    -------
    >>> x = np.ones((1, 1, 3, 3))
    >>> cols, _ = im2col(x, 2)
    >>> col2im(np.ones_like(cols), x.shape, 2)[0, 0].tolist()  # how many patches hold each pixel
    [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """
    n, c, h, w = shape
    oh = (h + 2 * padding - kernel) // stride + 1
    ow = (w + 2 * padding - kernel) // stride + 1
    patches = dcols.reshape(n, oh, ow, c, kernel, kernel)
    padded = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dcols.dtype)
    for i in range(kernel):
        for j in range(kernel):
            rows = slice(i, i + stride * (oh - 1) + 1, stride)
            cols = slice(j, j + stride * (ow - 1) + 1, stride)
            padded[:, :, rows, cols] += patches[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return padded[:, :, padding : padding + h, padding : padding + w]


def shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``images (..., H, W)`` moved ``dy`` pixels down and ``dx`` right; 0 shifted in."""
    h, w = images.shape[-2:]
    out = np.zeros_like(images)
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


#: The four directions a test image can move in: down, up, right, left.
DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def _moved(images: np.ndarray, direction: np.ndarray, k: int) -> np.ndarray:
    """Each image moved ``k`` pixels in its own direction (an index into DIRECTIONS)."""
    out = np.empty_like(images)
    for d, (dy, dx) in enumerate(DIRECTIONS):
        chosen = direction == d
        out[chosen] = shift(images[chosen], k * dy, k * dx)
    return out


def _cnn(seed: int, augment: int) -> Sequential:
    """The CNN; ``augment > 0`` shifts its training images by up to that many pixels. The same
    seed gives the same initial weights with or without the shifts."""
    c1, c2 = CHANNELS
    side = ((SIDE - KERNEL + 1) // POOL - KERNEL + 1) // POOL  # 28 -> 24 -> 12 -> 8 -> 4
    rng = np.random.default_rng(seed)
    # A generator of its own for the shifts (spawning does not advance rng), as MLP does.
    shifts: list[Layer] = [RandomShift(augment, rng=rng.spawn(1)[0])] if augment else []
    return Sequential(
        Rescaling(1 / 255),
        *shifts,
        Conv2D(1, c1, KERNEL, rng=rng),
        ReLU(),
        MaxPool2D(POOL),
        Conv2D(c1, c2, KERNEL, rng=rng),
        ReLU(),
        MaxPool2D(POOL),
        Flatten(),
        Dense(c2 * side * side, 10, init="xavier", rng=rng),  # no ReLU follows: Xavier
    )


def _build(convolutional: bool, augment: int, seed: int) -> Sequential:
    if convolutional:
        return _cnn(seed, augment)
    return MLP(SIDE * SIDE, [HIDDEN], 10, rescale=1 / 255, augment=augment, rng=seed)


def _first_filters(net: Sequential) -> np.ndarray:
    """The first Conv2D's weights as ``(F, k, k)`` (it has one input channel), float64."""
    conv = next(layer for layer in net if isinstance(layer, Conv2D))
    return conv.params["W"][:, 0].astype(np.float64)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b| / max |b|``."""
    return float(np.abs(a - b).max() / np.abs(b).max())


def _check_backward(net: Sequential, x: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """The CNN's backward pass in float64 against the Affine layer's formulas on im2col's
    matrix, layer by layer, with the ``delta`` that actually reaches each Conv2D."""
    net = net.copy().astype(np.float64)
    loss = SoftmaxCrossEntropy()
    inputs = []  # what each layer received ...
    h = x
    for layer in net:
        inputs.append(h)
        h = layer.forward(h)
    loss.forward(h, t)
    deltas: list[np.ndarray] = [np.empty(0)] * len(net)  # ... and dL/d(its output)
    d = loss.backward()
    for i in reversed(range(len(net))):
        deltas[i] = d
        d = net[i].backward(d)
    dx_by_layer = {i: (deltas[i - 1] if i else d) for i in range(len(net))}  # dL/d(its input)

    errors: dict[str, float] = {}
    convs = [i for i, layer in enumerate(net) if isinstance(layer, Conv2D)]
    for number, i in enumerate(convs, start=1):
        layer, x_in = net[i], inputs[i]
        w = layer.params["W"]
        cols, _ = im2col(x_in, KERNEL)
        delta = deltas[i].transpose(0, 2, 3, 1).reshape(-1, w.shape[0])  # (N * OH * OW, F)
        w_mat = w.reshape(w.shape[0], -1).T  # (C * k * k, F): the Affine layer's W
        errors[f"conv{number}_dW_rel_error"] = _rel(
            layer.grads["W"], (cols.T @ delta).T.reshape(w.shape)
        )
        errors[f"conv{number}_db_rel_error"] = _rel(layer.grads["b"], delta.sum(axis=0))
        errors[f"conv{number}_dx_rel_error"] = _rel(
            dx_by_layer[i], col2im(delta @ w_mat.T, x_in.shape, KERNEL)
        )

    return errors


def run(*, quick: bool = False, seed: int = 0, data_dir: DataDir = None) -> LessonResult:
    """Train an MLP and a CNN, without and with shifts, on the same MNIST subset; test them on
    shifted digits.

    Parameters
    ----------
    quick : bool
        2,000 training images for 2 epochs, 500 test images, instead of 10,000 images for 5
        epochs and the whole test set.
    seed : int
        Chooses the subsets, the initial weights (the same for an MLP or a CNN with and without
        shifts), the order of the batches, the training shifts and the direction each test
        image moves in.
    data_dir : path, optional
        Directory of the MNIST IDX files (default: the copy shipped with chainrule).
    """
    rng = np.random.default_rng(check_seed(seed))
    n_train, epochs, n_test = QUICK if quick else FULL
    (x_all, y_all), (x_test_all, y_test_all) = load_mnist_bytes(data_dir)
    x, y = subset(x_all, y_all, n_train, rng)
    x_test, y_test = subset(x_test_all, y_test_all, n_test, rng)
    init_seed, order_seed = (int(s) for s in rng.integers(2**31, size=2))
    direction = rng.integers(len(DIRECTIONS), size=len(x_test))
    images = x.reshape(-1, 1, SIDE, SIDE)
    test_images = x_test.reshape(-1, 1, SIDE, SIDE)

    nets: dict[str, Sequential] = {}
    # Only the plain MLP takes vectors; a model that shifts its inputs takes images.
    flat = {name: not conv and not shifts for name, _, conv, shifts in MODELS}
    for name, _, conv, shifts in MODELS:
        nets[name] = net = _build(conv, AUGMENT if shifts else 0, init_seed)
        fit(
            net,
            x if flat[name] else images,
            y,
            loss=SoftmaxCrossEntropy(),
            optimizer=Adam(LR),
            epochs=epochs,
            batch_size=BATCH,
            seed=order_seed,
        )

    accuracy: dict[tuple[str, int], float] = {}
    for k in SHIFTS:
        moved = _moved(test_images, direction, k)
        for name, net in nets.items():
            inputs = moved.reshape(len(moved), -1) if flat[name] else moved
            accuracy[name, k] = evaluate(net, inputs, y_test, loss=None)["accuracy"]

    cnn = nets["cnn"]
    # The first layer's 16 filters, trained and as they started (the same seed rebuilds them).
    filters, initial = (_first_filters(net) for net in (cnn, _cnn(init_seed, 0)))
    change = float(np.linalg.norm(filters - initial) / np.linalg.norm(initial))
    correlation = [
        float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
        for a, b in zip(filters, initial, strict=True)
    ]
    checks = _check_backward(cnn, test_images[:GRAD_IMAGES], y_test[:GRAD_IMAGES])
    figures: dict[str, float] = {
        f"{name}_params": float(net.num_params) for name, net in nets.items()
    }
    for (name, k), acc in accuracy.items():
        figures[f"{name}_shift{k}_accuracy"] = acc
    figures.update(checks)
    figures["conv1_change"] = change
    figures["conv1_min_correlation"] = min(correlation)
    figures["conv1_median_correlation"] = float(np.median(correlation))

    table = format_table(
        ["shift (pixels)", *(label for _, label, _, _ in MODELS)],
        [[str(k), *(f"{accuracy[name, k]:.1%}" for name, *_ in MODELS)] for k in SHIFTS],
    )
    kept = {name: accuracy[name, 3] / accuracy[name, 0] for name, *_ in MODELS}
    c1, c2 = CHANNELS
    checks_table = format_table(
        ["layer", "dW vs cols^T @ delta", "db vs sum of delta", "dx vs col2im(delta @ W^T)"],
        [
            [
                f"conv{n} ({c_in}->{c_out}, {KERNEL}x{KERNEL})",
                *(f"{checks[f'conv{n}_{g}_rel_error']:.1e}" for g in ("dW", "db", "dx")),
            ]
            for n, (c_in, c_out) in enumerate([(1, c1), (c1, c2)], start=1)
        ],
    )
    text = "\n".join(
        [
            f"MNIST, {len(x):,} training images, {epochs} epochs of Adam (lr {LR:g}, batch "
            f"{BATCH}), the same batches for every network:",
            f"  MLP           784-{HIDDEN}-10, ReLU ({nets['mlp'].num_params:,} parameters)",
            f"  CNN           conv {KERNEL}x{KERNEL}x{c1} - max pool {POOL} - conv "
            f"{KERNEL}x{KERNEL}x{c2} - max pool {POOL} - dense 10, ReLU ({cnn.num_params:,} "
            "parameters)",
            f"  + shifts      either network, its training images shifted at random by up to "
            f"{AUGMENT} pixels",
            f"Test accuracy on {len(x_test):,} test images, each moved k pixels down, up, right "
            "or left (at random per image; 0 shifted in):",
            "",
            table,
            "",
            "Share of the unshifted accuracy kept at 3 pixels: "
            + ", ".join(f"{label} {kept[name]:.0%}" for name, label, _, _ in MODELS)
            + ".",
            "",
            f"Training moved the CNN's first-layer filters by {change:.0%} of their initial norm; "
            "each filter's correlation",
            f"with its initial weights: {min(correlation):.2f} to {max(correlation):.2f} "
            f"(median {np.median(correlation):.2f}).",
            "",
            f"The trained CNN's backward pass in float64 on {GRAD_IMAGES} test images, against "
            "the Affine layer's formulas on im2col's matrix",
            "(max |difference| / max |value|):",
            "",
            checks_table,
        ]
    )
    return LessonResult(text, _plot(accuracy, filters, initial, test_images[0, 0]), figures)


def _plot(
    accuracy: dict[tuple[str, int], float],
    filters: np.ndarray,
    initial: np.ndarray,
    digit: np.ndarray,
) -> bytes:
    fig = new_figure(14, 5.2)
    grid = fig.add_gridspec(1, 2, width_ratios=[1.5, 1])
    left, right = fig.add_subfigure(grid[0]), fig.add_subfigure(grid[1])
    ax_acc, ax_digits = left.subplots(2, 1, height_ratios=[4, 1])
    for name, label, conv, shifts in MODELS:
        acc = [100 * accuracy[name, k] for k in SHIFTS]
        if shifts:
            label = f"{label.split()[0]} trained on random shifts of up to {AUGMENT} px"
        ax_acc.plot(
            SHIFTS,
            acc,
            "--" if shifts else "-",
            marker="s" if conv else "o",
            color="C0" if conv else "C3",
            label=label,
        )
    ax_acc.set_xlabel("shift (pixels: down, up, right or left, at random per image)")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_ylim(0, 100)
    ax_acc.set_xticks(SHIFTS)
    ax_acc.set_title("Test digits moved by a few pixels")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()

    gap = np.full((SIDE, 2), 60, digit.dtype)  # a light grey bar between the digits
    strip = np.hstack([np.hstack([shift(digit, 0, k), gap]) for k in SHIFTS])[:, :-2]
    ax_digits.imshow(strip, cmap="gray_r", vmin=0, vmax=255)
    ax_digits.set_xticks([(SIDE + 2) * k + SIDE / 2 - 0.5 for k in SHIFTS], map(str, SHIFTS))
    ax_digits.set_yticks([])
    ax_digits.set_xlabel("the first test digit, moved right by 0 to 6 pixels")

    titles = (
        f"The CNN's {len(filters)} first-layer\nfilters ({KERNEL}x{KERNEL}) after training",
        "What training changed:\ntrained - initial weights",
    )
    notes = ("red: > 0, blue: < 0", "red: went up, blue: went down")
    for ax, weights, title, note in zip(
        right.subplots(1, 2), (filters, filters - initial), titles, notes, strict=True
    ):
        ax.imshow(_mosaic(weights), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_axis_off()
        ax.set_title(title, fontsize=10)
        ax.text(0.5, -0.03, f"{note}\n(each filter on its own scale)", transform=ax.transAxes,
                ha="center", va="top", fontsize=9)  # fmt: skip
    return figure_png(fig)


def _mosaic(weights: np.ndarray) -> np.ndarray:
    """``weights (F, k, k)`` tiled in a square grid, each divided by its largest magnitude,
    with a blank (NaN) pixel between neighbours."""
    n, k = len(weights), weights.shape[-1]
    side = int(np.ceil(np.sqrt(n)))
    tiles = np.full((side * (k + 1) - 1, side * (k + 1) - 1), np.nan)
    for i, w in enumerate(weights):
        r, c = divmod(i, side)
        scale = float(np.abs(w).max()) or 1.0
        tiles[r * (k + 1) : r * (k + 1) + k, c * (k + 1) : c * (k + 1) + k] = w / scale
    return tiles


LESSON = Lesson(
    name="convolution",
    title="digits moved by a few pixels defeat an MLP more than a CNN; conv backward is a matmul",
    notes=("004",),
    run=run,
)
