"""The OpenAI front door over real sockets, driven by the official `openai` SDK (raw HTTP where
the SDK would hide a shape): model listing against both backend types, chat/completions/
embeddings translated to an Ollama backend, MODEL_MAP and INJECT_TEXT on /v1/chat/completions,
and the stub backend. Every body and chunk the proxy builds itself is validated against the
OpenAI OpenAPI schemas."""

from __future__ import annotations

import json
from types import SimpleNamespace

import openai
import pytest
import requests

from tests.support import fakes
from tests.support.fakes import ndjson_reply
from tests.support.openai_schema import assert_openai_schema
from tests.support.wire_checks import bare, post, sse_ends_with_done, sse_strict, user_texts

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def chat_sse_raw(setup, body: dict) -> list[dict]:
    """POST a streaming chat request; check SSE framing, schema of every chunk, one id and one
    `created` for the whole stream; return the chunks (without [DONE])."""
    r = post(setup.url + "/v1/chat/completions", {"model": setup.model, "stream": True, **body})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/event-stream")
    payloads = sse_strict(r.content)
    sse_ends_with_done(payloads)
    chunks = payloads[:-1]
    for c in chunks:
        assert_openai_schema(c, "CreateChatCompletionStreamResponse")
        assert c["object"] == "chat.completion.chunk"
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    return chunks


def deltas(chunks: list[dict]) -> list[dict]:
    return [ch["delta"] for c in chunks for ch in c["choices"]]


def text_of(chunks: list[dict], key: str = "content") -> str:
    return "".join(d.get(key) or "" for d in deltas(chunks))


def finish_reasons(chunks: list[dict]) -> list[str]:
    return [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]


# =============================================================================================
# /v1/models — both backend types
# =============================================================================================


def test_v1_models_lists_backend_models_in_openai_shape(backend, openai_client):
    r = requests.get(backend.url + "/v1/models", timeout=5)
    assert r.status_code == 200
    assert_openai_schema(r.json(), "ListModelsResponse")
    ids = [m.id for m in openai_client(backend.proxy).models.list()]
    assert backend.model in {bare(i) for i in ids}, ids


def test_v1_model_by_id_is_a_model_object(backend, openai_client):
    ids = [m["id"] for m in requests.get(backend.url + "/v1/models", timeout=5).json()["data"]]
    chat_id = next(i for i in ids if bare(i) == backend.model)
    r = requests.get(f"{backend.url}/v1/models/{chat_id}", timeout=5)
    assert r.status_code == 200
    assert_openai_schema(r.json(), "Model")
    assert r.json()["id"] == chat_id
    assert openai_client(backend.proxy).models.retrieve(chat_id).id == chat_id


def test_v1_model_with_slash_in_its_id_is_found(fake_upstream, make_proxy):
    fake_upstream.serve_openai_models("Qwen/Qwen3-8B", max_model_len=32768)
    proxy = make_proxy(BACKEND_TYPE="openai")
    r = requests.get(proxy.url + "/v1/models/Qwen/Qwen3-8B", timeout=5)
    assert r.status_code == 200 and r.json()["id"] == "Qwen/Qwen3-8B"
    assert_openai_schema(r.json(), "Model")


