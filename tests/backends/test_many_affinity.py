"""Affinity (BACKENDS_FILE ``[routing] affinity = true``) over real sockets: one X-Session-ID, or one body
``user``, sticks to one healthy backend on both fronts, as do X-Claude-Code-Session-Id and `session_id` (also under
the production server), and, without any of them, one conversation's first messages; sessions spread over
the backends; a session whose backend is down moves, and only it; the key is checked."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from proxy.backendsfile import parse
from proxy.config import ConfigError
from tests.support.fakes import FakeUpstream
from tests.support.pool_proxy import CHAT, PoolProxy, backend, openai_fake


@pytest.fixture
def three(tmp_path: Path):
    fakes: list[FakeUpstream] = [openai_fake(name) for name in ("a", "b", "c")]
    text = "".join(backend(name, fake) for name, fake in zip("abc", fakes, strict=True))
    running = PoolProxy.start(tmp_path, text + "[routing]\naffinity = true\n")
    yield running
    running.stop()
    for fake in fakes:
        fake.stop()


def who(proxy: PoolProxy, session: str | None = None, user: str | None = None, front: str = "openai") -> Any:
    headers = {"X-Session-ID": session} if session else {}
    body = {**CHAT, **({"user": user} if user else {})}
    if front == "ollama":
        r = requests.post(proxy.url + "/api/chat", json={**body, "stream": False}, headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["message"]["content"]
    r = requests.post(proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_one_session_sticks_to_one_backend_on_both_fronts(three):
    assert len({who(three, session="s1") for _ in range(5)} | {who(three, "s1", front="ollama")}) == 1
    assert len({who(three, user="alice") for _ in range(5)}) == 1
    assert {who(three, session=f"s{i}") for i in range(30)} == {"a", "b", "c"}  # sessions spread
    assert len({who(three) for _ in range(3)}) == 1  # no session: the same first messages stick too


def test_a_session_whose_backend_is_down_moves_and_the_others_stay(three):
    homes = {f"s{i}": who(three, session=f"s{i}") for i in range(12)}
    down = homes["s0"]
    three.pool.by_name[down].healthy = False
    for session, home in homes.items():
        now = who(three, session=session)
        assert now != down and (home == down or now == home)
    three.pool.by_name[down].healthy = True
    assert who(three, session="s0") == down  # back home once it is healthy again


def test_affinity_is_true_or_false():
    with pytest.raises(ConfigError, match="table 'routing', key 'affinity': expected true or false"):
        parse({"backends": {"a": {"type": "stub"}}, "routing": {"affinity": "yes"}})
    assert parse({"backends": {"a": {"type": "stub"}}, "routing": {"affinity": True}}).routing.affinity


def converse(proxy: Any, turns: int, first: str, system: str | None = "be brief", front: str = "openai",
             headers: dict | None = None) -> list[str]:
    """Who answers each request of a conversation that grows by a turn each time (no session named)."""
    head = [{"role": "system", "content": system}] if system else []
    messages = [*head, {"role": "user", "content": first}]
    answered = []
    for turn in range(turns):
        if front == "ollama":
            r = requests.post(proxy.url + "/api/chat", json={"model": "m", "messages": messages, "stream": False},
                              headers=headers or {}, timeout=10)
            assert r.status_code == 200, r.text
            answered.append(r.json()["message"]["content"])
        else:
            r = requests.post(proxy.url + "/v1/chat/completions", json={"model": "m", "messages": messages},
                              headers=headers or {}, timeout=10)
            assert r.status_code == 200, r.text
            answered.append(r.json()["choices"][0]["message"]["content"])
        messages = [*messages, {"role": "assistant", "content": answered[-1]},
                    {"role": "user", "content": f"and then {turn}?"}]
    return answered


def test_a_conversation_without_a_session_sticks_by_its_first_messages_on_both_fronts(three):
    assert len(set(converse(three, 5, "tell me about cats"))) == 1
    assert len(set(converse(three, 4, "tell me about cats", front="ollama"))) == 1
    assert len(set(converse(three, 4, "tell me about dogs", system=None))) == 1
    homes = {converse(three, 1, f"question {i}")[0] for i in range(30)}
    assert homes == {"a", "b", "c"}  # conversations spread over the backends


def test_the_system_prompt_and_first_user_message_make_the_key():
    from proxy.affinity import session_of

    def first_messages(body: dict) -> str | None:
        return session_of(body, {})

    def body(system: str, first: str, later: str = "", model: str = "m") -> dict:
        return {"model": model, "messages": [{"role": "system", "content": system}, {"role": "user", "content": first},
                                             {"role": "assistant", "content": "x"}, {"role": "user", "content": later}]}
    key = first_messages(body("s", "u"))
    assert key and key == first_messages(body("s", "u", "a later turn"))
    assert len({key, first_messages(body("t", "u")), first_messages(body("s", "v")),
                first_messages(body("s", "u", model="n"))}) == 4
    anthropic = {"model": "m", "system": "s", "messages": [{"role": "user", "content": [{"type": "text", "text": "u"}]}]}
    assert first_messages(anthropic) == key  # the same system prompt and first words, in another dialect
    assert first_messages({"model": "m", "input": [{"role": "developer", "content": "s"},
                                                   {"role": "user", "content": "u"}]})
    long = "x" * 100000
    assert first_messages(body(long + "a", "u")) != first_messages(body(long + "b", "u"))  # its ends count
    assert first_messages(body(long, "u")) != first_messages(body(long + "x", "u"))  # and its length
    assert first_messages({"model": "m", "instructions": "s", "input": "u"}) == first_messages(
        {"model": "m", "instructions": "s", "input": [{"role": "user", "content": "u"}]})
    assert first_messages({"model": "m", "prompt": "u"}) is None  # a completion: no conversation to find
    assert session_of(body("s", "u"), {"HTTP_X_SESSION_ID": "abc"}) == "h:abc"  # a named session wins
    assert session_of({**body("s", "u"), "user": "ann"}, {}) == "h:ann"


@pytest.mark.parametrize("header", ["X-Claude-Code-Session-Id", "X-Session-ID"])
def test_agent_session_headers_keep_a_conversation_whatever_its_messages(three, header):
    homes = {converse(three, 1, f"question {i}", headers={header: "agent-1"})[0] for i in range(12)}
    assert len(homes) == 1
    assert len({converse(three, 1, "same", headers={header: f"agent-{i}"})[0] for i in range(30)}) == 3


def test_session_id_header_reaches_affinity_under_the_production_server(tmp_path: Path):
    fakes: list[FakeUpstream] = [openai_fake(name) for name in ("a", "b", "c")]
    from tests.support.pool_proxy import WsgiPoolProxy

    running = WsgiPoolProxy(tmp_path, "".join(backend(n, f) for n, f in zip("abc", fakes, strict=True))
                            + "[routing]\naffinity = true\n")
    try:
        homes = {converse(running, 1, f"question {i}", headers={"session_id": "codex-1"})[0] for i in range(9)}
        assert len(homes) == 1
    finally:
        running.stop()
        for fake in fakes:
            fake.stop()
