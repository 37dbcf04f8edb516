"""The requests still running when the server stops, and ending them once its drain time is over.

``Exchange`` notes here which greenlet runs it when it starts, and leaves when it finishes. After
DRAIN_TIMEOUT a stopping server (``proxy.server.Server.drain`` under ``python wsgi.py``, the hooks in
``gunicorn.conf.py`` under gunicorn) calls ``end_running``: ``ShuttingDown`` is raised in every greenlet
still running an exchange, where it waits (mostly for the backend). A stream's ``Relay`` turns it into a
final error chunk in the stream's dialect, a request still waiting for its answer gets a 503 in its
dialect, and either is recorded with the outcome ``cancelled``.
"""
from __future__ import annotations

import weakref
from typing import Any

from greenlet import getcurrent

from .errors import ShuttingDown

# greenlet -> the exchange it runs; weak, so a greenlet that ends without finishing its exchange leaves no trace
_running: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

stopping = False  # set by a stopping server: responses from now on close their connection

MESSAGE = "the proxy is shutting down and its drain time (DRAIN_TIMEOUT) is over; the request was ended"


def started(exchange: Any) -> None:
    _running[getcurrent()] = exchange


def finished(exchange: Any) -> None:
    current = getcurrent()
    if _running.get(current) is exchange:
        del _running[current]


def running() -> int:
    """How many exchanges are running now."""
    return sum(1 for exchange in list(_running.values()) if not exchange.finished)


def snapshot(sinks: Any = None) -> list[Any]:
    """The exchanges running now in this process (one gunicorn worker: each has its own), oldest first; with
    ``sinks``, only those of the app whose sinks list that is (tests run several apps in one process)."""
    found = [e for e in list(_running.values()) if not e.finished and (sinks is None or e.sinks_are(sinks))]
    return sorted(found, key=lambda e: e.started)


def end_running() -> int:
    """Raise ``ShuttingDown(MESSAGE)`` in every greenlet still running an exchange; how many were ended."""
    ended = 0
    for glet, exchange in list(_running.items()):
        kill = getattr(glet, "kill", None)  # gevent greenlets only (the servers' request greenlets)
        if exchange.finished or kill is None or getattr(glet, "dead", True) or glet is getcurrent():
            continue
        kill(ShuttingDown(MESSAGE), block=False)
        ended += 1
    return ended


FLUSH_TIMEOUT_S = 5.0  # the log writer's last flush at exit; a database that does not answer loses what is queued


def flush_log(app: Any) -> bool:
    """Run the app's shutdown (the log writer writes what is queued) for at most FLUSH_TIMEOUT_S, from a
    greenlet; False when it did not finish (the caller exits anyway)."""
    import logging

    import gevent

    shutdown = app.extensions["llm_proxy"].extras.get("shutdown")
    if shutdown is None:
        return True
    glet = gevent.spawn(shutdown)
    glet.join(FLUSH_TIMEOUT_S)
    if glet.dead:
        return True
    store = app.extensions["llm_proxy"].extras.get("log_store")
    queued = store.writer.pending() if store is not None else "?"
    logging.getLogger(__name__).error("the log database did not finish the last write within %g s: %s records "
                                      "still queued are lost", FLUSH_TIMEOUT_S, queued)
    return False
