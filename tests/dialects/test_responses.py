"""The Responses request -> chat request mapping (proxy/dialects/responses/request.py), fed Codex's request
shapes, and the incremental decoding of a custom tool's input (partial.py). Chat requests are checked against
OpenAI's own schema of a chat completions request."""
import json

import pytest

from proxy.dialects.responses.partial import PartialString
from proxy.dialects.responses.request import check_request, to_chat
from proxy.dialects.responses.shapes import base, custom_input
from proxy.errors import BadRequest
from tests.support.codex import APPLY_PATCH_GRAMMAR, INSTRUCTIONS, PATCH, PROMPT, codex_request
from tests.support.openai_schema import assert_openai_schema


def chat_of(body, flavor="llamacpp", model="up"):
    check_request(body)
    return to_chat(body, model, flavor)


def test_codex_first_turn_becomes_one_system_message_then_the_user_turns():
    plan = chat_of(codex_request(1))
    messages = plan.chat["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "user", "user"]
    assert messages[0]["content"].startswith(INSTRUCTIONS) and "<permissions instructions>" in messages[0]["content"]
    assert messages[-1] == {"role": "user", "content": PROMPT}
    assert plan.chat["stream"] is True and plan.chat["stream_options"] == {"include_usage": True}
    assert plan.chat["reasoning_effort"] == "medium" and not plan.empty
    assert_openai_schema(plan.chat, "CreateChatCompletionRequest")


def test_hosted_tools_are_dropped_and_apply_patch_is_offered_as_a_one_string_function():
    plan = chat_of(codex_request(1))
    tools = {t["function"]["name"]: t["function"] for t in plan.chat["tools"]}
    assert set(tools) == {"shell_command", "update_plan", "apply_patch"}
    assert all(t["type"] == "function" for t in plan.chat["tools"])
    patch = tools["apply_patch"]
    assert patch["parameters"] == {"type": "object", "properties": {"input": {"type": "string"}},
                                   "required": ["input"]}
    assert APPLY_PATCH_GRAMMAR in patch["description"] and "FREEFORM" in patch["description"]
    assert plan.custom_tools == frozenset({"apply_patch"})
    assert tools["shell_command"]["parameters"]["required"] == ["command"]
    assert plan.chat["tool_choice"] == "auto" and plan.chat["parallel_tool_calls"] is False


def test_second_turn_threads_calls_outputs_and_reasoning_into_chat_history():
    messages = chat_of(codex_request(2)).chat["messages"]
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user", "user", "user", "assistant", "tool", "assistant", "tool", "user", "assistant",
                     "user"]
    shell_call, patch_call = messages[4], messages[6]
    assert shell_call["reasoning_content"] == "I should look at hello.py first." and shell_call["content"] is None
    assert "reasoning_content" not in patch_call
    (shell,) = (c["function"] for c in shell_call["tool_calls"])
    (patch,) = (c["function"] for c in patch_call["tool_calls"])
    assert [shell_call["tool_calls"][0]["id"], patch_call["tool_calls"][0]["id"]] == ["call_shell1", "call_patch1"]
    assert json.loads(shell["arguments"]) == {"command": "cat hello.py", "workdir": "/repo"}
    assert patch["name"] == "apply_patch" and json.loads(patch["arguments"]) == {"input": PATCH}
    assert messages[5] == {"role": "tool", "tool_call_id": "call_shell1", "content": "print(\"hi\")\n"}
    assert messages[7]["tool_call_id"] == "call_patch1" and messages[7]["content"].startswith("Success.")
    # the output of a dropped hosted call (local_shell) still reaches the model, as text
    assert messages[8]["role"] == "user" and "hello.py" in messages[8]["content"]
    assert messages[9] == {"role": "assistant", "content": "Done: hello.py now greets."}
    assert messages[10]["content"] == "Thanks! Now run it."


def test_reasoning_is_dropped_for_openai_proper_which_takes_no_reasoning_text():
    plan = chat_of(codex_request(2), flavor="openai")
    assert not any("reasoning_content" in m for m in plan.chat["messages"])
    assert_openai_schema(plan.chat, "CreateChatCompletionRequest")


def test_string_input_and_sampling_fields_map_to_chat_fields():
    body = {"model": "m", "input": "hi", "temperature": 0.2, "top_p": 0.9, "max_output_tokens": 64,
            "text": {"format": {"type": "json_schema", "name": "out", "strict": True,
                                "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}}
    chat = chat_of(body).chat
    assert chat["messages"] == [{"role": "user", "content": "hi"}]
    assert (chat["temperature"], chat["top_p"], chat["max_tokens"]) == (0.2, 0.9, 64)
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "out", "schema": body["text"]["format"]["schema"], "strict": True}}
    assert chat["stream"] is False and "stream_options" not in chat
    assert chat_of(body, flavor="openai").chat["max_completion_tokens"] == 64


def test_images_become_image_url_parts_and_roles_without_type_are_messages():
    body = {"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"},
        {"type": "input_image", "file_id": "file_1"}]}]}
    (message,) = chat_of(body).chat["messages"]
    assert message["content"] == [{"type": "text", "text": "what is this?"},
                                  {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                                                      "detail": "high"}}]