def test_v1_unknown_model_id_is_404_model_not_found(backend, openai_client):
    r = requests.get(backend.url + "/v1/models/no-such-model", timeout=5)
    assert r.status_code == 404
    assert_openai_schema(r.json(), "ErrorResponse")
    assert r.json()["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        openai_client(backend.proxy).models.retrieve("no-such-model")


def test_v1_models_from_an_ollama_backend_with_no_models_is_an_empty_list(fake_upstream, make_proxy):
    fake_upstream.serve_ollama_models()  # {"models": []}
    proxy = make_proxy(BACKEND_TYPE="ollama")
    body = requests.get(proxy.url + "/v1/models", timeout=5).json()
    assert body["data"] == []  # never null (Ollama's own /v1 trap)
    assert_openai_schema(body, "ListModelsResponse")


# =============================================================================================
# /v1/chat/completions against an Ollama backend (translation)
# =============================================================================================


def test_openai_chat_non_stream_from_ollama_backend_is_a_valid_completion(ollama_backend, openai_client):
    ollama_backend.script_chat(["Hello", " world"], prompt_eval_count=11, eval_count=2)
    r = post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert_openai_schema(body, "CreateChatCompletionResponse")
    choice = body["choices"][0]
    assert choice["message"]["content"] == "Hello world" and choice["finish_reason"] == "stop"
    assert body["usage"] == {**body["usage"], "prompt_tokens": 11, "completion_tokens": 2,
                             "total_tokens": 13}
    resp = openai_client(ollama_backend.proxy).chat.completions.create(
        model=ollama_backend.model, messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "Hello world"


def test_openai_chat_stream_from_ollama_backend_is_valid_sse_ending_with_done(ollama_backend):
    ollama_backend.script_chat(["Hel", "lo"])
    chunks = chat_sse_raw(ollama_backend, {"messages": [{"role": "user", "content": "hi"}]})
    assert deltas(chunks)[0].get("role") == "assistant"
    assert text_of(chunks) == "Hello"
    assert finish_reasons(chunks) == ["stop"]
    assert all(c["choices"] for c in chunks), "usage-only chunk sent although not asked"
    assert "usage" not in chunks[-1] or chunks[-1]["usage"] is None


def test_openai_stream_usage_chunk_only_when_asked(ollama_backend, openai_client):
    ollama_backend.script_chat(["a", "b"], prompt_eval_count=5, eval_count=2)
    chunks = chat_sse_raw(ollama_backend, {"messages": [{"role": "user", "content": "hi"}],
                                           "stream_options": {"include_usage": True}})
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 5 and last["usage"]["completion_tokens"] == 2
    assert last["usage"]["total_tokens"] == 7
    stream = openai_client(ollama_backend.proxy).chat.completions.create(
        model=ollama_backend.model, messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    got = list(stream)
    assert got[-1].usage.completion_tokens == 2


def test_openai_stream_with_sdk_assembles_text(ollama_backend, openai_client):
    ollama_backend.script_chat(["The", " answer"])
    stream = openai_client(ollama_backend.proxy).chat.completions.create(
        model=ollama_backend.model, messages=[{"role": "user", "content": "q"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "The answer"


def test_openai_request_reaches_ollama_backend_translated(ollama_backend):
    ollama_backend.script_chat(["ok"])
    post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "max_tokens": 64, "temperature": 0.3, "top_p": 0.8,
        "seed": 7, "stop": "END", "presence_penalty": 0.5,
        "messages": [{"role": "developer", "content": "be brief"},
                     {"role": "user", "content": "hi"}]})
    up = ollama_backend.upstream_chat()
    assert bare(up["model"]) == "llama3.2"
    assert up["messages"][0] == {"role": "system", "content": "be brief"}
    assert up["messages"][1] == {"role": "user", "content": "hi"}
    opts = up["options"]
    assert opts["num_predict"] == 64 and opts["temperature"] == 0.3 and opts["top_p"] == 0.8
    assert opts["seed"] == 7 and opts["stop"] == ["END"] and opts["presence_penalty"] == 0.5


def test_absent_openai_params_send_no_ollama_options(ollama_backend):
    ollama_backend.script_chat(["ok"])
    post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "messages": [{"role": "user", "content": "hi"}]})
    opts = ollama_backend.upstream_chat().get("options") or {}
    assert "temperature" not in opts and "top_p" not in opts  # not Ollama's /v1 trap


def test_max_completion_tokens_becomes_num_predict(ollama_backend):
    ollama_backend.script_chat(["ok"])
    post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "max_completion_tokens": 99,
        "messages": [{"role": "user", "content": "hi"}]})
    assert ollama_backend.upstream_chat()["options"]["num_predict"] == 99


def test_text_parts_are_joined_into_one_ollama_message(ollama_backend):
    ollama_backend.script_chat(["ok"])
    post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "first"}, {"type": "text", "text": "second"}]}]})
    (user,) = [m for m in ollama_backend.upstream_chat()["messages"] if m["role"] == "user"]
    assert isinstance(user["content"], str)
    assert "first" in user["content"] and "second" in user["content"]


# -- tools --------------------------------------------------------------------------------------


def test_ollama_tool_call_becomes_openai_call_with_string_arguments_and_id(ollama_backend):
    ollama_backend.fake.default("POST", "/api/chat",
                                ndjson_reply("ollama_docs_chat_stream_tool_call.ndjson"))
    chunks = chat_sse_raw(ollama_backend, {"messages": [{"role": "user", "content": "Tokyo?"}],
                                           "tools": TOOLS})
    calls = [tc for d in deltas(chunks) for tc in d.get("tool_calls") or []]
    assert calls, chunks
    first = calls[0]
    assert first["index"] == 0 and first["type"] == "function"
    assert isinstance(first["id"], str) and first["id"]
    assert first["function"]["name"] == "get_weather"
    args = "".join(c["function"].get("arguments") or "" for c in calls if c["index"] == 0)
    assert json.loads(args) == {"city": "Tokyo"}
    assert finish_reasons(chunks) == ["tool_calls"]


