"""What both front doors share: the services object, reading the JSON body, starting an exchange,
relaying an upstream answer (streamed or whole), and rendering errors in the caller's dialect."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from flask import Response, current_app, request
from werkzeug.exceptions import HTTPException

from .. import jsonio, keycase
from ..accesslog import ENVIRON_EXCHANGE, ENVIRON_REQUEST_ID
from ..body import read_body, release_body
from ..catalog import Catalog, model_not_found
from ..config import Settings
from ..errors import (BackendUnavailable, BadRequest, ModelNotFound, NotFound, PayloadTooLarge, ProxyError,
                      ollama_error_body, openai_error_body)
from ..exchange import Exchange, Relay
from ..store.record import REFUSED
from ..policy import ENVIRON_JSON, ENVIRON_KEY_NAME, ENVIRON_REFUSED

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
JSON = "application/json; charset=utf-8"


@dataclass
class Services:
    settings: Settings
    backend: Any
    catalog: Catalog
    sinks: list[Callable[[Exchange], None]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


def services() -> Services:
    return current_app.extensions["llm_proxy"]


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(jsonio.dumps(obj), status=status, mimetype=None, content_type=JSON, headers=headers)


def raw_json_response(raw: bytes, status: int = 200) -> Response:
    return Response(raw, status=status, content_type=JSON)


def read_json() -> Any:
    """The request body as JSON, or BadRequest with a message a person can act on."""
    parsed = request.environ.get(ENVIRON_JSON)
    data = read_body(request, services().settings.max_request_bytes)
    if parsed is None:  # else the gate parsed it already (to check the model)
        if not data.strip():
            raise BadRequest("the request body is empty; send a JSON object")
        try:
            parsed = jsonio.loads(data)
        except ValueError as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from None
        keycase.check(parsed)  # `model` and `Model` (the gate checks a body it parses)
    if jsonio.too_deep(parsed, data):
        raise BadRequest(f"the request body nests arrays and objects more than {jsonio.MAX_DEPTH} levels deep")
    return parsed


def _body_for_log() -> bytes:
    """The request body for the record: not read when the gate refused the request (it may be huge), and
    empty when it cannot be read (too large, client gone) — the view's own read then fails in the dialect."""
    if request.environ.get(ENVIRON_REFUSED):
        return b""
    try:
        return read_body(request, services().settings.max_request_bytes)
    except (HTTPException, PayloadTooLarge):
        return b""


REFUSED_PEEK_BYTES = 65536  # a refused request's body is read for its model name only up to this size


def _model_of_refused() -> str | None:
    """The model a refused request asked for, for its log row: from the body the gate parsed, or from a small
    body read here; a larger one is never read (anyone can send refused requests)."""
    environ = request.environ
    if request.path.startswith("/v1/models/"):
        return request.path[len("/v1/models/"):][:255] or None
    body = environ.get(ENVIRON_JSON)
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
    environ = request.environ
    exchange = Exchange(
        request_id=environ.get(ENVIRON_REQUEST_ID, ""), front=front, endpoint=request.path,
        method=request.method, client=environ.get("REMOTE_ADDR") or "",
        user_agent=environ.get("HTTP_USER_AGENT", "")[:300],
        client_body=_body_for_log(), max_body=svc.settings.log_max_body_bytes, sinks=svc.sinks)
    exchange.key_name = request.environ.get(ENVIRON_KEY_NAME)
    exchange.backend_name = svc.backend.describe()
    exchange.backend_type = svc.backend.type
    request.environ[ENVIRON_EXCHANGE] = exchange
    return exchange


def begin(front: str, check: Callable[[Any], str]) -> tuple[Exchange, Any]:
    """Start the exchange, read and check the body; the model asked for is noted."""
    exchange = start_exchange(front)
    body = read_json()
    exchange.model_requested = check(body)
    return exchange, body


def route_model(exchange: Exchange) -> str:
    """The backend's name for the model asked for (aliases applied); ModelNotFound if unknown."""
    exchange.model_upstream = services().catalog.upstream_name(exchange.model_requested)
    return exchange.model_upstream


def current_exchange() -> Exchange | None:
    return request.environ.get(ENVIRON_EXCHANGE)


def upstream_backend() -> Any:
    """The backend, for a call that costs something there."""
    return services().backend


