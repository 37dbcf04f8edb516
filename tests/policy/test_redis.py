"""Limits in Redis: the limiter against a real server (TEST_REDIS_URL), two `python wsgi.py` processes
enforcing one limit together, and a Redis that goes away mid-run (a private redis-server this test kills)
deciding by LIMITS_FAIL_OPEN — never a 500. Also the limiter's day boundary, with a clock of our own."""
from __future__ import annotations

import datetime as dt
import socket
import threading
import time

import pytest
import requests

from proxy.errors import RateLimited
from proxy.policy.limits import Limiter, Rules
from proxy.policy.redisstore import slot_key
from proxy.values import parse_rate
from tests.support import fakes
from tests.support.policy import assert_ollama_error, assert_openai_error, call, chat_body, unique, write_keys

DAY = 86400


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- the limiter itself ------------------------------------------------------------------------------------

@pytest.fixture(params=["memory", "redis"])
def limiter_factory(request):
    def make(**kw):
        if request.param == "redis":
            return Limiter(request.getfixturevalue("shared_redis_url"), **kw)
        return Limiter(**kw)
    return make


def test_daily_quota_resets_at_the_next_utc_day(limiter_factory):
    start = dt.datetime(2030, 5, 17, 23, 59, 0, tzinfo=dt.UTC).timestamp()
    clock = Clock(start)
    limiter = limiter_factory(clock=clock)
    who, rules = unique("day"), Rules(daily_tokens=100)
    limiter.settle(limiter.admit(who, "key 'd'", rules), 150)
    with pytest.raises(RateLimited) as info:
        limiter.admit(who, "key 'd'", rules)
    assert "resets at 2030-05-18T00:00:00Z (in 60 s)" in info.value.message
    assert info.value.retry_after == 60
    clock.now = start + 61  # 00:00:01 the next day
    limiter.settle(limiter.admit(who, "key 'd'", rules), 10)


def test_tokens_are_charged_at_settle_and_checked_at_admission(limiter_factory):
    limiter = limiter_factory()
    who, rules = unique("tok"), Rules(tokens=parse_rate("100/minute"))
    first = limiter.admit(who, "x", rules)
    second = limiter.admit(who, "x", rules)  # nothing charged yet: a running request never blocks another
    limiter.settle(first, 60)
    limiter.settle(second, 60)
    limiter.settle(second, 60)  # settling twice charges once
    with pytest.raises(RateLimited) as info:
        limiter.admit(who, "x", rules)
    assert "100 tokens per minute" in info.value.message and 1 <= info.value.retry_after <= 60


def test_concurrency_slots_are_taken_and_given_back(limiter_factory):
    limiter = limiter_factory()
    who, rules = unique("conc"), Rules(concurrency=2)
    a, b = limiter.admit(who, "x", rules), limiter.admit(who, "x", rules)
    with pytest.raises(RateLimited):
        limiter.admit(who, "x", rules)
    limiter.settle(a, 0)
    c = limiter.admit(who, "x", rules)
    limiter.settle(b, 0)
    limiter.settle(c, 0)
    assert limiter.store.running(who) == 0


def test_a_refused_request_holds_no_slot_and_leaves_no_token_charge(limiter_factory):
    limiter = limiter_factory()
    who = unique("mix")
    rules = Rules(rate=parse_rate("1/minute"), concurrency=1)
    limiter.settle(limiter.admit(who, "x", rules), 0)
    with pytest.raises(RateLimited) as info:
        limiter.admit(who, "x", rules)
    assert "1 requests per minute" in info.value.message
    assert limiter.store.running(who) == 0


def test_redis_slot_leases_are_renewed_and_lapse_when_not(shared_redis_url):
    limiter = Limiter(shared_redis_url)
    who, rules = unique("lease"), Rules(concurrency=1)
    ticket = limiter.admit(who, "x", rules)
    client = limiter.store.client
    renewed_until = time.time() + 60
    limiter.store.renew()
    assert client.zscore(slot_key(who), ticket.slot) >= renewed_until - 1
    # a lease that was not renewed (its process died) no longer counts
    client.zadd(slot_key(who), {ticket.slot: time.time() - 1})
    limiter.settle(limiter.admit(who, "x", rules), 0)


def test_a_request_refused_by_redis_never_reaches_the_backend(wsgi_proxy, fake_upstream, shared_redis_url):
    fake_upstream.serve_openai_models("m1")
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(("a",)))
    name, key = unique("norun"), "sk-" + unique()
    proxy = wsgi_proxy(REDIS_URL=shared_redis_url, API_KEYS=f"{name}:{key}", RATE_LIMIT="1/minute")
    assert call(proxy, "POST", "/v1/chat/completions", key, json=chat_body("m1")).status_code == 200
    for path, body, check in (("/v1/chat/completions", chat_body("m1"), assert_openai_error),
                              ("/api/chat", chat_body("m1", stream=False), assert_ollama_error),
                              ("/v1/chat/completions", chat_body("m1", stream=True), assert_openai_error)):
        err = check(call(proxy, "POST", path, key, json=body), 429)
        assert "rate limit" in str(err)
    assert len(fake_upstream.calls("/v1/chat/completions")) == 1
    check = assert_openai_error(call(proxy, "POST", "/v1/chat/completions", key, data=b"{not json"), 429)
    assert "rate limit" in str(check)  # over the limit and malformed: the limit answers, as it did before


