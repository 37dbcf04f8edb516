"""The log's answer of a native backend's Messages or Responses answer (``proxy.assemble_native``): whole objects,
event streams, and streams cut short (what came so far, never a failure of the log)."""
from __future__ import annotations

import json

from proxy import assemble_native as na
from tests.support import fake_agent_apis as fake


def test_a_messages_stream_gives_text_thinking_tool_calls_and_usage():
    raw = b"".join(fake.messages_events("m", ["Hel", "lo"], thinking="let me see", tool=("f", {"a": [1, 2]})))
    answer = na.assemble_messages_sse(raw)
    assert "".join(answer.content) == "Hello" and "".join(answer.thinking) == "let me see"
    [call] = answer.tool_calls
    assert call["id"] == "toolu_native1" and call["function"]["name"] == "f"
    assert json.loads(call["function"]["arguments"]) == {"a": [1, 2]}
    assert (answer.prompt_tokens, answer.completion_tokens, answer.finish_reason) == (11, 5, "tool_calls")


def test_messages_usage_counts_cached_prompt_tokens_and_crlf_framing_is_read():
    raw = b"".join(fake.messages_events("m", ["x"])).replace(b'"cache_read_input_tokens":0',
                                                             b'"cache_read_input_tokens":100')
    answer = na.assemble_messages_sse(raw.replace(b"\n", b"\r\n"))
    assert answer.prompt_tokens == 111 and "".join(answer.content) == "x"


def test_a_messages_stream_cut_inside_tool_input_keeps_what_came():
    events = fake.messages_events("m", ["a"], tool=("f", {"city": "Paris"}))
    cut = b"".join(events[:-4])  # up to the first half of the tool input
    answer = na.assemble_messages_sse(cut)
    assert "".join(answer.content) == "a" and answer.finish_reason is None
    assert json.loads(answer.tool_calls[0]["function"]["arguments"]) == {"partial_json": '{"city":'}


def test_a_messages_error_event_and_error_body_are_the_answers_error():
    raw = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n'
    assert na.assemble_messages_sse(raw).error == "busy"
    assert na.assemble_messages_json(b'{"type":"error","error":{"message":"bad"}}').error == "bad"


def test_a_whole_message_object():
    answer = na.assemble_messages_json(json.dumps(fake.message_object("m", ["Hi"], tool=("f", {}))).encode())
    assert "".join(answer.content) == "Hi" and answer.tool_calls[0]["function"]["arguments"] == "{}"
    assert (answer.prompt_tokens, answer.completion_tokens) == (11, 5)


def test_a_responses_stream_gives_text_calls_usage_and_stop():
    raw = b"".join(fake.responses_events("m", ["He", "y"], call=("shell", {"command": "ls"})))
    answer = na.assemble_responses_sse(raw)
    assert "".join(answer.content) == "Hey" and answer.tool_calls[0]["id"] == "call_native1"
    assert (answer.prompt_tokens, answer.completion_tokens, answer.finish_reason) == (13, 4, "tool_calls")


def test_a_responses_stream_cut_short_keeps_the_deltas():
    events = fake.responses_events("m", ["one", " two"])
    answer = na.assemble_responses_sse(b"".join(events[:6]))  # created .. the two deltas
    assert "".join(answer.content) == "one two" and answer.prompt_tokens is None and answer.finish_reason is None


def test_responses_custom_tool_calls_reasoning_and_failures():
    response = {"object": "response", "status": "failed", "error": {"message": "boom"}, "output": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "think"}]},
        {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"}]}
    answer = na.assemble_responses_json(json.dumps(response).encode())
    assert "".join(answer.thinking) == "think" and answer.error == "boom"
    assert json.loads(answer.tool_calls[0]["function"]["arguments"]) == {"input": "*** Begin Patch"}
    assert na.assemble_responses_json(b'{"error":{"message":"no such model"}}').error == "no such model"
