"""Answers of the agent fronts' own APIs, for the log: an Anthropic Messages answer or an OpenAI Responses answer
that a native backend sent (streamed events or a whole object) read into the log's ``Answer`` (text, thinking,
tool calls, usage, stop). Pure and off the client's path: read from the kept copy when the exchange ends."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import jsonio
from .streaming import Answer
from .usage import take_agent_usage


def sse_objects(raw: bytes) -> Iterator[dict]:
    """The JSON objects of an SSE body's ``data:`` lines, in order (comments, ``[DONE]`` and bad JSON skipped)."""
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            continue
        try:
            value = jsonio.loads(data)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def _call(call_id: Any, name: Any, arguments: str) -> dict:
    """A tool call in the shape the log keeps them (OpenAI's)."""
    return {"id": call_id if isinstance(call_id, str) else "", "type": "function",
            "function": {"name": name if isinstance(name, str) else "", "arguments": arguments}}


# --- Anthropic Messages ------------------------------------------------------------------------------------

# Anthropic's stop reasons in the log's (and the response cache's) vocabulary, OpenAI's finish reasons
FINISH_OF_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                  "pause_turn": "stop", "refusal": "content_filter"}


def _finish(stop_reason: Any) -> str | None:
    return FINISH_OF_STOP.get(stop_reason, stop_reason) if isinstance(stop_reason, str) else None


def _messages_usage(answer: Answer, usage: Any) -> None:
    take_agent_usage(answer, {"usage": usage})  # the prompt: uncached input plus cache reads and writes


def _messages_block(answer: Answer, block: dict) -> None:
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        answer.content.append(block["text"])
    elif kind == "thinking" and isinstance(block.get("thinking"), str):
        answer.thinking.append(block["thinking"])
    elif kind in ("tool_use", "server_tool_use"):
        answer.tool_calls.append(_call(block.get("id"), block.get("name"), jsonio.dumps(block.get("input") or {})
                                       .decode()))


def answer_of_message(message: Any) -> Answer:
    """The answer of a whole Messages answer (``{"type": "message", "content": [...], ...}``) or an error body."""
    answer = Answer()
    if not isinstance(message, dict):
        return answer
    if message.get("type") == "error":
        error = message.get("error")
        answer.error = str(error.get("message") if isinstance(error, dict) else error)
        return answer
    for block in message.get("content") or ():
        if isinstance(block, dict):
            _messages_block(answer, block)
    answer.finish_reason = _finish(message.get("stop_reason"))
    _messages_usage(answer, message.get("usage"))
    return answer


def assemble_messages_json(raw: bytes) -> Answer:
    return answer_of_message(jsonio.loads(raw))


def assemble_messages_sse(raw: bytes) -> Answer:
    """The answer of a Messages event stream: blocks assembled from their start and deltas, by index."""
    answer = Answer()
    blocks: dict[int, dict] = {}
    order: list[int] = []
    for event in sse_objects(raw):
        kind = event.get("type")
        if kind == "message_start":
            _messages_usage(answer, (event.get("message") or {}).get("usage"))
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            block = dict(event["content_block"])
            block["partial_json"] = ""
            blocks[event.get("index", len(order))] = block
            order.append(event.get("index", len(order)))
        elif kind == "content_block_delta":
            _delta(blocks.get(event.get("index", -1)), event.get("delta"))
        elif kind == "message_delta":
            answer.finish_reason = _finish((event.get("delta") or {}).get("stop_reason"))
            _messages_usage(answer, event.get("usage"))  # output tokens; input tokens only where given again
        elif kind == "error":
            error = event.get("error")
            answer.error = str(error.get("message") if isinstance(error, dict) else error)
    for index in order:
        block = blocks[index]
        if block.get("type") in ("tool_use", "server_tool_use") and block["partial_json"]:
            try:
                block["input"] = jsonio.loads(block["partial_json"])
            except ValueError:
                block["input"] = {"partial_json": block["partial_json"]}  # cut short: kept as it came
        _messages_block(answer, block)
    return answer


def _delta(block: dict | None, delta: Any) -> None:
    if block is None or not isinstance(delta, dict):
        return
    kind = delta.get("type")
    if kind == "text_delta":
        block["text"] = (block.get("text") or "") + str(delta.get("text") or "")
    elif kind == "thinking_delta":
        block["thinking"] = (block.get("thinking") or "") + str(delta.get("thinking") or "")
    elif kind == "input_json_delta":
        block["partial_json"] += str(delta.get("partial_json") or "")


# --- OpenAI Responses --------------------------------------------------------------------------------------

def _responses_item(answer: Answer, item: dict) -> None:
    kind = item.get("type")
    if kind == "message":
        for part in item.get("content") or ():
            if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str):
                answer.content.append(part["text"])
    elif kind == "reasoning":
        for part in [*(item.get("summary") or ()), *(item.get("content") or ())]:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                answer.thinking.append(part["text"])
    elif kind == "function_call":
        answer.tool_calls.append(_call(item.get("call_id"), item.get("name"), str(item.get("arguments") or "")))
    elif kind == "custom_tool_call":  # as the translation offers a custom tool: a function of one string
        answer.tool_calls.append(_call(item.get("call_id"), item.get("name"),
                                       jsonio.dumps({"input": str(item.get("input") or "")}).decode()))


def _responses_end(answer: Answer, response: dict) -> None:
    """Usage, stop and error of a response object."""
    take_agent_usage(answer, response)
    status = response.get("status")
    if status == "completed":
        answer.finish_reason = "tool_calls" if answer.tool_calls else "stop"
    elif status == "incomplete":
        answer.finish_reason = "length"
    error = response.get("error")
    if isinstance(error, dict) and error.get("message"):
        answer.error = str(error["message"])
    elif status == "failed":
        answer.error = "the backend's response failed"


def answer_of_response(response: Any) -> Answer:
    """The answer of a whole Responses object (or an OpenAI error body)."""
    answer = Answer()
    if not isinstance(response, dict):
        return answer
    if response.get("object") != "response" and isinstance(response.get("error"), dict):
        answer.error = str(response["error"].get("message"))
        return answer
    for item in response.get("output") or ():
        if isinstance(item, dict):
            _responses_item(answer, item)
    _responses_end(answer, response)
    return answer


def assemble_responses_json(raw: bytes) -> Answer:
    return answer_of_response(jsonio.loads(raw))


def assemble_responses_sse(raw: bytes) -> Answer:
    """The answer of a Responses event stream: the finished items (``output_item.done``), else, for a stream cut
    short, the deltas so far; usage and status from its last ``response.*`` object."""
    answer = Answer()
    items: list[dict] = []
    text: list[str] = []
    thinking: list[str] = []
    final: dict | None = None
    for event in sse_objects(raw):
        kind = event.get("type")
        if kind == "response.output_item.done" and isinstance(event.get("item"), dict):
            items.append(event["item"])
        elif kind == "response.output_text.delta":
            text.append(str(event.get("delta") or ""))
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            thinking.append(str(event.get("delta") or ""))
        elif kind in ("response.completed", "response.incomplete", "response.failed") \
                and isinstance(event.get("response"), dict):
            final = event["response"]
        elif kind == "error":
            answer.error = str(event.get("message") or (event.get("error") or {}).get("message") or "error")
    for item in items:
        _responses_item(answer, item)
    if not any(i.get("type") == "message" for i in items):
        answer.content.extend(t for t in text if t)
    if not any(i.get("type") == "reasoning" for i in items):
        answer.thinking.extend(t for t in thinking if t)
    if final is not None:
        _responses_end(answer, final)
    return answer
