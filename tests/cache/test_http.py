"""The response cache through the proxy on real sockets: the official clients of both dialects asking the
same thing cost the backend one call, streamed or not, for chat, completions and embeddings; what is never
cached (errors, cut streams, sampled answers by default) and what clients ask for (no-cache, no-store)."""
from __future__ import annotations

import json

import pytest
import requests

from tests.support import fakes

HELLO = [{"role": "user", "content": "Say hello."}]
KINDS = pytest.mark.parametrize("kind", ["openai", "ollama"])


def ollama_chat(setup, stream=False, headers=None, options=None, **extra):
    body = {"model": setup.model, "messages": HELLO, "stream": stream,
            "options": {"temperature": 0} if options is None else options, **extra}
    return requests.post(setup.url + "/api/chat", json=body, headers=headers or {}, timeout=10)


def openai_chat(setup, stream=False, headers=None, **extra):
    body = {"model": setup.model, "messages": HELLO, "stream": stream, "temperature": 0, **extra}
    return requests.post(setup.url + "/v1/chat/completions", json=body, headers=headers or {}, timeout=10)


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def cached_setup(backend_setup):
    def make(kind: str, **env):
        setup = backend_setup(kind, CACHE="memory", **env)
        setup.script_chat(("Hello", " there", " world"))
        return setup
    return make


@KINDS
def test_an_ollama_client_then_an_openai_client_asking_the_same_cost_one_backend_call(cached_setup, kind,
                                                                                      ollama_client, openai_client):
    setup = cached_setup(kind)
    first = ollama_client(setup.proxy).chat(model=setup.model, messages=HELLO, options={"temperature": 0})
    assert first.message.content == "Hello there world"
    second = openai_client(setup.proxy).chat.completions.with_raw_response.create(
        model=setup.model, messages=HELLO, temperature=0.0)
    assert second.headers["X-Cache"] == "HIT"
    completion = second.parse()
    assert completion.choices[0].message.content == "Hello there world"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == setup.model
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (first.prompt_eval_count,
                                                                                    first.eval_count)
    assert len(setup.chat_calls()) == 1


