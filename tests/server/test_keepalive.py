"""Early bytes over real sockets (KEEPALIVE_S): a streamed chat completion whose backend is slow to its first
byte gets SSE comment beats until the answer, and the official SDK, with a read timeout shorter than the
wait, gets the answer; a failure before anything went out keeps its status, a later one is an error event;
a client that leaves before the first byte closes the backend request and is recorded cancelled.

One test waits for real: a backend 25 s before its first token, the default KEEPALIVE_S (10 s) and a client
read timeout of 12 s (issue 14); the others use short waits."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
import requests

from tests.support.fakes import Reply, encode_sse, openai_error, openai_stream
from tests.support.store import store_of, wait_rows

BEAT = b": keep-alive\n\n"
MESSAGES = [{"role": "user", "content": "hi"}]


def chat(url: str, timeout: float = 10) -> requests.Response:
    body = {"model": "m", "stream": True, "messages": MESSAGES}
    return requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=timeout)


def sdk_answer(client: openai.OpenAI) -> str:
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_slow_first_byte_is_preceded_by_beats_and_then_answered(make_proxy, fake_upstream):
    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", "/v1/chat/completions", openai_stream(["Hello", " world"], hang=1.2))
    proxy = make_proxy(KEEPALIVE_S="0.3")
    started = time.monotonic()
    r = chat(proxy.url)
    assert r.status_code == 200
    pieces = r.iter_content(chunk_size=None)
    assert next(pieces) == BEAT and time.monotonic() - started < 1.0  # the head went out with the first beat
    raw = BEAT + b"".join(pieces)
    assert raw.count(BEAT) >= 3 and raw.index(b"data:") > raw.rindex(BEAT)
    assert b"Hello" in raw and raw.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("keepalive, answered", [("0.2", True), ("0", False)])
def test_sdk_with_a_read_timeout_shorter_than_the_prefill_gets_the_answer_only_with_beats(
        make_proxy, fake_upstream, openai_client, keepalive, answered):
    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", "/v1/chat/completions", openai_stream(["Hello", " world"], hang=1.5))
    client = openai_client(make_proxy(KEEPALIVE_S=keepalive), timeout=httpx.Timeout(0.8))
    if answered:
        assert sdk_answer(client) == "Hello world"
    else:
        with pytest.raises(openai.APITimeoutError):
            sdk_answer(client)


def test_a_25_second_prefill_with_the_default_keepalive_never_times_the_client_out(
        make_proxy, fake_upstream, openai_client):
    """The one real-time test (25 s): KEEPALIVE_S at its default, the SDK's read timeout at 12 s."""
    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", "/v1/chat/completions", openai_stream(["Hello", " world"], hang=25))
    proxy = make_proxy()
    assert proxy.settings.keepalive_s == 10
    client = openai_client(proxy, timeout=httpx.Timeout(12.0))
    started = time.monotonic()
    assert sdk_answer(client) == "Hello world"
    assert time.monotonic() - started >= 25


def test_a_failure_before_the_first_beat_keeps_its_status(make_proxy, fake_upstream, openai_client):
    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", "/v1/chat/completions",
                          Reply(status=400, headers={"Content-Type": "application/json"},
                                chunks=[json.dumps(openai_error("the prompt is too long")).encode()]))
    proxy = make_proxy(KEEPALIVE_S="5", CORS_ORIGINS="http://app.example")
    r = requests.post(proxy.url + "/v1/chat/completions", timeout=10, headers={"Origin": "http://app.example"},
                      json={"model": "m", "stream": True, "messages": MESSAGES})
    assert r.status_code == 400 and "too long" in r.json()["error"]["message"]
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["Access-Control-Allow-Origin"] == "http://app.example"  # the head's CORS headers kept
    assert len(r.headers["X-Request-ID"].split(",")) == 1
    with pytest.raises(openai.BadRequestError):
        sdk_answer(openai_client(proxy))
    [row, _] = wait_rows(store_of(proxy), 2)
    assert (row["status"], row["outcome"]) == (400, "backend_error")


