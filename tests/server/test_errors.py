"""Errors over real sockets, always in the caller's dialect: `{"error": "..."}` under /api,
`{"error": {"message", "type", "param", "code"}}` under /v1 (schema-checked). Client mistakes
are 4xx (never 500: the OpenAI SDK would retry them), unknown models 404, a refused backend
502 naming it, a silent backend 504, upstream error statuses passed through, and failures
after the first byte become an error chunk in the stream."""

from __future__ import annotations

import math
import threading
import time

import ollama
import openai
import pytest
import requests

from tests.support import fakes, free_port
from tests.support.fakes import Reply, json_reply, ndjson_reply, sse_reply, text_reply
from tests.support.openai_schema import assert_openai_schema
from tests.support.wire_checks import ndjson_strict, post, sse_strict

CHAT = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}


def ollama_error(r: requests.Response, status: int | None = None) -> str:
    if status is not None:
        assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return body["error"]


def openai_error(r: requests.Response, status: int | None = None) -> dict:
    if status is not None:
        assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    body = r.json()
    assert_openai_schema(body, "ErrorResponse")
    assert body["error"]["message"]
    return body["error"]


def error_in_dialect(front: str, r: requests.Response, status: int | None = None) -> str:
    if front == "ollama":
        return ollama_error(r, status)
    return openai_error(r, status)["message"]


def chat_body(front: str, model: str, **kw) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **kw}


# =============================================================================================
# client mistakes: 400 in the caller's dialect, nothing sent upstream
# =============================================================================================

OLLAMA_POSTS = ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show"]
OPENAI_POSTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


@pytest.mark.parametrize("path", OLLAMA_POSTS + OPENAI_POSTS)
def test_malformed_json_is_400_in_the_callers_dialect(backend, path):
    r = post(backend.url + path, raw=b'{"model": "x", "messages": [')
    front = "ollama" if path.startswith("/api") else "openai"
    error_in_dialect(front, r, 400)
    assert [q for q in backend.fake.requests if q.method == "POST"] == []


@pytest.mark.parametrize("path", OLLAMA_POSTS + OPENAI_POSTS)
def test_json_that_is_not_an_object_is_400(backend, path):
    r = post(backend.url + path, raw=b'["model", "x"]')
    error_in_dialect("ollama" if path.startswith("/api") else "openai", r, 400)


@pytest.mark.parametrize("path, body", [
    ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]}),
    ("/api/generate", {"prompt": "hi"}),
    ("/api/embed", {"input": "hi"}),
    ("/api/show", {}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/completions", {"prompt": "hi"}),
    ("/v1/embeddings", {"input": "hi"}),
])
def test_missing_model_is_400_in_the_callers_dialect(backend, path, body):
    r = post(backend.url + path, body)
    front = "ollama" if path.startswith("/api") else "openai"
    assert "model" in error_in_dialect(front, r, 400).lower()
    assert [q for q in backend.fake.requests if q.method == "POST"] == []


