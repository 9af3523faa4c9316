"""Fuzzed file readers: ``read_idx`` and ``cr.load`` fed damaged and hostile files.

Every case must end in the documented outcome and nothing else:

* a result, or ``ValueError`` whose message names the file (``FileNotFoundError`` for a missing
  one); never another exception type, a crash or a hang (each case must finish within
  ``SECONDS`` seconds);
* no allocation beyond twice the file's size plus ``SLACK`` bytes, measured per case as the
  ``tracemalloc`` peak of the read (NumPy reports its array buffers to tracemalloc). For a gzip IDX
  file the bound is twice the larger of the file and its decompressed content, since a valid file
  holds more than it weighs;
* a file the reader accepts is read correctly: IDX files are compared with an independent
  decoder written here, and a model file whose bytes were damaged without being re-zipped must
  load equal to the original (the zip CRC protects every member) or not at all.

The cases are random mutations drawn by Hypothesis (bit flips, random bytes, truncation,
appended bytes, rewritten headers, re-compressed members, JSON metadata with subtrees replaced
by random values), systematic sweeps (every truncation point, every single-bit flip of the
headers) and hand-written hostile files (a pickle inside the .npz, a header claiming 10**12
elements, wrong magic, wrong dtype, zero length, ...). The counts are asserted, so they are known:
see the ``*_CASES`` constants and the Hypothesis settings.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import chainrule as cr
from chainrule.datasets import read_idx

SCALE = max(1, settings.default.max_examples // 100)
SLACK = 256 * 1024  # bytes: the readers' fixed buffers (a 64 KiB gzip read, zip headers, JSON)
SECONDS = 5.0
MAX = 2**32 - 1  # the largest IDX dimension

pytestmark = pytest.mark.slow


# -- the harness ----------------------------------------------------------------------------------
def attempt(
    read: Callable[[Path], object], path: Path, data: bytes, content_size: int = 0
) -> object | None:
    """Write ``data`` to ``path`` and read it back: the result, or None for a ValueError.

    Fails the test on any other outcome: another exception, a slow read, too much memory, or a
    ValueError that does not name the file.
    """
    path.write_bytes(data)
    tracemalloc.start()  # only around the read: tracing slows everything else down
    start = time.perf_counter()
    message = ""
    try:
        result: object | None = read(path)
    except ValueError as exc:
        result, message = None, str(exc)
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if result is None:
        assert str(path) in message, f"the message does not name the file: {message}"
    limit = 2 * max(len(data), content_size) + SLACK
    assert peak <= limit, (
        f"allocated {peak:,} bytes for a {len(data):,}-byte file (limit {limit:,})"
    )
    assert seconds < SECONDS, f"took {seconds:.1f} s"
    return result


# -- IDX: seeds and an independent decoder --------------------------------------------------------
IDX_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(IDX_CODES[code]).tobytes()


IDX_SEEDS = [
    idx_bytes(np.arange(math.prod(shape)).reshape(shape) % 100 - 7 * (code != 0x08), code)
    for code in IDX_CODES
    for shape in [(3,), (2, 3), (2, 2, 3), (0, 5)]
]


def decode_idx(raw: bytes) -> np.ndarray | None:
    """What a correct reader returns for the uncompressed IDX bytes ``raw`` (None: invalid)."""
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_CODES or not 1 <= raw[3] <= 8:
        return None
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        return None
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(IDX_CODES[raw[2]])
    data = raw[4 + 4 * ndim :]
    if len(data) != math.prod(shape) * dtype.itemsize:
        return None
    try:
        return np.frombuffer(data, dtype).reshape(shape)
    except ValueError:  # a shape NumPy cannot represent, e.g. (0, 2**32 - 1, 2**32 - 1, ...)
        return None


def gunzip(data: bytes) -> tuple[bytes | None, int]:
    """The content of a gzip file (None if it is damaged) and how many bytes decompress."""
    stream, out = gzip.GzipFile(fileobj=io.BytesIO(data)), bytearray()
    try:
        while chunk := stream.read(2**16):
            out += chunk
    except (OSError, EOFError, zlib.error):
        return None, len(out)
    return bytes(out), len(out)


def check_idx(path: Path, data: bytes) -> str:
    """Read a candidate IDX file and compare with the independent decoder; returns the outcome."""
    if data[:2] == b"\x1f\x8b":
        raw, produced = gunzip(data)
        expected = decode_idx(raw) if raw is not None else None
    else:
        produced, expected = 0, decode_idx(data)
    result = attempt(read_idx, path, data, produced)
    if expected is None:
        assert result is None, "an invalid IDX file was accepted"
        return "ValueError"
    assert isinstance(result, np.ndarray), "a valid IDX file was refused"
    assert result.dtype == expected.dtype.newbyteorder("=")
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, expected)
    return "read"


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> Path:
    """Read each seed once, so one-off lazy initialisations inside NumPy and the standard library
    are not counted as the first case's allocation."""
    path = tmp_path_factory.mktemp("warm") / "f"
    for seed in IDX_SEEDS:
        for data in (
            seed,
            gzip.compress(seed, mtime=0),
            seed[:-1],
            gzip.compress(seed[:-1], mtime=0),
        ):
            path.write_bytes(data)
            with contextlib.suppress(ValueError):
                read_idx(path)
    return path