@pytest.mark.parametrize(("choice", "expected"), [
    ("required", "required"), ("none", "none"),
    ({"type": "function", "name": "shell_command"}, {"type": "function", "function": {"name": "shell_command"}}),
    ({"type": "custom", "name": "apply_patch"}, {"type": "function", "function": {"name": "apply_patch"}}),
    ({"type": "web_search"}, "auto"), ({"type": "function", "name": "not_offered"}, "auto"),
    ({"type": "allowed_tools", "mode": "auto", "tools": []}, "auto"),
])
def test_tool_choice_maps_onto_the_offered_functions(choice, expected):
    assert chat_of(codex_request(1, tool_choice=choice)).chat["tool_choice"] == expected


def test_only_hosted_tools_means_no_tools_and_no_tool_choice():
    body = {"model": "m", "input": "hi", "tools": [{"type": "web_search"}], "tool_choice": "auto",
            "parallel_tool_calls": True}
    chat = chat_of(body).chat
    assert "tools" not in chat and "tool_choice" not in chat and "parallel_tool_calls" not in chat


def test_a_probe_with_no_input_is_marked_empty():
    assert chat_of({"model": "m", "input": [], "instructions": "x", "max_output_tokens": 1}).empty
    assert chat_of({"model": "m"}).empty


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation"),
    ({"model": "m", "input": 3}, "input"), ({"model": "m", "input": ["x"]}, "input"),
    ({"model": "m", "input": "x", "max_output_tokens": "9"}, "max_output_tokens"),
    ({"model": "m", "input": "x", "tools": [{"type": "function", "name": 3}]}, "tools"),
    ({"model": "m", "input": "x", "tool_choice": 1}, "tool_choice"), ({"input": "x"}, "model"),
    ({"model": "m", "input": "x", "reasoning": {"effort": 1}}, "reasoning"),
])
def test_bad_and_stateful_requests_are_400s_naming_the_field(body, param):
    with pytest.raises(BadRequest) as caught:
        check_request(body)
    assert caught.value.param == param and caught.value.status == 400


def test_stateless_refusal_says_what_to_do():
    with pytest.raises(BadRequest, match="stateless|keeps no state"):
        check_request({"model": "m", "input": "x", "previous_response_id": "resp_1"})


def test_the_response_object_echoes_the_request_with_store_false_and_kept_tools_only():
    obj = base(codex_request(1, max_output_tokens=99), "resp_x", 1700000000, "qwen3-8b")
    assert obj["store"] is False and obj["previous_response_id"] is None and obj["object"] == "response"
    assert obj["instructions"] == INSTRUCTIONS and obj["max_output_tokens"] == 99
    assert [t["name"] for t in obj["tools"]] == ["shell_command", "update_plan", "apply_patch"]
    assert obj["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert obj["text"] == {"verbosity": "low", "format": {"type": "text"}}


@pytest.mark.parametrize(("arguments", "expected"), [
    (json.dumps({"input": PATCH}), PATCH), (json.dumps({"patch": "raw"}), "raw"),
    ("not json", "not json"), (json.dumps("just a string"), "just a string"),
    (json.dumps({"a": 1, "b": 2}), json.dumps({"a": 1, "b": 2})),
])
def test_custom_input_is_the_input_string_of_the_arguments(arguments, expected):
    assert custom_input(arguments) == expected


def decode(pieces):
    partial = PartialString()
    return "".join(partial.feed(p) for p in pieces)


@pytest.mark.parametrize("value", [PATCH, "", "plain", "quote \" slash \\ tab \t nl \n", "\U0001f600 \u00e9 \u2028",
                                   "\\u00e9 literal", "/ \b \f \r"])
def test_partial_string_decodes_the_value_split_at_every_offset(value):
    text = json.dumps({"input": value})  # ASCII-escaped: \uXXXX and surrogate pairs to cut in two
    for i in range(len(text) + 1):
        assert decode([text[:i], text[i:]]) == value, i
    assert decode(list(text)) == value
    assert decode([json.dumps({"input": value}, ensure_ascii=False)]) == value


def test_partial_string_stops_at_a_value_that_is_not_a_string():
    assert decode(['{"input": 12, "x": "y"}']) == ""
    assert decode(['{"input": "a", "other": "b"}']) == "a"


def test_partial_string_replaces_lone_surrogates():
    assert decode(['{"input": "\\ud83d x \\ude00"}']) == "\ufffd x \ufffd"


def test_parallel_calls_merge_into_one_assistant_message_with_their_outputs_after_it():
    body = {"model": "m", "input": [
        {"type": "message", "role": "user", "content": "two things"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "both"}]},
        {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "b", "arguments": {"x": 1}},
        {"type": "function_call_output", "call_id": "c1", "output": "A"},
        {"type": "function_call_output", "call_id": "c2", "output": {"json": True}}]}
    _, calls, first, second = chat_of(body).chat["messages"]
    assert calls["reasoning_content"] == "both" and [c["id"] for c in calls["tool_calls"]] == ["c1", "c2"]
    assert calls["tool_calls"][1]["function"]["arguments"] == '{"x":1}'
    assert (first["content"], second["content"]) == ("A", '{"json":true}')


def test_json_object_format_and_text_format_map_to_response_format():
    assert chat_of({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}).chat[
        "response_format"] == {"type": "json_object"}
    assert "response_format" not in chat_of({"model": "m", "input": "x", "text": {"format": {"type": "text"}}}).chat


def test_a_reasoning_item_whose_summary_is_not_a_list_is_carried_without_it():
    body = {"model": "m", "input": [{"type": "reasoning", "summary": True, "id": None},
                                    {"role": "user", "content": "hi"}]}
    chat = chat_of(body).chat
    assert chat["messages"][-1] == {"role": "user", "content": "hi"}
