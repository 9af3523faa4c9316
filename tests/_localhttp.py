"""A local HTTP server for the download tests: 127.0.0.1 only, so no test needs the internet."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TypeVar

S = TypeVar("S", bound="LocalServer")


class LocalServer:
    """Serves ``files`` under ``/<mode>/<name>``; :meth:`respond` says how each mode behaves.

    Use it as a context manager: the server runs in a thread between ``__enter__`` and
    ``__exit__``. ``hits`` lists every path requested, in order.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.hits: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.hits.append(self.path)
                mode, _, name = self.path.strip("/").partition("/")
                server.respond(self, mode, server.files.get(name))

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll interval: shutdown() waits up to one interval.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def respond(self, handler: BaseHTTPRequestHandler, mode: str, body: bytes | None) -> None:
        """Answer one GET; ``body`` is None for a file the server does not have."""
        raise NotImplementedError

    def count(self, mode: str) -> int:
        """How many requests used ``mode``."""
        with self._lock:
            return sum(hit.startswith(f"/{mode}/") for hit in self.hits)

    def __enter__(self: S) -> S:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
