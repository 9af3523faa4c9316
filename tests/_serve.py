"""Helpers for the tests of ``chainrule serve``: small data, a trained model, HTTP calls."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np

import chainrule as cr
from chainrule.server import ChainruleServer, Data, Settings, create_server

(_X, _Y), (X_TEST, Y_TEST) = cr.datasets.load_mnist(normalize=False, flatten=False)
#: A few thousand images: enough to learn from in a second, quick to score.
SMALL = Data(_X[:3000], _Y[:3000], _X[50000:51000], _Y[50000:51000])


def trained_model() -> cr.Sequential:
    """A 784-64-10 network trained on 5,000 images (about 94 % on the test digits)."""
    model = cr.MLP(784, [64], 10, rescale=1 / 255, rng=0)
    cr.fit(
        model,
        _X[:5000].reshape(5000, -1),
        _Y[:5000],
        loss="softmax_cross_entropy",
        optimizer=cr.Adam(3e-3),
        epochs=3,
        batch_size=64,
        seed=0,
    )
    return model


@contextlib.contextmanager
def running(**kwargs: Any) -> Iterator[ChainruleServer]:
    """A server on a free port with the small data set, stopped at the end."""
    kwargs.setdefault("data", SMALL)
    kwargs.setdefault("settings", Settings(seed=0, lr=0.1, batch_size=32))
    server = create_server(port=0, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def request(
    server: ChainruleServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request; returns the status, the headers (lower-case names) and the body."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        all_headers = {"Host": f"127.0.0.1:{server.port}", **(headers or {})}
        if body is not None and "Content-Length" not in all_headers:
            all_headers["Content-Length"] = str(len(body))
        for name, value in all_headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        if body is not None:
            conn.send(body)
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def post(server: ChainruleServer, path: str, data: Any, **headers: str) -> tuple[int, Any]:
    """POST ``data`` as JSON; returns the status and the decoded answer."""
    status, _, body = request(
        server,
        "POST",
        path,
        json.dumps(data).encode(),
        {"Content-Type": "application/json", **headers},
    )
    return status, json.loads(body)


def drawing_of(image: np.ndarray, scale: int = 10) -> dict[str, Any]:
    """An MNIST image ``(28, 28)`` as a predict request, each pixel a ``scale`` x ``scale``
    square (as drawn on the page's canvas)."""
    ink = np.kron(np.asarray(image, np.int64).reshape(28, 28), np.ones((scale, scale), np.int64))
    return {"width": ink.shape[1], "height": ink.shape[0], "pixels": ink.ravel().tolist()}


def events(server: ChainruleServer, seconds: float, on: Callable[[str, Any], None]) -> int:
    """Read the event stream for ``seconds`` from its first event (which is always waited
    for), calling ``on(kind, data)`` for each event; returns the HTTP status."""
    end = None
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        host = urlsplit(server.url).netloc
        sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        if status != 200:
            return status
        while True:
            while b"\n\n" in buffer:
                message, _, buffer = buffer.partition(b"\n\n")
                fields = dict(
                    line.split(": ", 1) for line in message.decode().split("\n") if ": " in line
                )
                if "data" in fields:
                    on(fields.get("event", "message"), json.loads(fields["data"]))
                    if end is None:
                        end = time.monotonic() + seconds
            left = 10.0 if end is None else end - time.monotonic()
            if left <= 0:
                return status
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return status
            if not chunk:
                return status
            buffer += chunk
