"""OpenAI wire shapes: builders for chunks, responses, model lists and embeddings; request checks.

Pure: no Flask, no network, no clock — ``created`` and ids come in as arguments.
"""
from __future__ import annotations

import base64
import secrets
import struct
from typing import Any

from ..errors import BadRequest

SSE_DONE = b"data: [DONE]\n\n"
FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)  # one getrandom call, not one per character


def new_call_id() -> str:
    return "call_" + secrets.token_hex(4)


def sse_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


# --- request validation -------------------------------------------------------------------

def _check_type(body: dict, key: str, types: tuple, what: str) -> None:
    if key in body and body[key] is not None and not isinstance(body[key], types):
        raise BadRequest(f"'{key}' must be {what}", param=key)


def _check_number(body: dict, key: str) -> None:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise BadRequest(f"'{key}' must be a number", param=key)


def check_model(body: Any) -> str:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' is required and must be a non-empty string", param="model")
    return model


def check_chat_request(body: Any) -> str:
    model = check_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'", param="messages")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise BadRequest(f"messages[{i}].content must be a string, an array of parts or null", param="messages")
        calls = message.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise BadRequest(f"messages[{i}].tool_calls must be an array", param="messages")
    _check_common(body)
    _check_type(body, "tools", (list,), "an array")
    _check_type(body, "response_format", (dict,), "an object")
    _check_type(body, "stream_options", (dict,), "an object")
    return model


def check_completion_request(body: Any) -> str:
    model = check_model(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise BadRequest("'prompt' is required", param="prompt")
    if not isinstance(prompt, (str, list)):
        raise BadRequest("'prompt' must be a string or an array", param="prompt")
    _check_type(body, "suffix", (str,), "a string")
    _check_common(body)
    return model


def check_embedding_request(body: Any) -> str:
    model = check_model(body)
    data = body.get("input")
    if not isinstance(data, (str, list)) or (isinstance(data, list) and not data):
        raise BadRequest("'input' must be a string or a non-empty array", param="input")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    return model


def _check_common(body: dict) -> None:
    _check_type(body, "stream", (bool,), "a boolean")
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "top_k", "min_p"):
        _check_number(body, key)
    for key in ("max_tokens", "max_completion_tokens", "seed", "n"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRequest(f"'{key}' must be an integer", param=key)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, (str, list)):
        raise BadRequest("'stop' must be a string or an array of strings", param="stop")


def wants_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


# --- response builders -------------------------------------------------------------------

def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_chunk(cid: str, created: int, model: str, delta: dict, finish_reason: str | None = None,
               *, with_usage_field: bool = False) -> dict[str, Any]:
    chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
             "system_fingerprint": "fp_llm_proxy",
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    if with_usage_field:
        chunk["usage"] = None
    return chunk


def usage_chunk(cid: str, created: int, model: str, usage_obj: dict) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_llm_proxy", "choices": [], "usage": usage_obj}


def chat_completion(cid: str, created: int, model: str, message: dict, finish_reason: str,
                    usage_obj: dict) -> dict[str, Any]:
    message = {"role": "assistant", "content": None, "refusal": None, **message}
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": "fp_llm_proxy",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage_obj}


def completion_chunk(cid: str, created: int, model: str, text: str,
                     finish_reason: str | None = None) -> dict[str, Any]:
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": "fp_llm_proxy",
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]}


def completion(cid: str, created: int, model: str, text: str, finish_reason: str,
               usage_obj: dict) -> dict[str, Any]:
    body = completion_chunk(cid, created, model, text, finish_reason)
    body["usage"] = usage_obj
    return body


def model_object(model_id: str, created: int, owned_by: str, context_length: int | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}
    if context_length:
        obj["context_length"] = context_length
    return obj


def model_list(models: list[dict]) -> dict[str, Any]:
    return {"object": "list", "data": models}


def encode_embedding(vector: list[float], encoding_format: str | None) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def embedding_response(model: str, vectors: list[list[float]], prompt_tokens: int,
                       encoding_format: str | None) -> dict[str, Any]:
    return {"object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode_embedding(v, encoding_format)}
                     for i, v in enumerate(vectors)],
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def decode_embedding(value: Any) -> list[float]:
    """An embedding from an upstream body: a float list, or base64 little-endian float32."""
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return value


# --- reading upstream OpenAI bodies ----------------------------------------------------------

def reasoning_of(obj: dict) -> str | None:
    """Reasoning text under either name backends use (llama.cpp/DeepSeek vs vLLM/Ollama/Groq)."""
    value = obj.get("reasoning_content")
    if value is None:
        value = obj.get("reasoning")
    return value if isinstance(value, str) else None


def content_text(content: Any) -> str:
    """Plain text of an OpenAI message content (string, parts array or null)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content
                         if isinstance(p, dict) and p.get("type") in ("text", "input_text") and isinstance(p.get("text"), str))
    return str(content)
