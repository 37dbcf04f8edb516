"""What the log records for each kind of exchange, through a real proxy and a fake backend, in SQLite
and (when TEST_POSTGRES_URL is set) PostgreSQL: both dialects, stream and not, tools, thinking, errors,
cancelled streams, truncated bodies, polling, and never a secret."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import requests

from tests.support import fakes
from tests.support.store import one, store_of, wait_rows

CHAT = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}


def chat(front: str, model: str, text: str = "What is the weather?", stream: bool = False, **extra):
    body = {"model": model, "messages": [{"role": "system", "content": "You are Home Assistant."},
                                         {"role": "user", "content": text}], "stream": stream, **extra}
    return body


def test_openai_stream_is_recorded_with_assembled_answer_and_raw_chunks(logged_proxy):
    setup = logged_proxy("openai")
    setup.script_chat(("Hello", " world"))
    r = requests.post(setup.url + "/v1/chat/completions", json=chat("openai", setup.model, stream=True))
    assert r.status_code == 200 and "[DONE]" in r.text
    store = store_of(setup.proxy)
    [row] = wait_rows(store, 1)
    assert (row["front"], row["endpoint"], row["model"], row["stream"]) == \
        ("openai", "/v1/chat/completions", setup.model, True)
    assert (row["status"], row["outcome"], row["error"]) == (200, "ok", None)
    assert row["backend_type"] == "openai" and row["upstream_model"] == setup.model
    assert row["prompt_tokens"] == 7 and row["completion_tokens"] == 2
    assert row["preview"] == "What is the weather?"
    assert row["ttfb_ms"] is not None and row["ttfc_ms"] is not None and row["duration_ms"] >= row["ttfc_ms"]
    assert row["overhead_ms"] is not None and row["overhead_ms"] >= 0
    full = one(store, row["id"])
    assert full["answer"]["content"] == "Hello world"
    assert json.loads(full["bodies"]["client_request"]["text"])["messages"][0]["content"] == "You are Home Assistant."
    upstream = json.loads(full["bodies"]["upstream_request"]["text"])
    assert upstream["stream_options"] == {"include_usage": True}  # what the proxy added is visible
    assert full["bodies"]["upstream_response"]["text"].startswith("data: ")
    assert "[DONE]" in full["bodies"]["client_response"]["text"]
    assert not any(b["truncated"] for b in full["bodies"].values())


def test_ollama_front_over_openai_backend_records_the_translated_whole_answer(logged_proxy):
    setup = logged_proxy("openai")
    setup.script_chat(("Sunny", " today"))
    r = requests.post(setup.url + "/api/chat", json=chat("ollama", setup.model, stream=False))
    assert r.status_code == 200 and r.json()["message"]["content"] == "Sunny today"
    store = store_of(setup.proxy)
    [row] = wait_rows(store, 1)
    assert (row["front"], row["endpoint"], row["stream"], row["outcome"]) == ("ollama", "/api/chat", False, "ok")
    full = one(store, row["id"])
    assert full["answer"]["content"] == "Sunny today"
    assert json.loads(full["bodies"]["upstream_request"]["text"])["messages"][0]["role"] == "system"
    assert json.loads(full["bodies"]["client_response"]["text"])["done"] is True
    assert row["ttfc_ms"] is None  # a whole answer has no first chunk


def test_tool_calls_offered_and_made_are_recorded(logged_proxy):
    setup = logged_proxy("openai")
    setup.script_chat((), tool_calls=[("turn_on", '{"entity": "light.kitchen"}', "call_1")])
    tools = [{"type": "function", "function": {"name": "turn_on", "description": "Turn a light on",
                                               "parameters": {"type": "object"}}}]
    r = requests.post(setup.url + "/api/chat", json=chat("ollama", setup.model, stream=True, tools=tools))
    assert r.status_code == 200
    store = store_of(setup.proxy)
    [row] = wait_rows(store, 1)
    assert row["tool_calls"] == 1
    full = one(store, row["id"])
    [call] = full["answer"]["tool_calls"]
    assert call["function"]["name"] == "turn_on"
    assert call["function"]["arguments"] == {"entity": "light.kitchen"}
    assert json.loads(full["bodies"]["client_request"]["text"])["tools"][0]["function"]["name"] == "turn_on"


def test_ollama_passthrough_stream_records_thinking_and_eval_counts(logged_proxy):
    setup = logged_proxy("ollama")
    setup.script_chat(("Four",), thinking=("two plus two",))
    r = requests.post(setup.url + "/api/chat", json=chat("ollama", setup.model, text="2+2?", stream=True))
    assert r.status_code == 200
    store = store_of(setup.proxy)
    [row] = wait_rows(store, 1)
    full = one(store, row["id"])
    assert full["answer"]["content"] == "Four"
    assert full["answer"]["thinking"] == "two plus two"
    assert row["completion_tokens"] is not None and row["prompt_tokens"] is not None
    assert row["backend_type"] == "ollama" and row["preview"] == "2+2?"


def test_backend_error_status_is_recorded_with_its_message(logged_proxy):
    setup = logged_proxy("openai")
    setup.fake.default("POST", "/v1/chat/completions",
                       fakes.json_reply(fakes.openai_error("the model crashed", "server_error"), status=500))
    r = requests.post(setup.url + "/v1/chat/completions", json=chat("openai", setup.model))
    assert r.status_code == 500
    [row] = wait_rows(store_of(setup.proxy), 1)
    assert (row["status"], row["outcome"]) == (500, "backend_error")
    assert "the model crashed" in row["error"]


def test_request_that_is_not_json_is_recorded_as_client_error(logged_proxy):
    setup = logged_proxy("openai")
    r = requests.post(setup.url + "/api/chat", data=b'{"model": "x", "messages": [', headers={
        "Content-Type": "application/json"})
    assert r.status_code == 400
    [row] = wait_rows(store_of(setup.proxy), 1)
    assert (row["status"], row["outcome"], row["endpoint"]) == (400, "client_error", "/api/chat")
    assert "not valid JSON" in row["error"]
    assert one(store_of(setup.proxy), row["id"])["bodies"]["client_request"]["text"] == '{"model": "x", "messages": ['


def test_unknown_route_and_model_details_are_recorded(logged_proxy):
    setup = logged_proxy("openai")
    assert requests.post(setup.url + "/api/nothing-here", json={}).status_code == 404
    assert requests.post(setup.url + "/api/show", json={"model": setup.model}).status_code == 200
    found = wait_rows(store_of(setup.proxy), 2)
    by_endpoint = {r["endpoint"]: r for r in found}
    assert by_endpoint["/api/nothing-here"]["outcome"] == "client_error"
    assert by_endpoint["/api/show"]["status"] == 200 and by_endpoint["/api/show"]["model"] == setup.model


def test_client_that_leaves_mid_stream_is_recorded_as_cancelled(logged_proxy):
    setup = logged_proxy("openai")
    gate = threading.Event()
    setup.script_chat(("one", " two", " three", " four"), gate=gate, gate_at=2)
    r = requests.post(setup.url + "/v1/chat/completions", json=chat("openai", setup.model, stream=True),
                      stream=True)
    next(r.iter_content(chunk_size=None))  # the first chunk arrived
    r.close()
    gate.set()
    [row] = wait_rows(store_of(setup.proxy), 1)
    assert row["outcome"] == "cancelled" and row["status"] == 200
    assert "closed the connection" in row["error"]


def test_bodies_over_the_limit_are_stored_truncated_and_marked(logged_proxy):
    setup = logged_proxy("openai", LOG_MAX_BODY_BYTES=300)
    setup.script_chat(("x" * 500,))
    long_text = "word " * 200
    r = requests.post(setup.url + "/v1/chat/completions", json=chat("openai", setup.model, text=long_text))
    assert r.status_code == 200 and len(r.content) > 500  # the client got everything
    store = store_of(setup.proxy)
    [row] = wait_rows(store, 1)
    assert row["truncated"] is True
    body = one(store, row["id"])["bodies"]["client_request"]
    assert body["truncated"] is True and body["size"] > 1000 and len(body["text"].encode()) == 300
    assert row["preview"].startswith("word word")  # the preview still reads the truncated JSON


def test_polling_is_counted_but_not_stored_by_default(logged_proxy):
    setup = logged_proxy("openai")
    for path in ("/api/tags", "/api/ps", "/api/version", "/v1/models"):
        assert requests.get(setup.url + path).status_code == 200
    requests.post(setup.url + "/v1/chat/completions", json=chat("openai", setup.model))
    store = store_of(setup.proxy)
    [row] = wait_rows(store, 1)
    assert row["endpoint"] == "/v1/chat/completions"
    store.writer.close()  # flushes the per-minute counts
    counts = store.read(lambda m: {r.endpoint: r.count for r in m.PollCount.select()})
    assert counts == {"/api/tags": 1, "/api/ps": 1, "/api/version": 1, "/v1/models": 1}


def test_polling_is_stored_row_by_row_with_log_polling(logged_proxy):
    setup = logged_proxy("openai", LOG_POLLING="true")
    assert requests.get(setup.url + "/api/tags").status_code == 200
    [row] = wait_rows(store_of(setup.proxy), 1)
    assert row["endpoint"] == "/api/tags" and row["status"] == 200


def test_api_keys_and_authorization_headers_are_never_stored(backend_setup, tmp_path):
    secret_client, secret_backend = "sk-client-secret-4711", "sk-backend-secret-0815"
    url = f"sqlite:///{tmp_path}/secrets.db"
    setup = backend_setup("openai", DATABASE_URL=url, BACKEND_API_KEY=secret_backend)
    setup.script_chat()
    r = requests.post(setup.url + "/v1/chat/completions", json=chat("openai", setup.model),
                      headers={"Authorization": f"Bearer {secret_client}", "X-Api-Key": secret_client})
    assert r.status_code == 200
    assert setup.fake.last("/v1/chat/completions").header("Authorization") == f"Bearer {secret_backend}"
    store = store_of(setup.proxy)
    wait_rows(store, 1)
    store.close()
    stored = b"".join(p.read_bytes() for p in Path(tmp_path).glob("secrets.db*"))
    assert b"Home Assistant" in stored  # the bodies are there...
    assert secret_client.encode() not in stored and secret_backend.encode() not in stored  # ...the keys are not


def test_embeddings_are_recorded(logged_proxy):
    setup = logged_proxy("openai")
    setup.fake.default("POST", "/v1/embeddings", fakes.json_reply(fakes.openai_embeddings([[0.1, 0.2]])))
    r = requests.post(setup.url + "/api/embed", json={"model": setup.embed_model, "input": "hello vectors"})
    assert r.status_code == 200
    [row] = wait_rows(store_of(setup.proxy), 1)
    assert row["endpoint"] == "/api/embed" and row["preview"] == "hello vectors" and row["outcome"] == "ok"


def test_a_long_stream_is_stored_byte_for_byte_although_its_copies_are_packed_while_it_runs(logged_proxy):
    setup = logged_proxy("ollama")  # OpenAI front over an Ollama backend: both copies are kept, translated
    words = tuple(f" w{i}" for i in range(400))  # far more than one packing block of each copy
    setup.script_chat(words)
    r = requests.post(setup.url + "/v1/chat/completions", json=chat("openai", setup.model, stream=True))
    assert r.status_code == 200
    store = store_of(setup.proxy)
    [row] = wait_rows(store, 1)
    full = one(store, row["id"])
    assert full["answer"]["content"] == "".join(words)
    upstream = full["bodies"]["upstream_response"]
    assert upstream["size"] > 4 * 4096 and len(upstream["text"].encode()) == upstream["size"]
    lines = upstream["text"].splitlines()
    assert len(lines) == len(words) + 1 and all(json.loads(line)["model"] for line in lines)
    assert full["bodies"]["client_response"]["text"] == r.text  # what the client received, exactly
