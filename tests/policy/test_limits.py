"""Limits through real sockets and the official clients: requests per window (per key, per address,
per-key overrides), tokens per window from real usage, the daily quota, concurrency (released at the
end of a stream, on disconnect, on errors), running streams never cut, and an unreachable Redis
deciding by LIMITS_FAIL_OPEN — never a 500."""
from __future__ import annotations

import datetime as dt
import threading
import time

import ollama
import openai
import pytest
import requests

from tests.support import fakes, free_port
from tests.support.policy import (
    ALICE,
    BOB,
    assert_ollama_error,
    assert_openai_error,
    call,
    chat_body,
    unique,
    write_keys,
)

KEYS = f"alice:{ALICE},bob:{BOB}"
HI = [{"role": "user", "content": "hi"}]


def _openai(openai_client, setup, key=ALICE):
    return openai_client(setup.proxy).with_options(api_key=key)


# --- requests per window ------------------------------------------------------------------------------

def test_rate_limit_reached_is_a_rate_limit_error_for_the_openai_sdk(backend_setup, openai_client):
    setup = backend_setup("openai", API_KEYS=KEYS, RATE_LIMIT="2/minute")
    setup.script_chat()
    client = _openai(openai_client, setup)
    for _ in range(2):
        client.chat.completions.create(model=setup.model, messages=HI)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=setup.model, messages=HI)
    err = info.value
    assert err.status_code == 429
    assert "rate limit reached for key 'alice': 2 requests per minute; resets in" in err.message
    assert 1 <= int(err.response.headers["Retry-After"]) <= 60
    assert err.body["type"] == "rate_limit_error" and err.body["code"] == "rate_limit_exceeded"
    assert len(setup.chat_calls()) == 2


def test_rate_limit_reached_is_429_in_the_ollama_dialect(backend_setup, ollama_client):
    setup = backend_setup("openai", API_KEYS=KEYS, RATE_LIMIT="1/minute")
    setup.script_chat()
    client = ollama_client(setup.proxy, headers={"Authorization": f"Bearer {ALICE}"})
    client.chat(model=setup.model, messages=HI)
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model=setup.model, messages=HI)
    assert info.value.status_code == 429
    assert "1 requests per minute" in info.value.error
    resp = call(setup.proxy, "GET", "/api/tags", ALICE)
    assert "resets in" in assert_ollama_error(resp, 429) and int(resp.headers["Retry-After"]) >= 1


def test_rate_limit_resets_when_its_window_has_passed(backend_setup):
    setup = backend_setup("openai", API_KEYS=KEYS, RATE_LIMIT="2 per 2 seconds")
    for _ in range(2):
        assert call(setup.proxy, "GET", "/v1/models", ALICE).status_code == 200
    limited = call(setup.proxy, "GET", "/v1/models", ALICE)
    assert_openai_error(limited, 429, "rate_limit_error")
    assert "2 requests per 2 seconds" in limited.json()["error"]["message"]
    time.sleep(int(limited.headers["Retry-After"]) + 0.2)
    assert call(setup.proxy, "GET", "/v1/models", ALICE).status_code == 200


def test_rate_limit_counts_each_key_on_its_own(backend_setup):
    setup = backend_setup("openai", API_KEYS=KEYS, RATE_LIMIT="1/minute")
    assert call(setup.proxy, "GET", "/v1/models", ALICE).status_code == 200
    assert call(setup.proxy, "GET", "/v1/models", ALICE).status_code == 429
    assert call(setup.proxy, "GET", "/v1/models", BOB).status_code == 200


def test_rate_limit_counts_per_client_address_without_keys(backend_setup):
    setup = backend_setup("openai", RATE_LIMIT="1/minute")
    assert call(setup.proxy, "GET", "/api/tags").status_code == 200
    err = assert_ollama_error(call(setup.proxy, "GET", "/api/tags"), 429)
    assert "client 127.0.0.1" in err
    assert call(setup.proxy, "GET", "/api/version").status_code == 200  # probes are never limited


def test_fixed_window_strategy_limits_too(backend_setup):
    setup = backend_setup("openai", API_KEYS=KEYS, RATE_LIMIT="2/minute", RATE_LIMIT_STRATEGY="fixed-window")
    assert [call(setup.proxy, "GET", "/v1/models", ALICE).status_code for _ in range(3)] == [200, 200, 429]


def test_keys_file_rpm_overrides_rate_limit_per_key(backend_setup, tmp_path):
    path = write_keys(tmp_path / "keys.toml", "[keys.alice]\nrpm = 1\n[keys.bob]\nrpm = 0\n")
    setup = backend_setup("openai", API_KEYS=KEYS, RATE_LIMIT="2/minute", KEYS_FILE=path)
    assert [call(setup.proxy, "GET", "/v1/models", ALICE).status_code for _ in range(2)] == [200, 429]
    assert all(call(setup.proxy, "GET", "/v1/models", BOB).status_code == 200 for _ in range(4))  # 0 = none


