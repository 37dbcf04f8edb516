"""A hit answered in the client's dialect, from an entry (``entry``): whole, or as a stream cut at words.

Pure: entry in, bytes out; time, ids and the client's model name come in as arguments. Ollama lines are
built here; OpenAI answers are those Ollama lines put through the same translator that serves an OpenAI
client from an Ollama backend (``streaming.OllamaToOpenAI``), so a replay has the shape of a live answer:
the role first, one chunk per word, the finish chunk, the usage chunk when ``include_usage`` was asked for,
``data: [DONE]``; Ollama's last line is ``done: true`` with the token counts. The agent fronts (Anthropic
Messages, OpenAI Responses) take ``chat_chunks`` or ``chat_completion`` and put them through their own translators.
"""
from __future__ import annotations

import re
from typing import Any

from .. import jsonio
from ..anthropic_stream import OllamaToOpenAIChunks
from ..dialects import ollama as ol
from ..dialects import ollama_openai as oo
from ..dialects import openai as oa
from ..streaming import OllamaToOpenAI
from .key import Reply

WORD = re.compile(r"\s*\S+|\s+")  # a word with the spaces before it; trailing spaces alone


def words(text: str) -> list[str]:
    return WORD.findall(text)


def _ollama_calls(entry: dict) -> list[dict]:
    calls = []
    for call in entry.get("tool_calls") or ():
        arguments = call.get("arguments")
        if isinstance(arguments, str):
            arguments, _ = ol.parse_arguments(arguments)
        out: dict[str, Any] = {"function": {"name": call.get("name", ""), "arguments": arguments}}
        if call.get("id"):
            out["id"] = call["id"]
        calls.append(out)
    return calls


def _line(kind: str, model: str, at: str, content: str = "", thinking: str | None = None,
          calls: list | None = None) -> dict:
    if kind == "chat":
        return ol.chat_line(model, at, content, thinking, calls)
    return ol.generate_line(model, at, content, thinking)


def _final(kind: str, entry: dict, model: str, at: str, seconds: float, whole: bool) -> dict:
    calls = _ollama_calls(entry) if kind == "chat" else None
    if whole:
        line = _line(kind, model, at, entry.get("content") or "", entry.get("thinking") or None, calls or None)
    else:
        line = _line(kind, model, at)
    done_reason = oo.FINISH_TO_DONE_REASON.get(entry.get("finish_reason") or "stop", "stop")
    return ol.final_line(line, done_reason, ol.metrics(entry.get("prompt_tokens"), entry.get("completion_tokens"),
                                                       total_s=seconds, prompt_s=None, eval_s=None))


def ollama_lines(entry: dict, kind: str, model: str, at: str, seconds: float) -> list[dict]:
    """The lines of an Ollama stream: thinking and content a word a line, the tool calls, the final line."""
    lines = [_line(kind, model, at, "", piece) for piece in words(entry.get("thinking") or "")]
    lines += [_line(kind, model, at, piece) for piece in words(entry.get("content") or "")]
    calls = _ollama_calls(entry) if kind == "chat" else []
    if calls:
        lines.append(_line(kind, model, at, calls=calls))
    lines.append(_final(kind, entry, model, at, seconds, whole=False))
    return lines


def stream(entry: dict, reply: Reply, model: str, now: float, cid: str, seconds: float = 0.0) -> list[bytes]:
    """A streamed generation's chunks in the client's dialect (``seconds``: Ollama's total_duration)."""
    at = ol.rfc3339(now)
    if reply.dialect == "ollama":
        return [jsonio.dumps_line(line) for line in ollama_lines(entry, reply.kind, model, at, seconds)]
    kind = "chat" if reply.kind == "chat" else "completion"
    translator = OllamaToOpenAI(kind, model, cid, int(now), reply.include_usage, clock=lambda: now)
    out: list[bytes] = []
    for line in ollama_lines(entry, "chat" if kind == "chat" else "generate", model, at, 0.0):
        out += translator.feed(line)
    return out


def chat_chunks(entry: dict, model: str, now: float) -> list[dict]:
    """A chat entry as OpenAI chat chunks (dicts): the role, one a word, the finish chunk and the usage chunk —
    what an agent front's stream translator is fed on a hit, as it is fed a live backend's."""
    translator = OllamaToOpenAIChunks("chat", model, "", int(now), True, clock=lambda: now)
    out: list[Any] = []
    for line in ollama_lines(entry, "chat", model, ol.rfc3339(now), 0.0):
        out += translator.feed(line)
    return [chunk for chunk in out if chunk.__class__ is dict]  # not the [DONE] marker


def chat_completion(entry: dict, model: str, now: float, cid: str = "") -> dict:
    """A chat entry as a whole OpenAI chat completion (a dict), for an agent front's whole answer."""
    line = _final("chat", entry, model, ol.rfc3339(now), 0.0, whole=True)
    return oo.chat_response_to_openai(line, cid, int(now), model)


def whole(entry: dict, reply: Reply, model: str, now: float, cid: str, seconds: float = 0.0) -> bytes:
    """A whole answer (generation or embedding) in the client's dialect."""
    if entry.get("op") == "embed":
        return jsonio.dumps(_embedding(entry, reply, model, seconds))
    at = ol.rfc3339(now)
    ollama_kind = "chat" if reply.kind == "chat" else "generate"
    line = _final(ollama_kind, entry, model, at, seconds, whole=True)
    if reply.dialect == "ollama":
        return jsonio.dumps(line)
    if reply.kind == "chat":
        return jsonio.dumps(oo.chat_response_to_openai(line, cid, int(now), model))
    return jsonio.dumps(oo.generate_response_to_openai(line, cid, int(now), model))


def _embedding(entry: dict, reply: Reply, model: str, seconds: float) -> dict:
    vectors = entry["vectors"]
    if reply.dialect == "openai":
        return oa.embedding_response(model, vectors, entry.get("prompt_tokens") or 0, reply.encoding_format)
    if reply.kind == "embeddings":
        return {"embedding": vectors[0]}
    return {"model": model, "embeddings": vectors, "total_duration": ol.ns(seconds), "load_duration": 0,
            "prompt_eval_count": entry.get("prompt_tokens") or 0}
