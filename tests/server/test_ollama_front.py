"""The Ollama front door over real sockets, driven by the official `ollama` client (raw HTTP
where the library would hide framing or types): discovery endpoints against both backend
types, chat/generate/embeddings translated to an OpenAI-type backend, load/unload probes,
MODEL_MAP and INJECT_TEXT on /api/chat, and the stub backend."""

from __future__ import annotations

import json
import re

import pytest
import requests

from tests.support import OPENAI_MODELS, fakes
from tests.support.fakes import json_reply, sse_reply
from tests.support.wire_checks import (
    KOOG_CAPABILITIES,
    assert_ollama_chat_line,
    assert_ollama_generate_line,
    assert_tags_entry,
    bare,
    ndjson_strict,
    post,
    user_texts,
)

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
CAPITAL_TOOL = [{"type": "function", "function": {
    "name": "get_capital", "description": "",
    "parameters": {"type": "object", "properties": {"country": {"type": "string"}},
                   "required": ["country"]}}}]


def chat_stream_raw(setup, body: dict) -> list[dict]:
    r = post(setup.url + "/api/chat", {"model": setup.model, **body})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    lines = ndjson_strict(r.content)
    for line in lines:
        assert_ollama_chat_line(line)
    assert [line["done"] for line in lines].count(True) == 1 and lines[-1]["done"] is True
    return lines


def joined(lines: list[dict], key: str) -> str:
    return "".join(line["message"].get(key) or "" for line in lines)


def tool_calls_of(lines: list[dict]) -> list[dict]:
    return [c for line in lines for c in (line["message"].get("tool_calls") or [])]


# =============================================================================================
# discovery: /, /api/version, /api/tags, /api/show, /api/ps — both backend types
# =============================================================================================


def test_root_says_ollama_is_running(backend):
    r = requests.get(backend.url + "/", timeout=5)
    assert r.status_code == 200 and r.text.strip() == "Ollama is running"
    head = requests.head(backend.url + "/", timeout=5)
    assert head.status_code == 200 and head.content == b""