# --- tokens --------------------------------------------------------------------------------------------

def test_tokens_per_minute_are_counted_from_real_usage(backend_setup, openai_client, tmp_path):
    path = write_keys(tmp_path / "keys.toml", "[keys.alice]\ntpm = 15\n")
    setup = backend_setup("openai", API_KEYS=KEYS, KEYS_FILE=path)
    setup.script_chat(prompt_tokens=7, completion_tokens=2)  # 9 tokens a request
    client = _openai(openai_client, setup)
    client.chat.completions.create(model=setup.model, messages=HI)   # 0 used before: admitted -> 9
    client.chat.completions.create(model=setup.model, messages=HI)   # 9 < 15: admitted -> 18
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=setup.model, messages=HI)
    assert "token limit reached for key 'alice': 15 tokens per minute; resets in" in info.value.message
    assert info.value.body["code"] == "tokens_exceeded"
    assert 1 <= int(info.value.response.headers["Retry-After"]) <= 60
    assert _openai(openai_client, setup, BOB).chat.completions.create(model=setup.model, messages=HI)


def test_streamed_usage_counts_as_well_and_the_token_window_resets(backend_setup, ollama_client, tmp_path):
    path = write_keys(tmp_path / "keys.toml", '[keys.alice]\ntokens = "5 per 2 seconds"\n')
    setup = backend_setup("openai", API_KEYS=KEYS, KEYS_FILE=path)
    setup.script_chat(prompt_tokens=4, completion_tokens=2)
    client = ollama_client(setup.proxy, headers={"Authorization": f"Bearer {ALICE}"})
    assert "".join(c.message.content for c in client.chat(model=setup.model, messages=HI, stream=True)) == "Hello world"
    # tokens are charged when the stream has been closed, which may be a moment after the client read its end
    load_probe = {"model": setup.model}  # /api/generate without a prompt: answered by the proxy, metered
    assert _wait_until(lambda: call(setup.proxy, "POST", "/api/generate", ALICE, json=load_probe).status_code == 429,
                       timeout=2)
    assert call(setup.proxy, "GET", "/api/tags", ALICE).status_code == 200  # listings count requests only
    resp = call(setup.proxy, "POST", "/api/chat", ALICE, json=chat_body(setup.model))
    assert "5 tokens per 2 seconds" in assert_ollama_error(resp, 429)
    time.sleep(int(resp.headers["Retry-After"]) + 0.2)
    assert call(setup.proxy, "POST", "/api/chat", ALICE, json=chat_body(setup.model)).status_code == 200


def test_daily_token_quota_exhaustion_names_the_utc_reset(backend_setup, openai_client, tmp_path):
    path = write_keys(tmp_path / "keys.toml", "[keys.alice]\ndaily_tokens = 5\n")
    setup = backend_setup("openai", API_KEYS=KEYS, KEYS_FILE=path)
    setup.script_chat(prompt_tokens=7, completion_tokens=2)
    client = _openai(openai_client, setup)
    client.chat.completions.create(model=setup.model, messages=HI)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=setup.model, messages=HI)
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    assert (f"daily token quota used up for key 'alice': 5 tokens per day (UTC); resets at "
            f"{midnight:%Y-%m-%dT%H:%M:%SZ}") in info.value.message
    assert info.value.body["code"] == "insufficient_quota"
    assert abs(int(info.value.response.headers["Retry-After"]) - (midnight - now).total_seconds()) < 5
    assert_ollama_error(call(setup.proxy, "POST", "/api/generate", ALICE, json={"model": setup.model}), 429)
    assert call(setup.proxy, "GET", "/api/tags", ALICE).status_code == 200  # its models stay visible


# --- concurrency ---------------------------------------------------------------------------------------

@pytest.fixture(params=["memory", "redis"])
def one_at_a_time(request, backend_setup, tmp_path):
    """A key that may run one request at a time, its slots in memory or in Redis (TEST_REDIS_URL, a key name of
    its own); the upstream holds streams at their second chunk until `gate` is set."""
    name = "alice" if request.param == "memory" else unique("alice")
    env = {"REDIS_URL": request.getfixturevalue("shared_redis_url")} if request.param == "redis" else {}
    path = write_keys(tmp_path / "keys.toml", f"[keys.{name}]\nconcurrency = 1\n")
    setup = backend_setup("openai", API_KEYS=f"{name}:{ALICE},bob:{BOB}", KEYS_FILE=path, **env)
    setup.name = name
    setup.gate = threading.Event()
    setup.script_chat(("one", " two", " three"), gate=setup.gate, gate_at=1)
    setup.finished = []
    setup.proxy.app.extensions["llm_proxy"].sinks.append(lambda ex: setup.finished.append(ex))
    return setup


