"""The Ollama front door: `/` and `/api/*`, over Ollama backends (passthrough) or OpenAI ones (translated)."""
from __future__ import annotations

import re
import time
from typing import Any

from flask import Blueprint, Response, redirect, request
from werkzeug.wrappers import Response as BaseResponse  # what redirect() makes

from .. import jsonio
from ..assemble import assemble_ollama_ndjson
from ..backends.base import Backend
from ..cache import key as ck
from ..context import current
from ..dialects import ollama as ol
from ..dialects import ollama_openai as oo
from ..dialects.openai import decode_embedding
from ..errors import BadRequest, NotSupported
from ..passthrough import model_renames, passthrough_lines, rename_model
from ..render import json_response, raw_json_response
from ..rewrite import inject_text
from ..services import services
from ..streaming import Answer, OpenAIStreamToOllama, OpenAIToOllama
from . import models as model_views
from .caching import cached
from .common import (
    NDJSON,
    begin,
    clamped,
    finish_whole,
    listed_models,
    management_backend,
    open_upstream,
    read_json,
    read_whole,
    serve,
    stream_response,
    upstream_backend,
    upstream_object,
)

bp = Blueprint("ollama_api", __name__)
OLLAMA_VERSION = "0.12.10"  # what Ollama clients are told; numeric and >= 0.6.4 (Copilot, Open WebUI)


@bp.route("/", methods=["GET", "HEAD"])
def root() -> BaseResponse:
    if request.method == "GET" and any(kind == "text/html" for kind, _ in request.accept_mimetypes):
        return redirect("/ui/")  # a browser; API clients (Accept: */* or JSON) get the usual answer
    return Response("Ollama is running", content_type="text/plain; charset=utf-8")


@bp.route("/api/version", methods=["GET", "HEAD"])
def version() -> Response:
    return json_response({"version": OLLAMA_VERSION})


@bp.route("/api/tags", methods=["GET", "HEAD"])
def tags() -> Response:
    return json_response({"models": [model_views.tag_entry(m) for m in listed_models()]})


@bp.route("/api/ps", methods=["GET"])
def ps() -> Response:
    return json_response({"models": [model_views.ps_entry(m) for m in listed_models()]})


@bp.route("/api/show", methods=["POST"])
def show() -> Response:
    svc = services()
    body = read_json()
    name = ol.check_model(body)
    if svc.pool is not None:  # a backend that serves the model describes it
        member, model = svc.pool.find(name)
        backend = member.backend
    else:
        model, backend = svc.catalog.find(name), svc.backend
    if backend.dialect == "ollama":
        upstream_body = {**body, "model": model.alias_of or model.id}
        upstream_body.pop("name", None)
        _, shown = backend.post_json("/api/show", upstream_body, request_id=_rid())
        if isinstance(shown, dict):
            shown.setdefault("capabilities", list(model.capabilities))
            if shown.get("model_info") is None:
                shown["model_info"] = {}
        return json_response(shown)
    return json_response(model_views.show_body(model, svc.settings.default_context_length,
                                                request.user_agent.string))


def _rid() -> str:
    return current().request_id


# --- generation ---------------------------------------------------------------------------------

@bp.route("/api/chat", methods=["POST"])
def chat() -> Response:
    exchange, body = begin("ollama", ol.check_chat_request)
    exchange.stream = ol.is_streaming(body)
    messages = body.get("messages") or []
    if not messages:
        return _probe(exchange, "chat", body)
    settings = services().settings
    messages, _ = inject_text(messages, settings.inject_text, settings.inject_mode)
    body = clamped(exchange, body, "ollama")

    def attempt(backend: Backend, upstream_model: str) -> Response:
        if backend.dialect == "ollama":
            return _passthrough(exchange, "/api/chat", {**body, "model": upstream_model, "messages": messages})
        out = oo.chat_to_openai({**body, "messages": messages}, upstream_model, backend.flavor)
        return _translated(exchange, "chat", "/v1/chat/completions", out)
    return cached(exchange, lambda: ck.ollama_chat(body, messages), lambda: serve(exchange, attempt))


@bp.route("/api/generate", methods=["POST"])
def generate() -> Response:
    exchange, body = begin("ollama", ol.check_generate_request)
    exchange.stream = ol.is_streaming(body)
    if not body.get("prompt") and not body.get("images") and not body.get("suffix"):
        return _probe(exchange, "generate", body)
    body = clamped(exchange, body, "ollama")

    def attempt(backend: Backend, upstream_model: str) -> Response:
        if backend.dialect == "ollama":
            return _passthrough(exchange, "/api/generate", {**body, "model": upstream_model})
        path, out = oo.generate_to_openai(body, upstream_model, backend.flavor)
        return _translated(exchange, "generate", path, out)
    return cached(exchange, lambda: ck.ollama_generate(body), lambda: serve(exchange, attempt))


