"""The cache with several backends (BACKENDS_FILE): backends the routing allows for a model share its entries,
whichever of them answered; a model routed to other backends has other entries."""
from __future__ import annotations

import requests

from tests.support.pool_proxy import PoolProxy, backend, openai_fake

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def test_backends_of_one_rule_share_entries_and_another_rule_does_not(tmp_path):
    a, b, c = openai_fake("from", " a"), openai_fake("from", " b"), openai_fake("from", " c")
    text = (backend("a", a) + backend("b", b) + backend("c", c) + '[routing]\nstrategy = "round-robin"\n'
            '[[routing.rules]]\nmodel = "solo"\nbackends = ["c"]\n[[routing.rules]]\nmodel = "*"\n'
            'backends = ["a", "b"]\n')
    proxy = PoolProxy.start(tmp_path, text, CACHE="memory", MODEL_MAP="solo=m")
    try:
        first = requests.post(proxy.url + "/v1/chat/completions", json=CHAT, timeout=10)
        answered = first.json()["choices"][0]["message"]["content"]
        for _ in range(3):  # round-robin would go to the other backend: the entry answers instead
            again = requests.post(proxy.url + "/v1/chat/completions", json=CHAT, timeout=10)
            assert again.headers["X-Cache"] == "HIT" and again.json()["choices"][0]["message"]["content"] == answered
        solo = requests.post(proxy.url + "/v1/chat/completions", json={**CHAT, "model": "solo"}, timeout=10)
        assert solo.headers["X-Cache"] == "MISS" and solo.json()["choices"][0]["message"]["content"] == "from c"
        calls = [len(f.calls("/v1/chat/completions", "POST")) for f in (a, b, c)]
        assert sorted(calls[:2]) == [0, 1] and calls[2] == 1
    finally:
        proxy.stop()
        for fake in (a, b, c):
            fake.stop()


def test_agent_fronts_behind_a_pool_share_the_rules_entries(tmp_path):
    a, b = openai_fake("from", " a"), openai_fake("from", " b")
    text = backend("a", a) + backend("b", b) + '[routing]\nstrategy = "round-robin"\n'
    proxy = PoolProxy.start(tmp_path, text, CACHE="memory")
    message = {"model": "m", "max_tokens": 50, "messages": CHAT["messages"], "temperature": 0}
    response = {"model": "m", "input": "hi", "temperature": 0}
    try:
        for expected in ("MISS", "HIT", "HIT"):  # round-robin would go to the other backend
            r = requests.post(proxy.url + "/v1/messages", json=message, timeout=10)
            assert r.headers["X-Cache"] == expected and r.json()["content"][0]["text"].startswith("from")
        for expected in ("MISS", "HIT", "HIT"):
            r = requests.post(proxy.url + "/v1/responses", json=response, timeout=10)
            assert r.headers["X-Cache"] == expected and r.json()["status"] == "completed"
        assert sum(len(f.calls("/v1/chat/completions", "POST")) for f in (a, b)) == 2
    finally:
        proxy.stop()
        for fake in (a, b):
            fake.stop()
