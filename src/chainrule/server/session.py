"""The training session behind the page: one model trained on MNIST in a thread of its own.

The thread owns the model: it alone runs training steps, and the HTTP threads reach it only by
commands (:meth:`Session.command`), which it carries out between two steps, and by copies made
under a lock (:meth:`Session.model_copy`), so a drawing classified while the network trains never
disturbs the caches or gradients of a step. What it measures it hands to a :class:`Broadcaster`
as events: metrics at most 10 times a second, pictures at most once a second; publishing never
waits for a client.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..history import History
from ..io import save
from ..losses import LOSSES, Loss
from ..network import MODELS, Sequential, as_input
from ..optim import SGD, Optimizer
from . import views
from .stream import Broadcaster

__all__ = ["Data", "Session", "Settings"]

#: Seconds between two metrics events (at most 10 a second) and two picture events (1 a second).
METRICS_PERIOD = 0.1
IMAGES_PERIOD = 1.0
#: Curve points kept: past this, every other point goes and the stride between points doubles.
MAX_POINTS = 2000
#: Images of each split scored for the accuracy curves, the galleries and the confusion matrix.
EVAL_IMAGES = 1000
#: A loss this many times the first step's (or 1) counts as diverged, as in ``fit``.
DIVERGED = 1e4
#: Smoothing of the loss curve (an exponential moving average, bias-corrected).
SMOOTHING = 0.98


@dataclass
class Data:
    """Training and validation images ``(N, 1, 28, 28)`` uint8 with their labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @classmethod
    def mnist(cls, validation: int = 5000) -> Data:
        """The shipped MNIST training set, ``validation`` images held out (always the same ones:
        the seed on the page changes the network and the batches, not the data)."""
        from ..data import train_validation_split
        from ..datasets import load_mnist

        (x, y), _ = load_mnist(normalize=False, flatten=False)
        (xt, yt), (xv, yv) = train_validation_split(x, y, validation / len(x), rng=0)
        return cls(xt, yt, xv, yv)


@dataclass
class Settings:
    """What the page can change: the seed of a reset, the learning rate, the batch size."""

    seed: int = 0
    lr: float = 0.1
    batch_size: int = 32


class CommandError(ValueError):
    """A command the session refuses; its message goes back to the page (HTTP 400)."""


@dataclass
class _Curves:
    """The run's curves, as the page draws them: a point every ``stride`` steps."""

    stride: int = 1
    points: list[list[float | None]] = field(default_factory=list)  # step, examples, loss, smooth
    evals: list[list[float]] = field(default_factory=list)  # step, examples, train acc, val acc
    sent_step: int = -1  # the last step whose point went out in an event
    sent_eval: int = -1

    def add_point(self, point: list[float | None]) -> None:
        step = int(point[0])  # type: ignore[arg-type]
        if step % self.stride:
            return
        self.points.append(point)
        if len(self.points) > MAX_POINTS:  # thin: the page applies the same rule on its copy
            self.stride *= 2
            self.points = [p for p in self.points if int(p[0]) % self.stride == 0]  # type: ignore[arg-type]

    def add_eval(self, record: list[float]) -> None:
        self.evals.append(record)
        if len(self.evals) > MAX_POINTS:
            self.evals = self.evals[1::2]  # the page is sent all of them again (a snapshot)


def default_model(seed: int) -> Sequential:
    """The network the page starts with: the notes' 784-100-10, ReLU, given raw pixels."""
    from ..network import MLP

    return MLP(784, [100], 10, rescale=1 / 255, rng=seed)


