"""Anthropic Messages answers: a whole message built from an OpenAI chat completion, the stream's events as SSE
bytes (a delta is a fixed template around one encoded string), stop reasons, errors and the model list."""
from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from ... import jsonio
from ...errors import ProxyError, anthropic_error_body
from .. import openai as oa
from ..ollama import parse_arguments
from .request import tool_id

# OpenAI finish_reason -> Anthropic stop_reason (a tool call and a matched stop sequence are decided first)
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}
PING = b'event: ping\ndata: {"type":"ping"}\n\n'
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
# content_block_delta per delta type: the template and the field its string goes in
_DELTA = {kind: b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"'
          + kind.encode() + b'","' + field.encode() + b'":%b}}\n\n'
          for kind, field in (("text_delta", "text"), ("thinking_delta", "thinking"),
                              ("input_json_delta", "partial_json"), ("signature_delta", "signature"))}
_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def tool_use_id(backend_id: Any) -> str:
    """The tool_use id for a backend's call id (kept, made safe), or a new one when the backend gave none."""
    return tool_id(backend_id) if isinstance(backend_id, str) and backend_id else "toolu_" + secrets.token_hex(12)


# --- stream events ------------------------------------------------------------------------------------------

def event(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + jsonio.dumps(data) + b"\n\n"


def message_start(msg_id: str, model: str, input_tokens: int = 0) -> bytes:
    return event("message_start", {"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": {"input_tokens": input_tokens, "output_tokens": 0}}})


def block_start(index: int, block: dict) -> bytes:
    """A content block opens: ``{"type": "text", "text": ""}``, ``{"type": "thinking", "thinking": "",
    "signature": ""}`` or ``{"type": "tool_use", "id", "name", "input": {}}`` (the SDKs add the deltas to the
    empty fields, which must be there)."""
    return event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def block_delta(index: int, kind: str, value: str) -> bytes:
    """``kind``: text_delta, thinking_delta, input_json_delta or signature_delta."""
    return _DELTA[kind] % (index, jsonio.dumps(value))


def block_stop(index: int) -> bytes:
    return _STOP % index


def message_delta(stop_reason: str, stop_sequence: str | None, usage: dict) -> bytes:
    return event("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                   "usage": usage})


def error_event(exc: ProxyError) -> bytes:
    """A failure after the first byte: ``event: error`` with the error object Anthropic's SDKs raise from."""
    return event("error", anthropic_error_body(exc))


# --- whole answers -------------------------------------------------------------------------------------------

def matched_stop(choice: dict, stop_sequences: Any) -> str | None:
    """The stop sequence a backend says it stopped at (vLLM's ``choices[].stop_reason``), if the client gave it."""
    said = choice.get("stop_reason")
    return said if isinstance(said, str) and isinstance(stop_sequences, list) and said in stop_sequences else None


def stop_reason_of(finish_reason: Any, tool_calls: bool, stop_sequence: str | None = None) -> str:
    if tool_calls:
        return "tool_use"
    if stop_sequence is not None:
        return "stop_sequence"
    return STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"


def usage_of(usage: Any, prompt_tokens: int | None = None, completion_tokens: int | None = None) -> dict:
    """Anthropic usage from an OpenAI one (llama.cpp's cached prompt tokens as ``cache_read_input_tokens``)."""
    usage = usage if isinstance(usage, dict) else {}
    prompt = usage.get("prompt_tokens", prompt_tokens)
    out = {"input_tokens": prompt if isinstance(prompt, int) else 0}
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        out["cache_read_input_tokens"] = details["cached_tokens"]
    completion = usage.get("completion_tokens", completion_tokens)
    out["output_tokens"] = completion if isinstance(completion, int) else 0
    return out


def message_from_openai(resp: dict, msg_id: str, model: str, stop_sequences: Any = None) -> dict:
    """A whole OpenAI chat completion as one Anthropic message: thinking, text, then tool_use blocks."""
    choices = resp.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = found if isinstance(found := choice.get("message"), dict) else {}
    content: list[dict] = []
    reasoning = oa.reasoning_of(message)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = oa.content_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    calls = [call for call in message.get("tool_calls") or () if isinstance(call, dict)]
    for call in calls:
        function = found if isinstance(found := call.get("function"), dict) else {}
        arguments, _ = parse_arguments(function.get("arguments"))
        content.append({"type": "tool_use", "id": tool_use_id(call.get("id")), "name": function.get("name") or "",
                        "input": arguments})
    stop_sequence = matched_stop(choice, stop_sequences)
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason_of(choice.get("finish_reason"), bool(calls), stop_sequence),
            "stop_sequence": stop_sequence, "usage": usage_of(resp.get("usage"))}


# --- models ------------------------------------------------------------------------------------------------

def model_entry(model_id: str, created: int, display_name: str | None = None) -> dict:
    stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": model_id, "display_name": display_name or model_id, "created_at": stamp}


def model_list(entries: list[dict]) -> dict:
    return {"data": entries, "has_more": False, "first_id": entries[0]["id"] if entries else None,
            "last_id": entries[-1]["id"] if entries else None}
