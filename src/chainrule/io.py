"""Saving and loading models: one ``.npz`` (zip) file, no pickle, written atomically.

Layout of the archive (arrays uncompressed, each an ``.npy`` member)::

    metadata.json           format, versions, dtype, architecture, optimizer, history, rng states
    params/<name>.npy       e.g. params/0.W.npy, params/0.b.npy
    buffers/<name>.npy      BatchNorm running statistics
    optimizer/<param>/<slot>.npy

Loading trusts nothing in the file: every ``.npy`` header is checked against the bytes the member
really holds before anything is allocated, object arrays are refused, and the arrays must match the
architecture in the metadata exactly. A bad file raises ``ValueError`` naming the file and the
problem. Saving writes a temporary file in the target directory, flushes it to disk and renames it
over the target (``os.replace`` is atomic), so the target is always either the complete old model or
the complete new one, even if the process is killed half-way.
"""

from __future__ import annotations

import errno
import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ._checks import check_finite
from ._version import __version__
from .history import History
from .layers import Layer
from .network import MODELS, Sequential, resolve_layers
from .optim import OPTIMIZERS, Optimizer

__all__ = ["FORMAT", "Checkpoint", "atomic_write", "load", "load_checkpoint", "save"]

#: Identifies chainrule model files; bump ``FORMAT_VERSION`` on incompatible changes, and teach
#: :func:`_upgrade` to read the old one.
FORMAT = "chainrule-model"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_METADATA = "metadata.json"
_ARRAY_GROUPS = ("params", "buffers", "optimizer")
_V1_RESCALING = {"type": "Rescaling", "config": {"scale": 1 / 255, "offset": 0.0}}
_MAX_METADATA_BYTES = 16 * 2**20


@dataclass
class Checkpoint:
    """A saved model with what is needed to resume its training."""

    model: Sequential
    optimizer: Optimizer | None = None
    history: History | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def next_epoch(self) -> int:
        """The ``initial_epoch`` that continues training where it stopped."""
        return self.history.epoch[-1] + 1 if self.history else 0


def save(
    model: Sequential,
    path: str | os.PathLike[str],
    *,
    optimizer: Optimizer | None = None,
    history: History | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (and optionally its optimizer state and history) to ``path`` atomically.

    Parameters
    ----------
    model : Sequential
    path : path-like
        Target file, conventionally ``*.npz``; replaced only once the new file is complete.
    optimizer : Optimizer, optional
        Saved with its state (moments, step count) so training resumes exactly.
    history : History, optional
    metadata : dict, optional
        Extra JSON-serialisable information kept with the model.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        If a parameter is NaN or infinite (a diverged model never replaces a saved one).
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a chainrule Sequential, got {type(model).__name__}")
    dtype = model.dtype  # refuses a network of mixed dtypes before anything is written
    if optimizer is not None:
        optimizer.check_params(model.params)  # a file load() would refuse is never written
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for name, value in model.params.items():
        check_finite(value, f"parameter {name}")
        arrays[f"params/{name}"] = value
    for name, value in model.buffers.items():
        check_finite(value, f"buffer {name}")
        arrays[f"buffers/{name}"] = value
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "chainrule_version": __version__,
        "dtype": dtype.name,
        "model": {"type": type(model).__name__, "arguments": model.arguments()},
        "layers": model.config(),
        "extra_state": {
            str(i): state
            for i, layer in enumerate(model.layers)
            if (state := layer.get_extra_state())
        },
        "optimizer": None,
        "history": history.to_dict() if history is not None else None,
        "metadata": metadata or {},
    }
    if optimizer is not None:
        state = optimizer.state_dict()
        meta["optimizer"] = {k: state[k] for k in ("type", "config", "iterations", "initial_lr")}
        meta["optimizer"]["slots"] = {name: sorted(slots) for name, slots in state["state"].items()}
        for name, slots in state["state"].items():
            for slot, value in slots.items():
                # load() refuses non-finite arrays: never write a checkpoint it cannot read.
                check_finite(value, f"optimizer state {name}/{slot}")
                arrays[f"optimizer/{name}/{slot}"] = value
    try:
        meta_bytes = json.dumps(meta, indent=1, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable and finite: {exc}") from exc

    def write(f: BinaryIO) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(_METADATA, meta_bytes)
            for key, value in arrays.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(value))

    atomic_write(path, write)
    return path


