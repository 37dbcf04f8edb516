"""What both front doors share: reading the JSON body, starting an exchange for it, and relaying an
upstream answer (streamed or whole)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Response, request

from .. import clamp, failover, jsonio, keycase, sessions
from ..affinity import session_of
from ..backends.base import Backend, Upstream
from ..body import read_body, release_body
from ..catalog import ModelInfo, model_allowed
from ..clientgone import client_gone
from ..context import current
from ..errors import BackendUnavailable, BadRequest, ProxyError
from ..exchange import Exchange, Relay
from ..recording import start_exchange
from ..services import services

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


def read_json() -> Any:
    """The request body as JSON, or BadRequest with a message a person can act on."""
    parsed = current().body
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


def begin(front: str, check: Callable[[Any], str]) -> tuple[Exchange, Any]:
    """Start the exchange, read and check the body; the model asked for is noted."""
    exchange = start_exchange(front)
    body = read_json()
    exchange.model_requested = check(body)
    if exchange.session_id is None:  # no session header: the conversation's fingerprint
        exchange.session_id = sessions.fingerprint(body)
    pool = services().pool
    if pool is not None and pool.routing.affinity:
        current().session = session_of(body, request.environ, exchange.session_id)
    return exchange, body


def clamped(exchange: Exchange, body: dict, dialect: str) -> dict:
    """``body`` with its output limit lowered to what the model's context leaves (AGENT_SANITIZE, ``clamp``);
    the log's two request bodies show the change."""
    settings = services().settings
    if not settings.agent_sanitize or not clamp.asks_for_limit(body, dialect):
        return body
    try:
        context = services().catalog.find(exchange.model_requested).context_length
    except ProxyError:  # an unknown model: ``serve`` says so
        return body
    size = len(read_body(request, settings.max_request_bytes))
    return clamp.clamp(body, dialect, context, size)[0]


def listed_models() -> list[ModelInfo]:
    """What the model lists show: the catalog's models, only those the caller's key may use (KEYS_FILE `models`)."""
    models = services().catalog.models()
    caller = current().caller
    if caller is None or caller.models is None:
        return models
    return [m for m in models if model_allowed(m.id, caller.models)]


def route_model(exchange: Exchange) -> str:
    """The backend's name for the model asked for (aliases applied); ModelNotFound if unknown."""
    assert exchange.model_requested is not None  # begin() noted it
    exchange.model_upstream = services().catalog.upstream_name(exchange.model_requested)
    return exchange.model_upstream


def upstream_backend() -> Backend:
    """The backend this attempt goes to (with several backends, the one ``serve`` chose), for a call that
    costs something there."""
    return current().backend or services().backend


def serve(exchange: Exchange, attempt: Callable[[Backend, str], Response]) -> Response:
    """Answer with ``attempt(backend, its model name)``: the one backend, or, with BACKENDS_FILE, the pool's
    backends in turn until one answers (``failover.run``, which may wait for a free slot). The attempt decides
    passthrough or translation by the dialect of the backend it is given."""
    svc = services()
    if svc.pool is None:
        return attempt(svc.backend, route_model(exchange))
    environ = request.environ
    return failover.run(svc.pool, exchange, attempt, gone=lambda: client_gone(environ))


def management_backend(action: str, model: str | None = None) -> tuple[Backend, str | None]:
    """Where model management and blobs go, and the backend's name in BACKENDS_FILE: the one backend (no
    name), or the pool's Ollama backend for it (``Pool.management_member``: 503 or 404 when there is none).
    A pool without any Ollama backend: its first backend, which answers as a non-Ollama one does."""
    svc = services()
    if svc.pool is None:
        return svc.backend, None
    member = svc.pool.management_member(action, model) or svc.pool.members[0]
    current().backend = member.backend
    return member.backend, member.name


def open_upstream(exchange: Exchange, path: str, out: dict) -> Upstream:
    """POST `out` to the backend, noting the body sent for the log; error statuses raise."""
    release_body(request)  # parsed and copied for the log: the backend gets `out`, encoded below
    payload = jsonio.dumps(out)
    exchange.sent_upstream(payload)
    return upstream_backend().open("POST", path, payload, request_id=exchange.request_id, stream=exchange.stream)


def read_whole(exchange: Exchange, upstream: Upstream) -> bytes:
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
        described = upstream_backend().describe()
        raise BackendUnavailable(f"{described} sent a body that is not a JSON object: {raw[:200]!r}")
    return value


def stream_response(exchange: Exchange, upstream: Upstream, chunks: Iterable[bytes], dialect: str,
                    translate: Any = None) -> Response:
    exchange.stream = True
    exchange.status = 200
    exchange.pack_stream_copies()
    # The environ (and the context in it) lives as long as the stream: drop what only the view needed
    # (the parsed body and werkzeug's request with its cached copy of the body), or a long chat context
    # stays in memory three times over for minutes. The log keeps its own copy.
    current().body = None
    request.environ.pop("werkzeug.request", None)
    relay = Relay(exchange, upstream, chunks, dialect, translate)
    relay.shared = current().twin  # identical requests attached to this one (``views.early``)
    mimetype = NDJSON if dialect == "ollama" else SSE
    return Response(relay, status=200, mimetype=mimetype, headers=STREAM_HEADERS, direct_passthrough=True)


def finish_whole(exchange: Exchange, response: Response, client_body: bytes) -> Response:
    exchange.status = response.status_code
    exchange.client_response.add(client_body)
    exchange.finish()
    return response