def test_api_version_is_a_plain_number_at_least_0_6_4(backend):
    r = requests.get(backend.url + "/api/version", timeout=5)
    assert r.status_code == 200
    version = r.json()["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version  # Copilot parseInt, Open WebUI int()
    assert tuple(int(p) for p in version.split(".")) >= (0, 6, 4)


def test_api_tags_lists_backend_models_with_strict_field_types(backend, ollama_client):
    listed = ollama_client(backend.proxy).list()
    names = {bare(m.model) for m in listed.models}
    assert backend.model in names, names
    raw = requests.get(backend.url + "/api/tags", timeout=5).json()
    assert raw["models"], raw
    for entry in raw["models"]:
        assert_tags_entry(entry)


def test_api_tags_answers_head(backend):
    assert requests.head(backend.url + "/api/tags", timeout=5).status_code == 200


def test_api_show_accepts_name_instead_of_model(backend):
    r = post(backend.url + "/api/show", {"name": backend.model})
    assert r.status_code == 200, r.text
    show = r.json()
    caps = show["capabilities"]
    assert isinstance(caps, list) and "completion" in caps
    assert set(caps) <= KOOG_CAPABILITIES, caps  # Koog's closed enum
    info = show["model_info"]
    assert isinstance(info, dict)
    arch = info["general.architecture"]
    assert isinstance(info[f"{arch}.context_length"], int) and info[f"{arch}.context_length"] > 0
    if backend.kind == "openai":  # synthesised: Continue learns the context length here
        assert re.search(r"num_ctx\s+\d+", show["parameters"]), show.get("parameters")


def test_api_show_with_ollama_client_has_model_info_and_capabilities(backend, ollama_client):
    show = ollama_client(backend.proxy).show(backend.model)
    assert show.modelinfo is not None and show.capabilities
    assert show.details is not None and show.details.family


def test_model_and_model_latest_are_the_same_model_for_show(backend):
    plain = post(backend.url + "/api/show", {"model": bare(backend.model)})
    latest = post(backend.url + "/api/show", {"model": bare(backend.model) + ":latest"})
    assert plain.status_code == latest.status_code == 200
    assert plain.json()["capabilities"] == latest.json()["capabilities"]
    assert plain.json()["model_info"] == latest.json()["model_info"]


def test_api_show_of_unknown_model_is_404_with_a_json_error(backend):
    r = post(backend.url + "/api/show", {"model": "no-such-model"})
    assert r.status_code == 404
    assert isinstance(r.json()["error"], str) and r.json()["error"]


def test_api_ps_lists_models_with_parseable_expiry(backend, ollama_client):
    ollama_client(backend.proxy).ps()  # validates with the official models
    raw = requests.get(backend.url + "/api/ps", timeout=5).json()
    assert isinstance(raw["models"], list)
    for entry in raw["models"]:
        assert isinstance(entry["name"], str) and isinstance(entry["model"], str)
        from datetime import datetime
        datetime.fromisoformat(entry["expires_at"])  # Open WebUI does exactly this


# -- context length reported by /api/show for OpenAI-type backends ------------------------------


def show_context(proxy_url: str, model: str) -> tuple[int, str]:
    r = post(proxy_url + "/api/show", {"model": model})
    assert r.status_code == 200, r.text
    show = r.json()
    arch = show["model_info"]["general.architecture"]
    m = re.search(r"num_ctx\s+(\d+)", show["parameters"])
    assert m, show["parameters"]
    return show["model_info"][f"{arch}.context_length"], m.group(1)


def test_api_show_reports_llamacpp_context_length_from_props(fake_upstream, make_proxy):
    fake_upstream.serve_openai_models("smollm2", owned_by="llamacpp")  # older builds: no meta
    fake_upstream.default("GET", "/props", json_reply(fakes.llamacpp_props("smollm2", n_ctx=4096)))
    proxy = make_proxy(BACKEND_TYPE="openai")
    assert show_context(proxy.url, "smollm2") == (4096, "4096")


def test_api_show_reports_llamacpp_context_length_from_models_meta(fake_upstream, make_proxy):
    fake_upstream.default("GET", "/v1/models", json_reply(fakes.llamacpp_models("smollm2", n_ctx=3072)))
    proxy = make_proxy(BACKEND_TYPE="openai")
    assert show_context(proxy.url, "smollm2") == (3072, "3072")


def test_api_show_reports_vllm_max_model_len(fake_upstream, make_proxy):
    fake_upstream.serve_openai_models("Qwen/Qwen3-8B", max_model_len=32768)
    proxy = make_proxy(BACKEND_TYPE="openai")
    assert show_context(proxy.url, "Qwen/Qwen3-8B") == (32768, "32768")


def test_llamacpp_models_list_with_empty_strings_becomes_well_typed_tags(fake_upstream, make_proxy):
    fake_upstream.serve_llamacpp("smollm2", n_ctx=2048)
    proxy = make_proxy(BACKEND_TYPE="openai")
    raw = requests.get(proxy.url + "/api/tags", timeout=5).json()
    assert [bare(m["model"]) for m in raw["models"]] == ["smollm2"]
    assert_tags_entry(raw["models"][0])


# =============================================================================================
# load / unload probes: answered locally, nothing generated upstream
# =============================================================================================


def single_object(r: requests.Response) -> dict:
    assert r.status_code == 200, r.text
    lines = r.content.strip().split(b"\n")
    assert len(lines) == 1, r.content
    return json.loads(lines[0])


@pytest.mark.parametrize("body, reason", [
    ({"prompt": ""}, "load"),
    ({"prompt": "", "keep_alive": 0}, "unload"),
    ({}, "load"),
], ids=["empty-prompt", "open-webui-unload", "no-prompt"])
def test_generate_probe_is_answered_locally(backend, body, reason):
    obj = single_object(post(backend.url + "/api/generate", {"model": backend.model, **body}))
    assert obj["done"] is True and obj["done_reason"] == reason and obj["response"] == ""
    assert_ollama_generate_line(obj)
    assert [r for r in backend.fake.requests if r.method == "POST"] == []


@pytest.mark.parametrize("body, reason", [
    ({"messages": []}, "load"),
    ({"messages": [], "keep_alive": 0}, "unload"),
], ids=["load", "unload"])
def test_chat_probe_is_answered_locally(backend, body, reason):
    obj = single_object(post(backend.url + "/api/chat", {"model": backend.model, **body}))
    assert obj["done"] is True and obj["done_reason"] == reason
    assert_ollama_chat_line(obj)
    assert [r for r in backend.fake.requests if r.method == "POST"] == []


# =============================================================================================
# /api/chat and /api/generate against an OpenAI-type backend
# =============================================================================================


def test_ollama_chat_non_stream_returns_whole_message_and_eval_counts(openai_backend, ollama_client):
    openai_backend.script_chat(["Hello", " world"], prompt_tokens=11)
    resp = ollama_client(openai_backend.proxy).chat(
        model=openai_backend.model, messages=[{"role": "user", "content": "hi"}], stream=False)
    assert resp.message.content == "Hello world" and resp.message.role == "assistant"
    assert resp.done is True and resp.done_reason == "stop"
    assert resp.prompt_eval_count == 11 and resp.eval_count == 2
    raw = post(openai_backend.url + "/api/chat", {"model": openai_backend.model, "stream": False,
                                                  "messages": [{"role": "user", "content": "hi"}]})
    assert raw.headers["Content-Type"].startswith("application/json")
    assert_ollama_chat_line(raw.json())


def test_ollama_chat_stream_lines_carry_required_fields_and_final_counts(openai_backend):
    openai_backend.script_chat(["Hel", "lo", " world"], prompt_tokens=9)
    lines = chat_stream_raw(openai_backend, {"messages": [{"role": "user", "content": "hi"}],
                                             "stream": True})
    assert joined(lines, "content") == "Hello world"
    final = lines[-1]
    assert final["done_reason"] == "stop" and final["message"]["content"] == ""
    assert final["prompt_eval_count"] == 9 and final["eval_count"] == 3


def test_ollama_chat_without_stream_field_streams(openai_backend):
    openai_backend.script_chat(["a", "b", "c"])
    lines = chat_stream_raw(openai_backend, {"messages": [{"role": "user", "content": "hi"}]})
    assert len(lines) >= 4 and joined(lines, "content") == "abc"
    assert openai_backend.upstream_chat()["stream"] is True


def test_ollama_chat_stream_with_client_library_assembles_text(openai_backend, ollama_client):
    openai_backend.script_chat(["The", " answer"])
    parts = list(ollama_client(openai_backend.proxy).chat(
        model=openai_backend.model, messages=[{"role": "user", "content": "q"}], stream=True))
    assert "".join(p.message.content for p in parts) == "The answer" and parts[-1].done


def test_streaming_ollama_chat_asks_upstream_for_usage(openai_backend):
    openai_backend.script_chat()
    chat_stream_raw(openai_backend, {"messages": [{"role": "user", "content": "hi"}]})
    up = openai_backend.upstream_chat()
    assert up["stream"] is True and up["stream_options"] == {"include_usage": True}


def test_ollama_chat_reaches_upstream_under_the_backend_model_name(openai_backend, ollama_client):
    openai_backend.script_chat()
    resp = ollama_client(openai_backend.proxy).chat(
        model=openai_backend.model + ":latest", messages=[{"role": "user", "content": "hi"}])
    assert openai_backend.upstream_chat()["model"] == OPENAI_MODELS[0]
    assert bare(resp.model) == openai_backend.model  # the name the client used


def test_ollama_options_map_to_openai_fields_and_runner_options_are_dropped(openai_backend):
    openai_backend.script_chat()
    post(openai_backend.url + "/api/chat", {
        "model": openai_backend.model, "stream": False, "keep_alive": -1,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "options": {"temperature": 0.2, "top_p": 0.9, "num_predict": 256, "stop": ["\n\n"],
                    "seed": 3, "num_ctx": 8192, "num_gpu": 1, "num_thread": 4}})
    up = openai_backend.upstream_chat()
    assert up["model"] == OPENAI_MODELS[0]
    assert up["messages"] == [{"role": "system", "content": "be brief"},
                              {"role": "user", "content": "hi"}]
    assert up["temperature"] == 0.2 and up["top_p"] == 0.9 and up["seed"] == 3
    assert up["stop"] == ["\n\n"]
    assert up.get("max_tokens", up.get("max_completion_tokens")) == 256
    for dropped in ("options", "keep_alive", "num_ctx", "num_gpu", "num_thread"):
        assert dropped not in up, f"{dropped} was sent upstream: {up}"


def test_absent_ollama_options_send_no_sampling_defaults(openai_backend):
    openai_backend.script_chat()
    post(openai_backend.url + "/api/chat", {"model": openai_backend.model, "stream": False,
                                            "messages": [{"role": "user", "content": "hi"}]})
    up = openai_backend.upstream_chat()
    for key in ("temperature", "top_p", "max_tokens", "max_completion_tokens", "seed"):
        assert key not in up, f"{key} invented: {up}"


@pytest.mark.parametrize("num_predict", [-1, -2])
def test_unbounded_num_predict_sends_no_token_limit(openai_backend, num_predict):
    openai_backend.script_chat()
    post(openai_backend.url + "/api/chat", {"model": openai_backend.model, "stream": False,
                                            "options": {"num_predict": num_predict},
                                            "messages": [{"role": "user", "content": "hi"}]})
    up = openai_backend.upstream_chat()
    assert "max_tokens" not in up and "max_completion_tokens" not in up


def test_length_finish_becomes_done_reason_length(openai_backend):
    openai_backend.script_chat(["cut"], finish="length")
    lines = chat_stream_raw(openai_backend, {"messages": [{"role": "user", "content": "hi"}]})
    assert lines[-1]["done_reason"] == "length"


# -- tools --------------------------------------------------------------------------------------


def test_openai_tool_fragments_become_one_ollama_call_with_object_arguments(openai_backend):
    openai_backend.fake.default("POST", "/v1/chat/completions",
                                sse_reply("openai_chat_stream_tool_call.sse"))
    request = fakes.load_json("openai_chat_stream_tool_call.request.json")
    lines = chat_stream_raw(openai_backend, {"messages": request["messages"],
                                             "tools": CAPITAL_TOOL, "stream": True})
    with_calls = [line for line in lines if line["message"].get("tool_calls")]
    assert len(with_calls) == 1, lines
    (call,) = with_calls[0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_capital"
    assert call["function"]["arguments"] == {"country": "UK"}
    assert call.get("id", "call_ZR5UUuTt3pf61kjwAJIYdVMj") == "call_ZR5UUuTt3pf61kjwAJIYdVMj"
    assert with_calls[0]["message"]["content"] == ""
    final = lines[-1]
    assert final["done_reason"] == "stop"  # Ollama never says tool_calls
    assert final["prompt_eval_count"] == 53 and final["eval_count"] == 15


def test_openai_tool_call_reaches_ollama_library_as_a_mapping(openai_backend, ollama_client):
    openai_backend.fake.default("POST", "/v1/chat/completions",
                                sse_reply("openai_chat_stream_tool_call.sse"))
    parts = list(ollama_client(openai_backend.proxy).chat(
        model=openai_backend.model, stream=True, tools=CAPITAL_TOOL,
        messages=[{"role": "user", "content": "Capital of the UK?"}]))
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert len(calls) == 1
    assert calls[0].function.name == "get_capital"
    assert dict(calls[0].function.arguments) == {"country": "UK"}


def test_openai_tool_call_non_stream_becomes_ollama_call_with_object_arguments(
        openai_backend, ollama_client):
    openai_backend.script_chat([], tool_calls=[("get_weather", '{"city": "Tokyo"}', "call_w1")])
    resp = ollama_client(openai_backend.proxy).chat(
        model=openai_backend.model, tools=TOOLS, stream=False,
        messages=[{"role": "user", "content": "Weather in Tokyo?"}])
    (call,) = resp.message.tool_calls
    assert call.function.name == "get_weather" and dict(call.function.arguments) == {"city": "Tokyo"}
    assert resp.done_reason == "stop"


def test_parallel_tool_fragments_become_separate_whole_calls(openai_backend):
    openai_backend.script_chat([], tool_calls=[("get_weather", '{"city":"Tokyo"}', "call_a"),
                                               ("get_weather", '{"city":"Paris"}', "call_b")])
    lines = chat_stream_raw(openai_backend, {"messages": [{"role": "user", "content": "2 cities"}],
                                             "tools": TOOLS})
    calls = tool_calls_of(lines)
    assert [c["function"]["arguments"] for c in calls] == [{"city": "Tokyo"}, {"city": "Paris"}]
    assert all(c["function"]["name"] == "get_weather" for c in calls)


def test_broken_tool_arguments_still_reach_ollama_clients_as_an_object(openai_backend):
    openai_backend.script_chat([], tool_calls=[("get_weather", '{"city": "Tok', "call_x")])
    lines = chat_stream_raw(openai_backend, {"messages": [{"role": "user", "content": "w"}],
                                             "tools": TOOLS})
    (call,) = tool_calls_of(lines)
    assert isinstance(call["function"]["arguments"], dict)


def test_tools_are_forwarded_unchanged(openai_backend):
    openai_backend.script_chat()
    post(openai_backend.url + "/api/chat", {"model": openai_backend.model, "stream": False,
                                            "tools": TOOLS,
                                            "messages": [{"role": "user", "content": "hi"}]})
    assert openai_backend.upstream_chat()["tools"] == TOOLS


def test_ollama_tool_history_gets_json_string_arguments_and_ids_matched_by_name(openai_backend):
    openai_backend.script_chat(["Sunny at 10:00."])
    post(openai_backend.url + "/api/chat", {"model": openai_backend.model, "stream": False,
                                            "tools": TOOLS, "messages": [
        {"role": "user", "content": "Weather and time in Tokyo?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}},
            {"function": {"name": "get_time", "arguments": {"tz": "JST"}}}]},
        {"role": "tool", "tool_name": "get_time", "content": "10:00"},
        {"role": "tool", "tool_name": "get_weather", "content": "sunny"}]})
    msgs = openai_backend.upstream_chat()["messages"]
    assistant = msgs[1]
    assert assistant["role"] == "assistant"
    calls = assistant["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    for call, args in zip(calls, [{"city": "Tokyo"}, {"tz": "JST"}], strict=False):
        assert call["type"] == "function"
        assert isinstance(call["function"]["arguments"], str)
        assert json.loads(call["function"]["arguments"]) == args
        assert isinstance(call["id"], str) and call["id"]
    assert calls[0]["id"] != calls[1]["id"]
    ids = {c["function"]["name"]: c["id"] for c in calls}
    tool_msgs = [m for m in msgs if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_msgs] == [
        (ids["get_time"], "10:00"), (ids["get_weather"], "sunny")]


def test_ollama_tool_result_without_tool_name_is_threaded_by_position(openai_backend):
    # Home Assistant sends tool results with no tool_name
    openai_backend.script_chat(["ok"])
    post(openai_backend.url + "/api/chat", {"model": openai_backend.model, "stream": False,
                                            "tools": TOOLS, "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": '{"data": "cold"}'}]})
    msgs = openai_backend.upstream_chat()["messages"]
    call_id = msgs[1]["tool_calls"][0]["id"]
    assert msgs[2]["role"] == "tool" and msgs[2]["tool_call_id"] == call_id


