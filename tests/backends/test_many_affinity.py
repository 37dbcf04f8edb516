"""Affinity (BACKENDS_FILE ``[routing] affinity = true``) over real sockets: one X-Session-ID, or one body
``user``, sticks to one healthy backend on both fronts; sessions spread over the backends; requests without a
session follow the strategy; a session whose backend is down moves, and only it; the key is checked."""
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
    assert {who(three) for _ in range(3)} == {"a", "b", "c"}  # no session: round-robin


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