@st.composite
def idx_files(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(IDX_SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "byte", "truncate", "append", "header"]))
        event(f"idx mutation: {kind}")
        if kind == "flip" and raw:
            raw[draw(st.integers(0, len(raw) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and raw:
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del raw[draw(st.integers(0, len(raw))) :]
        elif kind == "append":
            raw += draw(st.binary(min_size=1, max_size=16))
        elif kind == "header":  # a plausible-looking header over the old data
            code = draw(st.sampled_from([*IDX_CODES, 0x00, 0x0A, 0xFF]))
            dims = draw(
                st.lists(
                    st.sampled_from([0, 1, 2, 3, 5, 10**6, 10**9, 2**32 - 1]),
                    min_size=0,
                    max_size=9,
                )
            )
            body = raw[4 + 4 * raw[3] :] if len(raw) >= 4 else b""
            raw = bytearray(bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims))
            raw += body
    data = bytes(raw)
    if draw(st.booleans()):
        event("idx: gzip")
        data = bytearray(gzip.compress(data, mtime=0))
        damage = draw(st.sampled_from(["none", "flip", "truncate"]))
        if damage == "flip":
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif damage == "truncate":
            del data[draw(st.integers(0, len(data) - 1)) :]
        data = bytes(data)
    return data


@settings(max_examples=1500 * SCALE)
@given(data=idx_files())
def test_idx_reader_on_random_mutations(data, warm):
    event(f"idx outcome: {check_idx(warm.parent / 'case.idx', data)}")


IDX_SWEEP_CASES = 8000  # at least, per run (asserted below)


def test_idx_reader_on_every_truncation_and_single_bit_flip(warm):
    """Every prefix and every single-bit flip of each seed, plain and gzipped."""
    path = warm.parent / "sweep.idx"
    cases = 0
    for seed in IDX_SEEDS:
        for data in (seed, gzip.compress(seed, mtime=0)):
            for cut in range(len(data)):
                check_idx(path, data[:cut])
                cases += 1
            for bit in range(8 * min(len(data), 24 * SCALE)):  # the headers, and data after them
                flipped = bytearray(data)
                flipped[bit // 8] ^= 1 << (bit % 8)
                check_idx(path, bytes(flipped))
                cases += 1
    print(f"{cases} IDX truncations and bit flips, each ending as documented")
    assert cases >= IDX_SWEEP_CASES, cases


HOSTILE_IDX = dict(
    [
        ("empty", b""),
        ("one byte", b"\0"),
        ("wrong magic (PNG)", b"\x89PNG\r\n\x1a\n" + bytes(64)),
        ("wrong magic (text)", b"hello, world\n"),
        ("wrong dtype code", b"\0\0\x07\x01" + struct.pack(">I", 4) + bytes(4)),
        ("float64 code on uint8 data", b"\0\0\x0e\x01" + struct.pack(">I", 4) + bytes(4)),
        ("claims 10**12 uint8", b"\0\0\x08\x02" + struct.pack(">II", 10**6, 10**6) + bytes(99)),
        ("claims 2**64 float64", b"\0\0\x0e\x02" + struct.pack(">II", 2**32 - 1, 2**32 - 1)),
        (
            "claims 10**12 uint8, gzipped",
            gzip.compress(
                b"\0\0\x08\x02" + struct.pack(">II", 10**6, 10**6) + bytes(10**6), mtime=0
            ),
        ),
        ("empty gzip", gzip.compress(b"", mtime=0)),
        ("gzip of garbage", gzip.compress(b"\x01\x02\x03\x04", mtime=0)),
        ("gzip magic only", b"\x1f\x8b"),
        ("gzip then garbage", gzip.compress(IDX_SEEDS[1], mtime=0) + b"garbage"),
        ("zero-size, too big to represent", b"\0\0\x08\x03" + struct.pack(">3I", 0, MAX, MAX)),
    ]
)


@pytest.mark.parametrize("data", HOSTILE_IDX.values(), ids=HOSTILE_IDX.keys())
def test_idx_reader_on_hostile_files(data, warm):
    assert check_idx(warm.parent / "hostile.idx", data) == "ValueError"


def test_idx_reader_on_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent.idx")


READ_A_PIPE = """
import sys
from chainrule.datasets import read_idx
try:
    read_idx(sys.argv[1])
except ValueError as exc:
    print(exc)
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes")
def test_idx_reader_on_a_directory_or_a_named_pipe(tmp_path):
    with pytest.raises(ValueError, match="not a regular file"):
        read_idx(tmp_path)
    fifo = tmp_path / "pipe.idx"
    os.mkfifo(fifo)
    # In a child process with a timeout: opening a pipe with no writer would block forever.
    result = subprocess.run(
        [sys.executable, "-c", READ_A_PIPE, str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"{fifo} is not a valid IDX file: not a regular file" in result.stdout


# -- model files: the seed and helpers ------------------------------------------------------------
@pytest.fixture(scope="module")
def seed_model(tmp_path_factory) -> tuple[Path, cr.Checkpoint, dict[str, bytes]]:
    """A small model with every kind of member: Dense, BatchNorm buffers, Dropout generator
    state, Adam state, a history and user metadata."""
    rng = np.random.default_rng(0)
    model = cr.MLP(6, [5], 3, dropout=0.2, batchnorm=True, rng=0)
    optimizer = cr.Adam(0.01)
    history = cr.fit(
        model,
        rng.normal(size=(32, 6)),
        rng.integers(0, 3, 32),
        loss=cr.SoftmaxCrossEntropy(),
        optimizer=optimizer,
        epochs=2,
        batch_size=8,
        seed=0,
    )
    path = tmp_path_factory.mktemp("seed") / "model.npz"
    cr.save(model, path, optimizer=optimizer, history=history, metadata={"note": "seed"})
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    ckpt = cr.load_checkpoint(path)
    for data in (path.read_bytes()[:-1], b"", b"PK"):  # warm-up, as for IDX
        with contextlib.suppress(AssertionError):
            attempt(cr.load_checkpoint, path.parent / "warm.npz", data)
    return path, ckpt, members


def rezip(members: dict[str, bytes], compress: dict[str, int] | None = None) -> bytes:
    """A zip of ``members`` with correct CRCs (mutations of the content, not of the container)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members.items():
            method = (compress or {}).get(name, zipfile.ZIP_STORED)
            zf.writestr(zipfile.ZipInfo(name), content, compress_type=method)
    return buffer.getvalue()


def npy_header(fields: dict) -> bytes:
    """A version 1.0 ``.npy`` header holding ``fields``, whatever they say."""
    text = repr(fields).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


NPY_DESCRS = ["<f4", ">f4", "<f8", "<f2", "<i4", "|u1", "|O", "<U3", "|V4", "<c8"]
NPY_SHAPES = [(0,), (-1,), (-2, -2), (10**12,), (2**62, 4), (2**31, 2**31, 2**31)]
HUGE_NPY = npy_header({"descr": "<f4", "fortran_order": False, "shape": (10**12,)}) + bytes(16)


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def same_as_seed(ckpt: cr.Checkpoint, seed: cr.Checkpoint) -> bool:
    ours, theirs = ckpt.model, seed.model
    return (
        ours.config() == theirs.config()
        and all(np.array_equal(v, theirs.params[k]) for k, v in ours.params.items())
        and all(np.array_equal(v, theirs.buffers[k]) for k, v in ours.buffers.items())
        and ckpt.history == seed.history
    )


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.sampled_from([0, 1, -1, 7, 2**31, 2**63, 10**12, 10**30, -(10**6)])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(
        ["", "Dense", "ReLU", "Nope", "float16", "float64", "int32", "O", "V99999999999", "adam"]
    )
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["type", "config", "in_features", "x"]), inner, max_size=3
        )
        | st.fixed_dictionaries(
            {
                "type": st.sampled_from(["Dense", "BatchNorm", "Dropout", "Unknown"]),
                "config": st.fixed_dictionaries(
                    {
                        "in_features": st.sampled_from([6, 5, 0, 10**6, 10**12]),
                        "out_features": st.sampled_from([5, 4, 3, 10**6, 10**12]),
                    }
                ),
            }
        )
    ),
    max_leaves=6,
)


