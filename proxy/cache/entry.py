"""A cache entry: an answer in a form of no dialect, made from a finished exchange and turned back into an
``Answer`` for the log. Pure: no Flask, no I/O.

A generation's entry is its assembled answer — content, thinking, tool calls, finish reason, token counts;
an embedding's is its vectors and prompt tokens. ``of_answer`` and ``of_embedding`` return None for what
must not be cached: an error, an answer cut short (a broken stream, a client that left, or
``finish_reason: length``), a body that does not read as the answer it should be.
"""
from __future__ import annotations

from typing import Any

from .. import jsonio
from ..dialects.ollama import parse_arguments
from ..dialects.openai import decode_embedding
from ..streaming import Answer

COMPLETE = frozenset({"stop", "tool_calls"})  # finish reasons of an answer the model ended itself


def _tool_call(call: Any) -> dict | None:
    """A tool call of either dialect's shape (OpenAI: arguments as a JSON string; Ollama: an object)."""
    if not isinstance(call, dict):
        return None
    function = call.get("function") or {}
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        parsed, ok = parse_arguments(arguments)
        arguments = parsed if ok else arguments
    out = {"name": function.get("name") or "", "arguments": arguments}
    if call.get("id"):
        out["id"] = call["id"]
    return out


def of_answer(op: str, answer: Answer | None) -> dict | None:
    """The entry of a finished generation, or None when it is not one to keep."""
    if answer is None or answer.error or answer.finish_reason not in COMPLETE:
        return None
    calls = [c for c in map(_tool_call, answer.tool_calls) if c is not None]
    return {"op": op, "content": "".join(answer.content), "thinking": "".join(answer.thinking),
            "tool_calls": calls, "finish_reason": "tool_calls" if calls else "stop",
            "prompt_tokens": answer.prompt_tokens or 0, "completion_tokens": answer.completion_tokens or 0}


def _vectors(value: Any) -> list[list[float]] | None:
    if not isinstance(value, list) or not all(isinstance(v, list) and v for v in value):
        return None
    return value


def of_embedding(body: bytes, dialect: str, kind: str, inputs: int) -> dict | None:
    """The entry of an embedding answer as the client received it (``kind``: "embed" or Ollama's legacy
    "embeddings"); None unless it holds one vector per input."""
    try:
        resp = jsonio.loads(body)
    except ValueError:
        return None
    if not isinstance(resp, dict):
        return None
    if dialect == "openai":
        data = resp.get("data")
        if not isinstance(data, list):
            return None
        items = sorted((d for d in data if isinstance(d, dict)), key=lambda d: d.get("index") or 0)
        vectors = _vectors([decode_embedding(d.get("embedding")) for d in items])
        usage = found if isinstance(found := resp.get("usage"), dict) else {}
        tokens = usage.get("prompt_tokens")
    elif kind == "embeddings":
        vectors = _vectors([resp.get("embedding")])
        tokens = 0
    else:
        vectors = _vectors(resp.get("embeddings"))
        tokens = resp.get("prompt_eval_count")
    if vectors is None or len(vectors) != inputs:
        return None
    return {"op": "embed", "vectors": vectors, "prompt_tokens": int(tokens or 0)}


def answer_of(entry: dict) -> Answer:
    """The entry as the ``Answer`` an exchange records (the log's answer and token counts)."""
    answer = Answer()
    if entry.get("op") == "embed":
        answer.prompt_tokens = entry.get("prompt_tokens") or 0
        answer.completion_tokens = 0
        answer.finish_reason = "stop"
        return answer
    if entry.get("content"):
        answer.content.append(entry["content"])
    if entry.get("thinking"):
        answer.thinking.append(entry["thinking"])
    answer.tool_calls = [{"id": c.get("id"), "type": "function",
                          "function": {"name": c["name"], "arguments": c["arguments"]}} for c in entry["tool_calls"]]
    answer.finish_reason = entry.get("finish_reason")
    answer.prompt_tokens = entry.get("prompt_tokens")
    answer.completion_tokens = entry.get("completion_tokens")
    return answer
