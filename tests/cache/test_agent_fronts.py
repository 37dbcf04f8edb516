"""The response cache at the agent fronts, on real sockets with the official SDKs: an Anthropic message and an
OpenAI Responses response asked twice cost the backend one call, and the hit comes back in the front's own
shape, whole or as the full event sequence (checked like the live fronts' streams); a front and an equivalent
/v1/chat/completions request share an entry; sampled requests, no-cache, errors and cut streams are not
served from it; hits are logged as cached under their front and counted."""
from __future__ import annotations

import json

import pytest
import requests
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from tests.support import fakes
from tests.support.anthropic_events import check_order, sse_events
from tests.support.store import one, store_of, wait_rows

KINDS = pytest.mark.parametrize("kind", ["openai", "ollama"])
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}
HELLO = [{"role": "user", "content": "Say hello."}]
EVENT = TypeAdapter(ResponseStreamEvent)
ZERO = {"temperature": 0}  # the anthropic SDK has no temperature argument any more; the API still takes it


@pytest.fixture
def cached_setup(backend_setup):
    def make(kind: str, **env):
        setup = backend_setup(kind, CACHE="memory", **env)
        setup.script_chat(("Hello", " there", " world"))
        return setup
    return make


def messages_raw(setup, stream=False, headers=None, **extra) -> requests.Response:
    body = {"model": setup.model, "max_tokens": 100, "messages": HELLO, "temperature": 0, "stream": stream, **extra}
    return requests.post(setup.url + "/v1/messages", json=body, headers={**ANTHROPIC_HEADERS, **(headers or {})},
                         timeout=10)


def responses_raw(setup, stream=False, headers=None, **extra) -> requests.Response:
    body = {"model": setup.model, "input": "Say hello.", "temperature": 0, "stream": stream, **extra}
    return requests.post(setup.url + "/v1/responses", json=body, headers=headers or {}, timeout=10)


def response_events(raw: bytes) -> list:
    """Each Responses event validated by the SDK's own models (unknown shapes fail)."""
    return [EVENT.validate_python(json.loads(line[6:])) for line in raw.split(b"\n") if line.startswith(b"data: ")]


# --- Anthropic Messages ------------------------------------------------------------------------------------

