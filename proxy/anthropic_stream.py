"""The Anthropic Messages stream, translated chunk by chunk: ``OpenAIToAnthropic`` turns OpenAI chat chunks into
Anthropic events; ``OpenAIStreamToAnthropic`` pushes an OpenAI SSE body through it, ``OllamaStreamToAnthropic`` an
Ollama NDJSON body, first made OpenAI chunks by the Ollama->OpenAI translator. The opening ``message_start`` goes
out on the first push (an empty one sends it before the backend's first byte) and ``ping()`` is a keep-alive
event at any time. No I/O; the assembled answer is kept for the log, as the other translators keep theirs."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import jsonio
from .dialects import anthropic as an
from .dialects import openai as oa
from .errors import BackendError, BackendUnavailable
from .framing import NDJSONFraming
from .streaming import (
    Answer,
    OllamaToOpenAI,
    OpenAIStreamToOllama,
    Pieces,
    _error_message,
    _Push,
    _pushed,
    ndjson_line,
)
from .usage import take_openai_usage

UNFINISHED = "the backend closed the stream before it finished"
THINKING_BLOCK = {"type": "thinking", "thinking": "", "signature": ""}
TEXT_BLOCK = {"type": "text", "text": ""}


class OpenAIToAnthropic:
    """OpenAI chat chunks (dicts) -> Anthropic SSE events. Blocks are numbered in the order they open: thinking,
    text and each tool call get their own, and a new one closes the one before (Anthropic blocks never
    interleave; a backend's call fragments that come back to a call already closed are kept for the log only).
    A tool call's block opens once its name is known, and its argument fragments go out as they come."""

    __slots__ = ("model", "msg_id", "stop_sequences", "input_tokens", "clock", "answer", "opened", "_index",
                 "_open", "_calls", "_usage", "_matched")

    def __init__(self, model: str, msg_id: str, stop_sequences: Any = None, input_tokens: int = 0,
                 clock: Callable[[], float] = time.time, opened: bool = False):
        self.model = model
        self.msg_id = msg_id
        self.stop_sequences = stop_sequences
        self.input_tokens = input_tokens  # what message_start reports before the backend has said
        self.clock = clock
        self.answer = Answer()
        self.opened = opened  # True: message_start is sent by someone else (a beating stream's opening)
        self._index = -1  # the last block opened
        self._open: str | int | None = None  # the open block: "text", "thinking", or a tool call's index
        self._calls: dict[int, dict] = {}
        self._usage: Any = None
        self._matched: str | None = None

    def opening(self) -> list[bytes]:
        """``message_start``, once."""
        if self.opened:
            return []
        self.opened = True
        return [an.message_start(self.msg_id, self.model, self.input_tokens)]

    @staticmethod
    def ping() -> bytes:
        return an.PING

    def feed(self, chunk: dict) -> list[bytes]:
        if chunk.get("error"):
            raise BackendError(_error_message(chunk["error"]))
        answer = self.answer
        out = [] if self.opened else self.opening()
        usage = chunk.get("usage")
        if usage:
            take_openai_usage(answer, usage)
            self._usage = usage
        if "timings" in chunk and isinstance(chunk["timings"], dict):
            answer.timings = chunk["timings"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                thinking = oa.reasoning_of(delta)
                if thinking:
                    answer.mark_token(self.clock())
                    answer.thinking.append(thinking)
                    if self._open != "thinking":
                        self._switch(out, "thinking", THINKING_BLOCK)
                    out.append(an.block_delta(self._index, "thinking_delta", thinking))
                text = delta.get("content")
                if text and isinstance(text, str):
                    answer.mark_token(self.clock())
                    answer.content.append(text)
                    if self._open != "text":
                        self._switch(out, "text", TEXT_BLOCK)
                    out.append(an.block_delta(self._index, "text_delta", text))
                for fragment in delta.get("tool_calls") or ():
                    if isinstance(fragment, dict):
                        self._tool(fragment, out)
            if choice.get("finish_reason"):
                answer.finish_reason = choice["finish_reason"]
                self._matched = an.matched_stop(choice, self.stop_sequences)
        return out

    def _switch(self, out: list[bytes], key: str | int, block: dict) -> None:
        if self._open is not None:
            out.append(an.block_stop(self._index))
        self._index += 1
        self._open = key
        out.append(an.block_start(self._index, block))

    def _tool(self, fragment: dict, out: list[bytes]) -> None:
        index = fragment.get("index")
        if not isinstance(index, int):
            index = len(self._calls)
        function = found if isinstance(found := fragment.get("function"), dict) else {}
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = {"id": an.tool_use_id(fragment.get("id")), "name": "",
                                         "arguments": Pieces(), "block": None}
        if function.get("name") and not call["name"]:
            call["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            arguments = jsonio.dumps_str(arguments)
        if isinstance(arguments, str) and arguments:
            call["arguments"].append(arguments)
        else:
            arguments = None
        if call["block"] is None:
            if call["name"]:  # opens with everything received so far as its first delta
                self._open_call(index, call, out)
        elif arguments and self._open == index:
            out.append(an.block_delta(call["block"], "input_json_delta", arguments))

    def _open_call(self, index: int, call: dict, out: list[bytes]) -> None:
        self._switch(out, index, {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}})
        call["block"] = self._index
        pieces = call["arguments"]
        if pieces:
            out.append(an.block_delta(self._index, "input_json_delta", "".join(pieces)))

    def finish(self, complete: bool) -> list[bytes]:
        """The events after the last chunk; ``complete`` says the backend ended its stream properly."""
        answer = self.answer
        out = self.opening()
        if not complete and answer.finish_reason is None:
            answer.error = UNFINISHED
            out.append(an.error_event(BackendUnavailable(UNFINISHED)))
            return out
        for index, call in sorted(self._calls.items()):
            if call["block"] is None:  # a call whose name never came
                self._open_call(index, call, out)
        if self._open is not None:
            out.append(an.block_stop(self._index))
            self._open = None
        answer.tool_calls = [{"index": index, "id": call["id"], "type": "function",
                              "function": {"name": call["name"], "arguments": "".join(call["arguments"])}}
                             for index, call in sorted(self._calls.items())]
        answer.settle_counts()
        usage = an.usage_of(self._usage, answer.prompt_tokens, answer.completion_tokens)
        reason = an.stop_reason_of(answer.finish_reason, bool(self._calls), self._matched)
        out.append(an.message_delta(reason, self._matched, usage))
        out.append(an.MESSAGE_STOP)
        return out


class _Opening(_Push):
    """A push whose first call sends ``message_start`` even when its chunk holds nothing yet (no ``super()``
    call per chunk: this is ``_Push.__call__`` with the check)."""

    __slots__ = ()
    translator: OpenAIToAnthropic

    def __call__(self, chunk: bytes) -> list[bytes]:
        out = [] if self.done else self._safely(self.framing.feed(chunk))
        translator = self.translator
        return out if translator.opened else translator.opening() + out

    def ping(self) -> bytes:
        return self.translator.ping()


class OpenAIStreamToAnthropic(_Opening, OpenAIStreamToOllama):
    """An OpenAI SSE body into Anthropic events (the framing of ``OpenAIStreamToOllama``, this translator)."""

    __slots__ = ()

    def __init__(self, translator: OpenAIToAnthropic):
        super().__init__(translator)  # type: ignore[arg-type]


class _Dropped(list):
    """A list that keeps nothing appended to it."""

    __slots__ = ()

    def append(self, item: Any) -> None:
        pass


class OllamaToOpenAIChunks(OllamaToOpenAI):
    """The Ollama->OpenAI translator, its chunks kept as dicts for the next translator (only what it reads).
    The text is kept once, by the next translator: this one's answer drops it."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.answer.content = self.answer.thinking = _Dropped()

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> Any:
        return {"choices": [{"delta": delta, "finish_reason": finish_reason}]}

    def _encode(self, body: dict) -> Any:
        return body


class OllamaStreamToAnthropic(_Opening, _Push):
    """An Ollama NDJSON body into Anthropic events, through OpenAI chunks; the answer ends at the ``done`` line."""

    __slots__ = ("ollama",)

    def __init__(self, translator: OpenAIToAnthropic):
        super().__init__(NDJSONFraming(), translator)
        self.ollama = OllamaToOpenAIChunks("chat", translator.model, translator.msg_id, 0, True,
                                           clock=translator.clock)

    def _take(self, items: list, out: list[bytes]) -> None:
        translator = self.translator
        for raw in items:
            line = ndjson_line(raw)
            for chunk in self.ollama.feed(line):
                if chunk.__class__ is dict:  # the [DONE] marker is not a chunk
                    out += translator.feed(chunk)
            if line.get("done"):
                self.done = True
                out += translator.finish(True)
                return

    def _unfinished(self) -> list[bytes]:
        return self.translator.finish(False)


def openai_sse_to_anthropic(chunks: Iterable[bytes], translator: OpenAIToAnthropic) -> Iterator[bytes]:
    return _pushed(OpenAIStreamToAnthropic(translator), chunks)


def ollama_ndjson_to_anthropic(chunks: Iterable[bytes], translator: OpenAIToAnthropic) -> Iterator[bytes]:
    return _pushed(OllamaStreamToAnthropic(translator), chunks)