def _json_paths(value: object, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _json_paths(v, (*prefix, i))


@st.composite
def model_files(draw: st.DrawFn, members: dict[str, bytes]) -> tuple[bytes, bool]:
    """A damaged model file, and whether it was damaged below the zip (its CRCs still hold)."""
    members = dict(members)
    kind = draw(
        st.sampled_from(
            ["json", "json-bytes", "npy-header", "npy-bytes", "members", "compression", "raw"]
        )
    )
    event(f"model mutation: {kind}")
    if kind == "json":  # replace or delete a random subtree of the metadata
        meta = json.loads(members["metadata.json"])
        paths = list(_json_paths(meta))[1:]
        for _ in range(draw(st.integers(1, 3))):
            *parent_path, key = draw(st.sampled_from(paths))
            parent = meta
            try:
                for k in parent_path:
                    parent = parent[k]
                if isinstance(parent, dict) and draw(st.booleans()):
                    parent.pop(key, None)
                else:
                    parent[key] = draw(JSON_VALUES)
            except (KeyError, IndexError, TypeError):
                pass  # an earlier replacement removed this path
        members["metadata.json"] = json.dumps(meta).encode()
    elif kind == "json-bytes":
        text = bytearray(members["metadata.json"])
        for _ in range(draw(st.integers(1, 4))):
            text[draw(st.integers(0, len(text) - 1))] = draw(st.integers(0, 255))
        members["metadata.json"] = bytes(text)
    elif kind in ("npy-header", "npy-bytes"):
        name = draw(st.sampled_from(sorted(m for m in members if m.endswith(".npy"))))
        old = np.load(io.BytesIO(members[name]))
        if kind == "npy-header":
            descr = draw(st.sampled_from(NPY_DESCRS))
            shapes = [old.shape, old.shape[::-1], (old.size,), *NPY_SHAPES]
            fields = {"descr": descr, "fortran_order": draw(st.booleans())}
            header = npy_header({**fields, "shape": draw(st.sampled_from(shapes))})
            members[name] = header + old.tobytes()
        else:
            content = bytearray(members[name])
            if draw(st.booleans()):
                del content[draw(st.integers(0, len(content) - 1)) :]
            else:
                content[draw(st.integers(0, len(content) - 1))] = draw(st.integers(0, 255))
            members[name] = bytes(content)
    elif kind == "members":
        name = draw(st.sampled_from(sorted(members)))
        action = draw(st.sampled_from(["drop", "rename", "duplicate", "add"]))
        if action == "drop":
            del members[name]
        elif action == "rename":
            suffix = draw(st.sampled_from(["", "x", "/"]))
            members[name.replace("0", "9", 1) + suffix] = members.pop(name)
        elif action == "duplicate":
            members["params/extra.npy"] = members[name]
        else:
            members[draw(st.sampled_from(["../evil.npy", "params/0.W.npy/", "Z" * 300]))] = b"x"
    elif kind == "compression":
        name = draw(st.sampled_from(sorted(members)))
        method = draw(st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]))
        return rezip(members, {name: method}), False
    else:  # raw damage to the archive bytes: flips and truncation, CRCs untouched
        data = bytearray(rezip(members))
        for _ in range(draw(st.integers(1, 3))):
            if not data:
                break
            if draw(st.booleans()):
                data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
            else:
                del data[draw(st.integers(0, len(data) - 1)) :]
        return bytes(data), True
    return rezip(members), False