def test_ollama_tool_call_with_sdk_stream_gives_parseable_arguments(ollama_backend, openai_client):
    ollama_backend.fake.default("POST", "/api/chat",
                                ndjson_reply("ollama_docs_chat_stream_tool_call.ndjson"))
    stream = openai_client(ollama_backend.proxy).chat.completions.create(
        model=ollama_backend.model, tools=TOOLS, stream=True,
        messages=[{"role": "user", "content": "Weather in Tokyo?"}])
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
                entry["id"] = tc.id or entry["id"]
                if tc.function:
                    entry["name"] = tc.function.name or entry["name"]
                    entry["args"] += tc.function.arguments or ""
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["id"] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["args"]) == {"city": "Tokyo"}


def test_ollama_tool_call_non_stream_becomes_openai_tool_calls(ollama_backend):
    ollama_backend.script_chat([], tool_calls=[
        fakes.ollama_tool_call("get_weather", {"city": "Tokyo"}),
        fakes.ollama_tool_call("get_weather", {"city": "Paris"})])
    r = post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "tools": TOOLS,
        "messages": [{"role": "user", "content": "two cities"}]})
    body = r.json()
    assert_openai_schema(body, "CreateChatCompletionResponse")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Tokyo"},
                                                                      {"city": "Paris"}]
    ids = [c["id"] for c in calls]
    assert all(ids) and len(set(ids)) == 2


def test_ollama_tool_call_id_is_kept_when_the_backend_gives_one(ollama_backend):
    ollama_backend.script_chat([], tool_calls=[
        fakes.ollama_tool_call("get_weather", {"city": "Oslo"}, id="call_ab12cd34", index=0)])
    body = post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "tools": TOOLS,
        "messages": [{"role": "user", "content": "Oslo"}]}).json()
    assert body["choices"][0]["message"]["tool_calls"][0]["id"] == "call_ab12cd34"


def test_openai_tool_history_becomes_object_arguments_and_tool_names(ollama_backend):
    request = fakes.load_json("openai_chat_stream_after_tool_result.request.json")
    ollama_backend.script_chat(["The capital of the UK is London."])
    post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "messages": request["messages"], "tools": request["tools"]})
    msgs = ollama_backend.upstream_chat()["messages"]
    assistant = next(m for m in msgs if m["role"] == "assistant")
    (call,) = assistant["tool_calls"]
    assert call["function"]["name"] == "get_capital"
    assert call["function"]["arguments"] == {"country": "UK"}
    assert isinstance(assistant.get("content", ""), str)  # null -> "" for Ollama
    tool = next(m for m in msgs if m["role"] == "tool")
    assert tool["tool_name"] == "get_capital" and tool["content"] == "London"


def test_tool_choice_none_drops_tools_for_ollama(ollama_backend):
    ollama_backend.script_chat(["ok"])
    post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "tools": TOOLS, "tool_choice": "none",
        "messages": [{"role": "user", "content": "hi"}]})
    assert not ollama_backend.upstream_chat().get("tools")


# -- images, response_format, thinking ------------------------------------------------------------


def test_image_url_data_uri_becomes_bare_base64_image(ollama_backend):
    ollama_backend.script_chat(["a dot"])
    post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{fakes.PNG_1PX}"}}]}]})
    (user,) = [m for m in ollama_backend.upstream_chat()["messages"] if m["role"] == "user"]
    assert user["images"] == [fakes.PNG_1PX]
    assert user["content"] == "What is this?"


def test_response_format_json_object_becomes_format_json(ollama_backend):
    ollama_backend.script_chat(['{"a":1}'])
    post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content": "json please"}]})
    assert ollama_backend.upstream_chat()["format"] == "json"


def test_response_format_json_schema_becomes_format_schema(ollama_backend, openai_client):
    request = fakes.load_json("ollama_v1_chat_completions_json_schema.request.json")
    ollama_backend.script_chat(['{"city": "Paris", "country": "France"}'])
    resp = openai_client(ollama_backend.proxy).chat.completions.create(
        model=ollama_backend.model, messages=request["messages"],
        response_format=request["response_format"])
    assert json.loads(resp.choices[0].message.content) == {"city": "Paris", "country": "France"}
    assert ollama_backend.upstream_chat()["format"] == request["response_format"]["json_schema"]["schema"]