def test_ollama_tool_call_ids_are_kept_when_present(openai_backend):
    openai_backend.script_chat(["ok"])
    post(openai_backend.url + "/api/chat", {"model": openai_backend.model, "stream": False,
                                            "tools": TOOLS, "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_keepme1", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
        {"role": "tool", "tool_name": "get_weather", "tool_call_id": "call_keepme1",
         "content": "warm"}]})
    msgs = openai_backend.upstream_chat()["messages"]
    assert msgs[1]["tool_calls"][0]["id"] == "call_keepme1"
    assert msgs[2]["tool_call_id"] == "call_keepme1"


# -- images, format, thinking ---------------------------------------------------------------------


@pytest.mark.parametrize("b64, mime", [
    (fakes.PNG_1PX, "image/png"), (fakes.JPEG_MAGIC, "image/jpeg"),
    (fakes.GIF_1PX, "image/gif"), (fakes.WEBP_MAGIC, "image/webp"),
], ids=["png", "jpeg", "gif", "webp"])
def test_ollama_images_become_image_url_parts_with_sniffed_mime(openai_backend, b64, mime):
    openai_backend.script_chat(["a picture"])
    post(openai_backend.url + "/api/chat", {"model": openai_backend.model, "stream": False,
                                            "messages": [{"role": "user", "content": "What is this?",
                                                          "images": [b64]}]})
    (user,) = [m for m in openai_backend.upstream_chat()["messages"] if m["role"] == "user"]
    parts = user["content"]
    assert isinstance(parts, list)
    assert {"type": "text", "text": "What is this?"} in parts
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert urls == [f"data:{mime};base64,{b64}"]
    assert "images" not in user


