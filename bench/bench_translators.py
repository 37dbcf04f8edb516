"""CPU per streamed chunk of each stream translator on its own (framing, translation, encoding; no sockets):
OpenAI SSE -> Ollama NDJSON, Ollama NDJSON -> OpenAI SSE, the Anthropic Messages ones (OpenAI SSE ->
Anthropic events, Ollama NDJSON -> Anthropic events through OpenAI chunks) and the Responses ones. Each
upstream chunk holds one event of one word, as a live stream's do; the figure is the best of REPEATS runs of
CHUNKS chunks. Then the memory each translator holds for an open stream (tracemalloc, OPEN streams, HELD chunks each).

    python bench/bench_translators.py
"""
from __future__ import annotations

import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.anthropic_stream import (  # noqa: E402
    OllamaStreamToAnthropic,
    OpenAIStreamToAnthropic,
    OpenAIToAnthropic,
)
from proxy.dialects.responses.shapes import base  # noqa: E402
from proxy.responses_stream import ChatToResponses, ResponsesFromOllama, ResponsesFromOpenAI  # noqa: E402
from proxy.streaming import (  # noqa: E402
    OllamaStreamToOpenAI,
    OllamaToOpenAI,
    OpenAIStreamToOllama,
    OpenAIToOllama,
)

CHUNKS = 20000
REPEATS = 5
OPEN = 500
HELD = 50


def openai_body(n: int) -> list[bytes]:
    """A llama-server-like chat stream: role chunk, n one-word content chunks, finish, usage, [DONE]."""
    def event(delta: dict, finish: str | None = None, **extra) -> bytes:
        chunk = {"id": "chatcmpl-abc123", "object": "chat.completion.chunk", "created": 1764000000,
                 "model": "qwen3-8b", "system_fingerprint": "b6097-abc",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    return ([event({"role": "assistant", "content": None})] + [event({"content": " word"}) for _ in range(n)]
            + [event({}, "stop"), event({}, None, usage={"prompt_tokens": 20, "completion_tokens": n}),
               b"data: [DONE]\n\n"])


def ollama_body(n: int) -> list[bytes]:
    def line(content: str, done: bool = False, **extra) -> bytes:
        obj = {"model": "llama3.2", "created_at": "2026-12-03T10:00:00.123456789Z",
               "message": {"role": "assistant", "content": content}, "done": done, **extra}
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"

    return [line(" word") for _ in range(n)] + [line("", True, done_reason="stop", prompt_eval_count=20,
                                                       eval_count=n, total_duration=1, eval_duration=1)]


def per_chunk(make_push: Callable[[], object], body: list[bytes]) -> float:
    """Best µs of CPU per upstream chunk over REPEATS runs."""
    best = float("inf")
    for _ in range(REPEATS):
        push = make_push()
        started = time.process_time()
        for chunk in body:
            push(chunk)  # type: ignore[operator]
        push.end()  # type: ignore[attr-defined]
        best = min(best, (time.process_time() - started) / len(body) * 1e6)
    return best


def held_bytes(make_push: Callable[[], object], body: list[bytes]) -> float:
    """Bytes allocated and still held per open stream, each fed ``body`` (not ended)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    pushes = []
    for _ in range(OPEN):
        push = make_push()
        for chunk in body:
            push(chunk)  # type: ignore[operator]
        pushes.append(push)
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return held / OPEN


def responses_translator() -> ChatToResponses:
    return ChatToResponses(base({"model": "m", "input": "hi"}, "resp_1", 1, "m"))


def main() -> None:
    openai, ollama = openai_body(CHUNKS), ollama_body(CHUNKS)
    rows = [
        ("OpenAI SSE -> Ollama NDJSON", lambda: OpenAIStreamToOllama(OpenAIToOllama("chat", "m", 0.0)), openai),
        ("Ollama NDJSON -> OpenAI SSE",
         lambda: OllamaStreamToOpenAI(OllamaToOpenAI("chat", "m", "chatcmpl-x", 0, True)), ollama),
        ("OpenAI SSE -> Anthropic events", lambda: OpenAIStreamToAnthropic(OpenAIToAnthropic("m", "msg_x")), openai),
        ("Ollama NDJSON -> Anthropic events",
         lambda: OllamaStreamToAnthropic(OpenAIToAnthropic("m", "msg_x")), ollama),
        ("OpenAI SSE -> Responses events", lambda: ResponsesFromOpenAI(responses_translator()), openai),
        ("Ollama NDJSON -> Responses events", lambda: ResponsesFromOllama(responses_translator()), ollama),
    ]
    print(f"{'translator':36} µs CPU per chunk (best of {REPEATS} x {CHUNKS} chunks)")
    for name, make, body in rows:
        print(f"{name:36} {per_chunk(make, body):6.2f}")
    print(f"\n{'translator':36} bytes held per open stream ({OPEN} streams, {HELD} chunks each)")
    for name, make, body in rows:
        print(f"{name:36} {held_bytes(make, body[:HELD]):6.0f}")


if __name__ == "__main__":
    main()
