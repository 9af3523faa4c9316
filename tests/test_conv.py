"""Conv2D, MaxPool2D and AvgPool2D against loops written from the definitions, pixel by pixel.

The registry (``layer_cases.py``) gradient-checks every layer against central differences; here
the forward pass and every gradient are compared with naive references (a loop per sample, output
pixel and channel), pooling ties are routed to exactly one input, float32 stays float32, and the
boundary errors read as documented. The CNN builder is checked here too.
"""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# -- naive references ------------------------------------------------------------------------------
def pad(x: np.ndarray, ph: int, pw: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def conv_reference(x, w, b, stride, padding):
    """y, and a function from dy to (dx, dW, db), by loops over samples, pixels and channels."""
    (sh, sw), (ph, pw) = stride, padding
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = pad(x, ph, pw)
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    y = np.zeros((n, o, ho, wo))
    for s in range(n):
        for f in range(o):
            for r in range(ho):
                for q in range(wo):
                    patch = xp[s, :, r * sh : r * sh + kh, q * sw : q * sw + kw]
                    y[s, f, r, q] = np.sum(patch * w[f]) + b[f]

    def backward(dy):
        dxp, dw, db = np.zeros_like(xp), np.zeros_like(w), np.zeros_like(b)
        for s in range(n):
            for f in range(o):
                for r in range(ho):
                    for q in range(wo):
                        g = dy[s, f, r, q]
                        dw[f] += g * xp[s, :, r * sh : r * sh + kh, q * sw : q * sw + kw]
                        dxp[s, :, r * sh : r * sh + kh, q * sw : q * sw + kw] += g * w[f]
                        db[f] += g
        return dxp[:, :, ph : ph + h, pw : pw + wd], dw, db

    return y, backward


def pool_reference(x, size, stride, kind):
    """y, and a function from dy to dx; max pooling routes each window's gradient to the first
    of its largest inputs in row-major order."""
    (kh, kw), (sh, sw) = size, stride
    n, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.zeros((n, c, ho, wo))
    where = {}
    for s in range(n):
        for ch in range(c):
            for r in range(ho):
                for q in range(wo):
                    window = x[s, ch, r * sh : r * sh + kh, q * sw : q * sw + kw]
                    if kind == "max":
                        i, j = np.unravel_index(np.argmax(window), window.shape)  # the first
                        where[s, ch, r, q] = (r * sh + i, q * sw + j)
                        y[s, ch, r, q] = window[i, j]
                    else:
                        y[s, ch, r, q] = window.mean()

    def backward(dy):
        dx = np.zeros_like(x)
        for s in range(n):
            for ch in range(c):
                for r in range(ho):
                    for q in range(wo):
                        if kind == "max":
                            i, j = where[s, ch, r, q]
                            dx[s, ch, i, j] += dy[s, ch, r, q]
                        else:
                            window = dx[s, ch, r * sh : r * sh + kh, q * sw : q * sw + kw]
                            window += dy[s, ch, r, q] / (kh * kw)
        return dx

    return y, backward


CONVS = [  # (in, out, kernel, stride, padding, input (N, C, H, W))
    (1, 4, 5, 1, 2, (2, 1, 9, 8)),
    (3, 2, 3, 2, 0, (3, 3, 7, 9)),
    (2, 3, (2, 3), (2, 1), (1, 2), (2, 2, 6, 5)),
    (2, 2, 4, 3, 1, (1, 2, 9, 10)),  # the floor rule leaves a row and a column out
]


@pytest.mark.parametrize(("c_in", "c_out", "kernel", "stride", "padding", "shape"), CONVS)
def test_conv_matches_the_loops(c_in, c_out, kernel, stride, padding, shape):
    rng = np.random.default_rng(0)
    layer = cr.Conv2D(c_in, c_out, kernel, stride=stride, padding=padding, rng=1, dtype=np.float64)
    layer.params["b"][...] = rng.normal(size=c_out)
    x = rng.normal(size=shape)
    y = layer.forward(x)
    want, backward = conv_reference(
        x, layer.params["W"], layer.params["b"], pair(stride), pair(padding)
    )
    assert y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    dy = rng.normal(size=y.shape)
    dx = layer.backward(dy)
    want_dx, want_dw, want_db = backward(dy)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["W"], want_dw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["b"], want_db, rtol=1e-12, atol=1e-12)


