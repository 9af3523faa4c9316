"""Reading and writing IDX files, the format of MNIST and its drop-in relatives.

An IDX file is a big-endian header followed by the raw array::

    byte 0, 1       0x00 0x00
    byte 2          data type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
                    0x0E float64
    byte 3          number of dimensions, d
    4 * d bytes     the size of each dimension, uint32
    the data        row-major, each value big-endian

Files are often gzip-compressed; :func:`read_idx` recognises gzip by its magic bytes, whatever the
file is called. Nothing in a file is trusted: the header is checked against the data that really
follows before the array is built, and memory is only ever allocated for bytes actually read, so a
header claiming a terabyte fails as "truncated" instead of exhausting memory.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from ..io import atomic_write

__all__ = ["IDX_DTYPES", "MAX_NDIM", "read_idx", "write_idx"]

#: The IDX data-type codes and the (big-endian) dtypes they stand for.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
#: The format has no limit of its own; anything beyond this is taken for a damaged header.
MAX_NDIM = 8

_GZIP_MAGIC = b"\x1f\x8b"
# Read size for gzip streams. Kept small because a GzipFile read of n bytes allocates n bytes up
# front, however little data is left: a tiny file must not cost a megabyte.
_CHUNK = 2**16
# Deflate cannot expand its input more than 1032-fold, so a gzip file of s bytes holds at most
# 1032 * s bytes of IDX: a header declaring more is refused before anything is decompressed.
_MAX_GZIP_EXPANSION = 1032
# Native dtype -> IDX code, for writing.
_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, plain or gzip-compressed.

    Parameters
    ----------
    path : str or path-like
        The file. Compression is detected from the content (gzip magic bytes), not the name.

    Returns
    -------
    ndarray of the shape declared in the header, e.g. ``(60000, 28, 28)`` ``uint8`` for MNIST
        training images, in native byte order.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the path is not a regular file (a directory, a pipe), or the file is empty, is not
        IDX, has a bad or truncated header, holds fewer or more data bytes than the header
        declares, or is a truncated or corrupt gzip stream. The message names the file and what
        is wrong.
    """
    return _read_idx(Path(path))


