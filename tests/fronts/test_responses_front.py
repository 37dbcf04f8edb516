"""`POST /v1/responses` over real sockets, driven by the official `openai` SDK (`client.responses.create`,
streamed and not) and by raw HTTP where the wire itself is checked: over the fake OpenAI and Ollama backends
and the stub; function and custom (apply_patch) tools, Codex's second turn, failures, the log record."""
from __future__ import annotations

import json
import threading

import openai
import pytest
import requests

from tests.support import fakes
from tests.support.codex import PATCH, PROMPT, SHELL, codex_request
from tests.support.store import one, store_of, wait_for, wait_rows


def sse_events(raw: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]


def script_calls(backend, *calls: tuple[str, dict]) -> None:
    """The backend answers with these tool calls, in its own dialect."""
    if backend.kind == "openai":
        backend.script_chat((), tool_calls=[(n, json.dumps(a), f"call_up{i}") for i, (n, a) in enumerate(calls)])
    else:
        backend.script_chat((), tool_calls=[fakes.ollama_tool_call(n, a) for n, a in calls])


def streamed(client, **kw) -> tuple[list, object]:
    events = list(client.responses.create(stream=True, **kw))
    return events, events[-1].response


def test_streamed_text_reaches_the_sdk_in_the_documented_order(backend, openai_client):
    backend.script_chat(("Hello", " world"))
    events, final = streamed(openai_client(backend.proxy), model=backend.model, input="Hi", instructions="Be brief")
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == "Hello world" and final.status == "completed" and final.id.startswith("resp_")
    assert final.usage.input_tokens > 0 and final.usage.total_tokens == final.usage.input_tokens + \
        final.usage.output_tokens
    sent = backend.upstream_chat()
    assert sent["messages"][0] == {"role": "system", "content": "Be brief"}
    assert sent["messages"][1]["content"] == "Hi"


def test_a_whole_answer_is_a_response_object(backend, openai_client):
    backend.script_chat(("Hello", " world"))
    response = openai_client(backend.proxy).responses.create(model=backend.model, input="Hi")
    assert response.object == "response" and response.status == "completed" and response.store is False
    assert response.output_text == "Hello world" and response.model == backend.model
    assert response.usage.input_tokens > 0


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_a_function_call_comes_back_as_a_function_call_item(backend, openai_client, stream):
    script_calls(backend, ("shell_command", {"command": "ls"}))
    kw = {"model": backend.model, "input": "list files", "tools": [SHELL]}
    client = openai_client(backend.proxy)
    response = streamed(client, **kw)[1] if stream else client.responses.create(**kw)
    (call,) = response.output
    assert call.type == "function_call" and call.name == "shell_command"
    assert json.loads(call.arguments) == {"command": "ls"} and call.call_id
    tools = backend.upstream_chat()["tools"]
    assert [t["function"]["name"] for t in tools] == ["shell_command"]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_apply_patch_comes_back_as_a_custom_tool_call_with_raw_input(backend, openai_client, stream):
    script_calls(backend, ("apply_patch", {"input": PATCH}))
    body = codex_request(1, model=backend.model, stream=stream)
    client = openai_client(backend.proxy)
    if stream:
        events, response = streamed(client, **{k: v for k, v in body.items() if k != "stream"})
        deltas = [e.delta for e in events if e.type == "response.custom_tool_call_input.delta"]
        assert "".join(deltas) == PATCH
    else:
        response = client.responses.create(**body)
    (call,) = response.output
    assert call.type == "custom_tool_call" and call.name == "apply_patch" and call.input == PATCH
    offered = backend.upstream_chat()["tools"]
    assert [t["function"]["name"] for t in offered] == ["shell_command", "update_plan", "apply_patch"]  # hosted tools dropped, never a 400