def test_generate_images_become_image_url_parts(openai_backend):
    openai_backend.script_chat(["a cat"])
    post(openai_backend.url + "/api/generate", {"model": openai_backend.model, "stream": False,
                                                "prompt": "Describe", "images": [fakes.PNG_1PX]})
    (user,) = [m for m in openai_backend.upstream_chat()["messages"] if m["role"] == "user"]
    urls = [p["image_url"]["url"] for p in user["content"] if p["type"] == "image_url"]
    assert urls == [f"data:image/png;base64,{fakes.PNG_1PX}"]


def test_format_json_becomes_response_format_json_object(openai_backend, ollama_client):
    openai_backend.script_chat(['{"a": 1}'])
    resp = ollama_client(openai_backend.proxy).chat(
        model=openai_backend.model, format="json", messages=[{"role": "user", "content": "json"}])
    assert json.loads(resp.message.content) == {"a": 1}
    assert openai_backend.upstream_chat()["response_format"] == {"type": "json_object"}


def test_format_schema_becomes_response_format_json_schema(openai_backend, ollama_client):
    schema = fakes.load_json("ollama_v1_chat_completions_json_schema.request.json")[
        "response_format"]["json_schema"]["schema"]
    openai_backend.script_chat(['{"city": "Paris", "country": "France"}'])
    ollama_client(openai_backend.proxy).chat(
        model=openai_backend.model, format=schema,
        messages=[{"role": "user", "content": "Capital of France?"}])
    rf = openai_backend.upstream_chat()["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == schema
    assert isinstance(rf["json_schema"].get("name"), str) and rf["json_schema"]["name"]


def test_llamacpp_reasoning_content_becomes_ollama_thinking(openai_backend):
    openai_backend.fake.default("POST", "/v1/chat/completions",
                                sse_reply("llamacpp_chat_stream_reasoning.SYNTHETIC.sse"))
    lines = chat_stream_raw(openai_backend, {"messages": [{"role": "user", "content": "hi"}]})
    assert joined(lines, "thinking") == "The user says hi."
    assert joined(lines, "content") == "Hello! How can I help?"
    # usage rides on llama.cpp's finish chunk
    assert lines[-1]["prompt_eval_count"] == 70 and lines[-1]["eval_count"] == 12


def test_deepseek_reasoning_stream_becomes_thinking_then_content(openai_backend):
    name = "deepseek_chat_stream_reasoning_content.sse"
    openai_backend.fake.default("POST", "/v1/chat/completions", sse_reply(name))
    deltas = [p["choices"][0]["delta"] for p in fakes.sse_payloads(name)[:-1] if p["choices"]]
    want_thinking = "".join(d.get("reasoning_content") or "" for d in deltas)
    want_content = "".join(d.get("content") or "" for d in deltas)
    lines = chat_stream_raw(openai_backend, {"messages": [{"role": "user", "content": "Hello"}]})
    assert joined(lines, "thinking") == want_thinking and want_thinking
    assert joined(lines, "content") == want_content and want_content
    first_content = next(i for i, line in enumerate(lines) if line["message"]["content"])
    assert not any(line["message"].get("thinking") for line in lines[first_content:])
    assert lines[-1]["prompt_eval_count"] == 6 and lines[-1]["eval_count"] == 212


def test_vllm_reasoning_field_becomes_ollama_thinking(openai_backend):
    openai_backend.script_chat(["Yes."], reasoning=["Let me", " think"], reasoning_field="reasoning")
    lines = chat_stream_raw(openai_backend, {"messages": [{"role": "user", "content": "hi"}]})
    assert joined(lines, "thinking") == "Let me think" and joined(lines, "content") == "Yes."


def test_non_stream_reasoning_becomes_message_thinking(openai_backend, ollama_client):
    fixture = fakes.load_json("ollama_v1_chat_completions_json_schema.response.json")
    message = fixture["choices"][0]["message"]

    def respond(req):
        if req.json.get("stream"):
            return sse_reply(fakes.openai_stream_events(
                [message["content"]], reasoning=[message["reasoning"]], reasoning_field="reasoning",
                prompt_tokens=136, completion_tokens=15))
        return json_reply(fixture)

    openai_backend.fake.default("POST", "/v1/chat/completions", respond)
    resp = ollama_client(openai_backend.proxy).chat(
        model=openai_backend.model, messages=[{"role": "user", "content": "Capital?"}])
    assert resp.message.thinking == message["reasoning"]
    assert resp.message.content == message["content"]
    assert resp.prompt_eval_count == 136 and resp.eval_count == 15


# -- /api/generate ---------------------------------------------------------------------------------


def test_generate_sends_system_and_prompt_as_chat_messages(openai_backend, ollama_client):
    openai_backend.script_chat(["Hi", " there"])
    resp = ollama_client(openai_backend.proxy).generate(
        model=openai_backend.model, prompt="Say hi", system="You are terse.")
    assert resp.response == "Hi there" and resp.done and resp.done_reason == "stop"
    up = openai_backend.upstream_chat()
    assert up["messages"] == [{"role": "system", "content": "You are terse."},
                              {"role": "user", "content": "Say hi"}]


def test_generate_stream_lines_carry_response_deltas_and_final_counts(openai_backend):
    openai_backend.script_chat(["One", " two"], prompt_tokens=4)
    r = post(openai_backend.url + "/api/generate", {"model": openai_backend.model, "prompt": "go"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
    lines = ndjson_strict(r.content)
    for line in lines:
        assert_ollama_generate_line(line)
    assert "".join(line["response"] for line in lines) == "One two"
    assert [line["done"] for line in lines].count(True) == 1 and lines[-1]["done"]
    assert lines[-1]["prompt_eval_count"] == 4 and lines[-1]["eval_count"] == 2


def test_generate_reasoning_becomes_thinking(openai_backend):
    openai_backend.script_chat(["42"], reasoning=["hmm"])
    r = post(openai_backend.url + "/api/generate", {"model": openai_backend.model, "prompt": "q"})
    lines = ndjson_strict(r.content)
    assert "".join(line.get("thinking") or "" for line in lines) == "hmm"
    assert "".join(line["response"] for line in lines) == "42"


# =============================================================================================
# embeddings against an OpenAI-type backend
# =============================================================================================


def test_api_embed_returns_one_vector_per_input(openai_backend, ollama_client):
    vectors = [[0.5, -0.25, 0.125], [1.0, 0.0, -1.0]]
    openai_backend.fake.default("POST", "/v1/embeddings",
                                fakes.openai_embeddings_responder(vectors, prompt_tokens=4))
    resp = ollama_client(openai_backend.proxy).embed(model=openai_backend.embed_model,
                                                     input=["a", "b"])
    assert [list(v) for v in resp.embeddings] == vectors
    assert resp.prompt_eval_count == 4
    up = openai_backend.fake.last("/v1/embeddings").json
    assert up["input"] == ["a", "b"] and up["model"] == OPENAI_MODELS[1]


def test_api_embed_with_one_string_still_returns_a_list_of_vectors(openai_backend):
    openai_backend.fake.default("POST", "/v1/embeddings",
                                fakes.openai_embeddings_responder([[0.5, 0.5]]))
    r = post(openai_backend.url + "/api/embed", {"model": openai_backend.embed_model, "input": "a"})
    assert r.status_code == 200 and r.json()["embeddings"] == [[0.5, 0.5]]


def test_legacy_api_embeddings_returns_a_single_embedding(openai_backend, ollama_client):
    openai_backend.fake.default("POST", "/v1/embeddings",
                                fakes.openai_embeddings_responder([[0.25, 0.75]]))
    resp = ollama_client(openai_backend.proxy).embeddings(model=openai_backend.embed_model,
                                                          prompt="hello")
    assert list(resp.embedding) == [0.25, 0.75]
    up_input = openai_backend.fake.last("/v1/embeddings").json["input"]
    assert up_input in ("hello", ["hello"])


# =============================================================================================
# MODEL_MAP and INJECT_TEXT on the Ollama front
# =============================================================================================


def test_model_map_alias_is_listed_in_tags_and_routed_to_the_backend_name(backend_setup, ollama_client):
    setup = backend_setup("openai", MODEL_MAP="office-llm=qwen3-8b")
    setup.script_chat(["ok"])
    names = {bare(m["model"]) for m in requests.get(setup.url + "/api/tags", timeout=5).json()["models"]}
    assert "office-llm" in names, names
    resp = ollama_client(setup.proxy).chat(model="office-llm:latest",
                                           messages=[{"role": "user", "content": "hi"}])
    assert setup.upstream_chat()["model"] == "qwen3-8b"
    assert bare(resp.model) == "office-llm"
    show = post(setup.url + "/api/show", {"model": "office-llm"})
    assert show.status_code == 200 and "completion" in show.json()["capabilities"]


def test_inject_text_goes_once_into_the_last_user_message(backend_setup):
    setup = backend_setup("openai", INJECT_TEXT="[be kind]", INJECT_MODE="last")
    setup.script_chat(["ok"])
    post(setup.url + "/api/chat", {"model": setup.model, "stream": False, "messages": [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"}, {"role": "user", "content": "second"}]})
    up = setup.upstream_chat()
    texts = user_texts(up["messages"])
    assert "[be kind]" not in texts[0] and "second" in texts[1] and "[be kind]" in texts[1]
    assert json.dumps(up).count("[be kind]") == 1


def test_inject_text_first_mode_targets_the_first_user_message(backend_setup):
    setup = backend_setup("ollama", INJECT_TEXT="[be kind]", INJECT_MODE="first")
    setup.script_chat(["ok"])
    post(setup.url + "/api/chat", {"model": setup.model, "stream": False, "messages": [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "second"}]})
    up = setup.upstream_chat()
    texts = user_texts(up["messages"])
    assert "first" in texts[0] and "[be kind]" in texts[0] and "[be kind]" not in texts[1]
    assert json.dumps(up).count("[be kind]") == 1


def test_inject_text_is_not_added_to_generate(backend_setup):
    setup = backend_setup("openai", INJECT_TEXT="[be kind]")
    setup.script_chat(["ok"])
    post(setup.url + "/api/generate", {"model": setup.model, "prompt": "p", "stream": False})
    assert "[be kind]" not in json.dumps(setup.upstream_chat())


# =============================================================================================
# stub backend through the Ollama front
# =============================================================================================


@pytest.fixture
def stub(make_proxy):
    proxy = make_proxy(BACKEND_TYPE="stub")
    models = requests.get(proxy.url + "/api/tags", timeout=5).json()["models"]
    for entry in models:
        assert_tags_entry(entry)
    chat_models = [m["model"] for m in models if "embed" not in m["model"]]
    assert chat_models, models
    return proxy, chat_models[0]


def test_stub_streams_a_deterministic_echo_word_by_word(stub):
    proxy, model = stub
    body = {"model": model, "messages": [{"role": "user", "content": "alpha beta gamma delta"}]}
    first = ndjson_strict(post(proxy.url + "/api/chat", body).content)
    second = ndjson_strict(post(proxy.url + "/api/chat", body).content)
    for line in first:
        assert_ollama_chat_line(line)
    text = joined(first, "content")
    assert "alpha beta gamma delta" in text and text == joined(second, "content")
    assert sum(1 for line in first if line["message"]["content"]) >= 4  # one line per word at least
    assert first[-1]["done"] and first[-1]["prompt_eval_count"] > 0 and first[-1]["eval_count"] > 0


def test_stub_calls_an_offered_tool_the_user_asks_for(stub, ollama_client):
    proxy, model = stub
    resp = ollama_client(proxy).chat(model=model, tools=TOOLS, stream=False, messages=[
        {"role": "user", "content": "Please use get_weather for Tokyo"}])
    (call,) = resp.message.tool_calls
    assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)


def test_stub_embeddings_are_deterministic(make_proxy, ollama_client):
    proxy = make_proxy(BACKEND_TYPE="stub")
    models = [m["model"] for m in requests.get(proxy.url + "/api/tags", timeout=5).json()["models"]]
    embed_model = next(m for m in models if "embed" in m)
    client = ollama_client(proxy)
    a = client.embed(model=embed_model, input=["x", "y"]).embeddings
    b = client.embed(model=embed_model, input=["x", "y"]).embeddings
    assert len(a) == 2 and a == b and a[0] != a[1]


# =============================================================================================
# more: `:latest` everywhere, injection idempotence, raw/suffix generate, slow model lists
# =============================================================================================


@pytest.mark.parametrize("path, body", [
    ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "stream": False}),
    ("/api/generate", {"prompt": "hi", "stream": False}),
    ("/api/show", {}),
], ids=["chat", "generate", "show"])
def test_latest_suffix_names_the_same_openai_backend_model(openai_backend, path, body):
    openai_backend.script_chat(["ok"])
    r = post(openai_backend.url + path, {"model": openai_backend.model + ":latest", **body})
    assert r.status_code == 200, r.text
    if path != "/api/show":
        assert openai_backend.upstream_chat()["model"] == OPENAI_MODELS[0]


def test_latest_suffix_names_the_same_embedding_model(openai_backend):
    openai_backend.fake.default("POST", "/v1/embeddings", fakes.openai_embeddings_responder([[1.0]]))
    r = post(openai_backend.url + "/api/embed", {"model": OPENAI_MODELS[1] + ":latest", "input": "x"})
    assert r.status_code == 200, r.text
    assert openai_backend.fake.last("/v1/embeddings").json["model"] == OPENAI_MODELS[1]


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_inject_text_already_present_is_not_added_again(backend_setup, kind):
    setup = backend_setup(kind, INJECT_TEXT="/nothink")
    setup.script_chat(["ok"])
    post(setup.url + "/api/chat", {"model": setup.model, "stream": False, "messages": [
        {"role": "user", "content": "hello /nothink"}]})
    assert json.dumps(setup.upstream_chat()).count("/nothink") == 1


def test_raw_generate_goes_to_v1_completions_verbatim(openai_backend, ollama_client):
    openai_backend.fake.default("POST", "/v1/completions",
                                fakes.openai_text_completion_responder(["<|im_end|>"]))
    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    resp = ollama_client(openai_backend.proxy).generate(model=openai_backend.model, prompt=prompt,
                                                        raw=True)
    assert resp.response == "<|im_end|>" and resp.done
    up = openai_backend.fake.last("/v1/completions").json
    assert up["prompt"] == prompt and up["model"] == OPENAI_MODELS[0]
    assert not openai_backend.chat_calls()


def test_generate_with_suffix_goes_to_v1_completions_with_suffix(openai_backend):
    openai_backend.fake.default("POST", "/v1/completions",
                                fakes.openai_text_completion_responder(["return a + b"]))
    r = post(openai_backend.url + "/api/generate", {
        "model": openai_backend.model, "prompt": "def add(a, b):\n    ", "suffix": "\n\nprint(add(1, 2))",
        "options": {"num_predict": 32, "temperature": 0}})
    lines = ndjson_strict(r.content)
    assert "".join(line["response"] for line in lines) == "return a + b" and lines[-1]["done"]
    up = openai_backend.fake.last("/v1/completions").json
    assert up["prompt"] == "def add(a, b):\n    " and up["suffix"] == "\n\nprint(add(1, 2))"
    assert up["max_tokens"] == 32 and up["temperature"] == 0


def test_api_tags_stays_fast_when_the_backend_model_list_hangs(fake_upstream, make_proxy):
    # Home Assistant gives /api/tags 5 s and polls it every 30 s (api-surface trap 12)
    fake_upstream.serve_openai_models(*OPENAI_MODELS)
    proxy = make_proxy(BACKEND_TYPE="openai", MODEL_LIST_TTL="0.2")
    assert requests.get(proxy.url + "/api/tags", timeout=5).status_code == 200  # primes the cache
    import math
    import time
    fake_upstream.default("GET", "/v1/models", fakes.Reply(chunks=[b"{}"], hang=math.inf))
    time.sleep(0.4)  # the cached list is now stale
    for path in ("/api/tags", "/api/ps", "/v1/models"):
        t0 = time.monotonic()
        r = requests.get(proxy.url + path, timeout=10)
        assert time.monotonic() - t0 < 5, f"{path} waited on the slow backend"
        assert r.status_code == 200, (path, r.text)
    names = {bare(m["model"]) for m in requests.get(proxy.url + "/api/tags", timeout=10).json()["models"]}
    assert OPENAI_MODELS[0] in names