class Session:
    """A model, its optimizer and data, trained step by step in a daemon thread.

    Args:
        model: the network to train (a fresh :func:`default_model` when ``None``).
        optimizer: its optimizer (plain SGD at ``settings.lr`` when ``None``).
        data: the images (:meth:`Data.mnist` when ``None``).
        broadcaster: where events go.
        settings: the starting seed, learning rate and batch size.
        history: epochs already trained (from a checkpoint), kept when the model is saved.

    Example:
        >>> session = Session(None, None, data, Broadcaster())  # doctest: +SKIP
        >>> session.start(); session.command("start")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Sequential | None,
        optimizer: Optimizer | None,
        data: Data | None,
        broadcaster: Broadcaster,
        settings: Settings | None = None,
        history: History | None = None,
    ) -> None:
        self.settings = settings or Settings()
        if optimizer is not None:
            self.settings.lr = float(optimizer.lr)
        self.data = data if data is not None else Data.mnist()
        self.broadcaster = broadcaster
        self._loaded = model
        self._loaded_state = None if model is None else model.copy()
        self.model = model if model is not None else default_model(self.settings.seed)
        self.shape = views.input_shape(self.model)
        self._optimizer_template = optimizer
        self.optimizer = optimizer if optimizer is not None else SGD(self.settings.lr)
        self.loss = self._loss_for(self.model)
        self.history = history if history is not None else History()
        self._saved_history = History.from_dict(self.history.to_dict())
        self._x_train = self._as_samples(self.data.x_train)
        self._x_val = self._as_samples(self.data.x_val)
        self._eval_train = self._x_train[:EVAL_IMAGES], self.data.y_train[:EVAL_IMAGES]
        self._eval_val = self._x_val[:EVAL_IMAGES], self.data.y_val[:EVAL_IMAGES]

        # Everything below is guarded by `lock`; the page's view of it is rebuilt from here.
        self.lock = threading.RLock()
        self._commands: queue.Queue[_Command] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chainrule-training", daemon=True)
        self._predict_copy: tuple[int, Sequential] | None = None
        self._predict_lock = threading.Lock()
        #: (start, seconds) of the latest plain training steps.
        self.step_times: collections.deque[tuple[float, float]] = collections.deque(maxlen=20000)
        self._reset_run()

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the training thread (paused until the page says start)."""
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the training thread after its current step."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- what the HTTP threads call --------------------------------------------------------
    def command(self, name: str, args: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Carry out ``name`` (``start``, ``pause``, ``step``, ``reset``, ``settings``) in the
        training thread and return the state it leaves. Raises :class:`CommandError` for a bad
        command or argument (checked here, before it is queued)."""
        apply = self._parse(name, args)
        if not self._thread.is_alive():
            raise RuntimeError("the training thread is not running")
        done = _Command(apply)
        self._commands.put(done)
        self._wake.set()
        if not done.event.wait(timeout):
            raise TimeoutError(f"the training thread did not answer {name!r} in {timeout:g} s")
        if done.error is not None:
            raise done.error
        return self.status()

    def status(self) -> dict[str, Any]:
        """Where the run is: step, examples seen, epoch, settings, running, divergence."""
        with self.lock:
            return {
                "step": self.step,
                "examples": self.examples,
                "epoch": self.epoch,
                "running": self.running,
                "seed": self.settings.seed,
                "lr": self.optimizer.lr,
                "batch_size": self.settings.batch_size,
                "throughput": self._throughput(),
                "diverged": self.diverged,
                "model": repr(self.model),
                "optimizer": type(self.optimizer).__name__,
                "parameters": self.model.num_params,
                "train_images": len(self.data.y_train),
                "val_images": len(self.data.y_val),
            }

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, for a page that connects (or reconnects): a reload
        restores the curves from here. Call with :attr:`lock` held to keep it in step with the
        events that follow."""
        with self.lock:
            return {
                "status": self.status(),
                "stride": self.curves.stride,
                # What the events so far carried: the next event brings the rest, once.
                "points": [p for p in self.curves.points if p[0] <= self.curves.sent_step],  # type: ignore[operator]
                "evals": [e for e in self.curves.evals if e[0] <= self.curves.sent_eval],
                "images": self.images,
            }

    def model_copy(self) -> Sequential:
        """A copy of the model as it is between two steps, for classifying drawings; one copy
        is shared until the next step (the caller holds :attr:`predict_lock` while using it)."""
        with self.lock:
            if self._predict_copy is None or self._predict_copy[0] != self._version:
                self._predict_copy = (self._version, self.model.copy())
            return self._predict_copy[1]

    @property
    def predict_lock(self) -> threading.Lock:
        """Held while a copy from :meth:`model_copy` is in use (its layers cache each pass)."""
        return self._predict_lock

    def save_bytes(self) -> bytes:
        """The model being trained, its optimizer and epochs, in the ``cr.save`` format."""
        with self.lock:
            model, optimizer = self.model.copy(), _copy_optimizer(self.optimizer)
            history = History.from_dict(self.history.to_dict())
            metadata = {
                "loss": type(self.loss).__name__,
                "serve": {"step": self.step, "examples": self.examples, "seed": self.settings.seed},
            }
        with tempfile.TemporaryDirectory(prefix="chainrule-serve-") as tmp:
            path = Path(tmp) / "model.npz"
            save(model, path, optimizer=optimizer, history=history, metadata=metadata)
            return path.read_bytes()

    # -- commands --------------------------------------------------------------------------
    def _parse(self, name: str, args: dict[str, Any]) -> Callable[[], None]:
        """The command as a function for the training thread; its arguments checked here."""
        allowed = {
            "start": set(),
            "pause": set(),
            "step": set(),
            "reset": {"seed"},
            "settings": {"lr", "batch_size"},
        }
        if name not in allowed:
            raise CommandError(f"unknown command {name!r}; known: {sorted(allowed)}")
        unknown = set(args) - allowed[name]
        if unknown:
            raise CommandError(f"{name}: unknown arguments {sorted(unknown)}")
        if name == "start":
            return self._do_start
        if name == "pause":
            return self._do_pause
        if name == "step":
            return self._do_step
        if name == "reset":
            seed = _integer(args.get("seed", self.settings.seed), "seed", 0, 2**32 - 1)
            return lambda: self._do_reset(seed)
        lr = args.get("lr")
        if lr is not None:
            lr = _number(lr, "lr", 0.0, 1e6)
        batch = args.get("batch_size")
        if batch is not None:
            batch = _integer(batch, "batch_size", max(1, self.model.min_batch), 4096)
        return lambda: self._do_settings(lr, batch)

    def _do_start(self) -> None:
        if self.diverged is not None:
            raise CommandError("training diverged (see the banner): reset before starting")
        self.running = True

    def _do_pause(self) -> None:
        self.running = False

    def _do_step(self) -> None:
        if self.diverged is not None:
            raise CommandError("training diverged (see the banner): reset before stepping")
        self.running = False
        self._train_step(inspect=True)
        self._images_due = True

    def _do_reset(self, seed: int) -> None:
        self.settings.seed = seed
        if self._loaded is None:
            self.model = default_model(seed)
        else:
            self.model = self._rebuilt(seed)
        self.loss = self._loss_for(self.model)
        template = self._optimizer_template
        if template is None:
            self.optimizer = SGD(self.optimizer.lr)
        else:
            config = {**template.config(), "lr": self.optimizer.lr}
            self.optimizer = type(template)(**config)
        self.history = History.from_dict(self._saved_history.to_dict())
        self._reset_run()
        self.broadcaster.publish("snapshot", self.snapshot())

    def _rebuilt(self, seed: int) -> Sequential:
        """A loaded model, reset: rebuilt with fresh weights from ``seed`` when a builder made it
        (an MLP), else put back as it was loaded."""
        loaded = self._loaded
        assert loaded is not None
        assert self._loaded_state is not None
        arguments = loaded.arguments()
        cls: Any = MODELS.get(type(loaded).__name__)
        if arguments is not None and cls is not None:
            with contextlib.suppress(TypeError, ValueError):
                return cls(**arguments, rng=seed, dtype=loaded.dtype)
        return self._loaded_state.copy()

    def _do_settings(self, lr: float | None, batch: int | None) -> None:
        if lr is not None:
            self.optimizer.lr = lr
        if batch is not None:
            self.settings.batch_size = batch
        self._metrics_due = True

    # -- the training thread ---------------------------------------------------------------
    def _reset_run(self) -> None:
        with self.lock:
            self.step = 0
            self.examples = 0
            self.epoch = 0
            self.running = False
            self.diverged: dict[str, Any] | None = None
            self.curves = _Curves()
            self._order = self._epoch_order(0)
            self._position = 0
            self._epoch_loss = self._epoch_correct = self._epoch_seen = 0.0
            self._epoch_start = time.perf_counter()
            self._smooth = 0.0
            self._first_loss: float | None = None
            self._recent: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)
            self._version = 0
            self._last_metrics = self._last_images = -math.inf
            self._metrics_due = False
            self._images_due = True
            self.inspection: dict[str, Any] | None = None
            self.images: dict[str, Any] | None = None
            self._evaluate()
            self.images = self._pictures()

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.settings.seed, epoch]).permutation(len(self._x_train))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._do_commands()
            try:
                inspected = self.running and self._inspect_due()
                if self.running:
                    self._train_step(inspect=inspected)
                self._publish_due(inspected)
            except Exception as exc:  # a bug must not end the thread the page depends on
                with self.lock:
                    self.running = False
                    self.diverged = {"step": self.step, "what": f"{type(exc).__name__}: {exc}"}
                    self._metrics_due, self._images_due = True, False
            if not self.running:
                self._wake.wait(self._idle_timeout())
                self._wake.clear()

    def _do_commands(self) -> None:
        while True:
            try:
                done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                with self.lock:
                    done.apply()
                    # An event with the new status follows: one already queued with the old
                    # status must not have the last word on the page.
                    self._metrics_due = True
            except CommandError as exc:
                done.error = exc
            finally:
                done.event.set()

    def _idle_timeout(self) -> float:
        """How long a paused thread may sleep before an event falls due."""
        now = time.perf_counter()
        waits = [1.0]
        if self._metrics_due:
            waits.append(self._last_metrics + METRICS_PERIOD - now)
        if self._images_due:
            waits.append(self._last_images + IMAGES_PERIOD - now)
        return max(0.0, min(waits))

    def _inspect_due(self) -> bool:
        """The step before a picture event is inspected layer by layer."""
        return time.perf_counter() - self._last_images >= IMAGES_PERIOD

    def _next_batch(self) -> np.ndarray:
        n, size = len(self._order), self.settings.batch_size
        if n - self._position < max(1, self.model.min_batch):  # the epoch is done
            self._end_epoch()
        take = self._order[self._position : self._position + size]
        if n - (self._position + len(take)) < self.model.min_batch:
            take = self._order[self._position :]  # a remainder too small to train on joins
        self._position += len(take)
        return take

    def _end_epoch(self) -> None:
        seen = max(self._epoch_seen, 1.0)
        val = self._latest_eval()
        self.history.append(
            epoch=len(self.history),
            loss=self._epoch_loss / seen,
            accuracy=self._epoch_correct / seen,
            val_loss=val[1],
            val_accuracy=val[0],
            lr=self.optimizer.lr,
            seconds=time.perf_counter() - self._epoch_start,
        )
        self.epoch += 1
        self._order = self._epoch_order(self.epoch)
        self._position = 0
        self._epoch_loss = self._epoch_correct = self._epoch_seen = 0.0
        self._epoch_start = time.perf_counter()

    def _latest_eval(self) -> tuple[float, float]:
        """Validation accuracy and loss of the model now (the epoch's record)."""
        x, y = self._eval_val
        p = self.model.predict_proba(x).astype(np.float64)
        loss = float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))
        return float(np.mean(p.argmax(axis=1) == y)), loss

    def _train_step(self, inspect: bool) -> None:
        """One mini-batch: forward, loss, backward, update (layer by layer when inspected)."""
        start = time.perf_counter()
        with self.lock:
            idx = self._next_batch()
            xb, yb = self._x_train[idx], self.data.y_train[idx]
            before = {k: v.copy() for k, v in self.model.params.items()} if inspect else None
            with np.errstate(all="ignore"):
                value, out, record = self._forward_backward(xb, yb, inspect)
                finite = np.isfinite(value) and all(
                    np.isfinite(g).all() for g in self.model.grads.values()
                )
                if finite:
                    self.optimizer.step(self.model.params, self.model.grads)
            self.step += 1
            self.examples += len(idx)
            self._version += 1
            self._recent.append((time.perf_counter(), self.examples))
            correct = int(np.count_nonzero(out.argmax(axis=1) == yb)) if finite else 0
            self._epoch_loss += value * len(idx) if finite else 0.0
            self._epoch_correct += correct
            self._epoch_seen += len(idx)
            self._smooth = SMOOTHING * self._smooth + (1 - SMOOTHING) * value if finite else value
            smooth = self._smooth / (1 - SMOOTHING**self.step) if finite else None
            self.curves.add_point([self.step, self.examples, _finite(value), _finite(smooth)])
            if record is not None and before is not None:
                self.inspection = self._inspect(record, before, value, len(idx))
            if self.step == 1 or self._first_loss is None:
                self._first_loss = value if finite else None
            what = None
            if not np.isfinite(value):
                what = f"the loss is {value}"
            elif not finite:
                what = "a gradient is not finite"
            elif not all(np.isfinite(p).all() for p in self.model.params.values()):
                what = "a weight is not finite"
            elif self._first_loss is not None and value > DIVERGED * max(1.0, self._first_loss):
                # as fit's divergence_factor: a rate far too large can blow the loss up and
                # kill every ReLU without ever producing NaN
                what = f"the loss {value:.4g} is over {DIVERGED:g} times the first step's"
            if what is not None:
                self.running = False
                self.diverged = {"step": self.step, "what": what}
                self._images_due = True
            self._metrics_due = True
            if not inspect:  # the seconds of plain steps, for measuring what slows them
                self.step_times.append((start, time.perf_counter() - start))

    def _forward_backward(
        self, xb: np.ndarray, yb: np.ndarray, inspect: bool
    ) -> tuple[float, np.ndarray, dict[str, list[np.ndarray]] | None]:
        model, loss = self.model, self.loss
        if not inspect:
            out = model.forward(xb, training=True)
            if not np.isfinite(out).all():
                return math.nan, out, None
            value = loss.forward(out, yb)
            model.backward(loss.backward(), input_grad=False)
            return value, out, None
        # The same step, one layer at a time, keeping each layer's output and dL/d(output).
        h = as_input(xb, model.dtype)
        outputs = []
        for layer in model.layers:
            h = layer.forward(h, training=True)
            outputs.append(h)
        if not np.isfinite(h).all():
            return math.nan, h, None
        value = loss.forward(h, yb)
        dy = loss.backward()
        deltas: list[np.ndarray] = []
        for layer in reversed(model.layers):
            deltas.append(dy)
            dy = layer.backward(dy)
        deltas.reverse()
        return value, h, {"outputs": outputs, "deltas": deltas}

    def _inspect(
        self,
        record: dict[str, list[np.ndarray]],
        before: dict[str, np.ndarray],
        value: float,
        batch: int,
    ) -> dict[str, Any]:
        """The step inspector's table: per layer, its output and delta = dL/d(output) for the
        batch's first example, and per parameter ||dL/dW|| and the update ratio ||dW|| / ||W||."""
        layers = []
        for i, layer in enumerate(self.model.layers):
            params = []
            for key, w in layer.params.items():
                name = f"{i}.{key}"
                grad = layer.grads.get(key)
                change = w.astype(np.float64) - before[name]
                norm_w = float(np.linalg.norm(before[name].astype(np.float64)))
                params.append(
                    {
                        "name": name,
                        "shape": list(w.shape),
                        "norm": _finite(norm_w),
                        "grad_norm": None
                        if grad is None
                        else _finite(np.linalg.norm(grad.astype(np.float64))),
                        "update_norm": _finite(np.linalg.norm(change)),
                        "ratio": _finite(np.linalg.norm(change) / norm_w)
                        if np.isfinite(norm_w) and norm_w
                        else None,
                    }
                )
            layers.append(
                {
                    "index": i,
                    "name": repr(layer),
                    "shape": list(record["outputs"][i].shape[1:]),
                    "forward": views._values(record["outputs"][i][0]),
                    "delta": views._values(record["deltas"][i][0]),
                    "params": params,
                }
            )
        return {"step": self.step, "batch": batch, "loss": _finite(value), "layers": layers}

    def _evaluate(self) -> None:
        """Accuracy on the scored training and validation images, the galleries and the
        confusion matrix (inference mode: changes nothing in the model)."""
        with np.errstate(all="ignore"):
            xt, yt = self._eval_train
            train_p = self.model.predict_proba(xt)
            xv, yv = self._eval_val
            val_p = self.model.predict_proba(xv).astype(np.float64)
        train_acc = float(np.mean(train_p.argmax(axis=1) == yt))
        val_acc = float(np.mean(val_p.argmax(axis=1) == yv))
        if not self.curves.evals or self.curves.evals[-1][0] != self.step:
            self.curves.add_eval([self.step, self.examples, train_acc, val_acc])
        images = self.data.x_val[:EVAL_IMAGES]
        self._gallery = views.gallery(images, yv, np.nan_to_num(val_p))

    def _pictures(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "weights": views.weight_tiles(self.model, "params"),
            "gradients": views.weight_tiles(self.model, "grads") if self.step else None,
            "gallery": self._gallery,
            "inspection": self.inspection,
        }

    def _publish_due(self, inspected: bool) -> None:
        """Send what is due: metrics at most every 0.1 s; pictures at most every second, while
        training right after the step that was inspected for them."""
        now = time.perf_counter()
        with self.lock:
            if self._metrics_due and now - self._last_metrics >= METRICS_PERIOD:
                self._last_metrics = now
                self._metrics_due = False
                self.broadcaster.publish("metrics", self._metrics())
            wanted = inspected or (self._images_due and not self.running)
            if wanted and now - self._last_images >= IMAGES_PERIOD:
                self._last_images = now
                self._images_due = False
                if self.curves.evals[-1][0] != self.step:
                    self._evaluate()
                self.images = self._pictures()
                self.broadcaster.publish("images", self.images)
                self._metrics_due = True  # the new accuracy point, within 0.1 s

    def _metrics(self) -> dict[str, Any]:
        """The points since the last event, with the status."""
        curves = self.curves
        points = [p for p in curves.points if int(p[0]) > curves.sent_step]  # type: ignore[arg-type]
        evals = [e for e in curves.evals if e[0] > curves.sent_eval]
        curves.sent_step = self.step
        curves.sent_eval = int(curves.evals[-1][0]) if curves.evals else -1
        return {"status": self.status(), "stride": curves.stride, "points": points, "evals": evals}

    def _throughput(self) -> float:
        """Examples per second over the last second or so of running."""
        recent = self._recent
        if not self.running or len(recent) < 2:
            return 0.0
        (t0, n0), (t1, n1) = recent[0], recent[-1]
        while len(recent) > 2 and t1 - recent[1][0] > 1.0:
            recent.popleft()
            t0, n0 = recent[0]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    # -- helpers ---------------------------------------------------------------------------
    def _as_samples(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), *self.shape)

    @staticmethod
    def _loss_for(model: Sequential) -> Loss:
        """Softmax cross-entropy on logits; cross-entropy after a final Softmax."""
        name = (
            "cross_entropy" if model.layers[-1].outputs_probabilities else "softmax_cross_entropy"
        )
        return LOSSES[name]()


@dataclass
class _Command:
    apply: Callable[[], None]
    event: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


def _finite(value: Any) -> float | None:
    """A figure for JSON: ``None`` for NaN or infinity (JSON has neither)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _integer(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CommandError(f"{name} must be an integer from {lo} to {hi}, got {json.dumps(value)}")
    return value


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not lo <= value <= hi
    ):
        raise CommandError(
            f"{name} must be a number from {lo:g} to {hi:g}, got {json.dumps(value)}"
        )
    return float(value)


def _copy_optimizer(optimizer: Optimizer) -> Optimizer:
    copy = type(optimizer)(**optimizer.config())
    copy.load_state_dict(optimizer.state_dict())
    return copy
