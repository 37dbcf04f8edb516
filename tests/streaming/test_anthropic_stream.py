"""The Anthropic stream translator: recorded OpenAI SSE and Ollama NDJSON streams split at every byte offset,
the documented event order, tool-use blocks and their ids, stop reasons, usage, failures and pings."""
from __future__ import annotations

import json
import re

import pytest

from proxy.anthropic_stream import (
    OllamaStreamToAnthropic,
    OpenAIStreamToAnthropic,
    OpenAIToAnthropic,
    ollama_ndjson_to_anthropic,
    openai_sse_to_anthropic,
)
from proxy.errors import BackendError
from tests.streaming.test_translators import splits, wire
from tests.support.anthropic_events import check_order, sse_events

OPENAI_FIXTURES = ["openai_chat_stream_tool_call.sse", "deepseek_chat_stream_reasoning_content.sse",
                   "llamacpp_chat_stream_reasoning.SYNTHETIC.sse", "openai_chat_stream_after_tool_result.sse"]


def clock():
    return 1700000000.0


def translator(stops=None) -> OpenAIToAnthropic:
    return OpenAIToAnthropic("client-model", "msg_test", stops, clock=clock)


def from_openai(chunks, stops=None):
    t = translator(stops)
    return b"".join(openai_sse_to_anthropic(chunks, t)), t.answer


def from_ollama(chunks):
    t = translator()
    return b"".join(ollama_ndjson_to_anthropic(chunks, t)), t.answer


def sse(*chunks: dict, done: bool = True) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + (b"data: [DONE]\n\n" if done else b"")


def delta(finish=None, **fields) -> dict:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": finish}]}


@pytest.mark.parametrize("fixture", OPENAI_FIXTURES)
def test_openai_stream_translation_is_independent_of_chunk_boundaries(fixture):
    data = wire(fixture)
    expected, _ = from_openai([data])
    check_order(sse_events(expected))
    for chunks in splits(data):
        assert from_openai(chunks)[0] == expected


def test_ollama_stream_translation_is_independent_of_chunk_boundaries():
    data = wire("ollama_docs_chat_stream_tool_call.ndjson")

    def normalised(out: bytes) -> bytes:  # a call without an id gets a new one per run
        return re.sub(rb'"call_[a-z0-9]{8}"', b'"call_id"', out)

    expected = normalised(from_ollama([data])[0])
    check_order(sse_events(expected))
    for chunks in splits(data):
        assert normalised(from_ollama(chunks)[0]) == expected


def test_a_streamed_tool_call_keeps_the_backends_id_and_its_arguments_concatenate_to_json():
    out, answer = from_openai([wire("openai_chat_stream_tool_call.sse")])
    said = check_order(sse_events(out))
    [block] = said["blocks"]
    assert block["type"] == "tool_use" and block["start"]["id"] == "call_ZR5UUuTt3pf61kjwAJIYdVMj"
    assert block["start"]["name"] == "get_capital" and json.loads(block["value"]) == {"country": "UK"}
    assert said["stop_reason"] == "tool_use" and said["usage"]["input_tokens"] == 53
    assert answer.tool_calls[0]["function"]["arguments"] == '{"country":"UK"}'