def open_upstream(exchange: Exchange, path: str, out: dict) -> Any:
    """POST `out` to the backend, noting the body sent for the log; error statuses raise."""
    release_body(request)  # parsed and copied for the log: the backend gets `out`, encoded below
    payload = jsonio.dumps(out)
    exchange.sent_upstream(payload)
    return upstream_backend().open("POST", path, payload, request_id=exchange.request_id, stream=exchange.stream)


def read_whole(exchange: Exchange, upstream: Any) -> bytes:
    """The rest of a non-streamed upstream answer (kept for the log), connection released. A passthrough's
    answer and usage are read from this whole body, never from the log's possibly truncated copy."""
    try:
        raw = b"".join(exchange.upstream_chunks(upstream))
    except OSError as exc:
        raise upstream.error_for(exc) from None
    finally:
        upstream.close()
    exchange.took_whole(raw)
    return raw


def upstream_object(raw: bytes) -> dict:
    """A non-streamed upstream answer as a JSON object, or a 502 naming the backend."""
    try:
        value = jsonio.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise BackendUnavailable(f"{services().backend.describe()} sent a body that is not a JSON object: {raw[:200]!r}")
    return value


def stream_response(exchange: Exchange, upstream: Any, chunks: Iterable[bytes], dialect: str,
                    translate: Any = None) -> Response:
    exchange.stream = True
    exchange.status = 200
    exchange.pack_stream_copies()
    # The environ lives as long as the stream: drop what only the view needed (the parsed body and
    # werkzeug's request with its cached copy of the body), or a long chat context stays in memory
    # three times over for minutes. The log keeps its own copy.
    request.environ.pop(ENVIRON_JSON, None)
    request.environ.pop("werkzeug.request", None)
    relay = Relay(exchange, upstream, chunks, dialect, translate)
    mimetype = SSE if dialect == "openai" else NDJSON
    return Response(relay, status=200, mimetype=mimetype, headers=STREAM_HEADERS, direct_passthrough=True)


def finish_whole(exchange: Exchange, response: Response, client_body: bytes) -> Response:
    exchange.status = response.status_code
    exchange.client_response.add(client_body)
    exchange.finish()
    return response


def _visible_models(exc: ProxyError) -> ProxyError:
    """A 404 that lists models lists only those the caller's key may use (KEYS_FILE `models`)."""
    if not isinstance(exc, ModelNotFound) or not exc.available:
        return exc
    from ..policy.gate import ENVIRON_CALLER, model_allowed  # the gate imports this module

    caller = request.environ.get(ENVIRON_CALLER)
    if caller is None or caller.models is None:
        return exc
    return model_not_found(exc.model, [n for n in exc.available if model_allowed(n, caller.models)])


def render_error(exc: ProxyError, dialect: str) -> Response:
    exc = _visible_models(exc)
    body = openai_error_body(exc) if dialect == "openai" else ollama_error_body(exc)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    response = json_response(body, exc.status, headers)
    exchange = current_exchange()
    if exchange is None and request.path.startswith(("/api/", "/v1/")) and request.method != "OPTIONS":
        exchange = start_exchange(dialect)  # rejected before a view started one: still recorded
    if exchange is not None and not exchange._finished:
        exchange.fail(exc)
        exchange.status = exc.status
        if request.environ.get(ENVIRON_REFUSED):  # compact, on its own log budget (LOG_MAX_REFUSED)
            exchange.outcome = REFUSED
            if exchange.model_requested is None:
                exchange.model_requested = _model_of_refused()
        exchange.client_response.add(response.get_data())
        exchange.finish()
    return response


def dialect_of_path(path: str) -> str:
    return "openai" if path[:3].lower() == "/v1" else "ollama"


def http_exception_to_proxy_error(exc: HTTPException) -> ProxyError:
    if exc.code == 404:
        return NotFound(f"{request.method} {request.path} is not served by this proxy")
    if exc.code == 405:
        return ProxyError(f"{request.method} is not allowed on {request.path}", status=405)
    if exc.code == 413:
        return PayloadTooLarge("the request body is larger than this proxy accepts (MAX_REQUEST_BYTES)")
    return ProxyError(exc.description or exc.name, status=exc.code or 400)
