"""Ollama-shaped upstream bodies (chat/generate lines and answers, tool calls, tags, show,
embed), tiny images with real magic bytes, and responders that stream NDJSON unless the
request says `stream: false`, like Ollama."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from tests.support.fake_http import RecordedRequest
from tests.support.fake_wire import Reply, json_reply, ndjson_reply, split_reply_kw

# -- bodies ---------------------------------------------------------------------

OLLAMA_TS = "2025-07-07T20:22:19.184789Z"


def ollama_chat_chunk(content: str = "", *, thinking: str | None = None,
                      tool_calls: list | None = None, done: bool = False,
                      done_reason: str | None = None, model: str = "up-model",
                      **metrics: Any) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    obj: dict[str, Any] = {"model": model, "created_at": OLLAMA_TS, "message": message,
                           "done": done}
    if done_reason is not None:
        obj["done_reason"] = done_reason
    obj.update(metrics)
    return obj


DEFAULT_METRICS = {"total_duration": 182242375, "load_duration": 41295167,
                   "prompt_eval_count": 11, "prompt_eval_duration": 24573166,
                   "eval_count": 2, "eval_duration": 115959084}


def ollama_chat_stream_objects(pieces: Iterable[str] = ("Hello", " world"), *,
                               thinking: Iterable[str] = (), tool_calls: list | None = None,
                               done_reason: str = "stop", model: str = "up-model",
                               **metrics: Any) -> list[dict]:
    out = [ollama_chat_chunk("", thinking=t, model=model) for t in thinking]
    out += [ollama_chat_chunk(p, model=model) for p in pieces]
    if tool_calls:
        out.append(ollama_chat_chunk("", tool_calls=tool_calls, model=model))
    out.append(ollama_chat_chunk("", done=True, done_reason=done_reason, model=model,
                                 **{**DEFAULT_METRICS, **metrics}))
    return out


def ollama_chat_stream(pieces: Iterable[str] = ("Hello", " world"), **kw: Any) -> Reply:
    reply_kw = split_reply_kw(kw)
    return ndjson_reply(ollama_chat_stream_objects(pieces, **kw), **reply_kw)


def ollama_chat_response(content: str = "Hello world", *, thinking: str | None = None,
                         tool_calls: list | None = None, done_reason: str = "stop",
                         model: str = "up-model", **metrics: Any) -> dict:
    return ollama_chat_chunk(content, thinking=thinking, tool_calls=tool_calls, done=True,
                             done_reason=done_reason, model=model,
                             **{**DEFAULT_METRICS, **metrics})


def ollama_tool_call(name: str, arguments: dict, *, id: str | None = None,
                     index: int | None = None) -> dict:
    fn: dict[str, Any] = {"name": name, "arguments": arguments}
    if index is not None:
        fn["index"] = index
    call: dict[str, Any] = {"function": fn}
    if id is not None:
        call["id"] = id
    return call


def ollama_generate_chunk(response: str = "", *, thinking: str | None = None, done: bool = False,
                          done_reason: str | None = None, model: str = "up-model",
                          **metrics: Any) -> dict:
    obj: dict[str, Any] = {"model": model, "created_at": OLLAMA_TS, "response": response,
                           "done": done}
    if thinking is not None:
        obj["thinking"] = thinking
    if done_reason is not None:
        obj["done_reason"] = done_reason
    obj.update(metrics)
    return obj


def ollama_generate_stream_objects(pieces: Iterable[str] = ("Hello", " world"), *,
                                   model: str = "up-model", **metrics: Any) -> list[dict]:
    out = [ollama_generate_chunk(p, model=model) for p in pieces]
    out.append(ollama_generate_chunk("", done=True, done_reason="stop", model=model,
                                     **{**DEFAULT_METRICS, **metrics}))
    return out


def ollama_generate_response(response: str = "Hello world", *, thinking: str | None = None,
                             model: str = "up-model", **metrics: Any) -> dict:
    return ollama_generate_chunk(response, thinking=thinking, done=True, done_reason="stop",
                                 model=model, **{**DEFAULT_METRICS, **metrics})


def ollama_tags(*names: str) -> dict:
    return {"models": [
        {"name": n, "model": n, "modified_at": "2025-05-04T17:37:44.706015396-07:00",
         "size": 2019393189, "digest": uuid.uuid5(uuid.NAMESPACE_URL, n).hex * 2,
         "details": {"parent_model": "", "format": "gguf", "family": "llama",
                     "families": ["llama"], "parameter_size": "3.2B",
                     "quantization_level": "Q4_K_M"}}
        for n in names]}


def ollama_show(*, family: str = "llama", context_length: int = 131072,
                capabilities: Iterable[str] = ("completion", "tools")) -> dict:
    return {
        "modelfile": "# fake\nFROM x\n", "parameters": 'stop "<|eot_id|>"',
        "template": "{{ .Prompt }}",
        "details": {"parent_model": "", "format": "gguf", "family": family,
                    "families": [family], "parameter_size": "3.2B",
                    "quantization_level": "Q4_K_M"},
        "model_info": {"general.architecture": family, "general.parameter_count": 3212749888,
                       f"{family}.context_length": context_length,
                       f"{family}.embedding_length": 3072},
        "capabilities": list(capabilities),
        "modified_at": "2025-05-04T17:37:44.706015396-07:00",
    }


def ollama_embed(vectors: list[list[float]], *, model: str = "up-embed",
                 prompt_eval_count: int = 3) -> dict:
    return {"model": model, "embeddings": vectors, "total_duration": 14143917,
            "load_duration": 1019500, "prompt_eval_count": prompt_eval_count}


# -- images -----------------------------------------------------------------------------------

# 1x1 images; only the magic bytes matter for MIME sniffing.
PNG_1PX = base64.b64encode(
    bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                  "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
).decode()
JPEG_MAGIC = base64.b64encode(bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")).decode()
GIF_1PX = base64.b64encode(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").decode()
WEBP_MAGIC = base64.b64encode(b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/\x00\x00\x00\x00").decode()



# -- responders -------------------------------------------------------------------------------


def ollama_chat_responder(pieces: Iterable[str] = ("Hello", " world"), *,
                          thinking: Iterable[str] = (), tool_calls: list | None = None,
                          done_reason: str = "stop", model: str = "up-model",
                          **kw: Any) -> Callable[[RecordedRequest], Reply]:
    """An Ollama /api/chat upstream: NDJSON unless the request says `stream: false`."""
    reply_kw = split_reply_kw(kw)
    pieces, thinking = list(pieces), list(thinking)

    def respond(req: RecordedRequest) -> Reply:
        body = req.json or {}
        if body.get("stream", True) is False:
            return json_reply(ollama_chat_response(
                "".join(pieces), thinking="".join(thinking) or None, tool_calls=tool_calls,
                done_reason=done_reason, model=model, **kw))
        return ndjson_reply(ollama_chat_stream_objects(
            pieces, thinking=thinking, tool_calls=tool_calls, done_reason=done_reason,
            model=model, **kw), **reply_kw)

    return respond


def ollama_generate_responder(pieces: Iterable[str] = ("Hello", " world"), *,
                              model: str = "up-model", **kw: Any) -> Callable[[RecordedRequest], Reply]:
    """An Ollama /api/generate upstream: NDJSON unless the request says `stream: false`."""
    reply_kw = split_reply_kw(kw)
    pieces = list(pieces)

    def respond(req: RecordedRequest) -> Reply:
        if (req.json or {}).get("stream", True) is False:
            return json_reply(ollama_generate_response("".join(pieces), model=model, **kw))
        return ndjson_reply(ollama_generate_stream_objects(pieces, model=model, **kw), **reply_kw)

    return respond
