"""The Responses stream translator: a backend's chat answer (OpenAI chunks, or Ollama lines turned into such
chunks) into Responses events, each sent as soon as its chunk arrives, numbered by ``sequence_number``. A
stream always ends with ``response.completed`` or ``response.failed``. The same translator builds a whole
(non-streamed) response object. Bytes and dicts only: no network, no Flask."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import jsonio
from .dialects import ollama_openai as oo
from .dialects import openai as oa
from .dialects.responses import shapes as rs
from .dialects.responses.partial import PartialString
from .errors import BackendError, ProxyError, clip_message
from .framing import NDJSONFraming, SSEFraming
from .streaming import Answer, StreamFormatError, _Push, ndjson_line, sse_chunk
from .usage import take_openai_usage

UNFINISHED = "the backend closed the stream before it finished"
KEEPALIVE_COMMENT = b": keep-alive\n\n"


class _Call:
    """One tool call as its fragments arrive."""

    __slots__ = ("item_id", "call_id", "name", "index", "pieces", "custom", "announced", "partial")

    def __init__(self, call_id: str, custom_names: frozenset[str], name: str):
        self.item_id = ""
        self.call_id = call_id
        self.name = name
        self.index = -1  # output_index, once announced
        self.pieces: list[str] = []
        self.custom = custom_names
        self.announced = False
        self.partial: PartialString | None = None

    @property
    def is_custom(self) -> bool:
        return self.name in self.custom

    def item(self, status: str) -> dict:
        arguments = "".join(self.pieces) if status == "completed" else ""
        if self.is_custom:
            return rs.custom_call_item(self.item_id, status, self.call_id, self.name,
                                       rs.custom_input(arguments) if status == "completed" else "")
        return rs.function_call_item(self.item_id, status, self.call_id, self.name, arguments)


class ChatToResponses:
    """OpenAI chat chunks (dicts) -> Responses SSE events (bytes). ``opening()`` first (created, in_progress),
    ``feed(chunk)`` per chunk, ``finish(complete)`` at the end; ``failed(exc)`` ends it in failure instead.
    Text and reasoning items are closed when something else starts; tool calls stay open until the end (their
    fragments may interleave). ``answer`` is the log's copy; ``final`` the last response object."""

    def __init__(self, fixed: dict, custom_tools: frozenset[str] = frozenset(),
                 clock: Callable[[], float] = time.time):
        self.fixed = fixed
        self.custom = custom_tools
        self.clock = clock
        self.answer = Answer()
        self.seq = 0
        self.items = 0  # output items announced
        self.output: list[dict] = []  # items done, in output order
        self.kind: str | None = None  # "message" or "reasoning": the item being streamed
        self.item_id = ""
        self.index = -1
        self.pieces: list[str] = []
        self.calls: dict[int, _Call] = {}
        self.cached = 0
        self.reasoning_tokens = 0
        self.opened = False
        self.ended = False
        self.final: dict | None = None

    def _event(self, kind: str, body: dict) -> bytes:
        event = {"type": kind, "sequence_number": self.seq}
        event.update(body)
        self.seq += 1
        return rs.sse(kind, event)

    # --- the ends -------------------------------------------------------------------------------
    def opening(self) -> list[bytes]:
        """response.created and response.in_progress: sent before the backend's first byte."""
        if self.opened:
            return []
        self.opened = True
        return [self._event("response.created", {"response": self._state("in_progress")}),
                self._event("response.in_progress", {"response": self._state("in_progress")})]

    def keepalive(self) -> bytes:
        """A beat while the backend is silent: response.in_progress again before any output, an SSE comment
        after it (Codex's idle timer counts any bytes; a comment changes nothing for a client)."""
        if not self.opened:
            return b"".join(self.opening())
        if self.items or self.ended:
            return KEEPALIVE_COMMENT
        return self._event("response.in_progress", {"response": self._state("in_progress")})

    def _state(self, status: str) -> dict:
        return rs.response(self.fixed, status, list(self.output), None)

    def finish(self, complete: bool) -> list[bytes]:
        """After the last chunk; ``complete``: the backend ended its answer properly."""
        if self.ended:
            return []
        answer = self.answer
        if not complete and answer.finish_reason is None:
            return self.failed(BackendError(UNFINISHED))
        out = self.opening()
        self._close_text(out)
        self._close_calls(out)
        self.ended = True
        answer.settle_counts()
        finish = answer.finish_reason or "stop"
        status = rs.FINISH_STATUS.get(finish, "completed")
        usage = rs.usage(answer.prompt_tokens, answer.completion_tokens, self.cached, self.reasoning_tokens)
        self.final = rs.response(self.fixed, status, self.output, usage,
                                 incomplete=rs.INCOMPLETE_REASON.get(finish))
        # A truncated answer ends with response.completed too (status incomplete): Codex reads only
        # response.completed and response.failed, and treats any other end as a broken stream.
        out.append(self._event("response.completed", {"response": self.final}))
        return out

    def failed(self, exc: ProxyError) -> list[bytes]:
        """End in failure: response.failed with the error and the items done so far."""
        if self.ended:
            return []
        out = self.opening()
        self.ended = True
        self.answer.error = exc.message
        code = exc.code if isinstance(exc.code, str) else None
        self.final = rs.response(self.fixed, "failed", self.output, None, error=rs.failure(exc.message, code))
        out.append(self._event("response.failed", {"response": self.final}))
        return out

    # --- chunks ---------------------------------------------------------------------------------
    def feed(self, chunk: dict) -> list[bytes]:
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else error
            code = error.get("code") if isinstance(error, dict) else None
            raise BackendError(clip_message(message if isinstance(message, str) else str(error)),
                               code=code if isinstance(code, str) else None)
        answer = self.answer
        out = [] if self.opened else self.opening()
        usage = chunk.get("usage")
        if usage:
            self._take_usage(usage)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = found if isinstance(found := choice.get("delta"), dict) else {}
            thinking = oa.reasoning_of(delta)
            text = found if isinstance(found := delta.get("content"), str) else None
            if thinking:
                answer.mark_token(self.clock())
                answer.thinking.append(thinking)
                self._piece(out, "reasoning", thinking)
            if text:
                self.content(out, text)
            fragments = delta.get("tool_calls")
            for fragment in fragments if isinstance(fragments, list) else ():
                if isinstance(fragment, dict):
                    self._fragment(out, fragment)
            if isinstance(choice.get("finish_reason"), str) and choice["finish_reason"]:
                answer.finish_reason = choice["finish_reason"]
        return out

    def content(self, out: list[bytes], text: str) -> list[bytes]:
        """A piece of the answer's text (``out`` gets its events)."""
        answer = self.answer
        answer.mark_token(self.clock())
        answer.content.append(text)
        if self.kind == "message":  # the common case, one event
            self.pieces.append(text)
            event = {"type": "response.output_text.delta", "sequence_number": self.seq, "item_id": self.item_id,
                     "output_index": self.index, "content_index": 0, "delta": text, "logprobs": []}
            self.seq += 1
            out.append(rs.sse("response.output_text.delta", event))
        else:
            self._piece(out, "message", text)
        return out

    def _take_usage(self, usage: Any) -> None:
        take_openai_usage(self.answer, usage)
        if isinstance(usage, dict):
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
            reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
            self.cached = cached if isinstance(cached, int) else self.cached
            self.reasoning_tokens = reasoning if isinstance(reasoning, int) else self.reasoning_tokens

    def _piece(self, out: list[bytes], kind: str, piece: str) -> None:
        if self.kind != kind:
            self._close_text(out)
            self._close_calls(out)
            self._open_text(out, kind)
        self.pieces.append(piece)
        if kind == "message":
            out.append(self._event("response.output_text.delta", {
                "item_id": self.item_id, "output_index": self.index, "content_index": 0, "delta": piece,
                "logprobs": []}))
        else:
            out.append(self._event("response.reasoning_summary_text.delta", {
                "item_id": self.item_id, "output_index": self.index, "summary_index": 0, "delta": piece}))

    def _open_text(self, out: list[bytes], kind: str) -> None:
        self.kind = kind
        self.index = self.items
        self.items += 1
        self.pieces = []
        where = {"output_index": self.index}
        if kind == "message":
            self.item_id = rs.new_id("msg_")
            out.append(self._event("response.output_item.added",
                                   {**where, "item": rs.message_item(self.item_id, "in_progress", None)}))
            out.append(self._event("response.content_part.added", {
                **where, "item_id": self.item_id, "content_index": 0, "part": rs.output_text("")}))
        else:
            self.item_id = rs.new_id("rs_")
            out.append(self._event("response.output_item.added",
                                   {**where, "item": rs.reasoning_item(self.item_id, "in_progress", None)}))
            out.append(self._event("response.reasoning_summary_part.added", {
                **where, "item_id": self.item_id, "summary_index": 0, "part": rs.summary_text("")}))

    def _close_text(self, out: list[bytes]) -> None:
        kind = self.kind
        if kind is None:
            return
        self.kind = None
        text = "".join(self.pieces)
        self.pieces = []
        where = {"item_id": self.item_id, "output_index": self.index}
        if kind == "message":
            out.append(self._event("response.output_text.done",
                                   {**where, "content_index": 0, "text": text, "logprobs": []}))
            out.append(self._event("response.content_part.done",
                                   {**where, "content_index": 0, "part": rs.output_text(text)}))
            item = rs.message_item(self.item_id, "completed", text)
        else:
            out.append(self._event("response.reasoning_summary_text.done", {**where, "summary_index": 0,
                                                                              "text": text}))
            out.append(self._event("response.reasoning_summary_part.done",
                                   {**where, "summary_index": 0, "part": rs.summary_text(text)}))
            item = rs.reasoning_item(self.item_id, "completed", text)
        self.output.append(item)
        out.append(self._event("response.output_item.done", {"output_index": self.index, "item": item}))

    def _fragment(self, out: list[bytes], fragment: dict) -> None:
        index = fragment.get("index")
        if not isinstance(index, int):  # no index: a new call when it has an id, else the last one goes on
            index = max(self.calls) if self.calls and not fragment.get("id") else len(self.calls)
        function = found if isinstance(found := fragment.get("function"), dict) else {}
        call = self.calls.get(index)
        if call is None:
            self._close_text(out)
            call_id = fragment.get("id")
            call = self.calls[index] = _Call(call_id if isinstance(call_id, str) and call_id else oa.new_call_id(),
                                             self.custom, "")
        if isinstance(function.get("name"), str) and function["name"] and not call.announced:
            call.name = function["name"]
        if not call.announced and call.name:
            self._announce(out, call)
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # some servers send an object, whole
            arguments = jsonio.dumps_str(arguments)
        if isinstance(arguments, str) and arguments:
            call.pieces.append(arguments)
            if call.announced:
                self._argument_delta(out, call, arguments)

    def _announce(self, out: list[bytes], call: _Call) -> None:
        call.announced = True
        call.item_id = rs.new_id("ctc_" if call.is_custom else "fc_")
        call.index = self.items
        self.items += 1
        out.append(self._event("response.output_item.added",
                               {"output_index": call.index, "item": call.item("in_progress")}))
        if call.is_custom:
            call.partial = PartialString()
        if call.pieces:  # arguments that came before the name
            self._argument_delta(out, call, "".join(call.pieces))

    def _argument_delta(self, out: list[bytes], call: _Call, piece: str) -> None:
        where = {"item_id": call.item_id, "output_index": call.index}
        if call.partial is None:
            out.append(self._event("response.function_call_arguments.delta", {**where, "delta": piece}))
            return
        text = call.partial.feed(piece)
        if text:
            out.append(self._event("response.custom_tool_call_input.delta", {**where, "delta": text}))

    def _close_calls(self, out: list[bytes]) -> None:
        if not self.calls:
            return
        for key in sorted(self.calls):
            call = self.calls[key]
            if not call.announced:
                self._announce(out, call)
            item = call.item("completed")
            where = {"item_id": call.item_id, "output_index": call.index}
            if call.is_custom:
                out.append(self._event("response.custom_tool_call_input.done", {**where, "input": item["input"]}))
                self.answer.tool_calls.append({"id": call.call_id, "type": "custom",
                                               "function": {"name": call.name, "arguments": item["input"]}})
            else:
                out.append(self._event("response.function_call_arguments.done",
                                       {**where, "arguments": item["arguments"]}))
                self.answer.tool_calls.append({"id": call.call_id, "type": "function",
                                               "function": {"name": call.name, "arguments": item["arguments"]}})
            self.output.append(item)
            out.append(self._event("response.output_item.done", {"output_index": call.index, "item": item}))
        self.calls = {}

    # --- a whole answer ------------------------------------------------------------------------
    def whole(self, completion: dict) -> dict:
        """A non-streamed chat completion as the response object, through the same steps as a stream."""
        choices = completion.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = found if isinstance(found := choice.get("message"), dict) else {}
        self.opened = True
        calls = [{"index": i, **call} for i, call in enumerate(message.get("tool_calls") or ())
                 if isinstance(call, dict)]
        delta = {k: v for k, v in message.items() if k != "tool_calls"}
        self.feed({"choices": [{"delta": {**delta, "tool_calls": calls},
                                "finish_reason": choice.get("finish_reason") or "stop"}],
                   "usage": completion.get("usage")})
        self.finish(True)
        assert self.final is not None
        return self.final


