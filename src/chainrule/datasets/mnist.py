"""MNIST, and any data set laid out like it, as NumPy arrays.

The package ships MNIST's four IDX files (gzip-compressed, see ``data/mnist/README.md`` for the
credit and licence); :func:`load_mnist` reads them, checks each against the sha256 of its
uncompressed content, and returns them in the layout of *Deep Learning from Scratch*.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

import numpy as np

from .idx import _read_idx

__all__ = ["IDX_FILES", "MNIST_SHA256", "load_mnist"]

#: The four standard IDX file names (training images and labels, test images and labels); a data
#: directory may hold each as it is or gzip-compressed with ``.gz`` appended.
IDX_FILES: tuple[str, str, str, str] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: sha256 of the UNCOMPRESSED content of the shipped files, as listed in data/mnist/README.md
#: (the .gz wrappers were remade, so their own checksums differ from the public mirrors').
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

Split = tuple[np.ndarray, np.ndarray]


def load_mnist(
    path: str | os.PathLike[str] | None = None,
    normalize: bool = True,
    flatten: bool = True,
    one_hot: bool = False,
    dtype: type[np.floating] | np.dtype | str = np.float32,
) -> tuple[Split, Split]:
    """Load MNIST (or an MNIST-format data set such as Fashion-MNIST or KMNIST).

    Parameters
    ----------
    path : str, path-like or None
        ``None`` (default) reads the copy of MNIST shipped with chainrule, verified by sha256.
        Otherwise a directory holding the four files named in :data:`IDX_FILES`, each either
        uncompressed or with ``.gz`` appended (the uncompressed one is read if both exist), e.g.
        the directory returned by :func:`chainrule.datasets.fetch_idx_dataset`.
    normalize : bool
        ``True``: images as ``dtype`` scaled to [0, 1] (``x / 255``). ``False``: the ``uint8``
        pixels as read, without a copy; a quarter of the float32 memory, for trainers that scale
        each batch.
    flatten : bool
        ``True``: images of shape ``(N, rows * cols)`` (``(N, 784)`` for MNIST). ``False``:
        ``(N, 1, rows, cols)``, one channel.
    one_hot : bool
        ``True``: labels of shape ``(N, K)`` in ``dtype`` with one 1 per row, where ``K`` is the
        largest label (in either split) plus one, 10 for MNIST. ``False``: labels of shape
        ``(N,)``, ``int64``.
    dtype : floating dtype
        Of normalised images and one-hot labels; default ``float32``.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        For MNIST, ``x_train`` is ``(60000, 784)`` and ``x_test`` ``(10000, 784)`` with the
        defaults.

    Raises
    ------
    FileNotFoundError
        If ``path`` or one of the four files in it is missing; the message lists what is expected.
    NotADirectoryError
        If ``path`` is a file.
    ValueError
        If a file is not valid IDX, the shipped data fail their checksum, or the files do not fit
        together: images must be 3-D ``uint8`` ``(N, rows, cols)``, labels 1-D non-negative
        integers, with the same ``N``.
    TypeError
        If ``dtype`` is not a floating dtype.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating dtype such as np.float32, got {dtype}")
    if path is None:
        arrays = _load_shipped()
        source = "the shipped MNIST"
    else:
        arrays = _load_directory(Path(path))
        source = str(path)

    x_train, y_train, x_test, y_test = arrays
    splits = []
    for (x, x_name), (y, y_name) in (
        ((x_train, IDX_FILES[0]), (y_train, IDX_FILES[1])),
        ((x_test, IDX_FILES[2]), (y_test, IDX_FILES[3])),
    ):
        _check_pair(x, x_name, y, y_name, source)
        splits.append((x, y))
    num_classes = max((int(y.max()) for _, y in splits if y.size), default=-1) + 1

    out = []
    for x, y in splits:
        if normalize:
            x = np.divide(x, 255, dtype=dtype)  # one allocation, straight into `dtype`
        n, rows, cols = x.shape
        x = x.reshape(n, rows * cols) if flatten else x.reshape(n, 1, rows, cols)
        if one_hot:
            t = np.zeros((n, num_classes), dtype=dtype)
            t[np.arange(n), y] = 1
        else:
            t = y.astype(np.int64)
        out.append((x, t))
    return out[0], out[1]


def _load_shipped() -> list[np.ndarray]:
    """Read the four packaged files, refusing any whose uncompressed sha256 is not the published
    one."""
    arrays = []
    package = resources.files("chainrule.datasets") / "data" / "mnist"
    for name in IDX_FILES:
        with resources.as_file(package / f"{name}.gz") as file:
            digest = hashlib.sha256()
            try:
                arrays.append(_read_idx(file, digest))
            except ValueError as exc:
                raise ValueError(
                    f"the shipped MNIST file {file} is corrupt (reinstall chainrule): {exc}"
                ) from exc
            if digest.hexdigest() != MNIST_SHA256[name]:
                raise ValueError(
                    f"the shipped MNIST file {file} is corrupt (reinstall chainrule): the sha256 "
                    f"of its content is {digest.hexdigest()}, expected {MNIST_SHA256[name]}"
                )
    return arrays


def _load_directory(directory: Path) -> list[np.ndarray]:
    """Read the four IDX files in ``directory``, each plain or gzipped."""
    expected = ", ".join(f"{name}[.gz]" for name in IDX_FILES)
    if not directory.exists():
        raise FileNotFoundError(
            f"data directory {directory} does not exist; expected a directory holding the four "
            f"IDX files {expected}"
        )
    if not directory.is_dir():
        raise NotADirectoryError(
            f"data path {directory} is a file; expected a directory holding the four IDX files "
            f"{expected}"
        )
    files, missing = [], []
    for name in IDX_FILES:
        found = [directory / n for n in (name, f"{name}.gz") if (directory / n).is_file()]
        if found:
            files.append(found[0])
        else:
            missing.append(f"{name}[.gz]")
    if len(missing) == len(IDX_FILES):
        raise FileNotFoundError(
            f"data directory {directory} holds none of the four IDX files {expected}"
        )
    if missing:
        raise FileNotFoundError(
            f"data directory {directory} lacks {', '.join(missing)} of the four IDX files "
            "(each plain or gzipped)"
        )
    return [_read_idx(file) for file in files]


def _check_pair(x: np.ndarray, x_name: str, y: np.ndarray, y_name: str, source: str) -> None:
    """Images and labels of one split must describe the same samples."""
    where = f"in {source}"
    if x.ndim != 3:
        raise ValueError(f"{x_name} {where} must hold 3-D images (N, rows, cols), got {x.shape}")
    if x.dtype != np.uint8:
        raise ValueError(f"{x_name} {where} must hold uint8 pixels, got {x.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{y_name} {where} must hold 1-D labels (N,), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{y_name} {where} must hold integer labels, got {y.dtype}")
    if y.size and int(y.min()) < 0:
        raise ValueError(f"{y_name} {where} holds a negative label ({int(y.min())})")
    if len(x) != len(y):
        raise ValueError(
            f"{x_name} and {y_name} {where} disagree: {len(x)} images but {len(y)} labels"
        )