POOLS = [  # (size, stride, input)
    (2, None, (2, 3, 6, 6)),
    (2, None, (2, 2, 7, 5)),  # odd sides: the floor rule
    (3, 2, (1, 2, 7, 8)),  # overlapping windows
    ((2, 3), (1, 2), (2, 1, 5, 7)),
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize(("size", "stride", "shape"), POOLS)
def test_pooling_matches_the_loops(kind, size, stride, shape):
    rng = np.random.default_rng(1)
    # Integers: many ties, which both must break the same way (the first in row-major order).
    x = rng.integers(0, 4, size=shape).astype(np.float64)
    layer = (cr.MaxPool2D if kind == "max" else cr.AvgPool2D)(size, stride=stride)
    want, backward = pool_reference(x, pair(size), pair(size if stride is None else stride), kind)
    y = layer.forward(x)
    np.testing.assert_allclose(y, want, rtol=1e-12)
    dy = rng.normal(size=y.shape)
    np.testing.assert_allclose(layer.backward(dy), backward(dy), rtol=1e-12, atol=1e-15)


def test_a_tie_routes_the_gradient_to_exactly_one_element():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 2:, 2:] = 7.0  # the bottom-right window is a four-way tie, the others ties of 0
    layer = cr.MaxPool2D(2)
    y = layer.forward(x)
    np.testing.assert_array_equal(y[0, 0], [[0.0, 0.0], [0.0, 7.0]])
    dx = layer.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    for r in range(2):
        for q in range(2):
            window = dx[0, 0, 2 * r : 2 * r + 2, 2 * q : 2 * q + 2]
            assert np.count_nonzero(window) == 1  # exactly one element, not shared or doubled
            assert window[0, 0] == 1.0 + 2 * r + q  # the first in row-major order
    assert dx.sum() == 10.0


def test_overlapping_windows_sum_what_they_route_to_one_input():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0  # the maximum of all four 2x2 windows of stride 1
    layer = cr.MaxPool2D(2, stride=1)
    layer.forward(x)
    dx = layer.backward(np.ones((1, 1, 2, 2)))
    assert dx[0, 0, 1, 1] == 4.0
    assert np.count_nonzero(dx) == 1


# -- float32 ---------------------------------------------------------------------------------------
def test_float32_stays_float32_through_a_cnn():
    model = cr.CNN((1, 12, 12), [3, 4], 5, kernel_size=3, padding=[1, 0], hidden=[8], rng=0)
    x = np.random.default_rng(0).integers(0, 256, size=(6, 1, 12, 12)).astype(np.uint8)
    out = model.forward(x, training=True)
    assert out.dtype == np.float32
    assert model.backward(np.ones_like(out)).dtype == np.float32
    for name, g in model.grads.items():
        assert g.dtype == np.float32, name
    for layer in model.layers:
        if isinstance(layer, cr.Conv2D):
            assert layer._col is not None
            assert layer._col.dtype == np.float32  # the im2col buffer too
    conv = cr.Conv2D(1, 2, 3, rng=0)
    assert conv.forward(np.ones((2, 1, 5, 5), np.float64)).dtype == np.float32
    for pool in (cr.MaxPool2D(2), cr.AvgPool2D(2)):
        y = pool.forward(np.ones((2, 3, 4, 4), np.float32))
        assert y.dtype == np.float32
        assert pool.backward(np.ones_like(y)).dtype == np.float32


