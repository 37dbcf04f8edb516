"""Stream framing and translation, as generators over any iterable of bytes. No network, no Flask.

Layers: framing (``SSEFraming`` / ``NDJSONFraming``: bytes -> events, split anywhere) -> a per-stream translator
object (``OpenAIToOllama``, ``OllamaToOpenAI``) -> bytes out; ``OpenAIStreamToOllama`` / ``OllamaStreamToOpenAI``
push one upstream chunk through both (a live stream's ``Relay`` calls them), ``openai_sse_to_ollama`` /
``ollama_ndjson_to_openai`` are the same as generators.
Same-dialect streams go through ``passthrough`` instead.
Each translator also keeps the assembled answer (text, thinking, tool calls, usage) for the log; a passthrough's
answer is assembled once it has ended, by ``assemble``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import jsonio
from .dialects import anthropic as an
from .dialects import ollama as ol
from .dialects import ollama_openai as oo
from .dialects import openai as oa
from .errors import BackendError, ProxyError, clip_message
from .framing import NDJSONFraming, SSEFraming
from .usage import take_openai_usage


class StreamFormatError(BackendError):
    """The backend sent something that is not its dialect's stream format."""


def _load(payload: bytes, what: str) -> Any:
    try:
        return jsonio.loads(payload)
    except ValueError:
        raise StreamFormatError(f"the backend sent a malformed {what} chunk: {payload[:200]!r}") from None


def sse_chunk(event: str | None, data: bytes) -> dict:
    """One OpenAI SSE event's chunk object; an ``event: error`` without an ``error`` key is wrapped in one."""
    chunk = _load(data, "SSE")
    if event == "error" and not (isinstance(chunk, dict) and "error" in chunk):
        chunk = {"error": chunk}
    if not isinstance(chunk, dict):
        raise StreamFormatError(f"the backend sent a non-object SSE chunk: {data[:200]!r}")
    return chunk


def ndjson_line(raw: bytes) -> dict:
    """One Ollama NDJSON line's object."""
    line = _load(raw, "NDJSON")
    if not isinstance(line, dict):
        raise StreamFormatError(f"the backend sent a non-object NDJSON line: {raw[:200]!r}")
    return line


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        error = error.get("message") or error
    return clip_message(error if isinstance(error, str) else str(error))


# --- the answer, assembled (shared by translators and the log recorder) ----------------------

class Pieces(list):
    """The text pieces of a streamed answer, joined every JOIN_EVERY appends: a long stream keeps one
    string (a byte per character) instead of a whole string object per token."""

    __slots__ = ()
    JOIN_EVERY = 32

    def append(self, text: str) -> None:
        list.append(self, text)
        if len(self) >= self.JOIN_EVERY:
            joined = "".join(self)
            self.clear()
            list.append(self, joined)


class Answer:
    """What the model said in one response, as it is assembled from a stream."""

    __slots__ = ("content", "thinking", "tool_calls", "finish_reason", "prompt_tokens", "completion_tokens",
                 "usage_estimated", "deltas", "timings", "first_token_at", "last_token_at", "error")

    def __init__(self) -> None:
        self.content: list[str] = Pieces()
        self.thinking: list[str] = Pieces()
        self.tool_calls: list[dict] = []
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.usage_estimated = False
        self.deltas = 0
        self.timings: dict | None = None
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.error: str | None = None

    def mark_token(self, now: float) -> None:
        self.deltas += 1
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now

    def as_dict(self) -> dict:
        return {"content": "".join(self.content), "thinking": "".join(self.thinking),
                "tool_calls": self.tool_calls, "finish_reason": self.finish_reason,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "usage_estimated": self.usage_estimated, "error": self.error}

    def settle_counts(self) -> None:
        """If the backend reported no completion tokens, count deltas and say it is an estimate."""
        if self.completion_tokens is None:
            self.completion_tokens = self.deltas
            self.usage_estimated = True


# --- OpenAI SSE -> Ollama NDJSON ---------------------------------------------------------------