# --- two processes, one Redis ------------------------------------------------------------------------------

@pytest.fixture
def two_proxies(wsgi_proxy, fake_upstream, shared_redis_url, tmp_path):
    """Two `python wsgi.py` processes sharing TEST_REDIS_URL, with one fresh key name."""
    fake_upstream.serve_openai_models("m1")
    name, key = unique("two"), "sk-" + unique()

    def start(keys_toml: str = "", **env):
        extra = {}
        if keys_toml:
            extra["KEYS_FILE"] = write_keys(tmp_path / "keys.toml", keys_toml.replace("NAME", name))
        return [wsgi_proxy(REDIS_URL=shared_redis_url, API_KEYS=f"{name}:{key}", **extra, **env) for _ in range(2)]

    start.key = key
    return start


def test_two_processes_sharing_redis_enforce_one_rate_limit(two_proxies):
    a, b = two_proxies(RATE_LIMIT="5/minute")
    statuses = [call(p, "GET", "/v1/models", two_proxies.key).status_code for p in (a, b, a, b, a, b, a)]
    assert statuses == [200] * 5 + [429, 429]
    assert_ollama_error(call(b, "GET", "/api/tags", two_proxies.key), 429)


def test_two_processes_sharing_redis_enforce_one_concurrency_limit(two_proxies, fake_upstream):
    gate = threading.Event()
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(("a", "b"), gate=gate))
    a, b = two_proxies("[keys.NAME]\nconcurrency = 1\n")
    stream = requests.post(a.url + "/v1/chat/completions", json=chat_body("m1", stream=True), stream=True,
                           headers={"Authorization": f"Bearer {two_proxies.key}"}, timeout=10)
    chunks = stream.iter_content(chunk_size=None)
    assert next(chunks)
    err = assert_openai_error(call(b, "POST", "/v1/chat/completions", two_proxies.key, json=chat_body("m1")), 429)
    assert "concurrency limit" in err["message"]
    gate.set()
    assert b"[DONE]" in b"".join(chunks)
    deadline = time.monotonic() + 5
    while call(b, "POST", "/v1/chat/completions", two_proxies.key, json=chat_body("m1")).status_code != 200:
        assert time.monotonic() < deadline, "the slot taken through process A was not given back"
        time.sleep(0.05)


def test_two_processes_sharing_redis_enforce_one_token_quota(two_proxies, fake_upstream):
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(prompt_tokens=7,
                                                                                      completion_tokens=2))
    a, b = two_proxies("[keys.NAME]\ntpm = 10\ndaily_tokens = 1000\n")
    assert call(a, "POST", "/v1/chat/completions", two_proxies.key, json=chat_body("m1")).status_code == 200
    assert call(b, "POST", "/v1/chat/completions", two_proxies.key, json=chat_body("m1")).status_code == 200
    # tokens are charged right after each answer is sent: give process B's charge a moment to land
    deadline = time.monotonic() + 2
    probe = {"model": "m1"}  # an Ollama load probe: answered by the proxy itself, but metered like a generation
    while (resp := call(a, "POST", "/api/generate", two_proxies.key, json=probe)).status_code == 200 \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "10 tokens per minute" in assert_ollama_error(resp, 429)
    assert call(a, "GET", "/v1/models", two_proxies.key).status_code == 200  # listings count requests only


def test_two_processes_never_admit_past_a_concurrency_limit_together(two_proxies, fake_upstream):
    gate = threading.Event()
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(("a", "b"), gate=gate))
    a, b = two_proxies("[keys.NAME]\nconcurrency = 2\n")
    headers = {"Authorization": f"Bearer {two_proxies.key}"}
    opened: list = []
    lock = threading.Lock()

    def stream(proxy) -> None:
        resp = requests.post(proxy.url + "/v1/chat/completions", json=chat_body("m1", stream=True), stream=True,
                             headers=headers, timeout=15)
        with lock:
            opened.append(resp)

    threads = [threading.Thread(target=stream, args=(p,)) for p in (a, b) * 5]  # 10 streams at once, 5 per process
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    statuses = sorted(resp.status_code for resp in opened)
    assert statuses == [200] * 2 + [429] * 8, statuses
    assert len(fake_upstream.calls("/v1/chat/completions")) == 2  # never more than 2 at the backend
    gate.set()
    for resp in opened:
        if resp.status_code == 200:
            assert b"[DONE]" in resp.content
        resp.close()
    deadline = time.monotonic() + 5  # both slots come back: two more may run
    while call(b, "POST", "/v1/chat/completions", two_proxies.key, json=chat_body("m1")).status_code != 200:
        assert time.monotonic() < deadline, "a slot was not given back"
        time.sleep(0.05)


