"""The OpenAI Responses front door: `POST /v1/responses` (what Codex speaks), stateless, translated onto the
backend's chat API (`/v1/chat/completions` or Ollama's `/api/chat`), or passed through to a backend that speaks
Responses itself (``native``), streamed or whole. Errors are rendered in OpenAI's shape (the `/v1` dialect); a
stream that fails after its first byte ends with `response.failed`. The response cache keys a response by that
chat request and answers a hit through the same translator."""
from __future__ import annotations

import dataclasses
import itertools
import time

from flask import Blueprint, Response, request

from .. import jsonio
from ..backends.base import Backend
from ..cache import key as ck
from ..cache import replay
from ..dialects import ollama_openai as oo
from ..dialects.responses import shapes
from ..dialects.responses.request import check_request, to_chat, tools_of
from ..errors import BackendUnavailable, MethodNotAllowed, NotFound, ProxyError
from ..exchange import Exchange
from ..render import raw_json_response
from ..responses_stream import ChatToResponses, ResponsesFromOllama, ResponsesFromOpenAI
from ..services import services
from . import native
from .caching import cached, key_flavor, replayed_stream
from .common import (
    SSE,
    STREAM_HEADERS,
    begin,
    clamped,
    finish_whole,
    open_upstream,
    read_whole,
    serve,
    stream_response,
    upstream_object,
)
from .early import serve_stream

bp = Blueprint("responses_api", __name__, url_prefix="/v1")
FRONT = "responses"


@bp.route("/responses", methods=["POST"])
def create_response() -> Response:
    exchange, body = begin(FRONT, check_request)
    exchange.stream = bool(body.get("stream"))
    assert exchange.model_requested is not None  # begin() noted it
    fixed = shapes.base(body, shapes.new_id("resp_"), int(time.time()), exchange.model_requested)
    translator = ChatToResponses(fixed, tools_of(body)[2])  # one per request: its opening may be sent already

    def attempt(backend: Backend, upstream_model: str) -> Response:
        if native.is_native(exchange, backend, native.RESPONSES):
            return native.passthrough(exchange, native.RESPONSES, body, upstream_model,
                                      failure=lambda exc: _failed_mid_stream(translator, exc))
        plan = to_chat(body, upstream_model, backend.flavor)
        exchange.answer = translator.answer
        if plan.empty:
            return _answered_here(exchange, translator)
        ollama = backend.dialect == "ollama"
        chat = clamped(exchange, plan.chat, "openai")  # max_output_tokens within the context (AGENT_SANITIZE)
        if ollama:
            upstream = open_upstream(exchange, "/api/chat", oo.chat_from_openai(chat, upstream_model))
        else:
            upstream = open_upstream(exchange, "/v1/chat/completions", chat)
        if exchange.stream:
            push = ResponsesFromOllama(translator) if ollama else ResponsesFromOpenAI(translator)
            # An empty first chunk: without keep-alives, response.created and response.in_progress leave as soon
            # as the backend accepted the request, before its first token (with them, they left already).
            chunks = itertools.chain((b"",), exchange.upstream_chunks(upstream))
            return stream_response(exchange, upstream, chunks, "openai", push)
        completion = upstream_object(read_whole(exchange, upstream))
        if ollama:
            if completion.get("error"):
                raise BackendUnavailable(str(completion["error"]))
            completion = oo.chat_response_to_openai(completion, "", 0, upstream_model)
        data = jsonio.dumps(translator.whole(completion))
        return finish_whole(exchange, raw_json_response(data), data)

    def answer() -> Response:
        if exchange.stream and services().settings.keepalive_s:
            # The head and the opening events at once, then response.in_progress every KEEPALIVE_S until the
            # backend's first byte (queue, failover, prefill); a failure after that is a response.failed. A
            # backend that may answer in Responses itself sends its own opening: then the beats are SSE comments.
            def failed(exc: ProxyError) -> bytes:
                return b"".join(translator.failed(exc))
            if native.may_be_native(native.RESPONSES):
                return serve_stream(exchange, "openai", attempt, error_event=failed)
            opening = b"".join(translator.opening())
            return serve_stream(exchange, "openai", attempt, opening=opening, beat=translator.keepalive,
                                first_s=0, error_event=failed)
        return serve(exchange, attempt)

    def ask() -> ck.Ask:  # the key: the chat request the backend is sent
        plan = to_chat(body, exchange.model_requested or "", key_flavor(exchange))
        found = ck.openai_chat(clamped(exchange, plan.chat, "openai"))
        return dataclasses.replace(found, why_not="nothing to answer") if plan.empty else found
    return cached(exchange, ask, answer, lambda entry: _hit(exchange, translator, entry))


def _hit(exchange: Exchange, translator: ChatToResponses, entry: dict) -> Response:
    """A cached answer as a response object, or as the whole event sequence: the stored answer's chat chunks
    through the translator that serves a live stream."""
    model = exchange.model_requested or ""
    now = time.time()
    if exchange.stream:
        events = translator.opening()
        for chunk in replay.chat_chunks(entry, model, now):
            events += translator.feed(chunk)
        events += translator.finish(True)
        return replayed_stream(exchange, b"".join(events), "openai")
    data = jsonio.dumps(translator.whole(replay.chat_completion(entry, model, now)))
    return finish_whole(exchange, raw_json_response(data), data)


def _failed_mid_stream(translator: ChatToResponses, exc: ProxyError) -> bytes:
    """The end of a native backend's stream that broke: ``response.failed`` alone (the opening events were the
    backend's own)."""
    translator.opened = True
    return b"".join(translator.failed(exc))


def _answered_here(exchange, translator: ChatToResponses) -> Response:
    """A request with nothing to answer (Codex probes with an empty input): an empty completed response,
    without the backend."""
    exchange.local = True
    translator.answer.finish_reason = "stop"
    events = translator.opening() + translator.finish(True)
    if exchange.stream:
        data = b"".join(events)
        response = Response(data, status=200, mimetype=SSE, headers=STREAM_HEADERS)
    else:
        data = jsonio.dumps(translator.final)
        response = raw_json_response(data)
    return finish_whole(exchange, response, data)


@bp.route("/responses", methods=["GET", "PUT", "DELETE", "PATCH"])
def other_method() -> Response:
    raise MethodNotAllowed(f"{request.method} is not allowed on /v1/responses; create a response with POST")


@bp.route("/responses/<path:rest>", methods=["GET", "POST", "DELETE"])
def stored_response(rest: str) -> Response:
    raise NotFound(f"/v1/responses/{rest} is not served: this proxy keeps no responses (it is stateless) and "
                   "does no remote compaction; send the whole conversation to POST /v1/responses")
