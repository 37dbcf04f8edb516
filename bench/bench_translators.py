"""What a translated stream costs per chunk in CPU: each push translator fed a 2,000-token answer one upstream
event per call, as a live relay feeds it: OpenAI SSE -> Ollama lines, Ollama lines -> OpenAI SSE (the existing
pair), and both backend dialects -> Responses events (the Codex front). In-process: framing and translation
only; the median of several runs, in microseconds per chunk.

    python bench/bench_translators.py
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.dialects.responses.shapes import base  # noqa: E402
from proxy.responses_stream import ChatToResponses, ResponsesFromOllama, ResponsesFromOpenAI  # noqa: E402
from proxy.streaming import (  # noqa: E402
    OllamaStreamToOpenAI,
    OllamaToOpenAI,
    OpenAIStreamToOllama,
    OpenAIToOllama,
)

TOKENS = 2000
RUNS = 15


def openai_events() -> list[bytes]:
    def chunk(delta: dict, finish: str | None = None) -> bytes:
        body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": f" word{i}"}) for i in range(TOKENS)]
    events.append(chunk({}, "stop"))
    events.append(b'data: {"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2000,'
                  b'"total_tokens":2009}}\n\n')
    return [*events, b"data: [DONE]\n\n"]


def ollama_lines() -> list[bytes]:
    def line(content: str, done: bool = False) -> bytes:
        body = {"model": "m", "created_at": "2026-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": content}, "done": done}
        if done:
            body.update(done_reason="stop", prompt_eval_count=9, eval_count=TOKENS)
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"
    return [line(f" word{i}") for i in range(TOKENS)] + [line("", True)]


def responses_translator() -> ChatToResponses:
    return ChatToResponses(base({"model": "m", "input": "hi"}, "resp_1", 1, "m"))


CASES = {
    "OpenAI SSE -> Ollama (existing)": (openai_events, lambda: OpenAIStreamToOllama(OpenAIToOllama("chat", "m", 0.0))),
    "Ollama -> OpenAI SSE (existing)": (ollama_lines, lambda: OllamaStreamToOpenAI(
        OllamaToOpenAI("chat", "m", "chatcmpl-1", 1, True))),
    "OpenAI SSE -> Responses": (openai_events, lambda: ResponsesFromOpenAI(responses_translator())),
    "Ollama -> Responses": (ollama_lines, lambda: ResponsesFromOllama(responses_translator())),
}


def per_chunk_us(chunks: list[bytes], make) -> float:
    runs = []
    for _ in range(RUNS):
        push = make()
        started = time.process_time()
        for chunk in chunks:
            push(chunk)
        push.end()
        runs.append((time.process_time() - started) / len(chunks) * 1e6)
        assert push.error is None
    return statistics.median(runs)


def main() -> None:
    for name, (source, make) in CASES.items():
        print(f"{name:36s} {per_chunk_us(source(), make):6.2f} µs/chunk")


if __name__ == "__main__":
    main()