def load(
    path: str | os.PathLike[str], *, custom_layers: dict[str, type[Layer]] | None = None
) -> Sequential:
    """Load a model saved by :func:`save`; it predicts as the saved one did, and is of the class
    that was saved (an :class:`~chainrule.MLP` stays an MLP).

    Parameters
    ----------
    path : path-like
    custom_layers : dict of str to Layer subclass, optional
        A user's own layer classes by the names they were saved under (as Keras's
        ``custom_objects``); chainrule's own layers need no entry.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a complete, consistent chainrule model (truncated, tampered, a pickle).
    """
    return load_checkpoint(path, custom_layers=custom_layers).model


def load_checkpoint(
    path: str | os.PathLike[str], *, custom_layers: dict[str, type[Layer]] | None = None
) -> Checkpoint:
    """Load a model with its optimizer state, history and metadata (see :func:`save`).

    Resume training with ``fit(ckpt.model, ..., optimizer=ckpt.optimizer,
    initial_epoch=ckpt.next_epoch, seed=<the same seed>)``. Files of format version 1 load as
    they predicted: their models scaled ``uint8`` input by 1/255 implicitly, so they come back
    with an explicit ``Rescaling(1 / 255)`` first layer (give them raw pixels, in any dtype).
    """
    layer_classes = resolve_layers(custom_layers)  # a bad argument is the caller's, not the file's
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            return _read(zf, path, path.stat().st_size, layer_classes)
    except _InvalidModelFile as exc:  # already names the file and the problem
        raise ValueError(str(exc)) from exc.__cause__
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        OSError,
        NotImplementedError,  # an unsupported compression method
        RuntimeError,  # an encrypted member
        ValueError,  # e.g. a member name that is not valid UTF-8
        OverflowError,
        struct.error,
    ) as exc:
        raise ValueError(f"{path} is not a readable chainrule model file: {exc}") from exc


class _InvalidModelFile(ValueError):
    """Raised while reading a model file; the message names the file and what is wrong."""


# -- reading ---------------------------------------------------------------------------------------
def _read(
    zf: zipfile.ZipFile, path: Path, size: int, layer_classes: dict[str, type[Layer]]
) -> Checkpoint:
    """Read and check a whole file: metadata, architecture, arrays, then the training state."""

    def bad(problem: str) -> ValueError:
        return _InvalidModelFile(f"{path} is not a valid chainrule model file: {problem}")

    infos = {info.filename: info for info in zf.infolist()}
    meta, rename = _upgrade(_read_metadata(zf, infos, bad, size))
    infos = {rename(name): info for name, info in infos.items()}
    model = _build_model(meta, size, layer_classes, bad)
    opt_cls, slot_names = _optimizer_slots(meta.get("optimizer"), model, bad)
    expected = {f"params/{k}.npy": v for k, v in model.params.items()}
    expected |= {f"buffers/{k}.npy": v for k, v in model.buffers.items()}
    for name, names in slot_names.items():
        expected |= {f"optimizer/{name}/{slot}.npy": model.params[name] for slot in names}
    members = set(infos) - {_METADATA}
    if members != set(expected):
        missing, extra = sorted(set(expected) - members), sorted(members - set(expected))
        raise bad(f"arrays do not match the architecture (missing {missing}, unexpected {extra})")

    slots: dict[str, dict[str, np.ndarray]] = {name: {} for name in slot_names}
    for member, target in expected.items():
        value = _read_array(zf, infos[member], bad, size)
        if value.shape != target.shape or value.dtype != target.dtype:
            raise bad(
                f"{member} has shape {value.shape} and dtype {value.dtype}, the architecture "
                f"needs {target.shape} and {target.dtype}"
            )
        if not np.isfinite(value).all():
            raise bad(f"{member} contains NaN or infinity")
        if member.startswith("optimizer/"):
            _, name, slot = member[: -len(".npy")].split("/", 2)
            slots[name][slot] = value
        else:
            target[...] = value

    _restore_extra_state(model, meta.get("extra_state"), bad)
    optimizer = None if opt_cls is None else _read_optimizer(meta["optimizer"], opt_cls, slots, bad)
    user = meta.get("metadata") or {}
    return Checkpoint(
        model,
        optimizer,
        _read_history(meta.get("history"), bad),
        user if isinstance(user, dict) else {},
    )


