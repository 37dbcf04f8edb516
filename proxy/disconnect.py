"""Whether the client of a request still waiting (for a backend's slot) has gone away.

A WSGI application is told of a disconnect only when it writes or reads; a request waiting in the queue does
neither, so it looks at the connection itself: readable with nothing to read means the client closed it
(or reset it). The connection is found in the environ under the key each server uses: ours
(``server.Handler`` puts it there), gunicorn's and werkzeug's. A TLS connection cannot be peeked at without
reading from it, so there no disconnect is seen until the answer is written.
"""
from __future__ import annotations

import select
import socket
from collections.abc import Callable
from typing import Any

SOCKET_KEYS = ("llm_proxy.socket", "gunicorn.socket", "werkzeug.socket")


def client_gone(environ: dict[str, Any]) -> Callable[[], bool] | None:
    """A check that says True once the request's client has closed its connection; None when the
    connection cannot be watched (no socket in the environ, or TLS)."""
    sock = next((environ[k] for k in SOCKET_KEYS if environ.get(k) is not None), None)
    if sock is None or hasattr(sock, "cipher"):
        return None

    def gone() -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""  # data instead: a pipelined request, still there
        except (ConnectionError, TimeoutError):
            return True
        except (OSError, ValueError):  # closed here, or not a socket after all: not the client's doing
            return False
    return gone