def test_two_processes_share_one_daily_quota(two_proxies, fake_upstream):
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(prompt_tokens=7,
                                                                                      completion_tokens=2))
    a, b = two_proxies("[keys.NAME]\ndaily_tokens = 10\n")
    assert call(a, "POST", "/v1/chat/completions", two_proxies.key, json=chat_body("m1")).status_code == 200
    assert call(b, "POST", "/v1/chat/completions", two_proxies.key, json=chat_body("m1")).status_code == 200
    deadline = time.monotonic() + 2  # charged as each answer is closed: a moment after the client has it
    while (resp := call(a, "POST", "/v1/chat/completions", two_proxies.key, json=chat_body("m1"))).status_code \
            == 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "10 tokens per day (UTC)" in assert_openai_error(resp, 429)["message"]
    assert resp.json()["error"]["code"] == "insufficient_quota"


def test_every_admission_is_one_script_call_and_every_settlement_one_more(private_redis):
    server = private_redis()
    limiter = Limiter(server.url)
    who = unique("trips")
    rules = Rules(rate=parse_rate("100/minute;1000/hour"), tokens=parse_rate("1000/minute"), daily_tokens=10000,
                  concurrency=3)
    client = limiter.store.client
    limiter.settle(limiter.admit(who, "x", rules), 5)  # scripts loaded
    before = client.info("commandstats")
    for _ in range(4):
        limiter.settle(limiter.admit(who, "x", rules), 5)
    after = client.info("commandstats")
    calls = {name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"] for name in after}
    assert calls.get("cmdstat_evalsha") == 8  # 4 admissions, 4 settlements (other counts: inside the scripts)
    assert not any(name.startswith(("cmdstat_eval|", "cmdstat_script", "cmdstat_multi")) for name in calls
                   if calls[name])


# --- Redis going away -------------------------------------------------------------------------------------

def _never_500(statuses):
    assert 500 not in statuses, statuses


def test_redis_going_away_mid_run_fails_open_and_limits_return_with_it(wsgi_proxy, fake_upstream, private_redis):
    fake_upstream.serve_openai_models("m1")
    gate = threading.Event()
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(("x", "y"), gate=gate))
    redis_server = private_redis()
    proxy = wsgi_proxy(REDIS_URL=redis_server.url, API_KEYS="ci:sk-ci", RATE_LIMIT="3/minute", REDIS_TIMEOUT="0.5",
                       LOG_LEVEL="WARNING")
    stream = requests.post(proxy.url + "/v1/chat/completions", json=chat_body("m1", stream=True), stream=True,
                           headers={"Authorization": "Bearer sk-ci"}, timeout=10)
    assert stream.status_code == 200
    assert [call(proxy, "GET", "/v1/models", "sk-ci").status_code for _ in range(3)] == [200, 200, 429]
    redis_server.stop()  # Redis goes away while a stream runs and limits were reached
    gate.set()
    assert b"[DONE]" in b"".join(stream.iter_content(chunk_size=None))
    statuses = [call(proxy, "GET", "/v1/models", "sk-ci").status_code for _ in range(5)]
    statuses += [call(proxy, "GET", "/api/tags", "sk-ci").status_code for _ in range(2)]
    _never_500(statuses)
    assert statuses == [200] * 7  # open: admitted without limits
    assert "unreachable" in proxy.output() and "admitted without limits" in proxy.output()
    redis_server.start()  # back (empty): limits apply again once the pause after the failure has passed
    time.sleep(1.2)
    again = [call(proxy, "GET", "/v1/models", "sk-ci").status_code for _ in range(5)]
    assert again == [200, 200, 200, 429, 429], again


def test_redis_going_away_mid_run_fails_closed_with_503_in_both_dialects(wsgi_proxy, fake_upstream, private_redis):
    fake_upstream.serve_openai_models("m1")
    redis_server = private_redis()
    proxy = wsgi_proxy(REDIS_URL=redis_server.url, API_KEYS="ci:sk-ci", RATE_LIMIT="100/minute",
                       LIMITS_FAIL_OPEN="false", REDIS_TIMEOUT="0.5")
    assert call(proxy, "GET", "/v1/models", "sk-ci").status_code == 200
    redis_server.stop()
    statuses = []
    for _ in range(3):
        resp = call(proxy, "GET", "/v1/models", "sk-ci")
        statuses.append(resp.status_code)
        assert "LIMITS_FAIL_OPEN" in assert_openai_error(resp, 503)["message"]
        resp = call(proxy, "POST", "/api/chat", "sk-ci", json=chat_body("m1"))
        statuses.append(resp.status_code)
        assert "LIMITS_FAIL_OPEN" in assert_ollama_error(resp, 503)
        assert resp.headers["Retry-After"] == "1"
    _never_500(statuses)
    assert call(proxy, "GET", "/api/version").status_code == 200
    assert call(proxy, "GET", "/health").status_code == 200


