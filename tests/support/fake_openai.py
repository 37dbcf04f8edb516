"""OpenAI-shaped upstream bodies (chat completions, chunks, tool-call fragments, completions,
embeddings, model lists incl. llama.cpp's) and responders that answer stream and non-stream
requests like a real OpenAI-compatible server."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable, Iterable
from typing import Any

from tests.support.fake_http import RecordedRequest
from tests.support.fake_wire import Reply, json_reply, split_reply_kw, sse_reply

# -- bodies ---------------------------------------------------------------------

CREATED = 1752169304


def openai_error(message: str, type_: str = "invalid_request_error", code: Any = None,
                 param: Any = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def openai_models(*ids: str, **extra: Any) -> dict:
    return {
        "object": "list",
        "data": [
            {"id": i, "object": "model", "created": CREATED, "owned_by": "fake", **extra}
            for i in ids
        ],
    }


def llamacpp_models(model_id: str = "smollm2", n_ctx: int = 2048) -> dict:
    """llama-server's /v1/models (section 7 of api-surface.md): an Ollama-like `models` list
    with empty strings where numbers belong, and an OpenAI `data` list with `meta`."""
    return {
        "models": [{
            "name": model_id, "model": model_id, "modified_at": "", "size": "", "digest": "",
            "type": "model", "description": "", "tags": [""], "capabilities": ["completion"],
            "parameters": "", "details": {"parent_model": "", "format": "gguf", "family": "",
                                          "families": [""], "parameter_size": "",
                                          "quantization_level": ""},
        }],
        "object": "list",
        "data": [{
            "id": model_id, "aliases": [model_id], "tags": [], "object": "model",
            "created": CREATED, "owned_by": "llamacpp",
            "meta": {"vocab_type": 2, "n_vocab": 49152, "n_ctx": n_ctx, "n_ctx_train": 8192,
                     "n_embd": 576, "n_params": 134515008, "size": 96576768, "ftype": "Q4_1"},
        }],
    }


def llamacpp_props(model_id: str = "smollm2", n_ctx: int = 2048) -> dict:
    return {
        "default_generation_settings": {"n_ctx": n_ctx, "params": {"temperature": 0.8}},
        "total_slots": 1, "model_path": f"/models/{model_id}.gguf", "chat_template": "",
        "build_info": "b1-0c1e570",
    }


def openai_chunk(*, content: str | None = None, role: str | None = None,
                 reasoning_content: str | None = None, reasoning: str | None = None,
                 tool_calls: list | None = None, finish_reason: str | None = None,
                 usage: dict | None = None, model: str = "up-model", id: str = "chatcmpl-up1",
                 choices: list | None = None) -> dict:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if reasoning_content is not None:
        delta["reasoning_content"] = reasoning_content
    if reasoning is not None:
        delta["reasoning"] = reasoning
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    chunk = {
        "id": id, "object": "chat.completion.chunk", "created": CREATED, "model": model,
        "system_fingerprint": "fp_fake",
        "choices": choices if choices is not None else [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def openai_stream_events(pieces: Iterable[str] = ("Hello", " world"), *, finish: str = "stop",
                         prompt_tokens: int | None = 7, completion_tokens: int | None = None,
                         reasoning: Iterable[str] = (), reasoning_field: str = "reasoning_content",
                         tool_calls: Iterable[dict] = (), usage_chunk: bool = True,
                         model: str = "up-model", done: bool = True) -> list[Any]:
    """Objects of an OpenAI chat stream: role chunk, reasoning deltas, content deltas, tool-call
    fragments (each dict in `tool_calls` is one `delta.tool_calls` entry), finish chunk, an
    optional usage-only chunk (`choices: []`), then [DONE]."""
    pieces = list(pieces)
    out: list[Any] = [openai_chunk(role="assistant", content="", model=model)]
    for r in reasoning:
        out.append(openai_chunk(model=model, **{reasoning_field: r}))
    for p in pieces:
        out.append(openai_chunk(content=p, model=model))
    for tc in tool_calls:
        out.append(openai_chunk(tool_calls=[tc], model=model))
    out.append(openai_chunk(finish_reason=finish, model=model))
    if usage_chunk and prompt_tokens is not None:
        n = completion_tokens if completion_tokens is not None else len(pieces)
        out.append(openai_chunk(choices=[], usage=usage(prompt_tokens, n), model=model))
    if done:
        out.append("[DONE]")
    return out


def openai_stream(pieces: Iterable[str] = ("Hello", " world"), **kw: Any) -> Reply:
    reply_kw = split_reply_kw(kw)
    return sse_reply(openai_stream_events(pieces, **kw), **reply_kw)


def tool_call_fragments(name: str, arguments: str, *, index: int = 0, id: str = "call_up1",
                        pieces: int = 3) -> list[dict]:
    """OpenAI-style fragments of one tool call: id + name + "" first, then argument pieces."""
    first = {"index": index, "id": id, "type": "function",
             "function": {"name": name, "arguments": ""}}
    step = max(1, math.ceil(len(arguments) / pieces))
    rest = [{"index": index, "function": {"arguments": arguments[i:i + step]}}
            for i in range(0, len(arguments), step)]
    return [first, *rest]


def openai_completion(content: str | None = "Hello world", *, tool_calls: list | None = None,
                      reasoning_content: str | None = None, reasoning: str | None = None,
                      finish: str | None = None, prompt_tokens: int = 7,
                      completion_tokens: int = 2, model: str = "up-model",
                      id: str = "chatcmpl-up1") -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if reasoning_content is not None:
        message["reasoning_content"] = reasoning_content
    if reasoning is not None:
        message["reasoning"] = reasoning
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": id, "object": "chat.completion", "created": CREATED, "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish or ("tool_calls" if tool_calls else "stop")}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def openai_tool_call(name: str, arguments: str, id: str = "call_up1") -> dict:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def openai_text_completion(text: str = "Hello world", *, finish: str = "stop",
                           prompt_tokens: int = 5, completion_tokens: int = 2,
                           model: str = "up-model") -> dict:
    return {
        "id": "cmpl-up1", "object": "text_completion", "created": CREATED, "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def openai_text_completion_events(pieces: Iterable[str] = ("Hello", " world"), *,
                                  finish: str = "stop", model: str = "up-model",
                                  prompt_tokens: int | None = 5) -> list[Any]:
    pieces = list(pieces)
    out: list[Any] = []
    for p in pieces:
        out.append({"id": "cmpl-up1", "object": "text_completion", "created": CREATED,
                    "model": model, "choices": [{"text": p, "index": 0, "logprobs": None,
                                                 "finish_reason": None}]})
    out.append({"id": "cmpl-up1", "object": "text_completion", "created": CREATED,
                "model": model, "choices": [{"text": "", "index": 0, "logprobs": None,
                                             "finish_reason": finish}]})
    if prompt_tokens is not None:
        out.append({"id": "cmpl-up1", "object": "text_completion", "created": CREATED,
                    "model": model, "choices": [],
                    "usage": usage(prompt_tokens, len(pieces))})
    out.append("[DONE]")
    return out


def openai_embeddings(vectors: list[list[float]], *, model: str = "up-embed",
                      encoding_format: str = "float", prompt_tokens: int = 3) -> dict:
    def enc(v):
        return pack_floats(v) if encoding_format == "base64" else v
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": enc(v)}
                 for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def pack_floats(vec: Iterable[float]) -> str:
    vec = list(vec)
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


def unpack_floats(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


# -- responders -------------------------------------------------------------------------------


def openai_chat_responder(pieces: Iterable[str] = ("Hello", " world"), *,
                          reasoning: Iterable[str] = (), reasoning_field: str = "reasoning_content",
                          tool_calls: Iterable[tuple[str, str, str]] = (), finish: str | None = None,
                          prompt_tokens: int = 7, completion_tokens: int | None = None,
                          usage_on_finish_chunk: bool = False, model: str = "up-model",
                          **reply_kw: Any) -> Callable[[RecordedRequest], Reply]:
    """An OpenAI /v1/chat/completions upstream answering like a real one: SSE when the request
    says `stream: true` (usage-only chunk only if `stream_options.include_usage`, or usage on
    the finish chunk like llama.cpp when `usage_on_finish_chunk`), JSON otherwise.
    `tool_calls` holds (name, arguments JSON string, id) triples."""
    pieces, reasoning, tool_calls = list(pieces), list(reasoning), list(tool_calls)
    finish = finish or ("tool_calls" if tool_calls else "stop")
    n_completion = completion_tokens if completion_tokens is not None else len(pieces) + len(reasoning)

    def respond(req: RecordedRequest) -> Reply:
        body = req.json or {}
        if not body.get("stream"):
            msg_reasoning = "".join(reasoning) or None
            return json_reply(openai_completion(
                "".join(pieces) if pieces or not tool_calls else None,
                tool_calls=[openai_tool_call(n, a, i) for n, a, i in tool_calls] or None,
                finish=finish, prompt_tokens=prompt_tokens, completion_tokens=n_completion,
                model=model, **({reasoning_field: msg_reasoning} if msg_reasoning else {})))
        frags = [f for idx, (n, a, i) in enumerate(tool_calls)
                 for f in tool_call_fragments(n, a, index=idx, id=i)]
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        events = openai_stream_events(pieces, finish=finish, prompt_tokens=prompt_tokens,
                                      completion_tokens=n_completion, reasoning=reasoning,
                                      reasoning_field=reasoning_field, tool_calls=frags,
                                      usage_chunk=include and not usage_on_finish_chunk,
                                      model=model)
        if usage_on_finish_chunk:
            events[-2]["usage"] = usage(prompt_tokens, n_completion)
        return sse_reply(events, **dict(reply_kw))

    return respond


def openai_text_completion_responder(pieces: Iterable[str] = ("Hello", " world"), *,
                                     model: str = "up-model",
                                     **reply_kw: Any) -> Callable[[RecordedRequest], Reply]:
    """An OpenAI /v1/completions upstream: SSE when `stream: true`, JSON otherwise."""
    pieces = list(pieces)

    def respond(req: RecordedRequest) -> Reply:
        body = req.json or {}
        if not body.get("stream"):
            return json_reply(openai_text_completion("".join(pieces), model=model,
                                                     completion_tokens=len(pieces)))
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        events = openai_text_completion_events(pieces, model=model,
                                               prompt_tokens=5 if include else None)
        return sse_reply(events, **dict(reply_kw))

    return respond


def openai_embeddings_responder(vectors: list[list[float]], *, model: str = "up-embed",
                                prompt_tokens: int = 3) -> Callable[[RecordedRequest], Reply]:
    """An OpenAI /v1/embeddings upstream honouring `encoding_format`."""
    def respond(req: RecordedRequest) -> Reply:
        fmt = (req.json or {}).get("encoding_format") or "float"
        return json_reply(openai_embeddings(vectors, model=model, encoding_format=fmt,
                                            prompt_tokens=prompt_tokens))

    return respond
