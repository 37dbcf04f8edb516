"""Bad input at both front doors over real sockets: every malformed request is a 400 (or 413) in the caller's
dialect, is recorded in the log, and sends nothing upstream; integers written as floats are valid and reach
the backend as integers (issue 10, item 14)."""
from __future__ import annotations

import json

import pytest

from tests.support import fakes
from tests.support.store import store_of, wait_rows
from tests.support.wire_checks import post

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def assert_refused_in_dialect(r, dialect: str, words: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text[:300])
    body = r.json()
    if dialect == "openai":
        assert body["error"]["type"] == "invalid_request_error" and words in body["error"]["message"], body
    else:
        assert list(body) == ["error"] and words in body["error"], body


def assert_recorded(proxy, endpoint: str, count: int) -> None:
    rows = wait_rows(store_of(proxy), count, endpoint=endpoint, status="400")
    assert all(row["outcome"] == "client_error" for row in rows)


@pytest.mark.parametrize("depth", [255, 300, 1024, 1100])
def test_json_nested_too_deep_is_a_400_in_the_dialect_and_recorded(backend_setup, depth):
    setup = backend_setup("openai")
    deep = nested(depth)
    r = post(setup.url + "/v1/chat/completions",
             raw=b'{"model":"qwen3-8b","messages":[{"role":"user","content":"hi"}],"x":' + deep + b"}")
    assert_refused_in_dialect(r, "openai", "deep" if depth < 1000 else "depth limit")
    r = post(setup.url + "/api/chat", raw=b'{"model":"qwen3-8b","messages":[],"format":{"x":' + deep + b"}}")
    assert_refused_in_dialect(r, "ollama", "deep" if depth < 1000 else "depth limit")
    assert_recorded(setup.proxy, "/v1/chat/completions", 1)
    assert_recorded(setup.proxy, "/api/chat", 1)
    assert not setup.fake.calls("/v1/chat/completions")


def test_json_nested_up_to_the_limit_goes_through(openai_backend):
    openai_backend.script_chat()
    schema: dict = {"type": "string"}
    for _ in range(60):  # a deep JSON schema, and the Ollama translation wraps it in two more objects
        schema = {"type": "object", "properties": {"a": schema}}
    r = post(openai_backend.url + "/api/chat", {"model": openai_backend.model, "stream": False, "format": schema,
                                                 **CHAT})
    assert r.status_code == 200, r.text
    assert openai_backend.upstream_chat()["response_format"]["json_schema"]["schema"] == schema


@pytest.mark.parametrize("path, extra", [
    ("/v1/completions", {"prompt": "hi", "stream": True, "stream_options": 1}),
    ("/v1/completions", {"prompt": "hi", "stream_options": {"include_usage": "yes"}}),
    ("/v1/completions", {"prompt": [1.5]}),
    ("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": []}),
    ("/v1/chat/completions", {**CHAT, "response_format": {"type": "json_schema", "json_schema": 5}}),
    ("/v1/chat/completions", {**CHAT, "tool_choice": {"type": "function", "function": 5}}),
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function", "function": 5}]}),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 16.5}),
    ("/v1/chat/completions", {**CHAT, "n": 1e20}),
    ("/v1/chat/completions", {**CHAT, "seed": 2 ** 64}),
    ("/v1/chat/completions", {"messages": [{"role": "assistant", "tool_calls": [{"function": 5}]}]}),
    ("/v1/chat/completions", {"messages": [{"role": "assistant", "tool_calls": [5]}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}),
    ("/v1/chat/completions", {"messages": [{"role": "tool", "tool_call_id": 7, "content": "x"}]}),
])
@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_malformed_openai_fields_are_a_400_naming_the_field_before_anything_goes_upstream(backend_setup, kind,
                                                                                          path, extra):
    setup = backend_setup(kind)
    setup.script_chat()
    r = post(setup.url + path, {"model": setup.model, **extra})
    assert_refused_in_dialect(r, "openai", "must be")
    assert r.json()["error"]["param"] in extra
    assert_recorded(setup.proxy, path, 1)
    assert not [c for c in setup.fake.requests if c.method == "POST"]


