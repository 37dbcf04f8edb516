"""The one object that carries a request's state from hook to hook: ``RequestContext``.

The access log (WSGI middleware, outside Flask) makes it with the request id and hands it in once, under
``ENVIRON_CONTEXT``; inside Flask ``current()`` returns it. The gate fills in the caller,
the parsed body, the refusal and the ticket; the views and the error rendering start the exchange on it; the
access line reads the exchange back from it when the response is done. Nothing else of ours rides in the
environ (but the log view's replay marks, ``ENVIRON_REPLAY_*``), so what one hook leaves for another is
written down here, in one place.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from flask import request

ENVIRON_CONTEXT = "llm_proxy.context"  # the WSGI hand-off from the access log to the app: a RequestContext
# The log view's replay (an in-process request) names the exchange it sends again and, with several backends,
# the one backend to send it to; no HTTP client can set environ keys like these
ENVIRON_REPLAY_OF = "llm_proxy.replay_of"
ENVIRON_REPLAY_BACKEND = "llm_proxy.replay_backend"
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_from(environ: dict) -> str:
    """The client's `X-Request-ID` when it is well formed, else a new random one."""
    given = environ.get("HTTP_X_REQUEST_ID", "")
    return given if REQUEST_ID_RE.match(given) else os.urandom(16).hex()


@dataclass(slots=True, eq=False)
class RequestContext:
    """One request's state: who asked (``caller``, the gate's Caller: key name, limits, models), the body the
    gate parsed (``body``, reused by the view, dropped once a stream starts), whether it was ``refused`` (its
    body is then not read for the log), the admission ``ticket`` still to settle, and the ``exchange`` that
    records it."""

    request_id: str
    started: float = field(default_factory=time.time)  # wall clock, for records no view started
    caller: Any = None
    body: Any = None
    refused: bool = False
    ticket: Any = None
    exchange: Any = None
    backend: Any = None  # with several backends: the one this attempt goes to (``views.common.upstream_backend``)
    session: str | None = None  # with several backends and affinity: the conversation's key (``affinity``)
    cache: str | None = None  # CACHE on: what the response cache did (HIT, MISS, BYPASS), sent as X-Cache
    twin: Any = None  # a leading stream's dedupe.Shared: its Relay feeds the attached identical requests

    @property
    def key_name(self) -> str | None:
        """The name of the key that admitted the request (None: no key, or not gated)."""
        return self.caller.name if self.caller is not None else None


def current() -> RequestContext:
    """The context of the request being served (made here when no access log handed one in). Read from the
    request's environ, not cached in ``flask.g``: an app context can outlive one request."""
    environ = request.environ
    ctx = environ.get(ENVIRON_CONTEXT)
    if ctx is None:
        ctx = environ[ENVIRON_CONTEXT] = RequestContext(request_id_from(environ))
    return ctx
