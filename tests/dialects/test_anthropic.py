"""The Anthropic Messages dialect: requests checked and mapped onto OpenAI chat (Claude Code's recorded shape
among them), whole answers, stop reasons, errors and model entries."""
from __future__ import annotations

import copy
import json

import pytest

from proxy.dialects import anthropic as an
from proxy.dialects import ollama_openai as oo
from proxy.errors import BadRequest, ModelNotFound, Overloaded, ProxyError, RateLimited, anthropic_error_body
from tests.support.fakes import load_json

CLAUDE_CODE = "claude_code_messages.SYNTHETIC.request.json"


def body(**fields):
    return {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **fields}


def chat(request: dict, flavour: str = "llamacpp", sanitize: bool = True) -> dict:
    request = copy.deepcopy(request)
    an.check_messages_request(request)
    return an.to_openai(request, "backend-model", flavour, sanitize)


# --- Claude Code's recorded shape ------------------------------------------------------------------

def test_claude_code_request_maps_onto_chat_turn_by_turn():
    out = chat(load_json(CLAUDE_CODE))
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "user", "assistant", "tool", "tool", "user"]
    system = out["messages"][0]["content"]
    assert not system.startswith("x-anthropic-billing-header") and "cch=" not in system
    assert system.startswith("You are Claude Code") and system.endswith("The user's working directory is /src.")
    first = out["messages"][1]["content"]
    assert first.startswith("<system-reminder>") and first.endswith("What does src/a.py do?")
    assistant = out["messages"][2]
    assert assistant["content"] == "I'll check." and assistant["reasoning_content"] == "I should read the file first."
    assert assistant["tool_calls"] == [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                                        "function": {"name": "Read", "arguments": '{"file_path":"/src/a.py"}'}}]
    assert out["messages"][3] == {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9",
                                  "content": "     1\tprint('hi')\n"}
    assert [c["id"] for c in out["messages"][5]["tool_calls"]] == ["toolu_01B", "toolu_01C"]
    assert out["messages"][6] == {"role": "tool", "tool_call_id": "toolu_01B", "content": "Error: File does not exist."}
    assert out["messages"][7]["content"] == "a.py\n" and out["messages"][8]["content"] == "Thanks, summarise please."


def test_claude_code_tools_become_functions_and_server_tools_are_dropped():
    out = chat(load_json(CLAUDE_CODE))
    assert [t["function"]["name"] for t in out["tools"]] == ["Read", "Bash"]
    assert out["tools"][0]["function"]["parameters"]["required"] == ["file_path"]
    assert out["tool_choice"] == "auto" and "parallel_tool_calls" not in out


def test_claude_code_sampling_thinking_stream_and_user_reach_the_backend():
    out = chat(load_json(CLAUDE_CODE))
    assert out["model"] == "backend-model" and out["max_tokens"] == 32000 and out["temperature"] == 1
    assert out["reasoning_effort"] == "high"  # adaptive thinking at effort high
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert json.loads(out["user"])["session_id"].startswith("5e551011")
    assert "context_management" not in out and "metadata" not in out


def test_sanitising_off_keeps_the_billing_block():
    out = chat(load_json(CLAUDE_CODE), sanitize=False)
    assert out["messages"][0]["content"].startswith("x-anthropic-billing-header: cc_version=")


def test_the_system_prompt_is_the_same_bytes_whatever_the_nonce():
    first, second = load_json(CLAUDE_CODE), load_json(CLAUDE_CODE)
    second["system"][0]["text"] = second["system"][0]["text"].replace("cch=3f2a1", "cch=99b07")
    assert chat(first)["messages"][0] == chat(second)["messages"][0]


def test_a_system_string_loses_its_billing_line():
    out = chat(body(system="x-anthropic-billing-header: cc_version=1; cch=abc;\nBe brief."))
    assert out["messages"][0] == {"role": "system", "content": "Be brief."}


# --- content blocks ------------------------------------------------------------------------------

def test_base64_and_url_images_become_image_parts():
    content = [{"type": "text", "text": "what is this"},
               {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
               {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]
    user = chat(body(messages=[{"role": "user", "content": content}]))["messages"][0]
    assert user["content"] == [{"type": "text", "text": "what is this"},
                               {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
                               {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]


def test_tool_result_blocks_keep_text_and_mark_images():
    content = [{"type": "tool_result", "tool_use_id": "t1", "content": [
        {"type": "text", "text": "shot taken"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]}]
    assert chat(body(messages=[{"role": "user", "content": content}]))["messages"] == [
        {"role": "tool", "tool_call_id": "t1", "content": "shot taken\n[image]"}]


def test_a_tool_use_id_with_unsafe_characters_is_made_safe_on_both_sides():
    messages = [{"role": "user", "content": "go"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call:1/x", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call:1/x", "content": "ok"}]}]
    out = chat(body(messages=messages))["messages"]
    assert out[1]["tool_calls"][0]["id"] == out[2]["tool_call_id"] == "call_1_x"


def test_assistant_string_content_and_empty_text_with_calls():
    messages = [{"role": "user", "content": "go"}, {"role": "assistant", "content": "done"},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {"x": 1}}]}]
    out = chat(body(messages=messages))["messages"]
    assert out[1] == {"role": "assistant", "content": "done"}
    assert out[3]["content"] is None and out[3]["tool_calls"][0]["function"]["arguments"] == '{"x":1}'


