"""Crash safety: processes killed with SIGKILL while they save a model or download a data set.

Saving. A child process saves two different models over the same file, one after the other, in a
loop; the parent kills it with SIGKILL after a random delay, ``KILLS`` times. After every kill the
file must load (``cr.load``) as exactly one of the two models. The model is 2 MB, so a save takes
several milliseconds and kills land inside ``save``: the test counts the kills that left
``save``'s temporary file behind (proof of a kill mid-write) and requires some. The control writes
the same way but in place (``np.savez`` straight to the path): there the same check must fail at
least once, so the check can fail.

Downloading. A child process downloads a data set from a deliberately slow local server and is
killed mid-stream: the cache must not hold the file under its final name, and a new run must
complete and verify. Other faults (a stall mid-body, a body cut short without a Content-Length,
a 503 then a working mirror for every file) are checked in-process; tests/test_download.py covers
404, 503, wrong hash, truncation and connection resets on their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

import chainrule as cr
from _localhttp import LocalServer
from chainrule.datasets import DatasetSpec, DownloadError, fetch_idx_dataset

SCALE = max(1, settings.default.max_examples // 100)
KILLS = 120 * SCALE
CONTROL_KILLS = 20

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL (POSIX)"),
]


# -- killing a child at a random moment -----------------------------------------------------------
def run_and_kill(work: Callable[[int], None], fraction: float) -> None:
    """Fork a child that runs ``work``, and SIGKILL it at a random moment of its writes.

    The child reports how long its first write took; the kill comes ``fraction`` x 4 of that
    after it, so the moment falls among the next few writes however busy the machine is (a fixed
    delay lets a slow, descheduled child be killed before it ever finishes a write).
    """
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            work(write_end)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read(8)  # blocks until the first write is complete
    assert len(report) == 8, "the child failed before its first write completed"
    time.sleep(fraction * 4 * struct.unpack("d", report)[0])
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), "the child finished before it was killed: lengthen its work"
    assert os.WTERMSIG(status) == signal.SIGKILL


def saves_forever(write: Callable[[object, Path], None], versions, path: Path) -> Callable:
    """The child's work: write the two versions over ``path`` in turn, for up to 10 s, reporting
    the first write's duration on the pipe ``report``."""

    def work(report: int) -> None:
        start = time.monotonic()
        deadline = start + 10
        write(versions[0], path)
        os.write(report, struct.pack("d", time.monotonic() - start))
        i = 1
        while time.monotonic() < deadline:
            write(versions[i % 2], path)
            i += 1

    return work


def on_disk(path: Path, read: Callable[[Path], dict[str, np.ndarray]], candidates) -> str:
    """ "old" or "new" if the file holds exactly one of the two, else "corrupt"."""
    try:
        arrays = read(path)
    except Exception:
        return "corrupt"
    for name, arrays_of in zip(("old", "new"), candidates, strict=True):
        if arrays.keys() == arrays_of.keys() and all(
            np.array_equal(arrays[k], v) for k, v in arrays_of.items()
        ):
            return name
    return "corrupt"


@pytest.fixture(scope="module")
def models() -> tuple[cr.Sequential, cr.Sequential]:
    """Two different 2 MB models of the same architecture: a save takes several milliseconds."""

    def build(seed: int) -> cr.Sequential:
        return cr.Sequential(
            cr.Dense(512, 512, rng=seed), cr.ReLU(), cr.Dense(512, 512, rng=seed + 1)
        )

    return build(0), build(10)


def read_model(path: Path) -> dict[str, np.ndarray]:
    return cr.load(path).params


def in_place_savez(params: dict[str, np.ndarray], path: Path) -> None:
    """The unsafe way: truncate the target and write the archive straight into it."""
    with open(path, "wb") as f:
        np.savez(f, **{k.replace(".", "_"): v for k, v in params.items()})