@KINDS
def test_a_hit_is_replayed_as_a_stream_when_the_client_asks_for_one(cached_setup, kind, openai_client, ollama_client):
    setup = cached_setup(kind)
    live = openai_chat(setup)
    assert live.headers["X-Cache"] == "MISS"
    usage = live.json()["usage"]
    chunks = list(openai_client(setup.proxy).chat.completions.create(
        model=setup.model, messages=HELLO, temperature=0, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == usage["completion_tokens"] and chunks[-1].choices == []
    words = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert words == ["Hello", " there", " world"]
    parts = list(ollama_client(setup.proxy).chat(model=setup.model, messages=HELLO, options={"temperature": 0},
                                                 stream=True))
    assert "".join(p.message.content for p in parts) == "Hello there world"
    assert parts[-1].done and parts[-1].eval_count == usage["completion_tokens"]
    assert parts[-1].prompt_eval_count == usage["prompt_tokens"]
    assert len(setup.chat_calls()) == 1


@KINDS
def test_a_streamed_answer_is_kept_when_it_ends_and_replayed_whole(cached_setup, kind):
    setup = cached_setup(kind)
    streamed = openai_chat(setup, stream=True)
    assert streamed.headers["X-Cache"] == "MISS" and sse_data(streamed.text)[-1] == "[DONE]"
    whole = ollama_chat(setup)
    assert whole.headers["X-Cache"] == "HIT"
    assert whole.json()["message"]["content"] == "Hello there world" and whole.json()["done"] is True
    raw = openai_chat(setup, stream=True)
    data = sse_data(raw.text)
    assert raw.headers["X-Cache"] == "HIT" and data[-1] == "[DONE]"
    assert not any(json.loads(d).get("usage") for d in data[:-1])  # no include_usage: no usage chunk
    assert len(setup.chat_calls()) == 1


def test_tool_calls_and_thinking_are_replayed(backend_setup, openai_client, ollama_client):
    setup = backend_setup("openai", CACHE="memory")
    setup.script_chat((), reasoning=("Think", "ing"), tool_calls=[("get_weather", '{"city": "Paris"}', "call_1")])
    live = openai_client(setup.proxy).chat.completions.create(model=setup.model, messages=HELLO, seed=1)
    hit = openai_client(setup.proxy).chat.completions.create(model=setup.model, messages=HELLO, seed=1)
    assert hit.choices[0].finish_reason == live.choices[0].finish_reason == "tool_calls"
    call = hit.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("call_1", "get_weather",
                                                                                 {"city": "Paris"})
    answer = ollama_client(setup.proxy).chat(model=setup.model, messages=HELLO, options={"seed": 1})
    assert answer.message.tool_calls[0].function.arguments == {"city": "Paris"}
    assert answer.message.thinking == "Thinking"
    assert len(setup.chat_calls()) == 1


@KINDS
def test_completions_and_raw_generate_share_an_entry(backend_setup, kind, fake_upstream):
    setup = backend_setup(kind, CACHE="memory")
    if kind == "openai":
        fake_upstream.default("POST", "/v1/completions", fakes.openai_text_completion_responder(("Once", " upon")))
        path = "/v1/completions"
    else:
        fake_upstream.default("POST", "/api/generate", fakes.ollama_generate_responder(("Once", " upon")))
        path = "/api/generate"
    first = requests.post(setup.url + "/api/generate", json={"model": setup.model, "prompt": "Tell", "raw": True,
                                                             "stream": False, "options": {"temperature": 0}})
    assert first.json()["response"] == "Once upon" and first.headers["X-Cache"] == "MISS"
    second = requests.post(setup.url + "/v1/completions", json={"model": setup.model, "prompt": "Tell",
                                                                "temperature": 0, "stream": True})
    assert second.headers["X-Cache"] == "HIT"
    data = sse_data(second.text)
    assert "".join(json.loads(d)["choices"][0]["text"] for d in data[:-1]) == "Once upon" and data[-1] == "[DONE]"
    assert len(fake_upstream.calls(path, "POST")) == 1


@KINDS
def test_embeddings_are_cached_across_dialects_and_encodings(backend_setup, kind, fake_upstream, ollama_client,
                                                             openai_client):
    setup = backend_setup(kind, CACHE="memory")
    vectors = [[0.5, -0.25, 1.0]]
    if kind == "openai":
        fake_upstream.default("POST", "/v1/embeddings", fakes.openai_embeddings_responder(vectors))
    else:
        fake_upstream.default("POST", "/api/embed", fakes.json_reply(fakes.ollama_embed(vectors)))
    assert ollama_client(setup.proxy).embed(model=setup.embed_model, input="hi").embeddings == vectors
    raw = openai_client(setup.proxy).embeddings.with_raw_response.create(model=setup.embed_model, input=["hi"],
                                                                         encoding_format="base64")
    assert raw.headers["X-Cache"] == "HIT"
    body = json.loads(raw.text)
    assert fakes.unpack_floats(body["data"][0]["embedding"]) == vectors[0]
    plain = openai_client(setup.proxy).embeddings.create(model=setup.embed_model, input="hi")
    assert plain.data[0].embedding == vectors[0]
    legacy = requests.post(setup.url + "/api/embeddings", json={"model": setup.embed_model, "prompt": "hi"})
    assert legacy.headers["X-Cache"] == "MISS"  # Ollama's legacy endpoint is keyed apart
    upstream = "/v1/embeddings" if kind == "openai" else "/api/embed"
    assert len(fake_upstream.calls(upstream, "POST")) + len(fake_upstream.calls("/api/embeddings", "POST")) == 2


def test_no_cache_skips_the_lookup_and_no_store_the_keeping(cached_setup):
    setup = cached_setup("openai")
    assert openai_chat(setup, headers={"Cache-Control": "no-store"}).headers["X-Cache"] == "MISS"
    assert openai_chat(setup, headers={"Cache-Control": "no-cache"}).headers["X-Cache"] == "BYPASS"
    assert openai_chat(setup, headers={"Cache-Control": "no-cache"}).headers["X-Cache"] == "BYPASS"
    assert openai_chat(setup, headers={"Cache-Control": "no-store"}).headers["X-Cache"] == "HIT"
    assert len(setup.chat_calls()) == 3


def test_only_deterministic_requests_are_cached_unless_cache_all(cached_setup):
    setup = cached_setup("openai")
    sampled = {"messages": HELLO, "model": setup.model}
    for _ in range(2):
        r = requests.post(setup.url + "/v1/chat/completions", json=sampled)
        assert r.status_code == 200 and r.headers["X-Cache"] == "BYPASS"
    r = requests.post(setup.url + "/api/chat", json={**sampled, "stream": False, "options": {"seed": 3}})
    assert r.headers["X-Cache"] == "MISS"
    assert len(setup.chat_calls()) == 3
    every = cached_setup("openai", CACHE_ALL="true")
    for expected in ("MISS", "HIT"):
        assert requests.post(every.url + "/v1/chat/completions", json=sampled).headers["X-Cache"] == expected


def test_errors_are_not_cached(cached_setup, fake_upstream):
    setup = cached_setup("openai")
    fake_upstream.expect("POST", "/v1/chat/completions",
                         fakes.json_reply(fakes.openai_error("the model crashed", "server_error"), status=500))
    failed = openai_chat(setup)
    assert failed.status_code == 500 and failed.headers["X-Cache"] == "MISS"
    assert openai_chat(setup).headers["X-Cache"] == "MISS"
    assert openai_chat(setup).headers["X-Cache"] == "HIT"
    assert len(setup.chat_calls()) == 2  # the error, then the answer kept


@KINDS
def test_a_stream_the_backend_broke_is_not_cached(backend_setup, kind):
    setup = backend_setup(kind, CACHE="memory")
    setup.script_chat(("Hello", " there", " world"), close_after=2)
    broken = openai_chat(setup, stream=True)
    assert broken.headers["X-Cache"] == "MISS" and "error" in broken.text
    assert openai_chat(setup, stream=True).headers["X-Cache"] == "MISS"
    assert len(setup.chat_calls()) == 2


def test_an_answer_cut_at_max_tokens_is_not_cached(backend_setup):
    setup = backend_setup("openai", CACHE="memory")
    setup.script_chat(("Hello", " there"), finish="length")
    assert openai_chat(setup, max_tokens=2).json()["choices"][0]["finish_reason"] == "length"
    assert openai_chat(setup, max_tokens=2).headers["X-Cache"] == "MISS"


def test_the_key_ignores_key_order_the_latest_tag_and_framing_but_not_sampling(backend_setup):
    setup = backend_setup("ollama", CACHE="memory")
    setup.script_chat(("Hi",))
    assert ollama_chat(setup, keep_alive="5m").headers["X-Cache"] == "MISS"
    raw = json.dumps({"stream": False, "options": {"temperature": 0.0}, "messages": HELLO, "model": "llama3.2:latest"})
    r = requests.post(setup.url + "/api/chat", data=raw, headers={"Authorization": "Bearer other"})
    assert r.headers["X-Cache"] == "HIT" and r.json()["model"] == "llama3.2:latest"
    assert ollama_chat(setup, options={"temperature": 0, "top_k": 5}).headers["X-Cache"] == "MISS"
    assert ollama_chat(setup, messages=[{"role": "user", "content": "Other"}]).headers["X-Cache"] == "MISS"


def test_answers_that_are_not_cacheable_say_bypass_and_other_endpoints_say_nothing(cached_setup):
    setup = cached_setup("openai")
    assert openai_chat(setup, n=2).headers["X-Cache"] == "BYPASS"
    bad = requests.post(setup.url + "/v1/chat/completions", data=b"{")
    assert bad.status_code == 400 and bad.headers["X-Cache"] == "BYPASS"
    assert "X-Cache" not in requests.get(setup.url + "/v1/models").headers


def test_without_cache_no_answer_says_x_cache(backend_setup):
    setup = backend_setup("openai")
    setup.script_chat()
    r = openai_chat(setup)
    assert r.status_code == 200 and "X-Cache" not in r.headers


def test_hits_and_misses_are_counted_in_metrics(cached_setup):
    setup = cached_setup("openai")
    openai_chat(setup)
    openai_chat(setup)
    openai_chat(setup, headers={"Cache-Control": "no-cache"})
    text = requests.get(setup.url + "/metrics").text
    assert 'llm_proxy_cache_requests_total{result="hit"} 1.0' in text
    assert 'llm_proxy_cache_requests_total{result="miss"} 1.0' in text
    assert 'llm_proxy_cache_requests_total{result="bypass"} 1.0' in text
    assert "llm_proxy_cache_stores_total 2.0" in text  # the no-cache answer was kept again
    assert "llm_proxy_cache_bytes " in text


def test_a_stream_the_client_left_is_not_cached(backend_setup):
    import threading

    from tests.support.store import store_of, wait_rows

    setup = backend_setup("openai", CACHE="memory")
    gate = threading.Event()
    setup.script_chat([f" w{i}" for i in range(400)], gate=gate, gate_at=1)
    with requests.post(setup.url + "/v1/chat/completions", stream=True, timeout=10,
                       json={"model": setup.model, "messages": HELLO, "temperature": 0, "stream": True}) as left:
        assert left.headers["X-Cache"] == "MISS"
        next(left.iter_lines())
    gate.set()
    wait_rows(store_of(setup.proxy), 1, outcome="cancelled")
    assert openai_chat(setup, stream=True).headers["X-Cache"] == "MISS"


def test_hits_charge_no_tokens_to_token_limits(backend_setup, tmp_path):
    from tests.support.policy import ALICE, write_keys

    path = write_keys(tmp_path / "keys.toml", "[keys.alice]\ntpm = 15\n")
    setup = backend_setup("openai", CACHE="memory", API_KEYS=f"alice:{ALICE}", KEYS_FILE=path)
    setup.script_chat(prompt_tokens=7, completion_tokens=2)  # 9 tokens an answer from the backend
    alice = {"Authorization": f"Bearer {ALICE}"}
    assert openai_chat(setup, headers=alice).headers["X-Cache"] == "MISS"  # 0 used before: admitted -> 9
    for _ in range(3):  # 9 < 15 each time: a hit adds nothing
        assert openai_chat(setup, headers=alice).headers["X-Cache"] == "HIT"
    assert openai_chat(setup, headers={**alice, "Cache-Control": "no-cache"}).status_code == 200  # -> 18
    refused = openai_chat(setup, headers=alice)
    assert refused.status_code == 429 and refused.headers["X-Cache"] == "BYPASS"  # refused before the lookup


def test_the_memory_cache_evicts_the_least_recently_used_past_its_bytes(cached_setup):
    setup = cached_setup("openai", CACHE_MAX_BYTES="300")  # one entry (~200 bytes with its key), not two
    ask = {"a": [{"role": "user", "content": "A?"}], "b": [{"role": "user", "content": "B?"}]}
    assert openai_chat(setup, messages=ask["a"]).headers["X-Cache"] == "MISS"
    assert openai_chat(setup, messages=ask["a"]).headers["X-Cache"] == "HIT"
    assert openai_chat(setup, messages=ask["b"]).headers["X-Cache"] == "MISS"  # A goes to make room
    assert openai_chat(setup, messages=ask["a"]).headers["X-Cache"] == "MISS"
    text = requests.get(setup.url + "/metrics").text
    assert "llm_proxy_cache_evictions_total 2.0" in text  # A for B, then B for A
    size = float(text.split("\nllm_proxy_cache_bytes ", 1)[1].split()[0])
    assert 150 < size <= 300


def test_a_passthrough_stream_longer_than_the_log_copy_is_not_kept(backend_setup):
    setup = backend_setup("openai", CACHE="memory", LOG_MAX_BODY_BYTES="200")
    setup.script_chat([f" word{i}" for i in range(50)])
    assert openai_chat(setup, stream=True).headers["X-Cache"] == "MISS"
    assert openai_chat(setup, stream=True).headers["X-Cache"] == "MISS"  # its answer was read from a cut copy
    whole = openai_chat(setup)  # a whole answer is read from the whole body: kept
    assert whole.headers["X-Cache"] == "MISS" and openai_chat(setup).headers["X-Cache"] == "HIT"


def test_a_stream_kept_alive_by_beats_is_kept_and_then_replayed(cached_setup):
    setup = cached_setup("openai", KEEPALIVE_S="5")
    first = openai_chat(setup, stream=True)
    assert first.headers["X-Cache"] == "MISS" and sse_data(first.text)[-1] == "[DONE]"
    again = openai_chat(setup, stream=True)
    assert again.headers["X-Cache"] == "HIT" and sse_data(again.text)[-1] == "[DONE]"
    assert len(setup.chat_calls()) == 1
