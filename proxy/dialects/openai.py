"""OpenAI wire shapes: builders for chunks, responses, model lists and embeddings; request checks.

Pure: no Flask, no network, no clock — ``created`` and ids come in as arguments.
"""
from __future__ import annotations

import base64
import secrets
import struct
from typing import Any

from ..errors import BadRequest
from .checks import (
    MAX_DIMENSIONS,
    an_object,
    boolean,
    check_fields,
    fail,
    fields,
    integer,
    items,
    number,
    one_of,
    string,
    string_or_strings,
)

SSE_DONE = b"data: [DONE]\n\n"


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)  # one getrandom call, not one per character


def new_call_id() -> str:
    return "call_" + secrets.token_hex(4)


def sse_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


# --- request validation -------------------------------------------------------------------
# Every field of a request the proxy reads, translates or forwards is checked here, from one table per
# endpoint, so that a wrong type is a 400 naming the field and never an exception deeper down. Integers
# written as floats (16.0) are integers to JSON Schema and to OpenAI: they are accepted and rewritten as ints
# in place, so that the backend and the translations see ints. Integers are bounded to 64 bits (what backends
# parse them into, and what the JSON encoder writes).


def _tool_choice(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return value
    return fields({"type": string, "function": fields({"name": string})})(value, name)


def _arguments(value: Any, name: str) -> Any:
    if not isinstance(value, (str, dict)):
        fail(name, "a JSON string")
    return value


def _image_url(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return value
    return fields({"url": string, "detail": string})(value, name)


def _content(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        fail(name, "a string, an array of parts or null")
    return items(fields({"type": string, "text": string, "image_url": _image_url}))(value, name)


TOOL_CALL = fields({"id": string, "type": string, "function": fields({"name": string, "arguments": _arguments})})
MESSAGE = {"role": string, "content": _content, "name": string, "tool_calls": items(TOOL_CALL),
           "tool_call_id": string, "reasoning_content": string, "reasoning": string, "refusal": string}
TOOL = fields({"type": string, "function": fields({"name": string, "description": string,
                                                   "parameters": an_object, "strict": boolean})})
RESPONSE_FORMAT = fields({"type": one_of("text", "json_object", "json_schema"),
                          "json_schema": fields({"name": string, "description": string, "schema": an_object,
                                                 "strict": boolean})})
# What chat and text completions share: sampling, lengths, streaming, stops.
COMMON = {
    "stream": boolean, "stream_options": fields({"include_usage": boolean}),
    "temperature": number, "top_p": number, "presence_penalty": number, "frequency_penalty": number,
    "min_p": number, "typical_p": number, "repeat_penalty": number, "repetition_penalty": number,
    "top_k": integer(), "max_tokens": integer(), "max_completion_tokens": integer(), "seed": integer(),
    "n": integer(1, 128), "stop": string_or_strings, "logit_bias": an_object, "user": string,
    "response_format": RESPONSE_FORMAT,
}
CHAT = {**COMMON, "messages": items(fields(MESSAGE)), "tools": items(TOOL), "tool_choice": _tool_choice,
        "parallel_tool_calls": boolean, "logprobs": boolean, "top_logprobs": integer(0, 20),
        "reasoning_effort": string, "metadata": an_object, "store": boolean}
COMPLETION = {**COMMON, "suffix": string, "echo": boolean, "logprobs": integer(0, 5), "best_of": integer(1, 128)}
EMBEDDING = {"dimensions": integer(1, MAX_DIMENSIONS), "encoding_format": one_of("float", "base64"), "user": string}


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
    check_fields(body, CHAT)
    return model


def _token_lists(value: list) -> bool:
    """Token ids: an array of integers, or an array of such arrays."""
    ints = lambda values: all(isinstance(x, int) and not isinstance(x, bool) for x in values)  # noqa: E731
    return ints(value) or all(isinstance(x, list) and ints(x) for x in value)


def check_completion_request(body: Any) -> str:
    model = check_model(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise BadRequest("'prompt' is required", param="prompt")
    if not isinstance(prompt, (str, list)) or isinstance(prompt, list) and not (
            all(isinstance(x, str) for x in prompt) or _token_lists(prompt)):
        raise BadRequest("'prompt' must be a string, an array of strings or an array of token ids", param="prompt")
    check_fields(body, COMPLETION)
    return model


def check_embedding_request(body: Any) -> str:
    model = check_model(body)
    data = body.get("input")
    if not isinstance(data, (str, list)) or isinstance(data, list) and not (
            data and (all(isinstance(x, str) for x in data) or _token_lists(data))):
        raise BadRequest("'input' must be a string or a non-empty array of strings or token ids", param="input")
    check_fields(body, EMBEDDING)
    return model


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
                         if isinstance(p, dict) and p.get("type") in ("text", "input_text")
                         and isinstance(p.get("text"), str))
    return str(content)
