"""The agent fronts passed through to a backend that speaks them itself (BACKEND_NATIVE, BACKENDS_FILE's
``native``): the front's own body, sanitised as the translation would be, to the backend's ``/v1/messages`` or
``/v1/responses``, and its answer relayed byte for byte (only the client's model name put back), as the chat
passthrough does; the log's answer is read from the kept copy at the end (``assemble_native``)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response

from ..assemble_native import (
    assemble_messages_json,
    assemble_messages_sse,
    assemble_responses_json,
    assemble_responses_sse,
)
from ..backends.base import Backend
from ..dialects import anthropic as an
from ..errors import ProxyError
from ..exchange import Exchange
from ..passthrough import model_renames, passthrough_sse, rename_model
from ..render import raw_json_response
from ..services import services
from .common import clamped, finish_whole, open_upstream, read_whole, stream_response

MESSAGES, RESPONSES = "messages", "responses"  # the names BACKEND_NATIVE and `native` take (values.NATIVE_FRONTS)
PATHS = {MESSAGES: "/v1/messages", RESPONSES: "/v1/responses"}
# (the front's dialect for errors, the limit's clamp dialect, the stream's parser, the whole answer's parser)
FRONTS: dict[str, tuple[str, str, Callable, Callable]] = {
    MESSAGES: ("anthropic", "anthropic", assemble_messages_sse, assemble_messages_json),
    RESPONSES: ("openai", "responses", assemble_responses_sse, assemble_responses_json),
}


def may_be_native(name: str) -> bool:
    """Could a request of front ``name`` be passed through (to the one backend, or to some member of the pool)?
    Then a stream's keep-alives must not send the proxy's own opening event before the backend is chosen."""
    svc = services()
    if svc.pool is None:
        return name in svc.settings.backend_native and svc.backend.type != "stub"
    return any(name in member.spec.native for member in svc.pool.members)


def is_native(exchange: Exchange, backend: Backend, name: str) -> bool:
    """Does the backend this attempt goes to speak front ``name`` itself? (The stub never does.)"""
    if backend.type == "stub":
        return False
    svc = services()
    if svc.pool is None:
        return name in svc.settings.backend_native
    member = svc.pool.by_name.get(exchange.backend_name or "")  # ``failover.run`` names it before the attempt
    return member is not None and name in member.spec.native


def sanitised(exchange: Exchange, name: str, body: dict, upstream_model: str) -> dict:
    """What goes to the backend: the body with the backend's model name and, with AGENT_SANITIZE, without
    Claude Code's billing block and with the output limit within the model's context (``clamp``)."""
    out = {**body, "model": upstream_model}
    if services().settings.agent_sanitize and name == MESSAGES and "system" in out:
        out["system"] = an.without_billing(out["system"])
    return clamped(exchange, out, FRONTS[name][1])


class _Failing:
    """No translation (the chunks go as they are); a failure after the first byte ends the stream the front's
    own way (``failure``: Responses' ``response.failed``) instead of the dialect's error chunk."""

    error = None

    def __init__(self, failure: Callable[[ProxyError], bytes]):
        self.failure = failure

    def __call__(self, chunk: bytes) -> tuple[bytes, ...]:
        return (chunk,)

    def end(self) -> tuple[bytes, ...]:
        return ()


def passthrough(exchange: Exchange, name: str, body: dict, upstream_model: str,
                failure: Callable[[ProxyError], bytes] | None = None) -> Response:
    """The backend's own answer to the sanitised body, streamed as it comes or whole; an error status is raised
    by ``open_upstream`` (the front renders it in its dialect, failover may try another backend)."""
    dialect, _, parse_sse, parse_json = FRONTS[name]
    out = sanitised(exchange, name, body, upstream_model)
    upstream = open_upstream(exchange, PATHS[name], out)
    renames = model_renames(upstream_model, exchange.model_requested or "")
    if exchange.stream:
        exchange.answer_parser = parse_sse
        exchange.count_usage(sse=True, agent=True)  # the log's copy may be cut (LOG_MAX_BODY_BYTES): usage as it passes
        exchange.client_copy_derived_from_upstream(
            lambda raw: b"".join(passthrough_sse([raw], strip_usage_chunk=False, renames=renames)))
        chunks = passthrough_sse(exchange.upstream_chunks(upstream), strip_usage_chunk=False, renames=renames)
        translate: Any = _Failing(failure) if failure is not None else None
        return stream_response(exchange, upstream, chunks, dialect, translate)
    exchange.answer_parser = parse_json
    raw = rename_model(read_whole(exchange, upstream), renames)
    return finish_whole(exchange, raw_json_response(raw), raw)
