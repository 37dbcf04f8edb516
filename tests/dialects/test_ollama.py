"""Ollama <-> OpenAI mapping tables and functions (pure)."""
import json
from datetime import UTC

import pytest

from proxy.dialects import ollama as ol
from proxy.dialects import ollama_openai as oo
from proxy.errors import BadRequest

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"


@pytest.mark.parametrize("options, flavour, expected", [
    ({"temperature": 0.2, "num_predict": 256, "num_ctx": 8192}, "llamacpp", {"temperature": 0.2, "max_tokens": 256}),
    ({"num_predict": -1}, "generic", {}),
    ({"stop": "END"}, "generic", {"stop": ["END"]}),
    ({"top_k": 40, "repeat_penalty": 1.1}, "llamacpp", {"top_k": 40, "repeat_penalty": 1.1}),
    ({"top_k": 40, "repeat_penalty": 1.1}, "vllm", {"top_k": 40, "repetition_penalty": 1.1}),
    ({"top_k": 40, "repeat_penalty": 1.1, "num_gpu": 1}, "openai", {}),
    ({"seed": 7, "presence_penalty": 0.5, "num_thread": 8}, "generic", {"seed": 7, "presence_penalty": 0.5}),
])
def test_options_to_openai_table(options, flavour, expected):
    assert oo.options_to_openai(options, flavour) == expected


@pytest.mark.parametrize("fmt, expected", [
    ("json", {"type": "json_object"}),
    ({"type": "object"}, {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}, "strict": True}}),
    ("", None), (None, None),
])
def test_format_becomes_response_format(fmt, expected):
    assert oo.format_to_response_format(fmt) == expected


@pytest.mark.parametrize("response_format, expected", [
    ({"type": "json_object"}, "json"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}, {"type": "object"}),
    ({"type": "text"}, None),
])
def test_response_format_becomes_format(response_format, expected):
    assert oo.response_format_to_format(response_format) == expected


@pytest.mark.parametrize("think, flavour, expected", [
    (None, "llamacpp", {}),
    (True, "llamacpp", {"chat_template_kwargs": {"enable_thinking": True}}),
    (False, "vllm", {"chat_template_kwargs": {"enable_thinking": False}}),
    (False, "openai", {"reasoning_effort": "none"}),
    ("high", "generic", {"reasoning_effort": "high"}),
])
def test_think_to_openai_per_flavour(think, flavour, expected):
    assert oo.think_to_openai(think, flavour) == expected


@pytest.mark.parametrize("effort, think", [("none", False), ("minimal", "low"), ("medium", "medium"), ("xhigh", "max")])
def test_reasoning_effort_becomes_think(effort, think):
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort}
    assert oo.chat_from_openai(body, "m")["think"] == think


def test_stream_defaults_differ_between_dialects():
    assert ol.is_streaming({}) is True and ol.is_streaming({"stream": False}) is False
    out = oo.chat_to_openai({"model": "m", "messages": []}, "m", "generic")
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert oo.chat_from_openai({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "m")["stream"] is False


def test_tool_history_gets_ids_threaded_into_tool_results():
    history = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}},
            {"function": {"name": "get_time", "arguments": {"tz": "JST"}}}]},
        {"role": "tool", "content": "12:00", "tool_name": "get_time"},
        {"role": "tool", "content": "{\"data\": \"sunny\"}"},  # Home Assistant sends no tool_name
    ]
    out = oo.messages_to_openai(history)
    calls = out[1]["tool_calls"]
    assert out[1]["content"] is None
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Tokyo"}
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert out[2]["tool_call_id"] == calls[1]["id"]  # matched by name
    assert out[3]["tool_call_id"] == calls[0]["id"]  # the one left, by position


def test_openai_tool_history_becomes_ollama_with_object_arguments_and_tool_name():
    history = [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
    ]
    out = oo.messages_from_openai(history)
    assert out[0]["content"] == "" and out[0]["tool_calls"] == [{"id": "call_1", "function": {"name": "f", "arguments": {"a": 1}}}]
    assert out[1] == {"role": "tool", "content": "done", "tool_call_id": "call_1", "tool_name": "f"}


def test_images_become_data_uris_with_sniffed_mime_and_back():
    out = oo.messages_to_openai([{"role": "user", "content": "what is it", "images": [PNG_B64, "/9j/4AAQ"]}])
    parts = out[0]["content"]
    assert parts[0] == {"type": "text", "text": "what is it"}
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert parts[2]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    back = oo.messages_from_openai(out)
    assert back[0]["images"] == [PNG_B64, "/9j/4AAQ"] and back[0]["content"] == "what is it"