class _Digest(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def _read_idx(path: Path, digest: _Digest | None = None) -> np.ndarray:
    """:func:`read_idx`, also feeding every (decompressed) byte of the file to ``digest``."""
    if path.exists() and not path.is_file():  # opening a named pipe would wait for a writer
        raise _bad(path, "not a regular file (a directory, pipe or device)")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise _bad(path, "the file is empty (0 bytes)")
        if f.read(2) != _GZIP_MAGIC:
            f.seek(0)
            return _read_stream(path, f, digest, available=size)
        f.seek(0)
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as stream:
                return _read_stream(
                    path, stream, digest, available=None, at_most=_MAX_GZIP_EXPANSION * size
                )
        except EOFError as exc:
            raise _bad(path, f"the gzip stream is truncated ({exc})") from exc
        except (gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise _bad(path, f"corrupt gzip stream ({exc})") from exc


def _read_stream(
    path: Path,
    stream: io.BufferedIOBase,
    digest: _Digest | None,
    available: int | None,
    at_most: int | None = None,
) -> np.ndarray:
    """Parse one IDX file from ``stream``; ``available`` is its size if known (plain files),
    ``at_most`` an upper bound on it otherwise (gzip files)."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise _bad(path, f"truncated header ({len(magic)} bytes, the magic number needs 4)")
    if magic[:2] != b"\0\0":
        raise _bad(path, f"bad magic number 0x{magic.hex()} (an IDX file starts with two 0 bytes)")
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} {d.name}" for c, d in IDX_DTYPES.items())
        raise _bad(path, f"unknown data type code 0x{code:02X} (known: {known})")
    if not 1 <= ndim <= MAX_NDIM:
        raise _bad(path, f"{ndim} dimensions declared (this reader accepts 1 to {MAX_NDIM})")
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise _bad(
            path,
            f"truncated header ({4 + len(sizes)} bytes; {ndim} dimensions need {4 + 4 * ndim})",
        )
    shape = struct.unpack(f">{ndim}I", sizes)
    dtype = IDX_DTYPES[code]
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow however large
    declared = f"the header declares shape {shape} of {dtype.name} ({nbytes} bytes of data)"

    if available is not None:
        # Plain file: the size settles it before anything is allocated.
        have = available - 4 - 4 * ndim
        if have < nbytes:
            raise _bad(path, f"truncated: {declared} but only {have} bytes follow")
        if have > nbytes:
            raise _bad(path, f"{have - nbytes} unexpected trailing bytes: {declared}")
        buffer = np.empty(nbytes, dtype=np.uint8)
        if stream.readinto(buffer.data) != nbytes:
            raise _bad(path, "the file shrank while it was being read")
        data = buffer.data
    else:
        if at_most is not None and 4 + 4 * ndim + nbytes > at_most:
            raise _bad(
                path,
                f"truncated: {declared} but a gzip file of this size decompresses to at most "
                f"{at_most} bytes",
            )
        # Compressed: the real length is only known by decompressing, so grow with what arrives.
        chunks = bytearray()
        while len(chunks) < nbytes:
            chunk = stream.read(min(_CHUNK, nbytes - len(chunks)))
            if not chunk:
                raise _bad(
                    path, f"truncated: {declared} but the data ends after {len(chunks)} bytes"
                )
            chunks += chunk
        extra = stream.read(_CHUNK)  # also makes gzip check its CRC and length trailer
        if extra:
            extra_count = len(extra) + sum(len(c) for c in iter(lambda: stream.read(_CHUNK), b""))
            raise _bad(path, f"{extra_count} unexpected trailing bytes: {declared}")
        data = memoryview(chunks)

    if digest is not None:
        digest.update(magic)
        digest.update(sizes)
        digest.update(data)
    try:
        array = np.frombuffer(data, dtype=dtype).reshape(shape)
    except ValueError as exc:  # e.g. (0, 2**32 - 1, 2**32 - 1, ...): too big even when empty
        raise _bad(path, f"{declared}, which NumPy cannot represent ({exc})") from exc
    if not dtype.isnative:
        # The buffer is ours and writable: swap in place rather than copy.
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array


def write_idx(
    path: str | os.PathLike[str], array: np.ndarray, compress: bool | None = None
) -> Path:
    """Write ``array`` as an IDX file, atomically.

    Parameters
    ----------
    path : str or path-like
        Where to write. An existing file is replaced only once the new one is complete.
    array : ndarray
        1 to ``MAX_NDIM`` dimensions, each below 2**32, of dtype ``uint8``, ``int8``, ``int16``,
        ``int32``, ``float32`` or ``float64`` (either byte order).
    compress : bool or None
        Gzip the file; ``None`` (default) compresses when ``path`` ends in ``.gz``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    TypeError
        If IDX has no code for the array's dtype (e.g. ``int64``, ``bool``): cast it first.
    ValueError
        If the array has no dimensions, more than ``MAX_NDIM``, or one of 2**32 or more.
    """
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        hint = " (labels: cast with .astype(np.uint8) or np.int32)" if native.kind in "iu" else ""
        supported = ", ".join(d.name for d in _CODES)
        raise TypeError(
            f"IDX cannot hold dtype {array.dtype} (supported: {supported}){hint}; "
            f"not writing {path}"
        )
    if not 1 <= array.ndim <= MAX_NDIM:
        raise ValueError(
            f"IDX arrays need 1 to {MAX_NDIM} dimensions, got shape {array.shape}; not writing "
            f"{path}"
        )
    if max(array.shape) >= 2**32:
        raise ValueError(f"IDX sizes are uint32, got shape {array.shape}; not writing {path}")
    if compress is None:
        compress = path.suffix == ".gz"

    header = bytes([0, 0, _CODES[native], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    raw = np.ascontiguousarray(array, dtype=native.newbyteorder(">")).reshape(-1).view(np.uint8)

    def fill(f: BinaryIO) -> None:
        if not compress:
            f.write(header)
            f.write(raw.data)
            return
        # filename="" and mtime=0: the temporary name and the clock stay out of the output, so
        # the same array always gives the same bytes.
        with gzip.GzipFile(filename="", fileobj=f, mode="wb", compresslevel=6, mtime=0) as gz:
            gz.write(header)
            gz.write(raw.data)

    return atomic_write(path, fill)


def _bad(path: Path, problem: str) -> ValueError:
    return ValueError(f"{path} is not a valid IDX file: {problem}")
