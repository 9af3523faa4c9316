"""The IDX reader and writer, and load_mnist on the shipped data and on directories of IDX files."""

from __future__ import annotations

import gzip
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from chainrule.datasets import IDX_FILES, load_mnist, read_idx, write_idx
from chainrule.datasets import mnist as mnist_module

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
SHIPPED = Path(mnist_module.__file__).parent / "data" / "mnist"


def sample(dtype: type, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.normal(scale=1e3, size=shape).astype(dtype)


def idx_bytes(tmp_path: Path, array: np.ndarray) -> bytes:
    return write_idx(tmp_path / "source.idx", array).read_bytes()


def assert_bad_file(path: Path, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        read_idx(path)
    assert str(path) in str(info.value)


# -- read_idx / write_idx on valid files ----------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_round_trip(tmp_path, dtype, shape, name):
    array = sample(dtype, shape)
    path = write_idx(tmp_path / name, array)
    assert path == tmp_path / name
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\0\0")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.dtype.isnative
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_header_layout_is_mnist_compatible(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    raw = idx_bytes(tmp_path, array)
    assert raw == b"\0\0\x08\x02" + struct.pack(">II", 2, 3) + bytes(range(6))
    big = idx_bytes(tmp_path, np.array([1, -2], dtype=">i4"))
    assert big == b"\0\0\x0c\x01" + struct.pack(">I", 2) + struct.pack(">ii", 1, -2)
    assert idx_bytes(tmp_path, np.array([1, -2], dtype="<i4")) == big


def test_compression_is_detected_from_content_not_name(tmp_path):
    array = sample(np.int16, (4, 5))
    gz = write_idx(tmp_path / "looks-plain.idx", array, compress=True)
    plain = write_idx(tmp_path / "looks-gzipped.gz", array, compress=False)
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    assert plain.read_bytes()[:2] == b"\0\0"
    np.testing.assert_array_equal(read_idx(gz), array)
    np.testing.assert_array_equal(read_idx(plain), array)


def test_gzip_output_is_reproducible_and_empty_arrays_round_trip(tmp_path):
    array = sample(np.float32, (3, 2))
    first = write_idx(tmp_path / "a.gz", array).read_bytes()
    assert write_idx(tmp_path / "a.gz", array).read_bytes() == first
    for name in ("e.idx", "e.idx.gz"):
        empty = read_idx(write_idx(tmp_path / name, np.zeros((0, 28, 28), np.uint8)))
        assert empty.shape == (0, 28, 28)
        assert empty.dtype == np.uint8


@pytest.mark.parametrize(
    "array", [np.zeros(3, np.int64), np.zeros(3, bool), np.zeros(3, np.float16)], ids=str
)
def test_write_refuses_dtypes_idx_cannot_hold(tmp_path, array):
    with pytest.raises(TypeError, match=f"IDX cannot hold dtype {array.dtype}"):
        write_idx(tmp_path / "x.idx", array)
    assert not list(tmp_path.iterdir())


def test_write_refuses_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"1 to 8 dimensions, got shape \(\)"):
        write_idx(tmp_path / "x.idx", np.uint8(3))
    with pytest.raises(ValueError, match="1 to 8 dimensions"):
        write_idx(tmp_path / "x.idx", np.zeros((1,) * 9, np.uint8))


# -- read_idx on damaged files --------------------------------------------------------------------
def _corrupt(raw: bytes, kind: str) -> bytes:
    """A damaged copy of the IDX bytes ``raw`` (a 2x3x4 int16 array)."""
    if kind == "wrong magic":
        return b"\x01" + raw[1:]
    if kind == "unknown dtype":
        return raw[:2] + b"\x0a" + raw[3:]
    if kind == "zero dims":
        return raw[:3] + b"\x00" + raw[4:]
    if kind == "too many dims":
        return raw[:3] + b"\x09" + raw[4:]
    if kind == "short magic":
        return raw[:3]
    if kind == "short sizes":
        return raw[:10]
    if kind == "truncated data":
        return raw[:-1]
    if kind == "trailing bytes":
        return raw + b"\0\0\0"
    raise AssertionError(kind)


PROBLEMS = {
    "wrong magic": r"bad magic number 0x010",
    "unknown dtype": r"unknown data type code 0x0A",
    "zero dims": r"0 dimensions declared",
    "too many dims": r"9 dimensions declared",
    "short magic": r"truncated header \(3 bytes",
    "short sizes": r"truncated header \(10 bytes; 3 dimensions need 16\)",
    "truncated data": r"truncated: the header declares shape \(2, 3, 4\) of int16 \(48 bytes",
    "trailing bytes": r"3 unexpected trailing bytes",
}


@pytest.mark.parametrize("kind", list(PROBLEMS))
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_damaged_headers_and_sizes(tmp_path, kind, compressed):
    bad = _corrupt(idx_bytes(tmp_path, sample(np.int16, (2, 3, 4))), kind)
    path = tmp_path / "bad.idx"
    path.write_bytes(gzip.compress(bad, mtime=0) if compressed else bad)
    assert_bad_file(path, PROBLEMS[kind])


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.idx.gz"
    empty.write_bytes(b"")
    assert_bad_file(empty, r"empty \(0 bytes\)")
    missing = tmp_path / "nope.idx"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        read_idx(missing)


def test_truncated_and_corrupt_gzip(tmp_path):
    gz = write_idx(tmp_path / "good.gz", sample(np.uint8, (50, 40))).read_bytes()
    cases = {
        "cut.gz": gz[: len(gz) // 2],
        "magic-only.gz": gz[:2],
        "no-trailer.gz": gz[:-8],
        # Damage inside the deflate data, and in the CRC of the trailer.
        "flipped.gz": gz[:40] + bytes(b ^ 0xFF for b in gz[40:60]) + gz[60:],
        "bad-crc.gz": gz[:-8] + bytes(b ^ 0xFF for b in gz[-8:-4]) + gz[-4:],
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert_bad_file(path, r"gzip|truncated")


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_huge_declared_size_fails_fast_without_allocating(tmp_path, compressed):
    # 10**6 x 10**6 uint8 = 10**12 bytes declared, 100 bytes present.
    raw = b"\0\0\x08\x02" + struct.pack(">II", 10**6, 10**6) + bytes(100)
    path = tmp_path / "huge.idx"
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    start = time.perf_counter()
    assert_bad_file(path, r"truncated: the header declares shape \(1000000, 1000000\)")
    assert time.perf_counter() - start < 1.0


# -- load_mnist on the shipped data ---------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def mnist_raw():
    return load_mnist(normalize=False, flatten=False, one_hot=True)


def test_shipped_mnist_defaults(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert x_train.shape == (60000, 784)
    assert x_test.shape == (10000, 784)
    assert y_train.shape == (60000,)
    assert y_test.shape == (10000,)
    for x, y in mnist:
        assert x.dtype == np.float32
        assert x.min() == 0.0
        assert x.max() == 1.0
        assert y.dtype == np.int64
        np.testing.assert_array_equal(np.unique(y), np.arange(10))
    # The first training digits of MNIST.
    np.testing.assert_array_equal(y_train[:5], [5, 0, 4, 1, 9])


def test_shipped_mnist_raw_images_and_one_hot(mnist, mnist_raw):
    for (x, t), (x_norm, y) in zip(mnist_raw, mnist, strict=True):
        n = len(y)
        assert x.shape == (n, 1, 28, 28)
        assert x.dtype == np.uint8
        assert not x.flags.owndata  # a view of the array read from the file, not a copy
        np.testing.assert_array_equal(x[:100].reshape(100, 784) / np.float32(255), x_norm[:100])
        assert t.shape == (n, 10)
        assert t.dtype == np.float32
        np.testing.assert_array_equal(t.sum(axis=1), np.ones(n))
        np.testing.assert_array_equal(t.argmax(axis=1), y)


def test_readme_checksums_match_the_code():
    readme = (SHIPPED / "README.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"\| (\S+)\.gz \|.*\| ([0-9a-f]{64}) \|", readme))
    assert table == mnist_module.MNIST_SHA256


def test_shipped_file_failing_its_checksum_is_refused(monkeypatch):
    monkeypatch.setitem(mnist_module.MNIST_SHA256, "train-images-idx3-ubyte", "0" * 64)
    with pytest.raises(ValueError, match=r"shipped MNIST file .*train-images-idx3-ubyte\.gz is "):
        load_mnist()


# -- load_mnist on a directory --------------------------------------------------------------------
def write_set(directory: Path, n_train: int = 5, n_test: int = 3) -> dict[str, np.ndarray]:
    """A tiny MNIST-format set of 4x3 images with labels up to 6, mixing .gz and plain files."""
    rng = np.random.default_rng(1)
    arrays = {
        IDX_FILES[0]: rng.integers(0, 256, (n_train, 4, 3), dtype=np.uint8),
        IDX_FILES[1]: np.arange(n_train, dtype=np.uint8) % 7,
        IDX_FILES[2]: rng.integers(0, 256, (n_test, 4, 3), dtype=np.uint8),
        IDX_FILES[3]: np.array([6, 0, 2][:n_test], dtype=np.uint8),
    }
    directory.mkdir(exist_ok=True)
    for i, (name, array) in enumerate(arrays.items()):
        write_idx(directory / (f"{name}.gz" if i % 2 else name), array)
    return arrays


def test_load_directory(tmp_path):
    arrays = write_set(tmp_path)
    (x_train, y_train), (_, y_test) = load_mnist(path=tmp_path, dtype=np.float64)
    assert x_train.shape == (5, 12)
    assert x_train.dtype == np.float64
    np.testing.assert_array_equal(x_train, arrays[IDX_FILES[0]].reshape(5, 12) / 255)
    np.testing.assert_array_equal(y_train, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(y_test, [6, 0, 2])

    (x, t), (_, t_test) = load_mnist(
        path=str(tmp_path), normalize=False, flatten=False, one_hot=True
    )
    assert x.shape == (5, 1, 4, 3)
    assert x.dtype == np.uint8
    # K comes from the largest label in either split: 6 (in the test set) + 1.
    assert t.shape == (5, 7)
    assert t_test.shape == (3, 7)
    np.testing.assert_array_equal(t_test.argmax(axis=1), [6, 0, 2])


def test_load_directory_prefers_the_uncompressed_file(tmp_path):
    write_set(tmp_path)
    write_idx(tmp_path / f"{IDX_FILES[1]}", np.full(5, 9, np.uint8))  # beside the .gz copy
    (_, y_train), _ = load_mnist(path=tmp_path)
    np.testing.assert_array_equal(y_train, np.full(5, 9))


def test_missing_directory_or_file(tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(FileNotFoundError, match=r"absent does not exist.*t10k-labels-idx1-ubyte"):
        load_mnist(path=absent)
    write_set(tmp_path)
    (tmp_path / f"{IDX_FILES[3]}.gz").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\] of the four"
    ):
        load_mnist(path=tmp_path)
    with pytest.raises(NotADirectoryError, match="is a file"):
        load_mnist(path=tmp_path / IDX_FILES[0])


@pytest.mark.parametrize(
    ("name", "array", "problem"),
    [
        (IDX_FILES[0], np.zeros((5, 12), np.uint8), r"3-D images \(N, rows, cols\), got \(5, 12\)"),
        (IDX_FILES[0], np.zeros((5, 4, 3), np.float32), "uint8 pixels, got float32"),
        (IDX_FILES[1], np.zeros((5, 1), np.uint8), r"1-D labels \(N,\), got shape \(5, 1\)"),
        (IDX_FILES[1], np.zeros(5, np.float32), "integer labels, got float32"),
        (IDX_FILES[1], np.array([0, 1, -1, 2, 3], np.int8), r"negative label \(-1\)"),
        (IDX_FILES[1], np.zeros(4, np.uint8), "disagree: 5 images but 4 labels"),
    ],
)
def test_inconsistent_files(tmp_path, name, array, problem):
    write_set(tmp_path)
    for stale in tmp_path.glob(f"{name}*"):
        stale.unlink()
    write_idx(tmp_path / name, array)
    with pytest.raises(ValueError, match=problem):
        load_mnist(path=tmp_path)


def test_corrupted_copy_of_a_shipped_file(tmp_path):
    write_set(tmp_path, n_test=3)
    for stale in tmp_path.glob(f"{IDX_FILES[3]}*"):
        stale.unlink()
    target = tmp_path / f"{IDX_FILES[3]}.gz"
    shipped = (SHIPPED / target.name).read_bytes()
    target.write_bytes(shipped[: len(shipped) - 100])
    with pytest.raises(ValueError, match=re.escape(str(target))):
        load_mnist(path=tmp_path)


def test_dtype_must_be_floating():
    with pytest.raises(TypeError, match="floating dtype"):
        load_mnist(dtype=np.int32)
