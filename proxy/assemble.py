"""Answers assembled after the fact, for the log and off the client's path: a passthrough's recorded stream run
through its translator, or a whole (non-streamed) OpenAI answer read directly."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import jsonio
from .dialects import openai as oa
from .errors import ProxyError
from .streaming import Answer, OllamaToOpenAI, OpenAIToOllama, ollama_ndjson_to_openai, openai_sse_to_ollama
from .usage import take_openai_usage


def _assemble(translate: Callable[[Iterable[bytes], Any], Iterator[bytes]], translator: Any, raw: bytes) -> Answer:
    """Run a translator over a whole recorded stream only for the answer it assembles."""
    try:
        for _ in translate([raw], translator):
            pass
    except ProxyError as exc:
        translator.answer.error = exc.message
    return translator.answer


def answer_of_openai(resp: Any) -> Answer:
    """The answer of a whole (non-streamed) OpenAI chat or text completion."""
    answer = Answer()
    if not isinstance(resp, dict):
        return answer
    take_openai_usage(answer, resp.get("usage"))
    for choice in resp.get("choices") or ():
        message = choice.get("message") or {}
        text = message.get("content") if message else choice.get("text")
        if isinstance(text, str):
            answer.content.append(text)
        reasoning = oa.reasoning_of(message) if message else None
        if reasoning:
            answer.thinking.append(reasoning)
        answer.tool_calls.extend(message.get("tool_calls") or ())
        answer.finish_reason = choice.get("finish_reason")
    return answer


def assemble_openai_json(raw: bytes) -> Answer:
    return answer_of_openai(jsonio.loads(raw))


def assemble_openai_sse(raw: bytes) -> Answer:
    return _assemble(openai_sse_to_ollama, OpenAIToOllama("chat", "", 0.0, clock=lambda: 0.0, emit=False), raw)


def assemble_ollama_ndjson(raw: bytes, kind: str = "chat") -> Answer:
    translator = OllamaToOpenAI("chat" if kind == "chat" else "completion", "", "", 0, False, clock=lambda: 0.0,
                                emit=False)
    return _assemble(ollama_ndjson_to_openai, translator, raw)
