"""Upstreams that speak the agent APIs themselves (as llama-server, vLLM and Ollama do): responders for
``/v1/messages`` (Anthropic Messages) and ``/v1/responses`` (OpenAI Responses) that answer a streamed request
with the documented event sequence, one event per HTTP chunk, and a whole one with the object. Each answer
names the model the request named (a real server echoes its own), so a test sees the renaming.

Nothing here imports the proxy.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from typing import Any

from tests.support.fake_http import RecordedRequest
from tests.support.fake_wire import Reply, json_reply

MSG_ID = "msg_native01"
RESP_ID = "resp_native01"


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _stream(chunks: list[bytes], **reply_kw: Any) -> Reply:
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    return Reply(status=200, headers=headers, chunks=chunks, chunked=True, **reply_kw)


# --- Anthropic Messages ------------------------------------------------------------------------------------

def messages_events(model: str, pieces: Iterable[str], *, thinking: str = "", tool: tuple[str, dict] | None = None,
                    input_tokens: int = 11, output_tokens: int = 5) -> list[bytes]:
    """A Messages stream: message_start, a ping, thinking / text / tool_use blocks, message_delta, message_stop."""
    usage = {"input_tokens": input_tokens, "output_tokens": 1, "cache_read_input_tokens": 0}
    out = [_event("message_start", {"type": "message_start", "message": {
        "id": MSG_ID, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": usage}}),
        _event("ping", {"type": "ping"})]
    blocks: list[tuple[dict, list[dict]]] = []
    if thinking:
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""},
                       [{"type": "thinking_delta", "thinking": thinking}]))
    blocks.append(({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces]))
    if tool is not None:
        args = json.dumps(tool[1])
        half = len(args) // 2
        blocks.append(({"type": "tool_use", "id": "toolu_native1", "name": tool[0], "input": {}},
                       [{"type": "input_json_delta", "partial_json": args[:half]},
                        {"type": "input_json_delta", "partial_json": args[half:]}]))
    for index, (start, deltas) in enumerate(blocks):
        out.append(_event("content_block_start", {"type": "content_block_start", "index": index,
                                                  "content_block": start}))
        out += [_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
                for d in deltas]
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    stop = "tool_use" if tool is not None else "end_turn"
    out.append(_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                        "usage": {"output_tokens": output_tokens}}))
    out.append(_event("message_stop", {"type": "message_stop"}))
    return out


def message_object(model: str, pieces: Iterable[str], *, tool: tuple[str, dict] | None = None,
                   input_tokens: int = 11, output_tokens: int = 5) -> dict:
    content: list[dict] = [{"type": "text", "text": "".join(pieces)}]
    if tool is not None:
        content.append({"type": "tool_use", "id": "toolu_native1", "name": tool[0], "input": tool[1]})
    return {"id": MSG_ID, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": "tool_use" if tool is not None else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}


def messages_responder(pieces: Iterable[str] = ("Hello", " there"), *, thinking: str = "",
                       tool: tuple[str, dict] | None = None, **reply_kw: Any) -> Callable[[RecordedRequest], Reply]:
    """A ``/v1/messages`` upstream: SSE events when the request streams, else the message object."""
    pieces = list(pieces)

    def respond(req: RecordedRequest) -> Reply:
        body = req.json or {}
        model = str(body.get("model"))
        if body.get("stream"):
            return _stream(messages_events(model, pieces, thinking=thinking, tool=tool), **reply_kw)
        return json_reply(message_object(model, pieces, tool=tool), **reply_kw)
    return respond


def anthropic_error(status: int, kind: str, message: str) -> Reply:
    return json_reply({"type": "error", "error": {"type": kind, "message": message}}, status=status)


# --- OpenAI Responses --------------------------------------------------------------------------------------

def _response(model: str, status: str, output: list[dict], usage: dict | None) -> dict:
    return {"id": RESP_ID, "object": "response", "created_at": 1752169304, "model": model, "status": status,
            "output": output, "usage": usage, "error": None, "incomplete_details": None, "store": False,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}}}


def _usage(input_tokens: int, output_tokens: int) -> dict:
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens}


def _items(pieces: list[str], call: tuple[str, dict] | None) -> list[dict]:
    items = [{"id": "msg_item1", "type": "message", "status": "completed", "role": "assistant",
              "content": [{"type": "output_text", "text": "".join(pieces), "annotations": [], "logprobs": []}]}]
    if call is not None:
        items.append({"id": "fc_item1", "type": "function_call", "status": "completed", "call_id": "call_native1",
                      "name": call[0], "arguments": json.dumps(call[1])})
    return items


def responses_events(model: str, pieces: Iterable[str], *, call: tuple[str, dict] | None = None,
                     input_tokens: int = 13, output_tokens: int = 4) -> list[bytes]:
    """A Responses stream: created, in_progress, a message item with text deltas, a function call, completed."""
    pieces = list(pieces)
    seq = itertools.count()

    def ev(kind: str, **body: Any) -> bytes:
        return _event(kind, {"type": kind, "sequence_number": next(seq), **body})
    items = _items(pieces, call)
    message = {**items[0], "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    out = [ev("response.created", response=_response(model, "in_progress", [], None)),
           ev("response.in_progress", response=_response(model, "in_progress", [], None)),
           ev("response.output_item.added", output_index=0, item=message),
           ev("response.content_part.added", item_id="msg_item1", output_index=0, content_index=0, part=part)]
    out += [ev("response.output_text.delta", item_id="msg_item1", output_index=0, content_index=0, delta=p,
               logprobs=[]) for p in pieces]
    out += [ev("response.output_text.done", item_id="msg_item1", output_index=0, content_index=0,
               text="".join(pieces), logprobs=[]),
            ev("response.content_part.done", item_id="msg_item1", output_index=0, content_index=0,
               part=items[0]["content"][0]),
            ev("response.output_item.done", output_index=0, item=items[0])]
    if call is not None:
        out += [ev("response.output_item.added", output_index=1, item={**items[1], "status": "in_progress",
                                                                        "arguments": ""}),
                ev("response.function_call_arguments.delta", item_id="fc_item1", output_index=1,
                   delta=items[1]["arguments"]),
                ev("response.function_call_arguments.done", item_id="fc_item1", output_index=1,
                   arguments=items[1]["arguments"]),
                ev("response.output_item.done", output_index=1, item=items[1])]
    out.append(ev("response.completed", response=_response(model, "completed", items,
                                                           _usage(input_tokens, output_tokens))))
    return out


def responses_responder(pieces: Iterable[str] = ("Hello", " there"), *, call: tuple[str, dict] | None = None,
                        **reply_kw: Any) -> Callable[[RecordedRequest], Reply]:
    """A ``/v1/responses`` upstream: SSE events when the request streams, else the response object."""
    pieces = list(pieces)

    def respond(req: RecordedRequest) -> Reply:
        body = req.json or {}
        model = str(body.get("model"))
        if body.get("stream"):
            return _stream(responses_events(model, pieces, call=call), **reply_kw)
        return json_reply(_response(model, "completed", _items(pieces, call), _usage(13, 4)), **reply_kw)
    return respond