def check_model(path: Path, data: bytes, seed: cr.Checkpoint, raw: bool) -> str:
    result = attempt(cr.load_checkpoint, path, data)
    if result is None:
        return "ValueError"
    assert isinstance(result, cr.Checkpoint)
    if raw:  # damaged bytes under intact CRCs: either refused or exactly the original
        assert same_as_seed(result, seed), "a damaged file loaded as a different model"
    return "loaded"


@settings(max_examples=1000 * SCALE)
@given(data=st.data())
def test_load_on_random_mutations(data, seed_model):
    path, seed, members = seed_model
    content, raw = data.draw(model_files(members), label="file")
    event(f"model outcome: {check_model(path.parent / 'case.npz', content, seed, raw)}")


MODEL_SWEEP_CASES = 2000  # at least, per run (asserted below)


def test_load_on_truncations_and_bit_flips(seed_model):
    """Every 7th truncation point (every one in the long profile), and every bit of the regions
    that say where and how large things are: the first local header and .npy header, the first
    central-directory entry and the end-of-central-directory record (all of the central directory
    in the long profile)."""
    path, seed, _ = seed_model
    data = path.read_bytes()
    case = path.parent / "sweep.npz"
    cases = 0
    for cut in range(0, len(data), 7 if SCALE == 1 else 1):
        check_model(case, data[:cut], seed, raw=True)
        cases += 1
    directory, end = data.find(b"PK\x01\x02"), data.rfind(b"PK\x05\x06")
    entry = 46 + struct.unpack("<H", data[directory + 28 : directory + 30])[0]
    last = len(data) if SCALE > 1 else directory + entry
    for position in [*range(0, 96), *range(directory, last), *range(end, len(data))]:
        for bit in range(8):
            flipped = bytearray(data)
            flipped[position] ^= 1 << bit
            check_model(case, bytes(flipped), seed, raw=True)
            cases += 1
    print(f"{cases} model-file truncations and bit flips, each ending as documented")
    assert cases >= MODEL_SWEEP_CASES, cases


