"""The Anthropic Messages front door over real sockets, driven by the official `anthropic` SDK (raw HTTP where the
SDK would hide a shape): messages.create, messages.stream, a tool-use round trip and count_tokens over the stub
backend and the fake OpenAI and Ollama upstreams; errors in Anthropic's shape; the model list in Anthropic's
shape; early bytes; and the exchange as the log records it."""
from __future__ import annotations

import json
import threading
import time

import anthropic
import pytest
import requests

from tests.support import fakes
from tests.support.anthropic_events import check_order, sse_events
from tests.support.fakes import json_reply
from tests.support.store import one, store_of, wait_rows
from tests.support.wire_checks import post

HEADERS = {"anthropic-version": "2023-06-01"}
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
BILLING = {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.162.553; cc_entrypoint=cli; cch=3f2a1;"}


def messages_raw(url: str, body: dict, path: str = "/v1/messages?beta=true", **kw) -> requests.Response:
    return post(url + path, body, headers={**HEADERS, **kw.pop("headers", {})}, **kw)


def script_tool_call(setup, call_id: str = "call_up1") -> None:
    if setup.kind == "openai":
        setup.script_chat([], tool_calls=[("get_weather", '{"city":"Paris"}', call_id)])
    else:
        setup.script_chat([], tool_calls=[fakes.ollama_tool_call("get_weather", {"city": "Paris"}, id=call_id)])


def sent_messages(setup) -> list[dict]:
    return setup.upstream_chat()["messages"]


# =============================================================================================
# the stub backend
# =============================================================================================


@pytest.fixture
def stub(make_proxy):
    return make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS=0)


def test_stub_create_answers_a_message_with_usage(stub, anthropic_client):
    message = anthropic_client(stub).messages.create(model="stub", max_tokens=100,
                                                     messages=[{"role": "user", "content": "hello there"}])
    assert message.type == "message" and message.role == "assistant" and message.model == "stub"
    assert [b.text for b in message.content] == ["You said: hello there"]
    assert message.stop_reason == "end_turn" and message.usage.input_tokens > 0 and message.usage.output_tokens == 4


def test_stub_stream_delivers_the_text_word_by_word(stub, anthropic_client):
    with anthropic_client(stub).messages.stream(model="stub", max_tokens=100,
                                                messages=[{"role": "user", "content": "one two three"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["You", " said:", " one", " two", " three"]
    assert final.content[0].text == "You said: one two three" and final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 4 and final.usage.output_tokens == 5  # from message_delta


def test_stub_tool_use_round_trip_keeps_the_id(stub, anthropic_client):
    client = anthropic_client(stub)
    ask = [{"role": "user", "content": "call get_weather please"}]
    with client.messages.stream(model="stub", max_tokens=100, tools=TOOLS, messages=ask) as stream:
        first = stream.get_final_message()
    [tool_use] = first.content
    assert first.stop_reason == "tool_use" and tool_use.type == "tool_use" and tool_use.name == "get_weather"
    assert tool_use.input == {"city": "call get_weather please"}
    second = client.messages.create(model="stub", max_tokens=100, tools=TOOLS, messages=[
        *ask, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}]}])
    assert second.content[0].text == "The tool returned: sunny"


