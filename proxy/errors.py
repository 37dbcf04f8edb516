"""Typed errors and their rendering in each dialect.

    ProxyError (status, message)
    ├── BadRequest            400  malformed JSON, wrong types, missing fields
    │   └── PayloadTooLarge   413
    ├── Unauthorized          401
    ├── ModelNotFound         404  model unknown to the backend
    ├── NotFound              404  unknown route / endpoint not served
    ├── MethodNotAllowed      405
    ├── RateLimited           429  (carries retry_after seconds)
    ├── NotSupported          501  feature the configured backend cannot do
    ├── ShuttingDown          503  the server stopped and its drain time is over (outcome: cancelled)
    ├── Overloaded            503  every backend for the model is at max_concurrency and the wait is full or over
    ├── ClientGone            499  the client closed the connection before an answer (outcome: cancelled)
    └── BackendError               anything the upstream did
        ├── BackendUnavailable 502 refused / unreachable / broken connection
        ├── BackendTimeout     504 no answer within BACKEND_TIMEOUT
        └── UpstreamStatus     upstream answered with an error status (status passed through)

Backends raise these (never the HTTP client's or the socket's exceptions); views render them with
``ollama_error_body`` / ``openai_error_body`` / ``anthropic_error_body``. Messages are meant for people: clients such as
Open WebUI show them as they are.
"""
from __future__ import annotations

from typing import Any

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
# Anthropic's error `type` by status (any other 4xx: invalid_request_error, 5xx: api_error)
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class ProxyError(Exception):
    status = 500
    code: str | None = None
    openai_type: str | None = None  # the OpenAI error `type` when the status alone does not say it
    param: str | None = None

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 param: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if param is not None:
            self.param = param
        self.retry_after = retry_after

    @property
    def outcome(self) -> str:
        if isinstance(self, BackendTimeout):
            return "timeout"
        if isinstance(self, BackendError):
            return "backend_error"
        return "client_error" if self.status < 500 else "error"


class BadRequest(ProxyError):
    status = 400


class PayloadTooLarge(BadRequest):
    status = 413


class Unauthorized(ProxyError):
    status = 401
    code = "invalid_api_key"


class ModelNotFound(ProxyError):
    status = 404
    code = "model_not_found"
    param = "model"
    model: str = ""                          # the name asked for
    available: tuple[str, ...] | None = None  # the names the message lists (catalog.model_not_found)


class NotFound(ProxyError):
    status = 404


class MethodNotAllowed(ProxyError):
    status = 405


class RateLimited(ProxyError):
    status = 429


class NotSupported(ProxyError):
    status = 501


class ShuttingDown(ProxyError):
    """Raised in a request still running when a stopping server's drain time is over (see ``draining``)."""

    status = 503

    @property
    def outcome(self) -> str:
        return "cancelled"


class Overloaded(ProxyError):
    """Every backend that serves the model is at its ``max_concurrency`` and its queue is full, or the wait
    for a slot lasted ``max_wait_s``: come back after ``retry_after``."""

    status = 503
    code = "overloaded"
    openai_type = "overloaded"


class ClientGone(ProxyError):
    """The client closed its connection before any backend answered (no more attempts are made); nobody reads
    the answer, the log records the exchange cancelled. 499 is the status nginx logs for it."""

    status = 499

    @property
    def outcome(self) -> str:
        return "cancelled"


class BackendError(ProxyError):
    status = 502


class BackendUnavailable(BackendError):
    status = 502


class BackendTimeout(BackendError):
    status = 504


class UpstreamStatus(BackendError):
    """The backend answered with an error status; its status is passed through."""


def openai_error_object(exc: ProxyError) -> dict[str, Any]:
    err_type = exc.openai_type or OPENAI_TYPES.get(exc.status) or (
        "server_error" if exc.status >= 500 else "invalid_request_error")
    return {"message": exc.message, "type": err_type, "param": exc.param, "code": exc.code}


def openai_error_body(exc: ProxyError) -> dict[str, Any]:
    return {"error": openai_error_object(exc)}


def ollama_error_body(exc: ProxyError) -> dict[str, Any]:
    return {"error": exc.message}


def anthropic_error_body(exc: ProxyError, request_id: str | None = None) -> dict[str, Any]:
    err_type = ANTHROPIC_TYPES.get(exc.status) or ("api_error" if exc.status >= 500 else "invalid_request_error")
    body: dict[str, Any] = {"type": "error", "error": {"type": err_type, "message": exc.message}}
    if request_id:
        body["request_id"] = request_id
    return body


UPSTREAM_CODES = {"exceed_context_size_error": "context_length_exceeded",
                  "context_length_exceeded": "context_length_exceeded", "model_not_found": "model_not_found"}


def code_from_upstream_body(body: bytes) -> str | None:
    """A well-known OpenAI error code for an upstream error body (llama.cpp's own types mapped)."""
    from . import jsonio

    try:
        data = jsonio.loads(body)
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None
    for key in ("code", "type"):
        value = err.get(key)
        if isinstance(value, str) and value in UPSTREAM_CODES:
            return UPSTREAM_CODES[value]
    return None


MAX_UPSTREAM_MESSAGE = 2000  # characters of a backend's error text passed on (to the client, the log, the row)


def clip_message(text: str, limit: int = MAX_UPSTREAM_MESSAGE) -> str:
    """A backend's error text, cut to ``limit`` characters (marked) so a hostile one cannot fill answers and rows."""
    return text if len(text) <= limit else text[:limit] + "… (cut)"


def message_from_upstream_body(body: bytes, fallback: str) -> str:
    """Best human-readable message from an upstream error body of either dialect, clipped."""
    from . import jsonio  # local: errors must stay importable without orjson at import time

    text = body.decode("utf-8", "replace").strip()
    try:
        data = jsonio.loads(body)
    except ValueError:
        return text[:500] or fallback
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or err.get("msg")
        if isinstance(err, str) and err:
            return clip_message(err)
        if isinstance(err, list) and err:  # FastAPI-style validation details
            return clip_message("; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item)
                                          for item in err[:50]))
    return text[:500] or fallback