def _upgrade(meta: dict[str, Any]) -> tuple[dict[str, Any], Callable[[str], str]]:
    """Metadata of an older format version as the current one, and how its members are renamed.

    Version 1 scaled ``uint8`` input by 1/255 inside every model, implicitly; version 2 models
    hold their preprocessing as layers. A version-1 model therefore gains a ``Rescaling(1/255)``
    first layer, which moves every layer index (and so every array's name) up by one. Its
    Dropout generators' states become the layers' extra state; layers that shared one generator
    get a copy each (a resumed run's masks then differ from an uninterrupted run's).
    """
    if meta["format_version"] == FORMAT_VERSION:
        return meta, lambda member: member

    def shift(name: str) -> str:
        index, dot, rest = str(name).partition(".")
        return f"{int(index) + 1}{dot}{rest}" if index.isdigit() else str(name)

    def rename(member: str) -> str:
        prefix, slash, rest = member.partition("/")
        return f"{prefix}/{shift(rest)}" if slash and prefix in _ARRAY_GROUPS else member

    layers, states, opt = meta.get("layers"), meta.get("rng_states"), meta.get("optimizer")
    if isinstance(opt, dict) and isinstance(opt.get("slots"), dict):
        opt = {**opt, "slots": {shift(k): v for k, v in opt["slots"].items()}}
    upgraded = {
        **meta,
        "format_version": FORMAT_VERSION,
        "model": {"type": "Sequential", "arguments": None},
        "layers": [_V1_RESCALING, *layers] if isinstance(layers, list) else layers,
        "extra_state": (
            {shift(k): {"rng": v} for k, v in states.items()}
            if isinstance(states, dict)
            else states
        ),
        "optimizer": opt,
    }
    return upgraded, rename


def _build_model(
    meta: dict[str, Any], size: int, layer_classes: dict[str, type[Layer]], bad: Any
) -> Sequential:
    """The saved architecture, built after checking that the file can hold what it declares."""
    try:
        dtype = np.dtype(meta["dtype"])
        if not np.issubdtype(dtype, np.floating):
            raise bad(f"dtype must be floating, got {dtype}")
        # Every value of the architecture is stored in the file: check its size before building
        # it, or a few bytes of JSON could ask for terabytes of freshly initialised weights.
        values = _declared_values(meta["layers"], layer_classes)
        if values * dtype.itemsize > size:
            raise bad(
                f"the architecture declares {values:,} {dtype} values "
                f"({values * dtype.itemsize:,} bytes) but the file holds {size:,} bytes"
            )
        model = Sequential.from_config(meta["layers"], dtype, layer_classes)
    except _InvalidModelFile:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"bad architecture or dtype in metadata ({exc})") from exc
    spec = meta.get("model")
    kind = spec.get("type") if isinstance(spec, dict) else None
    if not isinstance(kind, str) or kind not in MODELS:
        return model  # a plain stack, or a user's own Sequential subclass: its layers as saved
    arguments = spec.get("arguments")  # type: ignore[union-attr]
    return MODELS[kind].rebuilt(model.layers, arguments if isinstance(arguments, dict) else None)


def _declared_values(layers: Any, layer_classes: dict[str, type[Layer]]) -> int:
    """How many parameter and buffer values the architecture ``layers`` (the metadata's list)
    declares, by each layer's own account; entries that are not understood count 0, as building
    them fails anyway."""
    total = 0
    for spec in layers if isinstance(layers, list) else ():
        kind = spec.get("type") if isinstance(spec, dict) else None
        config = spec.get("config") if isinstance(spec, dict) else None
        if not isinstance(kind, str) or kind not in layer_classes or not isinstance(config, dict):
            continue
        try:
            shapes = layer_classes[kind].declared_shapes(config)
        except (TypeError, ValueError):
            continue
        total += sum(math.prod(shape) for shape in shapes.values())
    return total


def _optimizer_slots(
    opt_meta: Any, model: Sequential, bad: Any
) -> tuple[type[Optimizer] | None, dict[str, list[str]]]:
    """The saved optimizer's class and the state slots it keeps for each parameter."""
    if opt_meta is None:
        return None, {}
    slots = opt_meta.get("slots") if isinstance(opt_meta, dict) else None
    if not isinstance(slots, dict):
        raise bad("optimizer metadata has no slot list")
    kind = opt_meta.get("type")
    opt_cls = OPTIMIZERS.get(kind.lower()) if isinstance(kind, str) else None
    if opt_cls is None:
        raise bad(f"unknown optimizer type {kind!r}")
    for name, names in slots.items():
        if name not in model.params or not isinstance(names, list):
            raise bad(f"optimizer state for unknown parameter {name!r}")
        if sorted(map(str, names)) != sorted(opt_cls.slots):
            # Training would fail on the first step with a KeyError otherwise.
            raise bad(
                f"optimizer state of {name!r} holds {names}; {opt_cls.__name__} keeps "
                f"{list(opt_cls.slots)}"
            )
    return opt_cls, {name: [str(slot) for slot in names] for name, names in slots.items()}


