"""Downloading other MNIST-format data sets, verified by sha256, into a local cache.

Only the standard library is used (``urllib.request``). Each file is streamed into a temporary file
beside its final place, hashed as it arrives, and renamed into the cache only once its sha256
matches the published one, so the cache never holds a partial or unverified file, whatever fails
and whenever the process is killed. Files already in the cache that verify are not fetched again.

The checksums in :data:`DATASETS` are the sha256 of each ``.gz`` file exactly as the mirrors serve
it (the values published by TensorFlow Datasets and torchvision, which agree), not of the
uncompressed content.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from .._checks import check_positive, describe
from .._version import __version__
from ..io import atomic_write

__all__ = ["DATASETS", "DatasetSpec", "DownloadError", "fetch_idx_dataset"]

_CHUNK = 2**20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_plain_name(name: object, what: str) -> None:
    """Names become paths in the cache: no separators, no ``..``, nothing empty."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise ValueError(f"{what} must be a plain file name, got {name!r}")


def _check_mirrors(mirrors: object) -> tuple[str, ...]:
    """Base URLs as a tuple, without trailing slashes (file names are joined with one)."""
    if isinstance(mirrors, str) or not isinstance(mirrors, Sequence):
        raise TypeError(f"mirrors must be a sequence of base URLs, got {describe(mirrors)}")
    if not mirrors or not all(isinstance(m, str) and "://" in m for m in mirrors):
        raise ValueError(
            f"mirrors must be one or more base URLs like 'https://host/dir', got {mirrors!r}"
        )
    return tuple(m.rstrip("/") for m in mirrors)


class DownloadError(OSError):
    """No mirror delivered a file that verifies.

    A subclass of ``OSError``, so code that handles I/O failures catches it. ``attempts`` holds a
    ``(url, reason)`` pair for every URL tried; the message lists them all.
    """

    def __init__(self, message: str, attempts: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.attempts = list(attempts)


@dataclass(frozen=True)
class DatasetSpec:
    """Where to download a data set and how to recognise its files.

    Parameters
    ----------
    name : str
        Names the cache subdirectory, e.g. ``"fashion-mnist"``.
    files : mapping of str to str
        File name -> lower-case hex sha256 of the file exactly as downloaded.
    mirrors : sequence of str
        Base URLs tried in order; a file's URL is ``base + "/" + name``.
    homepage, license : str
        For attribution; not used by the download.
    """

    name: str
    files: Mapping[str, str]
    mirrors: tuple[str, ...]
    homepage: str = ""
    license: str = ""

    def __post_init__(self) -> None:
        _check_plain_name(self.name, "dataset name")
        if not isinstance(self.files, Mapping) or not self.files:
            raise TypeError(
                f"files must be a non-empty mapping of name -> sha256, got {self.files!r}"
            )
        for file, digest in self.files.items():
            _check_plain_name(file, "file name")
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                raise ValueError(
                    f"sha256 for {file!r} must be 64 lower-case hex digits, got {digest!r}"
                )
        # Frozen: copy the caller's containers so the spec cannot change behind our back.
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))
        object.__setattr__(self, "mirrors", _check_mirrors(self.mirrors))


#: The data sets :func:`fetch_idx_dataset` knows by name. Each holds the four standard MNIST file
#: names (gzipped), so the downloaded directory can be given to ``load_mnist(path=...)``.
DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        # sha256 of the .gz files: tensorflow/datasets, tensorflow_datasets/url_checksums/
        # fashion_mnist.txt, equal to pytorch/vision's torchvision/prototype/datasets/_builtin/
        # mnist.py. Zalando's README also points at the repository's data/fashion directory.
        "fashion-mnist": DatasetSpec(
            name="fashion-mnist",
            files={
                "train-images-idx3-ubyte.gz": (
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
                ),
                "train-labels-idx1-ubyte.gz": (
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
                ),
                "t10k-images-idx3-ubyte.gz": (
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
                ),
                "t10k-labels-idx1-ubyte.gz": (
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
                ),
            },
            mirrors=(
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
                "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
                "data/fashion",
            ),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            license="MIT (Zalando SE)",
        ),
        # sha256 of the .gz files: tensorflow/datasets, tensorflow_datasets/url_checksums/
        # kmnist.txt, equal to pytorch/vision's torchvision/prototype/datasets/_builtin/mnist.py.
        "kmnist": DatasetSpec(
            name="kmnist",
            files={
                "train-images-idx3-ubyte.gz": (
                    "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"
                ),
                "train-labels-idx1-ubyte.gz": (
                    "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"
                ),
                "t10k-images-idx3-ubyte.gz": (
                    "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"
                ),
                "t10k-labels-idx1-ubyte.gz": (
                    "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"
                ),
            },
            mirrors=(
                "https://codh.rois.ac.jp/kmnist/dataset/kmnist",
                "http://codh.rois.ac.jp/kmnist/dataset/kmnist",
            ),
            homepage="https://github.com/rois-codh/kmnist",
            license='CC BY-SA 4.0; "KMNIST Dataset" (created by CODH), adapted from "Kuzushiji '
            'Dataset" (created by NIJL and others), doi:10.20676/00000341',
        ),
    }
)