def test_metrics_count_the_front_as_anthropic(stub, anthropic_client):
    anthropic_client(stub).messages.create(model="stub", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    text = requests.get(stub.url + "/metrics", timeout=5).text
    assert 'llm_proxy_requests_total{endpoint="/v1/messages",front="anthropic",model="stub"' in text


def test_stub_count_tokens_is_an_estimate(stub, anthropic_client):
    counted = anthropic_client(stub).messages.count_tokens(
        model="stub", messages=[{"role": "user", "content": "x" * 400}])
    assert counted.input_tokens == 100 + 8


def test_models_come_in_anthropics_shape_for_anthropic_clients_only(stub, anthropic_client):
    page = anthropic_client(stub).models.list()
    assert [m.id for m in page.data] == ["stub", "stub-embed"] and page.first_id == "stub" and not page.has_more
    assert page.data[0].type == "model" and page.data[0].created_at.year == 2025
    assert anthropic_client(stub).models.retrieve("stub").display_name == "stub"
    plain = requests.get(stub.url + "/v1/models", timeout=5).json()
    assert plain["object"] == "list" and plain["data"][0]["object"] == "model"
    keyed = requests.get(stub.url + "/v1/models", headers={"x-api-key": "k"}, timeout=5).json()
    assert keyed["data"][0]["type"] == "model" and keyed["last_id"] == "stub-embed"


# =============================================================================================
# fake OpenAI and Ollama backends
# =============================================================================================


def test_create_over_each_backend_translates_both_ways(backend, anthropic_client):
    backend.script_chat(["Hello", " world"])
    message = anthropic_client(backend.proxy).messages.create(
        model=backend.model, max_tokens=64, system=[BILLING, {"type": "text", "text": "Be brief."}],
        extra_body={"temperature": 0.5}, stop_sequences=["END"], messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "Hello world" and message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 2
    sent = backend.upstream_chat()
    assert sent_messages(backend)[0] == {"role": "system", "content": "Be brief."}  # no billing nonce
    if backend.kind == "openai":
        assert (sent["max_tokens"], sent["temperature"], sent["stop"], sent["stream"]) == (64, 0.5, ["END"], False)
    else:
        assert sent["options"] == {"temperature": 0.5, "num_predict": 64, "stop": ["END"]} and not sent["stream"]


def test_stream_over_each_backend_follows_the_documented_event_order(backend):
    backend.script_chat(["Hel", "lo"])
    r = messages_raw(backend.url, {"model": backend.model, "max_tokens": 64, "stream": True,
                                   "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    said = check_order(sse_events(r.content))
    assert [(b["type"], b["value"]) for b in said["blocks"]] == [("text", "Hello")]
    assert said["stop_reason"] == "end_turn" and said["usage"]["output_tokens"] == 2
    assert backend.upstream_chat()["stream"] is True


def test_sdk_stream_over_each_backend_with_thinking(backend, anthropic_client):
    backend.script_chat(["42"], **({"reasoning": ["let me", " think"]} if backend.kind == "openai"
                                   else {"thinking": ["let me", " think"]}))
    with anthropic_client(backend.proxy).messages.stream(
            model=backend.model, max_tokens=64, thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "?"}]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "let me think" and final.content[1].text == "42"
    sent = backend.upstream_chat()
    assert sent.get("think") is True or sent.get("chat_template_kwargs") == {"enable_thinking": True}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_tool_use_round_trip_over_each_backend(backend, anthropic_client, stream):
    script_tool_call(backend)
    client = anthropic_client(backend.proxy)
    ask = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        with client.messages.stream(model=backend.model, max_tokens=64, tools=TOOLS, messages=ask) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(model=backend.model, max_tokens=64, tools=TOOLS, messages=ask)
    [tool_use] = first.content
    assert (tool_use.id, tool_use.name, tool_use.input, first.stop_reason) == (
        "call_up1", "get_weather", {"city": "Paris"}, "tool_use")
    backend.script_chat(["It is sunny."])
    second = client.messages.create(model=backend.model, max_tokens=64, tools=TOOLS, messages=[
        *ask, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"},
                                     {"type": "text", "text": "and tomorrow?"}]}])
    assert second.content[0].text == "It is sunny."
    sent = sent_messages(backend)
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert sent[1]["tool_calls"][0]["id"] == "call_up1" and sent[2]["tool_call_id"] == "call_up1"
    assert sent[3]["content"] == "and tomorrow?"


def test_without_keepalive_the_opening_event_goes_out_before_the_backends_first_byte(backend_setup):
    openai_backend = backend_setup("openai", KEEPALIVE_S=0)
    gate = threading.Event()
    openai_backend.script_chat(["late"], gate=gate, gate_at=0)
    r = messages_raw(openai_backend.url, {"model": openai_backend.model, "max_tokens": 8, "stream": True,
                                          "messages": [{"role": "user", "content": "hi"}]}, stream=True)
    try:
        first = r.raw.read(15)  # `event: message_` while the backend has sent no byte of its body
        assert first == b"event: message_" and not gate.is_set()
    finally:
        gate.set()
    rest = first + r.raw.read()
    assert check_order(sse_events(rest))["blocks"][0]["value"] == "late"


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_a_slow_first_byte_is_preceded_by_message_start_and_pings(backend_setup, anthropic_client, kind):
    setup = backend_setup(kind, KEEPALIVE_S="0.3")
    setup.script_chat(["Hello", " world"], hang=1.2)
    started = time.monotonic()
    r = messages_raw(setup.url, {"model": setup.model, "max_tokens": 8, "stream": True,
                                 "messages": [{"role": "user", "content": "hi"}]}, stream=True)
    pieces = r.iter_content(chunk_size=None)
    first = next(pieces)
    assert first.startswith(b"event: message_start\n") and time.monotonic() - started < 1.0
    events = sse_events(first + b"".join(pieces))
    names = [name for name, _ in events]
    assert names[1:3] == ["ping", "ping"] and names.index("content_block_start") > names.index("ping")
    said = check_order(events)
    assert said["blocks"][0]["value"] == "Hello world" and said["stop_reason"] == "end_turn"
    client = anthropic_client(setup.proxy, timeout=0.8)  # read timeout shorter than the backend's wait
    with client.messages.stream(model=setup.model, max_tokens=8, messages=[{"role": "user", "content": "hi"}]) as s:
        assert s.get_final_message().content[0].text == "Hello world"


def test_a_stream_refused_before_the_first_beat_keeps_its_status(stub):
    r = messages_raw(stub.url, {"model": "nope", "max_tokens": 5, "stream": True,
                                "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_a_backend_that_breaks_mid_stream_ends_with_an_error_event(backend, anthropic_client):
    backend.script_chat(["Hel", "lo", " never"], close_after=2)
    r = messages_raw(backend.url, {"model": backend.model, "max_tokens": 8, "stream": True,
                                   "messages": [{"role": "user", "content": "hi"}]})
    said = check_order(sse_events(r.content))
    assert said["error"]["type"] == "api_error" and said["blocks"][0]["value"].startswith("Hel")
    with pytest.raises(anthropic.APIStatusError), anthropic_client(backend.proxy).messages.stream(
            model=backend.model, max_tokens=8, messages=[{"role": "user", "content": "hi"}]) as stream:
        stream.get_final_message()


def test_count_tokens_uses_llamacpps_tokenizer(fake_upstream, make_proxy, anthropic_client):
    fake_upstream.serve_llamacpp("smollm2")
    fake_upstream.default("POST", "/tokenize", json_reply({"tokens": list(range(17))}))
    proxy = make_proxy(BACKEND_TYPE="openai", BACKEND_FLAVOR="llamacpp")
    counted = anthropic_client(proxy).messages.count_tokens(
        model="smollm2", system="Be brief.", messages=[{"role": "user", "content": "hello"}])
    assert counted.input_tokens == 17 + 8
    assert fake_upstream.last("/tokenize").json == {"content": "Be brief.\nhello"}


# =============================================================================================
# errors and keys
# =============================================================================================


@pytest.mark.parametrize("body, status, kind", [
    ({"model": "stub", "messages": [{"role": "user", "content": "x"}]}, 400, "invalid_request_error"),
    ({"model": "stub", "max_tokens": 5, "messages": "x"}, 400, "invalid_request_error"),
    ({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, 404, "not_found_error"),
])
def test_errors_come_in_anthropics_shape(stub, body, status, kind):
    r = messages_raw(stub.url, body)
    assert r.status_code == status
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == kind and r.json()["request_id"]


def test_a_body_that_is_not_json_is_a_400_in_anthropics_shape(stub, anthropic_client):
    r = post(stub.url + "/v1/messages", raw=b"{nope", headers=HEADERS)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError):
        anthropic_client(stub).messages.create(model="stub", max_tokens=5, messages=[])


def test_a_backend_error_status_passes_through_in_anthropics_shape(openai_backend):
    openai_backend.fake.default("POST", "/v1/chat/completions",
                                json_reply(fakes.openai_error("context too long"), status=400))
    r = messages_raw(openai_backend.url, {"model": openai_backend.model, "max_tokens": 5, "stream": True,
                                          "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"] == {"type": "invalid_request_error",
                                                          "message": "context too long"}


def test_an_error_inside_a_200_answer_is_a_502_in_anthropics_shape(backend):
    error = {"error": {"message": "out of memory"}} if backend.kind == "openai" else {"error": "out of memory"}
    backend.fake.default("POST", backend.chat_path, json_reply(error))
    r = messages_raw(backend.url, {"model": backend.model, "max_tokens": 5,
                                   "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 502 and r.json()["error"] == {"type": "api_error", "message": "out of memory"}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_unreachable_backend_is_a_502_api_error_naming_it(make_proxy, stream):
    from tests.support import free_port

    proxy = make_proxy(BACKEND_TYPE="openai", BACKEND_URL=f"http://127.0.0.1:{free_port()}", MODEL_MAP="m=m")
    r = messages_raw(proxy.url, {"model": "m", "max_tokens": 5, "stream": stream,
                                 "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 502 and r.json()["error"]["type"] == "api_error"
    assert "connect" in r.json()["error"]["message"]


def test_keys_are_taken_as_x_api_key_or_bearer_and_refusals_are_anthropic_errors(make_proxy, anthropic_client):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS=0, API_KEYS="dev:sk-test-1")
    ask = {"model": "stub", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert anthropic_client(proxy, api_key="sk-test-1").messages.create(**ask).content  # x-api-key
    token_client = anthropic.Anthropic(base_url=proxy.url, auth_token="sk-test-1", max_retries=0)
    assert token_client.messages.create(**ask).content  # Authorization: Bearer (ANTHROPIC_AUTH_TOKEN)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic_client(proxy, api_key="wrong").messages.create(**ask)
    assert caught.value.body["error"]["type"] == "authentication_error"


# =============================================================================================
# the log
# =============================================================================================


def test_the_exchange_is_recorded_with_front_anthropic_and_the_last_user_text(stub, anthropic_client):
    client = anthropic_client(stub)
    first = client.messages.create(model="stub", max_tokens=100, tools=TOOLS,
                                   messages=[{"role": "user", "content": "call get_weather please"}])
    client.messages.create(model="stub", max_tokens=100, tools=TOOLS, messages=[
        {"role": "user", "content": [{"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                                     {"type": "text", "text": "call get_weather please"}]},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[0].id, "content": "x"}]}])
    rows = wait_rows(store_of(stub), 2)
    assert {row["front"] for row in rows} == {"anthropic"}
    assert [row["preview"] for row in rows] == ["call get_weather please"] * 2
    assert rows[1]["tool_calls"] == 1 and rows[0]["endpoint"] == "/v1/messages"
    detail = one(store_of(stub), rows[0]["id"])
    answer = detail["answer"] if isinstance(detail["answer"], dict) else json.loads(detail["answer"])
    assert answer["content"] == "The tool returned: x"


# =============================================================================================
# Claude Code's recorded shape, a client that leaves
# =============================================================================================


def test_claude_codes_request_shape_replayed_through_the_proxy(backend_setup):
    setup = backend_setup("openai", MODEL_MAP="claude-*=qwen3-8b")
    script_tool_call(setup, "call_next")
    request = fakes.load_json("claude_code_messages.SYNTHETIC.request.json")
    r = messages_raw(setup.url, request, headers={"anthropic-beta": "interleaved-thinking-2025-05-14",
                                                  "X-Claude-Code-Session-Id": "5e551011"})
    said = check_order(sse_events(r.content))
    assert said["stop_reason"] == "tool_use" and said["blocks"][0]["start"]["id"] == "call_next"
    sent = setup.upstream_chat()
    assert sent["model"] == "qwen3-8b" and [t["function"]["name"] for t in sent["tools"]] == ["Read", "Bash"]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool", "user", "assistant",
                                                     "tool", "tool", "user"]
    assert "x-anthropic-billing-header" not in json.dumps(sent)
    [row] = wait_rows(store_of(setup.proxy), 1)
    assert row["model"] == "claude-sonnet-4-6" and row["preview"] == "Thanks, summarise please."


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_a_client_that_leaves_mid_stream_closes_the_backend_request(backend_setup, kind):
    setup = backend_setup(kind)
    setup.script_chat(["FIRSTPIECE"] + [f" w{i}" for i in range(300)], delay=0.01)
    r = messages_raw(setup.url, {"model": setup.model, "max_tokens": 500, "stream": True,
                                 "messages": [{"role": "user", "content": "hi"}]}, stream=True)
    seen = b""
    for chunk in r.iter_content(chunk_size=None):
        seen += chunk
        if b"FIRSTPIECE" in seen:
            break
    r.close()
    (ex,) = setup.fake.exchanges_to(setup.chat_path)
    assert ex.done.wait(5), "the backend kept streaming after the client left"
    assert ex.client_disconnected and not ex.completed
    [row] = wait_rows(store_of(setup.proxy), 1)
    assert row["outcome"] == "cancelled" and row["front"] == "anthropic"


def test_under_gevent_the_sdk_streams_and_a_leaving_client_closes_the_backend(fake_upstream, wsgi_proxy,
                                                                              anthropic_client):
    fake_upstream.serve_openai_models("qwen3-8b")
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["Hi", " there"]))
    proxy = wsgi_proxy(BACKEND_TYPE="openai")
    with anthropic_client(proxy).messages.stream(model="qwen3-8b", max_tokens=8,
                                                 messages=[{"role": "user", "content": "hi"}]) as stream:
        assert stream.get_final_message().content[0].text == "Hi there"
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(
        ["FIRSTPIECE"] + [f" w{i}" for i in range(300)], delay=0.01))
    r = messages_raw(proxy.url, {"model": "qwen3-8b", "max_tokens": 500, "stream": True,
                                 "messages": [{"role": "user", "content": "again"}]}, stream=True)
    seen = b""
    for chunk in r.iter_content(chunk_size=None):
        seen += chunk
        if b"FIRSTPIECE" in seen:
            break
    r.close()
    ex = fake_upstream.exchanges_to("/v1/chat/completions")[-1]
    assert ex.done.wait(5) and ex.client_disconnected and not ex.completed