def _restore_extra_state(model: Sequential, extra: Any, bad: Any) -> None:
    """Hand each layer the extra state (a random generator's) it saved."""
    if extra is None:
        return
    if not isinstance(extra, dict):
        raise bad("extra_state must map layer indices to states")
    for index, state in extra.items():
        try:
            if not isinstance(state, dict):
                raise TypeError(f"a state must be a JSON object, got {type(state).__name__}")
            model.layers[int(index)].set_extra_state(state)
        except (IndexError, TypeError, ValueError, OverflowError) as exc:
            raise bad(f"bad extra state for layer {index} ({exc})") from exc


def _read_optimizer(
    opt_meta: dict[str, Any],
    opt_cls: type[Optimizer],
    slots: dict[str, dict[str, np.ndarray]],
    bad: Any,
) -> Optimizer:
    try:
        optimizer = opt_cls(**opt_meta["config"])
        optimizer.load_state_dict(
            {
                "iterations": opt_meta["iterations"],
                "initial_lr": opt_meta.get("initial_lr", optimizer.lr),
                "state": slots,
            }
        )
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise bad(f"bad optimizer state ({exc!r})") from exc
    return optimizer


def _read_history(records: Any, bad: Any) -> History | None:
    if records is None:
        return None
    if not isinstance(records, dict) or not all(
        isinstance(v, list) and all(_is_real(x) for x in v) for v in records.values()
    ):
        raise bad("history must map names to lists of numbers")
    if not all(isinstance(e, int) and e >= 0 for e in records.get("epoch", [])):
        raise bad("history epochs must be integers >= 0")
    try:
        return History.from_dict(records)
    except (TypeError, ValueError) as exc:
        raise bad(f"bad history ({exc})") from exc


def _read_metadata(
    zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], bad: Any, size: int
) -> dict:
    info = infos.get(_METADATA)
    if info is None:
        raise bad(f"no {_METADATA} (is it a plain NumPy archive?)")
    _check_stored(info, size, bad)
    if info.file_size > _MAX_METADATA_BYTES:
        raise bad(f"{_METADATA} declares {info.file_size} bytes")
    try:
        with zf.open(info) as f:
            meta = json.loads(f.read(_MAX_METADATA_BYTES + 1))
    except (ValueError, RecursionError) as exc:  # also bad UTF-8, ints of > 4300 digits
        raise bad(f"{_METADATA} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise bad(f"{_METADATA} does not describe a {FORMAT!r}")
    if meta.get("format_version") not in _READABLE_VERSIONS:
        raise bad(
            f"format version {meta.get('format_version')!r}; this chainrule reads versions "
            f"{list(_READABLE_VERSIONS)}"
        )
    return meta


def _check_stored(info: zipfile.ZipInfo, size: int, bad: Any) -> None:
    """Model files store every member uncompressed, so no member can be larger than the file:
    checked before reading, as zipfile allocates the size a member declares up front."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise bad(f"{info.filename} is compressed; model files store their members uncompressed")
    if info.file_size != info.compress_size or info.file_size > size:
        raise bad(
            f"{info.filename} declares {info.file_size} bytes ({info.compress_size} stored) in "
            f"a file of {size} bytes"
        )


def _is_real(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _read_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, bad: Any, size: int) -> np.ndarray:
    """Read one ``.npy`` member, checking its header against its real size before allocating."""
    _check_stored(info, size, bad)
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except Exception as exc:  # NumPy's header parser raises many types (TokenError ...)
            raise bad(f"{info.filename} has a bad .npy header ({exc!r})") from exc
        if dtype.hasobject or dtype.fields is not None:
            raise bad(f"{info.filename} holds Python objects or records; refused (no pickle)")
        if any(d < 0 for d in shape):
            raise bad(f"{info.filename} declares a negative size in its shape {shape}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != info.file_size - f.tell():
            raise bad(
                f"{info.filename} declares {shape} {dtype} ({nbytes} bytes) but holds "
                f"{info.file_size - f.tell()} bytes"
            )
        data = f.read(nbytes)
        if len(data) != nbytes or f.read(1):  # reading to the end also checks the CRC
            raise bad(f"{info.filename} is truncated")
    array = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None] | bytes) -> Path:
    """Create or replace the file ``path`` so that it is never seen half-written.

    ``write`` (a function given the open binary file, or the bytes themselves) fills a temporary
    file in the same directory, which is flushed to disk and then renamed over ``path``. If
    anything fails, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():  # else mkstemp's error would name the temporary file, not path
        raise FileNotFoundError(errno.ENOENT, f"directory {directory} does not exist", str(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, _file_mode(path))
        with os.fdopen(fd, "wb") as f:
            if isinstance(write, bytes):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    return path


def _file_mode(path: Path) -> int:
    """The existing file's permissions, or those the umask gives a new file."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