def read_savez(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as f, np.load(f) as data:  # np.load(path) leaks the file on errors
        return {k.replace("_", "."): data[k] for k in data.files}


def test_a_killed_save_leaves_the_old_or_the_new_model(models, tmp_path):
    candidates = [m.params for m in models]
    path = tmp_path / "model.npz"
    cr.save(models[0], path)  # the existing model (and a warm-up before forking)
    rng = np.random.default_rng(0)
    outcomes = {"old": 0, "new": 0, "corrupt": 0}
    mid_write = 0
    for _ in range(KILLS):
        run_and_kill(saves_forever(cr.save, models, path), rng.uniform())
        leftovers = list(tmp_path.glob(".model.npz.*.tmp"))
        mid_write += bool(leftovers)
        for leftover in leftovers:  # what a killed save cannot clean up (see docs/errors.md)
            leftover.unlink()
        outcome = on_disk(path, read_model, candidates)
        outcomes[outcome] += 1
        assert outcome != "corrupt", f"a killed save left a corrupt model file: {outcomes}"
    print(f"{KILLS} kills during saves: {outcomes}, {mid_write} of them inside save()")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    # The kills did land inside save (not only between saves), and both models were seen.
    assert mid_write >= KILLS // 10, (mid_write, outcomes)
    assert outcomes["old"] > 0, outcomes
    assert outcomes["new"] > 0, outcomes


def test_control_a_killed_in_place_write_corrupts_the_file(models, tmp_path):
    """Without the temporary file and the rename, the same check fails: it can detect damage."""
    candidates = [m.params for m in models]
    path = tmp_path / "model.npz"
    in_place_savez(candidates[0], path)
    assert on_disk(path, read_savez, candidates) == "old"
    rng = np.random.default_rng(0)
    outcomes = {"old": 0, "new": 0, "corrupt": 0}
    for _ in range(CONTROL_KILLS):
        run_and_kill(saves_forever(in_place_savez, candidates, path), rng.uniform())
        outcomes[on_disk(path, read_savez, candidates)] += 1
    print(f"{CONTROL_KILLS} kills during in-place writes: {outcomes}")
    assert outcomes["corrupt"] >= 1, outcomes


# -- downloads ------------------------------------------------------------------------------------
class SlowServer(LocalServer):
    """Serves ``files`` under ``/<mode>/<name>``.

    Modes: ``good``; ``slow`` (4 KiB every 10 ms); ``stall`` (half the body, then nothing);
    ``nolength`` (no Content-Length, half the body, then close); ``busy`` (503).
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(files)
        self.sent = 0  # bytes of bodies written so far

    def respond(self, handler: BaseHTTPRequestHandler, mode: str, body: bytes | None) -> None:
        if body is None:
            handler.send_error(404)
            return
        if mode == "busy":
            handler.send_error(503)
            return
        handler.send_response(200)
        if mode != "nolength":
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        try:
            if mode == "slow":
                for start in range(0, len(body), 4096):
                    handler.wfile.write(body[start : start + 4096])
                    handler.wfile.flush()
                    self.sent += 4096
                    time.sleep(0.01)
            elif mode == "stall":
                handler.wfile.write(body[: len(body) // 2])
                handler.wfile.flush()
                time.sleep(1.0)
            elif mode == "nolength":
                handler.wfile.write(body[: len(body) // 2])
            else:
                handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed or gave up
        handler.close_connection = True


@pytest.fixture
def server() -> Iterator[SlowServer]:
    rng = np.random.default_rng(0)
    files = {
        "a.bin": rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes(),
        "b.bin": rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
    }
    with SlowServer(files) as srv:
        yield srv


def spec_for(server: SlowServer, mode: str) -> DatasetSpec:
    digests = {name: hashlib.sha256(body).hexdigest() for name, body in server.files.items()}
    return DatasetSpec(name="toy", files=digests, mirrors=(f"{server.url}/{mode}",))


def verified(cache: Path, server: SlowServer) -> bool:
    return all(
        (cache / name).is_file() and (cache / name).read_bytes() == body
        for name, body in server.files.items()
    )


DOWNLOADER = """
import json, sys
from chainrule.datasets import DatasetSpec, fetch_idx_dataset
spec = json.loads(sys.argv[1])
fetch_idx_dataset(DatasetSpec(name="toy", files=spec["files"], mirrors=tuple(spec["mirrors"])),
                  sys.argv[2])
"""


def test_sigkill_mid_download_leaves_no_partial_file(server, tmp_path):
    cache = tmp_path / "cache"
    spec = spec_for(server, "slow")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            DOWNLOADER,
            json.dumps({"files": dict(spec.files), "mirrors": list(spec.mirrors)}),
            str(cache),
        ],
    )
    try:
        # Wait until the first file is streaming into its temporary file, then kill.
        deadline = time.monotonic() + 30
        while server.sent < 100_000 or not list(cache.glob(".a.bin.*.tmp")):
            assert child.poll() is None, "the download ended before it could be killed"
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (cache / "a.bin").exists(), "a partial file is in the cache under its final name"
    assert not (cache / "b.bin").exists()

    fetch_idx_dataset(spec_for(server, "good"), cache)  # a new run completes and verifies
    assert verified(cache, server)
    # What the killed process could not remove: its temporary file, under a hidden name.
    assert {p.name for p in cache.iterdir()} - {"a.bin", "b.bin"} <= {
        p.name for p in cache.glob(".a.bin.*.tmp")
    }


def test_stall_mid_body_times_out_and_leaves_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    url = f"{server.url}/stall/a.bin"
    with pytest.raises(DownloadError, match=rf"{url}: timed out \(timeout=0.2 s\) after \d+ bytes"):
        fetch_idx_dataset(spec_for(server, "stall"), cache, timeout=0.2)
    assert list(cache.iterdir()) == []


def test_body_cut_short_without_content_length_fails_the_hash(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"sha256 mismatch: got [0-9a-f]{64}, expected") as info:
        fetch_idx_dataset(spec_for(server, "nolength"), cache)
    assert [url for url, _ in info.value.attempts] == [f"{server.url}/nolength/a.bin"]
    assert list(cache.iterdir()) == []


def test_503_then_a_working_mirror_for_every_file(server, tmp_path):
    cache = tmp_path / "cache"
    spec = spec_for(server, "good")
    fetch_idx_dataset(spec, cache, mirrors=[f"{server.url}/busy", f"{server.url}/good"])
    assert verified(cache, server)
    assert sorted(p.name for p in cache.iterdir()) == ["a.bin", "b.bin"]


def test_a_damaged_cached_file_is_not_replaced_by_an_unverified_one(server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "a.bin").write_bytes(b"damaged")
    with pytest.raises(DownloadError) as info:
        fetch_idx_dataset(
            spec_for(server, "good"),
            cache,
            mirrors=[f"{server.url}/nolength", f"{server.url}/busy"],
        )
    message = str(info.value)
    assert f"{server.url}/nolength/a.bin: sha256 mismatch" in message
    assert f"{server.url}/busy/a.bin: HTTP 503" in message
    assert (cache / "a.bin").read_bytes() == b"damaged"  # untouched, never a half download
    assert sorted(p.name for p in cache.iterdir()) == ["a.bin"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connection_then_a_working_mirror(server, tmp_path):
    cache = tmp_path / "cache"
    dead = f"http://127.0.0.1:{_closed_port()}/x"
    fetch_idx_dataset(spec_for(server, "good"), cache, mirrors=[dead, f"{server.url}/good"])
    assert verified(cache, server)
