"""The OpenAI front door: `/v1/*`, over OpenAI-compatible backends (passthrough) or Ollama (translated)."""
from __future__ import annotations

import time

from flask import Blueprint, Response, request

from .. import jsonio
from ..assemble import answer_of_openai, assemble_openai_json, assemble_openai_sse
from ..backends.base import Backend
from ..cache import key as ck
from ..dialects import anthropic as an
from ..dialects import ollama_openai as oo
from ..dialects import openai as oa
from ..errors import BackendUnavailable, NotFound
from ..passthrough import model_renames, passthrough_sse, rename_model
from ..render import json_response, raw_json_response
from ..rewrite import inject_text
from ..services import services
from ..streaming import OllamaStreamToOpenAI, OllamaToOpenAI
from . import models as model_views
from .caching import cached
from .common import (
    begin,
    clamped,
    finish_whole,
    listed_models,
    open_upstream,
    read_whole,
    serve,
    stream_response,
    upstream_backend,
    upstream_object,
)
from .early import serve_stream

bp = Blueprint("openai_api", __name__, url_prefix="/v1")


@bp.route("/models", methods=["GET"])
def list_models() -> Response:
    models = listed_models()
    if model_views.wants_anthropic_shape(request.headers):
        return json_response(an.model_list([model_views.anthropic_model(m) for m in models]))
    body = oa.model_list([model_views.openai_model(m) for m in models])
    body["models"] = model_views.codex_models(models)  # what Codex's model catalog reads, beside OpenAI's list
    return json_response(body)


@bp.route("/models/<path:model_id>", methods=["GET"])
def get_model(model_id: str) -> Response:
    model = services().catalog.find(model_id)
    if model_views.wants_anthropic_shape(request.headers):
        return json_response(model_views.anthropic_model(model))
    return json_response(model_views.openai_model(model))


@bp.route("/chat/completions", methods=["POST"])
def chat_completions() -> Response:
    exchange, body = begin("openai", oa.check_chat_request)
    exchange.stream = bool(body.get("stream"))
    settings = services().settings
    messages, _ = inject_text(body["messages"], settings.inject_text, settings.inject_mode)
    body = clamped(exchange, {**body, "messages": messages}, "openai")

    def attempt(backend: Backend, upstream_model: str) -> Response:
        if backend.dialect == "ollama":
            return _translated(exchange, "chat", "/api/chat", oo.chat_from_openai(body, upstream_model), body)
        return _passthrough(exchange, "/v1/chat/completions", {**body, "model": upstream_model})

    def answer() -> Response:
        if exchange.stream:
            return serve_stream(exchange, "openai", attempt)
        return serve(exchange, attempt)
    return cached(exchange, lambda: ck.openai_chat(body), answer)


@bp.route("/completions", methods=["POST"])
def completions() -> Response:
    exchange, body = begin("openai", oa.check_completion_request)
    exchange.stream = bool(body.get("stream"))

    def attempt(backend: Backend, upstream_model: str) -> Response:
        if backend.dialect == "ollama":
            return _translated(exchange, "completion", "/api/generate",
                               oo.completion_from_openai(body, upstream_model), body)
        return _passthrough(exchange, "/v1/completions", {**body, "model": upstream_model})
    return cached(exchange, lambda: ck.openai_completion(body), lambda: serve(exchange, attempt))


@bp.route("/embeddings", methods=["POST"])
def embeddings() -> Response:
    exchange, body = begin("openai", oa.check_embedding_request)

    def attempt(backend: Backend, upstream_model: str) -> Response:
        if backend.dialect != "ollama":
            return _passthrough(exchange, "/v1/embeddings", {**body, "model": upstream_model})
        return _embed_translated(exchange, body, upstream_model)
    return cached(exchange, lambda: ck.openai_embed(body), lambda: serve(exchange, attempt))


def _embed_translated(exchange, body: dict, upstream_model: str) -> Response:
    out = oo.embed_from_openai(body, upstream_model)
    exchange.sent_upstream(jsonio.dumps(out))
    raw, resp = upstream_backend().post_json("/api/embed", out, request_id=exchange.request_id)
    exchange.upstream_response.add(raw)
    assert exchange.model_requested is not None  # begin() noted it
    reply = oo.embed_response_to_openai(resp if isinstance(resp, dict) else {}, exchange.model_requested,
                                        body.get("encoding_format"))
    data = jsonio.dumps(reply)
    return finish_whole(exchange, raw_json_response(data), data)


@bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def not_served(rest: str) -> Response:
    raise NotFound(f"{request.method} /v1/{rest} is not served by this proxy")


def _passthrough(exchange, path: str, out: dict) -> Response:
    """Same dialect both sides: bytes go through; usage is always asked for (for the log) and the
    extra usage chunk is removed again when the client did not ask for it."""
    client_wants_usage = oa.wants_usage(out)
    if exchange.stream:
        out = {**out, "stream_options": {**(out.get("stream_options") or {}), "include_usage": True}}
    upstream = open_upstream(exchange, path, out)
    renames = model_renames(out["model"], exchange.model_requested)
    if exchange.stream:
        exchange.answer_parser = assemble_openai_sse
        exchange.count_usage(sse=True)
        strip = not client_wants_usage
        exchange.client_copy_derived_from_upstream(
            lambda raw: b"".join(passthrough_sse([raw], strip_usage_chunk=strip, renames=renames)))
        chunks = passthrough_sse(exchange.upstream_chunks(upstream), strip_usage_chunk=strip, renames=renames)
        return stream_response(exchange, upstream, chunks, "openai")
    exchange.answer_parser = assemble_openai_json
    raw = rename_model(read_whole(exchange, upstream), renames)
    return finish_whole(exchange, raw_json_response(raw), raw)


def _translated(exchange, kind: str, path: str, out: dict, client_body: dict) -> Response:
    upstream = open_upstream(exchange, path, out)
    cid = oa.new_id("chatcmpl-" if kind == "chat" else "cmpl-")
    created = int(time.time())
    if exchange.stream:
        translator = OllamaToOpenAI(kind, exchange.model_requested, cid, created, oa.wants_usage(client_body))
        exchange.answer = translator.answer
        return stream_response(exchange, upstream, exchange.upstream_chunks(upstream), "openai",
                               OllamaStreamToOpenAI(translator))
    resp = upstream_object(read_whole(exchange, upstream))
    if resp.get("error"):
        raise BackendUnavailable(str(resp["error"]))
    if kind == "chat":
        reply = oo.chat_response_to_openai(resp, cid, created, exchange.model_requested)
    else:
        reply = oo.generate_response_to_openai(resp, cid, created, exchange.model_requested)
    data = jsonio.dumps(reply)
    exchange.answer = answer_of_openai(reply)
    return finish_whole(exchange, raw_json_response(data), data)
