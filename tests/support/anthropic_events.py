"""Client-side checks of an Anthropic Messages stream: strict SSE parsing (every event named, its name the type
of its data) and the documented order (message_start; per block start, deltas, stop, numbered from 0 and
never interleaved; message_delta; message_stop; ping anywhere; an error event ends the stream)."""
from __future__ import annotations

import json
from typing import Any

DELTA_OF_BLOCK = {"text": "text_delta", "thinking": "thinking_delta", "tool_use": "input_json_delta"}
EMPTY_FIELDS = {"text": {"text": ""}, "thinking": {"thinking": ""}, "tool_use": {"input": {}}}


def sse_events(raw: bytes) -> list[tuple[str, dict]]:
    """(event name, data) per event; each event has one `event:` line and one `data:` line."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), f"SSE body does not end with a blank line: {text[-120:]!r}"
    out = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block[:200]
        name, data = lines[0][7:], json.loads(lines[1][6:])
        assert data["type"] == name, (name, data)
        out.append((name, data))
    return out


def check_order(events: list[tuple[str, dict]]) -> dict[str, Any]:
    """Assert the documented order; return what the stream said: blocks (type, accumulated text/json, start
    block), stop_reason, stop_sequence, usage, error."""
    assert events and events[0][0] == "message_start", events[:1]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["role"] == "assistant" and start["id"].startswith("msg_")
    blocks: list[dict] = []
    open_index = None
    said: dict[str, Any] = {"blocks": blocks, "error": None, "stop_reason": None}
    rest = events[1:]
    for i, (name, data) in enumerate(rest):
        if name == "ping":
            continue
        if name == "error":
            assert i == len(rest) - 1, "an error event ends the stream"
            said["error"] = data["error"]
            return said
        assert said["stop_reason"] is None or name == "message_stop", f"{name} after message_delta"
        if name == "content_block_start":
            assert open_index is None, "a block opened before the previous one stopped"
            assert data["index"] == len(blocks)
            block = data["content_block"]
            assert EMPTY_FIELDS[block["type"]].items() <= block.items(), block
            open_index = data["index"]
            blocks.append({"start": block, "type": block["type"], "value": ""})
        elif name == "content_block_delta":
            assert data["index"] == open_index
            delta = data["delta"]
            assert delta["type"] == DELTA_OF_BLOCK[blocks[-1]["type"]], (blocks[-1]["type"], delta)
            blocks[-1]["value"] += delta.get("text", delta.get("thinking", delta.get("partial_json", "")))
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        elif name == "message_delta":
            assert open_index is None, "message_delta while a block is open"
            said.update(stop_reason=data["delta"]["stop_reason"], stop_sequence=data["delta"]["stop_sequence"],
                        usage=data["usage"])
        elif name == "message_stop":
            assert i == len(rest) - 1 and said["stop_reason"], "message_stop ends the stream, after message_delta"
        else:
            raise AssertionError(f"unknown event {name}")
    assert rest and rest[-1][0] == "message_stop", "the stream did not end with message_stop"
    return said