def test_ollama_thinking_becomes_reasoning_content_in_stream(ollama_backend):
    ollama_backend.script_chat(["Paris."], thinking=["The capital", " is Paris."])
    chunks = chat_sse_raw(ollama_backend, {"messages": [{"role": "user", "content": "Capital?"}]})
    assert text_of(chunks, "reasoning_content") == "The capital is Paris."
    assert text_of(chunks) == "Paris."


def test_ollama_thinking_becomes_reasoning_content_non_stream(ollama_backend):
    ollama_backend.script_chat(["Paris."], thinking=["Hmm."])
    body = post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "messages": [{"role": "user", "content": "Capital?"}]}).json()
    assert_openai_schema(body, "CreateChatCompletionResponse")
    assert body["choices"][0]["message"]["reasoning_content"] == "Hmm."
    assert body["choices"][0]["message"]["content"] == "Paris."


def test_length_done_reason_becomes_finish_reason_length(ollama_backend):
    ollama_backend.script_chat(["cut"], done_reason="length")
    chunks = chat_sse_raw(ollama_backend, {"messages": [{"role": "user", "content": "hi"}]})
    assert finish_reasons(chunks) == ["length"]


# -- /v1/completions --------------------------------------------------------------------------------


def test_v1_completions_from_ollama_backend_non_stream(ollama_backend, openai_client):
    ollama_backend.fake.default("POST", "/api/generate", fakes.ollama_generate_responder(["4", "2"]))
    r = post(ollama_backend.url + "/v1/completions", {"model": ollama_backend.model,
                                                      "prompt": "6*7=", "max_tokens": 5})
    assert r.status_code == 200
    body = r.json()
    assert_openai_schema(body, "CreateCompletionResponse")
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "42"
    up = ollama_backend.fake.last("/api/generate").json
    assert up["prompt"] == "6*7=" and up["options"]["num_predict"] == 5
    resp = openai_client(ollama_backend.proxy).completions.create(model=ollama_backend.model,
                                                                 prompt="6*7=")
    assert resp.choices[0].text == "42"


def test_v1_completions_from_ollama_backend_stream(ollama_backend):
    ollama_backend.fake.default("POST", "/api/generate", fakes.ollama_generate_responder(["4", "2"]))
    r = post(ollama_backend.url + "/v1/completions", {"model": ollama_backend.model,
                                                      "prompt": "6*7=", "stream": True})
    payloads = sse_strict(r.content)
    sse_ends_with_done(payloads)
    for p in payloads[:-1]:
        assert_openai_schema(p, "CreateCompletionStreamResponse")
    assert "".join(c["text"] for p in payloads[:-1] for c in p["choices"]) == "42"


# -- /v1/embeddings ---------------------------------------------------------------------------------


def test_v1_embeddings_float_from_ollama_backend(ollama_backend):
    ollama_backend.fake.default("POST", "/api/embed", fakes.json_reply(
        fakes.ollama_embed([[0.5, -0.25], [0.125, 1.0]], prompt_eval_count=4)))
    r = post(ollama_backend.url + "/v1/embeddings", {"model": ollama_backend.embed_model,
                                                     "input": ["a", "b"], "encoding_format": "float"})
    body = r.json()
    assert_openai_schema(body, "CreateEmbeddingResponse")
    assert [d["embedding"] for d in body["data"]] == [[0.5, -0.25], [0.125, 1.0]]
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"]["prompt_tokens"] == 4
    assert ollama_backend.fake.last("/api/embed").json["input"] == ["a", "b"]


def test_v1_embeddings_sdk_default_base64_from_ollama_backend(ollama_backend, openai_client):
    vec = [0.5, -0.25, 0.125]
    ollama_backend.fake.default("POST", "/api/embed", fakes.json_reply(fakes.ollama_embed([vec])))
    resp = openai_client(ollama_backend.proxy).embeddings.create(
        model=ollama_backend.embed_model, input="hello")  # SDK sends encoding_format=base64
    assert resp.data[0].embedding == vec
    raw = post(ollama_backend.url + "/v1/embeddings", {"model": ollama_backend.embed_model,
                                                       "input": "hello", "encoding_format": "base64"})
    emb = raw.json()["data"][0]["embedding"]
    assert (fakes.unpack_floats(emb) if isinstance(emb, str) else emb) == vec