def test_thinking_then_text_are_two_blocks_with_usage_at_the_end():
    out, answer = from_openai([wire("deepseek_chat_stream_reasoning_content.sse")])
    said = check_order(sse_events(out))
    assert [b["type"] for b in said["blocks"]] == ["thinking", "text"]
    assert said["blocks"][0]["start"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert said["blocks"][0]["value"] == "".join(answer.thinking) and said["blocks"][1]["value"] == "".join(answer.content)
    assert said["stop_reason"] == "end_turn" and said["usage"]["output_tokens"] == answer.completion_tokens > 0


def test_an_ollama_tool_call_becomes_a_tool_use_block_with_object_input():
    out, _ = from_ollama([wire("ollama_docs_chat_stream_tool_call.ndjson")])
    said = check_order(sse_events(out))
    assert [(b["type"], b["start"]["name"], json.loads(b["value"])) for b in said["blocks"]] == [
        ("tool_use", "get_weather", {"city": "Tokyo"})]
    assert said["stop_reason"] == "tool_use" and said["usage"]["input_tokens"] > 0


def test_text_then_parallel_calls_are_blocks_in_order():
    data = sse(delta(content="I'll check."),
               delta(tool_calls=[{"index": 0, "id": "call_a", "function": {"name": "Read", "arguments": ""}}]),
               delta(tool_calls=[{"index": 0, "function": {"arguments": '{"file_path":'}}]),
               delta(tool_calls=[{"index": 0, "function": {"arguments": '"/a"}'}}]),
               delta(tool_calls=[{"index": 1, "id": "call_b", "function": {"name": "Bash", "arguments": '{"c":1}'}}]),
               delta("tool_calls"))
    said = check_order(sse_events(from_openai([data])[0]))
    assert [(b["type"], b["start"].get("id"), b["value"]) for b in said["blocks"]] == [
        ("text", None, "I'll check."), ("tool_use", "call_a", '{"file_path":"/a"}'), ("tool_use", "call_b", '{"c":1}')]


def test_a_call_whose_name_comes_late_opens_when_it_is_known_with_what_came_before():
    data = sse(delta(tool_calls=[{"index": 0, "id": "call_a", "function": {"arguments": '{"x":'}}]),
               delta(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": "1}"}}]),
               delta("tool_calls"))
    [block] = check_order(sse_events(from_openai([data])[0]))["blocks"]
    assert block["start"]["name"] == "f" and block["value"] == '{"x":1}'


def test_a_call_without_a_backend_id_gets_a_toolu_id():
    data = sse(delta(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": "{}"}}]), delta("tool_calls"))
    [block] = check_order(sse_events(from_openai([data])[0]))["blocks"]
    assert re.fullmatch(r"toolu_[0-9a-f]{24}", block["start"]["id"])


@pytest.mark.parametrize("finish, choice, reason, sequence", [
    ("length", {}, "max_tokens", None), ("stop", {"stop_reason": "###"}, "stop_sequence", "###"),
    ("stop", {}, "end_turn", None),
])
def test_stop_reasons_in_the_stream(finish, choice, reason, sequence):
    last = {"choices": [{"index": 0, "delta": {}, "finish_reason": finish, **choice}]}
    said = check_order(sse_events(from_openai([sse(delta(content="a"), last)], stops=["###"])[0]))
    assert (said["stop_reason"], said["stop_sequence"]) == (reason, sequence)


def test_missing_usage_is_counted_and_marked_estimated():
    said = check_order(sse_events(from_openai([sse(delta(content="a"), delta(content="b"), delta("stop"))])[0]))
    assert said["usage"] == {"input_tokens": 0, "output_tokens": 2}


def test_a_midstream_error_event_raises_after_what_came_before():
    with pytest.raises(BackendError, match="(?i)tool"):
        from_openai([wire("groq_chat_stream_midstream_error_event.sse")])


def test_a_stream_cut_short_ends_with_an_error_event():
    out, answer = from_openai([sse(delta(content="Hel"), done=False)])
    said = check_order(sse_events(out))
    assert said["error"] == {"type": "api_error", "message": "the backend closed the stream before it finished"}
    assert answer.error


def test_the_first_push_sends_message_start_before_any_upstream_byte_and_ping_is_on_demand():
    push = OpenAIStreamToAnthropic(translator())
    [opening] = push(b"")
    name, data = sse_events(opening)[0]
    assert name == "message_start" and data["message"]["model"] == "client-model"
    assert data["message"]["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert push.ping() == b'event: ping\ndata: {"type":"ping"}\n\n'
    rest = push(sse(delta(content="hi"), delta("stop"))) + push.end()
    assert [n for n, _ in sse_events(b"".join(rest))][0] == "content_block_start"  # message_start went once


def test_an_ollama_push_opens_at_once_too_and_ends_at_done():
    push = OllamaStreamToAnthropic(translator())
    assert sse_events(b"".join(push(b"")))[0][0] == "message_start"
    line = b'{"model":"m","created_at":"x","message":{"role":"assistant","content":"hi"},"done":false}\n'
    done = b'{"model":"m","created_at":"x","message":{"role":"assistant","content":""},"done":true,' \
           b'"done_reason":"length","prompt_eval_count":5,"eval_count":1}\n'
    out = b"".join(push(line) + push(done) + push(b'{"after":"done"}\n') + push.end())
    said = check_order([("message_start", {"type": "message_start", "message": {
        "id": "msg_x", "content": [], "role": "assistant"}})] + sse_events(out))
    assert said["stop_reason"] == "max_tokens" and said["usage"] == {"input_tokens": 5, "output_tokens": 1}
