"""Same-dialect paths over real sockets: OpenAI client -> OpenAI-type backend and Ollama client
-> Ollama backend. What the upstream sends reaches the client unchanged (unknown fields
included), what the client sends reaches the upstream unchanged, except the documented
rewrites: model name, the usage chunk the proxy asked for on its own, BACKEND_API_KEY."""

from __future__ import annotations

import json

import pytest
import requests

from tests.support import OPENAI_MODELS, fakes
from tests.support.fakes import json_reply, ndjson_reply, sse_reply
from tests.support.openai_schema import assert_openai_schema
from tests.support.wire_checks import bare, ndjson_strict, post, sse_ends_with_done, sse_strict


def without_model(objs: list) -> list:
    """Compare streams modulo the `model` field (the proxy may echo the client's name)."""
    return [{k: v for k, v in o.items() if k != "model"} if isinstance(o, dict) else o
            for o in objs]


# =============================================================================================
# OpenAI client -> OpenAI-type backend
# =============================================================================================


def test_openai_stream_passthrough_keeps_every_chunk_when_usage_was_asked(openai_backend):
    name = "openai_chat_stream_tool_call.sse"
    openai_backend.fake.default("POST", "/v1/chat/completions", sse_reply(name))
    request = fakes.load_json("openai_chat_stream_tool_call.request.json")
    r = post(openai_backend.url + "/v1/chat/completions", {**request, "model": openai_backend.model})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    got = sse_strict(r.content)
    assert without_model(got) == without_model(fakes.sse_payloads(name))


def test_openai_stream_passthrough_strips_the_usage_chunk_the_client_did_not_ask_for(openai_backend):
    name = "openai_chat_stream_after_tool_result.sse"
    openai_backend.fake.default("POST", "/v1/chat/completions", sse_reply(name))
    request = fakes.load_json("openai_chat_stream_after_tool_result.request.json")
    request.pop("stream_options")
    r = post(openai_backend.url + "/v1/chat/completions", {**request, "model": openai_backend.model})
    got = sse_strict(r.content)
    sse_ends_with_done(got)
    want = [p for p in fakes.sse_payloads(name) if p == "[DONE]" or p["choices"]]
    assert without_model(got) == without_model(want)
    up = openai_backend.upstream_chat()
    assert up["stream_options"]["include_usage"] is True  # the proxy asked for its own log


def test_openai_passthrough_request_body_reaches_upstream_unchanged(openai_backend):
    openai_backend.script_chat(["ok"])
    request = fakes.load_json("openai_chat_stream_after_tool_result.request.json")
    extra = {"top_k": 20, "min_p": 0.05, "chat_template_kwargs": {"enable_thinking": False},
             "reasoning_format": "deepseek", "cache_prompt": True, "n_probs": 0}
    body = {**request, "model": openai_backend.model, "stream": False, **extra}
    body.pop("stream_options")
    post(openai_backend.url + "/v1/chat/completions", body)
    up = openai_backend.upstream_chat()
    for key in ("messages", "tools", "tool_choice", *extra):
        assert up[key] == body[key], key
    assert up["model"] == OPENAI_MODELS[0]


