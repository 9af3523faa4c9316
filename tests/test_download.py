"""fetch_idx_dataset against a local HTTP server that succeeds, fails and misbehaves on demand."""

from __future__ import annotations

import hashlib
import socket
import struct
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest

from _localhttp import LocalServer
from chainrule.datasets import (
    DATASETS,
    IDX_FILES,
    DatasetSpec,
    DownloadError,
    fetch_idx_dataset,
    load_mnist,
    write_idx,
)


class Server(LocalServer):
    """The data set's files under ``/<mode>/<name>``; the mode says how to (mis)behave."""

    def respond(self, handler: BaseHTTPRequestHandler, mode: str, body: bytes | None) -> None:
        if body is None or mode == "missing":
            handler.send_error(404)
        elif mode == "busy":
            handler.send_error(503)
        elif mode == "slow":
            time.sleep(0.3)  # the client gives up after 0.1 s; answer nothing
            handler.close_connection = True
        else:
            if mode == "wrong":
                body = bytes(b ^ 1 for b in body)
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            if mode in ("short", "reset"):
                handler.wfile.write(body[: len(body) // 2])
                handler.close_connection = True
                if mode == "reset":
                    # Linger 0: closing sends RST instead of FIN.
                    linger = struct.pack("ii", 1, 0)
                    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    handler.connection.close()
            else:
                handler.wfile.write(body)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    """A tiny MNIST-format data set, the four standard files gzipped."""
    directory = tmp_path_factory.mktemp("source")
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 20, dtype=np.uint8),
        rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 5, dtype=np.uint8),
    ]
    return {
        f"{name}.gz": write_idx(directory / f"{name}.gz", array).read_bytes()
        for name, array in zip(IDX_FILES, arrays, strict=True)
    }


@pytest.fixture
def server(files) -> Iterator[Server]:
    with Server(files) as srv:
        yield srv


@pytest.fixture
def spec(files, server) -> DatasetSpec:
    digests = {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}
    return DatasetSpec(name="toy", files=digests, mirrors=(f"{server.url}/good",))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_verify_and_reuse(tmp_path, files, server, spec):
    cache = tmp_path / "cache"
    assert fetch_idx_dataset(spec, cache) == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)
    for name, body in files.items():
        assert (cache / name).read_bytes() == body
    assert server.count("good") == 4
    (x_train, _), (x_test, _) = load_mnist(path=cache)
    assert x_train.shape == (20, 784)
    assert x_test.shape == (5, 784)

    # Verified files are not fetched again; a damaged one is replaced.
    fetch_idx_dataset(spec, cache)
    assert server.count("good") == 4
    damaged = cache / f"{IDX_FILES[1]}.gz"
    damaged.write_bytes(b"junk")
    fetch_idx_dataset(spec, cache)
    assert server.count("good") == 5
    assert damaged.read_bytes() == files[damaged.name]


def test_default_cache_dir_from_environment(tmp_path, monkeypatch, spec):
    monkeypatch.setenv("CHAINRULE_CACHE", str(tmp_path))
    assert fetch_idx_dataset(spec) == tmp_path / "toy"
    assert len(list((tmp_path / "toy").iterdir())) == 4


def test_wrong_hash_leaves_nothing_in_the_cache(tmp_path, server, spec):
    cache = tmp_path / "cache"
    url = f"{server.url}/wrong"
    with pytest.raises(DownloadError, match=r"sha256 mismatch: got [0-9a-f]{64}, expected") as info:
        fetch_idx_dataset(spec, cache, mirrors=[url])
    assert f"{url}/train-images-idx3-ubyte.gz" in str(info.value)
    assert list(cache.iterdir()) == []  # no partial file, no temporary file


def test_404_on_first_mirror_then_success(tmp_path, server, spec):
    cache = tmp_path / "cache"
    fetch_idx_dataset(spec, cache, mirrors=[f"{server.url}/missing", f"{server.url}/good/"])
    assert len(list(cache.iterdir())) == 4
    # Once the second mirror has delivered, the rest is asked of it first.
    assert server.count("missing") == 1
    assert server.count("good") == 4


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("missing", "HTTP 404 Not Found"),
        ("busy", "HTTP 503 Service Unavailable"),
        ("short", r"truncated: the body ended after \d+ of \d+ bytes"),
        ("reset", r"connection reset by the server"),
    ],
)
def test_failures_are_reported_and_leave_no_file(tmp_path, server, spec, mode, reason):
    cache = tmp_path / "cache"
    url = f"{server.url}/{mode}/train-images-idx3-ubyte.gz"
    with pytest.raises(DownloadError, match=f"{url}: {reason}") as info:
        fetch_idx_dataset(spec, cache, mirrors=[f"{server.url}/{mode}"])
    assert [u for u, _ in info.value.attempts] == [url]
    assert list(cache.iterdir()) == []


def test_timeout(tmp_path, server, spec):
    with pytest.raises(DownloadError, match=r"timed out \(timeout=0.1 s\)"):
        fetch_idx_dataset(spec, tmp_path, mirrors=[f"{server.url}/slow"], timeout=0.1)


def test_message_lists_every_url_tried(tmp_path, server, spec):
    modes = ["missing", "busy", "wrong", "short", "reset"]
    mirrors = [f"{server.url}/{m}" for m in modes] + [f"http://127.0.0.1:{closed_port()}/x"]
    with pytest.raises(DownloadError) as info:
        fetch_idx_dataset(spec, tmp_path / "cache", mirrors=mirrors)
    error = info.value
    assert isinstance(error, OSError)
    message = str(error)
    assert "could not download train-images-idx3-ubyte.gz of 'toy'" in message
    urls = [f"{m}/train-images-idx3-ubyte.gz" for m in mirrors]
    assert [u for u, _ in error.attempts] == urls
    for url in urls:
        assert url in message
    for reason in ("HTTP 404", "HTTP 503", "sha256 mismatch", "truncated", "reset", "refused"):
        assert reason in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_registry_and_spec_validation(spec):
    assert set(DATASETS) == {"fashion-mnist", "kmnist"}
    for name, entry in DATASETS.items():
        assert entry.name == name
        assert sorted(entry.files) == sorted(f"{f}.gz" for f in IDX_FILES)
        assert entry.mirrors
    with pytest.raises(ValueError, match="Invalid dataset: 'mnist-nope'"):
        fetch_idx_dataset("mnist-nope")
    with pytest.raises(ValueError, match=r"plain file name, got '\.\./evil'"):
        DatasetSpec(name="x", files={"../evil": "0" * 64}, mirrors=("http://h",))
    with pytest.raises(ValueError, match="64 lower-case hex digits"):
        DatasetSpec(name="x", files={"a.gz": "abc"}, mirrors=("http://h",))
    with pytest.raises(TypeError, match="sequence of base URLs"):
        fetch_idx_dataset(spec, mirrors="http://one-string-not-a-list")