def test_remote_image_urls_are_refused_clearly():
    with pytest.raises(BadRequest, match="data: URIs"):
        oo.messages_from_openai([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}])


@pytest.mark.parametrize("raw, expected, ok", [
    ('{"city": "Tokyo"}', {"city": "Tokyo"}, True),
    ('"{\\"a\\": 1}"', {"a": 1}, True),  # double-encoded
    ("", {}, True), (None, {}, True),
    ('{"city": "Tok', {}, False),  # truncated by max_tokens
    ("[1, 2]", {}, False),
    ({"already": "object"}, {"already": "object"}, True),
])
def test_tool_arguments_always_become_an_object(raw, expected, ok):
    assert ol.parse_arguments(raw) == (expected, ok)


@pytest.mark.parametrize("finish, done", [("stop", "stop"), ("length", "length"), ("tool_calls", "stop"),
                                          ("content_filter", "stop"), (None, "stop")])
def test_finish_reason_to_done_reason(finish, done):
    assert oo.done_reason_from_finish(finish) == done


@pytest.mark.parametrize("done, saw_tools, finish", [("stop", False, "stop"), ("length", False, "length"),
                                                     ("stop", True, "tool_calls"), (None, False, "stop")])
def test_done_reason_to_finish_reason(done, saw_tools, finish):
    assert oo.finish_from_done_reason(done, saw_tools) == finish


def test_generate_raw_or_suffix_goes_to_completions_else_chat():
    path, out = oo.generate_to_openai({"model": "m", "prompt": "def f(", "suffix": "\n", "stream": False}, "b", "generic")
    assert path == "/v1/completions" and out["suffix"] == "\n" and out["prompt"] == "def f(" and "stream_options" not in out
    path, out = oo.generate_to_openai({"model": "m", "prompt": "hi", "system": "sys"}, "b", "generic")
    assert path == "/v1/chat/completions"
    assert out["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]


def test_completion_from_openai_is_raw_generate():
    out = oo.completion_from_openai({"model": "m", "prompt": ["text"], "max_tokens": 5}, "b")
    assert out == {"model": "b", "prompt": "text", "raw": True, "stream": False, "options": {"num_predict": 5}}


def test_n_greater_than_one_is_refused_for_ollama():
    with pytest.raises(BadRequest):
        oo.chat_from_openai({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "m")


def test_tool_choice_none_drops_tools():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}],
            "tool_choice": "none"}
    assert "tools" not in oo.chat_from_openai(body, "m")


def test_timestamps_are_utc_with_z_and_microseconds():
    assert ol.rfc3339(0) == "1970-01-01T00:00:00.000000Z"


def test_rfc3339_formats_exactly_as_datetime_does_across_seconds_and_rounding_edges():
    import random
    from datetime import datetime

    rng = random.Random(7)
    stamps = [0.0, 0.9999995, 1.0000005, 1732400000.0, 1732400000.9999996, 4102444800.5, -1.25]
    stamps += [rng.uniform(0, 5e9) for _ in range(5000)]
    stamps += [1732400000 + i / 7 for i in range(2000)]  # many lines within the same seconds, as a stream stamps
    for ts in stamps:
        assert ol.rfc3339(ts) == datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), ts


def test_latest_tag_is_the_same_model():
    assert ol.canonical("foo:latest") == "foo" and ol.with_tag("foo") == "foo:latest" and ol.with_tag("a:7b") == "a:7b"


def test_ollama_chat_response_to_openai_with_tool_calls():
    resp = {"model": "m", "message": {"role": "assistant", "content": "", "thinking": "hmm",
                                      "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]},
            "done": True, "done_reason": "stop", "prompt_eval_count": 10, "eval_count": 3}
    out = oo.chat_response_to_openai(resp, "chatcmpl-1", 100, "alias")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["reasoning_content"] == "hmm"
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"x": 1}
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    assert out["model"] == "alias"


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": "x"}, {"model": "m", "messages": [{"role": "user", "content": 1}]},
    {"model": "m", "messages": [{"role": "user", "images": "abc"}]}, {"model": "m", "options": []},
    {"model": "m", "options": {"temperature": "hot"}}, {"model": "m", "format": "yaml"},
    {"model": "m", "think": "very"}, {"model": "m", "stream": "no"}, {"messages": []}, {"model": ""},
    {"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": "f"}]}]},
])
def test_bad_ollama_chat_requests_are_rejected(body):
    with pytest.raises(BadRequest):
        ol.check_chat_request(body)


def test_show_accepts_name_instead_of_model():
    assert ol.check_model({"name": "m"}) == "m"