@KINDS
def test_a_message_asked_twice_costs_one_backend_call_and_the_hit_is_a_message(cached_setup, kind,
                                                                               anthropic_client):
    setup = cached_setup(kind)
    client = anthropic_client(setup.proxy)
    ask = {"model": setup.model, "max_tokens": 100, "messages": HELLO, "extra_body": ZERO}
    live = client.messages.with_raw_response.create(**ask)
    hit = client.messages.with_raw_response.create(**ask)
    assert (live.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    first, second = live.parse(), hit.parse()
    assert second.type == "message" and second.model == setup.model and second.id != first.id
    assert [b.text for b in second.content] == [b.text for b in first.content] == ["Hello there world"]
    assert second.stop_reason == first.stop_reason == "end_turn"
    assert (second.usage.input_tokens, second.usage.output_tokens) == (first.usage.input_tokens,
                                                                      first.usage.output_tokens)
    assert len(setup.chat_calls()) == 1


@KINDS
def test_a_streamed_message_is_kept_and_a_hit_streams_the_full_event_sequence(cached_setup, kind,
                                                                              anthropic_client):
    setup = cached_setup(kind)
    live = messages_raw(setup, stream=True)
    assert live.headers["X-Cache"] == "MISS"
    said_live = check_order(sse_events(live.content))
    hit = messages_raw(setup, stream=True)
    assert hit.headers["X-Cache"] == "HIT" and hit.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(hit.content)
    said = check_order(events)
    assert [n for n, _ in events][-2:] == ["message_delta", "message_stop"]
    assert [(b["type"], b["value"]) for b in said["blocks"]] == [("text", "Hello there world")]
    assert said["stop_reason"] == said_live["stop_reason"] == "end_turn" and said["error"] is None
    assert said["usage"]["output_tokens"] == said_live["usage"]["output_tokens"] > 0
    with anthropic_client(setup.proxy).messages.stream(model=setup.model, max_tokens=100, messages=HELLO,
                                                       extra_body=ZERO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["Hello", " there", " world"] and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == said["usage"]["output_tokens"]
    assert len(setup.chat_calls()) == 1


def test_without_keep_alives_a_live_and_a_cached_message_stream_are_both_sse(cached_setup):
    setup = cached_setup("openai", KEEPALIVE_S=0)
    for expected in ("MISS", "HIT"):
        r = messages_raw(setup, stream=True)
        assert r.headers["X-Cache"] == expected and r.headers["Content-Type"].startswith("text/event-stream")
        assert check_order(sse_events(r.content))["stop_reason"] == "end_turn"


def test_a_tool_use_with_thinking_is_replayed_as_blocks(backend_setup, anthropic_client):
    setup = backend_setup("openai", CACHE="memory")
    setup.script_chat((), reasoning=("Think", "ing"), tool_calls=[("get_weather", '{"city": "Paris"}', "call_1")])
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    messages_raw(setup, tools=tools)
    said = check_order(sse_events(messages_raw(setup, stream=True, tools=tools).content))
    assert [b["type"] for b in said["blocks"]] == ["thinking", "tool_use"]
    assert said["blocks"][0]["value"] == "Thinking" and json.loads(said["blocks"][1]["value"]) == {"city": "Paris"}
    assert said["stop_reason"] == "tool_use"
    whole = anthropic_client(setup.proxy).messages.create(model=setup.model, max_tokens=100, messages=HELLO,
                                                          extra_body=ZERO, tools=tools)
    assert [b.type for b in whole.content] == ["thinking", "tool_use"] and whole.content[1].input == {"city": "Paris"}
    assert len(setup.chat_calls()) == 1


def test_a_message_and_the_equivalent_chat_completion_share_an_entry(cached_setup, openai_client):
    setup = cached_setup("openai")
    assert messages_raw(setup).headers["X-Cache"] == "MISS"
    hit = openai_client(setup.proxy).chat.completions.with_raw_response.create(
        model=setup.model, messages=HELLO, temperature=0, max_tokens=100)
    assert hit.headers["X-Cache"] == "HIT" and hit.parse().choices[0].message.content == "Hello there world"
    assert len(setup.chat_calls()) == 1


def test_sampled_messages_no_cache_and_errors_are_answered_by_the_backend(cached_setup, fake_upstream):
    setup = cached_setup("openai")
    assert [messages_raw(setup, temperature=1).headers["X-Cache"] for _ in range(2)] == ["BYPASS", "BYPASS"]
    fake_upstream.expect("POST", "/v1/chat/completions",
                         fakes.json_reply(fakes.openai_error("the model crashed", "server_error"), status=500))
    failed = messages_raw(setup)
    assert failed.status_code >= 500 and failed.json()["type"] == "error" and failed.headers["X-Cache"] == "MISS"
    assert messages_raw(setup, headers={"Cache-Control": "no-cache"}).headers["X-Cache"] == "BYPASS"
    assert messages_raw(setup).headers["X-Cache"] == "HIT"  # the no-cache answer was kept
    assert len(setup.chat_calls()) == 4


@KINDS
def test_a_message_stream_the_backend_broke_is_not_kept(backend_setup, kind):
    setup = backend_setup(kind, CACHE="memory")
    setup.script_chat(("Hello", " there", " world"), close_after=2)
    broken = messages_raw(setup, stream=True)
    assert broken.headers["X-Cache"] == "MISS" and check_order(sse_events(broken.content))["error"] is not None
    assert messages_raw(setup, stream=True).headers["X-Cache"] == "MISS"
    assert len(setup.chat_calls()) == 2


# --- OpenAI Responses ------------------------------------------------------------------------------------

@KINDS
def test_a_response_asked_twice_costs_one_backend_call_whole_and_streamed(cached_setup, kind, openai_client):
    setup = cached_setup(kind)
    client = openai_client(setup.proxy)
    live = client.responses.with_raw_response.create(model=setup.model, input="Say hello.", temperature=0)
    hit = client.responses.with_raw_response.create(model=setup.model, input="Say hello.", temperature=0)
    assert (live.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    first, second = live.parse(), hit.parse()
    assert second.object == "response" and second.status == "completed" and second.id != first.id
    assert second.output_text == first.output_text == "Hello there world" and second.model == setup.model
    assert (second.usage.input_tokens, second.usage.output_tokens) == (first.usage.input_tokens,
                                                                      first.usage.output_tokens)
    events = list(client.responses.create(model=setup.model, input="Say hello.", temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["Hello", " there", " world"]
    final = events[-1].response
    assert final.output_text == "Hello there world" and final.usage.output_tokens == first.usage.output_tokens
    assert len(setup.chat_calls()) == 1


@KINDS
def test_a_streamed_response_is_kept_and_replayed_with_events_the_sdk_models_accept(cached_setup, kind):
    setup = cached_setup(kind)
    live = responses_raw(setup, stream=True)
    assert live.headers["X-Cache"] == "MISS"
    hit = responses_raw(setup, stream=True)
    assert hit.headers["X-Cache"] == "HIT"
    live_events, events = response_events(live.content), response_events(hit.content)
    assert [e.type for e in events] == [e.type for e in live_events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "Hello there world"
    assert len(setup.chat_calls()) == 1


def test_a_function_call_is_replayed_as_a_function_call_item(backend_setup, openai_client):
    setup = backend_setup("openai", CACHE="memory")
    setup.script_chat((), tool_calls=[("shell_command", '{"command": "ls"}', "call_1")])
    tool = {"type": "function", "name": "shell_command", "parameters": {"type": "object", "properties": {}}}
    client = openai_client(setup.proxy)
    kw = {"model": setup.model, "input": "list files", "tools": [tool], "temperature": 0}
    client.responses.create(**kw)
    events = list(client.responses.create(stream=True, **kw))
    (call,) = events[-1].response.output
    assert call.type == "function_call" and call.name == "shell_command" and call.call_id == "call_1"
    assert json.loads(call.arguments) == {"command": "ls"}
    (whole,) = client.responses.create(**kw).output
    assert whole.type == "function_call" and json.loads(whole.arguments) == {"command": "ls"}
    assert len(setup.chat_calls()) == 1


def test_a_response_and_the_equivalent_chat_completion_share_an_entry(cached_setup, openai_client):
    setup = cached_setup("openai")
    assert responses_raw(setup).headers["X-Cache"] == "MISS"
    hit = openai_client(setup.proxy).chat.completions.with_raw_response.create(
        model=setup.model, messages=HELLO, temperature=0)
    assert hit.headers["X-Cache"] == "HIT"
    assert len(setup.chat_calls()) == 1


def test_sampled_responses_no_store_and_cut_streams_are_not_kept(backend_setup):
    setup = backend_setup("openai", CACHE="memory")
    setup.script_chat(("Hello", " there", " world"), close_after=2)
    broken = responses_raw(setup, stream=True)
    assert broken.headers["X-Cache"] == "MISS" and response_events(broken.content)[-1].type == "response.failed"
    setup.script_chat(("Hello",))
    assert responses_raw(setup, temperature=1).headers["X-Cache"] == "BYPASS"
    assert responses_raw(setup, headers={"Cache-Control": "no-store"}).headers["X-Cache"] == "MISS"
    assert responses_raw(setup).headers["X-Cache"] == "MISS"
    assert responses_raw(setup).headers["X-Cache"] == "HIT"
    assert len(setup.chat_calls()) == 4


def test_an_empty_probe_is_answered_here_and_not_looked_up(cached_setup):
    setup = cached_setup("openai")
    for _ in range(2):
        r = responses_raw(setup, input=[])
        assert r.status_code == 200 and r.json()["output"] == [] and r.headers["X-Cache"] == "BYPASS"
    assert setup.chat_calls() == []


def test_an_unknown_model_is_refused_in_each_fronts_shape_with_the_cache_on(cached_setup):
    setup = cached_setup("openai")
    message = messages_raw(setup, model="no-such-model")
    assert message.status_code == 404 and message.json()["type"] == "error"
    assert message.headers["X-Cache"] == "BYPASS"
    response = responses_raw(setup, model="no-such-model")
    assert response.status_code == 404 and "error" in response.json() and response.headers["X-Cache"] == "BYPASS"
    assert setup.chat_calls() == []


# --- the log and metrics -----------------------------------------------------------------------------------

def test_front_hits_are_logged_as_cached_under_their_front_and_counted(cached_setup):
    setup = cached_setup("openai")
    for expected in ("MISS", "HIT"):
        assert messages_raw(setup).headers["X-Cache"] == expected
        assert responses_raw(setup, stream=True, input=[{"role": "user", "content": "Other."}]).headers[
            "X-Cache"] == expected
    store = store_of(setup.proxy)
    hits = wait_rows(store, 2, cached="1")
    assert sorted(row["front"] for row in hits) == ["anthropic", "responses"]
    for row in hits:
        detail = one(store, row["id"])
        assert detail["backend_name"] == "cache" and detail["answer"]["content"] == "Hello there world"
    metrics = requests.get(setup.url + "/metrics", timeout=5).text
    assert 'llm_proxy_cache_requests_total{result="hit"} 2.0' in metrics
    assert 'llm_proxy_cache_requests_total{result="miss"} 2.0' in metrics
