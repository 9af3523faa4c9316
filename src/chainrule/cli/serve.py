"""``chainrule serve [MODEL]``: a local page to draw a digit and watch back-propagation train the
network live. Prints its URL and serves until Ctrl-C (exit code 0)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from .. import kernels
from ._common import Help, UsageError, load_model

#: The addresses that keep the page to this machine; any other gets a warning.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return value


def add_parser(sub: Any) -> None:
    sv = sub.add_parser(
        "serve",
        help="a local page: draw a digit, watch back-propagation train the network live",
        description="Serve a page on this machine where you draw a digit and the network "
        "classifies it, and watch it train on MNIST live (curves, weights, galleries, a step "
        "inspector). Prints the URL and serves until Ctrl-C.",
        formatter_class=Help,
    )
    sv.add_argument(
        "model",
        type=Path,
        nargs="?",
        help="a model.npz written by chainrule (default: an untrained 784-100-10 network)",
    )
    sv.add_argument("--port", type=_port, default=8000, help="the port (0: any free port)")
    sv.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on; any other than 127.0.0.1 lets other machines in",
    )
    sv.add_argument(
        "--no-browser", action="store_true", help="do not open the page in a web browser"
    )
    sv.set_defaults(run=command)


def command(args: argparse.Namespace) -> int:
    """Serve the page until Ctrl-C (exit code 0)."""
    from ..server import create_server

    model = optimizer = history = None
    if args.model is not None:
        saved = load_model(args.model)
        model, optimizer, history = saved.model, saved.optimizer, saved.history
    if args.host not in LOOPBACK:
        print(
            f"chainrule: warning: serving on {args.host}, not 127.0.0.1: anyone who can reach "
            "this machine can use the page and its training, and nothing is encrypted",
            file=sys.stderr,
            flush=True,
        )
    try:
        server = create_server(args.host, args.port, model, optimizer, history=history)
    except ValueError as exc:
        raise UsageError(f"{args.model}: {exc}") from exc
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {args.host} port {args.port}: {exc.strerror or exc}"
            + (" (choose another with --port)" if args.port else "")
        ) from exc
    server.session.start()
    print(f"chainrule serve: {server.url}  (Ctrl-C stops it)", flush=True)
    if not args.no_browser:
        import webbrowser

        with contextlib.suppress(Exception):  # no browser on this machine: the URL is printed
            webbrowser.open(server.url)
    try:
        with _one_blas_thread():  # small products: one thread is fastest on a busy machine
            server.serve_forever()
    except KeyboardInterrupt:
        print("chainrule serve: stopped", flush=True)
    finally:
        server.broadcaster.close()
        server.session.close()
        server.server_close()
    return 0


def _one_blas_thread() -> contextlib.AbstractContextManager[None]:
    if importlib.util.find_spec("threadpoolctl") is None:  # the libraries' own setting
        return contextlib.nullcontext()
    return kernels.threads(1)
