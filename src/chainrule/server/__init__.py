"""``chainrule serve``: a local page to draw a digit and watch back-propagation train the network.

:func:`create_server` builds the server (a training :class:`~.session.Session` in its own thread,
the HTTP routes of :mod:`.http`, the event streams of :mod:`.stream`, the pictures of
:mod:`.views`); the command line runs it until Ctrl-C. See ``docs/serve.md``.
"""

from __future__ import annotations

from ..history import History
from ..network import Sequential
from ..optim import Optimizer
from .http import MAX_BODY, ChainruleServer, allowed_hosts
from .session import Data, Session, Settings
from .stream import Broadcaster

__all__ = [
    "MAX_BODY",
    "ChainruleServer",
    "Data",
    "Session",
    "Settings",
    "allowed_hosts",
    "create_server",
]


def create_server(
    host: str = "127.0.0.1",
    port: int = 8000,
    model: Sequential | None = None,
    optimizer: Optimizer | None = None,
    data: Data | None = None,
    settings: Settings | None = None,
    history: History | None = None,
    max_clients: int | None = None,
) -> ChainruleServer:
    """A server for the page, bound but not yet serving (``.start()`` in the background, or
    ``serve_forever()``).

    Args:
        host: the address to bind; 127.0.0.1 keeps the page to this machine.
        port: the port (0: any free port; ``.url`` says which).
        model: the network to show and train (the notes' 784-100-10 when ``None``).
        optimizer: its optimizer (SGD when ``None``).
        data: the images to train on (the shipped MNIST when ``None``).
        settings: starting seed, learning rate and batch size.
        history: the epochs a checkpoint already trained (a :class:`~chainrule.History`).
        max_clients: the most pages streaming at once.

    Raises:
        ValueError: if the model does not take 28 x 28 digits or answer with ten scores.
        OSError: if the address cannot be bound (the port is in use).

    Example:
        >>> server = create_server(port=0)  # doctest: +SKIP
        >>> server.start(); print(server.url); server.stop()  # doctest: +SKIP
    """
    broadcaster = Broadcaster() if max_clients is None else Broadcaster(max_clients)
    session = Session(model, optimizer, data, broadcaster, settings, history)
    return ChainruleServer((host, port), session, broadcaster)