# --- pushed over a live body ------------------------------------------------------------------

class _Pushed(_Push):
    """Common to both backend dialects: the opening events go out with the first call unless they went
    already (sent by the keep-alive body; else the view passes an empty first chunk so they leave before the
    backend's first byte); ``failure(exc)`` is what the relay sends when the stream fails, ``keepalive()`` a
    beat while the backend is silent."""

    __slots__ = ()

    def __call__(self, chunk: bytes) -> list[bytes]:
        translator = self.translator
        opening = translator.opening() if not translator.opened else None
        out = super().__call__(chunk)
        return opening + out if opening else out

    def _take(self, items: list, out: list[bytes]) -> None:
        try:
            self._translate(items, out)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a chunk of an unexpected shape
            raise StreamFormatError(f"the backend sent a chunk of an unexpected shape ({exc})") from None

    def _translate(self, items: list, out: list[bytes]) -> None:
        raise NotImplementedError

    def failure(self, exc: ProxyError) -> bytes:
        return b"".join(self.translator.failed(exc))

    def keepalive(self) -> bytes:
        return self.translator.keepalive()

    def _unfinished(self) -> list[bytes]:
        return self.translator.finish(False)


class ResponsesFromOpenAI(_Pushed):
    """An OpenAI chat SSE body into Responses events; the answer ends at ``data: [DONE]``."""

    __slots__ = ()

    def __init__(self, translator: ChatToResponses):
        super().__init__(SSEFraming(), translator)

    def _translate(self, items: list, out: list[bytes]) -> None:
        translator = self.translator
        for event, data in items:
            if data == b"[DONE]":
                self.done = True
                out += translator.finish(True)
                return
            out += translator.feed(sse_chunk(event, data))