def fetch_idx_dataset(
    dataset: str | DatasetSpec,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download a data set's files into a cache directory, unless already there and verified.

    Parameters
    ----------
    dataset : str or DatasetSpec
        A name in :data:`DATASETS` (``"fashion-mnist"``, ``"kmnist"``), or a spec of your own.
    cache_dir : str, path-like or None
        Where the files go; created if needed. Default: ``$CHAINRULE_CACHE/<name>``, else
        ``$XDG_CACHE_HOME/chainrule/<name>``, else ``~/.cache/chainrule/<name>``.
    mirrors : sequence of str or None
        Base URLs to try instead of the spec's own, in order.
    timeout : float
        Seconds to wait for a server to connect or send more data, per attempt.

    Returns
    -------
    Path
        The cache directory, holding every file of the spec, verified; for the built-in data sets
        it can be passed to ``load_mnist(path=...)``.

    Raises
    ------
    DownloadError
        If some file could not be had from any mirror; the message names each URL tried and why it
        failed (HTTP status, connection error, timeout, truncated body, sha256 mismatch). Files
        already fetched stay in the cache.
    ValueError
        If ``dataset`` is an unknown name.
    OSError
        If the cache directory cannot be created or written (this is not retried on other
        mirrors).
    """
    if isinstance(dataset, str):
        if dataset not in DATASETS:
            raise ValueError(f"Invalid dataset: {dataset!r} (known: {', '.join(DATASETS)})")
        spec = DATASETS[dataset]
    elif isinstance(dataset, DatasetSpec):
        spec = dataset
    else:
        raise TypeError(f"dataset must be a name or a DatasetSpec, got {describe(dataset)}")
    bases = list(_check_mirrors(spec.mirrors if mirrors is None else mirrors))
    timeout = check_positive(timeout, "timeout")
    directory = Path(cache_dir) if cache_dir is not None else _default_cache_dir(spec.name)
    directory.mkdir(parents=True, exist_ok=True)

    for file, sha256 in spec.files.items():
        target = directory / file
        if target.is_file() and _sha256_of(target) == sha256:
            continue
        attempts: list[tuple[str, str]] = []
        for base in bases:
            url = f"{base}/{file}"
            reason = _download(url, target, sha256, timeout)
            if reason is None:
                # Try the mirror that worked first for the remaining files.
                bases.remove(base)
                bases.insert(0, base)
                break
            attempts.append((url, reason))
        else:
            tried = "\n".join(f"  {url}: {reason}" for url, reason in attempts)
            raise DownloadError(
                f"could not download {file} of {spec.name!r} into {directory}; tried:\n{tried}",
                attempts,
            )
    return directory


class _AttemptFailed(Exception):
    """One URL did not deliver a verified file; the message says why."""


def _download(url: str, target: Path, sha256: str, timeout: float) -> str | None:
    """Fetch ``url`` into ``target`` if it verifies; return ``None``, or why it failed.

    Failures of the network or the server are returned for the caller to try the next mirror;
    failures of the local disk propagate.
    """
    request = urllib.request.Request(url, headers={"User-Agent": f"chainrule/{__version__}"})

    def fill(out: BinaryIO) -> None:
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the open error response
            raise _AttemptFailed(f"HTTP {exc.code} {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _AttemptFailed(_why(exc, timeout)) from exc
        with response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            digest, received = hashlib.sha256(), 0
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _AttemptFailed(
                        f"{_why(exc, timeout)} after {received} bytes"
                        + (f" of {expected}" if expected is not None else "")
                    ) from exc
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        # http.client does not complain when the body stops short of its Content-Length.
        if expected is not None and received < expected:
            raise _AttemptFailed(f"truncated: the body ended after {received} of {expected} bytes")
        if digest.hexdigest() != sha256:
            raise _AttemptFailed(
                f"sha256 mismatch: got {digest.hexdigest()}, expected {sha256} "
                f"({received} bytes received)"
            )

    try:
        atomic_write(target, fill)
    except _AttemptFailed as exc:
        return str(exc)
    return None


def _why(exc: BaseException, timeout: float) -> str:
    """A short reason for a network failure."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    elif isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return f"timed out (timeout={timeout:g} s)"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without a response"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _default_cache_dir(name: str) -> Path:
    if root := os.environ.get("CHAINRULE_CACHE"):
        return Path(root).expanduser() / name
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "chainrule" / name
    return Path.home() / ".cache" / "chainrule" / name