def test_codex_second_turn_sends_calls_outputs_and_reasoning_to_the_backend(backend, openai_client):
    backend.script_chat(("It", " runs."))
    events, response = streamed(openai_client(backend.proxy),
                                **{k: v for k, v in codex_request(2, model=backend.model).items() if k != "stream"})
    assert response.output_text == "It runs."
    messages = backend.upstream_chat()["messages"]
    calls = [m for m in messages if m.get("tool_calls")]
    assert len(calls) == 2
    if backend.kind == "openai":
        assert calls[0]["reasoning_content"] == "I should look at hello.py first."
        assert [m["tool_call_id"] for m in messages if m["role"] == "tool"] == ["call_shell1", "call_patch1"]
        assert json.loads(calls[1]["tool_calls"][0]["function"]["arguments"]) == {"input": PATCH}
    else:  # Ollama's own names: thinking, arguments as objects, the tool's name on its result
        assert calls[0]["thinking"] == "I should look at hello.py first."
        assert calls[1]["tool_calls"][0]["function"]["arguments"] == {"input": PATCH}
        assert [m.get("tool_name") for m in messages if m["role"] == "tool"] == ["shell_command", "apply_patch"]
    assert messages[-1]["content"] == "Thanks! Now run it."


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_max_output_tokens_truncation_is_status_incomplete(backend, openai_client, stream):
    if backend.kind == "openai":
        backend.script_chat(("Hel", "lo"), finish="length")
    else:
        backend.script_chat(("Hel", "lo"), done_reason="length")
    kw = {"model": backend.model, "input": "Hi", "max_output_tokens": 2}
    client = openai_client(backend.proxy)
    response = streamed(client, **kw)[1] if stream else client.responses.create(**kw)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    sent = backend.upstream_chat()
    assert sent.get("max_tokens") == 2 or sent.get("options", {}).get("num_predict") == 2


def test_a_backend_that_dies_mid_stream_ends_with_response_failed(backend, openai_client):
    backend.script_chat(("Hello", " world", " again"), close_after=3)
    events, final = streamed(openai_client(backend.proxy), model=backend.model, input="Hi")
    assert events[-1].type == "response.failed" and final.status == "failed"
    assert final.error.message and [e.sequence_number for e in events] == list(range(len(events)))
    row = wait_rows(store_of(backend.proxy), 1)[0]
    assert row["outcome"] == "backend_error" and row["front"] == "responses"


REFUSAL = fakes.openai_error("the context is too long", code="context_length_exceeded")


def test_a_backend_refusal_in_a_stream_is_response_failed_with_the_code_codex_reads(backend):
    backend.fake.default("POST", backend.chat_path, fakes.json_reply(REFUSAL, status=400))
    r = requests.post(backend.url + "/v1/responses", json={"model": backend.model, "input": "Hi", "stream": True},
                      timeout=10)
    events = sse_events(r.content)
    assert r.status_code == 200 and [e["type"] for e in events] == ["response.created", "response.in_progress",
                                                                    "response.failed"]
    error = events[-1]["response"]["error"]
    assert "too long" in error["message"]
    if backend.kind == "openai":  # an Ollama error body has no code
        assert error["code"] == "context_length_exceeded"
    row = wait_rows(store_of(backend.proxy), 1)[0]
    assert row["outcome"] == "backend_error" and row["front"] == "responses"


def test_a_backend_refusal_without_keepalive_or_stream_is_an_openai_shaped_error(backend_setup, openai_client):
    setup = backend_setup("openai", KEEPALIVE_S=0)
    setup.fake.default("POST", setup.chat_path, fakes.json_reply(REFUSAL, status=400))
    client = openai_client(setup.proxy)
    for stream in (True, False):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=setup.model, input="Hi", stream=stream)
        assert caught.value.status_code == 400 and caught.value.body["code"] == "context_length_exceeded"


def test_an_unreachable_backend_fails_the_stream_and_is_a_502_when_whole(make_proxy):
    from tests.support import free_port

    proxy = make_proxy(BACKEND_TYPE="openai", BACKEND_URL=f"http://127.0.0.1:{free_port()}", MODEL_MAP="m=m")
    body = {"model": "m", "input": "Hi"}
    r = requests.post(proxy.url + "/v1/responses", json={**body, "stream": True}, timeout=10)
    assert r.status_code == 200 and sse_events(r.content)[-1]["type"] == "response.failed"
    r = requests.post(proxy.url + "/v1/responses", json=body, timeout=10)
    assert r.status_code in (404, 502) and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_previous_response_id_is_a_clear_400(backend, openai_client):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(backend.proxy).responses.create(model=backend.model, input="Hi", previous_response_id="resp_1")
    assert caught.value.body["param"] == "previous_response_id" and "stateless" in caught.value.message
    assert backend.chat_calls() == []


def test_stored_responses_and_compaction_are_404s_in_openai_shape(backend):
    for method, path in (("GET", "/v1/responses/resp_1"), ("POST", "/v1/responses/compact")):
        r = requests.request(method, backend.url + path, json={"model": backend.model}, timeout=5)
        assert r.status_code == 404 and "stateless" in r.json()["error"]["message"]


def test_an_empty_probe_is_answered_without_the_backend(backend, openai_client):
    response = openai_client(backend.proxy).responses.create(model=backend.model, input=[], max_output_tokens=1)
    assert response.status == "completed" and response.output == []
    assert backend.chat_calls() == []


