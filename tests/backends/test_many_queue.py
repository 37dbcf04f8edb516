"""The concurrency cap and its fair queue over real sockets: backends with ``max_concurrency`` behind the proxy
(BACKENDS_FILE), slow fake upstreams, several clients at once. Requests beyond the cap wait and are served in
order; a full queue or an expired wait is a 503 `overloaded` with Retry-After in both dialects; a request
waits for the first free slot among the backends of its model; two keys are served in turn; a client that
leaves while waiting leaves the queue and is recorded cancelled; the time queued is on the log record."""
from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest
import requests

from tests.support import fakes
from tests.support.fakes import FakeUpstream, json_reply
from tests.support.pool_proxy import PoolProxy as Proxy
from tests.support.store import wait_for as wait_until


def slow_chat(seconds: float) -> Any:
    """An OpenAI chat backend that answers after ``seconds``, echoing the user's message."""
    def respond(req: fakes.RecordedRequest) -> fakes.Reply:
        said = req.json["messages"][-1]["content"]
        return json_reply(fakes.openai_completion(f"re: {said}"), hang=seconds)
    return respond


def capped(fake: FakeUpstream, name: str = "gpu", cap: int = 1, **queue: Any) -> str:
    bounds = ", ".join(f"{k} = {v}" for k, v in queue.items())
    return (f'[backends.{name}]\ntype = "openai"\nurl = "{fake.url}"\nmodels = ["m"]\nmax_concurrency = {cap}\n'
            + (f"queue = {{ {bounds} }}\n" if bounds else ""))


def chat(proxy: Proxy, said: str, key: str | None = None, timeout: float = 20) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(proxy.url + "/v1/chat/completions", headers=headers, timeout=timeout,
                         json={"model": "m", "messages": [{"role": "user", "content": said}]})