class _Payload:
    """Unpickling this creates a file: the proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def hostile_models(members: dict[str, bytes], marker: Path) -> dict[str, bytes]:
    meta = json.loads(members["metadata.json"])

    def with_meta(**changes: object) -> bytes:
        return rezip({**members, "metadata.json": json.dumps({**meta, **changes}).encode()})

    layers = meta["layers"]
    pickled = np.array([_Payload(marker)], dtype=object)
    dense = next(m for m in members if m.endswith("W.npy"))
    return {
        "empty": b"",
        "not a zip": b"\x89PNG\r\n\x1a\n" + bytes(100),
        "a gzip file": gzip.compress(b"hello", mtime=0),
        "zip with no member": rezip({}),
        "plain np.savez": _savez(),
        "pickle as a parameter": rezip({**members, dense: npy(pickled, allow_pickle=True)}),
        "pickle as metadata": rezip({**members, "metadata.json": pickle.dumps(_Payload(marker))}),
        "pickle beside the arrays": rezip({**members, "x.pkl": pickle.dumps(_Payload(marker))}),
        "wrong shapes in the metadata": with_meta(
            layers=[
                {**layers[0], "config": {**layers[0]["config"], "out_features": 7}},
                *layers[1:],
            ]
        ),
        "unknown layer name": with_meta(layers=[{"type": "Conv2D", "config": {}}, *layers[1:]]),
        "layer that is not a dict": with_meta(layers=["Dense", *layers[1:]]),
        "10**12 parameters declared": with_meta(
            layers=[{"type": "Dense", "config": {"in_features": 10**6, "out_features": 10**6}}]
        ),
        "10**12 elements in a .npy header": rezip({**members, dense: HUGE_NPY}),
        "wrong dtype (float64 in a float32 model)": rezip(
            {**members, dense: npy(np.load(io.BytesIO(members[dense])).astype(np.float64))}
        ),
        "integer dtype in the metadata": with_meta(dtype="int32"),
        "NaN parameter": rezip(
            {**members, dense: npy(np.full_like(np.load(io.BytesIO(members[dense])), np.nan))}
        ),
        "format from the future": with_meta(format_version=99),
        "not our format": with_meta(format="something-else"),
        "history that is a string": with_meta(history="epoch"),
        "history of strings": with_meta(history={"epoch": ["a"]}),
        "extra state that is a list": with_meta(extra_state=[1, 2]),
        "optimizer of another kind": with_meta(optimizer={**meta["optimizer"], "type": "sgd"}),
        "a 5000-digit integer": rezip(
            {**members, "metadata.json": b'{"format_version": ' + b"1" * 5000 + b"}"}
        ),
        "deeply nested JSON": rezip({**members, "metadata.json": b"[" * 100_000 + b"]" * 100_000}),
        "metadata compressed with LZMA": rezip(members, {"metadata.json": zipfile.ZIP_LZMA}),
        "array compressed with deflate": rezip(members, {dense: zipfile.ZIP_DEFLATED}),
    }


def _savez() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, W=np.zeros((2, 2)))
    return buffer.getvalue()


def test_load_on_hostile_files(seed_model, tmp_path):
    _, seed, members = seed_model
    marker = tmp_path / "pickle-was-executed"
    cases = hostile_models(members, marker)
    for name, data in cases.items():
        assert check_model(tmp_path / "hostile.npz", data, seed, raw=False) == "ValueError", name
    assert not marker.exists(), "a pickle inside a model file was unpickled"


def test_load_on_a_missing_file_or_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        cr.load(tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        cr.load(tmp_path)


def test_huge_declared_member_size_is_refused_before_reading(seed_model, tmp_path):
    """A central directory that claims a member of 2**40 bytes: refused from the sizes alone."""
    path, seed, _ = seed_model
    data = bytearray(path.read_bytes())
    directory = data.find(b"PK\x01\x02")
    # Central directory entry: compressed size at +20, uncompressed size at +24 (uint32 each).
    data[directory + 20 : directory + 28] = struct.pack("<II", 2**32 - 2, 2**32 - 2)
    assert check_model(tmp_path / "huge.npz", bytes(data), seed, raw=True) == "ValueError"
