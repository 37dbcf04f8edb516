"""Has the client gone? Asked before a retry (``failover.run``): a client that closed its connection while the
first backends failed must not cost more attempts (and backoff) on the others.

A WSGI server sees a disconnect only when it reads or writes the client's socket, and the request body has been
read by then. So the socket is peeked at, without waiting and without taking anything: end of file (or a reset)
means the client closed; nothing to read means it is still waiting for the answer; bytes (a pipelined request)
are left alone and taken for a client still there. A client that only half-closes its side (shut down writing,
still reading) looks gone too; HTTP/1.1 clients do not do that, and nginx reads it the same way.

The socket is the one each server puts in the environ: pywsgi's ``Handler`` (``proxy.server``) under
``CLIENT_SOCKET``, gunicorn's ``gunicorn.socket``, werkzeug's ``werkzeug.socket``. Where there is none, the
client is taken for present.
"""
from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

CLIENT_SOCKET = "llm_proxy.socket"
SOCKET_KEYS = (CLIENT_SOCKET, "gunicorn.socket", "werkzeug.socket")
PEEK = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)


def _plain_socket() -> type:
    """The standard library's socket class, not gevent's (whose recv would wait on the hub for data)."""
    try:
        from gevent import monkey
        return monkey.get_original("socket", "socket")
    except ImportError:  # pragma: no cover - gevent is a dependency
        return socket.socket


def client_gone(environ: Mapping[str, Any]) -> bool:
    """True when the client's side of the connection is closed (read without waiting, nothing consumed)."""
    sock = next((environ[k] for k in SOCKET_KEYS if environ.get(k) is not None), None)
    if sock is None or not PEEK & getattr(socket, "MSG_DONTWAIT", 0):
        return False
    try:
        fd = sock.fileno()
    except OSError:  # closed already
        return True
    if fd < 0:
        return True
    peek = _plain_socket()(fileno=fd)  # a second object over the same descriptor, detached below: never closes it
    try:
        return peek.recv(1, PEEK) == b""
    except (BlockingIOError, InterruptedError):
        return False  # nothing to read: the client waits for its answer
    except (ConnectionResetError, BrokenPipeError):
        return True
    except OSError:
        return False
    finally:
        peek.detach()
