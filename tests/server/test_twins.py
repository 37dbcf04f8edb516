"""Identical streamed requests of one session (views.early, dedupe) over real sockets: the second, arriving
while the first runs, is attached to it (one backend call, both clients get every byte), recorded as
``attached``; other sessions, requests without a session header and different bodies run on their own; a
twin's failure before its first byte is the attached one's too."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.fakes import Reply, openai_error, openai_stream
from tests.support.store import store_of, wait_rows

BODY = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
PATH = "/v1/chat/completions"


def post(url: str, headers: dict, body: dict = BODY) -> requests.Response:
    return requests.post(url + PATH, data=json.dumps(body), timeout=15,
                         headers={"Content-Type": "application/json", **headers})


@pytest.fixture
def held(fake_upstream):
    """The backend answers in pieces, the first piece held until the gate opens."""
    gate = threading.Event()
    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", PATH, openai_stream(["Hello", " there", " world"], gate=gate, gate_at=0))
    return gate


@pytest.mark.parametrize("keepalive", ["0", "0.2"])
def test_an_identical_request_of_the_same_session_is_attached_to_the_running_one(
        make_proxy, fake_upstream, held, keepalive):
    proxy = make_proxy(KEEPALIVE_S=keepalive)
    session = {"X-Claude-Code-Session-Id": "s-1"}
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, proxy.url, session)
        fake_upstream.wait_for(PATH, 1)
        second = pool.submit(post, proxy.url, session)
        wait_for_twin(proxy)
        held.set()
        a, b = first.result(), second.result()
    assert a.status_code == b.status_code == 200
    answer = a.content.replace(b": keep-alive\n\n", b"")
    assert b"Hello" in answer and answer.endswith(b"data: [DONE]\n\n")
    assert b.content.replace(b": keep-alive\n\n", b"") == answer
    assert len(fake_upstream.calls(PATH)) == 1
    rows = {r["request_id"]: r for r in wait_rows(store_of(proxy), 2)}
    leader = rows[a.headers["X-Request-ID"]]
    follower = rows[b.headers["X-Request-ID"]]
    assert (leader["outcome"], follower["outcome"]) == ("ok", "attached")
    assert leader["session_id"] == follower["session_id"] == "s-1"
    assert follower["completion_tokens"] == leader["completion_tokens"]


def wait_for_twin(proxy) -> None:
    twins = proxy.app.extensions["llm_proxy"].twins
    from tests.support.store import wait_for
    wait_for(lambda: any(shared.followers for shared in twins._running.values()))


@pytest.mark.parametrize("headers_b, body_b", [
    ({"X-Claude-Code-Session-Id": "s-2"}, BODY),  # another session
    ({}, BODY),  # no session header
    ({"X-Claude-Code-Session-Id": "s-1"}, {**BODY, "temperature": 0.5}),  # another body
])
def test_other_sessions_bodies_and_sessionless_requests_run_on_their_own(
        make_proxy, fake_upstream, held, headers_b, body_b):
    proxy = make_proxy(KEEPALIVE_S="0")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, proxy.url, {"X-Claude-Code-Session-Id": "s-1"})
        fake_upstream.wait_for(PATH, 1)
        second = pool.submit(post, proxy.url, headers_b, body_b)
        fake_upstream.wait_for(PATH, 2)  # the second reached the backend while the first is still held
        held.set()
        assert first.result().status_code == second.result().status_code == 200
    assert len(fake_upstream.calls(PATH)) == 2


def test_a_twin_failing_before_its_first_byte_fails_the_attached_request_with_its_status(make_proxy, fake_upstream):
    gate = threading.Event()
    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", PATH, Reply(status=503, headers={"Content-Type": "application/json"},
                                              chunks=[json.dumps(openai_error("busy")).encode()], gate=gate,
                                              gate_at=0))
    proxy = make_proxy(KEEPALIVE_S="0")
    session = {"X-Session-ID": "s-1"}
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, proxy.url, session)
        fake_upstream.wait_for(PATH, 1)
        second = pool.submit(post, proxy.url, session)
        wait_for_twin(proxy)
        gate.set()
        a, b = first.result(), second.result()
    assert a.status_code == b.status_code == 503
    assert "busy" in b.json()["error"]["message"]
    assert len(fake_upstream.calls(PATH)) == 1


def test_the_session_id_header_of_codex_reaches_the_log_under_the_gevent_server(wsgi_proxy, fake_upstream, tmp_path):
    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", PATH, openai_stream(["Hi"]))
    db = tmp_path / "s.db"
    proxy = wsgi_proxy(DATABASE_URL=f"sqlite:///{db}")
    assert post(proxy.url, {"session_id": "codex-7"}).status_code == 200
    assert post(proxy.url, {}).status_code == 200
    import sqlite3

    from tests.support.store import wait_for

    def sessions() -> list:
        with sqlite3.connect(db) as conn:
            return [r[0] for r in conn.execute("SELECT session_id FROM exchanges WHERE endpoint = ? ORDER BY id",
                                               (PATH,))]
    wait_for(lambda: len(sessions()) == 2)
    codex, fingerprint = sessions()
    assert codex == "codex-7" and fingerprint.startswith("fp-")


@pytest.mark.parametrize("keepalive", ["0", "0.2"])
def test_when_the_running_twins_client_leaves_the_attached_request_ends_with_an_error_event(
        make_proxy, fake_upstream, keepalive):
    gate = threading.Event()
    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", PATH, openai_stream(["Hello", " there", " world"], gate=gate, gate_at=2))
    proxy = make_proxy(KEEPALIVE_S=keepalive)
    session = {"X-Session-ID": "s-1"}
    first = requests.post(proxy.url + PATH, json=BODY, headers=session, stream=True, timeout=15)
    got = b""
    for piece in first.iter_content(chunk_size=None):  # the role chunk and the first word may come apart
        got += piece
        if b"Hello" in got:
            break
    assert b"Hello" in got
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(post, proxy.url, session)
        wait_for_twin(proxy)
        first.close()
        gate.set()  # the leader's next write finds its client gone: the backend call ends
        b = second.result()
    assert b.status_code == 200 and b"Hello" in b.content
    [error] = [json.loads(line[6:]) for line in b.content.split(b"\n") if line.startswith(b'data: {"error"')]
    assert "send the request again" in error["error"]["message"] and b.content.endswith(b"data: [DONE]\n\n")
    assert len(fake_upstream.calls(PATH)) == 1
