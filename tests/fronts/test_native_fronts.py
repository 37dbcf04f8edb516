"""The agent fronts passed through to a backend that speaks them itself (BACKEND_NATIVE, BACKENDS_FILE `native`),
over real sockets: the official `anthropic` SDK and the `openai` SDK's `responses.create` against the proxy in
front of fake `/v1/messages` and `/v1/responses` upstreams, streamed and whole. The bytes reach the client as the
backend sent them (its model name put back to the client's), the backend gets the sanitised body, the log keeps
the assembled answer; a backend without `native` is still translated; failover and keep-alives still work."""
from __future__ import annotations

import json
import tomllib

import pytest
import requests

from proxy import backendsfile as bf
from proxy import create_app
from proxy.config import ConfigError, Settings
from tests.support import fake_agent_apis as native
from tests.support import fakes
from tests.support.anthropic_events import check_order, sse_events
from tests.support.pool_proxy import PoolProxy, backend
from tests.support.store import one, store_of, wait_rows

N_CTX = 2048
CLIENT_MODEL = "claude-sonnet-4-5"  # MODEL_MAP: the backend's name for it is smollm2
BILLING = {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.162.553; cc_entrypoint=cli; cch=3f2a1;"}
SYSTEM = [BILLING, {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}]
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def renamed(chunks: list[bytes]) -> bytes:
    """The fake's bytes as the client must see them: only the model name put back."""
    return b"".join(chunks).replace(b'"model":"smollm2"', f'"model":"{CLIENT_MODEL}"'.encode())


@pytest.fixture
def llamacpp(fake_upstream):
    """A llama-server-like backend (n_ctx 2048) that also serves /v1/messages and /v1/responses itself."""
    fake_upstream.serve_llamacpp("smollm2", n_ctx=N_CTX)
    fake_upstream.default("POST", "/v1/messages", native.messages_responder(thinking="hmm",
                                                                           tool=("get_weather", {"city": "Paris"})))
    fake_upstream.default("POST", "/v1/responses", native.responses_responder(call=("shell", {"command": "ls"})))
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["translated"]))
    return fake_upstream


@pytest.fixture
def proxy(make_proxy, llamacpp):
    return make_proxy(BACKEND_NATIVE="messages,responses", MODEL_MAP=f"{CLIENT_MODEL}=smollm2,codex-m=smollm2")


def ask(stream: bool) -> dict:
    return {"model": CLIENT_MODEL, "max_tokens": 32000, "stream": stream, "system": SYSTEM, "tools": [WEATHER],
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}


# --- Anthropic Messages ------------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_messages_bytes_reach_the_client_unchanged_but_for_the_model_name(proxy, llamacpp, stream):
    r = requests.post(proxy.url + "/v1/messages?beta=true", json=ask(stream),
                      headers={"anthropic-version": "2023-06-01"}, timeout=10)
    assert r.status_code == 200
    model = "smollm2"
    expected = native.messages_events(model, ["Hello", " there"], thinking="hmm", tool=("get_weather", {"city": "Paris"}))
    if stream:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.content == renamed(expected)
        said = check_order(sse_events(r.content))
        assert [b["type"] for b in said["blocks"]] == ["thinking", "text", "tool_use"]
    else:
        assert r.json() == {**native.message_object(model, ["Hello", " there"], tool=("get_weather", {"city": "Paris"})),
                            "model": CLIENT_MODEL}
    assert llamacpp.calls("/v1/chat/completions") == []


def test_messages_backend_gets_the_sanitised_body(proxy, llamacpp):
    body = ask(True)
    r = requests.post(proxy.url + "/v1/messages", json=body, timeout=10)
    assert r.status_code == 200
    sent = llamacpp.last("/v1/messages").json
    assert sent["model"] == "smollm2"
    assert sent["system"] == SYSTEM[1:]  # the billing block gone, cache_control kept
    assert 0 < sent["max_tokens"] < N_CTX
    assert sent["tools"] == [WEATHER] and sent["messages"] == body["messages"]


def test_sanitising_off_sends_the_body_as_it_came_but_for_the_model(make_proxy, llamacpp):
    proxy = make_proxy(BACKEND_NATIVE="messages", AGENT_SANITIZE="false", MODEL_MAP=f"{CLIENT_MODEL}=smollm2")
    requests.post(proxy.url + "/v1/messages", json=ask(False), timeout=10)
    sent = llamacpp.last("/v1/messages").json
    assert sent["system"] == SYSTEM and sent["max_tokens"] == 32000 and sent["model"] == "smollm2"


