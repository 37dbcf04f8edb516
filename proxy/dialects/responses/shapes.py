"""Responses wire shapes: the response object (echoing the request), its output items, usage, and SSE events.

Pure: ids, times and sequence numbers come in as arguments."""
from __future__ import annotations

import secrets
from typing import Any

from ... import jsonio
from .request import tools_of

# Request fields the response object echoes, with the value it shows when the request did not set one.
ECHOED: dict[str, Any] = {
    "instructions": None, "max_output_tokens": None, "parallel_tool_calls": True, "temperature": None, "top_p": None,
    "tool_choice": "auto", "metadata": {}, "user": None, "prompt_cache_key": None}
FINISH_STATUS = {"length": "incomplete"}  # any other finish reason: completed
INCOMPLETE_REASON = {"length": "max_output_tokens"}
# Backend error codes Codex acts on (context window full, retry later); others become server_error.
FAILURE_CODES = frozenset({"context_length_exceeded", "rate_limit_exceeded", "insufficient_quota"})


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def base(body: dict, rid: str, created: int, model: str) -> dict[str, Any]:
    """The response object's fields that do not change while it runs (status, output, usage are added)."""
    obj: dict[str, Any] = {"id": rid, "object": "response", "created_at": created, "model": model,
                           "background": False, "error": None, "incomplete_details": None,
                           "previous_response_id": None, "store": False, "truncation": "disabled"}
    for key, default in ECHOED.items():
        value = body.get(key)
        obj[key] = default if value is None else value
    obj["tools"] = tools_of(body)[1]
    reasoning = found if isinstance(found := body.get("reasoning"), dict) else {}
    obj["reasoning"] = {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
    text = found if isinstance(found := body.get("text"), dict) else {}
    obj["text"] = {**text, "format": text.get("format") or {"type": "text"}}
    return obj


def response(fixed: dict, status: str, output: list[dict], usage_obj: dict | None, *,
             error: dict | None = None, incomplete: str | None = None) -> dict[str, Any]:
    obj = {**fixed, "status": status, "output": output, "usage": usage_obj}
    if error is not None:
        obj["error"] = error
    if incomplete is not None:
        obj["incomplete_details"] = {"reason": incomplete}
    return obj


def usage(prompt: int | None, completion: int | None, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    prompt, completion = prompt or 0, completion or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + completion}


def failure(message: str, code: str | None) -> dict[str, str]:
    return {"code": code if code in FAILURE_CODES else "server_error", "message": message}


# --- output items -----------------------------------------------------------------------------

def message_item(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [output_text(text)]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    summary = [] if text is None else [summary_text(text)]
    return {"id": item_id, "type": "reasoning", "status": status, "summary": summary}


def summary_text(text: str) -> dict[str, str]:
    return {"type": "summary_text", "text": text}


def function_call_item(item_id: str, status: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}


def custom_call_item(item_id: str, status: str, call_id: str, name: str, data: str) -> dict[str, Any]:
    return {"id": item_id, "type": "custom_tool_call", "status": status, "call_id": call_id, "name": name,
            "input": data}


def custom_input(arguments: str) -> str:
    """A custom tool's raw input from the arguments of the function it was offered as: the `input` string;
    arguments that are not such an object are passed as they are."""
    try:
        parsed = jsonio.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, dict):
        value = parsed.get("input")
        if isinstance(value, str):
            return value
        strings = [v for v in parsed.values() if isinstance(v, str)]
        if len(parsed) == 1 and strings:
            return strings[0]
    return parsed if isinstance(parsed, str) else arguments


# --- events -----------------------------------------------------------------------------------

_HEADS: dict[str, bytes] = {}  # "event: <kind>\ndata: " per event kind, encoded once


def sse(kind: str, body: dict) -> bytes:
    """One event; ``body`` carries ``type`` (= kind) and ``sequence_number`` already."""
    head = _HEADS.get(kind)
    if head is None:
        head = _HEADS[kind] = b"event: " + kind.encode() + b"\ndata: "
    return head + jsonio.dumps(body) + b"\n\n"