# -- the boundary ----------------------------------------------------------------------------------
def test_the_input_error_says_what_was_expected_and_what_came():
    with pytest.raises(ValueError, match="expected input of shape") as info:
        cr.Conv2D(1, 32, 5).forward(np.zeros((64, 784)))
    assert str(info.value) == (
        "Conv2D(1 -> 32, 5x5) expected input of shape (N, 1, H, W) with H, W >= 5, got (64, 784)"
    )
    with pytest.raises(ValueError, match="expected input of shape") as info:
        cr.Conv2D(3, 8, (3, 5), stride=2, padding=1).forward(np.zeros((2, 3, 4, 2)))
    assert str(info.value) == (  # padding leaves a window on fewer pixels than the kernel's
        "Conv2D(3 -> 8, 3x5, stride=2x2, padding=1x1) expected input of shape (N, 3, H, W) with "
        "H >= 1, W >= 3, got (2, 3, 4, 2)"
    )
    with pytest.raises(ValueError, match="expected input of shape") as info:
        cr.MaxPool2D(3, stride=2).forward(np.zeros((2, 4, 2, 9)))
    assert str(info.value) == (
        "MaxPool2D(3x3, stride=2x2) expected input of shape (N, C, H, W) with H, W >= 3, "
        "got (2, 4, 2, 9)"
    )


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: cr.Conv2D(0, 4, 3), ValueError, "Invalid in_channels: 0"),
        (lambda: cr.Conv2D(1, 4, (3, 3, 3)), ValueError, r"kernel_size must be an int or a pair"),
        (lambda: cr.Conv2D(1, 4, 3, padding=-1), ValueError, "Invalid padding: -1"),
        (lambda: cr.Conv2D(1, 4, 3, stride=0), ValueError, "Invalid stride: 0"),
        (lambda: cr.Conv2D(1, 4, 2.5), TypeError, "kernel_size must be an integer, got float 2.5"),
        (lambda: cr.Conv2D(1, 4, 3, init="zeros"), ValueError, "Unknown init 'zeros'"),
        (lambda: cr.MaxPool2D(0), ValueError, "Invalid pool_size: 0"),
        (lambda: cr.AvgPool2D(2, stride=(1, 0)), ValueError, "Invalid stride: 0"),
    ],
)
def test_bad_arguments_are_refused_by_name(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_the_output_sizes_follow_the_floor_rule():
    # H: floor((10 + 2 - 4) / 3) + 1 = 3; pooling: floor((7 - 3) / 2) + 1 = 3
    conv = cr.Conv2D(1, 1, 4, stride=3, padding=1)
    assert conv.forward(np.ones((1, 1, 10, 7))).shape == (1, 1, 3, 2)  # W: floor(5 / 3) + 1
    assert cr.MaxPool2D(3, stride=2).forward(np.ones((1, 1, 7, 8))).shape == (1, 1, 3, 3)
    assert cr.AvgPool2D(2).forward(np.ones((1, 1, 5, 5))).shape == (1, 1, 2, 2)


# -- the builder -----------------------------------------------------------------------------------
def test_the_cnn_builder_lays_out_the_layers_and_saves_as_itself(tmp_path):
    model = cr.CNN(
        (1, 28, 28), [6, 8], 10, padding=[2, 0], hidden=[16], dropout=0.5, rescale=1 / 255,
        augment=2, rng=0,
    )  # fmt: skip
    assert [type(layer).__name__ for layer in model.layers] == [
        "Rescaling", "RandomShift", "Conv2D", "ReLU", "MaxPool2D", "Conv2D", "ReLU", "MaxPool2D",
        "Flatten", "Dense", "ReLU", "Dropout", "Dense",
    ]  # fmt: skip
    assert model[9].in_features == 8 * 5 * 5  # 28 -> 28 -> 14 -> 10 -> 5
    x = np.random.default_rng(0).integers(0, 256, size=(3, 1, 28, 28)).astype(np.uint8)
    loaded = cr.load(cr.save(model, tmp_path / "cnn.npz"))
    assert type(loaded) is cr.CNN
    assert loaded.arguments() == model.arguments()
    assert loaded.predict_proba(x).tobytes() == model.predict_proba(x).tobytes()
    with pytest.raises(ValueError, match=r"leave no pixel after convolution"):
        cr.CNN((1, 8, 8), [4, 4, 4], 10)
    with pytest.raises(ValueError, match=r"padding has 1 values for 2 convolutions"):
        cr.CNN((1, 28, 28), [4, 4], 10, padding=[2])


def test_a_small_cnn_learns_shifted_bars_with_fit():
    """Horizontal against vertical bars anywhere in the image: what convolution is for."""
    rng = np.random.default_rng(0)
    n = 200
    x = np.zeros((n, 1, 8, 8), np.float32)
    y = rng.integers(0, 2, size=n)
    at = rng.integers(0, 8, size=n)
    for i in range(n):  # building the data set, not the model
        if y[i]:
            x[i, 0, :, at[i]] = 1.0
        else:
            x[i, 0, at[i], :] = 1.0
    model = cr.CNN((1, 8, 8), [4], 2, kernel_size=3, padding=1, hidden=[8], rng=0)
    history = cr.fit(model, x, y, loss="softmax_cross_entropy", optimizer=cr.Adam(0.01),
                     epochs=15, batch_size=20, seed=0)  # fmt: skip
    assert history.loss[-1] < 0.1 * history.loss[0]
    assert cr.evaluate(model, x, y)["accuracy"] == 1.0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_cnn_trains_alike_on_the_fast_path_and_the_reference(optimizer):
    """fit on the fast path (compiled steps; plain SGD inside the Dense layers' products, the
    convolutions' weights updated by the compiled step) and on the NumPy path: the same model to
    float32 rounding."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(48, 1, 10, 10)).astype(np.uint8)
    y = rng.integers(0, 3, size=48)
    models = []
    for numpy_only in (False, True):
        model = cr.CNN((1, 10, 10), [3, 4], 3, kernel_size=3, padding=[1, 0], hidden=[8],
                       rescale=1 / 255, rng=0)  # fmt: skip
        with cr.kernels.numpy_only() if numpy_only else cr.threads(1):
            cr.fit(model, x, y, loss="softmax_cross_entropy", optimizer=optimizer,
                   epochs=3, batch_size=16, seed=0)  # fmt: skip
        models.append(model)
    first = cr.CNN((1, 10, 10), [3, 4], 3, kernel_size=3, padding=[1, 0], hidden=[8],
                   rescale=1 / 255, rng=0)  # fmt: skip
    for key, p in models[1].params.items():
        np.testing.assert_allclose(models[0].params[key], p, rtol=1e-5, atol=1e-6, err_msg=key)
        assert not np.array_equal(p, first.params[key]), key  # every parameter was trained
