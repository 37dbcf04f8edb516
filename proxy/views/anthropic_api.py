"""The Anthropic Messages front door (what Claude Code reaches through ``ANTHROPIC_BASE_URL``): ``/v1/messages``
and ``/v1/messages/count_tokens``, over every backend kind: translated to OpenAI chat, then sent as it is to an
OpenAI-compatible backend or the stub, or through the Ollama mapping to an Ollama one; or passed through to a
backend that speaks Messages itself (``native``). The response cache keys a message by that chat request and
answers a hit through the same stream translator (``views.caching``)."""
from __future__ import annotations

import itertools
import time

from flask import Blueprint, Response

from .. import jsonio
from ..anthropic_stream import OllamaStreamToAnthropic, OpenAIStreamToAnthropic, OpenAIToAnthropic
from ..assemble import answer_of_openai
from ..backends.base import Backend
from ..cache import key as ck
from ..cache import replay
from ..dialects import anthropic as an
from ..dialects import ollama_openai as oo
from ..errors import BackendUnavailable, ProxyError, clip_message
from ..exchange import Exchange
from ..render import json_response, raw_json_response
from ..services import services
from . import native
from .caching import cached, key_flavor, replayed_stream
from .common import (
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

bp = Blueprint("anthropic_api", __name__, url_prefix="/v1")


@bp.route("/messages", methods=["POST"])
def messages() -> Response:
    """A stream's ``message_start`` goes out before the backend's first byte: with KEEPALIVE_S, with the first
    ``ping`` beat (or with the answer's first bytes when they come sooner), while the backend is reached in a
    worker (``early.serve_stream``, which also attaches an identical request of one session); without, as soon
    as the backend's head has come."""
    exchange, body = begin("anthropic", an.check_messages_request)
    exchange.stream = bool(body.get("stream"))
    settings = services().settings
    msg_id = an.new_message_id()
    early = exchange.stream and settings.keepalive_s > 0
    # A backend that may answer in Messages itself sends its own message_start: the beats are pings alone
    beating = early and not native.may_be_native(native.MESSAGES)

    def attempt(backend: Backend, upstream_model: str) -> Response:
        if native.is_native(exchange, backend, native.MESSAGES):
            return native.passthrough(exchange, native.MESSAGES, body, upstream_model)
        out = an.to_openai(body, upstream_model, backend.flavor, settings.agent_sanitize)
        out = clamped(exchange, out, "openai")  # Claude Code asks 32,000 tokens of any model (AGENT_SANITIZE)
        if backend.dialect != "ollama":
            return _answer(exchange, body, msg_id, "/v1/chat/completions", out, ollama=False, opened=beating)
        ollama_body = oo.chat_from_openai(out, upstream_model)
        think = an.think_of(body)
        if think is not None:
            ollama_body["think"] = think
        return _answer(exchange, body, msg_id, "/api/chat", ollama_body, ollama=True, opened=beating)

    def answer() -> Response:
        if early:
            opening = an.message_start(msg_id, exchange.model_requested or "") if beating else b""
            return serve_stream(exchange, "anthropic", attempt, opening=opening, beat=an.PING)
        return serve(exchange, attempt)

    def ask() -> ck.Ask:  # the key: the chat request the backend is sent
        out = an.to_openai(body, exchange.model_requested or "", key_flavor(exchange), settings.agent_sanitize)
        return ck.openai_chat(clamped(exchange, out, "openai"))
    return cached(exchange, ask, answer, lambda entry: _hit(exchange, body, msg_id, entry))


def _hit(exchange: Exchange, body: dict, msg_id: str, entry: dict) -> Response:
    """A cached answer as a message, or as the whole event sequence: the stored answer's chat chunks through the
    translator that serves a live stream."""
    model = exchange.model_requested or ""
    stops = body.get("stop_sequences")
    now = time.time()
    if exchange.stream:
        translator = OpenAIToAnthropic(model, msg_id, stops, clock=lambda: now)
        events = translator.opening()
        for chunk in replay.chat_chunks(entry, model, now):
            events += translator.feed(chunk)
        events += translator.finish(True)
        return replayed_stream(exchange, b"".join(events), "anthropic")
    completion = replay.chat_completion(entry, model, now, msg_id)
    data = jsonio.dumps(an.message_from_openai(completion, msg_id, model, stops))
    return finish_whole(exchange, raw_json_response(data), data)


def _answer(exchange: Exchange, body: dict, msg_id: str, path: str, out: dict, *, ollama: bool,
            opened: bool) -> Response:
    """The backend's answer in Anthropic's shape; ``opened``: message_start went out already (a beating stream's
    opening)."""
    upstream = open_upstream(exchange, path, out)
    model = exchange.model_requested or ""
    stops = body.get("stop_sequences")
    if exchange.stream:
        translator = OpenAIToAnthropic(model, msg_id, stops, opened=opened)
        exchange.answer = translator.answer
        push = OllamaStreamToAnthropic(translator) if ollama else OpenAIStreamToAnthropic(translator)
        chunks = exchange.upstream_chunks(upstream)
        if not opened:  # an empty first push sends message_start at once, before the backend's first byte
            chunks = itertools.chain((b"",), chunks)
        return stream_response(exchange, upstream, chunks, "anthropic", push)
    resp = upstream_object(read_whole(exchange, upstream))
    if resp.get("error"):  # an error in a 200 answer
        error = resp["error"]
        raise BackendUnavailable(clip_message(str(error.get("message") if isinstance(error, dict) else error)))
    if ollama:
        resp = oo.chat_response_to_openai(resp, msg_id, 0, model)
    exchange.answer = answer_of_openai(resp)
    data = jsonio.dumps(an.message_from_openai(resp, msg_id, model, stops))
    return finish_whole(exchange, raw_json_response(data), data)


@bp.route("/messages/count_tokens", methods=["POST"])
def count_tokens() -> Response:
    """``{"input_tokens": N}``: counted by the backend's tokenizer where it has one (llama.cpp's ``/tokenize``),
    else estimated (``an.estimate_tokens``); the log's row says which (a local answer is an estimate)."""
    exchange, body = begin("anthropic", an.check_count_tokens_request)
    sanitize = services().settings.agent_sanitize

    def attempt(backend: Backend, upstream_model: str) -> Response:
        text = an.flat_text(body, sanitize)
        counted = _tokenized(backend, text, exchange.request_id) if backend.flavor == "llamacpp" else None
        if counted is None:
            exchange.local = True
            count = an.estimate_tokens(body, text)
        else:
            count = counted + an.estimate_tokens(body, "")  # the chat template's tokens around each turn
        reply = json_response({"input_tokens": count})
        return finish_whole(exchange, reply, reply.get_data())
    return serve(exchange, attempt)


def _tokenized(backend: Backend, text: str, request_id: str) -> int | None:
    try:
        _, resp = backend.post_json("/tokenize", {"content": text}, request_id=request_id)
    except ProxyError:
        return None
    tokens = resp.get("tokens") if isinstance(resp, dict) else None
    return len(tokens) if isinstance(tokens, list) else None
