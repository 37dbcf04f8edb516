"""The Responses stream translator (proxy/responses_stream.py): recorded chat streams of both backend dialects,
split at every byte offset, become the documented event sequence (agent-fronts.md §2.3-2.4); every event is
checked against the official `openai` SDK's own event models; a stream always ends completed or failed."""
import json
import re

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.dialects.responses.shapes import base
from proxy.errors import BackendError
from proxy.responses_stream import ChatToResponses, ResponsesFromOllama, ResponsesFromOpenAI, chunk_of_ollama
from tests.support import TESTS_DIR
from tests.support.codex import PATCH

WIRE = TESTS_DIR / "data" / "wire"
EVENT = TypeAdapter(ResponseStreamEvent)
IDS = re.compile(rb'"((?:msg|rs|fc|ctc|call)_)[0-9a-f]{8,24}"')


def wire(name: str) -> bytes:
    return (WIRE / name).read_bytes()


def splits(data: bytes, every_offset_up_to: int = 2048):
    """Whole; a byte at a time; in two at every offset (past 2 KiB, every 127th)."""
    yield [data]
    yield [data[i:i + 1] for i in range(len(data))]
    offsets = list(range(1, min(len(data), every_offset_up_to))) + list(range(every_offset_up_to, len(data), 127))
    for i in offsets:
        yield [data[:i], data[i:]]


def translator(body=None, custom=frozenset()):
    fixed = base(body or {"model": "client-model", "input": "hi"}, "resp_test", 1700000000, "client-model")
    return ChatToResponses(fixed, custom, clock=lambda: 1700000000.0)


def run(push, chunks):
    """What the relay does: each chunk pushed, then the end; a failure ends the stream with push.failure."""
    out = []
    for chunk in [b"", *chunks]:
        out += push(chunk)
        if push.error is not None:
            return b"".join(out) + push.failure(push.error)
    out += push.end()
    if push.error is not None:
        out.append(push.failure(push.error))
    return b"".join(out)


def openai_events(chunks, **kw):
    t = translator(**kw)
    return run(ResponsesFromOpenAI(t), chunks), t


def ollama_events(chunks, **kw):
    t = translator(**kw)
    return run(ResponsesFromOllama(t), chunks), t


def parse(raw: bytes, strict: bool = True) -> list[dict]:
    """The events, each checked: `event:` names its data's type, and the SDK's model accepts it."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        name, data = block.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        if strict:
            EVENT.validate_python(event)
        events.append(event)
    return events


def check_order(events: list[dict]) -> None:
    """The documented order: created, in_progress, per item added -> parts/deltas -> done, one final event;
    sequence numbers 0, 1, 2...; every delta belongs to an open item and adds up to its done text."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] in ("response.completed", "response.failed")
    assert not any(e["type"] in ("response.completed", "response.failed") for e in events[:-1])
    open_items: dict[int, dict] = {}
    texts: dict[int, str] = {}
    done_items = []
    for e in events[2:-1]:
        kind = e["type"]
        if kind == "response.output_item.added":
            assert e["output_index"] == len(done_items) + len(open_items)
            open_items[e["output_index"]] = e["item"]
            texts[e["output_index"]] = ""
        elif kind == "response.output_item.done":
            item = open_items.pop(e["output_index"])
            assert e["item"]["id"] == item["id"] and e["item"]["type"] == item["type"]
            done = e["item"]
            full = {"message": lambda i: i["content"][0]["text"], "reasoning": lambda i: i["summary"][0]["text"],
                    "function_call": lambda i: i["arguments"], "custom_tool_call": lambda i: i["input"]}
            if done["type"] != "custom_tool_call" or texts[e["output_index"]]:
                assert full[done["type"]](done) == texts[e["output_index"]]
            done_items.append(done)
        elif kind == "response.in_progress":
            continue
        else:
            assert e["output_index"] in open_items, kind
            assert e["item_id"] == open_items[e["output_index"]]["id"]
            if kind.endswith(".delta"):
                texts[e["output_index"]] += e["delta"]
    assert not open_items or events[-1]["type"] == "response.failed"  # a failure leaves partial items open
    final = events[-1]["response"]
    assert final["output"] == done_items and final["id"] == "resp_test"
    Response.model_validate(final)


def normalized(raw: bytes) -> bytes:
    return IDS.sub(rb'"\1X"', raw)


@pytest.mark.parametrize("fixture", ["openai_chat_stream_tool_call.sse", "deepseek_chat_stream_reasoning_content.sse",
                                     "llamacpp_chat_stream_reasoning.SYNTHETIC.sse",
                                     "openai_chat_stream_after_tool_result.sse"])
def test_openai_stream_translation_is_independent_of_chunk_boundaries(fixture):
    data = wire(fixture)
    whole, _ = openai_events([data])
    check_order(parse(whole))
    expected = normalized(whole)
    for chunks in splits(data):
        assert normalized(openai_events(chunks)[0]) == expected