def test_the_opening_events_leave_before_the_backends_first_byte(backend):
    gate = threading.Event()
    backend.script_chat(("Hello",), gate=gate, gate_at=0)
    with requests.post(backend.url + "/v1/responses", json={"model": backend.model, "input": "Hi", "stream": True},
                       stream=True, timeout=10) as r:
        pieces = r.iter_content(chunk_size=None)
        got = b""
        while b"response.in_progress" not in got:
            got += next(pieces)
        assert not gate.is_set() and b"response.created" in got
        gate.set()
        rest = got + b"".join(pieces)
    assert sse_events(rest)[-1]["type"] == "response.completed"


def test_a_client_that_leaves_cancels_the_backend_request(backend):
    pieces = ["FIRSTPIECE"] + [f" w{i}" for i in range(300)]
    backend.script_chat(pieces, delay=0.01)
    r = requests.post(backend.url + "/v1/responses", json={"model": backend.model, "input": "Hi", "stream": True},
                      stream=True, timeout=10)
    got = b""
    for piece in r.iter_content(chunk_size=None):
        got += piece
        if b"FIRSTPIECE" in got:
            break
    r.close()
    (ex,) = backend.fake.exchanges_to(backend.chat_path)
    assert ex.done.wait(5) and ex.client_disconnected and not ex.completed
    store = store_of(backend.proxy)
    wait_for(lambda: any(row["outcome"] == "cancelled" for row in wait_rows(store, 1)))


def test_the_exchange_is_recorded_with_front_responses_and_the_last_user_text(backend, openai_client):
    backend.script_chat(("Sure",))
    streamed(openai_client(backend.proxy), **{k: v for k, v in codex_request(1, model=backend.model).items()
                                               if k != "stream"})
    store = store_of(backend.proxy)
    (row,) = wait_rows(store, 1)
    assert (row["front"], row["endpoint"], row["stream"], row["outcome"]) == ("responses", "/v1/responses", True, "ok")
    assert row["preview"] == PROMPT and row["model"] == backend.model
    full = one(store, row["id"])
    assert full["answer"]["content"] == "Sure"
    assert json.loads(full["bodies"]["upstream_request"]["text"])["messages"][-1]["content"] == PROMPT


@pytest.fixture
def stub(make_proxy):
    return make_proxy(BACKEND_TYPE="stub")


@pytest.mark.parametrize("turn", [1, 2])
def test_codex_turns_over_the_stub_end_completed(stub, turn):
    r = requests.post(stub.url + "/v1/responses", json=codex_request(turn, model="stub"), timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(r.content)
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][-1]["type"] in ("message", "custom_tool_call", "function_call")


def test_the_stub_answers_apply_patch_as_a_custom_tool_call(stub, openai_client):
    response = openai_client(stub).responses.create(
        model="stub", input="use apply_patch now", tools=codex_request(1)["tools"])
    (call,) = response.output
    assert call.type == "custom_tool_call" and call.name == "apply_patch" and call.input == "use apply_patch now"


def test_models_list_keeps_openai_fields_and_adds_codex_catalog(backend, openai_client):
    body = requests.get(backend.url + "/v1/models", timeout=5).json()
    assert body["object"] == "list" and body["data"]
    slugs = [m["slug"] for m in body["models"]]
    assert any(s.split(":")[0] == backend.model for s in slugs)
    entry = body["models"][0]
    for field in ("display_name", "supported_reasoning_levels", "shell_type", "visibility", "supported_in_api",
                  "priority", "base_instructions", "supports_reasoning_summaries", "support_verbosity",
                  "truncation_policy", "supports_parallel_tool_calls", "experimental_supported_tools"):
        assert field in entry, field
    assert entry["apply_patch_tool_type"] == "freeform" and entry["visibility"] == "list"
    assert [m.id for m in openai_client(backend.proxy).models.list()]


def test_a_codex_catalog_entry_says_what_the_catalog_knows():
    from proxy.catalog import ModelInfo
    from proxy.views.models import codex_models

    entries = codex_models([ModelInfo("emb", capabilities=("embedding",)),
                            ModelInfo("qwen3", context_length=32768, capabilities=("completion", "tools", "thinking",
                                                                                   "vision"))])
    (entry,) = entries  # an embedding model cannot be Codex's model
    assert entry["slug"] == "qwen3" and entry["context_window"] == 32768 and entry["priority"] == 1
    assert [e["effort"] for e in entry["supported_reasoning_levels"]] == ["low", "medium", "high"]
    assert entry["input_modalities"] == ["text", "image"] and entry["supports_reasoning_summaries"] is True