def test_v1_embeddings_rejects_token_arrays_for_ollama_backend(ollama_backend):
    r = post(ollama_backend.url + "/v1/embeddings", {"model": ollama_backend.embed_model,
                                                     "input": [[1, 2, 3]]})
    assert 400 <= r.status_code < 500
    assert_openai_schema(r.json(), "ErrorResponse")
    assert not ollama_backend.fake.calls("/api/embed")


# =============================================================================================
# MODEL_MAP and INJECT_TEXT on the OpenAI front
# =============================================================================================


def test_model_map_alias_is_listed_in_v1_models_and_routed_to_the_backend_name(backend_setup, openai_client):
    setup = backend_setup("ollama", MODEL_MAP="gpt-4o=llama3.2:latest")
    setup.script_chat(["ok"])
    ids = [m.id for m in openai_client(setup.proxy).models.list()]
    assert "gpt-4o" in {bare(i) for i in ids}, ids
    resp = openai_client(setup.proxy).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert bare(setup.upstream_chat()["model"]) == "llama3.2"
    assert resp.model == "gpt-4o"  # the name the client used
    assert requests.get(setup.url + "/v1/models/gpt-4o", timeout=5).status_code == 200


def test_model_map_glob_routes_any_matching_name(backend_setup):
    setup = backend_setup("openai", MODEL_MAP="gpt-*=qwen3-8b")
    setup.script_chat(["ok"])
    r = post(setup.url + "/v1/chat/completions", {"model": "gpt-4.1-mini",
                                                  "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert setup.upstream_chat()["model"] == "qwen3-8b"


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_inject_text_goes_once_into_the_last_user_message_on_v1(backend_setup, kind):
    setup = backend_setup(kind, INJECT_TEXT="[policy]")
    setup.script_chat(["ok"])
    post(setup.url + "/v1/chat/completions", {"model": setup.model, "messages": [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "r"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]}]})
    up = setup.upstream_chat()
    texts = user_texts(up["messages"])
    assert "[policy]" not in texts[0] and "two" in texts[-1] and "[policy]" in texts[-1]
    assert json.dumps(up).count("[policy]") == 1


def test_inject_text_first_mode_on_v1(backend_setup):
    setup = backend_setup("openai", INJECT_TEXT="[policy]", INJECT_MODE="first")
    setup.script_chat(["ok"])
    post(setup.url + "/v1/chat/completions", {"model": setup.model, "messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": "one"},
        {"role": "user", "content": "two"}]})
    up = setup.upstream_chat()
    texts = user_texts(up["messages"])
    assert "[policy]" in texts[0] and "one" in texts[0] and "[policy]" not in texts[1]
    assert json.dumps(up).count("[policy]") == 1


# =============================================================================================
# stub backend through the OpenAI front
# =============================================================================================


@pytest.fixture
def stub(make_proxy):
    proxy = make_proxy(BACKEND_TYPE="stub")
    listing = requests.get(proxy.url + "/v1/models", timeout=5).json()
    assert_openai_schema(listing, "ListModelsResponse")
    ids = [m["id"] for m in listing["data"]]
    chat = [i for i in ids if "embed" not in i]
    assert chat, ids
    return proxy, chat[0], ids


def test_stub_chat_stream_is_schema_valid_word_by_word_echo_with_usage(stub):
    proxy, model, _ = stub
    target = SimpleNamespace(url=proxy.url, model=model)
    body = {"messages": [{"role": "user", "content": "alpha beta gamma"}],
            "stream_options": {"include_usage": True}}
    chunks = chat_sse_raw(target, body)
    again = chat_sse_raw(target, body)
    assert "alpha beta gamma" in text_of(chunks) and text_of(chunks) == text_of(again)
    assert sum(1 for d in deltas(chunks) if d.get("content")) >= 3
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] > 0
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_stub_chat_non_stream_is_schema_valid(stub, openai_client):
    proxy, model, _ = stub
    r = post(proxy.url + "/v1/chat/completions", {"model": model,
                                                  "messages": [{"role": "user", "content": "x y"}]})
    assert_openai_schema(r.json(), "CreateChatCompletionResponse")
    resp = openai_client(proxy).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x y"}])
    assert "x y" in resp.choices[0].message.content and resp.usage.total_tokens > 0


def test_stub_calls_a_tool_when_offered_and_asked(stub, openai_client):
    proxy, model, _ = stub
    resp = openai_client(proxy).chat.completions.create(
        model=model, tools=TOOLS, tool_choice="required",
        messages=[{"role": "user", "content": "use get_weather for Oslo"}])
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)


