"""Flask glue for recording: requests to /api and /v1 that no view made an exchange for.

Generation and embedding views start their own ``Exchange``; errors start one in ``render_error``.
What is left — model details, single model look-ups, model management, blobs — gets an exchange
here when the response is ready. Polling (model lists, version) is only counted unless LOG_POLLING.
"""
from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, request

from .. import jsonio
from ..config import Settings
from ..context import current
from ..errors import message_from_upstream_body
from ..recording import current_exchange, dialect_of_path, start_exchange

POLLING = frozenset({"/api/tags", "/api/ps", "/api/version", "/v1/models"})


def install_hooks(app: Flask, store: Any, settings: Settings) -> None:
    @app.after_request
    def record_unrecorded(response: Response) -> Response:
        path = request.path
        if not path.startswith(("/api/", "/v1/")) or request.method == "OPTIONS":
            return response
        if current_exchange() is not None:
            return response
        if path in POLLING and not settings.log_polling and response.status_code < 400:
            store.count_poll(path, request.remote_addr or "", time.time())
            return response
        exchange = start_exchange(dialect_of_path(path))
        exchange.started = current().started
        exchange.model_requested = _model_of(request.get_data(cache=True))
        exchange.local = True
        exchange.status = response.status_code
        if not response.is_streamed:
            body = response.get_data()
            exchange.client_response.add(body)
            if response.status_code >= 400:
                exchange.outcome = "client_error" if response.status_code < 500 else "backend_error"
                exchange.error = message_from_upstream_body(body, f"HTTP {response.status_code}")
        exchange.finish()
        return response


def _model_of(raw: bytes) -> str | None:
    if not raw or raw[:1] != b"{":
        return None
    try:
        body = jsonio.loads(raw)
    except ValueError:
        return None
    name = body.get("model") or body.get("name") if isinstance(body, dict) else None
    return name if isinstance(name, str) else None