def test_the_log_view_shows_a_responses_exchange(stub, openai_client):
    openai_client(stub).responses.create(model="stub", input="show me in the log", tools=codex_request(1)["tools"])
    (row,) = wait_rows(store_of(stub), 1)
    detail = requests.get(f"{stub.url}/ui/api/logs/{row['id']}", timeout=10)
    page = requests.get(f"{stub.url}/ui/logs/{row['id']}", timeout=10)
    assert detail.status_code == 200 and detail.json()["front"] == "responses"
    assert page.status_code == 200 and "show me in the log" in page.text


def test_a_codex_stream_under_the_gevent_server(fake_upstream, wsgi_proxy, openai_client):
    fake_upstream.serve_openai_models("qwen3-8b")
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(
        ("Patching",), tool_calls=[("apply_patch", json.dumps({"input": PATCH}), "call_g1")], delay=0.01))
    proxy = wsgi_proxy(BACKEND_TYPE="openai")
    body = codex_request(2, model="qwen3-8b")
    events, final = streamed(openai_client(proxy), **{k: v for k, v in body.items() if k != "stream"})
    assert [e.sequence_number for e in events] == list(range(len(events)))
    message, call = final.output
    assert message.content[0].text == "Patching" and call.type == "custom_tool_call" and call.input == PATCH


def test_a_slow_backend_gets_in_progress_beats_then_the_answer(backend_setup, openai_client):
    """The backend takes a second before its first byte (a long prefill); beats every 0.2 s keep the client's
    idle timer fed, each a numbered response.in_progress, and the answer follows."""
    setup = backend_setup("openai", KEEPALIVE_S=0.2)
    setup.script_chat(("Hello", " world"), hang=1.0)
    events, final = streamed(openai_client(setup.proxy), model=setup.model, input="Hi")
    kinds = [e.type for e in events]
    beats = kinds.index("response.output_item.added") - 1  # in_progress events after the opening one
    assert kinds[0] == "response.created" and set(kinds[1:beats + 1]) == {"response.in_progress"} and beats >= 3
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == "Hello world" and final.status == "completed"


def test_another_method_on_responses_is_a_405_saying_post(backend):
    r = requests.get(backend.url + "/v1/responses", timeout=5)
    assert r.status_code == 405 and "POST" in r.json()["error"]["message"]


def test_an_empty_streamed_probe_is_a_whole_short_stream(backend):
    r = requests.post(backend.url + "/v1/responses", json={"model": backend.model, "input": [], "stream": True},
                      timeout=10)
    events = sse_events(r.content)
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.completed"]
    assert [e["sequence_number"] for e in events] == [0, 1, 2] and backend.chat_calls() == []


def test_failover_across_backends_keeps_one_opening_and_unbroken_numbering(tmp_path, openai_client):
    """BACKENDS_FILE: a refusing backend, a 5xx one, then an Ollama one: the stream opened once (with the
    keep-alive, before any backend answered) goes on with the answer of the third, numbered from 0."""
    from tests.support import free_port
    from tests.support.fakes import FakeUpstream
    from tests.support.pool_proxy import PoolProxy

    broken, good = FakeUpstream().start(), FakeUpstream().start()
    broken.serve_openai_models("qwen3")
    broken.default("POST", "/v1/chat/completions", fakes.json_reply(fakes.openai_error("overloaded", "server_error"),
                                                                    status=500))
    good.serve_ollama_models("llama3.2:latest")
    good.default("POST", "/api/chat", fakes.ollama_chat_responder(["Hello", " from", " good"]))
    text = f"""
[backends.dead]
type = "openai"
url = "http://127.0.0.1:{free_port()}"
models = ["qwen3"]
weight = 100
[backends.broken]
type = "openai"
url = "{broken.url}"
weight = 10
[backends.good]
type = "ollama"
url = "{good.url}"
aliases = {{ qwen3 = "llama3.2" }}
[routing]
strategy = "weighted"
retries = 2
backoff_ms = 1
"""
    proxy = PoolProxy.start(tmp_path, text, LOG_LEVEL="WARNING")
    try:
        events, final = streamed(openai_client(proxy), model="qwen3", input="hi")
        assert [e.type for e in events].count("response.created") == 1
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert final.output_text == "Hello from good" and final.model == "qwen3"
        assert good.last("/api/chat").json["model"] == "llama3.2"
    finally:
        proxy.stop()
        broken.stop()
        good.stop()