def test_openai_proper_gets_no_reasoning_back_and_no_top_k():
    messages = [{"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": ""},
                                                  {"type": "text", "text": "a"}]},
                {"role": "user", "content": "q2"}]
    out = chat(body(messages=messages, top_k=5), flavour="openai")
    assert "reasoning_content" not in out["messages"][1] and "top_k" not in out
    assert chat(body(top_k=5), flavour="llamacpp")["top_k"] == 5


# --- tables: tool_choice, thinking, sampling ------------------------------------------------------

TOOLS = [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}]


@pytest.mark.parametrize("choice, expected", [
    ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
])
def test_tool_choice_maps_to_openai(choice, expected):
    assert chat(body(tools=TOOLS, tool_choice=choice))["tool_choice"] == expected


def test_disable_parallel_tool_use_turns_parallel_calls_off():
    out = chat(body(tools=TOOLS, tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    assert out["parallel_tool_calls"] is False


@pytest.mark.parametrize("fields, flavour, expected", [
    ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "llamacpp",
     {"chat_template_kwargs": {"enable_thinking": True}}),
    ({"thinking": {"type": "disabled"}}, "vllm", {"chat_template_kwargs": {"enable_thinking": False}}),
    ({"thinking": {"type": "disabled"}}, "openai", {"reasoning_effort": "none"}),
    ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}, "llamacpp", {"reasoning_effort": "low"}),
    ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, "vllm", {"reasoning_effort": "high"}),
    ({"thinking": {"type": "adaptive"}}, "llamacpp", {"chat_template_kwargs": {"enable_thinking": True}}),
    ({}, "llamacpp", {}),
])
def test_thinking_maps_to_the_backends_switch(fields, flavour, expected):
    out = chat(body(**fields), flavour=flavour)
    assert {k: out[k] for k in ("chat_template_kwargs", "reasoning_effort") if k in out} == expected


def test_sampling_fields_and_stop_sequences():
    out = chat(body(temperature=0.2, top_p=0.9, top_k=40, stop_sequences=["\n\nHuman:"]))
    assert (out["temperature"], out["top_p"], out["top_k"], out["stop"]) == (0.2, 0.9, 40, ["\n\nHuman:"])
    assert out["stream"] is False and "stream_options" not in out


def test_an_ollama_backend_gets_options_think_and_tool_names_through_the_ollama_mapping():
    messages = [{"role": "user", "content": "go"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]
    out = oo.chat_from_openai(chat(body(messages=messages, top_k=3, stop_sequences=["X"]), "ollama"), "llama3")
    assert out["options"] == {"top_k": 3, "num_predict": 100, "stop": ["X"]}
    assert out["messages"][1]["tool_calls"][0] == {"function": {"name": "f", "arguments": {"a": 1}}, "id": "t1"}
    assert out["messages"][2] == {"role": "tool", "content": "ok", "tool_call_id": "t1", "tool_name": "f"}


# --- checks ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, field", [
    ({"max_tokens": None}, "max_tokens"), ({"max_tokens": "9"}, "max_tokens"), ({"model": ""}, "model"),
    ({"messages": []}, "messages"), ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages"), ({"messages": [{"role": "user", "content": [{"text": "x"}]}]},
                                                     "messages"),
    ({"system": 5}, "system"), ({"tools": [{"name": "f", "input_schema": []}]}, "tools"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice"), ({"thinking": {"type": "sometimes"}}, "thinking"),
    ({"stop_sequences": "x"}, "stop_sequences"), ({"temperature": "hot"}, "temperature"),
])
def test_wrong_types_are_a_400_naming_the_field(bad, field):
    request = {**body(), **bad}
    if request.get("max_tokens") is None:
        del request["max_tokens"]
    with pytest.raises(BadRequest) as caught:
        an.to_openai(request, "m", "generic") if an.check_messages_request(request) else None
    assert caught.value.param == field


@pytest.mark.parametrize("block", [
    {"type": "tool_result", "content": "no id"},
    {"type": "image", "source": {"type": "file", "file_id": "f"}},
])
def test_unusable_blocks_are_a_400(block):
    with pytest.raises(BadRequest):
        chat(body(messages=[{"role": "user", "content": [block]}]))