class OpenAIToOllama:
    """Translate OpenAI chat/text-completion chunks into Ollama /api/chat or /api/generate lines."""

    def __init__(self, kind: str, model: str, started: float, clock: Callable[[], float] = time.time,
                 emit: bool = True):
        self.kind = kind  # "chat" or "generate"
        self.emit = emit  # False: only assemble the answer (the log's copy of a passthrough stream)
        self.model = model
        self.started = started
        self.clock = clock
        self.answer = Answer()
        self._calls: dict[int, dict] = {}

    def _line(self, content: str = "", thinking: str | None = None, tool_calls: list | None = None) -> dict:
        created_at = ol.rfc3339(self.clock())
        if self.kind == "chat":
            return ol.chat_line(self.model, created_at, content, thinking, tool_calls)
        return ol.generate_line(self.model, created_at, content, thinking)

    def feed(self, chunk: dict) -> list[bytes]:
        if "error" in chunk and chunk["error"]:
            raise BackendError(_error_message(chunk["error"]))
        answer = self.answer
        if "usage" in chunk:
            take_openai_usage(answer, chunk["usage"])
        if isinstance(chunk.get("timings"), dict):
            answer.timings = chunk["timings"]
        out: list[bytes] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if delta is None:  # text-completion chunks carry `text` instead of a delta
                delta = {"content": choice.get("text")}
            text = delta.get("content")
            thinking = oa.reasoning_of(delta)
            if text or thinking:
                answer.mark_token(self.clock())
                if thinking:
                    answer.thinking.append(thinking)
                if text:
                    answer.content.append(text)
                if self.emit:
                    out.append(jsonio.dumps_line(self._line(text or "", thinking)))
            for fragment in delta.get("tool_calls") or ():
                self._merge_call(fragment)
            if choice.get("finish_reason"):
                answer.finish_reason = choice["finish_reason"]
        return out

    def _merge_call(self, fragment: dict) -> None:
        index = fragment.get("index", len(self._calls))
        call = self._calls.setdefault(index, {"id": None, "name": "", "arguments": []})
        if fragment.get("id"):
            call["id"] = fragment["id"]
        function = fragment.get("function") or {}
        if function.get("name"):
            call["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call["arguments"].append(arguments)
        elif isinstance(arguments, dict):
            call["arguments"] = [jsonio.dumps_str(arguments)]

    def finish(self, complete: bool) -> list[bytes]:
        """Lines after the last chunk; ``complete`` says the backend ended the stream properly."""
        out: list[bytes] = []
        answer = self.answer
        if self._calls:
            calls = []
            for index in sorted(self._calls):
                call = self._calls[index]
                arguments, _ = ol.parse_arguments("".join(call["arguments"]))
                entry: dict[str, Any] = {"function": {"index": index, "name": call["name"], "arguments": arguments}}
                if call["id"]:
                    entry["id"] = call["id"]
                calls.append(entry)
            answer.tool_calls = calls
            if self.kind == "chat" and self.emit:
                out.append(jsonio.dumps_line(self._line(tool_calls=calls)))
        if not complete and answer.finish_reason is None:
            answer.error = "the backend closed the stream before it finished"
            out.append(jsonio.dumps_line({"error": answer.error}))
            return out
        if not self.emit:
            answer.settle_counts()
            return []
        out.append(jsonio.dumps_line(self.final_line()))
        return out

    def final_line(self, content: str = "") -> dict:
        answer = self.answer
        answer.settle_counts()
        now = self.clock()
        prompt_s = eval_s = None
        timings = answer.timings
        if timings and isinstance(timings.get("prompt_ms"), (int, float)):
            prompt_s = timings["prompt_ms"] / 1000
            eval_s = (timings.get("predicted_ms") or 0) / 1000
        elif answer.first_token_at is not None:
            prompt_s = answer.first_token_at - self.started
            eval_s = (answer.last_token_at or answer.first_token_at) - answer.first_token_at
        line = self._line(content)
        return ol.final_line(line, oo.done_reason_from_finish(answer.finish_reason),
                             ol.metrics(answer.prompt_tokens, answer.completion_tokens,
                                        total_s=now - self.started, prompt_s=prompt_s, eval_s=eval_s))


class _Push:
    """Push translation of one upstream body: ``__call__(chunk)`` per upstream chunk, then ``end()`` when the
    body ended; each returns the client's pieces ready so far. What comes after the end of the answer is read
    and ignored (the connection then goes back to the pool). A failure (an error event, a malformed chunk)
    does not lose what the same chunk translated before it: those pieces are returned and the ProxyError kept
    in ``error``, for the caller to raise once it has sent them. Subclasses: ``_take(items)`` translates
    framed items and sets ``done`` at the answer's end; ``_unfinished()`` closes a body that ended early."""

    __slots__ = ("framing", "translator", "done", "error")

    def __init__(self, framing: Any, translator: Any):
        self.framing = framing
        self.translator = translator
        self.done = False
        self.error: ProxyError | None = None

    def __call__(self, chunk: bytes) -> list[bytes]:
        return [] if self.done else self._safely(self.framing.feed(chunk))

    def end(self) -> list[bytes]:
        if self.done:
            return []
        out = self._safely(self.framing.end())
        if not self.done:
            self.done = True
            out += self._unfinished()
        return out

    def _safely(self, items: list) -> list[bytes]:
        out: list[bytes] = []
        try:
            self._take(items, out)
        except ProxyError as exc:
            self.done = True
            self.error = exc
        return out

    def _take(self, items: list, out: list[bytes]) -> None:
        raise NotImplementedError

    def _unfinished(self) -> list[bytes]:
        raise NotImplementedError


class OpenAIStreamToOllama(_Push):
    """An OpenAI SSE body into Ollama lines; the answer ends at ``data: [DONE]``."""

    __slots__ = ()

    def __init__(self, translator: OpenAIToOllama):
        super().__init__(SSEFraming(), translator)

    def _take(self, items: list, out: list[bytes]) -> None:
        translator = self.translator
        for event, data in items:
            if data == b"[DONE]":
                self.done = True
                out += translator.finish(True)
                return
            out += translator.feed(sse_chunk(event, data))

    def _unfinished(self) -> list[bytes]:
        return self.translator.finish(False)


def _pushed(push: Any, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """A push translator as a generator over a whole body (tests, assembling a recorded stream)."""
    for chunk in chunks:
        yield from push(chunk)
        if push.error is not None:
            raise push.error
    yield from push.end()
    if push.error is not None:
        raise push.error


def openai_sse_to_ollama(chunks: Iterable[bytes], translator: OpenAIToOllama) -> Iterator[bytes]:
    return _pushed(OpenAIStreamToOllama(translator), chunks)


# --- Ollama NDJSON -> OpenAI SSE ---------------------------------------------------------------

class OllamaToOpenAI:
    """Translate Ollama /api/chat or /api/generate lines into OpenAI chat or text-completion chunks."""

    def __init__(self, kind: str, model: str, cid: str, created: int, include_usage: bool,
                 clock: Callable[[], float] = time.time, emit: bool = True):
        self.kind = kind  # "chat" or "completion"
        self.emit = emit  # False: only assemble the answer
        self.model = model
        self.cid = cid
        self.created = created
        self.include_usage = include_usage
        self.clock = clock
        self.answer = Answer()
        self._sent_role = False
        self._call_index = 0

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> bytes:
        if not self.emit:
            return b""
        if self.kind == "chat":
            body = oa.chat_chunk(self.cid, self.created, self.model, delta, finish_reason,
                                 with_usage_field=self.include_usage)
        else:
            body = oa.completion_chunk(self.cid, self.created, self.model, delta.get("content", ""), finish_reason)
        return self._encode(body)

    def _encode(self, body: dict) -> Any:
        """A chunk as the client gets it (a subclass that feeds another translator keeps the dict)."""
        return oa.sse_event(jsonio.dumps(body))

    def feed(self, line: dict) -> list[bytes]:
        if line.get("error"):
            raise BackendError(_error_message(line["error"]))
        answer = self.answer
        out: list[bytes] = []
        if self.kind == "chat" and not self._sent_role:
            self._sent_role = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        if self.kind == "chat":
            message = line.get("message") or {}
            text, thinking, calls = message.get("content"), message.get("thinking"), message.get("tool_calls")
        else:
            text, thinking, calls = line.get("response"), line.get("thinking"), None
        if thinking or text:
            answer.mark_token(self.clock())
        if thinking:
            answer.thinking.append(thinking)
            out.append(self._chunk({"reasoning_content": thinking}))
        if text:
            answer.content.append(text)
            out.append(self._chunk({"content": text}))
        if calls:
            converted = oo.tool_calls_to_openai(calls, self._call_index)
            self._call_index += len(converted)
            answer.tool_calls.extend(converted)
            out.append(self._chunk({"tool_calls": converted}))
        if line.get("done"):
            answer.prompt_tokens = int(line.get("prompt_eval_count") or 0)
            answer.completion_tokens = int(line.get("eval_count") or 0)
            finish = oo.finish_from_done_reason(line.get("done_reason"), bool(answer.tool_calls))
            answer.finish_reason = finish
            out.append(self._chunk({}, finish))
            if self.include_usage:
                usage = oa.usage(answer.prompt_tokens, answer.completion_tokens)
                if self.kind == "chat":
                    body = oa.usage_chunk(self.cid, self.created, self.model, usage)
                else:
                    body = {**oa.completion_chunk(self.cid, self.created, self.model, ""), "choices": [],
                            "usage": usage}
                out.append(self._encode(body))
            out.append(oa.SSE_DONE)
        return out

    def finish(self) -> list[bytes]:
        if self.answer.finish_reason is None:
            self.answer.error = "the backend closed the stream before it finished"
            return [openai_error_event(self.answer.error), oa.SSE_DONE]
        return []


class OllamaStreamToOpenAI(_Push):
    """An Ollama NDJSON body into OpenAI SSE events; the answer ends at the ``done`` line."""

    __slots__ = ()

    def __init__(self, translator: OllamaToOpenAI):
        super().__init__(NDJSONFraming(), translator)

    def _take(self, items: list, out: list[bytes]) -> None:
        for raw in items:
            line = ndjson_line(raw)
            out += self.translator.feed(line)
            if line.get("done"):
                self.done = True
                return

    def _unfinished(self) -> list[bytes]:
        return self.translator.finish()


def ollama_ndjson_to_openai(chunks: Iterable[bytes], translator: OllamaToOpenAI) -> Iterator[bytes]:
    return _pushed(OllamaStreamToOpenAI(translator), chunks)


# --- error chunks after the first byte --------------------------------------------------------

def openai_error_event(message: str) -> bytes:
    return oa.sse_event(jsonio.dumps({"error": {"message": message, "type": "server_error", "param": None,
                                                "code": None}}))


def ollama_error_line(message: str) -> bytes:
    return jsonio.dumps_line({"error": message})


def error_chunk(dialect: str, exc: ProxyError) -> bytes:
    if dialect == "openai":
        return openai_error_event(exc.message) + oa.SSE_DONE
    if dialect == "anthropic":
        return an.error_event(exc)
    return ollama_error_line(exc.message)
