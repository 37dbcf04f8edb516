"""The ``Exchange`` that records the request being served: started here only (who, what, its body for the
log, which front door and so which dialect) and kept on the request's context, where the error rendering,
the after-request hooks and the access line find it. A view starts it (``views.common.begin``), or
``render_error`` for an error no view recorded, or ``store.hooks`` for an answer no view recorded; it is
written once, when it finishes."""
from __future__ import annotations

from flask import request
from werkzeug.exceptions import HTTPException

from . import jsonio, sessions
from .body import read_body
from .context import ENVIRON_REPLAY_OF, current
from .errors import PayloadTooLarge
from .exchange import Exchange
from .services import services


def _body_for_log() -> bytes:
    """The request body for the record: not read when the gate refused the request (it may be huge), and
    empty when it cannot be read (too large, client gone) — the view's own read then fails in the dialect."""
    if current().refused:
        return b""
    try:
        return read_body(request, services().settings.max_request_bytes)
    except (HTTPException, PayloadTooLarge):
        return b""


REFUSED_PEEK_BYTES = 65536  # a refused request's body is read for its model name only up to this size


def model_of_refused() -> str | None:
    """The model a refused request asked for, for its log row: from the body the gate parsed, or from a small
    body read here; a larger one is never read (anyone can send refused requests)."""
    if request.path.startswith("/v1/models/"):
        return request.path[len("/v1/models/"):][:255] or None
    body = current().body
    if body is None:
        length = request.content_length
        if not length or length > REFUSED_PEEK_BYTES:
            return None
        try:
            body = jsonio.loads(request.get_data(cache=True))
        except (HTTPException, ValueError, OSError):
            return None
    if isinstance(body, dict):
        for name in ("model", "name"):
            if isinstance(body.get(name), str) and body[name]:
                return body[name][:255]
    return None


def start_exchange(front: str) -> Exchange:
    svc = services()
    ctx = current()
    environ = request.environ
    exchange = Exchange(
        request_id=ctx.request_id, front=front, endpoint=request.path,
        method=request.method, client=environ.get("REMOTE_ADDR") or "",
        user_agent=environ.get("HTTP_USER_AGENT", "")[:300],
        client_body=_body_for_log(), max_body=svc.settings.log_max_body_bytes, sinks=svc.sinks)
    exchange.key_name = ctx.key_name
    exchange.session_id = sessions.from_headers(environ)  # else the view's fingerprint of the body (``begin``)
    exchange.replay_of = environ.get(ENVIRON_REPLAY_OF)
    exchange.backend_name = svc.backend.describe()
    exchange.backend_type = svc.backend.type
    ctx.exchange = exchange
    return exchange


def current_exchange() -> Exchange | None:
    return current().exchange


ANTHROPIC_PATH = "/v1/messages"  # and what is under it: Anthropic's dialect, for errors and the log's front


def dialect_of_path(path: str) -> str:
    if path[:3].lower() != "/v1":
        return "ollama"
    head = path[:len(ANTHROPIC_PATH) + 1].lower()
    return "anthropic" if head in (ANTHROPIC_PATH, ANTHROPIC_PATH + "/") else "openai"