def test_openai_passthrough_non_stream_keeps_unknown_response_fields(openai_backend, openai_client):
    body = fakes.openai_completion("Hi", reasoning_content="thought")
    body["timings"] = {"prompt_n": 3, "prompt_ms": 1.5, "predicted_n": 1, "predicted_ms": 2.0}
    body["choices"][0]["message"]["x_vendor"] = {"kept": True}
    openai_backend.fake.default("POST", "/v1/chat/completions", json_reply(body))
    r = post(openai_backend.url + "/v1/chat/completions", {
        "model": openai_backend.model, "messages": [{"role": "user", "content": "hi"}]})
    got = r.json()
    assert got["timings"] == body["timings"]
    assert got["choices"][0]["message"]["reasoning_content"] == "thought"
    assert got["choices"][0]["message"]["x_vendor"] == {"kept": True}
    resp = openai_client(openai_backend.proxy).chat.completions.create(
        model=openai_backend.model, messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "Hi"


def test_ollama_v1_json_schema_response_passes_through(openai_backend, openai_client):
    request = fakes.load_json("ollama_v1_chat_completions_json_schema.request.json")
    fixture = fakes.load_json("ollama_v1_chat_completions_json_schema.response.json")
    openai_backend.fake.default("POST", "/v1/chat/completions", json_reply(fixture))
    resp = openai_client(openai_backend.proxy).chat.completions.create(
        model=openai_backend.model, messages=request["messages"],
        response_format=request["response_format"])
    assert json.loads(resp.choices[0].message.content) == {"city": "Paris", "country": "France"}
    up = openai_backend.upstream_chat()
    assert up["response_format"] == request["response_format"]


def test_openai_passthrough_completions(openai_backend, openai_client):
    openai_backend.fake.default("POST", "/v1/completions",
                                fakes.openai_text_completion_responder(["def", " f():"]))
    resp = openai_client(openai_backend.proxy).completions.create(
        model=openai_backend.model, prompt="# python\n", max_tokens=8, suffix="\n", stop=["\n\n"])
    assert resp.choices[0].text == "def f():"
    up = openai_backend.fake.last("/v1/completions").json
    assert up["prompt"] == "# python\n" and up["suffix"] == "\n" and up["max_tokens"] == 8
    r = post(openai_backend.url + "/v1/completions", {"model": openai_backend.model,
                                                      "prompt": "x", "stream": True})
    payloads = sse_strict(r.content)
    sse_ends_with_done(payloads)
    assert "".join(c["text"] for p in payloads[:-1] for c in p["choices"]) == "def f():"
    assert all(p["choices"] for p in payloads[:-1]), "usage chunk the client did not ask for"


def test_openai_passthrough_embeddings_base64_as_the_sdk_asks(openai_backend, openai_client):
    vecs = [[0.5, -0.25, 0.125]]
    openai_backend.fake.default("POST", "/v1/embeddings", fakes.openai_embeddings_responder(vecs))
    resp = openai_client(openai_backend.proxy).embeddings.create(
        model=openai_backend.embed_model, input="hello")
    assert resp.data[0].embedding == vecs[0]
    assert openai_backend.fake.last("/v1/embeddings").json["encoding_format"] == "base64"
    floats = post(openai_backend.url + "/v1/embeddings", {
        "model": openai_backend.embed_model, "input": "hello", "encoding_format": "float"}).json()
    assert_openai_schema(floats, "CreateEmbeddingResponse")
    assert floats["data"][0]["embedding"] == vecs[0]


def test_v1_models_from_vllm_keeps_its_context_length(fake_upstream, make_proxy):
    fake_upstream.serve_openai_models("Qwen/Qwen3-8B", max_model_len=32768)
    proxy = make_proxy(BACKEND_TYPE="openai")
    body = requests.get(proxy.url + "/v1/models", timeout=5).json()
    assert_openai_schema(body, "ListModelsResponse")
    (entry,) = [m for m in body["data"] if m["id"] == "Qwen/Qwen3-8B"]
    # passed through as max_model_len, or restated as the non-standard context_length
    assert entry.get("max_model_len") == 32768 or entry.get("context_length") == 32768, entry


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_backend_api_key_is_sent_upstream_as_bearer(backend_setup, kind, openai_client):
    setup = backend_setup(kind, BACKEND_API_KEY="sekrit-key")
    setup.script_chat(["ok"])
    openai_client(setup.proxy).chat.completions.create(
        model=setup.model, messages=[{"role": "user", "content": "hi"}])
    assert setup.fake.last(setup.chat_path).header("authorization") == "Bearer sekrit-key"
    for req in setup.fake.requests:
        assert req.header("authorization") == "Bearer sekrit-key", (req.method, req.path)


# =============================================================================================
# Ollama client -> Ollama backend
# =============================================================================================


def test_ollama_chat_stream_passthrough_keeps_every_line(ollama_backend, ollama_client):
    name = "ollama_docs_chat_stream_tool_call.ndjson"
    ollama_backend.fake.default("POST", "/api/chat", ndjson_reply(name))
    r = post(ollama_backend.url + "/api/chat", {"model": ollama_backend.model, "messages": [
        {"role": "user", "content": "Weather in Tokyo?"}], "tools": [{"type": "function", "function": {
            "name": "get_weather", "parameters": {"type": "object"}}}]})
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    assert without_model(ndjson_strict(r.content)) == without_model(fakes.ndjson_objects(name))
    parts = list(ollama_client(ollama_backend.proxy).chat(
        model=ollama_backend.model, stream=True, messages=[{"role": "user", "content": "w"}]))
    (call,) = [c for p in parts for c in (p.message.tool_calls or [])]
    assert dict(call.function.arguments) == {"city": "Tokyo"}


def test_ollama_generate_stream_passthrough_keeps_thinking_and_partial_metrics(ollama_backend):
    name = "ollama-cloud_generate_stream_thinking_gpt-oss-20b.ndjson"
    ollama_backend.fake.default("POST", "/api/generate", ndjson_reply(name))
    r = post(ollama_backend.url + "/api/generate", {"model": ollama_backend.model,
                                                    "prompt": "Describe a rabbit in 3 words",
                                                    "think": True})
    assert without_model(ndjson_strict(r.content)) == without_model(fakes.ndjson_objects(name))


def test_ollama_passthrough_request_keeps_options_keep_alive_think_and_format(ollama_backend):
    ollama_backend.script_chat(["ok"])
    body = {"model": ollama_backend.model, "stream": False, "keep_alive": "30m", "think": True,
            "format": {"type": "object", "properties": {"a": {"type": "integer"}}},
            "options": {"num_ctx": 8192, "temperature": 0.1, "num_predict": 64, "top_k": 20},
            "messages": [{"role": "user", "content": "hi", "images": [fakes.PNG_1PX]}]}
    post(ollama_backend.url + "/api/chat", body)
    up = ollama_backend.upstream_chat()
    for key in ("keep_alive", "think", "format", "options", "messages", "stream"):
        assert up[key] == body[key], key
    assert bare(up["model"]) == "llama3.2"


def test_ollama_non_stream_chat_passthrough(ollama_backend, ollama_client):
    ollama_backend.script_chat(["Hello", " there"], thinking=["hm"], prompt_eval_count=3)
    resp = ollama_client(ollama_backend.proxy).chat(
        model=ollama_backend.model + ":latest", messages=[{"role": "user", "content": "hi"}])
    assert resp.message.content == "Hello there" and resp.message.thinking == "hm"
    assert resp.prompt_eval_count == 3
    assert bare(ollama_backend.upstream_chat()["model"]) == "llama3.2"


def test_ollama_tags_passthrough_keeps_upstream_entries(fake_upstream, make_proxy, ollama_client):
    fixture = fakes.load_json("ollama_docs_api_tags.json")
    fake_upstream.serve_ollama_models()
    fake_upstream.default("GET", "/api/tags", json_reply(fixture))
    proxy = make_proxy(BACKEND_TYPE="ollama")
    got = {m["model"]: m for m in requests.get(proxy.url + "/api/tags", timeout=5).json()["models"]}
    for entry in fixture["models"]:
        assert got[entry["model"]]["digest"] == entry["digest"]
        assert got[entry["model"]]["size"] == entry["size"]
        assert got[entry["model"]]["details"] == entry["details"]
    assert {m.model for m in ollama_client(proxy).list().models} >= {"deepseek-r1:latest",
                                                                     "llama3.2:latest"}


def test_ollama_show_passthrough_keeps_model_info(fake_upstream, make_proxy):
    fixture = fakes.load_json("ollama-cloud_api_show_gpt-oss-120b.json")
    fake_upstream.serve_ollama_models("gpt-oss:120b")
    fake_upstream.default("POST", "/api/show", json_reply(fixture))
    proxy = make_proxy(BACKEND_TYPE="ollama")
    r = post(proxy.url + "/api/show", {"name": "gpt-oss:120b"})
    assert r.status_code == 200
    show = r.json()
    assert show["model_info"]["gptoss.context_length"] == 131072
    assert show["capabilities"] == ["completion", "tools", "thinking"]
    up = fake_upstream.last("/api/show").json
    assert up.get("model", up.get("name")) == "gpt-oss:120b"


def test_ollama_ps_lists_the_loaded_backend_model(fake_upstream, make_proxy, ollama_client):
    # passing /api/ps through or synthesising entries are both acceptable (api-surface 1.7)
    fixture = fakes.load_json("ollama_docs_api_ps.json")
    fake_upstream.serve_ollama_models("mistral:latest")
    fake_upstream.default("GET", "/api/ps", json_reply(fixture))
    proxy = make_proxy(BACKEND_TYPE="ollama")
    (entry,) = ollama_client(proxy).ps().models
    assert entry.name == "mistral:latest" and entry.expires_at is not None


def test_ollama_embed_passthrough(ollama_backend, ollama_client):
    ollama_backend.fake.default("POST", "/api/embed", json_reply(
        fakes.ollama_embed([[0.1, 0.2], [0.3, 0.4]], prompt_eval_count=6)))
    resp = ollama_client(ollama_backend.proxy).embed(model=ollama_backend.embed_model,
                                                     input=["a", "b"], dimensions=2)
    assert [list(v) for v in resp.embeddings] == [[0.1, 0.2], [0.3, 0.4]]
    assert resp.prompt_eval_count == 6
    up = ollama_backend.fake.last("/api/embed").json
    assert up["input"] == ["a", "b"] and up["dimensions"] == 2


def test_ollama_legacy_embeddings_on_ollama_backend(ollama_backend, ollama_client):
    ollama_backend.fake.default("POST", "/api/embeddings", json_reply({"embedding": [0.5, 0.25]}))
    ollama_backend.fake.default("POST", "/api/embed", json_reply(fakes.ollama_embed([[0.5, 0.25]])))
    resp = ollama_client(ollama_backend.proxy).embeddings(model=ollama_backend.embed_model,
                                                          prompt="hello")
    assert list(resp.embedding) == [0.5, 0.25]