@pytest.mark.parametrize("extra", [
    {"options": {"num_predict": "16"}}, {"options": {"stop": [1]}}, {"options": {"num_ctx": 1e30}},
    {"tools": [{"type": "function", "function": 5}]}, {"keep_alive": [5]}, {"top_logprobs": 2.5},
    {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": 5}}]}]},
    {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": [1]}}]}]},
])
@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_malformed_ollama_fields_are_a_400_before_anything_goes_upstream(backend_setup, kind, extra):
    setup = backend_setup(kind)
    setup.script_chat()
    r = post(setup.url + "/api/chat", {"model": setup.model, **CHAT, **extra})
    assert_refused_in_dialect(r, "ollama", "must be")
    assert_recorded(setup.proxy, "/api/chat", 1)
    assert not [c for c in setup.fake.requests if c.method == "POST"]


def test_integers_written_as_floats_reach_an_openai_backend_as_integers(openai_backend):
    openai_backend.script_chat()
    r = post(openai_backend.url + "/v1/chat/completions",
             raw=b'{"model":"qwen3-8b","messages":[{"role":"user","content":"hi"}],"max_tokens":16.0,"n":1.0,'
                 b'"seed":42.0,"top_logprobs":2.0,"logprobs":true}')
    assert r.status_code == 200, r.text
    sent = openai_backend.fake.last("/v1/chat/completions").body
    assert b'"max_tokens":16,' in sent and b'"n":1,' in sent and b'"seed":42,' in sent and b"16.0" not in sent
    r = post(openai_backend.url + "/api/chat", raw=b'{"model":"qwen3-8b","stream":false,"messages":'
                                                   b'[{"role":"user","content":"hi"}],"options":{"num_predict":8.0,'
                                                   b'"seed":7.0,"temperature":0.5}}')
    assert r.status_code == 200, r.text
    up = openai_backend.upstream_chat()
    assert type(up["max_tokens"]) is int and up["max_tokens"] == 8 and type(up["seed"]) is int


def test_integers_written_as_floats_reach_an_ollama_backend_as_integers(ollama_backend):
    ollama_backend.script_chat()
    r = post(ollama_backend.url + "/v1/chat/completions",
             raw=b'{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"max_tokens":16.0,"seed":3.0}')
    assert r.status_code == 200, r.text
    options = ollama_backend.upstream_chat()["options"]
    assert options["num_predict"] == 16 and type(options["num_predict"]) is int and type(options["seed"]) is int


@pytest.mark.parametrize("dimensions", ["3", [1], 0, -1, 3_000_000, 2.5, True])
def test_embedding_dimensions_must_be_a_positive_integer_within_bounds(openai_backend, dimensions):
    r = post(openai_backend.url + "/v1/embeddings", {"model": "text-embed-3", "input": "hi",
                                                      "dimensions": dimensions})
    assert_refused_in_dialect(r, "openai", "'dimensions' must be")
    assert_recorded(openai_backend.proxy, "/v1/embeddings", 1)
    assert not openai_backend.fake.calls("/v1/embeddings")


def test_embedding_dimensions_written_as_a_float_go_upstream_as_an_integer(openai_backend):
    openai_backend.fake.default("POST", "/v1/embeddings", fakes.openai_embeddings_responder([[0.5, 0.5]]))
    r = post(openai_backend.url + "/v1/embeddings", raw=b'{"model":"text-embed-3","input":"hi","dimensions":2.0}')
    assert r.status_code == 200, r.text
    assert b'"dimensions":2}' in openai_backend.fake.last("/v1/embeddings").body


@pytest.mark.parametrize("dimensions, status", [(2.0, 200), (16, 200), (17, 400), (3_000_000, 400), ("3", 400)])
def test_the_stub_answers_dimensions_as_openai_does_and_never_builds_huge_bodies(make_proxy, dimensions, status):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0")
    r = post(proxy.url + "/v1/embeddings", {"model": "stub-embed", "input": ["a", "b"], "dimensions": dimensions})
    assert r.status_code == status, r.text
    if status == 200:
        assert [len(item["embedding"]) for item in r.json()["data"]] == [int(dimensions)] * 2
    else:
        assert "'dimensions' must be an integer" in r.json()["error"]["message"] and len(r.content) < 500


@pytest.mark.parametrize("path, body", [
    ("/api/pull", {"model": 5}), ("/api/pull", {"model": ["x"], "stream": False}), ("/api/create", {"model": {}}),
    ("/api/create", {"model": "m", "from": 5}), ("/api/push", {"name": 1.5}), ("/api/copy", {"source": "a"}),
    ("/api/copy", {"source": 1, "destination": "b"}),
])
@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_model_management_with_a_bad_model_is_a_400_and_recorded(backend_setup, kind, path, body):
    setup = backend_setup(kind)
    r = post(setup.url + path, body)
    assert_refused_in_dialect(r, "ollama", "must be")
    assert_recorded(setup.proxy, path, 1)
    assert not [c for c in setup.fake.requests if c.method == "POST"]


def test_model_management_through_an_ollama_backend_is_recorded_streamed_or_not(ollama_backend):
    fake = ollama_backend.fake
    fake.default("POST", "/api/pull", fakes.ndjson_reply([{"status": "pulling manifest"}, {"status": "success"}]))
    fake.default("POST", "/api/copy", fakes.json_reply({}))
    assert post(ollama_backend.url + "/api/pull", {"model": "llama3.2"}).status_code == 200
    assert post(ollama_backend.url + "/api/copy", {"source": "llama3.2", "destination": "b"}).status_code == 200
    store = store_of(ollama_backend.proxy)
    pulled = wait_rows(store, 1, endpoint="/api/pull")[0]
    copied = wait_rows(store, 1, endpoint="/api/copy")[0]
    assert pulled["model"] == "llama3.2" and pulled["status"] == 200 and pulled["stream"]
    assert copied["model"] == "llama3.2" and copied["status"] == 200
    assert json.loads(fake.last("/api/copy").body) == {"source": "llama3.2", "destination": "b"}