def in_threads(calls: list[Any], stagger: float = 0.05) -> list[Any]:
    """Each call in a thread of its own, started ``stagger`` apart (so they arrive in order); their results."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
        time.sleep(stagger)
    for thread in threads:
        thread.join(timeout=30)
    return results


def said_upstream(fake: FakeUpstream) -> list[str]:
    return [c.json["messages"][-1]["content"] for c in fake.calls("/v1/chat/completions")]


def log_rows(proxy: Proxy, count: int) -> list[dict]:
    store = proxy.app.extensions["llm_proxy"].extras["log_store"]
    wait_until(lambda: store.models.Exchange.select().count() >= count)
    return list(store.models.Exchange.select().order_by(store.models.Exchange.id).dicts())


@pytest.fixture
def gpu(fakes_pool):
    fake = fakes_pool()
    fake.serve_openai_models("m")
    fake.default("POST", "/v1/chat/completions", slow_chat(0.2))
    return fake


def test_requests_beyond_the_cap_wait_and_are_all_served_in_order(gpu, pool_proxy):
    proxy = pool_proxy(capped(gpu))
    started = time.monotonic()
    replies = in_threads([lambda i=i: chat(proxy, f"n{i}") for i in range(5)])
    assert [r.status_code for r in replies] == [200] * 5
    assert [r.json()["choices"][0]["message"]["content"] for r in replies] == [f"re: n{i}" for i in range(5)]
    assert said_upstream(gpu) == [f"n{i}" for i in range(5)]  # one at a time, first come first served
    assert time.monotonic() - started >= 5 * 0.2
    member = proxy.pool.by_name["gpu"]
    wait_until(lambda: member.in_flight == 0 and member.queued == 0)
    rows = log_rows(proxy, 5)
    assert rows[0]["queued_ms"] is None and all(r["queued_ms"] > 50 for r in rows[1:])
    detail = requests.get(f"{proxy.url}/ui/api/logs/{rows[-1]['id']}", timeout=5).json()
    assert detail["queued_ms"] == rows[-1]["queued_ms"]


def test_a_full_queue_is_a_503_overloaded_with_retry_after_in_both_dialects(gpu, pool_proxy):
    gpu.default("POST", "/v1/chat/completions", slow_chat(1.0))
    proxy = pool_proxy(capped(gpu, max_waiting=1))
    holders = [threading.Thread(target=chat, args=(proxy, f"h{i}")) for i in range(2)]
    for thread in holders:
        thread.start()
    member = proxy.pool.by_name["gpu"]
    wait_until(lambda: member.in_flight == 1 and member.queued == 1)
    r = chat(proxy, "one too many")
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    error = r.json()["error"]
    assert error["type"] == "overloaded" and error["code"] == "overloaded"
    assert "gpu (1 of 1 in flight, 1 waiting)" in error["message"] and "max_waiting" in error["message"]
    r = requests.post(proxy.url + "/api/chat", timeout=10, json={"model": "m", "stream": False,
                                                                 "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert set(r.json()) == {"error"} and "busy" in r.json()["error"]
    for thread in holders:
        thread.join(timeout=10)
    assert len(gpu.calls("/v1/chat/completions")) == 2  # the refused never reached the backend


def test_a_wait_longer_than_max_wait_s_is_a_503_and_recorded_with_its_time_queued(gpu, pool_proxy):
    gpu.default("POST", "/v1/chat/completions", slow_chat(1.5))
    proxy = pool_proxy(capped(gpu, max_wait_s=0.3))
    holder = threading.Thread(target=chat, args=(proxy, "holds the slot"))
    holder.start()
    wait_until(lambda: proxy.pool.by_name["gpu"].in_flight == 1)
    started = time.monotonic()
    r = chat(proxy, "waits too long")
    assert r.status_code == 503 and r.json()["error"]["type"] == "overloaded"
    assert "max_wait_s" in r.json()["error"]["message"] and r.headers["Retry-After"]
    assert 0.3 <= time.monotonic() - started < 1.2
    holder.join(timeout=10)
    refused = [row for row in log_rows(proxy, 2) if row["status"] == 503]
    assert len(refused) == 1 and refused[0]["queued_ms"] >= 300
    assert said_upstream(gpu) == ["holds the slot"]


def test_a_request_waits_for_the_first_free_slot_among_the_backends_of_its_model(fakes_pool, pool_proxy):
    slow, quick = fakes_pool(), fakes_pool()
    for fake, seconds in ((slow, 1.5), (quick, 0.3)):
        fake.serve_openai_models("m")
        fake.default("POST", "/v1/chat/completions", slow_chat(seconds))
    proxy = pool_proxy(capped(slow, "slow") + capped(quick, "quick"))
    replies = in_threads([lambda i=i: chat(proxy, f"n{i}") for i in range(3)])
    assert [r.status_code for r in replies] == [200] * 3
    assert len(slow.calls("/v1/chat/completions")) == 1 and len(quick.calls("/v1/chat/completions")) == 2


def test_two_keys_are_served_in_turn_so_a_busy_one_cannot_starve_the_other(gpu, pool_proxy):
    gpu.default("POST", "/v1/chat/completions", slow_chat(0.3))
    proxy = pool_proxy(capped(gpu), API_KEYS="alice:sk-alice,bob:sk-bob")
    calls = [lambda i=i: chat(proxy, f"alice {i}", "sk-alice") for i in range(10)]
    calls.append(lambda: chat(proxy, "bob", "sk-bob"))
    replies = in_threads(calls, stagger=0.02)
    assert [r.status_code for r in replies] == [200] * 11
    order = said_upstream(gpu)
    assert order.index("bob") <= 2, order  # all in before the first is done: behind it and at most one more
    assert [s for s in order if s != "bob"] == [f"alice {i}" for i in range(10)]  # FIFO per key


def test_a_client_that_leaves_while_waiting_leaves_the_queue_and_is_recorded_cancelled(gpu, pool_proxy):
    gpu.default("POST", "/v1/chat/completions", slow_chat(1.5))
    proxy = pool_proxy(capped(gpu))
    holder = threading.Thread(target=chat, args=(proxy, "holds the slot"))
    holder.start()
    member = proxy.pool.by_name["gpu"]
    wait_until(lambda: member.in_flight == 1)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "leaves"}]}).encode()
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_until(lambda: member.queued == 1)
    left = time.monotonic()
    wait_until(lambda: member.queued == 0, timeout=1.0)  # at once: well before the slot frees
    assert time.monotonic() - left < 1.0 and member.in_flight == 1
    holder.join(timeout=10)
    rows = log_rows(proxy, 2)
    cancelled = [r for r in rows if r["outcome"] == "cancelled"]
    assert len(cancelled) == 1 and "waited" in cancelled[0]["error"] and cancelled[0]["queued_ms"] > 0
    assert said_upstream(gpu) == ["holds the slot"]


def test_streams_hold_their_slot_until_they_end(gpu, pool_proxy, ollama_client):
    gate = threading.Event()
    gpu.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["a", "b"], gate=gate, gate_at=2))
    proxy = pool_proxy(capped(gpu, max_waiting=0))
    member = proxy.pool.by_name["gpu"]
    parts = ollama_client(proxy).chat(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    first = next(iter(parts))
    assert first.message.content == "a" and member.in_flight == 1
    r = chat(proxy, "no room")
    assert r.status_code == 503 and "max_waiting" in r.json()["error"]["message"]
    gate.set()
    assert "".join(p.message.content for p in parts) == "b"
    wait_until(lambda: member.in_flight == 0)
    assert chat(proxy, "room again").status_code == 200


def test_client_gone_sees_a_closed_connection_and_not_a_waiting_one():
    from proxy.clientgone import client_gone

    ours, theirs = socket.socketpair()
    with ours:
        environ = {"llm_proxy.socket": ours}
        assert not client_gone(environ)
        theirs.sendall(b"GET / HTTP/1.1\r\n")  # a pipelined request is not a disconnect
        assert not client_gone(environ)
        theirs.close()
        ours.recv(100)
        assert client_gone(environ)
    assert not client_gone({})