def test_a_tool_use_without_an_object_input_is_a_400():
    with pytest.raises(BadRequest):
        chat(body(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": [
            {"type": "tool_use", "id": "a", "name": "f", "input": "nope"}]}]))


def test_count_tokens_needs_no_max_tokens_and_estimates_from_characters():
    request = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}]}
    assert an.check_count_tokens_request(request) == "m"
    assert an.estimate_tokens(request) == 100 + 4 * 2
    with_tools = {**request, "tools": TOOLS}
    assert an.estimate_tokens(with_tools) > an.estimate_tokens(request)


def test_the_text_counted_is_the_text_the_backend_gets():
    request = load_json(CLAUDE_CODE)
    text = an.flat_text(request)
    assert "x-anthropic-billing-header" not in text and "You are Claude Code" in text
    assert '{"file_path":"/src/a.py"}' in text and "File does not exist." in text and '"name":"Bash"' in text
    assert an.flat_text(request, sanitize=False).startswith("x-anthropic-billing-header")


# --- whole answers --------------------------------------------------------------------------------

def completion(message: dict, finish: str = "stop", **choice) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish, **choice}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 8}}}


def test_a_whole_answer_has_thinking_text_and_tool_use_blocks_in_that_order():
    resp = completion({"content": "Let me look.", "reasoning_content": "hm",
                       "tool_calls": [{"id": "call_9", "type": "function",
                                       "function": {"name": "Read", "arguments": '{"file_path":"/a"}'}}]},
                      "tool_calls")
    message = an.message_from_openai(resp, "msg_1", "client-model")
    assert message["content"] == [{"type": "thinking", "thinking": "hm", "signature": ""},
                                  {"type": "text", "text": "Let me look."},
                                  {"type": "tool_use", "id": "call_9", "name": "Read", "input": {"file_path": "/a"}}]
    assert message["stop_reason"] == "tool_use" and message["model"] == "client-model"
    assert message["usage"] == {"input_tokens": 11, "cache_read_input_tokens": 8, "output_tokens": 3}


@pytest.mark.parametrize("finish, choice, stops, reason, sequence", [
    ("stop", {}, None, "end_turn", None), ("length", {}, None, "max_tokens", None),
    ("stop", {"stop_reason": "END"}, ["END"], "stop_sequence", "END"),
    ("stop", {"stop_reason": 2}, ["END"], "end_turn", None), ("content_filter", {}, None, "refusal", None),
])
def test_stop_reasons_are_mapped(finish, choice, stops, reason, sequence):
    message = an.message_from_openai(completion({"content": "x"}, finish, **choice), "msg_1", "m", stops)
    assert (message["stop_reason"], message["stop_sequence"]) == (reason, sequence)


def test_a_call_without_an_id_gets_a_toolu_id():
    resp = completion({"content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}, "tool_calls")
    assert an.message_from_openai(resp, "msg_1", "m")["content"][0]["id"].startswith("toolu_")


# --- errors and models ---------------------------------------------------------------------------------

@pytest.mark.parametrize("exc, kind", [
    (BadRequest("x"), "invalid_request_error"), (ProxyError("x", status=401), "authentication_error"),
    (ProxyError("x", status=403), "permission_error"), (ModelNotFound("x"), "not_found_error"),
    (ProxyError("x", status=413), "request_too_large"), (RateLimited("x"), "rate_limit_error"),
    (ProxyError("x"), "api_error"), (ProxyError("x", status=502), "api_error"), (Overloaded("x"), "overloaded_error"),
    (ProxyError("x", status=529), "overloaded_error"), (ProxyError("x", status=405), "invalid_request_error"),
])
def test_error_type_follows_the_status(exc, kind):
    assert anthropic_error_body(exc, "req1") == {"type": "error", "error": {"type": kind, "message": "x"},
                                                 "request_id": "req1"}


def test_model_entries_and_list_carry_anthropic_fields():
    entries = [an.model_entry("a", 1735689600), an.model_entry("b", 1735689600, "B")]
    assert entries[0] == {"type": "model", "id": "a", "display_name": "a", "created_at": "2025-01-01T00:00:00Z"}
    assert an.model_list(entries) == {"data": entries, "has_more": False, "first_id": "a", "last_id": "b"}
    assert an.model_list([]) == {"data": [], "has_more": False, "first_id": None, "last_id": None}


@pytest.mark.parametrize("path, dialect", [
    ("/v1/messages", "anthropic"), ("/v1/messages/count_tokens", "anthropic"), ("/V1/Messages", "anthropic"),
    ("/v1/messagesx", "openai"), ("/v1/models", "openai"), ("/v1/chat/completions", "openai"),
    ("/api/chat", "ollama"), ("/", "ollama"),
])
def test_errors_under_v1_messages_are_in_anthropics_dialect(path, dialect):
    from proxy.recording import dialect_of_path

    assert dialect_of_path(path) == dialect