def test_a_failure_after_a_beat_is_an_error_event_and_recorded(make_proxy, fake_upstream):
    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", "/v1/chat/completions",
                          Reply(status=500, hang=0.8, headers={"Content-Type": "application/json"},
                                chunks=[json.dumps(openai_error("out of memory")).encode()]))
    proxy = make_proxy(KEEPALIVE_S="0.2")
    r = chat(proxy.url)
    assert r.status_code == 200
    raw = r.content
    assert raw.startswith(BEAT) and raw.endswith(b"data: [DONE]\n\n")
    error = json.loads(raw.split(b"data: ")[1].split(b"\n")[0])["error"]
    assert "out of memory" in error["message"] and error["type"] == "server_error"
    [row] = wait_rows(store_of(proxy), 1)
    assert (row["status"], row["outcome"]) == (200, "backend_error") and "out of memory" in row["error"]


@pytest.mark.parametrize("phase", ["before the head", "before the first chunk"])
def test_a_client_leaving_before_the_first_byte_closes_the_backend_request(make_proxy, fake_upstream, phase):
    fake_upstream.serve_openai_models("m")
    gate = threading.Event()
    if phase == "before the head":
        reply = openai_stream(["late"], hang=2.0)
    else:
        reply = Reply(chunks=[encode_sse({"choices": []})], gate=gate, gate_at=0,
                      headers={"Content-Type": "text/event-stream"})
    fake_upstream.default("POST", "/v1/chat/completions", reply)
    proxy = make_proxy(KEEPALIVE_S="0.2")
    r = chat(proxy.url)
    assert next(r.iter_content(chunk_size=None)) == BEAT
    r.close()
    [row] = wait_rows(store_of(proxy), 1)
    assert row["outcome"] == "cancelled" and "client closed the connection" in row["error"]
    gate.set()
    [upstream] = fake_upstream.exchanges_to("/v1/chat/completions")
    assert upstream.done.wait(10) and upstream.client_disconnected and not upstream.completed


def test_keepalive_off_answers_as_before(make_proxy, fake_upstream):
    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", "/v1/chat/completions", openai_stream(["Hello"], hang=0.5))
    r = chat(make_proxy(KEEPALIVE_S="0").url)
    assert BEAT not in r.content and r.content.startswith(b"data: ")




def test_under_the_gevent_server_beats_flow_and_a_leaving_client_closes_the_backend(wsgi_proxy, fake_upstream):
    fake_upstream.serve_openai_models("m")
    fake_upstream.expect("POST", "/v1/chat/completions", openai_stream(["Hello"], hang=1.0),
                         openai_stream(["late"], hang=2.0))
    proxy = wsgi_proxy(KEEPALIVE_S="0.2")
    raw = chat(proxy.url).content
    assert raw.startswith(BEAT) and b"Hello" in raw and raw.endswith(b"data: [DONE]\n\n")
    r = chat(proxy.url)
    assert next(r.iter_content(chunk_size=None)) == BEAT
    r.close()
    second = fake_upstream.exchanges_to("/v1/chat/completions")[1]
    assert second.done.wait(10) and second.client_disconnected and not second.completed
    assert "Traceback" not in proxy.output()


def test_a_stream_still_beating_when_the_drain_time_is_over_ends_with_an_error_event(wsgi_proxy, fake_upstream,
                                                                                     tmp_path):
    import signal
    import sqlite3

    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", "/v1/chat/completions", openai_stream(["late"], hang=30))
    db = tmp_path / "drain.db"
    proxy = wsgi_proxy(KEEPALIVE_S="0.2", DRAIN_TIMEOUT="1", DATABASE_URL=f"sqlite:///{db}")
    r = chat(proxy.url, timeout=20)
    pieces = r.iter_content(chunk_size=None)
    assert next(pieces) == BEAT
    proxy.process.send_signal(signal.SIGTERM)
    rest = b"".join(pieces)
    assert rest.endswith(b"data: [DONE]\n\n") and b"shutting down" in rest
    assert proxy.process.wait(timeout=15) == 0, proxy.output()
    with sqlite3.connect(db) as conn:
        [(status, outcome)] = conn.execute("SELECT status, outcome FROM exchanges WHERE endpoint = ?",
                                           ("/v1/chat/completions",)).fetchall()
    assert (status, outcome) == (200, "cancelled")
    assert "Traceback" not in proxy.output()