def _chat_status(setup) -> int:
    return call(setup.proxy, "POST", "/v1/chat/completions", ALICE, json=chat_body(setup.model)).status_code


def _wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_concurrency_limit_refuses_a_second_request_until_the_stream_ends(one_at_a_time, openai_client):
    setup = one_at_a_time
    client = _openai(openai_client, setup)
    stream = client.chat.completions.create(model=setup.model, messages=HI, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.content in ("", "one", None)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=setup.model, messages=HI)
    assert f"concurrency limit reached for key '{setup.name}': 1 request(s) at once" in info.value.message
    assert info.value.response.headers["Retry-After"] == "1"
    assert _openai(openai_client, setup, BOB).models.list()  # others are not affected
    setup.gate.set()
    rest = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert rest.endswith("three")
    assert _wait_until(lambda: _chat_status(setup) == 200)


def test_concurrency_slot_is_released_when_the_client_disconnects(one_at_a_time):
    setup = one_at_a_time
    resp = requests.post(setup.url + "/v1/chat/completions", json=chat_body(setup.model, stream=True),
                         headers={"Authorization": f"Bearer {ALICE}"}, stream=True, timeout=10)
    assert next(resp.iter_content(chunk_size=None))
    assert _chat_status(setup) == 429
    assert call(setup.proxy, "GET", "/v1/models", ALICE).status_code == 200  # a listing takes no slot
    resp.close()  # the client goes away mid-stream
    setup.gate.set()
    assert _wait_until(lambda: _chat_status(setup) == 200)
    assert [ex.outcome for ex in setup.finished if ex.stream] == ["cancelled"]


def test_concurrency_slot_is_released_after_an_upstream_error(one_at_a_time):
    setup = one_at_a_time
    setup.fake.expect("POST", "/v1/chat/completions", fakes.json_reply(fakes.openai_error("boom"), status=500))
    assert_openai_error(call(setup.proxy, "POST", "/v1/chat/completions", ALICE, json=chat_body(setup.model)), 500)
    broken = fakes.openai_stream(("a", "b", "c"), close_after=1)
    setup.fake.expect("POST", "/v1/chat/completions", broken)
    body = call(setup.proxy, "POST", "/v1/chat/completions", ALICE, json=chat_body(setup.model, stream=True)).text
    assert '"error"' in body  # the break became an in-band error chunk
    setup.gate.set()
    assert _wait_until(lambda: _chat_status(setup) == 200)


def test_a_refused_request_takes_no_slot(one_at_a_time):
    setup = one_at_a_time
    resp = requests.post(setup.url + "/v1/chat/completions", json=chat_body(setup.model, stream=True),
                         headers={"Authorization": f"Bearer {ALICE}"}, stream=True, timeout=10)
    chunks = resp.iter_content(chunk_size=None)
    assert next(chunks)
    for _ in range(3):  # refused while the stream holds the slot
        assert _chat_status(setup) == 429
    setup.gate.set()
    assert b"[DONE]" in b"".join(chunks)
    assert _wait_until(lambda: _chat_status(setup) == 200)  # the refusals left nothing held behind
    limiter = setup.proxy.app.extensions["llm_proxy"].extras["policy"].limiter
    assert _wait_until(lambda: limiter.store.running(f"key:{setup.name}") == 0)


def test_running_streams_are_never_cut_by_a_limit(backend_setup, openai_client, tmp_path):
    path = write_keys(tmp_path / "keys.toml", "[keys.alice]\ndaily_tokens = 10\nrpm = 3\n")
    setup = backend_setup("openai", API_KEYS=KEYS, KEYS_FILE=path)
    gate = threading.Event()
    setup.fake.expect("POST", "/v1/chat/completions",
                      fakes.openai_stream(("long", " stream", " goes", " on"), gate=gate, gate_at=1))
    setup.script_chat(prompt_tokens=7, completion_tokens=2)
    client = _openai(openai_client, setup)
    stream = client.chat.completions.create(model=setup.model, messages=HI, stream=True)
    first = next(iter(stream))
    client.chat.completions.create(model=setup.model, messages=HI)  # 9 tokens
    client.chat.completions.create(model=setup.model, messages=HI)  # 18: quota gone, 3 requests: rate gone
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=setup.model, messages=HI)
    gate.set()
    text = (first.choices[0].delta.content or "") + "".join(c.choices[0].delta.content or "" for c in stream
                                                             if c.choices)
    assert text == "long stream goes on"