class ResponsesFromOllama(_Pushed):
    """An Ollama /api/chat NDJSON body into Responses events; the answer ends at the ``done`` line."""

    __slots__ = ()

    def __init__(self, translator: ChatToResponses):
        super().__init__(NDJSONFraming(), translator)

    def _translate(self, items: list, out: list[bytes]) -> None:
        translator = self.translator
        for raw in items:
            line = ndjson_line(raw)
            message = line.get("message")
            if (type(message) is dict and len(message) == 2 and "content" in message and "role" in message
                    and not line.get("done") and "error" not in line and translator.opened):
                if message["content"] and isinstance(message["content"], str):  # text only: no chunk built
                    translator.content(out, message["content"])
                continue
            out += translator.feed(chunk_of_ollama(line, len(translator.calls) + len(translator.answer.tool_calls)))
            if line.get("done"):
                self.done = True
                out += translator.finish(True)
                return


def chunk_of_ollama(line: dict, calls_so_far: int) -> dict:
    """One Ollama /api/chat line (streamed or whole) as an OpenAI chunk (the delta under ``delta``)."""
    if line.get("error"):
        return {"error": line["error"]}
    message = found if isinstance(found := line.get("message"), dict) else {}
    delta: dict[str, Any] = {"content": message.get("content"), "reasoning_content": message.get("thinking")}
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        delta["tool_calls"] = oo.tool_calls_to_openai(calls, calls_so_far)
    chunk: dict[str, Any] = {"choices": [{"delta": delta, "finish_reason": None}]}
    if line.get("done"):
        saw_calls = bool(calls) or calls_so_far > 0
        chunk["choices"][0]["finish_reason"] = oo.finish_from_done_reason(line.get("done_reason"), saw_calls)
        chunk["usage"] = oo.usage_from_line(line)
    return chunk