def test_the_anthropic_sdk_reads_a_native_stream_and_a_whole_message(proxy, anthropic_client):
    client = anthropic_client(proxy)
    kw = {k: v for k, v in ask(True).items() if k != "stream"}
    with client.messages.stream(**kw) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello there" and final.model == CLIENT_MODEL and final.stop_reason == "tool_use"
    assert final.content[-1].input == {"city": "Paris"} and final.usage.output_tokens == 5
    whole = client.messages.create(**kw)
    assert whole.content[0].text == "Hello there" and whole.usage.input_tokens == 11 and whole.model == CLIENT_MODEL


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_the_log_keeps_the_assembled_messages_answer(proxy, stream):
    requests.post(proxy.url + "/v1/messages", json=ask(stream), timeout=10)
    store = store_of(proxy)
    (row,) = wait_rows(store, 1)
    full = one(store, row["id"])
    answer = full["answer"]
    assert answer["content"] == "Hello there"
    assert answer["thinking"] == ("hmm" if stream else "")
    assert [c["function"]["name"] for c in answer["tool_calls"]] == ["get_weather"]
    assert json.loads(answer["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert (answer["prompt_tokens"], answer["completion_tokens"]) == (11, 5)
    assert answer["finish_reason"] == "tool_calls" and row["outcome"] == "ok"
    page = requests.get(f"{proxy.url}/ui/logs/{row['id']}", timeout=10)
    assert page.status_code == 200 and "Hello there" in page.text and "get_weather" in page.text


@pytest.mark.parametrize("front", ["messages", "responses"])
def test_a_stream_longer_than_the_logs_copy_still_records_its_usage(make_proxy, llamacpp, front):
    llamacpp.expect("POST", f"/v1/{front}", (native.messages_responder if front == "messages"
                                             else native.responses_responder)(["word "] * 400))
    proxy = make_proxy(BACKEND_NATIVE=front, LOG_MAX_BODY_BYTES="4096", MODEL_MAP=f"{CLIENT_MODEL}=smollm2,codex-m=smollm2")
    r = requests.post(f"{proxy.url}/v1/{front}", json=ask(True) if front == "messages" else codex(True), timeout=10)
    assert len(r.content) > 4096
    (row,) = wait_rows(store_of(proxy), 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == ((11, 5) if front == "messages" else (13, 4))


def test_a_cached_native_answer_is_replayed_as_the_front_shapes_it(make_proxy, llamacpp, anthropic_client):
    proxy = make_proxy(BACKEND_NATIVE="messages", CACHE="memory", MODEL_MAP=f"{CLIENT_MODEL}=smollm2")
    client = anthropic_client(proxy)
    kw = {**{k: v for k, v in ask(True).items() if k not in ("stream", "system")}, "extra_body": {"temperature": 0}}
    finals = []
    for _ in range(2):
        with client.messages.stream(**kw) as stream:
            finals.append(stream.get_final_message())
    first, second = finals
    assert len(llamacpp.calls("/v1/messages")) == 1
    assert [(b.type, getattr(b, "text", getattr(b, "thinking", None))) for b in second.content[:2]] == \
        [("thinking", "hmm"), ("text", "Hello there")]
    assert second.stop_reason == first.stop_reason == "tool_use" and second.content[-1].input == {"city": "Paris"}


def test_a_backend_error_is_answered_in_anthropics_shape(proxy, llamacpp):
    llamacpp.expect("POST", "/v1/messages", native.anthropic_error(400, "invalid_request_error", "bad tools"))
    r = requests.post(proxy.url + "/v1/messages", json=ask(True), timeout=10)
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "bad tools" in body["error"]["message"]


def test_a_native_messages_stream_cut_short_ends_with_an_error_event(proxy, llamacpp):
    llamacpp.expect("POST", "/v1/messages", native.messages_responder(close_after=4))
    r = requests.post(proxy.url + "/v1/messages", json=ask(True), timeout=10)
    said = check_order(sse_events(r.content))
    assert said["error"] is not None and said["blocks"]


@pytest.mark.parametrize("native_fronts", ["messages", ""], ids=["native", "translated"])
def test_a_messages_stream_without_keepalives_is_labelled_sse(make_proxy, llamacpp, native_fronts):
    proxy = make_proxy(BACKEND_NATIVE=native_fronts, KEEPALIVE_S="0", MODEL_MAP=f"{CLIENT_MODEL}=smollm2")
    r = requests.post(proxy.url + "/v1/messages", json=ask(True), timeout=10)
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert check_order(sse_events(r.content))["stop_reason"]


def test_without_native_the_messages_front_is_translated(make_proxy, llamacpp, anthropic_client):
    proxy = make_proxy(MODEL_MAP=f"{CLIENT_MODEL}=smollm2")
    message = anthropic_client(proxy).messages.create(**{k: v for k, v in ask(False).items() if k != "stream"})
    assert message.content[0].text == "translated"
    assert llamacpp.calls("/v1/messages") == [] and len(llamacpp.calls("/v1/chat/completions")) == 1


def test_keepalive_pings_come_before_the_backends_own_message_start(make_proxy, llamacpp, anthropic_client):
    llamacpp.expect("POST", "/v1/messages", native.messages_responder(hang=0.6))
    proxy = make_proxy(BACKEND_NATIVE="messages", KEEPALIVE_S="0.1", MODEL_MAP=f"{CLIENT_MODEL}=smollm2")
    r = requests.post(proxy.url + "/v1/messages", json=ask(True), stream=True, timeout=10)
    raw = b"".join(r.iter_content(None))
    events = sse_events(raw)
    pings = [name for name, _ in events[:events.index(next(e for e in events if e[0] == "message_start"))]]
    assert pings and set(pings) == {"ping"}
    assert [name for name, _ in events].count("message_start") == 1
    assert raw.endswith(renamed(native.messages_events("smollm2", ["Hello", " there"])))


def test_the_gevent_server_relays_a_slow_native_stream_to_the_sdk(wsgi_proxy, llamacpp, anthropic_client):
    llamacpp.expect("POST", "/v1/messages", native.messages_responder(hang=0.5))
    proxy = wsgi_proxy(BACKEND_NATIVE="messages", KEEPALIVE_S="0.1", MODEL_MAP=f"{CLIENT_MODEL}=smollm2")
    with anthropic_client(proxy).messages.stream(**{k: v for k, v in ask(True).items() if k != "stream"}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello there" and final.model == CLIENT_MODEL and final.id == native.MSG_ID


@pytest.mark.parametrize("front", ["messages", "responses"])
def test_failover_from_a_native_backend_to_a_translated_one(tmp_path, front):
    down = fakes.FakeUpstream().start()
    up = fakes.FakeUpstream().start()
    try:
        down.serve_openai_models("m")
        down.default("POST", f"/v1/{front}", native.anthropic_error(503, "overloaded_error", "busy"))
        up.serve_openai_models("m")
        up.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["from", " b"]))
        text = backend("a", down, f'native = ["{front}"]\nweight = 9\n') + backend("b", up) + \
            '[routing]\nstrategy = "weighted"\nretries = 1\n[[routing.rules]]\nmodel = "*"\nbackends = ["a", "b"]\n'
        proxy = PoolProxy.start(tmp_path, text, KEEPALIVE_S="5")
        try:
            body = {**ask(True), "model": "m"} if front == "messages" else {**codex(True), "model": "m"}
            r = requests.post(f"{proxy.url}/v1/{front}", json=body, timeout=10)
            if front == "messages":
                said = check_order(sse_events(r.content))
                assert said["blocks"][0]["value"] == "from b" and said["stop_reason"] == "end_turn"
            else:
                kinds = [json.loads(ln[6:])["type"] for ln in r.content.split(b"\n") if ln.startswith(b"data: ")]
                assert kinds[:2] == ["response.created", "response.in_progress"]
                assert kinds[-1] == "response.completed" and kinds.count("response.created") == 1
            assert len(down.calls(f"/v1/{front}")) == 1 and len(up.calls("/v1/chat/completions")) == 1
        finally:
            proxy.stop()
    finally:
        down.stop()
        up.stop()


# --- OpenAI Responses --------------------------------------------------------------------------------------

def codex(stream: bool) -> dict:
    return {"model": "codex-m", "instructions": "Be brief", "input": "list files", "stream": stream,
            "max_output_tokens": 50000, "tools": [{"type": "function", "name": "shell", "parameters": {}}]}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_responses_bytes_reach_the_client_unchanged_but_for_the_model_name(proxy, llamacpp, stream):
    r = requests.post(proxy.url + "/v1/responses", json=codex(stream), timeout=10)
    assert r.status_code == 200
    sent = llamacpp.last("/v1/responses").json
    assert sent["model"] == "smollm2" and 0 < sent["max_output_tokens"] < N_CTX and sent["input"] == "list files"
    if stream:
        expected = native.responses_events("smollm2", ["Hello", " there"], call=("shell", {"command": "ls"}))
        assert r.content == b"".join(expected).replace(b'"model":"smollm2"', b'"model":"codex-m"')
    else:
        assert r.json()["model"] == "codex-m" and r.json()["id"] == native.RESP_ID
    assert llamacpp.calls("/v1/chat/completions") == []


def test_the_openai_sdk_reads_native_responses(proxy, openai_client):
    client = openai_client(proxy)
    kw = {k: v for k, v in codex(True).items() if k != "stream"}
    events = list(client.responses.create(stream=True, **kw))
    final = events[-1].response
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert final.output_text == "Hello there" and final.output[1].name == "shell" and final.model == "codex-m"
    whole = client.responses.create(**kw)
    assert whole.output_text == "Hello there" and whole.usage.input_tokens == 13


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_the_log_keeps_the_assembled_responses_answer(proxy, stream):
    requests.post(proxy.url + "/v1/responses", json=codex(stream), timeout=10)
    store = store_of(proxy)
    (row,) = wait_rows(store, 1)
    answer = one(store, row["id"])["answer"]
    assert answer["content"] == "Hello there"
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in answer["tool_calls"]] == \
        [("shell", {"command": "ls"})]
    assert (answer["prompt_tokens"], answer["completion_tokens"]) == (13, 4)
    assert answer["finish_reason"] == "tool_calls"


def test_a_native_responses_stream_cut_short_ends_with_response_failed(proxy, llamacpp):
    llamacpp.expect("POST", "/v1/responses", native.responses_responder(close_after=5))
    r = requests.post(proxy.url + "/v1/responses", json=codex(True), timeout=10)
    kinds = [json.loads(line[6:])["type"] for line in r.content.split(b"\n") if line.startswith(b"data: ")]
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed"
    assert kinds.count("response.created") == 1


def test_a_backend_error_is_answered_in_openais_shape(proxy, llamacpp):
    llamacpp.expect("POST", "/v1/responses", fakes.json_reply(fakes.openai_error("no such tool"), status=400))
    r = requests.post(proxy.url + "/v1/responses", json=codex(False), timeout=10)
    assert r.status_code == 400 and "no such tool" in r.json()["error"]["message"]


def test_without_native_the_responses_front_is_translated(make_proxy, llamacpp, openai_client):
    proxy = make_proxy(BACKEND_NATIVE="messages", MODEL_MAP="codex-m=smollm2")
    response = openai_client(proxy).responses.create(model="codex-m", input="hi")
    assert response.output_text == "translated"
    assert llamacpp.calls("/v1/responses") == [] and len(llamacpp.calls("/v1/chat/completions")) == 1


# --- configuration -----------------------------------------------------------------------------------------

def test_a_bad_native_value_stops_start_up_naming_the_backend_and_the_key(tmp_path):
    with pytest.raises(ConfigError, match="BACKEND_NATIVE"):
        Settings.from_env({"BACKEND_NATIVE": "messages,chat"})
    assert Settings.from_env({"BACKEND_NATIVE": " Messages , responses"}).backend_native == ("messages", "responses")
    assert Settings.from_env({}).backend_native == ()
    path = tmp_path / "b.toml"
    path.write_text('[backends.gpu]\ntype = "openai"\nurl = "http://x"\nnative = ["messages", "chat"]\n')
    settings = Settings.from_env({"BACKENDS_FILE": str(path), "DATABASE_URL": f"sqlite:///{tmp_path}/p.db"})
    with pytest.raises(ConfigError, match="backend 'gpu', key 'native': expected a list of names among"):
        create_app(settings)


def test_the_native_key_of_a_backends_file_is_read():
    text = '[backends.a]\ntype = "openai"\nurl = "http://x"\nnative = ["Responses", "messages", "responses"]\n' \
           '[backends.b]\ntype = "ollama"\nurl = "http://y"\n'
    a, b = bf.parse(tomllib.loads(text), "b.toml", {}).backends
    assert a.native == ("responses", "messages") and b.native == ()