def test_a_redis_that_stops_answering_holds_no_request_much_longer_than_its_timeout():
    """Admissions take turns on the process's one Redis connection: when Redis hangs (a black hole that accepts
    and never answers), those waiting for their turn give up after REDIS_TIMEOUT as the one waiting for Redis
    does, so twenty at once are all decided (fail-open: admitted) in about one timeout, not twenty."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []
    threading.Thread(target=lambda: [held.append(listener.accept()) for _ in range(64)], daemon=True).start()
    limiter = Limiter(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", timeout=0.3)
    rules = Rules(rate=parse_rate("5/minute"), concurrency=1)
    took: list[float] = []

    def admit() -> None:
        start = time.monotonic()
        assert limiter.admit(unique("hung"), "x", rules).settled  # admitted without limits: nothing to give back
        took.append(time.monotonic() - start)

    threads = [threading.Thread(target=admit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    listener.close()
    assert len(took) == 20 and max(took) < 2.0, took


def test_limiter_reloads_its_scripts_when_redis_forgot_them(private_redis):
    server = private_redis()
    limiter = Limiter(server.url)
    who, rules = unique("noscript"), Rules(rate=parse_rate("2/minute"), tokens=parse_rate("100/minute"),
                                           concurrency=1)
    limiter.settle(limiter.admit(who, "x", rules), 5)
    limiter.store.client.script_flush()  # what a restarted Redis looks like to us
    limiter.settle(limiter.admit(who, "x", rules), 5)
    with pytest.raises(RateLimited):  # counted exactly once each despite the resend
        limiter.admit(who, "x", rules)
    assert limiter.store.client.get(f"llm-proxy:{rules.tokens[0].key_for(who, 'tokens')}") == b"10"
    assert limiter.store.running(who) == 0


def test_switching_the_rate_strategy_keeps_limiting(shared_redis_url):
    who, rules = unique("switch"), Rules(rate=parse_rate("2/minute"))
    moving = Limiter(shared_redis_url)
    moving.admit(who, "x", rules)
    fixed = Limiter(shared_redis_url, strategy="fixed-window")  # e.g. after a restart with RATE_LIMIT_STRATEGY changed
    fixed.admit(who, "x", rules)
    fixed.admit(who, "x", rules)
    with pytest.raises(RateLimited):
        fixed.admit(who, "x", rules)
    assert fixed._down_since is None  # limited, not failed open over a Redis type clash


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window"])
def test_a_request_refused_by_one_limit_counts_against_none_of_the_others(limiter_factory, strategy):
    limiter = limiter_factory(strategy=strategy)
    who = unique("all-or-nothing")
    rules = Rules(rate=parse_rate("3/minute;2/hour"), concurrency=1)
    held = limiter.admit(who, "key 'a'", rules)  # 1 of 3/minute, 1 of 2/hour, the only slot
    for _ in range(3):  # refused for the slot: no request window may count these
        with pytest.raises(RateLimited) as info:
            limiter.admit(who, "key 'a'", rules)
        assert "concurrency" in info.value.message
    limiter.settle(held, 0)
    second = limiter.admit(who, "key 'a'", rules)  # 2 of 3/minute, 2 of 2/hour
    limiter.settle(second, 0)
    with pytest.raises(RateLimited) as info:  # the hour window is full; the minute window is not
        limiter.admit(who, "key 'a'", rules)
    assert "2 requests per hour" in info.value.message and info.value.retry_after > 60
    assert limiter.store.running(who) == 0  # the refused requests took no slot
    minute = Rules(rate=rules.rate[:1])  # the same minute window alone: the refused requests took no place in it
    limiter.admit(who, "key 'a'", minute)
    with pytest.raises(RateLimited):
        limiter.admit(who, "key 'a'", minute)


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window"])
def test_a_full_request_window_says_when_it_has_room(limiter_factory, strategy):
    limiter = limiter_factory(strategy=strategy)
    who, rules = unique("wait"), Rules(rate=parse_rate("3 per 30 seconds"))
    for _ in range(3):
        limiter.admit(who, "k", rules)
    with pytest.raises(RateLimited) as info:
        limiter.admit(who, "k", rules)
    assert 29 <= info.value.retry_after <= 30 and "3 requests per 30 seconds; resets in" in info.value.message