def test_ollama_stream_translation_is_independent_of_chunk_boundaries():
    data = wire("ollama_docs_chat_stream_tool_call.ndjson")
    whole, t = ollama_events([data])
    events = parse(whole)
    check_order(events)
    (call,) = events[-1]["response"]["output"]
    assert call["type"] == "function_call" and json.loads(call["arguments"]) == {"city": "Tokyo"}
    assert events[-1]["response"]["usage"]["input_tokens"] == 169 and t.answer.completion_tokens == 15
    for chunks in splits(data):
        assert normalized(ollama_events(chunks)[0]) == normalized(whole)


def test_reasoning_then_text_become_a_reasoning_item_with_summary_then_a_message():
    events = parse(openai_events([wire("deepseek_chat_stream_reasoning_content.sse")])[0])
    check_order(events)
    reasoning, message = events[-1]["response"]["output"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"][0]["text"]
    assert message["type"] == "message" and message["content"][0]["text"]
    kinds = [e["type"] for e in events]
    assert kinds[2:5] == ["response.output_item.added", "response.reasoning_summary_part.added",
                          "response.reasoning_summary_text.delta"]
    assert "response.output_text.delta" in kinds and events[-1]["response"]["status"] == "completed"


def test_tool_call_fragments_stream_as_function_call_arguments():
    raw, t = openai_events([wire("openai_chat_stream_tool_call.sse")])
    events = parse(raw)
    check_order(events)
    calls = [e for e in events[-1]["response"]["output"] if e["type"] == "function_call"]
    assert calls and all(c["call_id"].startswith("call_") and json.loads(c["arguments"]) for c in calls)
    assert sum(e["type"] == "response.function_call_arguments.delta" for e in events) > len(calls)
    usage = events[-1]["response"]["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert [c["id"] for c in t.answer.tool_calls] == [c["call_id"] for c in calls]


def sse(*chunks) -> bytes:
    return b"".join(b"data: " + (c if isinstance(c, bytes) else json.dumps(c).encode()) + b"\n\n" for c in chunks)


def fragments(name: str, arguments: str, call_id="call_p1", pieces=7):
    step = max(1, len(arguments) // pieces)
    first = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    return [first] + [{"index": 0, "function": {"arguments": arguments[i:i + step]}}
                      for i in range(0, len(arguments), step)]


def chunk(**delta):
    finish = delta.pop("finish", None)
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


PATCH_STREAM = sse(chunk(role="assistant", content=""),
                   *[chunk(tool_calls=[f]) for f in fragments("apply_patch", json.dumps({"input": PATCH}))],
                   chunk(finish="tool_calls"),
                   {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}},
                   b"[DONE]")


def test_a_custom_tool_call_streams_its_raw_input_at_every_split():
    whole, _ = openai_events([PATCH_STREAM], custom=frozenset({"apply_patch"}))
    events = parse(whole)
    check_order(events)
    (call,) = events[-1]["response"]["output"]
    assert call["type"] == "custom_tool_call" and call["name"] == "apply_patch" and call["input"] == PATCH
    assert call["id"].startswith("ctc_") and call["call_id"] == "call_p1"
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert len(deltas) > 1 and "".join(deltas) == PATCH
    assert not any(e["type"].startswith("response.function_call") for e in events)
    for chunks in splits(PATCH_STREAM):
        assert normalized(openai_events(chunks, custom=frozenset({"apply_patch"}))[0]) == normalized(whole)


def test_a_truncated_answer_completes_with_status_incomplete_and_max_output_tokens():
    raw, _ = openai_events([sse(chunk(content="Hel"), chunk(content="lo"), chunk(finish="length"), b"[DONE]")])
    events = parse(raw)
    check_order(events)
    final = events[-1]
    assert final["type"] == "response.completed" and final["response"]["status"] == "incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_backend_that_dies_mid_stream_ends_it_with_response_failed():
    raw, t = openai_events([sse(chunk(content="Hel"), chunk(content="lo"))])  # no finish, no [DONE]
    events = parse(raw)
    check_order(events)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_error",
                                               "message": "the backend closed the stream before it finished"}
    assert t.answer.error


def test_a_midstream_error_event_becomes_response_failed_after_what_came_before():
    raw, _ = openai_events([wire("groq_chat_stream_midstream_error_event.sse")])
    events = parse(raw)
    check_order(events)
    assert events[-1]["type"] == "response.failed" and "tool" in events[-1]["response"]["error"]["message"].lower()


def test_a_context_error_keeps_the_code_codex_acts_on():
    t = translator()
    out = t.failed(BackendError("too long", code="context_length_exceeded"))
    events = parse(b"".join(out), strict=False)  # Codex's code, not in the SDK's list of codes
    assert events[-1]["response"]["error"]["code"] == "context_length_exceeded"
    assert t.failed(BackendError("again")) == []  # ended once


def test_a_malformed_chunk_fails_the_stream_in_band():
    raw, _ = openai_events([sse(chunk(content="a")) + b"data: {not json\n\n"])
    assert parse(raw)[-1]["type"] == "response.failed"


def test_keepalive_repeats_in_progress_before_output_and_is_a_comment_after():
    t = translator()
    opening = t.opening()
    beat = t.keepalive()
    assert parse(b"".join(opening) + beat)[-1] == {**parse(beat)[0], "sequence_number": 2}
    assert parse(beat)[0]["type"] == "response.in_progress"
    t.feed(chunk(content="x"))
    assert t.keepalive() == b": keep-alive\n\n"


def test_ollama_lines_become_chat_chunks():
    line = {"message": {"role": "assistant", "content": "", "thinking": "hmm",
                        "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
            "done": True, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 4}
    converted = chunk_of_ollama(line, 0)
    delta = converted["choices"][0]["delta"]
    assert delta["reasoning_content"] == "hmm" and delta["tool_calls"][0]["function"]["arguments"] == '{"a":1}'
    assert converted["choices"][0]["finish_reason"] == "tool_calls"
    assert converted["usage"]["prompt_tokens"] == 3
    assert chunk_of_ollama({"error": "boom"}, 0) == {"error": "boom"}


def test_a_whole_completion_becomes_the_same_response_object():
    completion = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Patching.", "reasoning_content": "think",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "apply_patch", "arguments": json.dumps({"input": PATCH})}},
                       {"id": "call_2", "type": "function", "function": {"name": "shell", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11,
                  "prompt_tokens_details": {"cached_tokens": 2}}}
    final = translator(custom=frozenset({"apply_patch"})).whole(completion)
    Response.model_validate(final)
    kinds = [(i["type"], i.get("name")) for i in final["output"]]
    assert kinds == [("reasoning", None), ("message", None), ("custom_tool_call", "apply_patch"),
                     ("function_call", "shell")]
    assert final["output"][2]["input"] == PATCH and final["output"][3]["arguments"] == "{}"
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 2 and final["status"] == "completed"


OLLAMA_TEXT = b"".join(json.dumps(line).encode() + b"\n" for line in [
    {"model": "m", "message": {"role": "assistant", "content": "", "thinking": "Let me"}, "done": False},
    {"model": "m", "message": {"role": "assistant", "content": "", "thinking": " think."}, "done": False},
    *({"model": "m", "message": {"role": "assistant", "content": w}, "done": False} for w in ("Hel", "lo", " \u00e9")),
    {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
     "prompt_eval_count": 4, "eval_count": 5}])


def test_ollama_thinking_and_text_lines_become_reasoning_then_message_at_every_split():
    whole, t = ollama_events([OLLAMA_TEXT])
    events = parse(whole)
    check_order(events)
    reasoning, message = events[-1]["response"]["output"]
    assert reasoning["summary"][0]["text"] == "Let me think." and message["content"][0]["text"] == "Hello \u00e9"
    assert "".join(t.answer.content) == "Hello \u00e9" and events[-1]["response"]["usage"]["output_tokens"] == 5
    for chunks in splits(OLLAMA_TEXT):
        assert normalized(ollama_events(chunks)[0]) == normalized(whole)


@pytest.mark.parametrize("odd", [
    {"choices": [{"delta": "text"}]}, {"choices": [{"delta": {"content": 5, "tool_calls": "x"}}]},
    {"choices": [{"delta": {"tool_calls": [{"function": "f"}]}, "finish_reason": 3}]},
    {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": 7, "function": {"name": 1, "arguments": 2}}]}}]},
])
def test_chunks_of_odd_shapes_never_break_the_stream_ending(odd):
    raw, _ = openai_events([sse(chunk(content="a"), odd, chunk(finish="stop"), b"[DONE]")])
    assert parse(raw)[-1]["type"] in ("response.completed", "response.failed")


@pytest.mark.parametrize("line", [{"message": "x", "done": False}, {"message": {"tool_calls": ["x"]}, "done": False},
                                  {"message": {"content": ["x"]}, "done": False}])
def test_ollama_lines_of_odd_shapes_end_the_stream_failed_or_completed(line):
    body = json.dumps(line).encode() + b"\n" + json.dumps({"message": {"content": ""}, "done": True}).encode() + b"\n"
    raw, _ = ollama_events([body])
    assert parse(raw)[-1]["type"] in ("response.completed", "response.failed")


def test_tool_call_fragments_without_index_continue_the_last_call():
    frags = [{"id": "call_a", "function": {"name": "f", "arguments": '{"x"'}}, {"function": {"arguments": ": 1}"}},
             {"id": "call_b", "function": {"name": "g", "arguments": "{}"}}]
    raw, _ = openai_events([sse(*[chunk(tool_calls=[f]) for f in frags], chunk(finish="tool_calls"), b"[DONE]")])
    calls = parse(raw)[-1]["response"]["output"]
    assert [(c["call_id"], c["arguments"]) for c in calls] == [("call_a", '{"x": 1}'), ("call_b", "{}")]
