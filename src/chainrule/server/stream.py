"""Server-Sent Events to every open page, without ever waiting for one.

Each event is encoded once, by whoever publishes it, and put in every client's bounded queue
without blocking. A client whose queue is full (a page that stopped reading) is dropped: its
connection ends and the browser's ``EventSource`` reconnects by itself, receiving a fresh
snapshot, so a slow page loses time, never data, and never slows training down.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import threading
from typing import Any

__all__ = ["Broadcaster", "Client", "TooManyClients", "encode"]

#: Events a client may have waiting before it is dropped (about 10 s of metrics).
QUEUE_SIZE = 100
#: Pages streaming at once; the next gets 503.
MAX_CLIENTS = 32


class TooManyClients(RuntimeError):
    """The cap on streaming clients is reached."""


def encode(kind: str, data: Any) -> bytes:
    """One SSE message: ``event: kind`` and the JSON of ``data`` on one ``data:`` line (JSON
    escapes newlines, so one line is always enough)."""
    try:
        text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    except ValueError:  # a NaN or infinity (a diverged run): JSON has neither, null stands in
        text = json.dumps(_finite(data), separators=(",", ":"), allow_nan=False)
    return f"event: {kind}\ndata: {text}\n\n".encode()


def _finite(data: Any) -> Any:
    """``data`` with every NaN and infinity replaced by ``None``."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


class Client:
    """One open stream: its queue of encoded events (``None`` ends the stream)."""

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_SIZE)
        self.dropped = False

    def offer(self, message: bytes | None) -> bool:
        """Queue ``message`` unless the queue is full; returns whether it was queued."""
        try:
            self.queue.put_nowait(message)
        except queue.Full:
            self.dropped = True
            return False
        return True


class Broadcaster:
    """The set of open streams, capped at ``max_clients``."""

    def __init__(self, max_clients: int = MAX_CLIENTS) -> None:
        self.max_clients = max_clients
        self._clients: list[Client] = []
        self._lock = threading.Lock()
        self.closed = False

    def add(self) -> Client:
        """A new client; raises :class:`TooManyClients` at the cap."""
        with self._lock:
            if self.closed or len(self._clients) >= self.max_clients:
                raise TooManyClients(f"at most {self.max_clients} pages may stream at once")
            client = Client()
            self._clients.append(client)
            return client

    def remove(self, client: Client) -> None:
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)

    def publish(self, kind: str, data: Any) -> None:
        """Send an event to every client; a full client is dropped (it will reconnect)."""
        message = encode(kind, data)
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            if not client.offer(message):
                self.remove(client)

    def count(self) -> int:
        with self._lock:
            return len(self._clients)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        with self._lock:
            self.closed = True
            clients, self._clients = self._clients, []
        for client in clients:
            # Make room for the end marker: the stream is ending anyway.
            while not client.offer(None):
                with contextlib.suppress(queue.Empty):  # a race with the reader
                    client.queue.get_nowait()