def _probe(exchange, kind: str, body: dict) -> Response:
    """Load/unload probes are answered here: an empty generation is never sent upstream."""
    services().catalog.find(exchange.model_requested)
    exchange.local = True
    reply = ol.probe_reply(kind, exchange.model_requested, ol.rfc3339(time.time()), ol.is_unload(body))
    raw = jsonio.dumps(reply)
    return finish_whole(exchange, raw_json_response(raw), raw)


def _passthrough(exchange, path: str, out: dict) -> Response:
    upstream = open_upstream(exchange, path, out)
    renames = model_renames(out["model"], exchange.model_requested)
    exchange.answer_parser = _ollama_parser(path)
    if exchange.stream:
        exchange.client_copy_derived_from_upstream(lambda raw: rename_model(raw, renames))
        exchange.count_usage(sse=False)
        chunks = passthrough_lines(exchange.upstream_chunks(upstream), renames)
        return stream_response(exchange, upstream, chunks, "ollama")
    raw = rename_model(read_whole(exchange, upstream), renames)
    content_type = upstream.headers.get("Content-Type", "application/json; charset=utf-8")
    return finish_whole(exchange, Response(raw, content_type=content_type), raw)


def _ollama_parser(path: str):
    if path.startswith("/api/embed"):  # an embedding answer is no stream of lines: its tokens only
        return _embedding_answer
    kind = "chat" if path.endswith("chat") else "generate"
    return lambda raw: assemble_ollama_ndjson(raw, kind)


def _embedding_answer(raw: bytes) -> Answer:
    answer = Answer()
    resp = jsonio.loads(raw)
    answer.prompt_tokens = int(resp.get("prompt_eval_count") or 0) if isinstance(resp, dict) else None
    answer.completion_tokens = 0
    answer.finish_reason = "stop"
    return answer


def _translated(exchange, kind: str, path: str, out: dict) -> Response:
    upstream = open_upstream(exchange, path, out)
    translator = OpenAIToOllama(kind, exchange.model_requested, exchange.started)
    exchange.answer = translator.answer
    if exchange.stream:
        return stream_response(exchange, upstream, exchange.upstream_chunks(upstream), "ollama",
                               OpenAIStreamToOllama(translator))
    reply = whole_reply_from_openai(translator, kind, upstream_object(read_whole(exchange, upstream)))
    data = jsonio.dumps(reply)
    return finish_whole(exchange, raw_json_response(data), data)