def test_stub_embeddings_base64_and_float_agree(stub, openai_client):
    proxy, _, ids = stub
    embed_model = next(i for i in ids if "embed" in i)
    via_sdk = openai_client(proxy).embeddings.create(model=embed_model, input=["a", "b"])
    floats = post(proxy.url + "/v1/embeddings", {"model": embed_model, "input": ["a", "b"],
                                                 "encoding_format": "float"}).json()
    assert_openai_schema(floats, "CreateEmbeddingResponse")
    for got, want in zip(via_sdk.data, floats["data"], strict=False):
        assert got.embedding == pytest.approx(want["embedding"], rel=1e-6)


def test_inject_text_already_in_a_text_part_is_not_added_again(backend_setup):
    setup = backend_setup("openai", INJECT_TEXT="/nothink")
    setup.script_chat(["ok"])
    post(setup.url + "/v1/chat/completions", {"model": setup.model, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi /nothink"}]}]})
    assert json.dumps(setup.upstream_chat()).count("/nothink") == 1


def test_n_greater_than_one_for_ollama_backend_is_refused_or_honoured(ollama_backend):
    ollama_backend.script_chat(["one answer"])
    r = post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "n": 2, "messages": [{"role": "user", "content": "hi"}]})
    if r.status_code == 200:
        body = r.json()
        assert_openai_schema(body, "CreateChatCompletionResponse")
        assert [c["index"] for c in body["choices"]] == [0, 1]
    else:
        assert r.status_code == 400, r.text
        assert_openai_schema(r.json(), "ErrorResponse")


def test_tool_results_map_to_the_names_of_their_own_calls(ollama_backend):
    ollama_backend.script_chat(["done"])
    post(ollama_backend.url + "/v1/chat/completions", {"model": ollama_backend.model, "tools": TOOLS,
                                                       "messages": [
        {"role": "user", "content": "weather and time"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_w", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "call_t", "type": "function",
             "function": {"name": "get_time", "arguments": '{"tz":"CET"}'}}]},
        {"role": "tool", "tool_call_id": "call_t", "content": "12:00"},
        {"role": "tool", "tool_call_id": "call_w", "content": "cold"}]})
    msgs = ollama_backend.upstream_chat()["messages"]
    assert [c["function"]["arguments"] for c in msgs[1]["tool_calls"]] == [{"city": "Oslo"},
                                                                           {"tz": "CET"}]
    tools = [(m["tool_name"], m["content"]) for m in msgs if m["role"] == "tool"]
    assert tools == [("get_time", "12:00"), ("get_weather", "cold")]


def test_remote_image_url_is_never_sent_to_ollama_as_an_image(ollama_backend):
    from tests.support import free_port

    ollama_backend.script_chat(["a cat"])
    url = f"http://127.0.0.1:{free_port()}/cat.png"  # nothing there; no internet either
    r = post(ollama_backend.url + "/v1/chat/completions", {
        "model": ollama_backend.model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}}]}]})
    if r.status_code == 200:  # fetched: then it must arrive as bare base64
        (user,) = [m for m in ollama_backend.upstream_chat()["messages"] if m["role"] == "user"]
        assert all(not i.startswith(("http", "data:")) for i in user.get("images", []))
    else:
        assert 400 <= r.status_code < 600 and r.status_code != 500, r.status_code
        assert_openai_schema(r.json(), "ErrorResponse")
        assert not ollama_backend.chat_calls()


def test_stub_text_completions_are_schema_valid(stub, openai_client):
    proxy, model, _ = stub
    whole = post(proxy.url + "/v1/completions", {"model": model, "prompt": "one two three"})
    assert whole.status_code == 200, whole.text
    assert_openai_schema(whole.json(), "CreateCompletionResponse")
    r = post(proxy.url + "/v1/completions", {"model": model, "prompt": "one two", "stream": True})
    payloads = sse_strict(r.content)
    sse_ends_with_done(payloads)
    for p in payloads[:-1]:
        assert_openai_schema(p, "CreateCompletionStreamResponse")
    assert openai_client(proxy).completions.create(model=model, prompt="a b").choices[0].text


def test_stub_errors_are_openai_shaped(stub):
    proxy, model, _ = stub
    unknown = post(proxy.url + "/v1/chat/completions", {
        "model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
    assert unknown.status_code == 404
    assert_openai_schema(unknown.json(), "ErrorResponse")
    bad = post(proxy.url + "/v1/chat/completions", raw=b"{nope")
    assert bad.status_code == 400
    assert_openai_schema(bad.json(), "ErrorResponse")
