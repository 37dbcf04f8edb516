"""Answers in the caller's dialect: JSON responses, and errors rendered as OpenAI (`/v1`), Anthropic
(`/v1/messages`) or Ollama (`/api`) bodies.
An error is recorded against the request's exchange (one is started for a request refused before a
view began), so the gate, the views and the app's error handlers all answer and record it one way."""
from __future__ import annotations

from typing import Any

from flask import Response, request
from werkzeug.exceptions import HTTPException

from . import jsonio
from .catalog import model_allowed, model_not_found
from .context import current
from .errors import (
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    ProxyError,
    anthropic_error_body,
    ollama_error_body,
    openai_error_body,
)
from .recording import current_exchange, model_of_refused, start_exchange
from .store.record import REFUSED

JSON = "application/json; charset=utf-8"


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(jsonio.dumps(obj), status=status, mimetype=None, content_type=JSON, headers=headers)


def raw_json_response(raw: bytes, status: int = 200) -> Response:
    return Response(raw, status=status, content_type=JSON)


def visible_models(exc: ProxyError) -> ProxyError:
    """A 404 that lists models lists only those the caller's key may use (KEYS_FILE `models`)."""
    if not isinstance(exc, ModelNotFound) or not exc.available:
        return exc
    caller = current().caller
    if caller is None or caller.models is None:
        return exc
    return model_not_found(exc.model, [n for n in exc.available if model_allowed(n, caller.models)])


def render_error(exc: ProxyError, dialect: str) -> Response:
    exc = visible_models(exc)
    if dialect == "anthropic":
        body = anthropic_error_body(exc, current().request_id)
    else:
        body = openai_error_body(exc) if dialect == "openai" else ollama_error_body(exc)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    response = json_response(body, exc.status, headers)
    exchange = current_exchange()
    if exchange is None and request.path.startswith(("/api/", "/v1/")) and request.method != "OPTIONS":
        exchange = start_exchange(dialect)  # rejected before a view started one: still recorded
    if exchange is not None and not exchange.finished:
        exchange.fail(exc)
        exchange.status = exc.status
        if current().refused:  # compact, on its own log budget (LOG_MAX_REFUSED)
            exchange.outcome = REFUSED
            if exchange.model_requested is None:
                exchange.model_requested = model_of_refused()
        exchange.client_response.add(response.get_data())
        exchange.finish()
    return response


def http_exception_to_proxy_error(exc: HTTPException) -> ProxyError:
    if exc.code == 404:
        return NotFound(f"{request.method} {request.path} is not served by this proxy")
    if exc.code == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
    if exc.code == 413:
        return PayloadTooLarge("the request body is larger than this proxy accepts (MAX_REQUEST_BYTES)")
    return ProxyError(exc.description or exc.name, status=exc.code or 400)