def whole_reply_from_openai(translator: OpenAIToOllama, kind: str, resp: dict) -> dict:
    """A non-streamed OpenAI answer as one Ollama object, through the same translator as streams."""
    choices = resp.get("choices") if isinstance(resp, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = found if isinstance(found := choice.get("message"), dict) else {"content": choice.get("text")}
    chunk = {"choices": [{"delta": {k: v for k, v in message.items() if k != "tool_calls"},
                          "finish_reason": choice.get("finish_reason") or "stop"}],
             "usage": resp.get("usage"), "timings": resp.get("timings")}
    translator.feed(chunk)
    for index, call in enumerate(message.get("tool_calls") or ()):
        translator.feed({"choices": [{"delta": {"tool_calls": [{"index": index, **call}]}}]})
    translator.finish(True)  # settles tool calls and counts; its lines are not used
    answer = translator.answer
    reply = translator.final_line("".join(answer.content))
    if kind == "chat":
        if answer.thinking:
            reply["message"]["thinking"] = "".join(answer.thinking)
        if answer.tool_calls:
            reply["message"]["tool_calls"] = answer.tool_calls
    elif answer.thinking:
        reply["thinking"] = "".join(answer.thinking)
    return reply


# --- embeddings ---------------------------------------------------------------------------------

@bp.route("/api/embed", methods=["POST"])
@bp.route("/api/embeddings", methods=["POST"])
def embed() -> Response:
    legacy = request.path.endswith("embeddings")
    exchange, body = begin("ollama", ol.check_embed_request)
    path = request.path

    def attempt(backend: Backend, upstream_model: str) -> Response:
        if backend.dialect == "ollama":
            exchange.stream = False
            return _passthrough(exchange, path, {**body, "model": upstream_model})
        return _embed_translated(exchange, body, upstream_model, legacy)
    return cached(exchange, lambda: ck.ollama_embed(body, legacy), lambda: serve(exchange, attempt))


def _embed_translated(exchange, body: dict, upstream_model: str, legacy: bool) -> Response:
    if legacy and not isinstance(body.get("prompt"), str):
        raise BadRequest("prompt must be a string")
    out = oo.embed_to_openai(body, upstream_model)
    payload = jsonio.dumps(out)
    exchange.sent_upstream(payload)
    started = time.time()
    raw, resp = upstream_backend().post_json("/v1/embeddings", out, request_id=exchange.request_id)
    exchange.upstream_response.add(raw)
    data = resp.get("data") if isinstance(resp, dict) else None
    vectors = [decode_embedding(item.get("embedding")) for item in data or () if isinstance(item, dict)]
    if legacy:
        reply: dict[str, Any] = {"embedding": vectors[0] if vectors else []}
    else:
        usage = found if isinstance(found := resp.get("usage"), dict) else {}
        reply = {"model": exchange.model_requested, "embeddings": vectors,
                 "total_duration": ol.ns(time.time() - started),
                 "prompt_eval_count": int(usage.get("prompt_tokens") or 0)}
    data_out = jsonio.dumps(reply)
    return finish_whole(exchange, raw_json_response(data_out), data_out)


# --- model management ---------------------------------------------------------------------------

@bp.route("/api/pull", methods=["POST"])
@bp.route("/api/push", methods=["POST"])
@bp.route("/api/create", methods=["POST"])
@bp.route("/api/copy", methods=["POST"])
@bp.route("/api/delete", methods=["DELETE"])
def manage() -> Response:
    svc = services()
    action = request.path.rsplit("/", 1)[-1]
    exchange, body = begin("ollama", lambda b: ol.check_manage_request(b, action))  # recorded, whatever happens
    backend, name = management_backend(action, exchange.model_requested)
    exchange.backend_name, exchange.backend_type = name or backend.describe(), backend.type
    if backend.dialect == "ollama":
        payload = jsonio.dumps(body)  # the body that was checked, not the bytes sent (a repeated key goes)
        exchange.sent_upstream(payload)
        whole = body.get("stream") is False or action in ("copy", "delete")
        upstream = backend.open(request.method, request.path, payload, request_id=_rid(), stream=not whole)
        if whole:
            raw = upstream.read()
            exchange.upstream_response.add(raw)
            response = Response(raw, status=upstream.status,
                                content_type=upstream.headers.get("Content-Type", "application/json"))
            return finish_whole(exchange, response, raw)
        return stream_response(exchange, upstream, exchange.upstream_chunks(upstream), "ollama")
    if action == "pull":
        assert exchange.model_requested is not None  # begin() noted it
        svc.catalog.find(exchange.model_requested)  # 404 if the backend does not have it
        exchange.local = True
        if body.get("stream") is False:
            raw = jsonio.dumps({"status": "success"})
            return finish_whole(exchange, raw_json_response(raw), raw)
        raw = b"".join(jsonio.dumps_line(x) for x in ({"status": "pulling manifest"}, {"status": "success"}))
        return finish_whole(exchange, Response(raw, content_type=NDJSON), raw)
    raise NotSupported(f"/api/{action} is not supported by {_not_ollama(backend)}; manage models on the "
                       "backend itself")


def _not_ollama(backend: Backend) -> str:
    if services().pool is not None:
        return "any backend of BACKENDS_FILE (none is an Ollama server)"
    return f"the {backend.describe()}"


# What Ollama itself accepts as a blob digest; anything else (spaces, CR, `../`) never reaches the request line.
BLOB_DIGEST = re.compile(r"sha256[:-][0-9a-fA-F]{64}")


@bp.route("/api/blobs/<path:digest>", methods=["HEAD", "POST"])
def blobs(digest: str) -> Response:
    if not BLOB_DIGEST.fullmatch(digest):
        raise BadRequest("invalid digest: expected sha256: followed by 64 hexadecimal digits")
    backend, _ = management_backend("blobs")
    if backend.dialect != "ollama":
        raise NotSupported(f"blobs are not supported by {_not_ollama(backend)}")
    upstream = backend.open(request.method, f"/api/blobs/{digest}", request.get_data() or None,
                                       request_id=_rid())
    raw = upstream.read()
    return Response(raw, status=upstream.status)