@pytest.mark.parametrize("front, patch", [
    ("ollama", {"messages": "hi"}),
    ("ollama", {"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}),
    ("ollama", {"messages": [{"role": "user", "content": "hi"}], "options": [1, 2]}),
    ("ollama", {"messages": ["hi"]}),
    ("ollama", {"model": 42}),
    ("openai", {"messages": "hi"}),
    ("openai", {"messages": []}),
    ("openai", {"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}),
    ("openai", {"messages": [{"content": "no role"}]}),
    ("openai", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}),
    ("openai", {"model": ["a"]}),
], ids=lambda v: v if isinstance(v, str) else ",".join(v))
def test_wrong_types_are_400_not_500(backend, front, patch):
    body = {**chat_body(front, backend.model), **patch}
    r = post(backend.url + CHAT[front], body)
    error_in_dialect(front, r, 400)
    assert not backend.chat_calls()


def test_openai_sdk_sees_bad_request_and_does_not_retry(backend, openai_client):
    client = openai_client(backend.proxy)
    client = client.with_options(max_retries=2)  # a 4xx must not be retried even when allowed
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=backend.model, messages=[])
    assert not backend.chat_calls()


def test_ollama_client_sees_response_error_with_status(backend, ollama_client):
    with pytest.raises(ollama.ResponseError) as info:
        ollama_client(backend.proxy).chat(model=backend.model, messages=[{"role": "user"}],
                                          options={"num_predict": "many"})
    assert info.value.status_code == 400


# =============================================================================================
# unknown model: 404 in the caller's dialect, nothing generated upstream
# =============================================================================================


@pytest.mark.parametrize("front", ["ollama", "openai"])
def test_unknown_model_chat_is_404_naming_the_model(backend, front):
    backend.script_chat(["should not be used"])
    r = post(backend.url + CHAT[front], chat_body(front, "no-such-model"))
    msg = error_in_dialect(front, r, 404)
    assert "no-such-model" in msg
    if front == "openai":
        assert r.json()["error"]["code"] == "model_not_found"
    assert not backend.chat_calls()


@pytest.mark.parametrize("path, body", [
    ("/api/generate", {"prompt": "hi", "stream": False}),
    ("/api/embed", {"input": "hi"}),
    ("/v1/completions", {"prompt": "hi"}),
    ("/v1/embeddings", {"input": "hi"}),
])
def test_unknown_model_on_other_endpoints_is_404(backend, path, body):
    r = post(backend.url + path, {"model": "no-such-model", **body})
    error_in_dialect("ollama" if path.startswith("/api") else "openai", r, 404)


def test_unknown_model_raises_the_sdks_not_found_errors(backend, openai_client, ollama_client):
    with pytest.raises(openai.NotFoundError):
        openai_client(backend.proxy).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ollama.ResponseError) as info:
        ollama_client(backend.proxy).chat(model="no-such-model",
                                          messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404


# =============================================================================================
# unknown routes and methods
# =============================================================================================


def test_unknown_v1_route_is_404_in_openai_shape(backend):
    r = post(backend.url + "/v1/responses", {"model": backend.model, "input": "hi"})
    openai_error(r, 404)


def test_unknown_api_route_is_404_in_ollama_shape(backend):
    r = post(backend.url + "/api/nonsense", {"model": backend.model})
    ollama_error(r, 404)


def test_wrong_method_on_api_chat_is_405_like_ollama(backend):
    ollama_error(requests.get(backend.url + "/api/chat", timeout=5), 405)


def test_wrong_method_on_v1_chat_is_an_openai_shaped_client_error(backend):
    r = requests.get(backend.url + "/v1/chat/completions", timeout=5)
    assert r.status_code in (404, 405)  # the OpenAI API does not pin one
    openai_error(r)


# =============================================================================================
# backend refused / silent
# =============================================================================================


@pytest.mark.parametrize("kind", ["openai", "ollama"])
@pytest.mark.parametrize("front", ["ollama", "openai"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_refused_backend_is_502_naming_the_backend(make_proxy, kind, front, stream):
    port = free_port()  # nothing listens there
    proxy = make_proxy(BACKEND_TYPE=kind, BACKEND_URL=f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    r = post(proxy.url + CHAT[front], chat_body(front, "some-model", stream=stream))
    msg = error_in_dialect(front, r, 502)
    assert f"127.0.0.1:{port}" in msg, msg
    assert time.monotonic() - t0 < 10


def test_refused_backend_is_a_server_error_for_the_sdks(make_proxy, openai_client, ollama_client):
    proxy = make_proxy(BACKEND_TYPE="openai", BACKEND_URL=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(openai.InternalServerError) as info:
        openai_client(proxy).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502
    with pytest.raises(ollama.ResponseError) as oinfo:
        ollama_client(proxy).chat(model="m", messages=[{"role": "user", "content": "hi"}])
    assert oinfo.value.status_code == 502


@pytest.mark.parametrize("kind", ["openai", "ollama"])
@pytest.mark.parametrize("front", ["ollama", "openai"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_silent_backend_is_504_after_backend_timeout(backend_setup, kind, front, stream):
    setup = backend_setup(kind, BACKEND_TIMEOUT=1)
    setup.fake.default("POST", setup.chat_path, Reply(chunks=[b"{}"], hang=math.inf))
    t0 = time.monotonic()
    r = post(setup.url + CHAT[front], chat_body(front, setup.model, stream=stream), timeout=20)
    elapsed = time.monotonic() - t0
    error_in_dialect(front, r, 504)
    assert 0.9 <= elapsed < 8, elapsed


@pytest.mark.parametrize("kind", ["openai", "ollama"])
@pytest.mark.parametrize("front", ["ollama", "openai"])
def test_backend_stalling_mid_stream_becomes_an_error_chunk(backend_setup, kind, front):
    setup = backend_setup(kind, BACKEND_TIMEOUT=1)
    setup.script_chat(["Hel", "lo", " never"], gate=threading.Event(), gate_at=2)
    t0 = time.monotonic()
    r = post(setup.url + CHAT[front], chat_body(front, setup.model, stream=True), timeout=20)
    assert r.status_code == 200
    assert time.monotonic() - t0 < 8
    assert_stream_ends_with_error(front, r.content)


# =============================================================================================
# upstream error statuses, passed through in the caller's dialect
# =============================================================================================


@pytest.mark.parametrize("front", ["ollama", "openai"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_openai_backend_error_status_and_message_reach_the_caller(openai_backend, front, stream):
    openai_backend.fake.default("POST", "/v1/chat/completions", json_reply(fakes.openai_error(
        "This model's maximum context length is 2048 tokens", code="context_length_exceeded"),
        status=400))
    r = post(openai_backend.url + CHAT[front], chat_body(front, openai_backend.model, stream=stream))
    msg = error_in_dialect(front, r, 400) if front == "ollama" else \
        r.json()["error"]["message"]
    assert r.status_code == 400
    assert "maximum context length is 2048" in msg


@pytest.mark.parametrize("front", ["ollama", "openai"])
def test_llamacpp_error_shape_is_normalised_for_the_caller(openai_backend, front):
    openai_backend.fake.default("POST", "/v1/chat/completions", json_reply({"error": {
        "code": 400, "message": "the request exceeds the available context size",
        "type": "exceed_context_size_error", "n_prompt_tokens": 5000, "n_ctx": 2048}}, status=400))
    r = post(openai_backend.url + CHAT[front], chat_body(front, openai_backend.model))
    assert r.status_code == 400
    msg = ollama_error(r) if front == "ollama" else r.json()["error"]["message"]
    assert "exceeds the available context size" in msg


@pytest.mark.parametrize("front", ["ollama", "openai"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_ollama_backend_error_status_and_message_reach_the_caller(ollama_backend, front, stream):
    ollama_backend.fake.default("POST", "/api/chat", json_reply(
        {"error": "llama runner process has terminated: exit status 2"}, status=500))
    r = post(ollama_backend.url + CHAT[front], chat_body(front, ollama_backend.model, stream=stream))
    msg = error_in_dialect(front, r, 500)
    assert "llama runner process has terminated" in msg


@pytest.mark.parametrize("kind", ["openai", "ollama"])
@pytest.mark.parametrize("front", ["ollama", "openai"])
def test_upstream_plain_text_error_becomes_a_json_error(backend_setup, kind, front):
    setup = backend_setup(kind)
    setup.fake.default("POST", setup.chat_path, text_reply("Service Unavailable", status=503))
    r = post(setup.url + CHAT[front], chat_body(front, setup.model))
    assert "Service Unavailable" in error_in_dialect(front, r, 503)


@pytest.mark.parametrize("front", ["ollama", "openai"])
def test_upstream_rate_limit_is_429_for_the_caller(openai_backend, front):
    openai_backend.fake.default("POST", "/v1/chat/completions", json_reply(
        fakes.openai_error("Rate limit reached", "rate_limit_error", "rate_limit_exceeded"),
        status=429, headers={"Retry-After": "7"}))
    r = post(openai_backend.url + CHAT[front], chat_body(front, openai_backend.model))
    assert r.status_code == 429
    assert "Rate limit reached" in (r.json()["error"] if front == "ollama"
                                    else r.json()["error"]["message"])


def test_upstream_400_raises_bad_request_in_openai_sdk_from_ollama_backend(ollama_backend, openai_client):
    ollama_backend.fake.default("POST", "/api/chat", json_reply(
        {"error": "registry.ollama.ai/library/llama3.2:latest does not support tools"}, status=400))
    with pytest.raises(openai.BadRequestError) as info:
        openai_client(ollama_backend.proxy).chat.completions.create(
            model=ollama_backend.model, messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert "does not support tools" in info.value.message


# =============================================================================================
# failures after the first byte: an error chunk in the caller's dialect, then the end
# =============================================================================================


def assert_stream_ends_with_error(front: str, raw: bytes, *, built_by_proxy: bool = True) -> str:
    """The stream's last event is one error in `front`'s dialect, with no fake done/finish
    before it. `built_by_proxy=False` (upstream's own error chunk relayed verbatim) skips the
    OpenAI schema check, since upstreams add and omit fields."""
    if front == "ollama":
        lines = ndjson_strict(raw)
        last = lines[-1]
        assert set(last) >= {"error"} and isinstance(last["error"], str) and last["error"], lines[-3:]
        assert not any(line.get("done") for line in lines), "a fake done line was sent"
        return last["error"]
    payloads = sse_strict(raw)
    errors = [p for p in payloads if isinstance(p, dict) and "error" in p]
    assert len(errors) == 1, payloads[-3:]
    if built_by_proxy:
        assert_openai_schema(errors[0], "ErrorResponse")
    after = payloads[payloads.index(errors[0]) + 1:]
    assert after in ([], ["[DONE]"]), after
    assert not any(isinstance(p, dict) and p.get("choices") and p["choices"][0].get("finish_reason")
                   for p in payloads), "a fake finish was sent"
    return errors[0]["error"]["message"]


@pytest.mark.parametrize("front", ["ollama", "openai"])
def test_groq_midstream_error_event_reaches_the_caller_as_an_error_chunk(openai_backend, front):
    openai_backend.fake.default("POST", "/v1/chat/completions",
                                sse_reply("groq_chat_stream_midstream_error_event.sse"))
    r = post(openai_backend.url + CHAT[front], chat_body(front, openai_backend.model, stream=True))
    assert r.status_code == 200
    msg = assert_stream_ends_with_error(front, r.content, built_by_proxy=front == "ollama")
    assert "Tool call validation failed" in msg


def test_groq_midstream_error_raises_in_the_ollama_library(openai_backend, ollama_client):
    openai_backend.fake.default("POST", "/v1/chat/completions",
                                sse_reply("groq_chat_stream_midstream_error_event.sse"))
    stream = ollama_client(openai_backend.proxy).chat(
        model=openai_backend.model, messages=[{"role": "user", "content": "hi"}], stream=True)
    thinking = ""
    with pytest.raises(ollama.ResponseError, match="Tool call validation failed"):
        for part in stream:
            thinking += part.message.thinking or ""
    assert thinking.startswith("We")  # the reasoning before the error was delivered


def test_groq_midstream_error_raises_api_error_in_the_openai_sdk(openai_backend, openai_client):
    openai_backend.fake.default("POST", "/v1/chat/completions",
                                sse_reply("groq_chat_stream_midstream_error_event.sse"))
    stream = openai_client(openai_backend.proxy).chat.completions.create(
        model=openai_backend.model, messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(openai.APIError, match="Tool call validation failed"):
        for _ in stream:
            pass


@pytest.mark.parametrize("front", ["ollama", "openai"])
def test_ollama_midstream_error_line_reaches_the_caller_as_an_error_chunk(ollama_backend, front):
    lines = [fakes.ollama_chat_chunk("Yes"), fakes.ollama_chat_chunk("."),
             {"error": "an error was encountered while running the model"}]
    ollama_backend.fake.default("POST", "/api/chat", ndjson_reply(lines))
    r = post(ollama_backend.url + CHAT[front], chat_body(front, ollama_backend.model, stream=True))
    assert r.status_code == 200
    msg = assert_stream_ends_with_error(front, r.content)
    assert "error was encountered while running the model" in msg


def test_ollama_generate_midstream_error_reaches_v1_completions_as_error_chunk(ollama_backend, openai_client):
    ollama_backend.fake.default("POST", "/api/generate",
                                ndjson_reply("ollama_docs_generate_stream_midstream_error.ndjson"))
    r = post(ollama_backend.url + "/v1/completions", {"model": ollama_backend.model,
                                                      "prompt": "q", "stream": True})
    payloads = sse_strict(r.content)
    errors = [p for p in payloads if isinstance(p, dict) and "error" in p]
    assert len(errors) == 1 and "error was encountered" in errors[0]["error"]["message"]
    assert_openai_schema(errors[0], "ErrorResponse")
    stream = openai_client(ollama_backend.proxy).completions.create(
        model=ollama_backend.model, prompt="q", stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


@pytest.mark.parametrize("kind", ["openai", "ollama"])
@pytest.mark.parametrize("front", ["ollama", "openai"])
def test_upstream_connection_dropped_mid_stream_becomes_an_error_chunk(backend_setup, kind, front):
    setup = backend_setup(kind)
    setup.script_chat(["Hel", "lo", " wor", "ld"], close_after=3)
    r = post(setup.url + CHAT[front], chat_body(front, setup.model, stream=True))
    assert r.status_code == 200
    assert_stream_ends_with_error(front, r.content)


def test_openai_stream_that_ends_without_a_finish_is_an_error_for_ollama_clients(openai_backend):
    # a clean end of the HTTP body, but no finish_reason and no [DONE]: the backend died
    events = fakes.openai_stream_events(["Hel", "lo"], usage_chunk=False, done=False)[:-1]
    assert not any(e["choices"][0]["finish_reason"] for e in events)
    openai_backend.fake.default("POST", "/v1/chat/completions", sse_reply(events))
    r = post(openai_backend.url + "/api/chat", chat_body("ollama", openai_backend.model))
    assert_stream_ends_with_error("ollama", r.content)


def test_error_chunk_in_passthrough_openai_stream_keeps_the_upstream_message(openai_backend):
    events = fakes.openai_stream_events(["Hel"], done=False)[:2] + [
        fakes.openai_error("upstream exploded", "server_error")]
    openai_backend.fake.default("POST", "/v1/chat/completions", sse_reply(events))
    r = post(openai_backend.url + "/v1/chat/completions",
             chat_body("openai", openai_backend.model, stream=True))
    payloads = sse_strict(r.content)
    errors = [p for p in payloads if isinstance(p, dict) and "error" in p]
    assert [e["error"]["message"] for e in errors] == ["upstream exploded"]
