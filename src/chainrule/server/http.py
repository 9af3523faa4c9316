"""The HTTP side: routes, the security rules, and the server object.

Standard library only (:class:`http.server.ThreadingHTTPServer`, one thread per connection):
the page makes a handful of requests and holds one event stream, which a thread each serves
well, and chainrule stays free of web dependencies. Every rule below is enforced before a
request reaches the session:

* the ``Host`` header must name this server (a DNS-rebinding page cannot pass as it): 403;
* a POST from a browser must come from this page: an ``Origin`` header, when present, must be
  this server's origin and ``Sec-Fetch-Site``, when present, ``same-origin``: 403;
* a POST must be ``application/json`` (415) with a ``Content-Length`` (411) of at most
  :data:`MAX_BODY` bytes (413), holding valid JSON of the right shape (400, with a message);
* no CORS header is ever sent, a strict Content-Security-Policy is, and only the packaged files
  of ``static/`` are served, by a fixed table: no path from a request reaches the file system.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import queue
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from . import views
from .session import CommandError, Session
from .stream import Broadcaster, TooManyClients, encode

__all__ = ["MAX_BODY", "ChainruleServer", "allowed_hosts"]

#: The largest POST body accepted: a 1024 x 1024 drawing in JSON fits (bytes).
MAX_BODY = 8 * 1024 * 1024
#: The largest drawing, per side (pixels).
MAX_SIDE = 1024
#: Seconds a connection may stay silent while the server reads from it.
READ_TIMEOUT = 30
#: Seconds between comments that keep an idle event stream open.
KEEPALIVE = 15.0

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: Sent with every response.
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: The only files served: URL path -> (packaged file, content type).
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The packaged page, read once at start-up."""
    folder = resources.files(__package__).joinpath("static")
    return {
        route: (folder.joinpath(name).read_bytes(), kind) for route, (name, kind) in STATIC.items()
    }


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` header values that name this server (lower case).

    Loopback names always; the ``--host`` address itself; for a wildcard address (``0.0.0.0``,
    ``::``) the machine's own name and addresses, which is how other machines reach it.
    """
    names = {"127.0.0.1", "localhost", "[::1]"}
    wildcard = host in ("0.0.0.0", "::", "")
    if not wildcard:
        names.add(_bracketed(host))
    else:
        with contextlib.suppress(OSError):
            for name in {socket.gethostname(), socket.getfqdn()}:
                names.add(name)
                for info in socket.getaddrinfo(name, None):
                    names.add(_bracketed(str(info[4][0])))
    names = {n.lower() for n in names}
    return frozenset({*names, *(f"{n}:{port}" for n in names)} - {""})


def _bracketed(host: str) -> str:
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    return host


class RequestError(Exception):
    """A request refused with ``status`` and a one-line ``message``."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class ChainruleServer(ThreadingHTTPServer):
    """The page's server: a :class:`Session` behind the routes of :class:`Handler`.

    Args:
        address: ``(host, port)`` to bind (port 0: any free port).
        session: the training session (not yet started: :meth:`start` does).
        broadcaster: the session's event streams.

    Example:
        >>> server = ChainruleServer(("127.0.0.1", 0), session, broadcaster)  # doctest: +SKIP
        >>> server.start(); print(server.url); server.stop()  # doctest: +SKIP
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], session: Session, broadcaster: Broadcaster
    ) -> None:
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.session, self.broadcaster = session, broadcaster
        self.static = _static_files()
        self.port = int(self.server_address[1])
        self.hosts = allowed_hosts(host, self.port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.server_address[0]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else _bracketed(str(host))
        return f"http://{shown}:{self.port}/"

    def start(self) -> None:
        """Start training thread and request loop in the background (tests, benchmarks)."""
        self.session.start()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving: streams end, training stops, the socket closes."""
        self.broadcaster.close()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(10)
        self.session.close()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    """Routes: the packaged page (GET), the event stream ``/api/events``, the saved model
    ``/api/model.npz``, the state ``/api/state``; POST ``/api/predict``, ``/api/explain`` and the
    commands ``/api/start``, ``/api/pause``, ``/api/step``, ``/api/reset``, ``/api/settings``."""

    server: ChainruleServer
    server_version = "chainrule"
    sys_version = ""
    timeout = READ_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the terminal shows the URL and errors, not every request."""

    # -- responses -------------------------------------------------------------------------
    def _headers(self, status: int, kind: str, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)

    def _send(
        self, status: int, body: bytes, kind: str, extra: dict[str, str] | None = None
    ) -> None:
        self._headers(status, kind, len(body))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        body = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
        self._send(status, body, "application/json")

    def _refuse(self, error: RequestError) -> None:
        self._json(error.status, {"error": str(error)})

    # -- checks ----------------------------------------------------------------------------
    def _check_host(self) -> None:
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in self.server.hosts:
            raise RequestError(
                HTTPStatus.FORBIDDEN, f"Host {host or '(none)'!r} is not this server"
            )

    def _check_origin(self) -> None:
        origin = self.headers.get("Origin")
        host = (self.headers.get("Host") or "").strip().lower()
        if origin is not None and origin.strip().lower() != f"http://{host}":
            raise RequestError(HTTPStatus.FORBIDDEN, f"cross-origin request from {origin!r}")
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site.strip().lower() != "same-origin":
            raise RequestError(HTTPStatus.FORBIDDEN, f"cross-site request (Sec-Fetch-Site: {site})")

    def _body(self) -> Any:
        """The POST's JSON, every rule of a request body checked."""
        self._check_origin()
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"send JSON with Content-Type: application/json, not {kind or '(none)'!r}",
            )
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not chunks")
        text = self.headers.get("Content-Length")
        if text is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        try:
            length = int(text)
        except ValueError:
            length = -1
        if length < 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {text!r}")
        if length > MAX_BODY:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body of {length} bytes exceeds the limit of {MAX_BODY}",
            )
        raw = self.rfile.read(length)
        if len(raw) != length:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body ended before Content-Length")
        try:
            return json.loads(raw, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"malformed JSON: {exc}") from None

    # -- dispatch --------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle(self._get)

    def do_HEAD(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _not_allowed(self) -> None:
        self.close_connection = True
        self._handle(self._405)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _405(self) -> None:
        self._check_host()
        raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not supported")

    def _handle(self, route: Any) -> None:
        try:
            route()
        except RequestError as error:
            # The body may be unread: the connection cannot carry another request.
            self.close_connection = True
            self._refuse(error)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _get(self) -> None:
        self._check_host()
        path = urlsplit(self.path).path
        if self.command == "HEAD" and path not in self.server.static:
            raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, "HEAD is for the page's files only")
        if path in self.server.static:
            body, kind = self.server.static[path]
            self._send(HTTPStatus.OK, body, kind)
        elif path == "/api/events":
            self._events()
        elif path == "/api/state":
            self._json(HTTPStatus.OK, self.server.session.status())
        elif path == "/api/model.npz":
            body = self.server.session.save_bytes()
            disposition = 'attachment; filename="chainrule-model.npz"'
            self._send(
                HTTPStatus.OK,
                body,
                "application/octet-stream",
                {"Content-Disposition": disposition},
            )
        else:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def _post(self) -> None:
        self._check_host()
        path = urlsplit(self.path).path
        commands = {"/api/start", "/api/pause", "/api/step", "/api/reset", "/api/settings"}
        if path not in {"/api/predict", "/api/explain", *commands}:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        body = self._body()
        if path in ("/api/predict", "/api/explain"):
            ink = drawing(body)
            session = self.server.session
            model = session.model_copy()
            with session.predict_lock:
                answer = (views.predict if path == "/api/predict" else views.explain)(
                    model, ink, session.shape
                )
            self._json(HTTPStatus.OK, answer)
            return
        if not isinstance(body, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "send a JSON object, such as {}")
        try:
            state = self.server.session.command(path.removeprefix("/api/"), body)
        except CommandError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        except (RuntimeError, TimeoutError) as exc:
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, str(exc)) from None
        self._json(HTTPStatus.OK, state)

    def _events(self) -> None:
        """The event stream: a snapshot, then every event, until the page goes away."""
        server = self.server
        try:
            with server.session.lock:  # no event slips between the snapshot and the queue
                client = server.broadcaster.add()
                first = encode("snapshot", server.session.snapshot())
        except TooManyClients as exc:
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, str(exc)) from None
        self.close_connection = True
        try:
            self._headers(HTTPStatus.OK, "text/event-stream; charset=utf-8", None)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n" + first)
            self.wfile.flush()
            while not client.dropped:
                try:
                    message = client.queue.get(timeout=KEEPALIVE)
                except queue.Empty:  # nothing for a while
                    message = b": keep-alive\n\n"
                if message is None or client.dropped:
                    break
                self.wfile.write(message)
                self.wfile.flush()
        finally:
            server.broadcaster.remove(client)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def drawing(body: Any) -> np.ndarray:
    """The ink of a predict request ``{"width", "height", "pixels"}`` as ``(H, W)`` float32,
    checked: a clear 400 for anything else."""
    if not isinstance(body, dict):
        raise RequestError(
            HTTPStatus.BAD_REQUEST, 'send {"width": W, "height": H, "pixels": [...]}'
        )
    missing = {"width", "height", "pixels"} - set(body)
    if missing:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"missing {sorted(missing)}")
    sides = []
    for name in ("width", "height"):
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"{name} must be an integer from 1 to {MAX_SIDE}, got {json.dumps(value)[:40]}",
            )
        sides.append(value)
    width, height = sides
    pixels = body["pixels"]
    if not isinstance(pixels, list) or len(pixels) != width * height:
        got = f"{len(pixels)} values" if isinstance(pixels, list) else type(pixels).__name__
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"pixels must be a list of width * height = {width * height} integers, got {got}",
        )
    if not all(type(p) is int and 0 <= p <= 255 for p in pixels):
        bad = next(p for p in pixels if not (type(p) is int and 0 <= p <= 255))
        shown = json.dumps(bad) if not isinstance(bad, float) or math.isfinite(bad) else str(bad)
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"pixels must be integers from 0 to 255, got {shown[:40]}"
        )
    return np.asarray(pixels, np.float32).reshape(height, width)