# --- an unreachable Redis --------------------------------------------------------------------------------------

def _dead_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


def test_unreachable_redis_fails_open_with_a_warning(backend_setup, openai_client, caplog):
    setup = backend_setup("openai", API_KEYS=KEYS, RATE_LIMIT="1/minute", REDIS_URL=_dead_redis_url(),
                          REDIS_TIMEOUT="0.5")
    setup.script_chat()
    client = _openai(openai_client, setup)
    for _ in range(3):
        assert client.chat.completions.create(model=setup.model, messages=HI).choices[0].message.content
    assert "unreachable" in caplog.text and "admitted without limits" in caplog.text


@pytest.mark.parametrize("path, dialect", [("/v1/models", "openai"), ("/api/tags", "ollama")])
def test_unreachable_redis_fails_closed_with_503_when_told_to(backend_setup, path, dialect):
    setup = backend_setup("openai", API_KEYS=KEYS, RATE_LIMIT="1/minute", REDIS_URL=_dead_redis_url(),
                          LIMITS_FAIL_OPEN="false", REDIS_TIMEOUT="0.5")
    resp = call(setup.proxy, "GET", path, ALICE)
    if dialect == "openai":
        assert "LIMITS_FAIL_OPEN" in assert_openai_error(resp, 503)["message"]
    else:
        assert "LIMITS_FAIL_OPEN" in assert_ollama_error(resp, 503)
    assert resp.headers["Retry-After"] == "1"
    assert call(setup.proxy, "GET", "/api/version").status_code == 200


def test_retry_after_is_whole_seconds_never_zero(backend_setup):
    setup = backend_setup("openai", RATE_LIMIT="1/second")
    statuses = []
    for _ in range(5):
        resp = call(setup.proxy, "GET", "/v1/models")
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            assert resp.headers["Retry-After"].isdigit() and int(resp.headers["Retry-After"]) >= 1
    assert 429 in statuses


@pytest.mark.parametrize("end", ["to its end", "by the client going away", "by the backend breaking"])
def test_a_limited_stream_reaches_the_server_as_its_relay_and_gives_its_slot_back(one_at_a_time, end):
    """What the WSGI app hands the server for a stream under limits is the relay itself, no wrapper between them
    (each wrapper is one more generator step per chunk), or, with KEEPALIVE_S, the keep-alive body that hands the
    relay's chunks on with ``yield from``; and the slot comes back however the stream ends."""
    from werkzeug.test import EnvironBuilder

    from proxy.exchange import Relay
    from proxy.keepalive import Beating

    setup = one_at_a_time
    limiter = setup.proxy.app.extensions["llm_proxy"].extras["policy"].limiter
    who = f"key:{setup.name}"
    if end == "by the backend breaking":
        setup.fake.expect("POST", "/v1/chat/completions", fakes.openai_stream(("a", "b", "c"), close_after=1))
    elif end == "to its end":
        setup.gate.set()
    environ = EnvironBuilder(path="/v1/chat/completions", method="POST", json=chat_body(setup.model, stream=True),
                             headers={"Authorization": f"Bearer {ALICE}"}).get_environ()
    started: list[str] = []
    body = setup.proxy.app(environ, lambda status, headers, exc_info=None: started.append(status))
    assert type(body) in (Relay, Beating) and started == ["200 OK"]
    assert limiter.store.running(who) == 1
    chunks = iter(body)
    first = next(chunks)
    if end == "by the client going away":
        body.close()  # what the server does when the client's socket is gone
    else:
        text = first + b"".join(chunks)
        assert (b"[DONE]" if end == "to its end" else b'"error"') in text
        body.close()
    assert limiter.store.running(who) == 0
    assert _chat_status(setup) == 200


def test_stream_slot_is_released_when_the_stream_ends_even_if_the_server_never_closes_it(backend_setup, tmp_path):
    path = write_keys(tmp_path / "keys.toml", "[keys.alice]\nconcurrency = 1\n")
    setup = backend_setup("openai", API_KEYS=KEYS, KEYS_FILE=path)
    setup.script_chat(("a", "b"))
    limiter = setup.proxy.app.extensions["llm_proxy"].extras["policy"].limiter
    client = setup.proxy.app.test_client()
    resp = client.post("/v1/chat/completions", json=chat_body(setup.model, stream=True), buffered=False,
                       headers={"Authorization": f"Bearer {ALICE}"})
    assert limiter.store.running("key:alice") == 1
    body = b"".join(resp.response)  # read to the end; close() deliberately never called
    assert b"[DONE]" in body
    assert limiter.store.running("key:alice") == 0
